/* watch.c - the resumed turns watched for their end (see watch.h). */
#include "work/watch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "work/pool.h"

struct watches {
    struct pool_job job; /* first: the sweep */
    pthread_mutex_t mu;  /* guards head */
    struct watch *head;
    atomic_int busy; /* a sweep runs */
};

struct watches *watches_create(void)
{
    struct watches *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return NULL;
    pthread_mutex_init(&ws->mu, NULL);
    return ws;
}

void watches_destroy(struct watches *ws)
{
    if (ws == NULL)
        return;
    while (ws->head != NULL) {
        struct watch *n = ws->head->next;
        free(ws->head);
        ws->head = n;
    }
    pthread_mutex_destroy(&ws->mu);
    free(ws);
}

void watches_add(struct watches *ws, const char *user, const char *session, const char *turn)
{
    pthread_mutex_lock(&ws->mu);
    struct watch *x = ws->head;
    while (x != NULL && !(strcmp(x->session, session) == 0 && strcmp(x->turn, turn) == 0))
        x = x->next;
    if (x == NULL && (x = calloc(1, sizeof(*x))) != NULL) {
        snprintf(x->user, sizeof(x->user), "%s", user);
        snprintf(x->session, sizeof(x->session), "%s", session);
        snprintf(x->turn, sizeof(x->turn), "%s", turn);
        x->next = ws->head;
        ws->head = x;
    }
    pthread_mutex_unlock(&ws->mu);
}

struct pool_job *watches_due(struct watches *ws)
{
    pthread_mutex_lock(&ws->mu);
    int any = ws->head != NULL;
    pthread_mutex_unlock(&ws->mu);
    if (!any || atomic_exchange(&ws->busy, 1))
        return NULL;
    return &ws->job;
}

static void drop(struct watches *ws, struct watch *gone)
{
    pthread_mutex_lock(&ws->mu);
    for (struct watch **pp = &ws->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == gone) {
            *pp = gone->next;
            free(gone);
            break;
        }
    }
    pthread_mutex_unlock(&ws->mu);
}

void watches_sweep(struct watches *ws, int (*ended)(void *ctx, struct watch *x), void *ctx)
{
    /* Entries are freed only here (one sweep at a time), so walking the
     * list outside the lock is safe; new ones are added at its head. */
    pthread_mutex_lock(&ws->mu);
    struct watch *x = ws->head;
    pthread_mutex_unlock(&ws->mu);
    while (x != NULL) {
        struct watch *next = x->next;
        if (ended(ctx, x))
            drop(ws, x);
        x = next;
    }
    atomic_store(&ws->busy, 0);
}

enum watch_source watch_source(struct watch *x, int stream_read, int stream_has_end)
{
    if (!stream_read && ++x->redis_failed < WATCH_REDIS_SWEEPS)
        return WATCH_WAIT;
    return stream_read && stream_has_end ? WATCH_FROM_STREAM : WATCH_FROM_PG;
}
