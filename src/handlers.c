/* handlers.c - codes 0, 1, 2, 4, 5, 6: read through the Redis cache, fall
 * back to PostgreSQL, and answer in the exact shapes the client reads.
 *
 * What is cached: the user profile (code 0), the session list (code 1) and
 * the model names (code 5), each as a versioned copy that is used only when
 * PostgreSQL cannot contradict it (inval.h). Balances (code 6) and full histories (code 2)
 * always come from PostgreSQL: a balance must be exact, and a history is
 * unbounded and read once per session switch. */
#include "handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "cache.h"
#include "chat.h"
#include "config.h"
#include "inval.h"
#include "log.h"
#include "pg.h"
#include "proto.h"
#include "server.h"
#include "util.h"

/* A copy in Redis that PostgreSQL does not contradict (inval.h): its
 * JSON as a new reference, or NULL (missing, unreadable or stale). user_id
 * names the user whose writes the copy depends on; NULL: the catalogue. */
static json_t *copy_lookup(struct worker *w, const char *key, const char *user_id)
{
    struct cache_copy cp;
    if (cache_get_copy(&w->cache, key, &cp) != 0)
        return NULL;
    int fresh = user_id != NULL ? inval_user_fresh(w->cache.inval, user_id, cp.version, cp.aux)
                                : inval_models_fresh(w->cache.inval, cp.version, cp.aux);
    json_t *v = fresh ? json_loadb(cp.payload, cp.len, 0, NULL) : NULL;
    free(cp.payload);
    return v;
}

/* Stores text, read in the snapshot whose xmin and xmax are given (as
 * PostgreSQL printed them), as the copy at key. */
static void copy_store(struct worker *w, const char *key, int ttl, const char *text,
                       const char *xmin, const char *xmax)
{
    uint64_t lo, hi;
    if (util_parse_u64(xmin, &lo) == 0 && util_parse_u64(xmax, &hi) == 0)
        cache_put_copy(&w->cache, key, lo, hi, text, strlen(text), ttl);
}

/* A list PostgreSQL builds as one JSON text (column 0, with the snapshot
 * in columns 1 and 2), through its copy at key. Returns a new reference;
 * NULL with *missing set when the statement found no row. */
static json_t *cached_list(struct worker *w, const char *key, int ttl, const char *user_id,
                           enum pg_stmt stmt, int nparams, const char *const *params,
                           int *missing)
{
    *missing = 0;
    json_t *v = copy_lookup(w, key, user_id);
    if (v != NULL)
        return v;
    PGresult *r = pg_exec(&w->pg, stmt, nparams, params);
    if (r == NULL)
        return NULL;
    if (PQntuples(r) == 0) {
        PQclear(r);
        *missing = 1;
        return NULL;
    }
    const char *text = PQgetvalue(r, 0, 0);
    v = json_loads(text, 0, NULL);
    if (v != NULL)
        copy_store(w, key, ttl, text, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    PQclear(r);
    return v;
}

static void user_details(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    char key[CACHE_KEY_MAX];
    cache_key_profile(key, q->user_id);
    json_t *profile = copy_lookup(w, key, q->user_id);
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
        char *enc = profile != NULL ? json_dumps(profile, JSON_COMPACT) : NULL;
        if (enc != NULL)
            copy_store(w, key, CACHE_TTL_PROFILE, enc, PQgetvalue(res, 0, 3),
                       PQgetvalue(res, 0, 4));
        free(enc);
        PQclear(res);
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
    json_t *list = cached_list(w, key, CACHE_TTL_SESSIONS, q->user_id, PG_SESSIONS_LIST, 1, p,
                               &missing);
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
    const struct config *cfg = server_config(r->srv);
    char *signed_chat = auth_required(cfg) ? chat_sign_files(cfg, PQgetvalue(res, 0, 0)) : NULL;
    if (auth_required(cfg) && signed_chat == NULL) {
        PQclear(res);
        server_reply_error(r->srv, r->conn_id, q->type, PERR_INTERNAL, NULL);
        return;
    }
    server_reply(r->srv, r->conn_id, q->type,
                 json_pack("{s:s, s:s, s:s}", "user_id", q->user_id, "session_id", q->session_id,
                           "chat", signed_chat != NULL ? signed_chat : PQgetvalue(res, 0, 0)));
    free(signed_chat);
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
    /* Before the answer: this chatd never shows the old list again. The
     * copies need no delete to be right (the NOTIFY and the session's
     * version see to that); the context's is dropped only to free it. */
    cache_saw_write(&w->cache, q->user_id, PQgetvalue(res, 0, 1));
    PQclear(res);
    char key[CACHE_KEY_MAX];
    cache_key_context(key, q->session_id);
    const char *keys[1] = {key};
    cache_del(&w->cache, keys, 1);
    server_reply(r->srv, r->conn_id, q->type, json_pack("{s:s}", "user_id", q->user_id));
}

static void list_models(struct worker *w, struct server_request *r)
{
    const struct proto_request *q = &r->req;
    char key[CACHE_KEY_MAX];
    cache_key_models(key);
    int missing;
    json_t *names = cached_list(w, key, CACHE_TTL_MODELS, NULL, PG_MODELS_LIST, 0, NULL, &missing);
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
