/* ratelimit.c - per-user chat-turn limits, counted in Redis, seeded from
 * PostgreSQL.
 *
 * Fixed windows (the current UTC minute, the current UTC day), one Redis
 * counter each, named after the window, so a window's counter is never
 * reset or extended: the next window simply has another key, and the old
 * one expires a little after its window ends. Fixed rather than sliding
 * windows: one integer per user and window, one round trip per turn, and a
 * wait that is easy to state ("until the minute ends"); the price is that a
 * user may send up to twice the per-minute limit across a minute boundary.
 *
 * Check and count are one Lua script, so two instances (or two workers)
 * admitting turns of one user at once cannot both take the last slot. A
 * refused turn does not count, so hammering while limited neither uses up
 * the day's quota nor keeps the lockout going.
 *
 * Redis may be flushed at any moment (PostgreSQL is the source of truth),
 * so a counter that is missing is seeded from the user's stored turns in
 * that window (PG_TURNS_SINCE) before it is incremented; a FLUSHALL does
 * not give anyone a fresh quota. The script says when a counter is missing
 * instead of the caller asking first, so a turn costs one Redis round trip
 * and the PostgreSQL count runs only at a window's first turn. The seed
 * counts stored turns: turns admitted but not stored (the agent failed, or
 * still running) are not in it, so after a flush a count may come back a
 * little low, never high.
 *
 * Redis unreachable or answering errors: the turn goes ahead, uncounted
 * (fail open). The limits protect the agent's bill, not data, and turning
 * every chat away because a cache is down would be the bigger outage;
 * cache.c's back-off keeps a dead Redis from costing a timeout per turn. */
#include "work/ratelimit.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lib/config.h"
#include "lib/log.h"
#include "store/db.h"

#define RATELIMIT_MINUTE 60LL
#define RATELIMIT_DAY 86400LL
/* Counters outlive their window by this much, so an instance whose clock
 * lags a little still finds the window it believes is current. */
#define RATELIMIT_TTL_SLACK 60LL
/* At most one "limits not enforced" warning per this many seconds. */
#define RATELIMIT_WARN_EVERY 10

/* KEYS[1], KEYS[2]: the minute and the day counter.
 * ARGV[1], ARGV[2]: their limits, 0 = off (that counter is not touched).
 * ARGV[3], ARGV[4]: TTLs for a counter created now.
 * ARGV[5], ARGV[6]: seeds (the turns PostgreSQL holds), -1 = not read yet.
 * Returns {verdict, minute count, day count}: 0 counted, 1 over the minute
 * limit, 2 over the day limit, -1 a counter is missing and no seed was
 * given (nothing written). The day is checked first so that a user over
 * both is told the longer wait. */
static const char ratelimit_script[] =
    "local n = {0, 0}\n"
    "for i = 1, 2 do\n"
    "  if tonumber(ARGV[i]) > 0 then\n"
    "    local v = redis.call('GET', KEYS[i])\n"
    "    if not v then\n"
    "      if tonumber(ARGV[i + 4]) < 0 then return {-1, 0, 0} end\n"
    "      redis.call('SET', KEYS[i], ARGV[i + 4], 'EX', ARGV[i + 2])\n"
    "      v = ARGV[i + 4]\n"
    "    end\n"
    "    n[i] = tonumber(v)\n"
    "  end\n"
    "end\n"
    "if tonumber(ARGV[2]) > 0 and n[2] >= tonumber(ARGV[2]) then return {2, n[1], n[2]} end\n"
    "if tonumber(ARGV[1]) > 0 and n[1] >= tonumber(ARGV[1]) then return {1, n[1], n[2]} end\n"
    "for i = 1, 2 do\n"
    "  if tonumber(ARGV[i]) > 0 then n[i] = redis.call('INCR', KEYS[i]) end\n"
    "end\n"
    "return {0, n[1], n[2]}\n";

static long long floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

void ratelimit_windows(const char *user_id, double now, struct ratelimit_window *minute,
                       struct ratelimit_window *day)
{
    long long sec = (long long)now;
    if ((double)sec > now) /* (long long) truncates toward zero */
        sec--;
    long long m = floor_div(sec, RATELIMIT_MINUTE);
    minute->start = m * RATELIMIT_MINUTE;
    minute->end = minute->start + RATELIMIT_MINUTE;
    cache_key_rate_minute(minute->key, user_id, m);

    /* Epoch time has no leap seconds, so UTC days are exact multiples. */
    day->start = floor_div(sec, RATELIMIT_DAY) * RATELIMIT_DAY;
    day->end = day->start + RATELIMIT_DAY;
    time_t t = (time_t)day->start;
    struct tm tm;
    gmtime_r(&t, &tm);
    cache_key_rate_day(day->key, user_id,
                       (tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday);
}

int ratelimit_wait_seconds(double now, long long end)
{
    double left = (double)end - now;
    long long w = (long long)left;
    if ((double)w < left)
        w++;
    return w < 1 ? 1 : (int)w;
}

/* The user's stored turns in each window, as the script's seed arguments. */
static int ratelimit_seed(struct pg *pg, const char *user_id, const struct ratelimit_window *m,
                          const struct ratelimit_window *d, char seed_m[24], char seed_d[24])
{
    long long in_m, in_d;
    if (db_turns_since(pg, user_id, m->start, d->start, &in_m, &in_d) != DB_OK)
        return -1;
    snprintf(seed_m, 24, "%lld", in_m);
    snprintf(seed_d, 24, "%lld", in_d);
    return 0;
}

static void ratelimit_warn_open(const char *user_id, const char *why)
{
    static atomic_llong warned_at;
    long long now = (long long)time(NULL), last = atomic_load(&warned_at);
    if (now - last < RATELIMIT_WARN_EVERY ||
        !atomic_compare_exchange_strong(&warned_at, &last, now))
        return;
    log_warn("event=rate_limit_not_enforced reason=%s user=%s", why, user_id);
}

enum ratelimit_result ratelimit_check(struct cache *c, struct pg *pg, const struct config *cfg,
                                      const char *user_id, int *wait_seconds)
{
    int lim_m = cfg->rate_limit_per_minute, lim_d = cfg->daily_message_limit;
    if (lim_m <= 0 && lim_d <= 0)
        return RATELIMIT_OK;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    struct ratelimit_window m, d;
    ratelimit_windows(user_id, now, &m, &d);

    char a_lim_m[16], a_lim_d[16], a_ttl_m[24], a_ttl_d[24];
    char seed_m[24] = "-1", seed_d[24] = "-1";
    snprintf(a_lim_m, sizeof(a_lim_m), "%d", lim_m > 0 ? lim_m : 0);
    snprintf(a_lim_d, sizeof(a_lim_d), "%d", lim_d > 0 ? lim_d : 0);
    snprintf(a_ttl_m, sizeof(a_ttl_m), "%lld", m.end - (long long)ts.tv_sec + RATELIMIT_TTL_SLACK);
    snprintf(a_ttl_d, sizeof(a_ttl_d), "%lld", d.end - (long long)ts.tv_sec + RATELIMIT_TTL_SLACK);
    const char *keys[2] = {m.key, d.key};
    const char *args[6] = {a_lim_m, a_lim_d, a_ttl_m, a_ttl_d, seed_m, seed_d};
    long long res[3];

    if (cache_eval_ints(c, ratelimit_script, 2, keys, 6, args, res, 3) != 0) {
        ratelimit_warn_open(user_id, "redis");
        return RATELIMIT_OK;
    }
    if (res[0] == -1) {
        if (ratelimit_seed(pg, user_id, &m, &d, seed_m, seed_d) != 0) {
            ratelimit_warn_open(user_id, "postgres");
            return RATELIMIT_OK;
        }
        if (cache_eval_ints(c, ratelimit_script, 2, keys, 6, args, res, 3) != 0) {
            ratelimit_warn_open(user_id, "redis");
            return 0;
        }
    }
    if (res[0] == 2) {
        *wait_seconds = ratelimit_wait_seconds(now, d.end);
        log_info("event=rate_limited window=day user=%s count=%lld limit=%d wait=%d", user_id,
                 res[2], lim_d, *wait_seconds);
        return RATELIMIT_OVER_DAY;
    }
    if (res[0] == 1) {
        *wait_seconds = ratelimit_wait_seconds(now, m.end);
        log_info("event=rate_limited window=minute user=%s count=%lld limit=%d wait=%d", user_id,
                 res[1], lim_m, *wait_seconds);
        return RATELIMIT_OVER_MINUTE;
    }
    return RATELIMIT_OK;
}
