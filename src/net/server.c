/* server.c - the libwebsockets context and its one service thread: the
 * protocol callback that routes to the gate, the connections and HTTP,
 * the outbox drained when a worker wakes us, signals and shutdown.
 *
 * Shape (as in lws minimal-examples/ws-server-threads): one protocol
 * table with one callback; other threads post to the outbox and call
 * lws_cancel_service(), which brings us to LWS_CALLBACK_EVENT_WAIT_CANCELLED
 * on this thread, where the posts are applied. */
#include "net/server.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/config.h"
#include "lib/log.h"
#include "net/bearer.h"
#include "net/conn.h"
#include "net/gate.h"
#include "net/http.h"
#include "net/peers.h"
#include "net/shutdown.h"
#include "wire/auth.h"
#include "work/app.h"
#include "work/outbox.h"
#include "work/turn.h"

/* What one request's headers may take, in all (see max_http_header_data). */
#define SERVER_HEADER_BYTES 16384

struct server {
    struct app *app;
    struct lws_context *ctx; /* NULLed by lws when it frees the context */
    struct conns conns;      /* the WebSocket connections (net/conn.c) */
    struct http_state http;  /* HTTP transactions waiting for a worker */
    lws_sorted_usec_list_t tick;
    lws_sorted_usec_list_t keepalive;
    struct shutdown stop; /* its phases (net/shutdown.h) */
};

static volatile sig_atomic_t server_interrupted;
static struct lws_context *server_signal_ctx;

/* --------------------------------------------------------------- outbox */

/* Any thread, under the outbox's lock (so never after the context went:
 * outbox_set_wake(NULL) comes first). */
static void server_wake(void *arg) { lws_cancel_service(arg); }

static void server_drain(struct server *srv)
{
    struct outbox_post *p = outbox_take(srv->app->outbox);
    conn_hold_writes(&srv->conns);
    while (p != NULL) {
        struct outbox_post *next = p->next;
        if (p->kind == OUTBOX_HTTP) {
            txn_deliver(&srv->http.txns, p->id, p->outcome, p->frame, p->len);
            p->frame = NULL;
        } else if (p->kind == OUTBOX_EXPORT) {
            txn_deliver_export(&srv->http.txns, p->id, p->outcome, p->frame, p->len, p->last,
                               p->held);
            p->frame = NULL;
            p->held = NULL;
        } else {
            conn_apply(&srv->conns, p);
        }
        outbox_post_free(p);
        p = next;
    }
    conn_write_held(&srv->conns);
}

/* ------------------------------------------------------------- callback */

static void server_begin_shutdown(struct server *srv);

/* A connection that passed the gate. Nothing is carried over from
 * gate_check (lws has no per-request state there), so the token is read
 * again: a microsecond of HMAC buys having no side table. */
static int server_established(struct server *srv, struct lws *wsi, struct conn *c)
{
    memset(c, 0, sizeof(*c));
    const struct config *cfg = srv->app->cfg;
    peers_client_addr(cfg, wsi, c->addr);
    if (auth_required(cfg)) {
        const char *why = "";
        if (bearer_check(cfg, wsi, 1, c->user, &why) != 0)
            return -1;
    }
    return conn_open(&srv->conns, wsi, c);
}

static int server_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    struct server *srv = lws_context_user(lws_get_context(wsi));
    struct conn *c = user;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* A backstop: gate_check has answered these already. */
        return gate_is_ws_path(wsi) && !srv->conns.draining ? 0 : -1;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return gate_check(&srv->conns, wsi);

    case LWS_CALLBACK_ESTABLISHED:
        return server_established(srv, wsi, c);

    case LWS_CALLBACK_RECEIVE:
        return conn_receive(&srv->conns, c, in, len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return conn_writeable(&srv->conns, c);

    case LWS_CALLBACK_RECEIVE_PONG:
        conn_heard(c);
        return 0;

    case LWS_CALLBACK_CLOSED:
        conn_close(&srv->conns, c);
        return 0;

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (srv != NULL && srv->stop.phase != SHUTDOWN_STOPPED) {
            server_drain(srv);
            if (server_interrupted)
                server_begin_shutdown(srv);
        }
        return 0;

    default:
        return http_callback(&srv->http, wsi, reason, user, in, len);
    }
}

static const struct lws_protocols server_protocols[] = {
    /* First, so that upgrades naming no subprotocol (the existing client)
     * bind to it. */
    {"chatd", server_callback, sizeof(struct conn), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ------------------------------------------------------------------ run */

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

/* SIGTERM/SIGINT: refuse new connections and turns, let the turns in
 * flight finish within SHUTDOWN_GRACE_SECONDS, then close every connection
 * with 1001 (going away) once its queued replies are written, then end the
 * loop. A state machine stepped by a 100 ms timer on the service thread,
 * because the event loop (libev) runs until it is told to stop: nothing
 * runs between its wake-ups the way it did around lws_service() with poll. */
static void server_tick(lws_sorted_usec_list_t *sul)
{
    struct server *srv = lws_container_of(sul, struct server, tick);
    /* Counted before the outbox is drained: a turn posts its last frame
     * before it stops counting, so once it is not counted here its frame
     * is delivered below, before any close. */
    int turns = turn_active();
    server_drain(srv);
    for (;;) {
        switch (shutdown_step(&srv->stop, time(NULL), turns, srv->conns.n)) {
        case SHUTDOWN_WAIT:
            lws_sul_schedule(srv->ctx, 0, &srv->tick, server_tick, 100 * LWS_US_PER_MS);
            return;
        case SHUTDOWN_CLOSE_ALL:
            conn_close_all(&srv->conns, LWS_CLOSE_STATUS_GOINGAWAY);
            continue;
        case SHUTDOWN_STOP:
            log_info("event=shutdown_done turns_left=%d conns_left=%d", turn_active(),
                     srv->conns.n);
            lws_sul_schedule(srv->ctx, 0, &srv->keepalive, NULL, LWS_SET_TIMER_USEC_CANCEL);
            /* Workers must not wake a context that is going. */
            server_signal_ctx = NULL;
            outbox_set_wake(srv->app->outbox, NULL, NULL);
            /* lws's way to end an event-library loop from inside it: the
             * first destroy closes what is left (cancelling turns) and
             * breaks the loop; server_run's second one frees the context. */
            lws_context_destroy(srv->ctx);
            return;
        }
    }
}

/* Once a second, for as long as the loop runs (conn.h says why not lws's). */
static void server_keepalive(lws_sorted_usec_list_t *sul)
{
    struct server *srv = lws_container_of(sul, struct server, keepalive);
    conn_keepalive(&srv->conns, srv->app->cfg->ws_ping_seconds);
    lws_sul_schedule(srv->ctx, 0, &srv->keepalive, server_keepalive, LWS_US_PER_SEC);
}

static void server_begin_shutdown(struct server *srv)
{
    if (!shutdown_begin(&srv->stop, time(NULL), srv->app->cfg->shutdown_grace_seconds))
        return;
    srv->conns.draining = 1;
    log_info("event=shutting_down turns=%d conns=%d grace_s=%d", turn_active(), srv->conns.n,
             srv->app->cfg->shutdown_grace_seconds);
    server_tick(&srv->tick);
}

int server_run(struct app *app)
{
    const struct config *cfg = app->cfg;
    int rc = 1;
    struct server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return 1;
    srv->app = app;
    srv->http.app = app;
    srv->http.conns = &srv->conns;
    srv->conns.app = app;
    if ((srv->conns.peers = peers_create()) == NULL)
        goto out;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);

    /* No lws "validity" pings (both 0): conn_keepalive does them. */
    static const lws_retry_bo_t retry = {0};

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = cfg->server_port;
    info.iface = cfg->server_host;
    info.protocols = server_protocols;
    info.user = srv;
    info.retry_and_idle_policy = &retry;
    /* libev: the kernel (epoll) reports which sockets are ready. lws's
     * default poll() loop scans every socket at every wake-up, which at
     * 10,000 connections took 98 % of chatd's CPU (docs/BENCHMARKS.md,
     * "Ten thousand connections"). Debian ships it as the plugin
     * libwebsockets-evlib-ev, which lws loads when the context is made. */
    info.options = LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE |
                   LWS_SERVER_OPTION_DISABLE_IPV6 | LWS_SERVER_OPTION_LIBEV;
    info.pcontext = &srv->ctx;
    info.count_threads = 1;
    info.fd_limit_per_thread = 0;
    /* Room for a refused token several times AUTH_TOKEN_MAX beside the
     * usual headers, so that it is answered 401 like any other bad token
     * (a 9 KB one used to be dropped). Past SERVER_HEADER_BYTES lws drops
     * the request unanswered: it has no way to send a 431. The buffer
     * lives only while a request's headers are parsed. */
    info.max_http_header_data = SERVER_HEADER_BYTES;
    if (http_configure(&info, &srv->http) != 0)
        goto out;

    srv->ctx = lws_create_context(&info);
    if (srv->ctx == NULL) {
        log_error("event=listen_failed host=%s port=%d msg=\"the port is taken, or lws's libev "
                  "plugin (Debian: libwebsockets-evlib-ev) is missing; lws's own line above says "
                  "which\"",
                  cfg->server_host, cfg->server_port);
        goto out;
    }
    outbox_set_wake(app->outbox, server_wake, srv->ctx);
    server_keepalive(&srv->keepalive);
    /* Posts made before we were listening (none today) are not lost. */
    lws_cancel_service(srv->ctx);
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
    /* After the context: this replaces the SIGINT watcher lws's libev loop
     * installed (which would break the loop at once, with no drain). */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* With libev, one call runs the loop until server_tick ends it; the
     * loop around it only matters if something else breaks the loop. */
    while (srv->stop.phase != SHUTDOWN_STOPPED && srv->ctx != NULL)
        if (lws_service(srv->ctx, 0) < 0)
            break;
    rc = 0;

out:
    if (srv->ctx != NULL) {
        server_signal_ctx = NULL;
        outbox_set_wake(app->outbox, NULL, NULL);
        /* After server_tick's destroy this one frees the context; on the
         * error paths it also closes what is left. */
        lws_context_destroy(srv->ctx);
    }
    txn_clear_all(&srv->http.txns);
    peers_destroy(srv->conns.peers);
    free(srv);
    return rc;
}
