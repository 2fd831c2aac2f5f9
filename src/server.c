/* server.c - the libwebsockets service thread: connections, frame assembly,
 * per-connection request order, output queues and back-pressure.
 *
 * Shape (as in lws minimal-examples/ws-server-threads): a protocol table
 * with one callback; writes only from LWS_CALLBACK_SERVER_WRITEABLE; worker
 * threads hand results over through a mutex-protected list and
 * lws_cancel_service().
 *
 * Request order: a connection's requests form a FIFO and run one at a time,
 * so replies leave in the order requests came, without a reorder buffer. A
 * chat turn leaves the FIFO as soon as its checks pass (server_detach) and
 * answers later with server_push, so a slow agent never holds back the
 * replies to the connection's other requests. */
#include "server.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "auth.h"
#include "chat.h"
#include "config.h"
#include "handlers.h"
#include "http.h"
#include "inval.h"
#include "log.h"
#include "metrics.h"
#include "peers.h"

#define CONN_BUCKETS 4096

struct outmsg {
    struct outmsg *next;
    size_t len;
    int is_close; /* after this frame, close the connection */
    unsigned char buf[];  /* LWS_PRE bytes, then the payload */
};

struct turn_ref {
    struct turn_ref *next;
    struct chat_turn *turn;
};

struct conn {
    struct lws *wsi;
    uint64_t id;
    struct conn *hnext;

    char *rx; /* the message being assembled */
    size_t rx_len, rx_cap;
    int rx_discard; /* oversized: drop the rest, then close */

    struct server_request *q_head, *q_tail;
    int q_len;
    int busy; /* the head request is with a worker */
    int busy_type;          /* its code, for metrics */
    uint64_t busy_since_us; /* when it went to the worker */

    struct outmsg *out_head, *out_tail;
    size_t out_bytes;
    /* MAX_OUTPUT_BYTES_PER_CONN: past it we stop reading from a client
     * that does not read its replies, and resume below half. Keeps such a
     * client from growing our memory without bound. */
    size_t out_limit;
    int slow_close_seconds; /* SLOW_READER_CLOSE_SECONDS */
    int rx_paused;
    int closing;      /* a close is queued: read nothing more */
    int close_status; /* the close code it will carry */

    struct turn_ref *turns;
    int nturns;

    char user[UUID_STR_LEN + 1]; /* AUTH_MODE=jwt: the token's sub; "" otherwise */
    char addr[PEERS_ADDR_MAX];   /* the peer's address, counted in srv->peers */
    int slow;                    /* over out_limit: closed if it stays so */
};

enum post_kind { POST_REPLY, POST_DETACH, POST_PUSH, POST_TURN_DONE, POST_HTTP };

struct post {
    struct post *next;
    enum post_kind kind;
    uint64_t conn_id; /* POST_HTTP: the HTTP transaction's id */
    char *frame;      /* POST_HTTP: the response body */
    size_t len;
    struct chat_turn *turn;
    int aux; /* POST_REPLY: 1 for an error frame; POST_HTTP: the status */
};

struct server {
    const struct config *cfg;
    struct lws_context *ctx;
    struct pool *pool;
    struct agent_client *agent;
    struct inval *inval;
    struct proto_limits limits;

    pthread_mutex_t mu; /* guards posts and wake_ctx */
    struct post *posts_head, *posts_tail;
    struct lws_context *wake_ctx; /* NULL once the context is going away */

    struct conn *buckets[CONN_BUCKETS];
    uint64_t next_conn_id;
    int nconns;
    struct peers *peers; /* open connections per address */

    int draining; /* shutting down: no new connections or turns */
    lws_sorted_usec_list_t tick;
};

static volatile sig_atomic_t server_interrupted;
static struct lws_context *server_signal_ctx;

/* ------------------------------------------------------------------ posts */

static void post(struct server *srv, enum post_kind kind, uint64_t conn_id, char *frame,
                 size_t len, struct chat_turn *turn, int aux)
{
    struct post *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        /* Out of memory: the connection will miss this frame; say so. */
        log_error("event=post_oom conn=%llu", (unsigned long long)conn_id);
        free(frame);
        if (turn != NULL)
            chat_turn_unref(turn);
        return;
    }
    p->kind = kind;
    p->conn_id = conn_id;
    p->frame = frame;
    p->len = len;
    p->turn = turn;
    p->aux = aux;
    pthread_mutex_lock(&srv->mu);
    if (srv->posts_tail != NULL)
        srv->posts_tail->next = p;
    else
        srv->posts_head = p;
    srv->posts_tail = p;
    if (srv->wake_ctx != NULL)
        lws_cancel_service(srv->wake_ctx);
    pthread_mutex_unlock(&srv->mu);
}

void server_reply(struct server *srv, uint64_t conn_id, int type, json_t *data)
{
    size_t len = 0;
    char *frame = data != NULL ? proto_encode_reply(type, data, &len) : NULL;
    int failed = frame == NULL;
    if (failed) {
        struct proto_error err;
        proto_error_set(&err, type, PERR_JSON_MARSHAL);
        frame = proto_encode_error(&err, &len);
    }
    post(srv, POST_REPLY, conn_id, frame, len, NULL, failed);
}

void server_reply_error(struct server *srv, uint64_t conn_id, int type, int code,
                        const char *text)
{
    size_t len = 0;
    char *frame = proto_encode_error_code(type, code, text, NULL, &len);
    post(srv, POST_REPLY, conn_id, frame, len, NULL, 1);
}

void server_detach(struct server *srv, uint64_t conn_id, struct chat_turn *turn)
{
    chat_turn_ref(turn);
    post(srv, POST_DETACH, conn_id, NULL, 0, turn, 0);
}

void server_push(struct server *srv, uint64_t conn_id, char *frame, size_t len)
{
    post(srv, POST_PUSH, conn_id, frame, len, NULL, 0);
}

void server_turn_done(struct server *srv, uint64_t conn_id, struct chat_turn *turn)
{
    chat_turn_ref(turn);
    post(srv, POST_TURN_DONE, conn_id, NULL, 0, turn, 0);
}

void server_http_reply(struct server *srv, uint64_t txn_id, unsigned status, char *body,
                       size_t len)
{
    post(srv, POST_HTTP, txn_id, body, len, NULL, (int)status);
}

const struct config *server_config(const struct server *srv) { return srv->cfg; }
struct pool *server_pool(const struct server *srv) { return srv->pool; }
struct agent_client *server_agent(const struct server *srv) { return srv->agent; }
int server_connections(const struct server *srv) { return srv->nconns; }
int server_draining(const struct server *srv) { return srv->draining; }

void server_request_free(struct server_request *r)
{
    if (r == NULL)
        return;
    proto_request_free(&r->req);
    free(r->ready);
    free(r);
}

/* ------------------------------------------------------------ connections */

static struct conn *conn_find(struct server *srv, uint64_t id)
{
    for (struct conn *c = srv->buckets[id % CONN_BUCKETS]; c != NULL; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

static void conn_unlink(struct server *srv, struct conn *c)
{
    struct conn **pp = &srv->buckets[c->id % CONN_BUCKETS];
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp == c)
        *pp = c->hnext;
}

/* Queues frame (stolen) for writing; with is_close, frame is NULL and the
 * entry only marks where the connection closes. */
static void conn_send(struct conn *c, char *frame, size_t len, int is_close)
{
    if (frame == NULL && !is_close)
        return;
    struct outmsg *m = malloc(sizeof(*m) + LWS_PRE + len);
    if (m == NULL) {
        free(frame);
        log_error("event=send_oom conn=%llu", (unsigned long long)c->id);
        return;
    }
    m->next = NULL;
    m->len = len;
    m->is_close = is_close;
    if (len > 0)
        memcpy(m->buf + LWS_PRE, frame, len);
    free(frame);
    if (c->out_tail != NULL)
        c->out_tail->next = m;
    else
        c->out_head = m;
    c->out_tail = m;
    c->out_bytes += len;
    if (c->out_bytes > c->out_limit && !c->rx_paused) {
        c->rx_paused = 1;
        lws_rx_flow_control(c->wsi, 0);
    }
    if (c->out_bytes > c->out_limit && !c->slow) {
        /* Not reading stops its requests, but replies already owed still
         * pile up (and a stream keeps sending), so a client that stays
         * this far behind is cut off: lws closes it when this expires. */
        c->slow = 1;
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, c->slow_close_seconds);
    }
    lws_callback_on_writable(c->wsi);
}

/* Closes the connection with status once what is queued has been sent. */
static void conn_close_after_flush(struct conn *c, int status)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_status = status;
    conn_send(c, NULL, 0, 1);
    /* Keep reading (and discarding): a peer still sending when we close
     * would otherwise get a TCP reset that can destroy our error frame. */
}

static void conn_send_error(struct conn *c, int type, int code, const char *detail)
{
    metrics_request(type, 0, 0);
    size_t len = 0;
    char *frame = proto_encode_error_code(type, code, NULL, detail, &len);
    conn_send(c, frame, len, 0);
}

/* Moves ready answers out and starts the next request, in FIFO order. */
static void conn_pump(struct server *srv, struct conn *c)
{
    while (!c->busy && c->q_head != NULL) {
        struct server_request *r = c->q_head;
        c->q_head = r->next;
        if (c->q_head == NULL)
            c->q_tail = NULL;
        c->q_len--;
        r->next = NULL;
        if (r->ready != NULL) {
            conn_send(c, r->ready, r->ready_len, 0);
            r->ready = NULL;
            server_request_free(r);
            continue;
        }
        c->busy = 1;
        c->busy_type = r->req.type;
        c->busy_since_us = metrics_now_us();
        pool_submit(srv->pool, &r->job);
    }
}

static void conn_enqueue(struct server *srv, struct conn *c, struct server_request *r)
{
    if (c->q_tail != NULL)
        c->q_tail->next = r;
    else
        c->q_head = r;
    c->q_tail = r;
    c->q_len++;
    conn_pump(srv, c);
    /* A client that sends faster than we answer waits in its own TCP
     * buffer rather than in our memory. */
    if (c->q_len >= srv->cfg->max_inflight_per_conn && !c->rx_paused) {
        c->rx_paused = 1;
        lws_rx_flow_control(c->wsi, 0);
    }
}

static void conn_maybe_resume(struct server *srv, struct conn *c)
{
    if (c->rx_paused && !c->closing && c->out_bytes <= c->out_limit / 2 &&
        c->q_len < srv->cfg->max_inflight_per_conn / 2 + 1) {
        c->rx_paused = 0;
        lws_rx_flow_control(c->wsi, 1);
    }
}

/* A request answered without a worker, queued in order. */
static void conn_answer_now(struct server *srv, struct conn *c, char *frame, size_t len)
{
    if (frame == NULL) /* out of memory while encoding: nothing to queue */
        return;
    struct server_request *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        free(frame);
        return;
    }
    r->ready = frame;
    r->ready_len = len;
    conn_enqueue(srv, c, r);
}

static void conn_error_now(struct server *srv, struct conn *c, const struct proto_error *err)
{
    metrics_request(err->type, 0, 0);
    size_t len = 0;
    char *frame = proto_encode_error(err, &len);
    conn_answer_now(srv, c, frame, len);
}

/* Code 8: stop the turn this connection runs on that session. */
static void conn_stop_turn(struct server *srv, struct conn *c, const struct proto_request *req)
{
    for (struct turn_ref *t = c->turns; t != NULL; t = t->next) {
        if (chat_turn_matches(t->turn, req->user_id, req->session_id)) {
            if (!chat_turn_cancel(t->turn, 1))
                break; /* too late: the full reply is on its way */
            json_t *data = json_pack("{s:s, s:s, s:b}", "user_id", req->user_id, "session_id",
                                     req->session_id, "stopped", 1);
            size_t len = 0;
            char *frame = data != NULL ? proto_encode_reply(PROTO_STOP, data, &len) : NULL;
            metrics_request(PROTO_STOP, frame != NULL, 0);
            conn_answer_now(srv, c, frame, len);
            return;
        }
    }
    struct proto_error err;
    proto_error_set(&err, PROTO_STOP, PERR_NO_TURN);
    conn_error_now(srv, c, &err);
}

static void conn_on_message(struct server *srv, struct conn *c, int binary)
{
    struct proto_error err;
    if (binary) {
        proto_error_set(&err, -1, PERR_BINARY_FRAME);
        conn_error_now(srv, c, &err);
        return;
    }
    struct server_request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    if (proto_decode(c->rx != NULL ? c->rx : "", c->rx_len, &srv->limits, &r->req, &err) != 0) {
        free(r);
        conn_error_now(srv, c, &err);
        return;
    }
    if (c->user[0] != '\0' && strcmp(r->req.user_id, c->user) != 0) {
        /* The token names who this connection is; nothing else happens. */
        proto_error_set(&err, r->req.type, PERR_FORBIDDEN_USER);
        server_request_free(r);
        conn_error_now(srv, c, &err);
        return;
    }
    if (r->req.type == PROTO_STOP) {
        conn_stop_turn(srv, c, &r->req);
        server_request_free(r);
        return;
    }
    if (r->req.type == PROTO_CHAT && srv->draining) {
        proto_error_set(&err, PROTO_CHAT, PERR_SHUTTING_DOWN);
        server_request_free(r);
        conn_error_now(srv, c, &err);
        return;
    }
    if (r->req.type == PROTO_CHAT && c->nturns >= srv->cfg->max_inflight_per_conn) {
        proto_error_set(&err, PROTO_CHAT, PERR_TOO_MANY_REQUESTS);
        server_request_free(r);
        conn_error_now(srv, c, &err);
        return;
    }
    r->srv = srv;
    r->conn_id = c->id;
    r->job.run = handlers_run;
    conn_enqueue(srv, c, r);
}

static int conn_receive(struct server *srv, struct conn *c, const void *in, size_t len)
{
    if (lws_is_first_fragment(c->wsi)) {
        c->rx_len = 0;
        c->rx_discard = 0;
    }
    if (c->rx_discard || c->closing)
        return 0;
    size_t max = (size_t)srv->cfg->max_message_bytes;
    size_t want = c->rx_len + len;
    if (want > max || lws_remaining_packet_payload(c->wsi) > max - want) {
        /* Refuse early: we never buffer more than the limit. */
        c->rx_discard = 1;
        log_warn("event=frame_too_large conn=%llu limit=%zu", (unsigned long long)c->id, max);
        char detail[64];
        snprintf(detail, sizeof(detail), "limit is %zu bytes", max);
        conn_send_error(c, -1, PERR_FRAME_TOO_LARGE, detail);
        conn_close_after_flush(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
        return 0;
    }
    if (want > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 1024;
        while (cap < want)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *grown = realloc(c->rx, cap);
        if (grown == NULL)
            return -1;
        c->rx = grown;
        c->rx_cap = cap;
    }
    /* An empty frame (or continuation) arrives with len 0 and, before any
     * buffer exists, rx == NULL: memcpy(NULL, .., 0) is undefined. */
    if (len > 0) {
        memcpy(c->rx + c->rx_len, in, len);
        c->rx_len += len;
    }
    if (lws_is_final_fragment(c->wsi)) {
        conn_on_message(srv, c, lws_frame_is_binary(c->wsi));
        c->rx_len = 0;
        /* Idle connections keep no assembly buffer. */
        if (c->rx_cap > 64 * 1024) {
            free(c->rx);
            c->rx = NULL;
            c->rx_cap = 0;
        }
    }
    return 0;
}

static int conn_writeable(struct server *srv, struct conn *c)
{
    struct outmsg *m = c->out_head;
    if (m == NULL)
        return 0;
    if (m->is_close) {
        const char *why = c->close_status == LWS_CLOSE_STATUS_GOINGAWAY ? "server shutting down"
                                                                         : "frame too large";
        lws_close_reason(c->wsi, (enum lws_close_status)c->close_status, (unsigned char *)why,
                         strlen(why));
        return -1;
    }
    int n = lws_write(c->wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_TEXT);
    if (n < (int)m->len) {
        log_warn("event=write_failed conn=%llu", (unsigned long long)c->id);
        return -1;
    }
    c->out_head = m->next;
    if (c->out_head == NULL)
        c->out_tail = NULL;
    c->out_bytes -= m->len;
    free(m);
    if (c->slow && c->out_bytes <= c->out_limit) {
        c->slow = 0;
        lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    }
    if (c->out_head != NULL)
        lws_callback_on_writable(c->wsi);
    conn_maybe_resume(srv, c);
    return 0;
}

static void conn_destroy(struct server *srv, struct conn *c)
{
    if (c->id == 0)
        return; /* refused in LWS_CALLBACK_ESTABLISHED: never counted */
    if (c->slow)
        log_warn("event=slow_reader_closed conn=%llu addr=%s unsent_bytes=%zu",
                 (unsigned long long)c->id, c->addr, c->out_bytes);
    conn_unlink(srv, c);
    srv->nconns--;
    peers_remove(srv->peers, c->addr);
    free(c->rx);
    c->rx = NULL;
    while (c->q_head != NULL) {
        struct server_request *r = c->q_head;
        c->q_head = r->next;
        server_request_free(r);
    }
    while (c->out_head != NULL) {
        struct outmsg *m = c->out_head;
        c->out_head = m->next;
        free(m);
    }
    /* A dropped client cancels its turns; what was committed stays. */
    while (c->turns != NULL) {
        struct turn_ref *t = c->turns;
        c->turns = t->next;
        chat_turn_cancel(t->turn, 0);
        chat_turn_unref(t->turn);
        free(t);
    }
    log_debug("event=ws_closed conn=%llu", (unsigned long long)c->id);
}

/* ------------------------------------------------------------ post drain */

static void server_apply(struct server *srv, struct post *p)
{
    struct conn *c = conn_find(srv, p->conn_id);
    switch (p->kind) {
    case POST_REPLY:
        if (c == NULL)
            break;
        c->busy = 0;
        metrics_request(c->busy_type, !p->aux,
                        (double)(metrics_now_us() - c->busy_since_us) / 1e6);
        conn_send(c, p->frame, p->len, 0);
        p->frame = NULL;
        conn_pump(srv, c);
        conn_maybe_resume(srv, c);
        break;
    case POST_DETACH:
        if (c == NULL) {
            /* The client left while its turn was being checked. */
            chat_turn_cancel(p->turn, 0);
            break;
        }
        c->busy = 0;
        struct turn_ref *t = malloc(sizeof(*t));
        if (t == NULL) {
            chat_turn_cancel(p->turn, 0);
        } else {
            t->turn = p->turn;
            t->next = c->turns;
            c->turns = t;
            c->nturns++;
            p->turn = NULL; /* the connection owns the reference now */
        }
        conn_pump(srv, c);
        conn_maybe_resume(srv, c);
        break;
    case POST_PUSH:
        if (c == NULL)
            break;
        conn_send(c, p->frame, p->len, 0);
        p->frame = NULL;
        break;
    case POST_TURN_DONE:
        if (c == NULL)
            break;
        for (struct turn_ref **pp = &c->turns; *pp != NULL; pp = &(*pp)->next) {
            if ((*pp)->turn == p->turn) {
                struct turn_ref *dead = *pp;
                *pp = dead->next;
                chat_turn_unref(dead->turn);
                free(dead);
                c->nturns--;
                break;
            }
        }
        break;
    case POST_HTTP:
        http_deliver(srv, p->conn_id, (unsigned)p->aux, p->frame, p->len);
        p->frame = NULL;
        break;
    }
    free(p->frame);
    if (p->turn != NULL)
        chat_turn_unref(p->turn);
    free(p);
}

static void server_drain(struct server *srv)
{
    pthread_mutex_lock(&srv->mu);
    struct post *p = srv->posts_head;
    srv->posts_head = srv->posts_tail = NULL;
    pthread_mutex_unlock(&srv->mu);
    while (p != NULL) {
        struct post *next = p->next;
        server_apply(srv, p);
        p = next;
    }
}

/* --------------------------------------------------------------- callback */

static int is_ws_path(struct lws *wsi)
{
    char uri[64];
    int n = lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI);
    return n > 0 && strcmp(uri, "/ws") == 0;
}

/* The gate of every WebSocket, before any connection state exists: each
 * refusal is an HTTP status the client can act on. Cheap checks go first,
 * so a flood of upgrades costs no HMAC once a cap is reached. */
static int server_confirm_upgrade(struct server *srv, struct lws *wsi)
{
    const struct config *cfg = srv->cfg;
    char addr[PEERS_ADDR_MAX];
    lws_get_peer_simple(wsi, addr, sizeof(addr));
    if (!is_ws_path(wsi))
        return http_refuse(wsi, HTTP_STATUS_NOT_FOUND, "Not Found");
    if (srv->draining)
        return http_refuse(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "Server Shutting Down");
    /* RFC 6455 4.2.2: we speak version 13 only, and say so. */
    char version[8];
    if (lws_hdr_copy(wsi, version, sizeof(version), WSI_TOKEN_VERSION) <= 0 ||
        strcmp(version, "13") != 0) {
        log_info("event=ws_refused status=426 addr=%s reason=version", addr);
        return http_refuse(wsi, 426, "Upgrade Required: Sec-WebSocket-Version 13");
    }

    char origin[256];
    int olen = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (olen >= (int)sizeof(origin) ||
        (olen > 0 && lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0) ||
        !auth_origin_allowed(cfg, olen > 0 ? origin : NULL)) {
        log_info("event=ws_refused status=403 addr=%s reason=origin", addr);
        return http_refuse(wsi, HTTP_STATUS_FORBIDDEN, "Origin Not Allowed");
    }
    if (srv->nconns >= cfg->max_connections) {
        log_warn("event=ws_refused status=503 addr=%s reason=max_connections conns=%d", addr,
                 srv->nconns);
        return http_refuse(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "Too Many Connections");
    }
    if (peers_count(srv->peers, addr) >= cfg->max_connections_per_ip) {
        log_warn("event=ws_refused status=503 addr=%s reason=max_connections_per_ip", addr);
        return http_refuse(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
                           "Too Many Connections From This Address");
    }
    if (auth_required(cfg)) {
        char sub[UUID_STR_LEN + 1];
        const char *why = "";
        if (auth_request(cfg, wsi, 1, sub, &why) != 0) {
            log_info("event=ws_refused status=401 addr=%s reason=\"%s\"", addr, why);
            return http_refuse(wsi, HTTP_STATUS_UNAUTHORIZED, "Unauthorized");
        }
    }
    return 0;
}

/* A connection that passed the gate. Nothing is carried over from
 * server_confirm_upgrade (lws has no per-request state there), so the
 * token is read again: a microsecond of HMAC buys having no side table. */
static int server_established(struct server *srv, struct lws *wsi, struct conn *c)
{
    memset(c, 0, sizeof(*c));
    lws_get_peer_simple(wsi, c->addr, sizeof(c->addr));
    if (auth_required(srv->cfg)) {
        const char *why = "";
        if (auth_request(srv->cfg, wsi, 1, c->user, &why) != 0)
            return -1;
    }
    if (peers_add(srv->peers, c->addr) != 0)
        return -1;
    c->wsi = wsi;
    c->id = ++srv->next_conn_id;
    c->out_limit = (size_t)srv->cfg->max_output_bytes_per_conn;
    c->slow_close_seconds = srv->cfg->slow_reader_close_seconds;
    c->hnext = srv->buckets[c->id % CONN_BUCKETS];
    srv->buckets[c->id % CONN_BUCKETS] = c;
    srv->nconns++;
    log_debug("event=ws_open conn=%llu addr=%s user=%s", (unsigned long long)c->id, c->addr,
              c->user[0] != '\0' ? c->user : "-");
    return 0;
}

static int server_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                           void *in, size_t len)
{
    struct server *srv = lws_context_user(lws_get_context(wsi));
    struct conn *c = user;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* A backstop: server_confirm_upgrade has answered these already. */
        return is_ws_path(wsi) && !srv->draining ? 0 : -1;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return server_confirm_upgrade(srv, wsi);

    case LWS_CALLBACK_ESTABLISHED:
        return server_established(srv, wsi, c);

    case LWS_CALLBACK_RECEIVE:
        if (conn_receive(srv, c, in, len) != 0)
            return -1;
        break;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return conn_writeable(srv, c);

    case LWS_CALLBACK_CLOSED:
        conn_destroy(srv, c);
        break;

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (srv != NULL)
            server_drain(srv);
        break;

    default:
        return http_callback(wsi, reason, user, in, len);
    }
    return 0;
}

static const struct lws_protocols server_protocols[] = {
    /* First, so that upgrades naming no subprotocol (the existing client)
     * bind to it. */
    {"chatd", server_callback, sizeof(struct conn), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ------------------------------------------------------------------- run */

static void server_on_signal(int sig)
{
    (void)sig;
    server_interrupted = 1;
    if (server_signal_ctx != NULL)
        lws_cancel_service(server_signal_ctx);
}

static void lws_log_to_ours(int level, const char *line)
{
    /* lws lines end in a newline; ours add one. */
    int n = (int)strcspn(line, "\n");
    if (level & LLL_ERR)
        log_error("event=lws msg=\"%.*s\"", n, line);
    else
        log_warn("event=lws msg=\"%.*s\"", n, line);
}

/* Wakes lws_service() every 100 ms while draining, so deadlines are
 * checked even when no socket has anything to say. */
static void server_tick(lws_sorted_usec_list_t *sul)
{
    struct server *srv = lws_container_of(sul, struct server, tick);
    lws_sul_schedule(srv->ctx, 0, &srv->tick, server_tick, 100 * LWS_US_PER_MS);
}

static void service_until(struct server *srv, int (*done)(struct server *), int seconds)
{
    time_t deadline = time(NULL) + seconds;
    while (!done(srv) && time(NULL) < deadline)
        if (lws_service(srv->ctx, 0) < 0)
            break;
}

static int no_turns(struct server *srv)
{
    (void)srv;
    return chat_active_turns() == 0;
}

static int no_conns(struct server *srv) { return srv->nconns == 0; }

/* SIGTERM/SIGINT: refuse new connections and turns, let the turns in
 * flight finish within SHUTDOWN_GRACE_SECONDS, then close every connection
 * with 1001 (going away) once its queued replies are written. */
static void server_shutdown(struct server *srv)
{
    srv->draining = 1;
    log_info("event=shutting_down turns=%d conns=%d grace_s=%d", chat_active_turns(),
             srv->nconns, srv->cfg->shutdown_grace_seconds);
    server_tick(&srv->tick);
    service_until(srv, no_turns, srv->cfg->shutdown_grace_seconds);
    for (int b = 0; b < CONN_BUCKETS; b++)
        for (struct conn *c = srv->buckets[b]; c != NULL; c = c->hnext)
            conn_close_after_flush(c, LWS_CLOSE_STATUS_GOINGAWAY);
    service_until(srv, no_conns, 3);
    lws_sul_schedule(srv->ctx, 0, &srv->tick, NULL, LWS_SET_TIMER_USEC_CANCEL);
    log_info("event=shutdown_done turns_left=%d conns_left=%d", chat_active_turns(), srv->nconns);
}

int server_run(const struct config *cfg)
{
    int rc = 1;
    struct server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return 1;
    srv->cfg = cfg;
    srv->limits.max_chat_message_bytes = (size_t)cfg->max_chat_message_bytes;
    pthread_mutex_init(&srv->mu, NULL);

    char target[300];
    snprintf(target, sizeof(target), "%s:%d", cfg->ai_server_host, cfg->ai_server_port);
    srv->agent = agent_client_create(target, cfg->ai_timeout_seconds);
    if (srv->agent == NULL) {
        log_error("event=agent_client_failed target=%s", target);
        goto out;
    }
    srv->peers = peers_create();
    if (srv->peers == NULL)
        goto out;
    /* Listening before the first worker reads a copy; until it listens,
     * every copy counts as stale. */
    srv->inval = inval_start(cfg);
    if (srv->inval == NULL)
        goto out;
    srv->pool = pool_create(cfg, cfg->worker_threads, srv, srv->inval);
    if (srv->pool == NULL)
        goto out;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);

    static const lws_retry_bo_t retry_unused = {0};
    lws_retry_bo_t retry = retry_unused;
    retry.secs_since_valid_ping = (uint16_t)cfg->ws_ping_seconds;
    retry.secs_since_valid_hangup = (uint16_t)(cfg->ws_ping_seconds * 2);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = cfg->server_port;
    info.iface = cfg->server_host;
    info.protocols = server_protocols;
    info.user = srv;
    info.retry_and_idle_policy = &retry;
    info.options = LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE |
                   LWS_SERVER_OPTION_DISABLE_IPV6;
    info.count_threads = 1;
    info.fd_limit_per_thread = 0;
    /* Room for a bearer token of AUTH_TOKEN_MAX bytes and the usual
     * headers; more than this and lws drops the request unanswered. */
    info.max_http_header_data = 8192;
    http_configure(&info, srv);

    srv->ctx = lws_create_context(&info);
    if (srv->ctx == NULL) {
        log_error("event=listen_failed host=%s port=%d", cfg->server_host, cfg->server_port);
        goto out;
    }
    pthread_mutex_lock(&srv->mu);
    srv->wake_ctx = srv->ctx;
    pthread_mutex_unlock(&srv->mu);
    log_info("event=listening host=%s port=%d workers=%d auth=%s", cfg->server_host,
             cfg->server_port, cfg->worker_threads, cfg->auth_mode);
    if (!auth_required(cfg) && !auth_host_is_loopback(cfg->server_host))
        log_warn("event=auth_disabled host=%s msg=\"AUTH_MODE=none on a non-loopback address: "
                 "any client that can reach chatd can act as any user; set AUTH_MODE=jwt\"",
                 cfg->server_host);

    server_signal_ctx = srv->ctx;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = server_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    while (!server_interrupted) {
        if (lws_service(srv->ctx, 0) < 0)
            break;
    }
    server_shutdown(srv);
    rc = 0;

out:
    if (srv->ctx != NULL) {
        server_signal_ctx = NULL;
        pthread_mutex_lock(&srv->mu);
        srv->wake_ctx = NULL;
        pthread_mutex_unlock(&srv->mu);
        lws_context_destroy(srv->ctx); /* closes what is left: cancels turns */
    }
    /* Turns cancelled by those closes end through the pool and the agent
     * client, so both must outlive them. */
    for (int i = 0; chat_active_turns() > 0; i++) {
        if (i == 100) {
            log_error("event=shutdown_stuck turns=%d", chat_active_turns());
            return 1; /* leave the rest to the kernel rather than free live state */
        }
        usleep(100 * 1000);
    }
    if (srv->agent != NULL)
        agent_client_destroy(srv->agent);
    pool_destroy(srv->pool);
    inval_stop(srv->inval);
    pthread_mutex_lock(&srv->mu);
    struct post *p = srv->posts_head;
    srv->posts_head = srv->posts_tail = NULL;
    pthread_mutex_unlock(&srv->mu);
    while (p != NULL) {
        struct post *next = p->next;
        free(p->frame);
        if (p->turn != NULL)
            chat_turn_unref(p->turn);
        free(p);
        p = next;
    }
    pthread_mutex_destroy(&srv->mu);
    peers_destroy(srv->peers);
    free(srv);
    return rc;
}
