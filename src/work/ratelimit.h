/* ratelimit.h - per-user limits on chat turns: RATE_LIMIT_PER_MINUTE in the
 * current UTC minute and DAILY_MESSAGE_LIMIT in the current UTC day.
 *
 * Counters live in Redis so that every chatd instance sees the same count;
 * PostgreSQL re-seeds a counter Redis lost, so a FLUSHALL does not reset a
 * limit. Redis down: the limits are not enforced (fail open) rather than
 * every chat failing. See ratelimit.c and docs/ARCHITECTURE.md. */
#ifndef CHATD_RATELIMIT_H
#define CHATD_RATELIMIT_H

#include "store/cache.h"

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

enum ratelimit_result {
    RATELIMIT_OK = 0,      /* go ahead (counted) */
    RATELIMIT_OVER_DAY,    /* over DAILY_MESSAGE_LIMIT (checked first) */
    RATELIMIT_OVER_MINUTE, /* over RATE_LIMIT_PER_MINUTE */
};

/* Checks the limits for one chat turn of user_id and, when it may go
 * ahead, counts it. Over a limit, *wait_seconds is set and nothing is
 * counted. Both limits 0: RATELIMIT_OK without touching Redis. */
enum ratelimit_result ratelimit_check(struct cache *c, struct pg *pg, const struct config *cfg,
                                      const char *user_id, int *wait_seconds);

#endif
