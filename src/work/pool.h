/* pool.h - the worker threads that do all blocking work (PostgreSQL,
 * Redis) off the WebSocket service thread.
 *
 * Each worker owns one PostgreSQL connection and one Redis context for its
 * whole life, so no connection is ever shared between threads and no pool
 * of connections needs locking. Jobs are intrusive: a job struct is the
 * first member of whatever the submitter allocated, and the run function
 * takes ownership of it. */
#ifndef CHATD_POOL_H
#define CHATD_POOL_H

#include <pthread.h>

#include "store/cache.h"
#include "store/pg.h"

struct app;
struct pool;

struct worker {
    struct pool *pool;
    int id;
    struct pg pg;
    struct pg rd; /* DATABASE_READ_URL's standby (work/reads.h) */
    struct cache cache;
    struct app *app;
};

struct pool_job {
    struct pool_job *next;
    /* Runs on a worker; owns job from then on. */
    void (*run)(struct worker *w, struct pool_job *job);
};

/* Starts n workers. Connections are made lazily by the first job, so
 * start-up does not fail when PostgreSQL is briefly down. */
struct pool *pool_create(struct app *app, int n);

/* Thread-safe. Jobs run in submission order of the queue (FIFO), on any
 * worker. */
void pool_submit(struct pool *p, struct pool_job *job);

/* Jobs queued or running. Thread-safe. */
int pool_pending(struct pool *p);

/* Runs every queued job, then stops and joins the workers. */
void pool_destroy(struct pool *p);

#endif
