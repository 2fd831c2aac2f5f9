/* connq.h - the rules of one WebSocket connection's queues, without I/O:
 * its requests in order, one with a worker at a time, the frames owed to
 * it, and when to stop and resume reading from it.
 *
 *   - Requests form a FIFO and run one at a time, so replies leave in the
 *     order requests came, without a reorder buffer. A request answered
 *     without a worker (bad input, a stop) carries its frame ("ready") and
 *     is sent when its turn comes.
 *   - A chat turn leaves the FIFO when its checks pass (connq_answered
 *     with no frame), so a slow agent holds back nothing.
 *   - With max_inflight requests queued, or more than out_limit bytes
 *     owed, reading stops (PAUSE): the client waits in its own TCP
 *     buffer, not in our memory. It resumes (RESUME) when both are below
 *     half. Over out_limit the connection is also marked slow (SLOW), to
 *     be closed if it stays so; back at or under it, UNSLOW.
 *
 * Each call returns the effects (CONNQ_*) the transport must apply; net/
 * conn.c does that with libwebsockets, tests/unit/test_connq.c checks the
 * rules alone. */
#ifndef CHATD_CONNQ_H
#define CHATD_CONNQ_H

#include <stddef.h>

struct work_request;

enum {
    CONNQ_PAUSE = 1,  /* stop reading from the client */
    CONNQ_RESUME = 2, /* read again */
    CONNQ_SLOW = 4,   /* over out_limit: arm the slow-reader close */
    CONNQ_UNSLOW = 8, /* back under it: disarm */
    CONNQ_WRITE = 16, /* frames are owed: ask for a writable callback */
};

/* A frame owed to the client: pre bytes of room (LWS_PRE), then len bytes. */
struct connq_msg {
    struct connq_msg *next;
    size_t len;
    int is_close; /* no payload: close the connection here */
    unsigned char buf[];
};

struct connq {
    size_t pre, out_limit;
    int max_inflight;
    struct work_request *q_head, *q_tail;
    int q_len;
    int busy; /* the head request is with a worker */
    struct connq_msg *out_head, *out_tail;
    size_t out_bytes;
    int paused, slow;
};

void connq_init(struct connq *q, size_t pre, size_t out_limit, int max_inflight);
/* Frees every request and frame still queued. */
void connq_clear(struct connq *q);

/* Queues a request at the end. */
int connq_push(struct connq *q, struct work_request *r);
/* No request is queued or with a worker. */
int connq_idle(const struct connq *q);
/* The next request for a worker (and marks the queue busy), or NULL: one
 * is with a worker already, or none is waiting. Ready answers ahead of it
 * go to the output on the way (their effects added to *fx). */
struct work_request *connq_next(struct connq *q, int *fx);
/* The worker is done with the head request; frame (stolen, may be NULL
 * when the request became a turn) is its answer. */
int connq_answered(struct connq *q, char *frame, size_t len);

/* Queues a frame (stolen; NULL with is_close: only the close). */
int connq_send(struct connq *q, char *frame, size_t len, int is_close);
/* The frame at the head of the output, or NULL. */
struct connq_msg *connq_head(const struct connq *q);
/* The head frame has been written: frees it. */
int connq_sent(struct connq *q);

#endif
