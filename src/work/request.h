/* request.h - one request of one WebSocket connection, as the handlers of
 * the dispatch table (work/dispatch.h) receive it. */
#ifndef CHATD_REQUEST_H
#define CHATD_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "wire/proto.h"
#include "work/pool.h"

struct app;

/* One decoded request. net/ allocates it and queues it in the
 * connection's request order (next, ready); dispatch_submit hands it to a
 * worker, after which the handler's run owns it until it returns and
 * dispatch frees it. */
struct work_request {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    uint64_t conn_id;
    struct proto_request req;
    /* the connection's FIFO (net/conn.c), and an answer known without a
     * worker, sent in its turn */
    struct work_request *next;
    char *ready;
    size_t ready_len;
};

void work_request_free(struct work_request *r);

#endif
