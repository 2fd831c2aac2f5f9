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
 *   wsbench ... --code 17 --session <uuid> --extra '"seq":4,"message":"x"'  (codes 9, 17,
 *                                                               18 name a session)
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "measure.h"
#include "opts.h"
#include "wsclient.h"

#define WSB_MAX_FRAME (16u * 1024 * 1024) /* larger replies are counted, not kept */
#define WSB_SCRATCH 4096                  /* one outgoing request */
#define WSB_TICK_US (10 * 1000)

struct conn {
    struct ws_conn ws; /* wsi, state, closing; a frame over WSB_MAX_FRAME is counted, not kept */
    int want_send;     /* a request waits for WRITEABLE */
    int inflight;      /* a request was written, no reply yet */
    int in_window;     /* the in-flight request was sent while measuring */
    int sent;          /* requests sent, for --once */
    uint64_t t_send;   /* ns */
    char session[40];  /* PERCONN: the session this connection continues */
};

enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_HOLD, PH_CLOSE, PH_DONE };

static struct {
    /* options (and in pool: --url, --conns, --ramp, --verbose) */
    int code, once, idle;
    double seconds, warmup, hold, timeout;
    long long requests; /* 0: by time */
    const char *user, *session, *message, *model;
    const char *extra; /* --extra: JSON members added to "data" */
    char **users;      /* --users FILE: each request is a random one's */
    int n_users;

    struct ws_pool pool; /* the connections and their counts */
    struct conn *c;
    enum phase phase;
    uint64_t t_phase; /* when the current phase began, ns */
    uint64_t t_measure, t_measure_end, t_last_reply;

    long long issued; /* requests sent while measuring (--requests) */
    long long done, errors, frames_ignored;
    int unanswered; /* in flight when we closed, or lost with a connection */
    int errors_shown;

    struct latency lat;
    unsigned char scratch[LWS_PRE + WSB_SCRATCH];
} B;

static void die(const char *msg) { ws_die("wsbench", msg); }

__attribute__((noreturn)) static void usage(void)
{
    fprintf(
        stderr,
        "usage: wsbench --url ws://HOST:PORT/PATH --user UUID --code 0|1|2|3|5|6|9|11|13|17|18\n"
        "               [--conns N] [--seconds S | --requests N | --once] [--warmup S]\n"
        "               [--session NEW|PERCONN|UUID] [--message TEXT] [--model NAME]\n"
        "               [--extra '\"limit\":50' (JSON members for \"data\")]\n"
        "               [--users FILE (one uuid a line; each request picks one, code 3 each\n"
        "                connection one)]\n"
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
        /* --users: a connection is one user's (its PERCONN session is) */
        const char *user = B.n_users > 0 ? B.users[(c - B.c) % B.n_users] : B.user;
        n = snprintf(out, WSB_SCRATCH,
                     "{\"type\":3,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\","
                     "\"model_name\":\"%s\",\"message\":\"%s\",\"session_prompt\":\"\","
                     "\"file_name\":\"\"}}",
                     user, sid, B.model, B.message);
    } else if (B.code == 2) {
        n = snprintf(out, WSB_SCRATCH,
                     "{\"type\":2,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\"}}", B.user,
                     B.session);
    } else {
        const char *user = B.n_users > 0 ? B.users[rand() % B.n_users] : B.user;
        int sess = B.code == 9 || B.code == 17 || B.code == 18;
        n = snprintf(out, WSB_SCRATCH, "{\"type\":%d,\"data\":{\"user_id\":\"%s\"%s%s%s%s%s}}",
                     B.code, user, sess ? ",\"session_id\":\"" : "", sess ? B.session : "",
                     sess ? "\"" : "", B.extra ? "," : "", B.extra ? B.extra : "");
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

static struct conn *conn_of(struct ws_conn *wc) { return lws_container_of(wc, struct conn, ws); }

static void conn_kick(struct conn *c)
{
    if (c->ws.state != WS_OPEN || c->inflight || c->want_send || c->ws.closing || !may_send(c))
        return;
    c->want_send = 1;
    lws_callback_on_writable(c->ws.wsi);
}

/* The pool's on_writeable (it closes a closing connection itself). */
static int conn_write(struct ws_conn *wc)
{
    struct conn *c = conn_of(wc);
    if (!c->want_send)
        return 0;
    c->want_send = 0;
    if (!may_send(c)) /* the phase moved on while we waited */
        return 0;
    size_t len = build_request(c);
    c->in_window = B.phase == PH_MEASURE;
    if (c->in_window)
        B.issued++;
    c->sent++;
    c->inflight = 1;
    c->t_send = ws_now_ns();
    if (ws_send_text("wsbench", c->ws.wsi, B.scratch, len) != 0) {
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

/* The pool's on_frame: a whole reply frame arrived. */
static void conn_reply(struct ws_conn *wc, const char *frame, size_t len)
{
    struct conn *c = conn_of(wc);
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
        /* An error frame is the only one with an "error" key, and nothing
         * the benchmarks seed says it. */
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

/* -------------------------------------------------------------- lws glue */

/* The pool's on_dead; it has counted the failure or the close already. */
static void conn_dead(struct ws_conn *wc, enum ws_state was)
{
    if (was == WS_OPEN && conn_of(wc)->inflight && B.phase < PH_CLOSE)
        B.unanswered++; /* the server closed with our request pending */
}

static void say_closed(struct ws_conn *wc)
{
    fprintf(stderr, "wsbench: connection closed by server%s\n",
            conn_of(wc)->inflight ? " with a request in flight" : "");
}

static const struct ws_hooks hooks = {conn_reply, conn_write, conn_dead, say_closed};

static int inflight_count(void)
{
    int n = 0;
    for (int k = 0; k < B.pool.n; k++)
        n += B.c[k].ws.state == WS_OPEN && B.c[k].inflight;
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
        ws_pool_close_all(&B.pool);
    }
}

static void kick_all(void)
{
    for (int k = 0; k < B.pool.n; k++)
        conn_kick(&B.c[k]);
}

/* The phase machine; runs every tick. Nonzero when done. */
static int step(void)
{
    if (ws_interrupted && B.phase < PH_CLOSE)
        set_phase(PH_CLOSE);
    switch (B.phase) {
    case PH_CONNECT:
        ws_pool_connect_more(&B.pool);
        if (ws_pool_all_tried(&B.pool)) {
            if (B.idle) {
                printf("idle conns=%d connected=%d failed=%d\n", B.pool.n, B.pool.open,
                       B.pool.failed);
                fflush(stdout);
                set_phase(PH_HOLD);
            } else if (B.pool.open == 0) {
                set_phase(PH_CLOSE);
            } else {
                set_phase(B.warmup > 0 && !B.once ? PH_WARMUP : PH_MEASURE);
                kick_all();
            }
        } else if (ws_secs_since(B.t_phase) > B.timeout + 30) {
            fprintf(stderr, "wsbench: %d handshakes still pending; going on without them\n",
                    B.pool.connecting);
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
            for (int k = 0; k < B.pool.n && !more; k++)
                more = B.c[k].ws.state == WS_OPEN &&
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
            printf("idle_done conns=%d still_open=%d closed_by_server=%d\n", B.pool.n, B.pool.open,
                   B.pool.closed_by_peer);
            fflush(stdout);
            set_phase(PH_CLOSE);
        }
        break;
    case PH_CLOSE:
        if (ws_pool_close_done(&B.pool, B.t_phase))
            B.phase = PH_DONE;
        break;
    case PH_DONE:
        break;
    }
    return B.phase == PH_DONE;
}

/* ---------------------------------------------------------------- set-up */

static void load_users(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        die("cannot open --users file");
    char line[128];
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        ws_check_plain("wsbench", "--users", line);
        char **u = realloc(B.users, sizeof(*u) * (size_t)(B.n_users + 1));
        if (u == NULL || (u[B.n_users] = strdup(line)) == NULL)
            die("out of memory");
        B.users = u;
        B.n_users++;
    }
    fclose(f);
}

/* --seconds: the window, and that it was given (it excludes --requests). */
static int seconds_given;
static void seconds_opt(const char *v)
{
    B.seconds = atof(v);
    seconds_given = 1;
}

/* --idle N: N connections that only hold open. */
static void idle_opt(const char *v)
{
    B.idle = 1;
    B.pool.n = atoi(v);
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    B.pool.prog = "wsbench";
    B.pool.hooks = &hooks;
    B.pool.max_frame = WSB_MAX_FRAME;
    B.pool.n = 1;
    B.code = -1;
    B.seconds = 5;
    B.warmup = 1;
    B.timeout = 60;
    B.pool.ramp = 128;
    B.session = "NEW";
    B.message = "hello from wsbench";
    B.model = "llama3.1:8b";
    const struct opt opts[] = {
        {"--url", OPT_STR, &url, NULL},
        {"--conns", OPT_INT, &B.pool.n, NULL},
        {"--code", OPT_INT, &B.code, NULL},
        {"--user", OPT_STR, &B.user, NULL},
        {"--seconds", OPT_CALL, NULL, seconds_opt},
        {"--requests", OPT_LLONG, &B.requests, NULL},
        {"--warmup", OPT_DOUBLE, &B.warmup, NULL},
        {"--session", OPT_STR, &B.session, NULL},
        {"--message", OPT_STR, &B.message, NULL},
        {"--model", OPT_STR, &B.model, NULL},
        {"--extra", OPT_STR, &B.extra, NULL},
        {"--users", OPT_CALL, NULL, load_users},
        {"--timeout", OPT_DOUBLE, &B.timeout, NULL},
        {"--ramp", OPT_INT, &B.pool.ramp, NULL},
        {"--idle", OPT_CALL, NULL, idle_opt},
        {"--hold", OPT_DOUBLE, &B.hold, NULL},
        {"--once", OPT_FLAG, &B.once, NULL},
        {"--verbose", OPT_FLAG, &B.pool.verbose, NULL},
        {NULL, OPT_FLAG, NULL, NULL},
    };
    opts_parse(argc, argv, opts, usage);
    if (url == NULL || B.pool.n < 1 || B.pool.ramp < 1)
        usage();
    if (!B.idle) {
        if (B.n_users > 0 && B.user == NULL)
            B.user = B.users[0];
        if (B.user == NULL || (B.code != 0 && B.code != 1 && B.code != 2 && B.code != 3 &&
                               B.code != 5 && B.code != 6 && B.code != 9 && B.code != 11 &&
                               B.code != 13 && B.code != 17 && B.code != 18))
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
    ws_parse_url("wsbench", url, &B.pool.url);

    B.c = ws_pool_init(&B.pool, sizeof(*B.c), offsetof(struct conn, ws));
    ws_pool_start(&B.pool);
    set_phase(PH_CONNECT);
    ws_pool_run(&B.pool, step, WSB_TICK_US);

    if (!B.idle) {
        latency_sort(&B.lat);
        uint64_t end = B.requests > 0 || B.once ? B.t_last_reply : B.t_measure_end;
        double window = end > B.t_measure ? (double)(end - B.t_measure) / 1e9 : 0;
        double rps = window > 0 ? (double)B.done / window : 0;
        printf("code=%d conns=%d requests=%lld errors=%lld rps=%.1f p50_us=%u p99_us=%u"
               " max_us=%u connected=%d connect_failed=%d closed_by_server=%d unanswered=%d"
               " window_s=%.2f cpu_s=%.2f\n",
               B.code, B.pool.n, B.done, B.errors, rps, latency_pct(&B.lat, 50),
               latency_pct(&B.lat, 99), latency_pct(&B.lat, 100), B.pool.ever_open, B.pool.failed,
               B.pool.closed_by_peer, B.unanswered, window, measure_cpu_seconds());
    }
    ws_pool_free(&B.pool);
    latency_free(&B.lat);
    return 0;
}
