/* pool.c - a fixed set of worker threads draining one FIFO of jobs. */
#include "work/pool.h"

#include <stdlib.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "work/app.h"

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pool_job *head, *tail;
    int pending; /* queued + running */
    int stopping;
    int n;
    struct worker *workers;
    pthread_t *threads;
};

static void *pool_main(void *arg)
{
    struct worker *w = arg;
    struct pool *p = w->pool;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        struct pool_job *job;
        QUEUE_POP(p->head, p->tail, job, next);
        pthread_mutex_unlock(&p->mu);
        if (job == NULL) /* stopping and drained */
            break;
        job->run(w, job);

        pthread_mutex_lock(&p->mu);
        p->pending--;
        pthread_mutex_unlock(&p->mu);
    }
    pg_close(&w->pg);
    pg_close(&w->rd);
    cache_close(&w->cache);
    return NULL;
}

struct pool *pool_create(struct app *app, int n)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->workers = calloc((size_t)n, sizeof(*p->workers));
    p->threads = calloc((size_t)n, sizeof(*p->threads));
    if (p->workers == NULL || p->threads == NULL)
        goto fail;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < n; i++) {
        struct worker *w = &p->workers[i];
        w->pool = p;
        w->id = i;
        w->app = app;
        w->pg.cfg = app->cfg; /* connected by the first pg_exec */
        w->rd.cfg = app->cfg;
        w->rd.target = PG_STANDBY;
        cache_open(&w->cache, app->cfg, app->inval);
        if (pthread_create(&p->threads[i], NULL, pool_main, w) != 0) {
            log_error("event=pool_thread_failed index=%d", i);
            p->n = i;
            pool_destroy(p);
            return NULL;
        }
    }
    p->n = n;
    return p;
fail:
    free(p->workers);
    free(p->threads);
    free(p);
    return NULL;
}

void pool_submit(struct pool *p, struct pool_job *job)
{
    pthread_mutex_lock(&p->mu);
    QUEUE_APPEND(p->head, p->tail, job, next);
    p->pending++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

int pool_pending(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->pending;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void pool_destroy(struct pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->workers);
    free(p->threads);
    free(p);
}
