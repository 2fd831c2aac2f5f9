/* call.c - one server-side call of chat-agent: its request, the text a back
 * end produced and not sent yet, and the gRPC batches that send it.
 *
 * Back ends run on the timer thread or on worker threads and call
 * ca_call_push()/ca_call_finish() whenever they like; gRPC allows only one
 * SEND_MESSAGE in flight per call, so text pushed meanwhile accumulates in
 * 'out' and leaves as one chunk when the send completes (ca_call_on_sent(),
 * on the CQ thread). Every start_batch happens under call->lock because
 * start_batch on one call from several threads at once is not safe.
 *
 * References: the back end's (from ca_call_accept()), one per batch in
 * flight. The grpc_call is unreffed only when all are gone, i.e. after every
 * batch on it has completed. */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_agent.h"
#include "lib/buf.h"
#include "lib/log.h"

struct ca_call {
    grpc_call *grpc;
    enum ca_method method;
    atomic_int refs;
    AiService__Request *req;         /* Process, ProcessStream */
    AiService__SummaryRequest *sreq; /* Summarize */
    AiService__TitleRequest *treq;   /* Title */

    pthread_mutex_t lock; /* everything below */
    int dead;             /* cancelled, deadline passed or a send failed */
    int send_inflight;
    int sent_md;
    int finished; /* the back end has called ca_call_finish() */
    int status_sent;
    struct buf out; /* stream: not sent yet; unary: the whole reply */
    grpc_status_code status;
    char *details;
    double cost;
    uint32_t prompt_tokens, completion_tokens;

    grpc_byte_buffer *send_buf; /* of the batch in flight */
    grpc_slice status_slice;    /* of the batch in flight */
    int has_status_slice;
    int close_cancelled; /* RECV_CLOSE_ON_SERVER's answer */
    struct ca_tag tag_send;
    struct ca_tag tag_closed;
};

/* Unknown methods: answered at once, freed when that batch completes. */
struct ca_reject {
    grpc_call *grpc;
    int cancelled;
    struct ca_tag tag;
};

static void ca_call_free(struct ca_call *k)
{
    if (k->grpc)
        grpc_call_unref(k->grpc);
    if (k->req)
        ai_service__request__free_unpacked(k->req, NULL);
    if (k->sreq)
        ai_service__summary_request__free_unpacked(k->sreq, NULL);
    if (k->treq)
        ai_service__title_request__free_unpacked(k->treq, NULL);
    buf_free(&k->out);
    free(k->details);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

void ca_call_ref(struct ca_call *k) { atomic_fetch_add(&k->refs, 1); }

void ca_call_unref(struct ca_call *k)
{
    if (atomic_fetch_sub(&k->refs, 1) == 1)
        ca_call_free(k);
}

struct ca_call *ca_call_accept(grpc_call *grpc, enum ca_method m, grpc_byte_buffer *payload)
{
    struct ca_call *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->grpc = grpc;
    k->method = m;
    atomic_init(&k->refs, 2); /* the caller's + RECV_CLOSE_ON_SERVER's */
    pthread_mutex_init(&k->lock, NULL);
    k->tag_send.kind = CA_TAG_SEND;
    k->tag_send.ptr = k;
    k->tag_closed.kind = CA_TAG_CLOSED;
    k->tag_closed.ptr = k;

    grpc_byte_buffer_reader r;
    if (payload && grpc_byte_buffer_reader_init(&r, payload)) {
        grpc_slice s = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        if (m == CA_SUMMARIZE)
            k->sreq = ai_service__summary_request__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                          GRPC_SLICE_START_PTR(s));
        else if (m == CA_TITLE)
            k->treq = ai_service__title_request__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                        GRPC_SLICE_START_PTR(s));
        else
            k->req =
                ai_service__request__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
        grpc_slice_unref(s);
    }

    /* Tells us when the client cancels or the deadline passes, so back ends
     * can stop working for nobody. */
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &k->close_cancelled;
    pthread_mutex_lock(&k->lock);
    grpc_call_error err = grpc_call_start_batch(grpc, &op, 1, &k->tag_closed, NULL);
    pthread_mutex_unlock(&k->lock);
    if (err != GRPC_CALL_OK) {
        log_error("chat-agent: RECV_CLOSE_ON_SERVER: %s", grpc_call_error_to_string(err));
        atomic_fetch_sub(&k->refs, 1);
        k->dead = 1;
        grpc_call_cancel(grpc, NULL);
    }
    return k;
}

enum ca_method ca_call_method(const struct ca_call *k) { return k->method; }

const AiService__Request *ca_call_request(const struct ca_call *k) { return k->req; }

const AiService__SummaryRequest *ca_call_summary_request(const struct ca_call *k)
{
    return k->sreq;
}

const AiService__TitleRequest *ca_call_title_request(const struct ca_call *k) { return k->treq; }

void ca_call_set_tokens(struct ca_call *k, uint32_t prompt, uint32_t completion)
{
    pthread_mutex_lock(&k->lock);
    k->prompt_tokens = prompt;
    k->completion_tokens = completion;
    pthread_mutex_unlock(&k->lock);
}

/* The cost fields as AGENT_COST_FIELDS says this agent fills them. */
static float ca_cost_float(double cost)
{
    return ca_cfg.cost_fields == CA_COST_DOUBLE ? 0 : (float)cost;
}

static double ca_cost_double(double cost) { return ca_cfg.cost_fields == CA_COST_FLOAT ? 0 : cost; }

int ca_call_is_dead(struct ca_call *k)
{
    pthread_mutex_lock(&k->lock);
    int dead = k->dead;
    pthread_mutex_unlock(&k->lock);
    return dead;
}

static void ca_timestamp_now(Google__Protobuf__Timestamp *ts)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    ts->seconds = now.tv_sec;
    ts->nanos = (int32_t)now.tv_nsec;
}

/* Packs the message for what is in 'out' now; NULL when out of memory. */
static grpc_byte_buffer *ca_call_pack_locked(struct ca_call *k, int done)
{
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ca_timestamp_now(&ts);
    char *text = k->out.p ? k->out.p : "";
    size_t len;
    uint8_t *buf = NULL;

    if (k->method == CA_STREAM) {
        AiService__Chunk m = AI_SERVICE__CHUNK__INIT;
        m.delta = text;
        m.done = done;
        m.cost = done ? ca_cost_float(k->cost) : 0;
        m.precise_cost = done ? ca_cost_double(k->cost) : 0;
        m.prompt_tokens = done ? k->prompt_tokens : 0;
        m.completion_tokens = done ? k->completion_tokens : 0;
        m.timestamp = &ts;
        len = ai_service__chunk__get_packed_size(&m);
        if ((buf = malloc(len ? len : 1)))
            ai_service__chunk__pack(&m, buf);
    } else if (k->method == CA_PROCESS) {
        AiService__Response m = AI_SERVICE__RESPONSE__INIT;
        m.response_text = text;
        m.cost = ca_cost_float(k->cost);
        m.precise_cost = ca_cost_double(k->cost);
        m.prompt_tokens = k->prompt_tokens;
        m.completion_tokens = k->completion_tokens;
        m.timestamp = &ts;
        len = ai_service__response__get_packed_size(&m);
        if ((buf = malloc(len ? len : 1)))
            ai_service__response__pack(&m, buf);
    } else if (k->method == CA_TITLE) {
        AiService__TitleResponse m = AI_SERVICE__TITLE_RESPONSE__INIT;
        m.title = text;
        m.cost = ca_cost_float(k->cost);
        m.precise_cost = ca_cost_double(k->cost);
        m.timestamp = &ts;
        len = ai_service__title_response__get_packed_size(&m);
        if ((buf = malloc(len ? len : 1)))
            ai_service__title_response__pack(&m, buf);
    } else {
        AiService__SummaryResponse m = AI_SERVICE__SUMMARY_RESPONSE__INIT;
        m.summary = text;
        m.cost = ca_cost_float(k->cost);
        m.precise_cost = ca_cost_double(k->cost);
        m.timestamp = &ts;
        len = ai_service__summary_response__get_packed_size(&m);
        if ((buf = malloc(len ? len : 1)))
            ai_service__summary_response__pack(&m, buf);
    }
    if (!buf)
        return NULL;
    grpc_slice s = grpc_slice_new(buf, len, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Starts the next send batch if one is due and none is in flight. */
static void ca_call_pump_locked(struct ca_call *k)
{
    if (k->send_inflight || k->status_sent || k->dead)
        return;
    int send_msg, send_status = k->finished;
    if (k->method == CA_STREAM) {
        send_msg = k->out.len > 0 || (k->finished && k->status == GRPC_STATUS_OK);
    } else {
        if (!k->finished)
            return;
        send_msg = k->status == GRPC_STATUS_OK;
    }
    if (!send_msg && !send_status)
        return;

    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!k->sent_md)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (send_msg) {
        k->send_buf = ca_call_pack_locked(k, k->finished && k->status == GRPC_STATUS_OK);
        if (!k->send_buf) {
            k->status = GRPC_STATUS_RESOURCE_EXHAUSTED;
            send_status = 1;
        } else {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n].data.send_message.send_message = k->send_buf;
            n++;
        }
        k->out.len = 0;
        if (k->out.p)
            k->out.p[0] = '\0';
    }
    if (send_status) {
        k->status_slice = grpc_slice_from_copied_string(k->details ? k->details : "");
        k->has_status_slice = 1;
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = k->status;
        ops[n].data.send_status_from_server.status_details = &k->status_slice;
        n++;
    }
    ca_call_ref(k); /* the batch's */
    grpc_call_error err = grpc_call_start_batch(k->grpc, ops, n, &k->tag_send, NULL);
    if (err != GRPC_CALL_OK) {
        log_error("chat-agent: send batch: %s", grpc_call_error_to_string(err));
        if (k->send_buf)
            grpc_byte_buffer_destroy(k->send_buf);
        k->send_buf = NULL;
        if (k->has_status_slice)
            grpc_slice_unref(k->status_slice);
        k->has_status_slice = 0;
        k->dead = 1;
        grpc_call_cancel(k->grpc, NULL);
        atomic_fetch_sub(&k->refs, 1); /* never the last: our caller holds one */
        return;
    }
    k->sent_md = 1;
    k->send_inflight = 1;
    if (send_status)
        k->status_sent = 1;
}

void ca_call_on_sent(struct ca_call *k, int success)
{
    pthread_mutex_lock(&k->lock);
    k->send_inflight = 0;
    if (k->send_buf)
        grpc_byte_buffer_destroy(k->send_buf);
    k->send_buf = NULL;
    if (k->has_status_slice)
        grpc_slice_unref(k->status_slice);
    k->has_status_slice = 0;
    if (!success)
        k->dead = 1;
    else
        ca_call_pump_locked(k);
    pthread_mutex_unlock(&k->lock);
    ca_call_unref(k);
}

void ca_call_on_closed(struct ca_call *k)
{
    pthread_mutex_lock(&k->lock);
    if (k->close_cancelled)
        k->dead = 1;
    pthread_mutex_unlock(&k->lock);
    ca_call_unref(k);
}

/* Appends to 'out'; returns -1 (and kills the call) when out of memory. */
static int ca_call_append_locked(struct ca_call *k, const char *text, size_t len)
{
    if (buf_append(&k->out, text, len) != 0) {
        k->dead = 1;
        grpc_call_cancel(k->grpc, NULL);
        return -1;
    }
    return 0;
}

void ca_call_push(struct ca_call *k, const char *text, size_t len)
{
    pthread_mutex_lock(&k->lock);
    if (!k->dead && !k->finished && len > 0 && ca_call_append_locked(k, text, len) == 0)
        ca_call_pump_locked(k);
    pthread_mutex_unlock(&k->lock);
}

void ca_call_finish_text(struct ca_call *k, const char *text, size_t len, grpc_status_code status,
                         const char *details, double cost)
{
    pthread_mutex_lock(&k->lock);
    if (!k->finished && !k->dead && (len == 0 || ca_call_append_locked(k, text, len) == 0)) {
        k->finished = 1;
        k->status = status;
        k->details = details ? strdup(details) : NULL;
        k->cost = cost;
        ca_call_pump_locked(k);
    }
    pthread_mutex_unlock(&k->lock);
}

void ca_call_finish(struct ca_call *k, grpc_status_code status, const char *details, double cost)
{
    ca_call_finish_text(k, NULL, 0, status, details, cost);
}

void ca_call_reject_unknown(grpc_call *grpc)
{
    struct ca_reject *r = calloc(1, sizeof(*r));
    if (!r) {
        grpc_call_cancel(grpc, NULL);
        grpc_call_unref(grpc);
        return;
    }
    r->grpc = grpc;
    r->tag.kind = CA_TAG_UNKNOWN_DONE;
    r->tag.ptr = r;
    /* Static: it must outlive the batch. */
    static grpc_slice details;
    details = grpc_slice_from_static_string("method not implemented by chat-agent");

    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &details;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &r->cancelled;
    if (grpc_call_start_batch(grpc, ops, 3, &r->tag, NULL) != GRPC_CALL_OK) {
        grpc_call_cancel(grpc, NULL);
        grpc_call_unref(grpc);
        free(r);
    }
}

void ca_reject_done(void *ptr)
{
    struct ca_reject *r = ptr;
    grpc_call_unref(r->grpc);
    free(r);
}
