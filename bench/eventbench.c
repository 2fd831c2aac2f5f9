/* eventbench.c - live events fanned out to many subscribed connections
 * over two chatd instances (issue 15, section i of scripts/bench.sh).
 *
 *   eventbench --url ws://A/ws --url2 ws://B/ws --users FILE --conns 1000
 *              --rate 200 --seconds 10
 *
 * FILE has one "user_id session_id" per line. --conns subscribers (code
 * 14) are spread over the users (connection k is user k % U) and over the
 * two instances (even k on A, odd k on B). One more connection per user, on
 * A, renames that user's session (code 10) --rate times a second in all,
 * round robin over the users, each name carrying the wall-clock time of
 * sending ("e@<unix us>"). Every subscriber of the user gets a
 * session_renamed event (type 15) on whichever instance it is; its lag is
 * the receive time minus that stamp (one machine, one clock).
 *
 * Prints one line: events expected and received, events per second, lag
 * p50/p99/max in microseconds, errors. Figures only, never asserted. */
#include <jansson.h>
#include <libwebsockets.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "measure.h"
#include "opts.h"
#include "wsclient.h"

#define EB_TICK_US (2 * 1000)
#define EB_MAX_USERS 10000

struct conn {
    struct ws_conn ws;
    int user;       /* index into E.uid */
    int writer;     /* renames; else a subscriber */
    int subscribed; /* code 14 answered */
    int want_send, inflight;
};

static struct {
    struct ws_pool pool; /* subscribers (even on A, odd on B), then the writers (A) */
    struct ws_url url2;
    struct conn *c;
    long long renames[EB_MAX_USERS];
    long long scheduled;
    char uid[EB_MAX_USERS][40], sid[EB_MAX_USERS][40];
    int n_users, conns;
    double rate, seconds;
    int phase; /* 0 connecting, 1 subscribing, 2 measuring, 3 draining, 4 closing, 5 done */
    uint64_t t_phase, t_start, t_stop;
    long long sent, events, errors, expected;
    int next_writer;
    struct latency lag;
    unsigned char scratch[LWS_PRE + 512];
} E;

static struct conn *conn_of(struct ws_conn *wc) { return lws_container_of(wc, struct conn, ws); }

static int on_writeable(struct ws_conn *wc)
{
    struct conn *c = conn_of(wc);
    if (!c->want_send)
        return 0;
    c->want_send = 0;
    char *out = (char *)E.scratch + LWS_PRE;
    int n;
    if (!c->writer) {
        n = snprintf(out, 500, "{\"type\":14,\"data\":{\"user_id\":\"%s\"}}", E.uid[c->user]);
    } else {
        n = snprintf(out, 500,
                     "{\"type\":10,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\","
                     "\"session_name\":\"e@%llu\"}}",
                     E.uid[c->user], E.sid[c->user], (unsigned long long)ws_wall_us());
        c->inflight = 1;
        E.sent++;
        E.renames[c->user]++;
    }
    return ws_send_text("eventbench", wc->wsi, E.scratch, (size_t)n) != 0 ? -1 : 0;
}

static void on_frame(struct ws_conn *wc, const char *frame, size_t len)
{
    struct conn *c = conn_of(wc);
    uint64_t now = ws_wall_us();
    if (frame == NULL)
        return;
    json_t *root = json_loadb(frame, len, 0, NULL);
    if (root == NULL)
        return;
    int type = (int)json_integer_value(json_object_get(root, "type"));
    json_t *data = json_object_get(root, "data");
    if (json_object_get(root, "error") != NULL) {
        if (E.errors++ < 3)
            fprintf(stderr, "eventbench: error reply: %.*s\n", (int)(len > 200 ? 200 : len), frame);
        c->inflight = 0;
    } else if (type == 14) {
        c->subscribed = 1;
    } else if (type == 10) {
        c->inflight = 0;
    } else if (type == 15 && !c->writer) {
        const char *kind = json_string_value(json_object_get(data, "kind"));
        const char *name = json_string_value(json_object_get(data, "session_name"));
        if (kind != NULL && strcmp(kind, "session_renamed") == 0 && name != NULL &&
            strncmp(name, "e@", 2) == 0 && E.phase >= 2) {
            unsigned long long sent = strtoull(name + 2, NULL, 10);
            E.events++;
            latency_add(&E.lag, (now > sent ? now - sent : 0) * 1000u);
        }
    }
    json_decref(root);
}

static void on_dead(struct ws_conn *wc, enum ws_state was)
{
    (void)wc;
    (void)was;
}

static void say_closed(struct ws_conn *wc)
{
    fprintf(stderr, "eventbench: connection %d closed by chatd\n", (int)(conn_of(wc) - E.c));
}

static const struct ws_hooks hooks = {on_frame, on_writeable, on_dead, say_closed};

/* Subscribers alternate between the instances; writers are on A. */
static const struct ws_url *url_for(const struct ws_pool *p, int k)
{
    return k < E.conns && k % 2 == 1 ? &E.url2 : &p->url;
}

static int step(void)
{
    if (ws_interrupted && E.phase < 4) {
        E.phase = 4;
        ws_pool_close_begin(&E.pool, &E.t_phase);
    }
    switch (E.phase) {
    case 0:
        ws_pool_connect_more(&E.pool);
        if (ws_pool_all_tried(&E.pool)) {
            for (int k = 0; k < E.conns; k++)
                if (E.c[k].ws.state == WS_OPEN) {
                    E.c[k].want_send = 1;
                    lws_callback_on_writable(E.c[k].ws.wsi);
                }
            E.phase = 1;
            E.t_phase = ws_now_ns();
        }
        break;
    case 1: {
        int n = 0;
        for (int k = 0; k < E.conns; k++)
            n += E.c[k].subscribed;
        if (n >= E.pool.open - E.n_users || ws_secs_since(E.t_phase) > 30) {
            E.phase = 2;
            E.t_phase = E.t_start = ws_now_ns();
        }
        break;
    }
    case 2: {
        /* The renames due by now at --rate, round robin over the users'
         * writers, skipping one whose last rename is unanswered. */
        double elapsed = ws_secs_since(E.t_start);
        long long due = (long long)(elapsed * E.rate);
        for (int tries = 0; E.scheduled < due && tries < E.n_users; tries++) {
            struct conn *w = &E.c[E.conns + E.next_writer];
            E.next_writer = (E.next_writer + 1) % E.n_users;
            if (w->ws.state != WS_OPEN || w->inflight || w->want_send)
                continue;
            w->want_send = 1;
            lws_callback_on_writable(w->ws.wsi);
            E.scheduled++;
        }
        if (elapsed >= E.seconds) {
            E.phase = 3;
            E.t_phase = E.t_stop = ws_now_ns();
        }
        break;
    }
    case 3: /* the last events arrive */
        if (ws_secs_since(E.t_phase) >= 3) {
            E.phase = 4;
            ws_pool_close_begin(&E.pool, &E.t_phase);
        }
        break;
    case 4:
        if (ws_pool_close_done(&E.pool, E.t_phase))
            E.phase = 5;
        break;
    }
    return E.phase == 5;
}

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr, "usage: eventbench --url ws://A/ws --url2 ws://B/ws --users FILE --conns N"
                    " [--rate R] [--seconds S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *url = NULL, *url2 = NULL, *users = NULL;
    E.conns = 1000;
    E.rate = 200;
    E.seconds = 10;
    const struct opt opts[] = {
        {"--url", OPT_STR, &url, NULL},        {"--url2", OPT_STR, &url2, NULL},
        {"--users", OPT_STR, &users, NULL},    {"--conns", OPT_INT, &E.conns, NULL},
        {"--rate", OPT_DOUBLE, &E.rate, NULL}, {"--seconds", OPT_DOUBLE, &E.seconds, NULL},
        {NULL, OPT_FLAG, NULL, NULL},
    };
    opts_parse(argc, argv, opts, usage);
    if (url == NULL || url2 == NULL || users == NULL || E.conns < 2 || E.rate <= 0)
        usage();
    FILE *f = fopen(users, "r");
    if (f == NULL)
        ws_die("eventbench", "cannot open --users");
    while (E.n_users < EB_MAX_USERS &&
           fscanf(f, "%39s %39s", E.uid[E.n_users], E.sid[E.n_users]) == 2) {
        ws_check_plain("eventbench", "--users", E.uid[E.n_users]);
        ws_check_plain("eventbench", "--users", E.sid[E.n_users]);
        E.n_users++;
    }
    fclose(f);
    if (E.n_users == 0)
        ws_die("eventbench", "no users in --users");

    /* The subscribers, then one writer per user. */
    E.pool.prog = "eventbench";
    E.pool.hooks = &hooks;
    E.pool.max_frame = 1u << 16;
    E.pool.ramp = 128;
    E.pool.n = E.conns + E.n_users;
    E.pool.url_for = url_for;
    ws_parse_url("eventbench", url, &E.pool.url);
    ws_parse_url("eventbench", url2, &E.url2);
    E.c = ws_pool_init(&E.pool, sizeof(*E.c), offsetof(struct conn, ws));
    for (int k = 0; k < E.pool.n; k++) {
        E.c[k].writer = k >= E.conns;
        E.c[k].user = k < E.conns ? k % E.n_users : k - E.conns;
    }
    ws_pool_start(&E.pool);
    ws_pool_run(&E.pool, step, EB_TICK_US);

    /* Each rename reaches every subscriber of its user. */
    long long *subs = calloc((size_t)E.n_users, sizeof(*subs));
    if (subs == NULL)
        ws_die("eventbench", "out of memory");
    for (int k = 0; k < E.conns; k++)
        subs[E.c[k].user] += E.c[k].subscribed;
    for (int u = 0; u < E.n_users; u++)
        E.expected += E.renames[u] * subs[u];
    free(subs);
    latency_sort(&E.lag);
    double window = E.t_stop > E.t_start ? (double)(E.t_stop - E.t_start) / 1e9 : 0;
    printf("subscribers=%d users=%d renames=%lld events_expected=%lld events=%lld"
           " events_per_s=%.0f lag_p50_us=%u lag_p99_us=%u lag_max_us=%u errors=%lld"
           " window_s=%.1f cpu_s=%.2f\n",
           E.conns, E.n_users, E.sent, E.expected, E.events,
           window > 0 ? (double)E.events / window : 0, latency_pct(&E.lag, 50),
           latency_pct(&E.lag, 99), latency_pct(&E.lag, 100), E.errors, window,
           measure_cpu_seconds());
    ws_pool_free(&E.pool);
    latency_free(&E.lag);
    return 0;
}
