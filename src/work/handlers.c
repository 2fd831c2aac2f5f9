/* handlers.c - codes 0, 1, 2, 4, 5, 6: read through the Redis cache or
 * from PostgreSQL, and answer in the exact shapes the client reads.
 *
 * What is cached: the user profile (code 0), the session list (code 1) and
 * the model names (code 5), each as a versioned copy that is used only when
 * PostgreSQL cannot contradict it (store/inval.h). Balances (code 6) and
 * full histories (code 2) always come from PostgreSQL: a balance must be
 * exact, and a history is unbounded and read once per session switch.
 *
 * Wire error codes are chosen here, from the store's DB_* results. */
#include "work/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/files.h"
#include "store/inval.h"
#include "store/local.h"
#include "wire/auth.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/events.h"
#include "work/links.h"
#include "work/outbox.h"
#include "work/reads.h"

static void reply(struct work_request *r, json_t *data)
{
    outbox_reply(r->app->outbox, r->conn_id, r->req.type, data);
}

static void reply_error(struct work_request *r, int code)
{
    outbox_reply_error(r->app->outbox, r->conn_id, r->req.type, code, NULL);
}

/* Keeps v in memory in the form a reply holds it (proto_encode_value), so
 * that the service thread can splice it into a frame without parsing it. */
static void keep_local(struct app *app, const char *key, uint64_t xmin, uint64_t xmax,
                       const json_t *v)
{
    size_t len;
    char *text = proto_encode_value(v, &len);
    if (text != NULL)
        local_put(app->local, key, xmin, xmax, text, len);
    free(text);
}

/* A copy that PostgreSQL does not contradict, from this process's memory
 * or else from Redis (then kept in memory too): its JSON as a new
 * reference, or NULL (missing, unreadable or stale). user_id names the
 * user whose writes the copy depends on; NULL: the catalogue. */
static json_t *copy_lookup(struct worker *w, struct app *app, const char *key, const char *user_id)
{
    size_t len;
    char *mine = local_get(app->local, key, user_id, &len);
    if (mine != NULL) {
        json_t *v = json_loadb(mine, len, 0, NULL);
        free(mine);
        return v;
    }
    struct cache_copy cp;
    if (cache_get_copy(&w->cache, key, &cp) != 0)
        return NULL;
    int fresh = user_id != NULL ? inval_user_fresh(w->cache.inval, user_id, cp.version, cp.aux)
                                : inval_models_fresh(w->cache.inval, cp.version, cp.aux);
    json_t *v = fresh ? json_loadb(cp.payload, cp.len, 0, NULL) : NULL;
    if (v != NULL)
        keep_local(app, key, cp.version, cp.aux, v);
    free(cp.payload);
    return v;
}

/* Stores v, read in snap, as the copy at key, in Redis and in memory: one
 * text, in the form a reply holds it, serves both. */
static void copy_store(struct worker *w, struct app *app, const char *key, int ttl, const json_t *v,
                       const struct db_snapshot *snap)
{
    size_t len;
    char *text = proto_encode_value(v, &len);
    if (text == NULL)
        return;
    cache_put_copy(&w->cache, key, snap->xmin, snap->xmax, text, len, ttl);
    local_put(app->local, key, snap->xmin, snap->xmax, text, len);
    free(text);
}

/* The answers of codes 0, 1 (whole list) and 5 from their copy's JSON,
 * the same bytes whether a worker or the service thread builds them. */
static json_t *user_details_data(const char *user_id, json_t *profile)
{
    json_t *name = json_object_get(profile, "username");
    return json_is_string(name) ? json_pack("{s:s, s:O}", "user_id", user_id, "username", name)
                                : NULL;
}

static json_t *sessions_data(const char *user_id, json_t *list)
{
    return json_pack("{s:s, s:O}", "user_id", user_id, "session_info", list);
}

static json_t *models_data(json_t *names) { return json_pack("{s:O}", "models", names); }

/* A list PostgreSQL builds as one JSON text, through its copy at key.
 * Returns a new reference, or NULL with *st the store's result. */
static json_t *cached_list(struct worker *w, struct app *app, const char *key, int ttl,
                           const char *user_id,
                           int (*read)(struct pg *, const char *, char **, struct db_snapshot *),
                           int *st)
{
    *st = DB_OK;
    json_t *v = copy_lookup(w, app, key, user_id);
    if (v != NULL)
        return v;
    char *text = NULL;
    struct db_snapshot snap;
    if ((*st = read(&w->pg, user_id, &text, &snap)) != DB_OK)
        return NULL;
    v = json_loads(text, 0, NULL);
    if (v != NULL)
        copy_store(w, app, key, ttl, v, &snap);
    else
        *st = DB_ERROR;
    free(text);
    return v;
}

static int read_sessions(struct pg *pg, const char *user_id, char **json, struct db_snapshot *snap)
{
    return db_sessions_list(pg, user_id, json, snap);
}

static int read_models(struct pg *pg, const char *user_id, char **json, struct db_snapshot *snap)
{
    (void)user_id;
    return db_models_list(pg, json, snap);
}

/* Code 0. The copy holds {username, models}. */
void handlers_user_details(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char key[CACHE_KEY_MAX];
    cache_key_profile(key, q->user_id);
    json_t *profile = copy_lookup(w, r->app, key, q->user_id);
    if (profile == NULL) {
        char *username = NULL, *models = NULL;
        struct db_snapshot snap;
        enum db_status st = db_user_profile(&w->pg, q->user_id, &username, &models, &snap);
        if (st != DB_OK) {
            reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_INTERNAL);
            return;
        }
        profile =
            json_pack("{s:s, s:o}", "username", username, "models", json_loads(models, 0, NULL));
        if (profile != NULL)
            copy_store(w, r->app, key, CACHE_TTL_PROFILE, profile, &snap);
        free(username);
        free(models);
    }
    json_t *data = user_details_data(q->user_id, profile);
    json_decref(profile);
    reply(r, data);
}

/* Code 1 with paging: straight from PostgreSQL (a page is one index
 * range), with has_more and the cursor of the next page. */
static void list_sessions_page(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char *json = NULL, *next = NULL;
    int has_more = 0;
    enum db_status st =
        q->filtered
            ? db_sessions_filter(&w->pg, q->user_id, q->archived ? "t" : "f",
                                 q->pinned < 0 ? NULL
                                 : q->pinned   ? "t"
                                               : "f",
                                 q->tag[0] != '\0' ? q->tag : NULL, q->temporary, q->cursor,
                                 q->limit, &json, &has_more, &next)
            : db_sessions_page(&w->pg, q->user_id, q->cursor, q->limit, &json, &has_more, &next);
    json_t *list = st == DB_OK ? json_loads(json, 0, NULL) : NULL;
    free(json);
    if (list == NULL) {
        free(next);
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_LOAD_SESSION);
        return;
    }
    json_t *data = json_pack("{s:s, s:o, s:b}", "user_id", q->user_id, "session_info", list,
                             "has_more", has_more);
    if (data != NULL)
        json_object_set_new(data, "next_before", next != NULL ? json_string(next) : json_null());
    free(next);
    reply(r, data);
}

/* Code 1. */
void handlers_list_sessions(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    if (q->paged) {
        list_sessions_page(w, r);
        return;
    }
    char key[CACHE_KEY_MAX];
    cache_key_sessions(key, q->user_id);
    int st;
    json_t *list = cached_list(w, r->app, key, CACHE_TTL_SESSIONS, q->user_id, read_sessions, &st);
    if (list == NULL) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_LOAD_SESSION);
        return;
    }
    json_t *data = sessions_data(q->user_id, list);
    json_decref(list);
    reply(r, data);
}

/* Code 2. "chat" is a string holding JSON: the client JSON.parse()s it. */
void handlers_chats(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    const struct config *cfg = r->app->cfg;
    char *chat = NULL;
    enum db_status st = db_chats(reads_pg(w), q->user_id, q->session_id, &chat);
    if (st != DB_OK) {
        /* Someone else's session answers exactly like a missing one. */
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_LOAD_CHATS);
        return;
    }
    if (auth_required(cfg)) { /* file entries become signed references */
        char *signed_chat = links_sign_chat(cfg, chat);
        free(chat);
        if ((chat = signed_chat) == NULL) {
            reply_error(r, PERR_INTERNAL);
            return;
        }
    }
    reply(r, json_pack("{s:s, s:s, s:s}", "user_id", q->user_id, "session_id", q->session_id,
                       "chat", chat));
    free(chat);
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
        if (json_is_string(v))
            files_remove(cfg, json_string_value(v));
    }
    json_decref(names);
}

/* Code 4. */
void handlers_delete_session(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char *files = NULL;
    uint64_t xid = 0;
    enum db_status st = db_session_delete(&w->pg, q->user_id, q->session_id, &files, &xid);
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_DELETE_SESSION);
        return;
    }
    if (files != NULL)
        remove_files(r->app->cfg, files);
    free(files);
    /* Before the answer: this chatd never shows the old list again. The
     * copies need no delete to be right (the NOTIFY and the session's
     * version see to that); the context's is dropped only to free it. */
    events_emit(r->app, q->user_id,
                json_pack("{s:s, s:s}", "kind", "session_deleted", "session_id", q->session_id));
    cache_saw_write(&w->cache, q->user_id, xid);
    char key[CACHE_KEY_MAX];
    cache_key_context(key, q->session_id);
    const char *keys[1] = {key};
    cache_del(&w->cache, keys, 1);
    reply(r, json_pack("{s:s}", "user_id", q->user_id));
}

/* Code 5. */
void handlers_list_models(struct worker *w, struct work_request *r)
{
    if (r->req.mine) {
        char *json = NULL;
        enum db_status st = db_user_models(&w->pg, r->req.user_id, &json);
        json_t *names = st == DB_OK ? json_loads(json, 0, NULL) : NULL;
        free(json);
        if (names == NULL) {
            reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_MODEL_LIST);
            return;
        }
        reply(r, json_pack("{s:o, s:b}", "models", names, "mine", 1));
        return;
    }
    char key[CACHE_KEY_MAX];
    cache_key_models(key);
    int st;
    json_t *names = cached_list(w, r->app, key, CACHE_TTL_MODELS, NULL, read_models, &st);
    if (names == NULL) {
        reply_error(r, PERR_MODEL_LIST);
        return;
    }
    json_t *data = models_data(names);
    json_decref(names);
    reply(r, data);
}

/* Code 6. */
void handlers_balance(struct worker *w, struct work_request *r)
{
    double b;
    enum db_status st = db_balance(&w->pg, r->req.user_id, &b);
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_BALANCE);
        return;
    }
    reply(r, json_pack("{s:f}", "balance", b));
}

/* Code 13: written by PostgreSQL, so that money goes out as the exact
 * decimals of the ledger (jansson would print doubles). */
void handlers_usage(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char *json = NULL;
    enum db_status st = db_usage(reads_pg(w), q->user_id, q->since_us, q->until_us, &json);
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_BALANCE);
        return;
    }
    outbox_reply_text(r->app->outbox, r->conn_id, r->req.type, json);
    free(json);
}

/* ------------------------------------------------------- without a worker */

char *handlers_inline(struct app *app, const struct proto_request *q, size_t *len)
{
    char key[CACHE_KEY_MAX];
    const char *user = q->user_id;
    switch (q->type) {
    case PROTO_USER_DETAILS:
        cache_key_profile(key, q->user_id);
        break;
    case PROTO_LIST_SESSIONS:
        if (q->paged)
            return NULL;
        cache_key_sessions(key, q->user_id);
        break;
    case PROTO_LIST_MODELS:
        if (q->mine)
            return NULL;
        cache_key_models(key);
        user = NULL;
        break;
    default:
        return NULL;
    }
    size_t n;
    char *text = local_get(app->local, key, user, &n);
    if (text == NULL)
        return NULL;
    char *frame = NULL;
    if (q->type == PROTO_USER_DETAILS) {
        /* The profile holds more than the answer: take the name out. */
        json_t *copy = json_loadb(text, n, 0, NULL);
        json_t *data = copy != NULL ? user_details_data(q->user_id, copy) : NULL;
        json_decref(copy);
        frame = data != NULL ? proto_encode_reply(q->type, data, len) : NULL; /* steals data */
    } else {
        /* The copy is kept as a reply holds it: the frame is spliced
         * around it, the same bytes json_pack and proto_encode_reply
         * would write (test_coherence.py's InMemory compares them). The
         * user id was checked as a UUID: nothing in it needs escaping. */
        int k = q->type == PROTO_LIST_SESSIONS
                    ? asprintf(&frame,
                               "{\"type\":%d,\"data\":{\"user_id\":\"%s\",\"session_info\":%s}}",
                               q->type, q->user_id, text)
                    : asprintf(&frame, "{\"type\":%d,\"data\":{\"models\":%s}}", q->type, text);
        if (k < 0)
            frame = NULL;
        else
            *len = (size_t)k;
    }
    free(text);
    return frame;
}
