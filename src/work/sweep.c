/* sweep.c - see sweep.h. */
#include "work/sweep.h"

#include <stdlib.h>
#include <string.h>

#include "lib/bg.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/files.h"
#include "store/pg.h"

/* Sessions per statement, and queue entries per transaction: each holds
 * its locks for a few milliseconds. */
#define SWEEP_BATCH 500

struct sweep {
    const struct config *cfg;
    struct bg bg;
};

struct erase_ctx {
    const struct config *cfg;
    struct cache *c;
    struct sweep_stats *st;
};

/* Removes a batch of the queue: the files at once (one already gone is
 * removed all the same), the Redis keys when Redis answers (else they stay
 * queued for the next sweep). */
static void erase_batch(void *arg, struct db_erasure_item *items, int n)
{
    struct erase_ctx *e = arg;
    const char **users = calloc((size_t)n + 1, sizeof(char *));
    const char **sessions = calloc((size_t)n + 1, sizeof(char *));
    size_t nu = 0, ns = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(items[i].kind, "file") == 0) {
            files_remove(e->cfg, items[i].name);
            items[i].done = 1;
            e->st->files++;
        } else if (users != NULL && sessions != NULL) {
            if (strcmp(items[i].kind, "user") == 0)
                users[nu++] = items[i].name;
            else
                sessions[ns++] = items[i].name;
        }
    }
    uint64_t keys = 0;
    if ((nu > 0 || ns > 0) && cache_erase(e->c, users, nu, sessions, ns, &keys) == 0)
        for (int i = 0; i < n; i++)
            items[i].done = 1;
    e->st->redis_keys += keys;
    free(users);
    free(sessions);
}

int sweep_erasures(struct pg *pg, struct cache *c, const struct config *cfg, struct sweep_stats *st)
{
    struct erase_ctx e = {cfg, c, st};
    int taken;
    do {
        uint64_t before = st->files;
        if (db_erasure_run(pg, SWEEP_BATCH, erase_batch, &e, &taken) != DB_OK)
            return -1;
        metrics_erased(0, st->files - before);
    } while (taken == SWEEP_BATCH);
    metrics_erased(1, st->redis_keys);
    return 0;
}

int sweep_once(struct pg *pg, struct cache *c, const struct config *cfg, struct sweep_stats *st)
{
    struct db_sweep_policy pol = {
        .temporary_hours = cfg->temporary_chat_hours,
        .retention_days = cfg->retention_days,
        .clock_offset_seconds = cfg->sweep_clock_offset_seconds,
        .batch = SWEEP_BATCH,
    };
    int t, r;
    do {
        if (db_sweep(pg, &pol, &t, &r) != DB_OK)
            return -1;
        st->temporary += (uint64_t)t;
        st->retention += (uint64_t)r;
        metrics_retention_deleted(1, (uint64_t)t);
        metrics_retention_deleted(0, (uint64_t)r);
    } while (t == SWEEP_BATCH || r == SWEEP_BATCH);
    if (db_runout_purge(pg) != DB_OK)
        return -1;
    return sweep_erasures(pg, c, cfg, st);
}

static void *sweep_main(void *arg)
{
    struct sweep *s = arg;
    struct pg pg = {.cfg = s->cfg};
    struct cache c;
    cache_open(&c, s->cfg, NULL);
    while (bg_wait(&s->bg, -1, s->cfg->sweep_seconds * 1000) != BG_WOKEN && !bg_stopping(&s->bg)) {
        if (pg_ensure(&pg) != 0 || !db_sweep_lock(&pg))
            continue; /* down, or another chatd sweeps */
        struct sweep_stats st = {0};
        int rc = sweep_once(&pg, &c, s->cfg, &st);
        db_sweep_unlock(&pg);
        if (rc != 0 || st.temporary || st.retention || st.files || st.redis_keys)
            log_info("event=sweep ok=%d temporary=%llu retention=%llu files=%llu redis_keys=%llu",
                     rc == 0, (unsigned long long)st.temporary, (unsigned long long)st.retention,
                     (unsigned long long)st.files, (unsigned long long)st.redis_keys);
    }
    cache_close(&c);
    pg_close(&pg);
    return NULL;
}

struct sweep *sweep_start(const struct config *cfg)
{
    struct sweep *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cfg = cfg;
    if (bg_start(&s->bg, sweep_main, s) != 0) {
        log_error("event=sweep_start_failed");
        sweep_stop(s);
        return NULL;
    }
    return s;
}

void sweep_stop(struct sweep *s)
{
    if (s == NULL)
        return;
    bg_stop(&s->bg);
    free(s);
}
