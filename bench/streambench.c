/* streambench.c - many streamed replies at once (issue 15, section j of
 * scripts/bench.sh).
 *
 *   streambench --url ws://127.0.0.1:8000/ws (--user UUID | --users FILE)
 *               --conns 2000 --words 200 [--resume] [--timeout 120]
 *
 * Every connection opens, then all send one code 3 with "stream": true and
 * a message of --words words at once; chat-agent (echo back end, started
 * with AGENT_DELTA_MS and AGENT_STAMP_DELTAS=1) sends one piece per word,
 * each carrying the agent's wall-clock send time ("<word>@<unix us> "). For
 * every type 7 frame this checks that its index is the next one of its
 * turn (each delta once, in order), and records each word's delivery lag:
 * receive time minus its stamp (agent and client share the machine's
 * clock). With --resume each connection first subscribes (code 14) to its
 * user's events, so those are delivered too.
 *
 * The agent may send several words in one message when its socket is
 * busy, so words are counted and checked one by one (each the next word of
 * the reply), not frames.
 *
 * Prints one line: conns, turns, pieces expected/received, frames,
 * out_of_order (an index skipped), duplicates (an index again), wrong_words
 * (a word not the next of the reply), lag p50/p99/max in microseconds,
 * the same p50/p99 for the words sent 2 s or more after the turns (past the
 * burst of every turn starting at once: 2,000 sessions created, checked and
 * leased together), errors, elapsed seconds. Figures are printed, never asserted. */
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

#define SB_MAX_FRAME (1u << 20)
#define SB_TICK_US (10 * 1000)

struct conn {
    struct ws_conn ws;
    int stage; /* 0 nothing sent, 1 subscribe sent, 2 chat sent, 3 final reply */
    int want_send;
    long long next_index; /* the index the next delta must have */
    long long deltas;
    int next_word; /* the piece of the reply the next stamped word must be */
    int user;      /* index into S.users */
};

static struct {
    struct ws_pool pool;
    struct conn *c;
    const char *user, *users_file;
    int words, resume;
    double timeout;
    char *message;
    int phase; /* 0 connecting, 1 running, 2 closing, 3 done */
    uint64_t t_phase, t_start, t_end;
    uint64_t t_start_wall_us; /* t_start on the agent's clock (its stamps) */
    long long deltas, pieces, out_of_order, duplicates, wrong_words, errors, finals, unstamped;
    char (*users)[40];
    int n_users;
    int errors_shown;
    struct latency lag;
    struct latency lag_steady; /* words sent 2 s or more after the turns: past the start burst */
    unsigned char *scratch;
    size_t scratch_cap;
} S;

static struct conn *conn_of(struct ws_conn *wc) { return lws_container_of(wc, struct conn, ws); }

static int on_writeable(struct ws_conn *wc)
{
    struct conn *c = conn_of(wc);
    if (!c->want_send)
        return 0;
    c->want_send = 0;
    char *out = (char *)S.scratch + LWS_PRE;
    int n;
    if (S.resume && c->stage == 0) {
        n = snprintf(out, S.scratch_cap, "{\"type\":14,\"data\":{\"user_id\":\"%s\"}}",
                     S.users[c->user]);
        c->stage = 1;
    } else {
        n = snprintf(out, S.scratch_cap,
                     "{\"type\":3,\"data\":{\"user_id\":\"%s\",\"session_id\":\"NEW\","
                     "\"model_name\":\"llama3.1:8b\",\"message\":\"%s\",\"session_prompt\":\"\","
                     "\"file_name\":\"\",\"stream\":true}}",
                     S.users[c->user], S.message);
        c->stage = 2;
    }
    if (n <= 0 || (size_t)n >= S.scratch_cap)
        ws_die("streambench", "request too long");
    return ws_send_text("streambench", wc->wsi, S.scratch, (size_t)n) != 0 ? -1 : 0;
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
        S.errors++;
        if (S.errors_shown++ < 3)
            fprintf(stderr, "streambench: error reply: %.*s\n", (int)(len > 200 ? 200 : len),
                    frame);
    } else if (type == 14 && c->stage == 1) {
        c->want_send = 1;
        lws_callback_on_writable(wc->wsi);
    } else if (type == 7 && c->stage == 2) {
        long long index = json_integer_value(json_object_get(data, "index"));
        if (index < c->next_index)
            S.duplicates++;
        else if (index > c->next_index)
            S.out_of_order++;
        if (index >= c->next_index)
            c->next_index = index + 1;
        c->deltas++;
        S.deltas++;
        /* A frame holds one piece of the reply, or several when the agent
         * sent them together (it does when its socket is busy): each is
         * "<word>@<send time> ", checked against the reply's words in
         * order, its lag taken on its own. */
        const char *d = json_string_value(json_object_get(data, "delta"));
        int stamps = 0;
        for (const char *p = d != NULL ? d : ""; *p;) {
            const char *at = strchr(p, '@');
            if (at == NULL)
                break;
            char want[32];
            int k = c->next_word++;
            if (k == 0)
                snprintf(want, sizeof(want), "echo:");
            else if (k <= S.words)
                snprintf(want, sizeof(want), "w%d", k - 1);
            else
                snprintf(want, sizeof(want), "%s",
                         k == S.words + 1   ? "[history=0"
                         : k == S.words + 2 ? "summary=0"
                                            : "?");
            if ((size_t)(at - p) != strlen(want) || memcmp(p, want, strlen(want)) != 0)
                S.wrong_words++;
            char *end;
            unsigned long long sent = strtoull(at + 1, &end, 10);
            if (sent > 0 && sent <= now + 1000000u) {
                latency_add(&S.lag, (now > sent ? now - sent : 0) * 1000u);
                if (sent >= S.t_start_wall_us + 2000000u)
                    latency_add(&S.lag_steady, (now > sent ? now - sent : 0) * 1000u);
            }
            stamps++;
            p = end;
            while (*p == ' ')
                p++;
        }
        S.pieces += stamps;
        if (stamps == 0)
            S.unstamped++;
    } else if (type == 3 && c->stage == 2) {
        c->stage = 3;
        S.finals++;
        S.t_end = ws_now_ns();
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
    (void)wc;
    fprintf(stderr, "streambench: a connection was closed by chatd\n");
}

static const struct ws_hooks hooks = {on_frame, on_writeable, on_dead, say_closed};

static int step(void)
{
    if (ws_interrupted && S.phase < 2) {
        S.phase = 2;
        ws_pool_close_begin(&S.pool, &S.t_phase);
    }
    switch (S.phase) {
    case 0:
        ws_pool_connect_more(&S.pool);
        if (ws_pool_all_tried(&S.pool)) {
            S.phase = 1;
            S.t_phase = S.t_start = ws_now_ns();
            S.t_start_wall_us = ws_wall_us();
            for (int k = 0; k < S.pool.n; k++)
                if (S.c[k].ws.state == WS_OPEN) {
                    S.c[k].want_send = 1;
                    lws_callback_on_writable(S.c[k].ws.wsi);
                }
        }
        break;
    case 1: {
        int running = 0;
        for (int k = 0; k < S.pool.n && !running; k++)
            running = S.c[k].ws.state == WS_OPEN && S.c[k].stage < 3;
        if (!running || ws_secs_since(S.t_phase) >= S.timeout) {
            S.phase = 2;
            ws_pool_close_begin(&S.pool, &S.t_phase);
        }
        break;
    }
    case 2:
        if (ws_pool_close_done(&S.pool, S.t_phase))
            S.phase = 3;
        break;
    }
    return S.phase == 3;
}

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr, "usage: streambench --url ws://HOST:PORT/ws (--user UUID | --users FILE)"
                    " --conns N --words W [--resume] [--timeout S] [--ramp N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    S.pool.prog = "streambench";
    S.pool.hooks = &hooks;
    S.pool.max_frame = SB_MAX_FRAME;
    S.pool.n = 1;
    S.pool.ramp = 128;
    S.words = 200;
    S.timeout = 120;
    const struct opt opts[] = {
        {"--url", OPT_STR, &url, NULL},
        {"--user", OPT_STR, &S.user, NULL},
        {"--users", OPT_STR, &S.users_file, NULL},
        {"--conns", OPT_INT, &S.pool.n, NULL},
        {"--words", OPT_INT, &S.words, NULL},
        {"--timeout", OPT_DOUBLE, &S.timeout, NULL},
        {"--ramp", OPT_INT, &S.pool.ramp, NULL},
        {"--resume", OPT_FLAG, &S.resume, NULL},
        {NULL, OPT_FLAG, NULL, NULL},
    };
    opts_parse(argc, argv, opts, usage);
    if (url == NULL || (S.user == NULL) == (S.users_file == NULL) || S.pool.n < 1 || S.words < 1 ||
        S.words > 100000)
        usage();
    /* --user: every connection is that user; --users FILE: connection k
     * is the file's user k % N (its events go to its own connections). */
    S.users = calloc((size_t)S.pool.n, sizeof(*S.users));
    if (S.users == NULL)
        ws_die("streambench", "out of memory");
    if (S.user != NULL) {
        snprintf(S.users[0], sizeof(S.users[0]), "%s", S.user);
        S.n_users = 1;
    } else {
        FILE *f = fopen(S.users_file, "r");
        if (f == NULL)
            ws_die("streambench", "cannot open --users");
        while (S.n_users < S.pool.n && fscanf(f, "%39s", S.users[S.n_users]) == 1)
            S.n_users++;
        fclose(f);
        if (S.n_users == 0)
            ws_die("streambench", "no users in --users");
    }
    for (int k = 0; k < S.n_users; k++)
        ws_check_plain("streambench", "--users", S.users[k]);
    ws_parse_url("streambench", url, &S.pool.url);
    /* "w0 w1 w2 ...": one delta per word */
    size_t cap = (size_t)S.words * 8 + 1;
    S.message = malloc(cap);
    S.scratch_cap = cap + 512;
    S.scratch = malloc(LWS_PRE + S.scratch_cap);
    if (S.message == NULL || S.scratch == NULL)
        ws_die("streambench", "out of memory");
    size_t off = 0;
    for (int w = 0; w < S.words; w++)
        off += (size_t)snprintf(S.message + off, cap - off, w ? " w%d" : "w%d", w);

    S.c = ws_pool_init(&S.pool, sizeof(*S.c), offsetof(struct conn, ws));
    for (int k = 0; k < S.pool.n; k++)
        S.c[k].user = k % S.n_users;
    ws_pool_start(&S.pool);
    ws_pool_run(&S.pool, step, SB_TICK_US);

    latency_sort(&S.lag);
    latency_sort(&S.lag_steady);
    /* The echo reply is "echo: " + the message + " [history=0 summary=0
     * files=0]": one piece per word; all but the last are stamped. */
    long long stamped_per_turn = S.words + 3;
    double elapsed = S.t_end > S.t_start ? (double)(S.t_end - S.t_start) / 1e9 : 0;
    printf("conns=%d users=%d connected=%d turns_done=%lld pieces_expected=%lld pieces=%lld"
           " frames=%lld out_of_order=%lld duplicates=%lld wrong_words=%lld lag_p50_us=%u"
           " lag_p99_us=%u lag_max_us=%u steady_p50_us=%u steady_p99_us=%u errors=%lld"
           " elapsed_s=%.2f cpu_s=%.2f\n",
           S.pool.n, S.n_users, S.pool.ever_open, S.finals, stamped_per_turn * S.pool.ever_open,
           S.pieces, S.deltas, S.out_of_order, S.duplicates, S.wrong_words, latency_pct(&S.lag, 50),
           latency_pct(&S.lag, 99), latency_pct(&S.lag, 100), latency_pct(&S.lag_steady, 50),
           latency_pct(&S.lag_steady, 99), S.errors, elapsed, measure_cpu_seconds());
    free(S.users);
    ws_pool_free(&S.pool);
    latency_free(&S.lag);
    latency_free(&S.lag_steady);
    free(S.message);
    free(S.scratch);
    return 0;
}
