/* cache.c - a synchronous hiredis client with reconnect and back-off.
 *
 * Workers call Redis synchronously: each has its own context, timeouts are
 * short, and after a failure Redis is skipped for a second so that a dead
 * Redis costs one timeout per second per worker, not one per request. */
#include "store/cache.h"

#include <errno.h>
#include <hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "store/inval.h"

#define CACHE_CONNECT_TIMEOUT_MS 300
#define CACHE_COMMAND_TIMEOUT_MS 500
#define CACHE_RETRY_SECONDS 1

void cache_key_profile(char out[CACHE_KEY_MAX], const char *user_id)
{
    snprintf(out, CACHE_KEY_MAX, "chatd:{u:%s}:profile", user_id);
}

void cache_key_sessions(char out[CACHE_KEY_MAX], const char *user_id)
{
    snprintf(out, CACHE_KEY_MAX, "chatd:{u:%s}:sessions", user_id);
}

void cache_key_context(char out[CACHE_KEY_MAX], const char *session_id)
{
    snprintf(out, CACHE_KEY_MAX, "chatd:{s:%s}:ctx", session_id);
}

void cache_key_models(char out[CACHE_KEY_MAX])
{
    snprintf(out, CACHE_KEY_MAX, "chatd:{models}:names");
}

void cache_key_rate_minute(char out[CACHE_KEY_MAX], const char *user_id, long long epoch_minute)
{
    snprintf(out, CACHE_KEY_MAX, "chatd:{u:%s}:rl:m:%lld", user_id, epoch_minute);
}

void cache_key_rate_day(char out[CACHE_KEY_MAX], const char *user_id, int yyyymmdd)
{
    snprintf(out, CACHE_KEY_MAX, "chatd:{u:%s}:rl:d:%08d", user_id, yyyymmdd);
}

void cache_open(struct cache *c, const struct config *cfg, struct inval *inval)
{
    c->rc = NULL;
    c->cfg = cfg;
    c->inval = inval;
    c->retry_at = 0;
    c->sentinel = 0;
}

void cache_close(struct cache *c)
{
    if (c->rc != NULL)
        redisFree(c->rc);
    c->rc = NULL;
}

void cache_fail(struct cache *c, const char *what)
{
    metrics_redis_error();
    log_warn("event=redis_error op=%s error=\"%s\"", what,
             c->rc != NULL && c->rc->err ? c->rc->errstr : "unexpected reply");
    cache_close(c);
    c->retry_at = time(NULL) + CACHE_RETRY_SECONDS;
}

void cache_retry_now(struct cache *c) { c->retry_at = 0; }

/* A connection to host:port, with the command timeout set; NULL (and
 * logged) when it cannot be made. */
static redisContext *cache_dial(const char *host, int port)
{
    struct timeval ct = {0, CACHE_CONNECT_TIMEOUT_MS * 1000};
    redisContext *rc = redisConnectWithTimeout(host, port, ct);
    if (rc == NULL || rc->err) {
        log_warn("event=redis_connect_failed host=%s port=%d error=\"%s\"", host, port,
                 rc != NULL ? rc->errstr : "out of memory");
        if (rc != NULL)
            redisFree(rc);
        return NULL;
    }
    struct timeval tt = {0, CACHE_COMMAND_TIMEOUT_MS * 1000};
    redisSetTimeout(rc, tt);
    return rc;
}

/* The master's address as one of REDIS_SENTINELS says it is, asking each
 * in turn from the one that answered last (a Sentinel that is down or
 * does not know the master is skipped). 0 and host (of cap bytes), *port
 * set; -1 when none answers. */
static int cache_ask_sentinels(struct cache *c, char *host, size_t cap, int *port)
{
    const struct config_list *l = &c->cfg->sentinel_list;
    for (size_t k = 0; k < l->n; k++) {
        size_t i = (c->sentinel + k) % l->n;
        const char *item = l->item[i], *colon = strrchr(item, ':');
        char shost[256];
        snprintf(shost, sizeof(shost), "%.*s", (int)(colon - item), item);
        redisContext *rc = cache_dial(shost, atoi(colon + 1));
        if (rc == NULL)
            continue;
        redisReply *r =
            redisCommand(rc, "SENTINEL get-master-addr-by-name %s", c->cfg->redis_master_name);
        int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 r->element[0]->type == REDIS_REPLY_STRING &&
                 r->element[1]->type == REDIS_REPLY_STRING && r->element[0]->len < cap;
        if (ok) {
            memcpy(host, r->element[0]->str, r->element[0]->len + 1);
            *port = atoi(r->element[1]->str);
            c->sentinel = i;
        }
        freeReplyObject(r);
        redisFree(rc);
        if (ok)
            return 0;
        log_warn("event=redis_sentinel_no_master sentinel=%s master=%s", item,
                 c->cfg->redis_master_name);
    }
    return -1;
}

/* 1 when rc's server says it is a master: a Sentinel's answer may be a
 * moment old, and a restarted old master is one until Sentinel turns it
 * into a replica; writing there would be lost (or refused, READONLY). */
static int cache_is_master(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "ROLE");
    int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    freeReplyObject(r);
    return ok;
}

/* A usable context, or NULL while Redis is down. */
redisContext *cache_conn(struct cache *c)
{
    if (c->rc != NULL)
        return c->rc;
    if (time(NULL) < c->retry_at)
        return NULL;
    const struct config *cfg = c->cfg;
    if (cfg->sentinel_list.n == 0) {
        c->rc = cache_dial(cfg->redis_host, cfg->redis_port);
    } else {
        char host[256];
        int port;
        if (cache_ask_sentinels(c, host, sizeof(host), &port) == 0)
            c->rc = cache_dial(host, port);
    }
    if (c->rc == NULL) {
        cache_fail(c, "connect");
        return NULL;
    }

    redisReply *r;
    if (cfg->redis_password[0] != '\0') {
        r = redisCommand(c->rc, "AUTH %s", cfg->redis_password);
        int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok) {
            cache_fail(c, "auth");
            return NULL;
        }
    }
    if (cfg->sentinel_list.n > 0 && !cache_is_master(c->rc)) {
        cache_fail(c, "role");
        return NULL;
    }
    if (cfg->redis_db != 0) {
        r = redisCommand(c->rc, "SELECT %d", cfg->redis_db);
        int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok) {
            cache_fail(c, "select");
            return NULL;
        }
    }
    return c->rc;
}

/* The connection was closed under us since its last use (CLIENT KILL, a
 * restart, a failover, a timeout on Redis's side): nothing says so until
 * it is used. A timeout (a stalled Redis) is not this. */
static int cache_dropped(const redisContext *rc, int err_no)
{
    return rc->err == REDIS_ERR_EOF ||
           (rc->err == REDIS_ERR_IO && (err_no == EPIPE || err_no == ECONNRESET));
}

int cache_demoted(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "READONLY", 8) == 0;
}

/* One command, in Redis's wire form: its reply, or NULL after cache_fail.
 * A connection found dropped when used is replaced at once and the
 * command sent again, once: the first use after a CLIENT KILL must not
 * fail a request (or answer error 30) while Redis is up. */
static redisReply *cache_send(struct cache *c, const char *op, const char *cmd, size_t len)
{
    for (int attempt = 0;; attempt++) {
        int reused = c->rc != NULL;
        redisContext *rc = cache_conn(c);
        if (rc == NULL)
            return NULL;
        void *r = NULL;
        errno = 0;
        if (redisAppendFormattedCommand(rc, cmd, len) == REDIS_OK &&
            redisGetReply(rc, &r) == REDIS_OK && r != NULL) {
            if (!cache_demoted(r))
                return r;
            /* The master of this connection is a replica now (Sentinel
             * failed over): ask again which one is master, and send the
             * command there, once. */
            freeReplyObject(r);
            cache_fail(c, op);
            if (attempt > 0)
                return NULL;
            c->retry_at = 0;
            continue;
        }
        int again = attempt == 0 && reused && cache_dropped(rc, errno);
        cache_fail(c, op);
        if (!again)
            return NULL;
        c->retry_at = 0; /* Redis is likely up: no back-off for the one retry */
    }
}

redisReply *cache_command(struct cache *c, const char *op, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    redisReply *r = len > 0 ? cache_send(c, op, cmd, (size_t)len) : NULL;
    redisFreeCommand(cmd);
    return r;
}

redisReply *cache_command_argv(struct cache *c, const char *op, int argc, const char **argv,
                               const size_t *argl)
{
    char *cmd = NULL;
    long long len = redisFormatCommandArgv(&cmd, argc, argv, argl);
    redisReply *r = len > 0 ? cache_send(c, op, cmd, (size_t)len) : NULL;
    redisFreeCommand(cmd);
    return r;
}

char *cache_get(struct cache *c, const char *key, size_t *len)
{
    redisReply *r = cache_command(c, "get", "GET %s", key);
    if (r == NULL)
        return NULL;
    if (r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        cache_fail(c, "get");
        return NULL;
    }
    char *out = NULL;
    if (r->type == REDIS_REPLY_STRING && (out = util_memdup(r->str, r->len)) != NULL)
        *len = r->len;
    freeReplyObject(r);
    return out;
}

void cache_set(struct cache *c, const char *key, const char *val, size_t len, int ttl_seconds)
{
    redisReply *r = cache_command(c, "set", "SET %s %b EX %d", key, val, len, ttl_seconds);
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        cache_fail(c, "set");
        return;
    }
    freeReplyObject(r);
}

int cache_del(struct cache *c, const char *const *keys, size_t n)
{
    /* One round trip: the keys of one call share a hash tag, so a
     * multi-key DEL is valid on Redis Cluster too. */
    const char *argv[8];
    size_t argl[8];
    if (n > 7)
        n = 7;
    argv[0] = "DEL";
    argl[0] = 3;
    for (size_t i = 0; i < n; i++) {
        argv[i + 1] = keys[i];
        argl[i + 1] = strlen(keys[i]);
    }
    redisReply *r = cache_command_argv(c, "del", (int)n + 1, argv, argl);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        cache_fail(c, "del");
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

int cache_get_copy(struct cache *c, const char *key, struct cache_copy *out)
{
    size_t len;
    char *s = cache_get(c, key, &len);
    if (s == NULL)
        return -1;
    /* "<version>:<aux>:" then the payload; anything else is no copy. */
    char *p = s, *end;
    unsigned long long v[2];
    for (int i = 0; i < 2; i++) {
        if (*p < '0' || *p > '9')
            goto bad;
        v[i] = strtoull(p, &end, 10);
        if (*end != ':')
            goto bad;
        p = end + 1;
    }
    out->version = v[0];
    out->aux = v[1];
    out->len = len - (size_t)(p - s);
    memmove(s, p, out->len + 1);
    out->payload = s;
    return 0;
bad:
    free(s);
    return -1;
}

/* KEYS[1] the key; ARGV[1] the version, ARGV[2] the whole value, ARGV[3]
 * the TTL. A stored copy of a higher version wins. */
static const char cache_put_script[] = "local cur = redis.call('GET', KEYS[1]) "
                                       "if cur then "
                                       "  local v = tonumber(string.match(cur, '^(%d+):')) "
                                       "  if v and v > tonumber(ARGV[1]) then return 0 end "
                                       "end "
                                       "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) "
                                       "return 1";

void cache_put_copy(struct cache *c, const char *key, uint64_t version, uint64_t aux,
                    const char *payload, size_t len, int ttl_seconds)
{
    char head[48], ver[24], ttl[16];
    int hl = snprintf(head, sizeof(head), "%llu:%llu:", (unsigned long long)version,
                      (unsigned long long)aux);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)version);
    snprintf(ttl, sizeof(ttl), "%d", ttl_seconds);
    char *val = malloc((size_t)hl + len);
    if (val == NULL)
        return;
    memcpy(val, head, (size_t)hl);
    memcpy(val + hl, payload, len);
    const char *argv[7] = {"EVAL", cache_put_script, "1", key, ver, val, ttl};
    size_t argl[7] = {
        4,          sizeof(cache_put_script) - 1, 1, strlen(key), strlen(ver), (size_t)hl + len,
        strlen(ttl)};
    redisReply *r = cache_command_argv(c, "put_copy", 7, argv, argl);
    free(val);
    if (r == NULL)
        return;
    if (r->type != REDIS_REPLY_INTEGER) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            log_warn("event=redis_script_error error=\"%.*s\"", (int)strcspn(r->str, "\n"), r->str);
        freeReplyObject(r);
        cache_fail(c, "put_copy");
        return;
    }
    freeReplyObject(r);
}

void cache_saw_write(struct cache *c, const char *user_id, uint64_t xid)
{
    inval_saw_user(c->inval, user_id, xid);
}

int cache_ping(struct cache *c)
{
    redisReply *r = cache_command(c, "ping", "PING");
    if (r == NULL)
        return -1;
    int ok = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (!ok) {
        cache_fail(c, "ping");
        return -1;
    }
    return 0;
}

int cache_eval_ints(struct cache *c, const char *script, int nkeys, const char *const *keys,
                    int nargs, const char *const *args, long long *out, size_t n)
{
    if (nkeys < 0 || nargs < 0 || nkeys + nargs > CACHE_EVAL_MAX_ARGS)
        return -1;
    /* EVAL rather than EVALSHA + SCRIPT LOAD: the scripts are a few hundred
     * bytes, Redis caches the compiled script by its hash anyway, and there
     * is no NOSCRIPT case to handle after a restart or SCRIPT FLUSH. */
    const char *argv[CACHE_EVAL_MAX_ARGS + 3];
    size_t argl[CACHE_EVAL_MAX_ARGS + 3];
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    int argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = nk;
    for (int i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    for (int i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    redisReply *r = cache_command_argv(c, "eval", argc, argv, argl);
    if (r == NULL)
        return -1;
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements == n;
    for (size_t i = 0; ok && i < n; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            ok = 0;
        else
            out[i] = r->element[i]->integer;
    }
    if (!ok && r != NULL && r->type == REDIS_REPLY_ERROR)
        log_warn("event=redis_script_error error=\"%.*s\"", (int)strcspn(r->str, "\n"), r->str);
    freeReplyObject(r);
    if (!ok) {
        cache_fail(c, "eval");
        return -1;
    }
    return 0;
}

/* 1 when key's hash tag ("chatd:{u:<id>}..." or "chatd:{s:<id>}...")
 * names one of ids. */
static int key_names(const char *key, size_t len, char kind, const char *const *ids, size_t n)
{
    if (len < 9 + UUID_STR_LEN || memcmp(key, "chatd:{", 7) != 0 || key[7] != kind || key[8] != ':')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(key + 9, ids[i], UUID_STR_LEN) == 0)
            return 1;
    return 0;
}

int cache_erase(struct cache *c, const char *const *users, size_t nu, const char *const *sessions,
                size_t ns, uint64_t *deleted)
{
    char k[2][CACHE_KEY_MAX];
    for (size_t i = 0; i < ns; i++) {
        cache_key_context(k[0], sessions[i]);
        snprintf(k[1], CACHE_KEY_MAX, "chatd:{s:%s}:turn", sessions[i]);
        const char *keys[2] = {k[0], k[1]};
        if (cache_del(c, keys, 2) != 0)
            return -1;
    }
    if (nu == 0)
        return 0;
    /* A user's keys, and every key of the sessions erased with them (a
     * turn's stream among them): one pass over the key space. */
    char cursor[32] = "0";
    do {
        redisReply *r = cache_command(c, "scan", "SCAN %s MATCH chatd:{* COUNT 1000", cursor);
        if (r == NULL)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            cache_fail(c, "scan");
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *key = keys->element[i]->str;
            size_t len = keys->element[i]->len;
            if (key == NULL ||
                !(key_names(key, len, 'u', users, nu) || key_names(key, len, 's', sessions, ns)))
                continue;
            redisReply *d = cache_command(c, "del", "DEL %b", key, len);
            if (d == NULL) {
                freeReplyObject(r);
                return -1;
            }
            freeReplyObject(d);
            (*deleted)++;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}
