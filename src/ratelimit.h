/* ratelimit.h - per-user limits on chat turns: RATE_LIMIT_PER_MINUTE in the
 * current UTC minute and DAILY_MESSAGE_LIMIT in the current UTC day.
 *
 * Counters live in Redis so that every chatd instance sees the same count;
 * PostgreSQL re-seeds a counter Redis lost, so a FLUSHALL does not reset a
 * limit. Redis down: the limits are not enforced (fail open) rather than
 * every chat failing. See ratelimit.c and docs/ARCHITECTURE.md. */
#ifndef CHATD_RATELIMIT_H
#define CHATD_RATELIMIT_H

#include "cache.h"

struct config;
struct pg;

/* One fixed window around a time: [start, end) in epoch seconds, and the
 * name of its counter. */
struct ratelimit_window {
    long long start, end;
    char key[CACHE_KEY_MAX];
};

/* The minute and the UTC day that hold now (epoch seconds). Pure. */
void ratelimit_windows(const char *user_id, double now, struct ratelimit_window *minute,
                       struct ratelimit_window *day);

/* Whole seconds from now until end, rounded up, at least 1. Pure. */
int ratelimit_wait_seconds(double now, long long end);

/* Checks the limits for one chat turn of user_id and, when it may go
 * ahead, counts it. Returns 0 (go ahead), or PERR_DAILY_LIMIT /
 * PERR_RATE_LIMITED with *wait_seconds set (nothing counted). Both limits
 * 0: returns 0 without touching Redis. */
int ratelimit_check(struct cache *c, struct pg *pg, const struct config *cfg, const char *user_id,
                    int *wait_seconds);

#endif
