/* shutdown.c - the phases of a graceful stop (see shutdown.h). */
#include "net/shutdown.h"

int shutdown_begin(struct shutdown *s, time_t now, int grace_seconds)
{
    if (s->phase != SHUTDOWN_RUNNING)
        return 0;
    s->phase = SHUTDOWN_DRAIN_TURNS;
    s->deadline = now + grace_seconds;
    return 1;
}

enum shutdown_action shutdown_step(struct shutdown *s, time_t now, int turns, int conns)
{
    switch (s->phase) {
    case SHUTDOWN_RUNNING:
    case SHUTDOWN_STOPPED:
        return SHUTDOWN_WAIT;
    case SHUTDOWN_DRAIN_TURNS:
        if (turns > 0 && now < s->deadline)
            return SHUTDOWN_WAIT;
        s->phase = SHUTDOWN_DRAIN_CONNS;
        s->deadline = now + SHUTDOWN_CLOSE_SECONDS;
        return SHUTDOWN_CLOSE_ALL;
    case SHUTDOWN_DRAIN_CONNS:
        if (conns > 0 && now < s->deadline)
            return SHUTDOWN_WAIT;
        s->phase = SHUTDOWN_STOPPED;
        return SHUTDOWN_STOP;
    }
    return SHUTDOWN_WAIT;
}
