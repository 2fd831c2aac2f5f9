/* conn.c - WebSocket connections on the service thread (see conn.h).
 *
 * Shape (as in lws minimal-examples/ws-server-threads): what workers and
 * the agent thread produce arrives as outbox posts (conn_apply); frames are
 * written from LWS_CALLBACK_SERVER_WRITEABLE, and, for a connection with
 * nothing waiting in lws, right after the posts are applied
 * (conn_write_held). That is still the service thread, outside any
 * callback of the connection, and lws_write keeps the order itself: a
 * write while lws holds part of an earlier one is appended behind it
 * (lws_issue_raw). A ping and the close always wait for WRITEABLE. */
#include "net/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/dispatch.h"
#include "work/events.h"
#include "work/handlers.h"
#include "work/outbox.h"
#include "work/turn.h"

/* Idle connections keep no assembly buffer larger than this. */
#define CONN_RX_KEEP (64 * 1024)
/* Frames one writable callback may write while the socket takes them:
 * bounded, so one connection with a long queue does not hold the loop. */
#define CONN_WRITES_PER_CALLBACK 32
/* Queued deltas joined into one frame: at most this many, and this many
 * bytes of text (a frame well under any client's limit). */
#define CONN_JOIN_MAX 64
#define CONN_JOIN_BYTES (32 * 1024)

static struct conn *conn_find(struct conns *cs, uint64_t id)
{
    for (struct conn *c = cs->buckets[id % CONN_BUCKETS]; c != NULL; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

static void conn_unlink(struct conns *cs, struct conn *c)
{
    struct conn **pp = &cs->buckets[c->id % CONN_BUCKETS];
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp == c)
        *pp = c->hnext;
}

/* Does with lws what the queue rules asked for. */
static void conn_effects(struct conn *c, int fx)
{
    if ((fx & CONNQ_PAUSE) != 0)
        lws_rx_flow_control(c->wsi, 0);
    /* A closing connection reads only to drain; it never asks for more. */
    if ((fx & CONNQ_RESUME) != 0 && !c->closing)
        lws_rx_flow_control(c->wsi, 1);
    /* lws closes a connection that stays over the limit this long. */
    if ((fx & CONNQ_SLOW) != 0)
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, c->slow_close_seconds);
    if ((fx & CONNQ_UNSLOW) != 0)
        lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    if ((fx & CONNQ_WRITE) == 0)
        return;
    if (!c->cs->holding) {
        lws_callback_on_writable(c->wsi);
    } else if (!c->write_due) {
        c->write_due = 1;
        c->due_next = c->cs->due;
        c->cs->due = c;
    }
}

static void conn_send(struct conn *c, char *frame, size_t len)
{
    conn_effects(c, connq_send(&c->q, frame, len, 0));
}

/* Closes the connection with status once what is queued has been sent.
 * It keeps reading (and discarding): a peer still sending when we close
 * would otherwise get a TCP reset that can destroy our last frame. */
static void conn_close_after_flush(struct conn *c, int status)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_status = status;
    conn_effects(c, connq_send(&c->q, NULL, 0, 1));
}

static void conn_pump(struct conns *cs, struct conn *c);

static int64_t conn_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

/* ----------------------------------------------------------------- live */

static unsigned live_bucket(const char *user) { return util_hash(user) % CONN_BUCKETS; }

static void live_unlink(struct conns *cs, struct conn *c)
{
    if (c->live_user[0] == '\0')
        return;
    struct conn **pp = &cs->live[live_bucket(c->live_user)];
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->live_next;
    if (*pp == c)
        *pp = c->live_next;
    c->live_next = NULL;
    c->live_user[0] = '\0';
}

/* This chatd hears a session's turn frames only while one of its
 * connections resumes it (work/events.h): keeps the connection's watch on
 * the session it resumes now, if any. Called after every change of
 * c->resume. */
static void resume_watch(struct conns *cs, struct conn *c)
{
    const char *want = c->resume.state != RESUME_NONE ? c->resume.session : "";
    if (strcmp(c->watched, want) == 0)
        return;
    if (c->watched[0] != '\0')
        events_unwatch_turn(cs->app, c->watched);
    snprintf(c->watched, sizeof(c->watched), "%s", want);
    if (want[0] != '\0')
        events_watch_turn(cs->app, want);
}

/* It now gets user's live messages (only one user's at a time: a
 * subscription or a resume for another user replaces the earlier ones). */
static void live_link(struct conns *cs, struct conn *c, const char *user)
{
    if (strcmp(c->live_user, user) == 0)
        return;
    live_unlink(cs, c);
    c->subscribed = 0;
    resume_end(&c->resume);
    resume_watch(cs, c);
    snprintf(c->live_user, sizeof(c->live_user), "%s", user);
    unsigned b = live_bucket(user);
    c->live_next = cs->live[b];
    cs->live[b] = c;
}

/* Neither subscribed nor resuming: off the list. */
static void live_maybe_unlink(struct conns *cs, struct conn *c)
{
    if (!c->subscribed && c->resume.state == RESUME_NONE)
        live_unlink(cs, c);
}

static void conn_send_copy(struct conn *c, const char *frame, size_t len)
{
    char *copy = util_memdup(frame, len);
    if (copy != NULL)
        conn_send(c, copy, len);
}

/* What a resume (net/resume.h) does to its connection. */
struct resume_ctx {
    struct conns *cs;
    struct conn *c;
};

static void resume_send(void *ctx, const char *frame, size_t len)
{
    conn_send_copy(((struct resume_ctx *)ctx)->c, frame, len);
}

static void resume_refill(void *ctx, const char *session, const char *turn, long long after)
{
    struct resume_ctx *x = ctx;
    events_refill(x->cs->app, x->c->id, x->c->live_user, session, turn, after);
}

/* After every step of a resume: a resume that ended lets go of its watch
 * and, unless subscribed, of the user's live messages. */
static void resume_settle(struct conns *cs, struct conn *c)
{
    resume_watch(cs, c);
    live_maybe_unlink(cs, c);
}

/* A message from the live bus for p->user's connections. */
static void live_apply(struct conns *cs, struct outbox_post *p)
{
    struct resume_frame f = {p->session, p->tag, p->turn_id, p->index, p->frame, p->len};
    struct conn *c = cs->live[live_bucket(p->user)];
    while (c != NULL) {
        struct conn *next = c->live_next; /* resume_settle may unlink c */
        if (strcmp(c->live_user, p->user) == 0) {
            if (p->tag == 'E') {
                if (c->subscribed)
                    conn_send_copy(c, p->frame, p->len);
            } else if (c->resume.state != RESUME_NONE) {
                struct resume_ctx x = {cs, c};
                struct resume_io io = {resume_send, resume_refill, &x};
                resume_live(&c->resume, &f, &io);
                resume_settle(cs, c);
            }
        }
        c = next;
    }
}

/* Code 16 arrived: from now on the session's live frames are kept for the
 * connection until the replay is read (no frame published meanwhile can
 * be missed). */
static void resume_start(struct conns *cs, struct conn *c, const struct proto_request *req)
{
    live_link(cs, c, req->user_id);
    resume_begin(&c->resume, req->session_id, req->after);
    resume_watch(cs, c);
}

/* Code 16's answer: the acknowledgement, the replay, then what was held of
 * the turn it names. Or a refill's frames, then what was held since. */
static void resume_answered(struct conns *cs, struct conn *c, struct outbox_post *p)
{
    if (!p->refill) {
        conn_effects(c, connq_answered(&c->q, p->frame, p->len));
        p->frame = NULL;
    }
    if (resume_owns(&c->resume, p->refill, p->session, p->turn_id)) {
        for (size_t i = 0; i < p->nframes; i++) {
            conn_send(c, p->frames[i], p->lens[i]);
            p->frames[i] = NULL;
        }
        struct resume_ctx x = {cs, c};
        struct resume_io io = {resume_send, resume_refill, &x};
        resume_replayed(&c->resume, p->refill, p->turn_id, p->index, p->failed || p->last, &io);
        resume_settle(cs, c);
    } /* else: replaced by a later code 16 meanwhile */
    if (!p->refill)
        conn_pump(cs, c);
}

/* Code 8, when its turn in the connection's order comes (so a chat sent
 * just before it has become a turn of the connection by then): the
 * connection's latest turn on that session is stopped here, and its frame
 * set. 0 when the connection runs no turn there: a worker asks whoever
 * runs one (work/events.c). */
static int conn_stop_turn(struct conn *c, const struct proto_request *req, char **frame,
                          size_t *len)
{
    /* c->turns is newest first. */
    for (struct conn_turn *t = c->turns; t != NULL; t = t->next) {
        if (!turn_matches(t->turn, req->user_id, req->session_id))
            continue;
        if (!turn_cancel(t->turn, 1)) {
            /* too late: the full reply is on its way */
            struct proto_error err;
            proto_error_set(&err, PROTO_STOP, PERR_NO_TURN);
            metrics_request(PROTO_STOP, 0, 0);
            *frame = proto_encode_error(&err, len);
            return 1;
        }
        json_t *data = json_pack("{s:s, s:s, s:b}", "user_id", req->user_id, "session_id",
                                 req->session_id, "stopped", 1);
        *frame = data != NULL ? proto_encode_reply(PROTO_STOP, data, len) : NULL;
        metrics_request(PROTO_STOP, *frame != NULL, 0);
        return 1;
    }
    return 0;
}

/* Hands the connection's next requests to workers, in order. */
static void conn_pump(struct conns *cs, struct conn *c)
{
    int fx = 0;
    struct work_request *r;
    while ((r = connq_next(&c->q, &fx)) != NULL) {
        char *frame = NULL;
        size_t len = 0;
        if (r->req.type == PROTO_STOP && conn_stop_turn(c, &r->req, &frame, &len)) {
            work_request_free(r);
            fx |= connq_answered(&c->q, frame, len);
            continue;
        }
        c->busy_type = r->req.type;
        c->busy_since_us = metrics_now_us();
        dispatch_submit(cs->app, r);
    }
    conn_effects(c, fx);
}

static void conn_enqueue(struct conns *cs, struct conn *c, struct work_request *r)
{
    conn_effects(c, connq_push(&c->q, r));
    conn_pump(cs, c);
}

/* An answer known without a worker, sent in its turn. */
static void conn_answer_now(struct conns *cs, struct conn *c, char *frame, size_t len)
{
    if (frame == NULL) /* out of memory while encoding: nothing to queue */
        return;
    struct work_request *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        free(frame);
        return;
    }
    r->ready = frame;
    r->ready_len = len;
    conn_enqueue(cs, c, r);
}

static void conn_error_now(struct conns *cs, struct conn *c, const struct proto_error *err)
{
    metrics_request(err->type, 0, 0);
    size_t len = 0;
    char *frame = proto_encode_error(err, &len);
    conn_answer_now(cs, c, frame, len);
}

static void conn_refuse(struct conns *cs, struct conn *c, int type, int code)
{
    struct proto_error err;
    proto_error_set(&err, type, code);
    conn_error_now(cs, c, &err);
}

/* A whole message arrived: decode it and answer or queue it. */
static void conn_on_message(struct conns *cs, struct conn *c, int binary)
{
    const struct config *cfg = cs->app->cfg;
    if (binary) {
        conn_refuse(cs, c, -1, PERR_BINARY_FRAME);
        return;
    }
    struct work_request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    struct proto_error err;
    if (proto_decode(c->rx.p != NULL ? c->rx.p : "", c->rx.len, &cs->app->limits, dispatch_decoder,
                     &r->req, &err) != 0) {
        free(r);
        conn_error_now(cs, c, &err);
        return;
    }
    int type = r->req.type, refused = -1;
    if (c->user[0] != '\0' && strcmp(r->req.user_id, c->user) != 0)
        refused = PERR_FORBIDDEN_USER; /* the token names who this is; nothing happens */
    else if (PROTO_IS_TURN(type) && cs->draining)
        refused = PERR_SHUTTING_DOWN;
    else if (PROTO_IS_TURN(type) && c->nturns >= cfg->max_inflight_per_conn)
        refused = PERR_TOO_MANY_REQUESTS;
    if (refused >= 0) {
        work_request_free(r);
        conn_refuse(cs, c, type, refused);
        return;
    }
    if (type == PROTO_RESUME)
        resume_start(cs, c, &r->req);
    /* Codes 0, 1 and 5 from a fresh copy in memory need no worker: answered
     * here, but only when nothing of this connection waits before them (its
     * replies keep their order, and it sees its own writes). */
    size_t len = 0;
    char *frame = connq_idle(&c->q) ? handlers_inline(cs->app, &r->req, &len) : NULL;
    if (frame != NULL) {
        metrics_request(type, 1, 0);
        work_request_free(r);
        conn_answer_now(cs, c, frame, len);
        return;
    }
    r->conn_id = c->id;
    conn_enqueue(cs, c, r);
}

int conn_receive(struct conns *cs, struct conn *c, const void *in, size_t len)
{
    conn_heard(c);
    if (lws_is_first_fragment(c->wsi)) {
        c->rx.len = 0;
        c->rx_discard = 0;
    }
    if (c->rx_discard || c->closing)
        return 0;
    size_t max = (size_t)cs->app->cfg->max_message_bytes;
    size_t want = c->rx.len + len;
    if (want > max || lws_remaining_packet_payload(c->wsi) > max - want) {
        /* Refuse early: we never buffer more than the limit. */
        c->rx_discard = 1;
        log_warn("event=frame_too_large conn=%llu limit=%zu", (unsigned long long)c->id, max);
        char detail[64];
        snprintf(detail, sizeof(detail), "limit is %zu bytes", max);
        metrics_request(-1, 0, 0);
        size_t flen = 0;
        char *frame = proto_encode_error_code(-1, PERR_FRAME_TOO_LARGE, NULL, detail, &flen);
        conn_send(c, frame, flen);
        conn_close_after_flush(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
        return 0;
    }
    if (buf_grow(&c->rx, want, max) != 0)
        return -1;
    /* An empty frame (or continuation) arrives with len 0 and, before any
     * buffer exists, rx == NULL: memcpy(NULL, .., 0) is undefined. */
    if (len > 0) {
        memcpy(c->rx.p + c->rx.len, in, len);
        c->rx.len += len;
    }
    if (lws_is_final_fragment(c->wsi)) {
        conn_on_message(cs, c, lws_frame_is_binary(c->wsi));
        c->rx.len = 0;
        if (c->rx.cap > CONN_RX_KEEP)
            buf_free(&c->rx);
    }
    return 0;
}

/* Stream deltas queued one right after another on a connection whose
 * socket fell behind (a write found it full with frames still to write) go
 * out as one frame holding them all, "first" .. "index" (README, type 7):
 * one write, and one frame for the client to parse, instead of one per
 * piece. A connection whose socket keeps up gets each delta as it was,
 * whatever the loop's own pace. Returns how many queued frames it wrote (0: m does not start
 * such a run, nothing written), -1 when the write failed. */
static int conn_write_joined(struct conn *c, struct connq_msg *m)
{
    struct proto_delta_view v[CONN_JOIN_MAX];
    size_t n = 0, bytes = 0;
    for (struct connq_msg *x = m; x != NULL && !x->is_close && n < CONN_JOIN_MAX; x = x->next) {
        if (proto_delta_view((const char *)x->buf + LWS_PRE, x->len, &v[n]) != 0 ||
            (n > 0 && !proto_delta_follows(&v[n - 1], &v[n])) ||
            (n > 0 && bytes + v[n].text_len > CONN_JOIN_BYTES))
            break;
        bytes += v[n].text_len;
        n++;
    }
    if (n < 2)
        return 0;
    size_t len = proto_delta_join_len(v, n);
    unsigned char *buf = malloc(LWS_PRE + len + 1);
    if (buf == NULL)
        return 0; /* written one by one, then */
    int k = (int)n;
    if (proto_delta_join(v, n, (char *)buf + LWS_PRE, len + 1) != len ||
        lws_write(c->wsi, buf + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len)
        k = -1;
    free(buf);
    return k;
}

/* Writes the frames queued, from the head, while the socket takes them;
 * asks for a writable callback for the rest. 0, or -1 when a write failed. */
static int conn_write_queued(struct conn *c)
{
    struct connq_msg *m = connq_head(&c->q);
    /* Several frames in one go while the socket takes them: a stream's
     * deltas that queued up meanwhile go out now, not each after another
     * round of the event loop. A frame is still written whole; the close
     * stays alone, last. lws's way: after each write, stop if it had to
     * keep part of it (the socket is full; it sends the rest before our
     * next writable callback), which costs no system call where
     * lws_send_pipe_choked() polls the socket. */
    for (int i = 0; i < CONN_WRITES_PER_CALLBACK; i++) {
        if (m == NULL || (i > 0 && m->is_close))
            break;
        int k = c->behind ? conn_write_joined(c, m) : 0;
        if (k == 0) {
            int n = lws_write(c->wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_TEXT);
            k = n < (int)m->len ? -1 : 1;
        }
        if (k < 0) {
            log_warn("event=write_failed conn=%llu", (unsigned long long)c->id);
            return -1;
        }
        /* Each frame's effects in turn (reading paused or resumed as
         * the queue shrinks); the writable callback once, below. */
        while (k-- > 0)
            conn_effects(c, connq_sent(&c->q) & ~CONNQ_WRITE);
        m = connq_head(&c->q);
        if (lws_partial_buffered(c->wsi)) {
            c->behind = m != NULL; /* the socket is full: what waits may be joined */
            break;
        }
    }
    if (m == NULL)
        c->behind = 0; /* caught up */
    else
        lws_callback_on_writable(c->wsi);
    return 0;
}

int conn_writeable(struct conns *cs, struct conn *c)
{
    (void)cs;
    if (c->ping_due) {
        /* A control frame may go between two frames of ours, never inside
         * one: every frame of ours is written whole, in one lws_write. */
        /* Not empty: lws 4.1.6 gives no LWS_CALLBACK_RECEIVE_PONG for a
         * pong with no payload, so a quiet peer's answer to an empty ping
         * would go unheard (test_protocol KeepAlive shows it). */
        unsigned char ping[LWS_PRE + 4] = {0};
        memcpy(ping + LWS_PRE, "ka", 2);
        c->ping_due = 0;
        if (lws_write(c->wsi, ping + LWS_PRE, 2, LWS_WRITE_PING) < 0)
            return -1;
        if (connq_head(&c->q) != NULL)
            lws_callback_on_writable(c->wsi);
        return 0;
    }
    struct connq_msg *m = connq_head(&c->q);
    if (m == NULL)
        return 0;
    if (m->is_close) {
        const char *why = c->close_status == LWS_CLOSE_STATUS_GOINGAWAY ? "server shutting down"
                                                                        : "frame too large";
        lws_close_reason(c->wsi, (enum lws_close_status)c->close_status, (unsigned char *)why,
                         strlen(why));
        return -1;
    }
    return conn_write_queued(c);
}

void conn_hold_writes(struct conns *cs) { cs->holding = 1; }

void conn_write_held(struct conns *cs)
{
    cs->holding = 0;
    while (cs->due != NULL) {
        struct conn *c = cs->due;
        cs->due = c->due_next;
        c->due_next = NULL;
        c->write_due = 0;
        struct connq_msg *m = connq_head(&c->q);
        if (m == NULL)
            continue;
        /* What lws still holds goes first, and the ping and the close are
         * WRITEABLE's; a connection that fell behind joins its deltas
         * there. Each of these has a writable callback coming or asks for
         * one here. */
        if (c->ping_due || m->is_close || c->behind || lws_partial_buffered(c->wsi)) {
            lws_callback_on_writable(c->wsi);
            continue;
        }
        /* Outside a callback a failed write cannot close by returning -1:
         * lws closes it on its next turn. */
        if (conn_write_queued(c) != 0)
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
}

int conn_open(struct conns *cs, struct lws *wsi, struct conn *c)
{
    const struct config *cfg = cs->app->cfg;
    if (peers_add(cs->peers, c->addr) != 0)
        return -1;
    c->wsi = wsi;
    c->cs = cs;
    c->id = ++cs->next_id;
    connq_init(&c->q, LWS_PRE, (size_t)cfg->max_output_bytes_per_conn, cfg->max_inflight_per_conn);
    c->slow_close_seconds = cfg->slow_reader_close_seconds;
    c->heard = conn_now_s();
    c->hnext = cs->buckets[c->id % CONN_BUCKETS];
    cs->buckets[c->id % CONN_BUCKETS] = c;
    cs->n++;
    log_debug("event=ws_open conn=%llu addr=%s user=%s", (unsigned long long)c->id, c->addr,
              c->user[0] != '\0' ? c->user : "-");
    return 0;
}

void conn_close(struct conns *cs, struct conn *c)
{
    if (c->id == 0)
        return; /* refused in LWS_CALLBACK_ESTABLISHED: never counted */
    if (c->q.slow)
        log_warn("event=slow_reader_closed conn=%llu addr=%s unsent_bytes=%zu",
                 (unsigned long long)c->id, c->addr, c->q.out_bytes);
    conn_unlink(cs, c);
    if (c->write_due) {
        struct conn **pp = &cs->due;
        while (*pp != NULL && *pp != c)
            pp = &(*pp)->due_next;
        if (*pp == c)
            *pp = c->due_next;
        c->write_due = 0;
    }
    cs->n--;
    peers_remove(cs->peers, c->addr);
    buf_free(&c->rx);
    connq_clear(&c->q);
    live_unlink(cs, c);
    resume_end(&c->resume);
    resume_watch(cs, c);
    /* A dropped client's turns go on, to be stored and resumed
     * (DETACHED_TURNS=finish), or are cancelled; at shutdown they are
     * cancelled either way. */
    int finish = cs->app->cfg->detached_finish && !cs->draining;
    while (c->turns != NULL) {
        struct conn_turn *t = c->turns;
        c->turns = t->next;
        if (!finish)
            turn_cancel(t->turn, 0);
        turn_unref(t->turn);
        free(t);
    }
    log_debug("event=ws_closed conn=%llu", (unsigned long long)c->id);
}

void conn_apply(struct conns *cs, struct outbox_post *p)
{
    struct conn *c = conn_find(cs, p->id);
    switch (p->kind) {
    case OUTBOX_REPLY:
        if (c == NULL)
            break;
        metrics_request(c->busy_type, !p->failed,
                        (double)(metrics_now_us() - c->busy_since_us) / 1e6);
        conn_effects(c, connq_answered(&c->q, p->frame, p->len));
        p->frame = NULL;
        conn_pump(cs, c);
        break;
    case OUTBOX_DETACH:
        if (c == NULL) {
            /* The client left while its turn was being checked. */
            turn_cancel(p->held, 0);
            break;
        }
        struct conn_turn *t = malloc(sizeof(*t));
        if (t == NULL) {
            turn_cancel(p->held, 0);
        } else {
            t->turn = p->held; /* a struct turn (work/outbox.h) */
            t->next = c->turns;
            c->turns = t;
            c->nturns++;
            p->held = NULL; /* the connection holds the reference now */
        }
        conn_effects(c, connq_answered(&c->q, NULL, 0));
        conn_pump(cs, c);
        break;
    case OUTBOX_PUSH:
        if (c == NULL)
            break;
        conn_send(c, p->frame, p->len);
        p->frame = NULL;
        break;
    case OUTBOX_TURN_DONE:
        if (c == NULL)
            break;
        for (struct conn_turn **pp = &c->turns; *pp != NULL; pp = &(*pp)->next) {
            if ((*pp)->turn == p->held) {
                struct conn_turn *dead = *pp;
                *pp = dead->next;
                turn_unref(dead->turn);
                free(dead);
                c->nturns--;
                break;
            }
        }
        break;
    case OUTBOX_SUBSCRIBE:
        if (c == NULL)
            break;
        metrics_request(PROTO_SUBSCRIBE, !p->failed,
                        (double)(metrics_now_us() - c->busy_since_us) / 1e6);
        if (!p->failed) {
            live_link(cs, c, p->user);
            c->subscribed = 1;
        }
        conn_effects(c, connq_answered(&c->q, p->frame, p->len));
        p->frame = NULL;
        conn_pump(cs, c);
        break;
    case OUTBOX_RESUME:
        if (c == NULL)
            break;
        if (!p->refill)
            metrics_request(PROTO_RESUME, !p->failed,
                            (double)(metrics_now_us() - c->busy_since_us) / 1e6);
        resume_answered(cs, c, p);
        break;
    case OUTBOX_LIVE:
        live_apply(cs, p);
        break;
    case OUTBOX_HTTP:
    case OUTBOX_EXPORT:
        break; /* not a connection's: net/http.c */
    }
}

void conn_close_all(struct conns *cs, int status)
{
    for (int b = 0; b < CONN_BUCKETS; b++)
        for (struct conn *c = cs->buckets[b]; c != NULL; c = c->hnext)
            conn_close_after_flush(c, status);
}

void conn_heard(struct conn *c)
{
    c->heard = conn_now_s();
    c->ping_sent = 0;
}

void conn_keepalive(struct conns *cs, int ping_seconds)
{
    int64_t now = conn_now_s();
    for (int b = 0; b < CONN_BUCKETS; b++) {
        for (struct conn *c = cs->buckets[b]; c != NULL; c = c->hnext) {
            int64_t quiet = now - c->heard;
            if (c->hung_up) {
                continue;
            } else if (quiet >= 2 * (int64_t)ping_seconds) {
                c->hung_up = 1;
                log_info("event=ws_hangup conn=%llu addr=%s quiet_s=%lld",
                         (unsigned long long)c->id, c->addr, (long long)quiet);
                /* Closed by lws on its next turn, whether or not the
                 * socket could take a close frame. */
                lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            } else if (quiet >= ping_seconds && !c->ping_sent) {
                c->ping_sent = c->ping_due = 1;
                lws_callback_on_writable(c->wsi);
            }
        }
    }
}
