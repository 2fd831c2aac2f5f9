/* wsclient.h - the libwebsockets client plumbing the WebSocket load
 * generators in bench/ (wsbench, soak) share: the clock, ws:// URL parsing,
 * the open-file limit, the one-thread client context, a connect call, and
 * reassembly of fragmented reply frames. Header-only: each .c in bench/ is
 * its own program; every function takes the program's name for messages. */
#ifndef CHATD_BENCH_WSCLIENT_H
#define CHATD_BENCH_WSCLIENT_H

#include <libwebsockets.h>
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

/* One service thread, no listener, sized from RLIMIT_NOFILE (raise it first). */
static inline struct lws_context *
ws_client_context(const char *prog, const struct lws_protocols *protocols, int verbose)
{
    lws_set_log_level(verbose ? LLL_ERR | LLL_WARN : LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    info.count_threads = 1;
    info.fd_limit_per_thread = 0; /* 0: sized from RLIMIT_NOFILE */
    struct lws_context *ctx = lws_create_context(&info);
    if (ctx == NULL)
        ws_die(prog, "lws_create_context failed");
    return ctx;
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

#endif
