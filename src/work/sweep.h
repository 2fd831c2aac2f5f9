/* sweep.h - the data's lifecycle, on a thread of its own: temporary chats
 * deleted TEMPORARY_CHAT_HOURS after their last turn, sessions idle longer
 * than RETENTION_DAYS (or the user's retention_days) deleted, pinned ones
 * never; then what those rows leave behind, files in PUBLIC_DIR and Redis
 * keys (the erasure queue of migration 0013, which every deletion fills:
 * code 4, an admin's DELETE, erasure); and reservations long run out.
 *
 * Every SWEEP_SECONDS, and only on the chatd that holds the sweeper's
 * advisory lock, so that one sweeps at a time however many run. Each
 * batch is one short statement that skips rows a turn holds: turns and
 * reads go on meanwhile. */
#ifndef CHATD_SWEEP_H
#define CHATD_SWEEP_H

#include <stdint.h>

struct cache;
struct config;
struct pg;
struct sweep;

/* What one sweep did. */
struct sweep_stats {
    uint64_t temporary, retention; /* sessions deleted */
    uint64_t files, redis_keys;    /* removed after their rows */
};

/* One whole sweep on pg and c, whether or not another chatd sweeps (the
 * statements skip what another holds): `chatd retention` and the thread
 * below. 0, or -1 when PostgreSQL failed (what was done stays done). */
int sweep_once(struct pg *pg, struct cache *c, const struct config *cfg, struct sweep_stats *st);

/* Only the erasure queue (`chatd erase-user`). */
int sweep_erasures(struct pg *pg, struct cache *c, const struct config *cfg,
                   struct sweep_stats *st);

/* The thread; NULL when it could not start (logged). */
struct sweep *sweep_start(const struct config *cfg);
void sweep_stop(struct sweep *s);

#endif
