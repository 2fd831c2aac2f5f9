/* wsclient.h - the libwebsockets client plumbing the WebSocket load
 * generators in bench/ (wsbench, soak) share: the clock, ws:// URL parsing,
 * the open-file limit, the one-thread client context, a connect call,
 * reassembly of fragmented reply frames, and a pool of N connections on that
 * one thread (paced handshakes, the lws callback, the count of connections
 * that failed, opened or were closed by chatd, the ticking service loop).
 * What a program does with a reply or a writable connection stays its own,
 * behind the pool's hooks. Header-only: each .c in bench/ is its own
 * program; every function takes the program's name for messages. */
#ifndef CHATD_BENCH_WSCLIENT_H
#define CHATD_BENCH_WSCLIENT_H

#include <libwebsockets.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static inline uint64_t ws_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double ws_secs_since(uint64_t t) { return (double)(ws_now_ns() - t) / 1e9; }

/* Wall-clock microseconds: comparable across processes on one machine
 * (an agent's stamp, a client's receive time). */
static inline uint64_t ws_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

__attribute__((noreturn)) static inline void ws_die(const char *prog, const char *msg)
{
    fprintf(stderr, "%s: %s\n", prog, msg);
    exit(2);
}

struct ws_url {
    char host[256], path[256];
    int port;
};

/* ws://host[:port][/path], nothing fancier; exits on anything else. */
static inline void ws_parse_url(const char *prog, const char *url, struct ws_url *u)
{
    if (strncmp(url, "ws://", 5) != 0)
        ws_die(prog, "--url must start with ws:// (no TLS here)");
    const char *h = url + 5;
    const char *slash = strchr(h, '/');
    const char *colon = strchr(h, ':');
    if (colon != NULL && slash != NULL && colon > slash)
        colon = NULL;
    size_t hl = colon != NULL   ? (size_t)(colon - h)
                : slash != NULL ? (size_t)(slash - h)
                                : strlen(h);
    if (hl == 0 || hl >= sizeof(u->host))
        ws_die(prog, "bad host in --url");
    memcpy(u->host, h, hl);
    u->host[hl] = '\0';
    u->port = colon != NULL ? atoi(colon + 1) : 80;
    snprintf(u->path, sizeof(u->path), "%s", slash != NULL ? slash : "/");
}

/* Text from the command line goes into JSON unescaped, so refuse what would
 * need escaping. */
static inline void ws_check_plain(const char *prog, const char *name, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == '"' || *p == '\\' || *p < 0x20) {
            fprintf(stderr, "%s: %s must not contain quotes, backslashes or control characters\n",
                    prog, name);
            exit(2);
        }
}

/* Room for `need` sockets plus some: raises the soft limit up to the hard
 * one (and the hard one too when we may). */
static inline void ws_raise_nofile(const char *prog, int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)need + 256;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want) {
        rl.rlim_max = want; /* works as root; otherwise the soft raise below caps */
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want)
        fprintf(stderr, "%s: RLIMIT_NOFILE is %llu, %d connections may not fit\n", prog,
                (unsigned long long)rl.rlim_cur, need);
}

/* One service thread, no listener, sized from RLIMIT_NOFILE (raise it first);
 * `user` is what lws_context_user() returns. libev, as chatd uses: with
 * thousands of sockets, lws's default poll() loop would make the client
 * the bottleneck it is measuring. *pctx is set, and NULLed when lws frees
 * the context. */
static inline void ws_client_context(const char *prog, const struct lws_protocols *protocols,
                                     int verbose, void *user, struct lws_context **pctx)
{
    lws_set_log_level(verbose ? LLL_ERR | LLL_WARN : LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6 | LWS_SERVER_OPTION_LIBEV;
    info.count_threads = 1;
    info.fd_limit_per_thread = 0; /* 0: sized from RLIMIT_NOFILE */
    info.user = user;
    info.pcontext = pctx;
    if ((*pctx = lws_create_context(&info)) == NULL)
        ws_die(prog, "lws_create_context failed (is libwebsockets-evlib-ev installed?)");
}

/* Starts a handshake to u with protocol `proto`; *pwsi is set (or cleared
 * on failure) by lws. NULL when it failed at once, in which case the
 * connection-error callback may or may not have run. */
static inline struct lws *ws_connect(struct lws_context *ctx, const struct ws_url *u,
                                     const char *proto, void *opaque, struct lws **pwsi)
{
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof(i));
    i.context = ctx;
    i.address = u->host;
    i.port = u->port;
    i.path = u->path;
    i.host = u->host;
    i.origin = u->host;
    i.ietf_version_or_minus_one = -1;
    i.local_protocol_name = proto;
    i.opaque_user_data = opaque;
    i.pwsi = pwsi;
    return lws_client_connect_via_info(&i);
}

/* Sends scratch[LWS_PRE, LWS_PRE + len) as one text frame; -1 when the
 * write failed. len 0 means the request did not fit the scratch: fatal. */
static inline int ws_send_text(const char *prog, struct lws *wsi, unsigned char *scratch,
                               size_t len)
{
    if (len == 0)
        ws_die(prog, "request too long");
    /* Client frames are masked in place, hence the scratch copy per write. */
    return lws_write(wsi, scratch + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len ? -1 : 0;
}

/* Reassembles one incoming message from its fragments. A message over
 * `max` bytes is not kept (dropped = 1) but still ends normally. */
struct ws_rx {
    char *buf;
    size_t len, cap;
    int dropped;
};

/* Feeds a RECEIVE callback's bytes; 1 when the message is complete: then
 * buf/len (or dropped) hold it until ws_rx_done. 0: more to come. -1: out
 * of memory. */
static inline int ws_rx_feed(struct ws_rx *rx, struct lws *wsi, const void *in, size_t len,
                             size_t max)
{
    if (lws_is_first_fragment(wsi)) {
        rx->len = 0;
        rx->dropped = 0;
    }
    if (!rx->dropped) {
        size_t want = rx->len + len;
        if (want > max) {
            rx->dropped = 1;
        } else {
            if (want > rx->cap) {
                size_t cap = rx->cap ? rx->cap : 1024;
                while (cap < want)
                    cap *= 2;
                char *grown = realloc(rx->buf, cap);
                if (grown == NULL)
                    return -1;
                rx->buf = grown;
                rx->cap = cap;
            }
            memcpy(rx->buf + rx->len, in, len);
            rx->len = want;
        }
    }
    return lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
}

/* After a complete message: forget it; an idle connection keeps no big
 * buffer. */
static inline void ws_rx_done(struct ws_rx *rx)
{
    rx->len = 0;
    if (rx->cap > 64 * 1024) {
        free(rx->buf);
        rx->buf = NULL;
        rx->cap = 0;
    }
}

static inline void ws_rx_free(struct ws_rx *rx)
{
    free(rx->buf);
    rx->buf = NULL;
    rx->len = rx->cap = 0;
}

/* ------------------------------------------------------ connection pool */

/* N connections on the one service thread, opened at most `ramp`
 * handshakes at a time. One copy, so that wsbench's connect_failed and
 * closed_by_server and soak's pass/fail count a death the same way: once,
 * whichever lws callback reports it first. */

/* Set by SIGINT and SIGTERM once ws_pool_init ran; the programs' phase
 * machines wind down when they see it. */
static volatile sig_atomic_t ws_interrupted;

static inline void ws_on_signal(int sig)
{
    (void)sig;
    ws_interrupted = 1;
}

enum ws_state { WS_NEW, WS_CONNECTING, WS_OPEN, WS_DEAD };

/* The pool's part of a connection, a member of each program's own struct
 * conn (lws_container_of gets back from it). */
struct ws_conn {
    struct lws *wsi;
    enum ws_state state;
    int closing; /* we asked for the close */
    struct ws_rx rx;
};

/* What each program does itself, called from the pool's lws callback. */
struct ws_hooks {
    /* A whole reply arrived on wc; frame is NULL when it was over max_frame. */
    void (*on_frame)(struct ws_conn *wc, const char *frame, size_t len);
    /* wc, not closing, may write; returns what the lws callback returns. */
    int (*on_writeable)(struct ws_conn *wc);
    /* wc is gone, in state `was` before; the pool's counts already say so. */
    void (*on_dead)(struct ws_conn *wc, enum ws_state was);
    /* chatd closed wc unasked: say so (the first three, or all if verbose). */
    void (*say_closed)(struct ws_conn *wc);
};

struct ws_pool {
    /* Set by the program before ws_pool_init. */
    const char *prog; /* for messages, and the subprotocol's name */
    const struct ws_hooks *hooks;
    struct ws_url url;
    /* Optional: the address of connection k (several instances from one
     * pool); NULL: url for all. */
    const struct ws_url *(*url_for)(const struct ws_pool *p, int k);
    int n;    /* connections */
    int ramp; /* handshakes in progress at most */
    int verbose;
    size_t max_frame; /* a longer reply is counted, not kept */

    /* The pool's own. */
    struct lws_context *ctx;
    struct lws_protocols protocols[2];
    char *conns; /* n program structs of `stride` bytes, each holding a ws_conn */
    size_t stride, member;
    lws_sorted_usec_list_t tick;
    int (*step)(void);
    int tick_us, done;
    /* Handshakes started, in progress; open now, ever; connects that
     * failed; open connections chatd closed before we asked. */
    int next_conn, connecting, open, ever_open, failed, closed_by_peer;
};

static inline struct ws_conn *ws_pool_conn(struct ws_pool *p, int k)
{
    return (struct ws_conn *)(p->conns + (size_t)k * p->stride + p->member);
}

/* Room for p->n connections: the open-file limit, and the program's array
 * of p->n zeroed structs of `stride` bytes, each with its struct ws_conn at
 * offset `member`. Also ignores SIGPIPE and routes SIGINT and SIGTERM to
 * ws_interrupted. Returns the array. */
static inline void *ws_pool_init(struct ws_pool *p, size_t stride, size_t member)
{
    ws_raise_nofile(p->prog, p->n);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, ws_on_signal);
    signal(SIGTERM, ws_on_signal);
    p->stride = stride;
    p->member = member;
    p->conns = calloc((size_t)p->n, stride);
    if (p->conns == NULL)
        ws_die(p->prog, "out of memory");
    return p->conns;
}

/* The one place a connection dies: counted once, whichever of the error,
 * closed or destroy callbacks (or a failed connect call) comes first. */
static inline void ws_conn_dead(struct ws_pool *p, struct ws_conn *wc)
{
    enum ws_state was = wc->state;
    if (was == WS_CONNECTING) {
        p->connecting--;
        p->failed++;
    } else if (was == WS_OPEN) {
        p->open--;
        if (!wc->closing)
            p->closed_by_peer++;
    }
    p->hooks->on_dead(wc, was);
    wc->state = WS_DEAD;
    wc->wsi = NULL;
}

static inline int ws_pool_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                                   void *in, size_t len)
{
    (void)user;
    struct ws_conn *wc = wsi != NULL ? lws_get_opaque_user_data(wsi) : NULL;
    if (wc == NULL)
        return 0;
    struct ws_pool *p = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        p->connecting--;
        p->open++;
        p->ever_open++;
        wc->state = WS_OPEN;
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (p->verbose || p->failed < 3)
            fprintf(stderr, "%s: connect failed: %s\n", p->prog, in ? (const char *)in : "?");
        ws_conn_dead(p, wc);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        int whole = ws_rx_feed(&wc->rx, wsi, in, len, p->max_frame);
        if (whole < 0)
            ws_die(p->prog, "out of memory");
        if (whole) {
            p->hooks->on_frame(wc, wc->rx.dropped ? NULL : wc->rx.buf, wc->rx.len);
            ws_rx_done(&wc->rx);
        }
        break;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (wc->closing) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
            return -1;
        }
        return p->hooks->on_writeable(wc);
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!wc->closing && (p->verbose || p->closed_by_peer < 3))
            p->hooks->say_closed(wc);
        ws_conn_dead(p, wc);
        break;
    case LWS_CALLBACK_WSI_DESTROY:
        /* Backstop: a wsi that went away without either callback above. */
        if ((wc->state == WS_CONNECTING || wc->state == WS_OPEN) && wc->wsi == wsi)
            ws_conn_dead(p, wc);
        break;
    default:
        break;
    }
    return 0;
}

/* Starts handshakes in order until p->ramp are in progress or all were
 * started; call it every tick of the connect phase. */
static inline void ws_pool_connect_more(struct ws_pool *p)
{
    while (p->next_conn < p->n && p->connecting < p->ramp) {
        struct ws_conn *wc = ws_pool_conn(p, p->next_conn++);
        wc->state = WS_CONNECTING;
        p->connecting++;
        const struct ws_url *u = p->url_for != NULL ? p->url_for(p, p->next_conn - 1) : &p->url;
        if (ws_connect(p->ctx, u, p->prog, wc, &wc->wsi) == NULL && wc->state == WS_CONNECTING) {
            /* Failed at once; the error callback may or may not have run. */
            ws_conn_dead(p, wc);
        }
    }
}

/* Every handshake was started and has ended, one way or the other. */
static inline int ws_pool_all_tried(const struct ws_pool *p)
{
    return p->next_conn == p->n && p->connecting == 0;
}

/* Asks every open connection to close (a normal close from WRITEABLE). */
static inline void ws_pool_close_all(struct ws_pool *p)
{
    for (int k = 0; k < p->n; k++) {
        struct ws_conn *wc = ws_pool_conn(p, k);
        if (wc->state == WS_OPEN) {
            wc->closing = 1;
            lws_callback_on_writable(wc->wsi);
        }
    }
}

/* The client context, with the pool's one protocol (named p->prog). */
/* The close of a run: asks every connection to close, noting when. */
#define WS_CLOSE_WAIT_S 5
static inline void ws_pool_close_begin(struct ws_pool *p, uint64_t *asked_ns)
{
    *asked_ns = ws_now_ns();
    ws_pool_close_all(p);
}

/* 1 once every connection has closed, or WS_CLOSE_WAIT_S after asking. */
static inline int ws_pool_close_done(const struct ws_pool *p, uint64_t asked_ns)
{
    return p->open == 0 || ws_secs_since(asked_ns) >= WS_CLOSE_WAIT_S;
}

static inline void ws_pool_start(struct ws_pool *p)
{
    p->protocols[0].name = p->prog;
    p->protocols[0].callback = ws_pool_callback;
    ws_client_context(p->prog, p->protocols, p->verbose, p, &p->ctx);
}

/* The libev loop runs until the context is destroyed from inside it
 * (lws's way to stop an event-library loop), so the last tick does that:
 * it closes every socket of ours and breaks the loop. */
static inline void ws_pool_on_tick(lws_sorted_usec_list_t *sul)
{
    struct ws_pool *p = lws_container_of(sul, struct ws_pool, tick);
    if (p->step()) {
        p->done = 1;
        lws_context_destroy(p->ctx);
        return;
    }
    lws_sul_schedule(p->ctx, 0, &p->tick, ws_pool_on_tick, p->tick_us);
}

/* Services the pool, calling `step` now and every tick_us microseconds,
 * until step returns nonzero; then the context is gone. */
static inline void ws_pool_run(struct ws_pool *p, int (*step)(void), int tick_us)
{
    p->step = step;
    p->tick_us = tick_us;
    ws_pool_on_tick(&p->tick);
    while (!p->done && p->ctx != NULL)
        if (lws_service(p->ctx, 0) < 0)
            break;
    if (p->ctx != NULL)
        lws_context_destroy(p->ctx); /* frees it, and NULLs p->ctx */
}

static inline void ws_pool_free(struct ws_pool *p)
{
    for (int k = 0; k < p->n; k++)
        ws_rx_free(&ws_pool_conn(p, k)->rx);
    free(p->conns);
    p->conns = NULL;
}

#endif
