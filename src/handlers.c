/* handlers.c - codes 0, 1, 2, 4, 5, 6: read through the Redis cache, fall
 * back to PostgreSQL, and answer in the exact shapes the client reads.
 *
 * What is cached: the user profile (code 0), the session list (code 1) and
 * the model names (code 5). Balances (code 6) and full histories (code 2)
 * always come from PostgreSQL: a balance must be exact, and a history is
 * unbounded and read once per session switch. */
#include "handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "chat.h"
#include "config.h"
#include "log.h"
#include "pg.h"
#include "proto.h"
#include "server.h"

/* A cached JSON value, or one computed by stmt and then cached. Returns a
 * new reference; NULL with *missing set when the statement found no row. */
static json_t *cached_json(struct worker *w, const char *key, int ttl, enum pg_stmt stmt,
                           int nparams, const char *const *params, int col, int *missing)
{
    *missing = 0;
    size_t len;
    char *s = cache_get(&w->cache, key, &len);
    if (s != NULL) {
        json_t *v = json_loadb(s, len, 0, NULL);
        free(s);
        if (v != NULL)
            return v;
        /* A copy we cannot read is no copy: fall through to PostgreSQL. */
    }
    PGresult *r = pg_exec(&w->pg, stmt, nparams, params);
    if (r == NULL)
        return NULL;
    if (PQntuples(r) == 0) {
        PQclear(r);
        *missing = 1;
        return NULL;
    }
    const char *text = PQgetvalue(r, 0, col);
    json_t *v = json_loads(text, 0, NULL);
    if (v != NULL)
        cache_set(&w->cache, key, text, strlen(text), ttl);
    PQclear(r);
    return v;
}

static void user_details(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    char key[CACHE_KEY_MAX];
    cache_key_profile(key, q->user_id);
    size_t len;
    char *s = cache_get(&w->cache, key, &len);
    json_t *profile = s != NULL ? json_loadb(s, len, 0, NULL) : NULL;
    free(s);
    if (profile == NULL) {
        const char *p[1] = {q->user_id};
        PGresult *res = pg_exec(&w->pg, PG_USER_GET, 1, p);
        if (res == NULL) {
            server_reply_error(r->srv, r->conn_id, q->type, PERR_INTERNAL, NULL);
            return;
        }
        if (PQntuples(res) == 0) {
            PQclear(res);
            server_reply_error(r->srv, r->conn_id, q->type, PERR_NO_USER, NULL);
            return;
        }
        profile = json_pack("{s:s, s:o}", "username", PQgetvalue(res, 0, 0), "models",
                            json_loads(PQgetvalue(res, 0, 1), 0, NULL));
        PQclear(res);
        char *enc = profile != NULL ? json_dumps(profile, JSON_COMPACT) : NULL;
        if (enc != NULL)
            cache_set(&w->cache, key, enc, strlen(enc), CACHE_TTL_PROFILE);
        free(enc);
    }
    json_t *name = json_object_get(profile, "username");
    json_t *data = json_is_string(name) ? json_pack("{s:s, s:O}", "user_id", q->user_id,
                                                    "username", name)
                                        : NULL;
    json_decref(profile);
    server_reply(r->srv, r->conn_id, q->type, data);
}

static void list_sessions(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    char key[CACHE_KEY_MAX];
    cache_key_sessions(key, q->user_id);
    const char *p[1] = {q->user_id};
    int missing;
    json_t *list = cached_json(w, key, CACHE_TTL_SESSIONS, PG_SESSIONS_LIST, 1, p, 0, &missing);
    if (list == NULL) {
        server_reply_error(r->srv, r->conn_id, q->type, missing ? PERR_NO_USER : PERR_LOAD_SESSION,
                           NULL);
        return;
    }
    server_reply(r->srv, r->conn_id, q->type,
                 json_pack("{s:s, s:o}", "user_id", q->user_id, "session_info", list));
}

static void list_chats(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    const char *p[2] = {q->user_id, q->session_id};
    PGresult *res = pg_exec(&w->pg, PG_CHATS_GET, 2, p);
    if (res == NULL) {
        server_reply_error(r->srv, r->conn_id, q->type, PERR_LOAD_CHATS, NULL);
        return;
    }
    if (PQntuples(res) == 0) {
        /* Someone else's session answers exactly like a missing one. */
        PQclear(res);
        server_reply_error(r->srv, r->conn_id, q->type, PERR_NO_SESSION, NULL);
        return;
    }
    /* "chat" is a string holding JSON: the client JSON.parse()s it. */
    server_reply(r->srv, r->conn_id, q->type,
                 json_pack("{s:s, s:s, s:s}", "user_id", q->user_id, "session_id", q->session_id,
                           "chat", PQgetvalue(res, 0, 0)));
    PQclear(res);
}

/* Removes the files of a deleted session from PUBLIC_DIR. Their rows went
 * with the session; a file that cannot be removed is only logged. */
static void remove_files(const struct config *cfg, const char *names_json)
{
    json_t *names = json_loads(names_json, 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        const char *name = json_string_value(v);
        /* Stored names are ours (random + extension), never a path. */
        if (name == NULL || strchr(name, '/') != NULL || name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", cfg->public_dir, name);
        if (unlink(path) != 0 && errno != ENOENT)
            log_warn("event=file_remove_failed file=%s error=\"%s\"", name, strerror(errno));
    }
    json_decref(names);
}

static void delete_session(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    const char *p[2] = {q->user_id, q->session_id};
    PGresult *res = pg_exec(&w->pg, PG_SESSION_DELETE, 2, p);
    if (res == NULL) {
        server_reply_error(r->srv, r->conn_id, q->type, PERR_DELETE_SESSION, NULL);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        server_reply_error(r->srv, r->conn_id, q->type, PERR_NO_SESSION, NULL);
        return;
    }
    remove_files(server_config(r->srv), PQgetvalue(res, 0, 0));
    PQclear(res);

    char k1[CACHE_KEY_MAX], k2[CACHE_KEY_MAX];
    cache_key_sessions(k1, q->user_id);
    cache_key_context(k2, q->session_id);
    const char *ku[1] = {k1}, *ks[1] = {k2};
    /* Different hash tags: two commands, valid on Redis Cluster. */
    cache_del(&w->cache, ku, 1);
    cache_del(&w->cache, ks, 1);
    server_reply(r->srv, r->conn_id, q->type, json_pack("{s:s}", "user_id", q->user_id));
}

static void list_models(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    char key[CACHE_KEY_MAX];
    cache_key_models(key);
    int missing;
    json_t *names = cached_json(w, key, CACHE_TTL_MODELS, PG_MODELS_LIST, 0, NULL, 0, &missing);
    if (names == NULL) {
        server_reply_error(r->srv, r->conn_id, q->type, PERR_MODEL_LIST, NULL);
        return;
    }
    server_reply(r->srv, r->conn_id, q->type, json_pack("{s:o}", "models", names));
}

static void balance(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    const char *p[1] = {q->user_id};
    PGresult *res = pg_exec(&w->pg, PG_BALANCE, 1, p);
    if (res == NULL) {
        server_reply_error(r->srv, r->conn_id, q->type, PERR_BALANCE, NULL);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        server_reply_error(r->srv, r->conn_id, q->type, PERR_NO_USER, NULL);
        return;
    }
    double b = strtod(PQgetvalue(res, 0, 0), NULL);
    PQclear(res);
    server_reply(r->srv, r->conn_id, q->type, json_pack("{s:f}", "balance", b));
}

void handlers_run(struct worker *w, struct pool_job *job)
{
    struct server_request *r = (struct server_request *)job;
    switch (r->req.type) {
    case PROTO_USER_DETAILS:
        user_details(w, r);
        break;
    case PROTO_LIST_SESSIONS:
        list_sessions(w, r);
        break;
    case PROTO_CHATS:
        list_chats(w, r);
        break;
    case PROTO_CHAT:
        chat_handle(w, r); /* owns r from here */
        return;
    case PROTO_DELETE_SESSION:
        delete_session(w, r);
        break;
    case PROTO_LIST_MODELS:
        list_models(w, r);
        break;
    case PROTO_BALANCE:
        balance(w, r);
        break;
    default:
        /* proto_decode admits only the codes above; stop (8) never gets
         * here because the service thread answers it. */
        server_reply_error(r->srv, r->conn_id, r->req.type, PERR_UNKNOWN_MESSAGE, NULL);
        break;
    }
    server_request_free(r);
}
