/* connq.c - one connection's queues and their back-pressure rules (see
 * connq.h). */
#include "net/connq.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/queue.h"
#include "work/request.h"

void connq_init(struct connq *q, size_t pre, size_t out_limit, int max_inflight)
{
    memset(q, 0, sizeof(*q));
    q->pre = pre;
    q->out_limit = out_limit;
    q->max_inflight = max_inflight;
}

void connq_clear(struct connq *q)
{
    while (q->q_head != NULL) {
        struct work_request *r = q->q_head;
        q->q_head = r->next;
        work_request_free(r);
    }
    q->q_tail = NULL;
    q->q_len = 0;
    while (q->out_head != NULL) {
        struct connq_msg *m = q->out_head;
        q->out_head = m->next;
        free(m);
    }
    q->out_tail = NULL;
    q->out_bytes = 0;
}

/* Whether reading should stop or start again. */
static int flow(struct connq *q)
{
    int over = q->q_len >= q->max_inflight || q->out_bytes > q->out_limit;
    if (!q->paused && over) {
        q->paused = 1;
        return CONNQ_PAUSE;
    }
    if (q->paused && q->out_bytes <= q->out_limit / 2 && q->q_len < q->max_inflight / 2 + 1) {
        q->paused = 0;
        return CONNQ_RESUME;
    }
    return 0;
}

int connq_idle(const struct connq *q) { return q->q_head == NULL && !q->busy; }

int connq_push(struct connq *q, struct work_request *r)
{
    QUEUE_APPEND(q->q_head, q->q_tail, r, next);
    q->q_len++;
    return 0;
}

int connq_send(struct connq *q, char *frame, size_t len, int is_close)
{
    if (frame == NULL && !is_close)
        return 0;
    struct connq_msg *m = malloc(sizeof(*m) + q->pre + len);
    if (m == NULL) {
        free(frame);
        log_error("event=send_oom bytes=%zu", len);
        return 0;
    }
    m->next = NULL;
    m->len = len;
    m->is_close = is_close;
    if (len > 0)
        memcpy(m->buf + q->pre, frame, len);
    free(frame);
    if (q->out_tail != NULL)
        q->out_tail->next = m;
    else
        q->out_head = m;
    q->out_tail = m;
    q->out_bytes += len;
    int fx = CONNQ_WRITE;
    if (q->out_bytes > q->out_limit) {
        /* Not reading stops its requests, but replies already owed still
         * pile up (and a stream keeps sending), so a client that stays
         * this far behind is to be cut off. */
        if (!q->paused) {
            q->paused = 1;
            fx |= CONNQ_PAUSE;
        }
        if (!q->slow) {
            q->slow = 1;
            fx |= CONNQ_SLOW;
        }
    }
    return fx;
}

struct work_request *connq_next(struct connq *q, int *fx)
{
    while (!q->busy && q->q_head != NULL) {
        struct work_request *r = q->q_head;
        q->q_head = r->next;
        if (q->q_head == NULL)
            q->q_tail = NULL;
        q->q_len--;
        r->next = NULL;
        if (r->ready == NULL) {
            q->busy = 1;
            return r;
        }
        *fx |= connq_send(q, r->ready, r->ready_len, 0);
        r->ready = NULL;
        work_request_free(r);
    }
    *fx |= flow(q);
    return NULL;
}

int connq_answered(struct connq *q, char *frame, size_t len)
{
    q->busy = 0;
    return connq_send(q, frame, len, 0);
}

struct connq_msg *connq_head(const struct connq *q) { return q->out_head; }

int connq_sent(struct connq *q)
{
    struct connq_msg *m = q->out_head;
    if (m == NULL)
        return 0;
    q->out_head = m->next;
    if (q->out_head == NULL)
        q->out_tail = NULL;
    q->out_bytes -= m->len;
    free(m);
    int fx = 0;
    if (q->slow && q->out_bytes <= q->out_limit) {
        q->slow = 0;
        fx |= CONNQ_UNSLOW;
    }
    if (q->out_head != NULL)
        fx |= CONNQ_WRITE;
    return fx | flow(q);
}
