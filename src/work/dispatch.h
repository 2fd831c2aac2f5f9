/* dispatch.h - one request of one WebSocket connection, and the table that
 * says which handler answers each message code.
 *
 * A new message code is a decoding rule in wire/proto.c, one row in the
 * table of dispatch.c and one handler: nothing else changes. */
#ifndef CHATD_DISPATCH_H
#define CHATD_DISPATCH_H

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

/* Answers r on a worker: exactly one outbox_reply / outbox_reply_error /
 * outbox_detach for r->conn_id. Must not keep r (dispatch frees it). */
typedef void (*dispatch_fn)(struct worker *w, struct work_request *r);

struct dispatch_row {
    int type;          /* enum proto_type */
    const char *name;  /* for logs and metrics */
    dispatch_fn run;   /* never NULL (code 8 for a turn of the connection's own is
                          answered on the service thread before it gets here) */
};

/* The row of a code, or NULL for one nobody answers. */
const struct dispatch_row *dispatch_find(int type);

/* Gives lib/metrics the table's codes, so that each has series of its own
 * in chatd_requests_total (once, at start-up). */
void dispatch_register_metrics(void);

/* Sends r to a worker, which runs its row's handler. */
void dispatch_submit(struct app *app, struct work_request *r);

void work_request_free(struct work_request *r);

#endif
