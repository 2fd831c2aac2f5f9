/* bg.h - a background thread that sleeps in poll(2) on one descriptor of
 * its own (a database or Redis socket) and a wake pipe: what the
 * invalidation listener (store/inval.c), the lease keeper (store/lease.c)
 * and the live subscriber (store/live.c) each are.
 *
 * Stopping is a flag and a byte down the pipe, so that a thread blocked in
 * poll returns at once; bg_stop then joins it. */
#ifndef CHATD_BG_H
#define CHATD_BG_H

#include <pthread.h>
#include <stdatomic.h>

struct bg {
    pthread_t thread;
    int wake[2]; /* non-blocking; -1 when not open */
    int running;
    atomic_int stopping;
};

enum bg_wait {
    BG_TIMEOUT, /* ms went by */
    BG_WOKEN,   /* bg_wake or bg_stop (the pipe is emptied) */
    BG_READY,   /* fd is readable, or closed */
};

/* Opens the pipe and starts main(arg). 0, or -1 (logged by the caller;
 * bg_stop is then still right). */
int bg_start(struct bg *b, void *(*main)(void *), void *arg);

/* Waits at most ms (-1: for ever) for fd (-1: none) or a wake. */
enum bg_wait bg_wait(struct bg *b, int fd, int ms);

/* Makes the thread's bg_wait return. Any thread. */
void bg_wake(struct bg *b);

/* 1 once bg_stop has begun: the thread returns from main. */
int bg_stopping(struct bg *b);

/* Sets stopping, wakes the thread, joins it and closes the pipe. Safe on a
 * bg that never started. */
void bg_stop(struct bg *b);

#endif
