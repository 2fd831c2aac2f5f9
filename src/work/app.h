/* app.h - what every job of chatd works with, handed down from main.c.
 *
 * One per process. Jobs reach the configuration, the worker pool, the
 * agent client, what PostgreSQL announced and the way back to the service
 * thread through it, never through the transport: work/ knows nothing of
 * libwebsockets (docs/ARCHITECTURE.md). */
#ifndef CHATD_APP_H
#define CHATD_APP_H

#include "wire/proto.h"

struct agent_client;
struct config;
struct inval;
struct local;
struct lease;
struct live;
struct outbox;
struct pool;
struct slots;
struct watches;

struct app {
    const struct config *cfg;
    struct proto_limits limits; /* from cfg, for frame decoding */
    struct pool *pool;
    struct pool *import_pool; /* one worker: imports store their conversations there (import.h) */
    struct agent_client *agent;
    struct inval *inval;
    struct local *local;     /* fresh copies in memory (store/local.h) */
    struct lease *lease;     /* the turn leases this process holds */
    struct live *live;       /* events and turn frames across chatd instances */
    struct outbox *outbox;   /* answers and frames to the service thread */
    struct slots *slots;     /* each session's turn order here (work/slots.h) */
    struct watches *watches; /* resumed turns watched for their end (work/watch.h) */
    struct sweep *sweep;     /* the data's lifecycle (work/sweep.h) */
};

#endif
