/* shutdown.h - the phases of a graceful stop (SIGTERM), pure: what the
 * server does next from where it is, the time, the turns still running
 * and the connections still open (tests/unit/test_shutdown.c). net/server.c
 * asks on every tick and does what it is told.
 *
 *   RUNNING -> DRAIN_TURNS (SIGTERM: new upgrades get 503, new requests
 *   error 25) -> DRAIN_CONNS (no turn left, or SHUTDOWN_GRACE_SECONDS
 *   over: every connection is closed after its last frames) -> STOPPED
 *   (none open, or 3 s over). */
#ifndef CHATD_SHUTDOWN_H
#define CHATD_SHUTDOWN_H

#include <time.h>

#define SHUTDOWN_CLOSE_SECONDS 3

enum shutdown_phase {
    SHUTDOWN_RUNNING,
    SHUTDOWN_DRAIN_TURNS, /* refusing new work, turns in flight finishing */
    SHUTDOWN_DRAIN_CONNS, /* connections closing after their last replies */
    SHUTDOWN_STOPPED,
};

struct shutdown {
    enum shutdown_phase phase;
    time_t deadline; /* of the phase */
};

enum shutdown_action {
    SHUTDOWN_WAIT,      /* nothing to do yet */
    SHUTDOWN_CLOSE_ALL, /* close every connection (phase is now DRAIN_CONNS) */
    SHUTDOWN_STOP,      /* end the service loop (phase is now STOPPED) */
};

/* SIGTERM at now, with grace seconds for the turns: 1 when it began the
 * stop, 0 when one was already under way. */
int shutdown_begin(struct shutdown *s, time_t now, int grace_seconds);

/* The next step at now. turns: started and not ended, counted before the
 * caller delivered what the workers posted (so their last frames are
 * delivered before a close); conns: open. */
enum shutdown_action shutdown_step(struct shutdown *s, time_t now, int turns, int conns);

#endif
