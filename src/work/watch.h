/* watch.h - the running turns that connections here resume, watched in
 * case their last frame never reaches them: their chatd died or stalled
 * past its lease (nobody sends it), or it was published while this
 * chatd's subscriber was reconnecting (pub/sub is at most once). Once a
 * second a worker sweeps them (work/events.c): one that no longer runs
 * gets its end to its resumers and is dropped.
 *
 * One per process, owned by struct app; thread-safe. The list and its
 * rules are here, alone (tests/unit/test_watch.c); what a sweep asks of
 * PostgreSQL and Redis is the caller's. */
#ifndef CHATD_WATCH_H
#define CHATD_WATCH_H

#include "lib/uuid.h"

struct pool_job;

/* An ended turn whose stream Redis cannot give now (stalled, restarting):
 * its end waits this many sweeps for Redis, then comes from PostgreSQL,
 * and a resumer that lacks deltas is told error 30. */
#define WATCH_REDIS_SWEEPS 10

struct watch {
    struct watch *next;
    char user[UUID_STR_LEN + 1], session[UUID_STR_LEN + 1], turn[UUID_STR_LEN + 1];
    int redis_failed; /* sweeps its stream could not be read, once it had ended */
};

struct watches;

struct watches *watches_create(void);
void watches_destroy(struct watches *ws);

/* Watches user's turn on session, once however often it is asked. */
void watches_add(struct watches *ws, const char *user, const char *session, const char *turn);

/* The sweep as a pool job when one should run now: there are watches and
 * no sweep is running (one is then marked running until watches_sweep
 * returns); NULL otherwise. */
struct pool_job *watches_due(struct watches *ws);

/* One sweep: ended(ctx, x) for each watch; 1 means its end was delivered
 * and it is dropped. Ends the sweep watches_due began. */
void watches_sweep(struct watches *ws, int (*ended)(void *ctx, struct watch *x), void *ctx);

/* Where an ended turn's last frame comes from, this sweep. */
enum watch_source {
    WATCH_WAIT,        /* Redis may be back in a moment, with the whole stream */
    WATCH_FROM_STREAM, /* the stream's own last frame: the bytes its connection got */
    WATCH_FROM_PG,     /* PostgreSQL's: the stored reply, or error 29 */
};
enum watch_source watch_source(struct watch *x, int stream_read, int stream_has_end);

#endif
