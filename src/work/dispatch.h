/* dispatch.h - the one table of the message codes a client may send: for
 * each, its name, the decoder of its fields and the handler that answers
 * it. The decoder (proto_decode's find), the dispatcher and the metrics
 * (a series per row) are all driven by it; a code not in it is error 1.
 *
 * A new message code is one row in the table of dispatch.c, a decoder of
 * its fields in wire/proto.c (or an existing one) and one handler: nothing
 * else changes (docs/ARCHITECTURE.md, "How to add a message code").
 * Requests themselves: work/request.h. */
#ifndef CHATD_DISPATCH_H
#define CHATD_DISPATCH_H

#include "work/request.h"

/* Answers r on a worker: exactly one outbox_reply / outbox_reply_error /
 * outbox_detach for r->conn_id. Must not keep r (dispatch frees it). */
typedef void (*dispatch_fn)(struct worker *w, struct work_request *r);

struct dispatch_row {
    int type;             /* enum proto_type */
    const char *name;     /* for the logs */
    proto_data_fn decode; /* the code's fields (wire/proto.h) */
    dispatch_fn run;      /* never NULL (code 8 for a turn of the connection's own is
                             answered on the service thread before it gets here) */
};

/* The row of a code, or NULL for one nobody answers. */
const struct dispatch_row *dispatch_find(int type);

/* The decoder of a code's row (proto_decode's find), or NULL. */
proto_data_fn dispatch_decoder(int type);

/* Gives lib/metrics the table's codes, so that each has series of its own
 * in chatd_requests_total (once, at start-up). */
void dispatch_register_metrics(void);

/* Sends r to a worker, which runs its row's handler. */
void dispatch_submit(struct app *app, struct work_request *r);

#endif
