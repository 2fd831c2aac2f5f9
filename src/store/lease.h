/* lease.h - the turn leases this process holds, kept alive, and the news
 * of leases given back (migration 0007).
 *
 * A turn on an existing session runs only while it holds the session's
 * lease in PostgreSQL (db_lease_take), so turns on one session run one at
 * a time across every chatd. This module's thread, on a connection of its
 * own:
 *   - renews every lease this process holds in one statement, every third
 *     of TURN_LEASE_SECONDS, so that a turn whose agent takes minutes
 *     keeps its session, and a chatd that dies loses its leases within
 *     TURN_LEASE_SECONDS;
 *   - LISTENs on chatd_turn, which PostgreSQL sends when a lease is given
 *     back, and calls on_free(arg, session_id) for it, and on_free(arg,
 *     NULL) once a second (a lease may have run out with no one to give it
 *     back). on_free runs on this thread and must not block.
 * A turn waiting for a lease holds no thread and no connection. */
#ifndef CHATD_LEASE_H
#define CHATD_LEASE_H

struct config;
struct lease;

typedef void (*lease_free_fn)(void *arg, const char *session_id);

/* NULL on allocation failure (logged). PostgreSQL down is retried. */
struct lease *lease_start(const struct config *cfg, lease_free_fn on_free, void *arg);
/* Stops the thread: no more renewals and no more news. lease_hold and
 * lease_let_go still work (a pool job at shutdown may call them) until
 * lease_free. */
void lease_stop(struct lease *ls);
void lease_free(struct lease *ls);

/* This process holds (or no longer holds) turn_id's lease. lease_hold
 * returns 0, or -1 when out of memory (the lease then runs out unless the
 * turn ends sooner). */
int lease_hold(struct lease *ls, const char *turn_id);
void lease_let_go(struct lease *ls, const char *turn_id);
/* A lease this process let go of but could not give back (the database
 * did not answer): the thread gives it back once a second until it can,
 * so the session's next turn need not wait for it to run out. */
void lease_give_back_later(struct lease *ls, const char *session_id, const char *turn_id);

#endif
