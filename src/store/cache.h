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

#include <stdint.h>

struct config;
struct inval;
struct redisContext;
struct redisReply;

/* Every copy is versioned and checked before use (see cache_get_copy), so
 * a TTL bounds only the memory a copy nobody reads keeps in Redis. */
#define CACHE_TTL_PROFILE 3600
#define CACHE_TTL_SESSIONS 3600
#define CACHE_TTL_MODELS 3600
#define CACHE_TTL_CONTEXT 3600

#define CACHE_KEY_MAX 96

struct cache {
    struct redisContext *rc;
    const struct config *cfg;
    struct inval *inval; /* what this process heard of PostgreSQL writes */
    time_t retry_at;     /* after a failure, skip Redis until then */
    size_t sentinel;     /* REDIS_SENTINELS: the one asked first */
};

void cache_open(struct cache *c, const struct config *cfg, struct inval *inval);
void cache_close(struct cache *c);

/* The connected context (connecting, with AUTH and SELECT, when needed),
 * or NULL while Redis is down or in its back-off after a failure. For a
 * thread with a Redis connection of its own (store/live.c). */
struct redisContext *cache_conn(struct cache *c);
/* Counts and logs a failure of op, drops the connection and starts the
 * back-off. */
void cache_fail(struct cache *c, const char *op);
/* 1 for a write refused because the server became a replica under us
 * (READONLY, after a Sentinel failover): the cure is cache_fail, which
 * asks the Sentinels again, and the write sent again. */
struct redisReply;
int cache_demoted(const struct redisReply *r);
/* Ends the back-off: the next use connects at once. For a caller that
 * knows Redis answers again (the live subscriber hears it) and whose
 * request would otherwise be refused for the rest of the back-off. */
void cache_retry_now(struct cache *c);

/* One command (redisCommand's format, or argv): its reply (the caller
 * frees it; an error reply is a reply), or NULL when Redis failed (counted
 * and logged, the connection dropped, the back-off started). A connection
 * Redis closed since its last use is replaced and the command sent again
 * once, at once. */
struct redisReply *cache_command(struct cache *c, const char *op, const char *fmt, ...);
struct redisReply *cache_command_argv(struct cache *c, const char *op, int argc, const char **argv,
                                      const size_t *argl);

/* Value of key (malloc'd, NUL-terminated, *len set), or NULL on a miss or
 * any error. */
char *cache_get(struct cache *c, const char *key, size_t *len);
/* Best effort: a failure is logged and otherwise ignored. */
void cache_set(struct cache *c, const char *key, const char *val, size_t len, int ttl_seconds);
/* Deletes keys. Returns 0, or -1 when Redis could not be told (the caller
 * may then not trust the copies; TTLs bound the damage). */
int cache_del(struct cache *c, const char *const *keys, size_t n);
/* A versioned copy: Redis holds "<version>:<aux>:<payload>". The version
 * orders copies of one key (a snapshot's xmin, a session's next_seq); aux
 * is whatever else the reader checks (a snapshot's xmax, or 0). */
struct cache_copy {
    uint64_t version, aux;
    char *payload; /* malloc'd, NUL-terminated; the caller frees */
    size_t len;
};

/* 0 and *out filled, or -1 on a miss, an error, or a value of another
 * shape. The caller decides whether the version makes it usable. */
int cache_get_copy(struct cache *c, const char *key, struct cache_copy *out);
/* Stores a copy unless Redis already holds one of a higher version (one
 * Lua script, so a reader that started before a write and finishes after
 * it cannot replace the newer copy). Best effort, like cache_set. */
void cache_put_copy(struct cache *c, const char *key, uint64_t version, uint64_t aux,
                    const char *payload, size_t len, int ttl_seconds);

/* This process committed a change to user_id's copies in transaction xid
 * (pg_current_xact_id()): from now on no copy read before it is used
 * here. Call before answering the write. */
void cache_saw_write(struct cache *c, const char *user_id, uint64_t xid);

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

/* Deletes what Redis holds of erased users and sessions: each session's
 * context copy and turn pointer; when users are given, one SCAN over the
 * key space deletes every key of those users and of those sessions (a
 * turn's stream too), counted in *deleted. 0, or -1 when Redis failed. */
int cache_erase(struct cache *c, const char *const *users, size_t nu, const char *const *sessions,
                size_t ns, uint64_t *deleted);

void cache_key_profile(char out[CACHE_KEY_MAX], const char *user_id);
void cache_key_sessions(char out[CACHE_KEY_MAX], const char *user_id);
void cache_key_context(char out[CACHE_KEY_MAX], const char *session_id);
void cache_key_models(char out[CACHE_KEY_MAX]);
/* Rate-limit counters (ratelimit.c): the user's turns in one window,
 * named by the epoch minute or the UTC day (yyyymmdd). */
void cache_key_rate_minute(char out[CACHE_KEY_MAX], const char *user_id, long long epoch_minute);
void cache_key_rate_day(char out[CACHE_KEY_MAX], const char *user_id, int yyyymmdd);

#endif
