/* cache.h - the Redis cache in front of PostgreSQL (cache-aside).
 *
 * Redis only ever holds copies: a miss, an error or a flushed server sends
 * the caller to PostgreSQL, and every write to PostgreSQL deletes or
 * rewrites the copies it changes. So Redis can be flushed, restarted or
 * down at any moment without changing an answer; only speed changes.
 *
 * One cache per worker thread (a hiredis context is not thread-safe). Keys
 * start with "chatd:" and carry a hash tag so that the keys of one user
 * ({u:<id>}) or one session ({s:<id>}) land in one Redis Cluster slot. */
#ifndef CHATD_CACHE_H
#define CHATD_CACHE_H

#include <stddef.h>
#include <time.h>

struct config;
struct redisContext;

/* Copies of admin-editable rows (user profile, session list, model names)
 * expire so that an UPDATE made with plain SQL shows within this bound. */
#define CACHE_TTL_PROFILE 60
#define CACHE_TTL_SESSIONS 60
#define CACHE_TTL_MODELS 60
#define CACHE_TTL_CONTEXT 3600

#define CACHE_KEY_MAX 96

struct cache {
    struct redisContext *rc;
    const struct config *cfg;
    time_t retry_at; /* after a failure, skip Redis until then */
};

void cache_open(struct cache *c, const struct config *cfg);
void cache_close(struct cache *c);

/* Value of key (malloc'd, NUL-terminated, *len set), or NULL on a miss or
 * any error. */
char *cache_get(struct cache *c, const char *key, size_t *len);
/* Best effort: a failure is logged and otherwise ignored. */
void cache_set(struct cache *c, const char *key, const char *val, size_t len, int ttl_seconds);
/* Deletes keys. Returns 0, or -1 when Redis could not be told (the caller
 * may then not trust the copies; TTLs bound the damage). */
int cache_del(struct cache *c, const char *const *keys, size_t n);
/* 0 when Redis answers PING. */
int cache_ping(struct cache *c);
/* Runs a Lua script (EVAL) whose reply is an array of n integers, into
 * out. At most CACHE_EVAL_MAX_ARGS keys + args; keys must share one hash
 * tag. Returns 0, or -1 when Redis is skipped (down, in back-off) or
 * answered anything else (logged, and Redis is then skipped for a while
 * like after any other failure). */
#define CACHE_EVAL_MAX_ARGS 12
int cache_eval_ints(struct cache *c, const char *script, int nkeys, const char *const *keys,
                    int nargs, const char *const *args, long long *out, size_t n);

void cache_key_profile(char out[CACHE_KEY_MAX], const char *user_id);
void cache_key_sessions(char out[CACHE_KEY_MAX], const char *user_id);
void cache_key_context(char out[CACHE_KEY_MAX], const char *session_id);
void cache_key_models(char out[CACHE_KEY_MAX]);
/* Rate-limit counters (ratelimit.c): the user's turns in one window,
 * named by the epoch minute or the UTC day (yyyymmdd). */
void cache_key_rate_minute(char out[CACHE_KEY_MAX], const char *user_id, long long epoch_minute);
void cache_key_rate_day(char out[CACHE_KEY_MAX], const char *user_id, int yyyymmdd);

#endif
