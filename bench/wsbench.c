/* wsbench.c - closed-loop WebSocket load generator for chatd.
 *
 * Many connections on ONE libwebsockets client thread, each with exactly
 * one request in flight (send, wait for the reply, send the next), so the
 * figure is chatd's and not a client thread pool's. Latency is measured per
 * request with CLOCK_MONOTONIC from lws_write() to the last fragment of the
 * reply. One result line:
 *
 *   code=C conns=N requests=R errors=E rps=X p50_us=Y p99_us=Z [extras]
 *
 *   wsbench --url ws://127.0.0.1:8000/ws --user UUID --code 0 --conns 16 --seconds 5
 *   wsbench ... --code 3 --session NEW|PERCONN|<uuid> [--message TEXT]
 *   wsbench ... --code 3 --session NEW --conns 2000 --once      (one turn each)
 *   wsbench --url ... --idle 1000 --hold 10                    (memory figure)
 *
 * PERCONN: each connection's first turn opens a session (NEW) and the rest
 * continue it, the realistic "one conversation per client" pattern. Turns
 * on one session are serialized by chatd by design, so many connections on
 * one <uuid> measure that queue, not throughput.
 *
 * Every connection is established before the first request is sent, so
 * handshakes never overlap the measured window. Figures are printed, never
 * asserted. */
#include <errno.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "measure.h"
#include "wsclient.h"

#define WSB_MAX_FRAME (16u * 1024 * 1024) /* larger replies are counted, not kept */
#define WSB_SCRATCH 4096                  /* one outgoing request */
#define WSB_TICK_US (10 * 1000)

enum conn_state { CS_NEW, CS_CONNECTING, CS_OPEN, CS_DEAD };

struct conn {
    struct lws *wsi;
    enum conn_state state;
    int failed;       /* never established */
    int closing;      /* we asked for the close */
    int want_send;    /* a request waits for WRITEABLE */
    int inflight;     /* a request was written, no reply yet */
    int in_window;    /* the in-flight request was sent while measuring */
    int sent;         /* requests sent, for --once */
    uint64_t t_send;  /* ns */
    char session[40]; /* PERCONN: the session this connection continues */
    struct ws_rx rx;  /* a frame over WSB_MAX_FRAME is counted, not kept */
};

enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_HOLD, PH_CLOSE, PH_DONE };

static struct {
    /* options */
    struct ws_url url;
    int conns, code, once, idle;
    double seconds, warmup, hold, timeout;
    long long requests; /* 0: by time */
    const char *user, *session, *message, *model;
    int ramp; /* handshakes in progress at most */
    int verbose;

    struct lws_context *ctx;
    struct conn *c;
    lws_sorted_usec_list_t tick;
    enum phase phase;
    uint64_t t_phase; /* when the current phase began, ns */
    uint64_t t_measure, t_measure_end, t_last_reply;

    int next_conn, connecting, open, ever_open, failed, closed_by_peer;
    long long issued; /* requests sent while measuring (--requests) */
    long long done, errors, frames_ignored;
    int unanswered; /* in flight when we closed, or lost with a connection */
    int errors_shown;

    struct latency lat;
    unsigned char scratch[LWS_PRE + WSB_SCRATCH];
} B;

static volatile sig_atomic_t interrupted;

static void die(const char *msg) { ws_die("wsbench", msg); }

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr,
            "usage: wsbench --url ws://HOST:PORT/PATH --user UUID --code 0|1|2|5|6|3\n"
            "               [--conns N] [--seconds S | --requests N | --once] [--warmup S]\n"
            "               [--session NEW|PERCONN|UUID] [--message TEXT] [--model NAME]\n"
            "               [--timeout S] [--ramp N] [--verbose]\n"
            "       wsbench --url ... --idle N --hold S\n");
    exit(2);
}

/* ------------------------------------------------------------- recording */

static void record(uint64_t ns) { latency_add(&B.lat, ns); }

/* -------------------------------------------------------------- requests */

/* Builds the next request of c into B.scratch after LWS_PRE; returns its
 * length. Fields come from the command line, checked to need no escaping. */
static size_t build_request(struct conn *c)
{
    char *out = (char *)B.scratch + LWS_PRE;
    int n;
    if (B.code == 3) {
        const char *sid = B.session;
        if (strcmp(B.session, "PERCONN") == 0)
            sid = c->session[0] ? c->session : "NEW";
        n = snprintf(out, WSB_SCRATCH,
                     "{\"type\":3,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\","
                     "\"model_name\":\"%s\",\"message\":\"%s\",\"session_prompt\":\"\","
                     "\"file_name\":\"\"}}",
                     B.user, sid, B.model, B.message);
    } else if (B.code == 2) {
        n = snprintf(out, WSB_SCRATCH,
                     "{\"type\":2,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\"}}", B.user,
                     B.session);
    } else {
        n = snprintf(out, WSB_SCRATCH, "{\"type\":%d,\"data\":{\"user_id\":\"%s\"}}", B.code,
                     B.user);
    }
    return n > 0 && n < WSB_SCRATCH ? (size_t)n : 0;
}

static int may_send(struct conn *c)
{
    if (B.phase != PH_WARMUP && B.phase != PH_MEASURE)
        return 0;
    if (B.once && c->sent > 0)
        return 0;
    if (B.phase == PH_MEASURE && B.requests > 0 && B.issued >= B.requests)
        return 0;
    return 1;
}

static void conn_kick(struct conn *c)
{
    if (c->state != CS_OPEN || c->inflight || c->want_send || c->closing || !may_send(c))
        return;
    c->want_send = 1;
    lws_callback_on_writable(c->wsi);
}

static int conn_write(struct conn *c)
{
    if (c->closing) {
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    if (!c->want_send)
        return 0;
    c->want_send = 0;
    if (!may_send(c)) /* the phase moved on while we waited */
        return 0;
    size_t len = build_request(c);
    if (len == 0)
        die("request too long");
    c->in_window = B.phase == PH_MEASURE;
    if (c->in_window)
        B.issued++;
    c->sent++;
    c->inflight = 1;
    c->t_send = ws_now_ns();
    /* Client frames are masked in place, hence the scratch copy per write. */
    if (lws_write(c->wsi, B.scratch + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len) {
        fprintf(stderr, "wsbench: write failed\n");
        return -1;
    }
    return 0;
}

static void show_error(const char *frame, size_t len)
{
    if (B.errors_shown >= 3)
        return;
    B.errors_shown++;
    fprintf(stderr, "wsbench: error reply: %.*s\n", (int)(len > 300 ? 300 : len), frame);
}

/* A whole reply frame arrived on c. */
static void conn_reply(struct conn *c, const char *frame, size_t len)
{
    int is_error = 0;
    if (B.code == 3 && frame != NULL) {
        /* Chat replies are few enough per second to parse: skip streamed
         * deltas (type 7), learn the PERCONN session. */
        json_t *root = json_loadb(frame, len, 0, NULL);
        if (root == NULL) {
            is_error = 1;
        } else if (json_object_get(root, "error") != NULL) {
            is_error = 1;
        } else if (json_integer_value(json_object_get(root, "type")) == 7) {
            json_decref(root);
            B.frames_ignored++;
            return;
        } else if (c->session[0] == '\0') {
            const char *sid =
                json_string_value(json_object_get(json_object_get(root, "data"), "session_id"));
            if (sid != NULL && strlen(sid) < sizeof(c->session))
                strcpy(c->session, sid);
        }
        json_decref(root);
    } else if (frame != NULL) {
        /* Replies to 0/1/5/6 are small and fixed in shape; an error frame is
         * the only one with an "error" key, and nothing we seed says it. */
        is_error = memmem(frame, len, "\"error\"", 7) != NULL;
    }
    if (!c->inflight) {
        B.frames_ignored++; /* unsolicited (e.g. a going-away error) */
        if (is_error && frame != NULL)
            show_error(frame, len);
        return;
    }
    uint64_t t = ws_now_ns();
    c->inflight = 0;
    int counted = B.requests > 0 || B.once ? c->in_window : B.phase == PH_MEASURE;
    if (counted) {
        B.done++;
        if (is_error) {
            B.errors++;
            if (frame != NULL)
                show_error(frame, len);
        }
        record(t - c->t_send);
        B.t_last_reply = t;
    }
    conn_kick(c);
}

static void conn_receive(struct conn *c, const void *in, size_t len)
{
    int whole = ws_rx_feed(&c->rx, c->wsi, in, len, WSB_MAX_FRAME);
    if (whole < 0)
        die("out of memory");
    if (whole) {
        conn_reply(c, c->rx.dropped ? NULL : c->rx.buf, c->rx.len);
        ws_rx_done(&c->rx);
    }
}

/* -------------------------------------------------------------- lws glue */

static void conn_dead(struct conn *c)
{
    if (c->state == CS_CONNECTING) {
        B.connecting--;
        B.failed++;
        c->failed = 1;
    } else if (c->state == CS_OPEN) {
        B.open--;
        if (c->inflight && B.phase < PH_CLOSE)
            B.unanswered++; /* the server closed with our request pending */
        if (!c->closing)
            B.closed_by_peer++;
    }
    c->state = CS_DEAD;
    c->wsi = NULL;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct conn *c = wsi != NULL ? lws_get_opaque_user_data(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c == NULL)
            break;
        B.connecting--;
        B.open++;
        B.ever_open++;
        c->state = CS_OPEN;
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c == NULL)
            break;
        if (B.verbose || B.failed < 3)
            fprintf(stderr, "wsbench: connect failed: %s\n", in ? (const char *)in : "?");
        conn_dead(c);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (c != NULL)
            conn_receive(c, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (c != NULL)
            return conn_write(c);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c != NULL) {
            if (!c->closing && (B.verbose || B.closed_by_peer < 3))
                fprintf(stderr, "wsbench: connection closed by server%s\n",
                        c->inflight ? " with a request in flight" : "");
            conn_dead(c);
        }
        break;
    case LWS_CALLBACK_WSI_DESTROY:
        /* Backstop: a wsi that went away without either callback above. */
        if (c != NULL && (c->state == CS_CONNECTING || c->state == CS_OPEN) && c->wsi == wsi)
            conn_dead(c);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"wsbench", callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void start_connects(void)
{
    while (B.next_conn < B.conns && B.connecting < B.ramp) {
        struct conn *c = &B.c[B.next_conn++];
        c->state = CS_CONNECTING;
        B.connecting++;
        if (ws_connect(B.ctx, &B.url, "wsbench", c, &c->wsi) == NULL && c->state == CS_CONNECTING) {
            /* Failed at once; the error callback may or may not have run. */
            conn_dead(c);
        }
    }
}

static int inflight_count(void)
{
    int n = 0;
    for (int k = 0; k < B.conns; k++)
        n += B.c[k].state == CS_OPEN && B.c[k].inflight;
    return n;
}

static void set_phase(enum phase p)
{
    B.phase = p;
    B.t_phase = ws_now_ns();
    if (p == PH_MEASURE)
        B.t_measure = B.t_phase;
    if (p == PH_DRAIN)
        B.t_measure_end = B.t_phase;
    if (p == PH_CLOSE) {
        /* Counted now: once closed, no connection is in flight any more. */
        B.unanswered += inflight_count();
        for (int k = 0; k < B.conns; k++) {
            struct conn *c = &B.c[k];
            if (c->state == CS_OPEN) {
                c->closing = 1;
                lws_callback_on_writable(c->wsi);
            }
        }
    }
}

static void kick_all(void)
{
    for (int k = 0; k < B.conns; k++)
        conn_kick(&B.c[k]);
}

/* The phase machine; runs every tick. */
static void step(void)
{
    if (interrupted && B.phase < PH_CLOSE)
        set_phase(PH_CLOSE);
    switch (B.phase) {
    case PH_CONNECT:
        start_connects();
        if (B.next_conn == B.conns && B.connecting == 0) {
            if (B.idle) {
                printf("idle conns=%d connected=%d failed=%d\n", B.conns, B.open, B.failed);
                fflush(stdout);
                set_phase(PH_HOLD);
            } else if (B.open == 0) {
                set_phase(PH_CLOSE);
            } else {
                set_phase(B.warmup > 0 && !B.once ? PH_WARMUP : PH_MEASURE);
                kick_all();
            }
        } else if (ws_secs_since(B.t_phase) > B.timeout + 30) {
            fprintf(stderr, "wsbench: %d handshakes still pending; going on without them\n",
                    B.connecting);
            set_phase(PH_CLOSE);
        }
        break;
    case PH_WARMUP:
        if (ws_secs_since(B.t_phase) >= B.warmup) {
            set_phase(PH_MEASURE);
            kick_all(); /* every connection is normally busy; this restarts any that is not */
        }
        break;
    case PH_MEASURE: {
        int by_count = B.requests > 0 || B.once;
        if (by_count) {
            /* Over when every request sent while measuring is answered
             * and no more may be sent. */
            int more = 0;
            for (int k = 0; k < B.conns && !more; k++)
                more = B.c[k].state == CS_OPEN &&
                       (B.c[k].inflight || B.c[k].want_send || may_send(&B.c[k]));
            if (!more || ws_secs_since(B.t_phase) >= B.timeout)
                set_phase(PH_DRAIN);
        } else if (ws_secs_since(B.t_phase) >= B.seconds) {
            set_phase(PH_DRAIN);
        }
        break;
    }
    case PH_DRAIN:
        if (inflight_count() == 0 ||
            ws_secs_since(B.t_phase) >= (B.requests || B.once ? 0 : B.timeout))
            set_phase(PH_CLOSE);
        break;
    case PH_HOLD:
        if (ws_secs_since(B.t_phase) >= B.hold) {
            printf("idle_done conns=%d still_open=%d closed_by_server=%d\n", B.conns, B.open,
                   B.closed_by_peer);
            fflush(stdout);
            set_phase(PH_CLOSE);
        }
        break;
    case PH_CLOSE:
        if (B.open == 0 || ws_secs_since(B.t_phase) >= 5)
            B.phase = PH_DONE;
        break;
    case PH_DONE:
        break;
    }
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    step();
    lws_sul_schedule(B.ctx, 0, &B.tick, on_tick, WSB_TICK_US);
}

/* ---------------------------------------------------------------- set-up */

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    B.conns = 1;
    B.code = -1;
    B.seconds = 5;
    B.warmup = 1;
    B.timeout = 60;
    B.ramp = 128;
    B.session = "NEW";
    B.message = "hello from wsbench";
    B.model = "llama3.1:8b";
    int seconds_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        /* An option with a value: matches, then consumes the value. */
#define ARG(name) (strcmp(a, name) == 0 && (v != NULL ? (i++, 1) : (usage(), 0)))
        if (ARG("--url"))
            url = v;
        else if (ARG("--conns"))
            B.conns = atoi(v);
        else if (ARG("--code"))
            B.code = atoi(v);
        else if (ARG("--user"))
            B.user = v;
        else if (ARG("--seconds"))
            B.seconds = atof(v), seconds_given = 1;
        else if (ARG("--requests"))
            B.requests = atoll(v);
        else if (ARG("--warmup"))
            B.warmup = atof(v);
        else if (ARG("--session"))
            B.session = v;
        else if (ARG("--message"))
            B.message = v;
        else if (ARG("--model"))
            B.model = v;
        else if (ARG("--timeout"))
            B.timeout = atof(v);
        else if (ARG("--ramp"))
            B.ramp = atoi(v);
        else if (ARG("--idle"))
            B.idle = 1, B.conns = atoi(v);
        else if (ARG("--hold"))
            B.hold = atof(v);
        else if (strcmp(a, "--once") == 0)
            B.once = 1;
        else if (strcmp(a, "--verbose") == 0)
            B.verbose = 1;
        else
            usage();
#undef ARG
    }
    if (url == NULL || B.conns < 1 || B.ramp < 1)
        usage();
    if (!B.idle) {
        if (B.user == NULL || (B.code != 0 && B.code != 1 && B.code != 2 && B.code != 3 &&
                               B.code != 5 && B.code != 6))
            usage();
        if (B.requests > 0 && seconds_given)
            die("--seconds and --requests exclude each other");
        if (B.once && (B.requests > 0 || seconds_given))
            die("--once excludes --seconds and --requests");
        ws_check_plain("wsbench", "--user", B.user);
        ws_check_plain("wsbench", "--session", B.session);
        ws_check_plain("wsbench", "--message", B.message);
        ws_check_plain("wsbench", "--model", B.model);
    }
    ws_parse_url("wsbench", url, &B.url);

    ws_raise_nofile("wsbench", B.conns);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    B.c = calloc((size_t)B.conns, sizeof(*B.c));
    if (B.c == NULL)
        die("out of memory");

    B.ctx = ws_client_context("wsbench", protocols, B.verbose);

    set_phase(PH_CONNECT);
    on_tick(&B.tick);
    while (B.phase != PH_DONE)
        if (lws_service(B.ctx, 0) < 0)
            break;
    lws_sul_schedule(B.ctx, 0, &B.tick, NULL, LWS_SET_TIMER_USEC_CANCEL);
    lws_context_destroy(B.ctx);

    if (!B.idle) {
        latency_sort(&B.lat);
        uint64_t end = B.requests > 0 || B.once ? B.t_last_reply : B.t_measure_end;
        double window = end > B.t_measure ? (double)(end - B.t_measure) / 1e9 : 0;
        double rps = window > 0 ? (double)B.done / window : 0;
        printf("code=%d conns=%d requests=%lld errors=%lld rps=%.1f p50_us=%u p99_us=%u"
               " max_us=%u connected=%d connect_failed=%d closed_by_server=%d unanswered=%d"
               " window_s=%.2f cpu_s=%.2f\n",
               B.code, B.conns, B.done, B.errors, rps, latency_pct(&B.lat, 50),
               latency_pct(&B.lat, 99), latency_pct(&B.lat, 100), B.ever_open, B.failed,
               B.closed_by_peer, B.unanswered, window, measure_cpu_seconds());
    }
    for (int k = 0; k < B.conns; k++)
        ws_rx_free(&B.c[k].rx);
    free(B.c);
    latency_free(&B.lat);
    return 0;
}
