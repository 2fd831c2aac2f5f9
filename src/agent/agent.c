/* agent.c - asynchronous gRPC client for AI agents (see agent.h).
 *
 * One completion queue, one thread. Each call is an agent_call whose batches
 * carry tags pointing into the call itself; the call counts its outstanding
 * batches in 'pending' and is finished (status decoded, fall-back decided,
 * on_done called) only when that count reaches zero, because gRPC may
 * complete RECV_STATUS before the last RECV_MESSAGE and a grpc_call must not
 * be unreffed while a batch on it is still out.
 *
 * Threads: everything below the "CQ thread" marker runs on the CQ thread
 * only; agent_process()/agent_summarize() run on the caller's thread until
 * the first batch is started; agent_call_cancel() runs anywhere and takes
 * call->lock to read call->grpc. Lock order: client->lock, then call->lock.
 *
 * Longer than most files on purpose: the call state machine, its batches
 * and the completion-queue thread that drives them share private state
 * that no other module should see; the RPCs (Process, Summarize, Title)
 * are the parts, marked below. */
#include "agent/agent.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/status.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ai_service.pb-c.h"
#include "lib/buf.h"
#include "lib/log.h"

_Static_assert((int)AGENT_OK == (int)GRPC_STATUS_OK &&
                   (int)AGENT_CANCELLED == (int)GRPC_STATUS_CANCELLED &&
                   (int)AGENT_UNIMPLEMENTED == (int)GRPC_STATUS_UNIMPLEMENTED,
               "enum agent_status names gRPC's numbers");

/* Replies and histories can be long; gRPC's default limit is 4 MiB. */
#define AGENT_MAX_MESSAGE (64 * 1024 * 1024)

#define AGENT_M_PROCESS "/ai_service.AIService/Process"
#define AGENT_M_STREAM "/ai_service.AIService/ProcessStream"
#define AGENT_M_SUMMARIZE "/ai_service.AIService/Summarize"
#define AGENT_M_TITLE "/ai_service.AIService/Title"

enum agent_kind { AGENT_UNARY, AGENT_STREAM, AGENT_SUMMARY, AGENT_TITLE };

enum agent_op {
    AGENT_OP_UNARY,  /* unary: the whole exchange in one batch */
    AGENT_OP_START,  /* stream: send request, close, recv initial metadata */
    AGENT_OP_MSG,    /* stream: one RECV_MESSAGE, re-armed until NULL */
    AGENT_OP_STATUS, /* stream: RECV_STATUS_ON_CLIENT */
    AGENT_OP_NOW,    /* no network: see agent_wakeup() */
    AGENT_OP_COUNT
};

struct agent_tag {
    agent_call *call;
    enum agent_op op;
};

struct agent_call {
    agent_client *client;
    agent_call *prev, *next; /* client->live, under client->lock */
    atomic_int refs;         /* caller + "not finished yet" */

    enum agent_kind kind;
    int fallback; /* a stream call re-issued as unary Process */
    agent_delta_fn on_delta;
    agent_done_fn on_done;
    agent_summary_fn on_summary;
    agent_title_fn on_title;
    void *ud;
    int timeout_seconds; /* 0: the client's */

    pthread_mutex_t lock; /* guards grpc against agent_call_cancel() */
    grpc_call *grpc;      /* NULL before start and once finished */
    atomic_int cancelled;

    atomic_int pending; /* batches out, plus agent_start()'s own hold */

    /* From here on: CQ thread only (or agent_start(), before any batch). */
    struct agent_tag tags[AGENT_OP_COUNT];
    uint8_t *req; /* packed request, kept for the Process fall-back */
    size_t req_len;
    grpc_byte_buffer *send_buf;
    grpc_byte_buffer *recv_buf;
    grpc_metadata_array md_initial;
    grpc_metadata_array md_trailing;
    grpc_status_code status;
    grpc_slice details;
    int synth; /* synth_status/synth_details replace gRPC's status */
    grpc_status_code synth_status;
    const char *synth_details;
    int n_chunks;
    struct buf text;     /* the reply so far */
    float cost;          /* as reported: the float field... */
    double precise_cost; /* ...and the double one, preferred when non-zero */
    unsigned prompt_tokens, completion_tokens;
};

struct agent_client {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    pthread_t thread;
    int timeout_seconds;
    atomic_int no_stream;
    atomic_int no_summary;
    atomic_int no_title;

    pthread_mutex_t lock;
    pthread_cond_t idle; /* n_live dropped to 0 */
    agent_call *live;
    size_t n_live;
    int closing;
};

static void *agent_cq_main(void *arg);

/* ---------------------------------------------------------------- client */

agent_client *agent_client_create(const char *target, int timeout_seconds)
{
    agent_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->timeout_seconds = timeout_seconds > 0 ? timeout_seconds : 1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->idle, NULL);

    /* A restarted agent should be found again within seconds, not after
     * gRPC's default 120 s maximum reconnect back-off. */
    grpc_arg args[3];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = AGENT_MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[1].value.integer = 500;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[2].value.integer = 5000;
    grpc_channel_args chargs = {3, args};

    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    c->channel = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (!c->channel)
        goto fail;
    c->cq = grpc_completion_queue_create_for_next(NULL);
    if (!c->cq)
        goto fail;
    if (pthread_create(&c->thread, NULL, agent_cq_main, c) != 0)
        goto fail;
    pthread_setname_np(c->thread, "agent-cq");
    return c;

fail:
    log_error("agent: cannot create client for %s", target);
    if (c->cq) {
        grpc_completion_queue_shutdown(c->cq);
        while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(c->cq);
    }
    if (c->channel)
        grpc_channel_destroy(c->channel);
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

static void agent_cancel_locked(agent_call *call)
{
    atomic_store(&call->cancelled, 1);
    if (call->grpc)
        grpc_call_cancel(call->grpc, NULL);
}

void agent_client_destroy(agent_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->closing = 1;
    for (agent_call *k = c->live; k; k = k->next) {
        pthread_mutex_lock(&k->lock);
        agent_cancel_locked(k);
        pthread_mutex_unlock(&k->lock);
    }
    /* The CQ thread finishes every call (on_done reports CANCELLED). */
    while (c->n_live > 0)
        pthread_cond_wait(&c->idle, &c->lock);
    pthread_mutex_unlock(&c->lock);

    grpc_channel_destroy(c->channel);
    grpc_completion_queue_shutdown(c->cq);
    pthread_join(c->thread, NULL); /* it drains until GRPC_QUEUE_SHUTDOWN */
    grpc_completion_queue_destroy(c->cq);
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int agent_client_supports_stream(agent_client *c) { return !atomic_load(&c->no_stream); }

int agent_client_supports_summary(agent_client *c) { return !atomic_load(&c->no_summary); }

int agent_client_supports_title(agent_client *c) { return !atomic_load(&c->no_title); }

int agent_ping(agent_client *c, int timeout_ms)
{
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    int rc = -1;
    static int ping_tag;

    for (;;) {
        grpc_connectivity_state st = grpc_channel_check_connectivity_state(c->channel, 1);
        if (st == GRPC_CHANNEL_READY) {
            rc = 0;
            break;
        }
        if (gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), deadline) >= 0)
            break;
        grpc_channel_watch_connectivity_state(c->channel, st, deadline, cq, &ping_tag);
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success)
            break; /* deadline reached without a change */
    }
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return rc;
}

/* ---------------------------------------------------------------- calls */

static const char *agent_nz(const char *s) { return s ? s : ""; }

static void agent_timestamp_now(Google__Protobuf__Timestamp *ts)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    ts->seconds = now.tv_sec;
    ts->nanos = (int32_t)now.tv_nsec;
}

static uint8_t *agent_pack_request(const struct agent_request *r, size_t *len)
{
    AiService__Request m = AI_SERVICE__REQUEST__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    agent_timestamp_now(&ts);
    m.user_id = (char *)agent_nz(r->user_id);
    m.session_id = (char *)agent_nz(r->session_id);
    m.chat_message = (char *)agent_nz(r->chat_message);
    m.model_name = (char *)agent_nz(r->model_name);
    m.session_prompt = (char *)agent_nz(r->session_prompt);
    m.chat_summary = (char *)agent_nz(r->chat_summary);
    m.chat_history = (char *)agent_nz(r->chat_history);
    m.model_provider = (char *)agent_nz(r->model_provider);
    m.n_file_name = r->file_names ? r->n_files : 0;
    m.file_name = (char **)r->file_names;
    m.balance = (float)r->balance;
    m.timestamp = &ts;
    for (size_t i = 0; i < m.n_file_name; i++)
        if (!m.file_name[i])
            return NULL; /* protobuf-c would crash on it */
    *len = ai_service__request__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        ai_service__request__pack(&m, buf);
    return buf;
}

static uint8_t *agent_pack_summary(const struct agent_summary_request *r, size_t *len)
{
    AiService__SummaryRequest m = AI_SERVICE__SUMMARY_REQUEST__INIT;
    m.user_id = (char *)agent_nz(r->user_id);
    m.session_id = (char *)agent_nz(r->session_id);
    m.model_name = (char *)agent_nz(r->model_name);
    m.model_provider = (char *)agent_nz(r->model_provider);
    m.previous_summary = (char *)agent_nz(r->previous_summary);
    m.user_message = (char *)agent_nz(r->user_message);
    m.assistant_message = (char *)agent_nz(r->assistant_message);
    *len = ai_service__summary_request__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        ai_service__summary_request__pack(&m, buf);
    return buf;
}

static uint8_t *agent_pack_title(const struct agent_title_request *r, size_t *len)
{
    AiService__TitleRequest m = AI_SERVICE__TITLE_REQUEST__INIT;
    m.user_id = (char *)agent_nz(r->user_id);
    m.session_id = (char *)agent_nz(r->session_id);
    m.model_name = (char *)agent_nz(r->model_name);
    m.model_provider = (char *)agent_nz(r->model_provider);
    m.user_message = (char *)agent_nz(r->user_message);
    m.assistant_message = (char *)agent_nz(r->assistant_message);
    *len = ai_service__title_request__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        ai_service__title_request__pack(&m, buf);
    return buf;
}

static void agent_call_free(agent_call *call)
{
    free(call->req);
    buf_free(&call->text);
    pthread_mutex_destroy(&call->lock);
    free(call);
}

static void agent_call_unref(agent_call *call)
{
    if (atomic_fetch_sub(&call->refs, 1) == 1)
        agent_call_free(call);
}

void agent_call_release(agent_call *call)
{
    if (call)
        agent_call_unref(call);
}

void agent_call_cancel(agent_call *call)
{
    if (!call)
        return;
    pthread_mutex_lock(&call->lock);
    agent_cancel_locked(call);
    pthread_mutex_unlock(&call->lock);
}

/* Takes ownership of req. Links the call into the client so that
 * agent_client_destroy() can cancel and wait for it. */
static agent_call *agent_call_new(agent_client *c, enum agent_kind kind, uint8_t *req,
                                  size_t req_len)
{
    agent_call *call = calloc(1, sizeof(*call));
    if (!call) {
        free(req);
        return NULL;
    }
    call->client = c;
    call->kind = kind;
    call->req = req;
    call->req_len = req_len;
    atomic_init(&call->refs, 2);
    atomic_init(&call->cancelled, 0);
    atomic_init(&call->pending, 0);
    pthread_mutex_init(&call->lock, NULL);
    for (int i = 0; i < AGENT_OP_COUNT; i++) {
        call->tags[i].call = call;
        call->tags[i].op = (enum agent_op)i;
    }

    pthread_mutex_lock(&c->lock);
    if (c->closing) {
        pthread_mutex_unlock(&c->lock);
        agent_call_free(call);
        return NULL;
    }
    call->next = c->live;
    if (c->live)
        c->live->prev = call;
    c->live = call;
    c->n_live++;
    pthread_mutex_unlock(&c->lock);
    return call;
}

static void agent_set_synth(agent_call *call, grpc_status_code status, const char *details)
{
    call->synth = 1;
    call->synth_status = status;
    call->synth_details = details;
}

/* Gets the call finished on the CQ thread when no batch of it is left to
 * complete there: watching for a change away from SHUTDOWN, a state a live
 * channel is never in, makes gRPC enqueue the tag at once. */
static void agent_wakeup(agent_call *call)
{
    atomic_fetch_add(&call->pending, 1);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(1000, GPR_TIMESPAN));
    grpc_channel_watch_connectivity_state(call->client->channel, GRPC_CHANNEL_SHUTDOWN, deadline,
                                          call->client->cq, &call->tags[AGENT_OP_NOW]);
}

static void agent_attempt_init(agent_call *call)
{
    grpc_metadata_array_init(&call->md_initial);
    grpc_metadata_array_init(&call->md_trailing);
    call->details = grpc_empty_slice();
    call->synth = 0;
    call->status = GRPC_STATUS_OK;
}

/* Starts (or, for the fall-back, restarts) the gRPC call. Never fails: when
 * nothing can be started, a synthetic status is set instead, so on_done
 * always runs, and always on the CQ thread. */
static void agent_start(agent_call *call)
{
    agent_client *c = call->client;
    int streaming = call->kind == AGENT_STREAM && !call->fallback;
    const char *method = call->kind == AGENT_SUMMARY ? AGENT_M_SUMMARIZE
                         : call->kind == AGENT_TITLE ? AGENT_M_TITLE
                         : streaming                 ? AGENT_M_STREAM
                                                     : AGENT_M_PROCESS;

    agent_attempt_init(call);
    /* Our own hold on 'pending': the first batch may complete on the CQ
     * thread before the next one is started, and must not finish the call. */
    atomic_store(&call->pending, 1);
    pthread_mutex_lock(&call->lock);
    if (atomic_load(&call->cancelled)) {
        agent_set_synth(call, GRPC_STATUS_CANCELLED, "Cancelled");
        goto out;
    }
    int timeout = call->timeout_seconds > 0 ? call->timeout_seconds : c->timeout_seconds;
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(timeout, GPR_TIMESPAN));
    call->grpc =
        grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                 grpc_slice_from_static_string(method), NULL, deadline, NULL);
    if (!call->grpc) {
        agent_set_synth(call, GRPC_STATUS_INTERNAL, "cannot create gRPC call");
        goto out;
    }
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)call->req, call->req_len);
    call->send_buf = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = call->send_buf;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &call->md_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &call->recv_buf;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &call->md_trailing;
    ops[5].data.recv_status_on_client.status = &call->status;
    ops[5].data.recv_status_on_client.status_details = &call->details;

    struct {
        grpc_op *ops;
        size_t n;
        enum agent_op tag;
    } batches[3] = {{ops, 6, AGENT_OP_UNARY}};
    int nb = 1;
    if (streaming) {
        batches[0].n = 4;
        batches[0].tag = AGENT_OP_START;
        batches[1].ops = &ops[5];
        batches[1].n = 1;
        batches[1].tag = AGENT_OP_STATUS;
        batches[2].ops = &ops[4];
        batches[2].n = 1;
        batches[2].tag = AGENT_OP_MSG;
        nb = 3;
    }
    for (int i = 0; i < nb; i++) {
        atomic_fetch_add(&call->pending, 1);
        grpc_call_error err = grpc_call_start_batch(call->grpc, batches[i].ops, batches[i].n,
                                                    &call->tags[batches[i].tag], NULL);
        if (err != GRPC_CALL_OK) {
            /* Cannot happen with well-formed batches; those already started
             * complete once the call is cancelled. */
            atomic_fetch_sub(&call->pending, 1);
            log_error("agent: start_batch %s: %s", method, grpc_call_error_to_string(err));
            agent_set_synth(call, GRPC_STATUS_INTERNAL, "cannot start gRPC batch");
            grpc_call_cancel(call->grpc, NULL);
            break;
        }
    }
out:
    pthread_mutex_unlock(&call->lock);
    if (atomic_fetch_sub(&call->pending, 1) == 1)
        agent_wakeup(call);
}

agent_call *agent_process(agent_client *c, const struct agent_request *req, int stream,
                          agent_delta_fn on_delta, agent_done_fn on_done, void *ud)
{
    size_t len = 0;
    uint8_t *buf = agent_pack_request(req, &len);
    if (!buf) {
        log_error("agent: cannot serialize request");
        return NULL;
    }
    agent_call *call = agent_call_new(c, stream ? AGENT_STREAM : AGENT_UNARY, buf, len);
    if (!call)
        return NULL;
    call->on_delta = on_delta;
    call->on_done = on_done;
    call->ud = ud;
    if (stream && atomic_load(&c->no_stream))
        call->fallback = 1;
    agent_start(call);
    return call;
}

/* Starts a unary side call (Summarize, Title) that nobody holds: a
 * method the agent lacks completes at once, without a round trip. Takes
 * buf. 0, or -1 (and no callback) when it cannot be started. */
static int agent_side_call(agent_client *c, enum agent_kind kind, uint8_t *buf, size_t len,
                           int timeout_seconds, agent_summary_fn on_summary,
                           agent_title_fn on_title, void *ud)
{
    if (!buf)
        return -1;
    agent_call *call = agent_call_new(c, kind, buf, len);
    if (!call)
        return -1;
    call->on_summary = on_summary;
    call->on_title = on_title;
    call->ud = ud;
    call->timeout_seconds = timeout_seconds;
    int lacking = kind == AGENT_SUMMARY ? atomic_load(&c->no_summary) : atomic_load(&c->no_title);
    if (lacking) {
        agent_attempt_init(call);
        agent_set_synth(call, GRPC_STATUS_UNIMPLEMENTED,
                        kind == AGENT_SUMMARY ? "Summarize is not implemented by the agent"
                                              : "Title is not implemented by the agent");
        agent_wakeup(call);
    } else {
        agent_start(call);
    }
    agent_call_unref(call); /* nobody holds the caller's reference */
    return 0;
}

int agent_summarize(agent_client *c, const struct agent_summary_request *req,
                    agent_summary_fn on_done, void *ud)
{
    size_t len = 0;
    uint8_t *buf = agent_pack_summary(req, &len);
    return agent_side_call(c, AGENT_SUMMARY, buf, len, 0, on_done, NULL, ud);
}

int agent_title(agent_client *c, const struct agent_title_request *req, int timeout_seconds,
                agent_title_fn on_done, void *ud)
{
    size_t len = 0;
    uint8_t *buf = agent_pack_title(req, &len);
    return agent_side_call(c, AGENT_TITLE, buf, len, timeout_seconds, NULL, on_done, ud);
}

/* ---------------------------------------------------------------- CQ thread */

/* Flattens a received message; the caller unrefs the slice. */
static int agent_read_buffer(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return -1;
    *out = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return 0;
}

/* Returns 1 when RECV_MESSAGE was re-armed, 0 when this batch is over. */
static int agent_on_chunk(agent_call *call, int success)
{
    grpc_byte_buffer *bb = call->recv_buf;
    call->recv_buf = NULL;
    if (!success || !bb)
        return 0; /* end of stream, or the call failed */
    grpc_slice s;
    AiService__Chunk *ch = NULL;
    if (agent_read_buffer(bb, &s) == 0) {
        ch = ai_service__chunk__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_destroy(bb);
    if (!ch) {
        grpc_call_cancel_with_status(call->grpc, GRPC_STATUS_INTERNAL, "malformed Chunk from agent",
                                     NULL);
        return 0;
    }
    call->n_chunks++;
    /* After a cancel the caller has stopped listening: res->text must be
     * exactly what it was shown. */
    size_t n = strlen(ch->delta);
    if (n > 0 && !atomic_load(&call->cancelled)) {
        if (buf_append(&call->text, ch->delta, n) == 0) {
            if (call->on_delta)
                call->on_delta(call->ud, ch->delta, n);
        } else {
            grpc_call_cancel_with_status(call->grpc, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                         "out of memory", NULL);
        }
    }
    if (ch->done) {
        call->cost = ch->cost;
        call->precise_cost = ch->precise_cost;
        call->prompt_tokens = ch->prompt_tokens;
        call->completion_tokens = ch->completion_tokens;
    }
    ai_service__chunk__free_unpacked(ch, NULL);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &call->recv_buf;
    if (grpc_call_start_batch(call->grpc, &op, 1, &call->tags[AGENT_OP_MSG], NULL) !=
        GRPC_CALL_OK) {
        grpc_call_cancel(call->grpc, NULL);
        return 0;
    }
    return 1;
}

/* Decodes the unary reply into text/cost; returns -1 when it is unusable. */
static int agent_decode_unary(agent_call *call)
{
    grpc_slice s;
    int rc = -1;
    if (!call->recv_buf || agent_read_buffer(call->recv_buf, &s) != 0)
        return -1;
    const uint8_t *p = GRPC_SLICE_START_PTR(s);
    size_t n = GRPC_SLICE_LENGTH(s);
    if (call->kind == AGENT_SUMMARY) {
        AiService__SummaryResponse *r = ai_service__summary_response__unpack(NULL, n, p);
        if (r) {
            rc = buf_append(&call->text, r->summary, strlen(r->summary));
            call->cost = r->cost;
            call->precise_cost = r->precise_cost;
            ai_service__summary_response__free_unpacked(r, NULL);
        }
    } else if (call->kind == AGENT_TITLE) {
        AiService__TitleResponse *r = ai_service__title_response__unpack(NULL, n, p);
        if (r) {
            rc = buf_append(&call->text, r->title, strlen(r->title));
            call->cost = r->cost;
            call->precise_cost = r->precise_cost;
            ai_service__title_response__free_unpacked(r, NULL);
        }
    } else {
        AiService__Response *r = ai_service__response__unpack(NULL, n, p);
        if (r) {
            rc = buf_append(&call->text, r->response_text, strlen(r->response_text));
            call->cost = r->cost;
            call->precise_cost = r->precise_cost;
            call->prompt_tokens = r->prompt_tokens;
            call->completion_tokens = r->completion_tokens;
            ai_service__response__free_unpacked(r, NULL);
        }
    }
    grpc_slice_unref(s);
    return rc;
}

static const char *agent_method_name(const agent_call *call)
{
    if (call->kind == AGENT_SUMMARY)
        return "Summarize";
    if (call->kind == AGENT_TITLE)
        return "Title";
    return call->kind == AGENT_STREAM && !call->fallback ? "ProcessStream" : "Process";
}

/* Frees the per-attempt gRPC state; the call object itself lives on. */
static void agent_reset_attempt(agent_call *call)
{
    pthread_mutex_lock(&call->lock);
    grpc_call *g = call->grpc;
    call->grpc = NULL;
    pthread_mutex_unlock(&call->lock);
    if (g)
        grpc_call_unref(g);
    if (call->send_buf)
        grpc_byte_buffer_destroy(call->send_buf);
    if (call->recv_buf)
        grpc_byte_buffer_destroy(call->recv_buf);
    call->send_buf = call->recv_buf = NULL;
    grpc_metadata_array_destroy(&call->md_initial);
    grpc_metadata_array_destroy(&call->md_trailing);
    grpc_slice_unref(call->details);
    call->details = grpc_empty_slice();
}

/* Every batch has completed: decide fall-back, report, drop our ref. */
static void agent_finish(agent_call *call)
{
    agent_client *c = call->client;
    grpc_status_code status = call->synth ? call->synth_status : call->status;
    int cancelled = atomic_load(&call->cancelled);
    char *details = NULL;
    const char *why;

    if (call->synth) {
        why = call->synth_details;
    } else {
        details = grpc_slice_to_c_string(call->details);
        why = details;
    }

    if (call->kind == AGENT_STREAM && !call->fallback && status == GRPC_STATUS_UNIMPLEMENTED &&
        call->n_chunks == 0 && !cancelled) {
        if (!atomic_exchange(&c->no_stream, 1))
            log_info(
                "agent: ProcessStream not implemented by the agent; using Process from now on");
        gpr_free(details);
        agent_reset_attempt(call);
        call->fallback = 1;
        agent_start(call);
        return;
    }

    if (status == GRPC_STATUS_OK && !call->synth && call->kind != AGENT_STREAM) {
        if (agent_decode_unary(call) != 0) {
            status = GRPC_STATUS_INTERNAL;
            why = "malformed or missing reply from agent";
        }
    } else if (status == GRPC_STATUS_OK && call->kind == AGENT_STREAM && call->fallback &&
               !cancelled) {
        /* (Once cancelled, the caller has been shown nothing: no text.) */
        if (agent_decode_unary(call) != 0) {
            status = GRPC_STATUS_INTERNAL;
            why = "malformed or missing reply from agent";
        } else if (call->text.len > 0 && call->on_delta) {
            call->on_delta(call->ud, call->text.p, call->text.len);
        }
    }
    if (cancelled && status != GRPC_STATUS_CANCELLED) {
        /* Deterministic for the caller: a stop always reads as a stop. */
        status = GRPC_STATUS_CANCELLED;
        why = "Cancelled";
    }
    if (call->kind == AGENT_SUMMARY && status == GRPC_STATUS_UNIMPLEMENTED && !call->synth) {
        if (!atomic_exchange(&c->no_summary, 1))
            log_info("agent: Summarize not implemented by the agent; not asking again");
    }
    if (call->kind == AGENT_TITLE && status == GRPC_STATUS_UNIMPLEMENTED && !call->synth) {
        if (!atomic_exchange(&c->no_title, 1))
            log_info("agent: Title not implemented by the agent; not asking again");
    }
    if (status != GRPC_STATUS_OK && !cancelled && !call->synth)
        log_warn("agent: %s failed status=%d details=\"%s\"", agent_method_name(call), (int)status,
                 why ? why : "");

    if (status != GRPC_STATUS_OK && (call->kind == AGENT_SUMMARY || call->kind == AGENT_TITLE))
        call->text.len = 0; /* a failed summary or title has no text */
    const char *text = call->text.p ? call->text.p : "";
    char cost[UTIL_MONEY_MAX];
    if (util_money_text(cost, call->cost, call->precise_cost) != 0)
        log_warn("agent: %s reported a cost that is not a number >= 0 (%g, %g): charging 0",
                 agent_method_name(call), (double)call->cost, call->precise_cost);
    if (call->kind == AGENT_SUMMARY) {
        struct agent_summary_result r = {
            status, why ? why : "", call->text.len ? text : "", call->text.len, {0}};
        memcpy(r.cost, cost, sizeof(cost));
        if (call->on_summary)
            call->on_summary(call->ud, &r);
    } else if (call->kind == AGENT_TITLE) {
        struct agent_title_result r = {status, why ? why : "", call->text.len ? text : "", {0}};
        memcpy(r.cost, cost, sizeof(cost));
        if (call->on_title)
            call->on_title(call->ud, &r);
    } else {
        struct agent_result r = {status,
                                 why ? why : "",
                                 text,
                                 call->text.len,
                                 {0},
                                 call->prompt_tokens,
                                 call->completion_tokens};
        memcpy(r.cost, cost, sizeof(cost));
        if (call->on_done)
            call->on_done(call->ud, &r);
    }
    gpr_free(details);
    agent_reset_attempt(call);

    pthread_mutex_lock(&c->lock);
    if (call->prev)
        call->prev->next = call->next;
    else
        c->live = call->next;
    if (call->next)
        call->next->prev = call->prev;
    if (--c->n_live == 0)
        pthread_cond_broadcast(&c->idle);
    pthread_mutex_unlock(&c->lock);
    agent_call_unref(call);
}

static void *agent_cq_main(void *arg)
{
    agent_client *c = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct agent_tag *t = ev.tag;
        agent_call *call = t->call;
        if (t->op == AGENT_OP_MSG && agent_on_chunk(call, ev.success))
            continue;
        if (atomic_fetch_sub(&call->pending, 1) == 1)
            agent_finish(call);
    }
    return NULL;
}
