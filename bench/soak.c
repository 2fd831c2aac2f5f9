/* soak.c - long mixed-traffic soak of chatd over WebSocket (issue 6).
 *
 * N clients (default 1,000) on ONE libwebsockets client thread each hold one
 * connection and loop for S seconds: pick an operation by a fixed mix, send
 * it, wait for the whole answer, check it is the expected reply (not an
 * error frame, right type and shape), record its latency, then think for a
 * random time (default 0.5-1.5 s) before the next. Clients are spread over
 * the users listed in --users (client k acts as user k % U) and each works
 * only on the sessions it created itself, so nothing it does may fail.
 *
 * The mix (percent of operations):
 *   0 user details 12   1 list sessions 12   2 chats of own session 12
 *   3 chat, NEW session 6   3 chat, continuing own session 20
 *   3 chat with "stream": true 8 (continues a session; deltas, then the final 3)
 *   4 delete own session 5   5 list models 10   6 balance 12
 *   8 stop 3: a streamed NEW chat with a long message, code 8 at its first
 *     delta; both the type 8 reply and the final type 3 (ending in
 *     " [stopped]") are awaited.
 * A client keeps at most --max-sessions (3) sessions: a NEW chat beyond that
 * deletes its oldest instead; ops needing a session without one start one.
 *
 * With --pid (chatd's), it samples chatd's VmRSS and open descriptors before
 * the clients connect (baseline), every --sample seconds (10) while they
 * run, and --settle seconds (5) after the last one closed, and prints the
 * series' summary. Exit status 1 if any operation failed or timed out, a
 * connection failed or was closed by chatd, or chatd's descriptors did not
 * come back to the baseline; 2 on usage errors.
 *
 *   soak --url ws://127.0.0.1:8000/ws --users users.txt --pid $(pidof chatd) \
 *        [--clients 1000] [--seconds 600] [--think-min 0.5 --think-max 1.5]
 *
 * Latency: CLOCK_MONOTONIC from lws_write() to the last fragment of the
 * reply (for chats, of the final type 3; for code 8, of the type 8 reply). */
#include <dirent.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "measure.h"
#include "opts.h"
#include "wsclient.h"

#define SOAK_MAX_FRAME (16u * 1024 * 1024)
#define SOAK_SCRATCH 4096
#define SOAK_TICK_US (10 * 1000)
#define SOAK_MAX_SESSIONS 16
#define SOAK_ERRORS_SHOWN 10

static const char *prog = "soak";

/* ------------------------------------------------------------ operations */

enum op {
    OP_USER,
    OP_SESSIONS,
    OP_CHATS,
    OP_CHAT_NEW,
    OP_CHAT_CONT,
    OP_CHAT_STREAM,
    OP_STOPPED_CHAT, /* the chat half of OP_STOP: recorded, never picked */
    OP_DELETE,
    OP_MODELS,
    OP_BALANCE,
    OP_STOP,
    OP_N,
    OP_NONE = -1
};

static const struct {
    int code;         /* the reply type that ends it (8: and a final 3) */
    const char *what; /* row label */
    int pct;          /* share of the mix */
} ops[OP_N] = {
    [OP_USER] = {0, "user_details", 12},
    [OP_SESSIONS] = {1, "list_sessions", 12},
    [OP_CHATS] = {2, "chats", 12},
    [OP_CHAT_NEW] = {3, "chat_new", 6},
    [OP_CHAT_CONT] = {3, "chat_continue", 20},
    [OP_CHAT_STREAM] = {3, "chat_stream", 8},
    [OP_STOPPED_CHAT] = {3, "chat_stopped", 0},
    [OP_DELETE] = {4, "delete_session", 5},
    [OP_MODELS] = {5, "list_models", 10},
    [OP_BALANCE] = {6, "balance", 12},
    [OP_STOP] = {8, "stop", 3},
};

/* What a running operation still waits for. */
#define AW_REPLY 1 /* the one reply of a non-chat code, or a chat's final type 3 */
#define AW_STOP 2  /* the type 8 reply to our stop */

struct conn {
    struct ws_conn ws; /* wsi, state, closing, reply assembly */
    int idx, user;
    int want_send;     /* the operation's request waits for WRITEABLE */
    int stop_due;      /* OP_STOP: the code 8 frame waits for WRITEABLE */
    int stop_sent;     /* OP_STOP: code 8 written */
    int stop_late;     /* OP_STOP: chatd answered 23, the turn had just ended */
    int final_stopped; /* OP_STOP: the final type 3 ended in [stopped] */
    enum op op;        /* running operation, OP_NONE between operations */
    int is_new;        /* the operation is a chat on session NEW */
    int awaiting;      /* AW_* bits */
    int failed_op;     /* this operation already counted an error */
    uint64_t t_send, t_stop, deadline, next_at; /* ns */
    long seq;                                   /* operations done, for message text */
    char target[40];                            /* session the operation works on */
    char sessions[SOAK_MAX_SESSIONS][40];       /* own sessions, oldest first */
    int nsess;
};

enum phase { PH_CONNECT, PH_RUN, PH_DRAIN, PH_CLOSE, PH_DONE };

struct sample {
    double t;
    long rss_kb, fds, threads;
    double cpu_s; /* chatd's user + system CPU so far */
};

static struct {
    /* options (and in pool: --url, --clients, --ramp, --verbose) */
    int max_sessions;
    double seconds, think_min, think_max, timeout, sample_every, settle;
    const char *model;
    pid_t pid;
    char (*users)[40];
    int nusers;
    uint64_t rng;

    struct ws_pool pool; /* the connections and their counts */
    struct conn *c;
    enum phase phase;
    uint64_t t_phase, t_run;
    int timeouts, unexpected;
    int errors_shown;
    long long done[OP_N], errors[OP_N], deltas, stops_late, stops_skipped;
    long long err_by_code[32];
    struct latency lat[OP_N];

    struct sample *s;
    size_t ns, cap_s;
    double next_sample;
    long long done_at_last_sample;
    unsigned char scratch[LWS_PRE + SOAK_SCRATCH];
} S;

static void die(const char *msg) { ws_die(prog, msg); }

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr, "usage: soak --url ws://HOST:PORT/PATH --users FILE [--pid CHATD_PID]\n"
                    "            [--clients N] [--seconds S] [--think-min S] [--think-max S]\n"
                    "            [--timeout S] [--sample S] [--settle S] [--max-sessions N]\n"
                    "            [--model NAME] [--ramp N] [--seed N] [--verbose]\n"
                    "FILE: one user UUID a line; client k acts as user k %% (number of lines).\n");
    exit(2);
}

/* xorshift64*: reproducible with --seed, good enough for a mix. */
static uint64_t rnd(void)
{
    S.rng ^= S.rng >> 12;
    S.rng ^= S.rng << 25;
    S.rng ^= S.rng >> 27;
    return S.rng * 2685821657736338717ull;
}

static double rnd_unit(void) { return (double)(rnd() >> 11) / (double)(1ull << 53); }

/* ------------------------------------------------------------- /proc */

static long proc_status(const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)S.pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = atol(line + kl + 1);
            break;
        }
    fclose(f);
    return v;
}

/* chatd's user + system CPU seconds; -1 if gone. */
static double proc_cpu_seconds(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)S.pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double loadavg1(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

/* Descriptors chatd holds, counted by kind ("socket", "pipe",
 * "anon_inode:[eventfd]", a file's path); -1 if chatd is gone. */
struct census {
    char kind[24][64];
    long n[24];
    int kinds;
    long total;
};

static long fd_census(struct census *cs)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)S.pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    if (cs != NULL)
        memset(cs, 0, sizeof(*cs));
    long total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        total++;
        if (cs == NULL)
            continue;
        char link[320], target[256];
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        char *br = strstr(target, ":[");
        if (br != NULL && (strncmp(target, "socket", 6) == 0 || strncmp(target, "pipe", 4) == 0))
            *br = '\0'; /* socket:[inode] -> socket */
        int k = 0;
        while (k < cs->kinds && strcmp(cs->kind[k], target) != 0)
            k++;
        if (k == cs->kinds) {
            if (cs->kinds == 24)
                k = 23; /* the last slot collects the rest */
            else
                snprintf(cs->kind[cs->kinds++], sizeof(cs->kind[0]), "%.63s", target);
        }
        cs->n[k]++;
    }
    closedir(d);
    if (cs != NULL)
        cs->total = total;
    return total;
}

static void census_print(const char *label, const struct census *cs)
{
    printf("%s:", label);
    for (int k = 0; k < cs->kinds; k++)
        printf(" %s=%ld", cs->kind[k], cs->n[k]);
    printf("\n");
}

static struct conn *conn_of(struct ws_conn *wc) { return lws_container_of(wc, struct conn, ws); }

/* --------------------------------------------------------------- errors */

static void show(struct conn *c, const char *why, const char *frame, size_t len)
{
    if (S.errors_shown >= SOAK_ERRORS_SHOWN)
        return;
    S.errors_shown++;
    fprintf(stderr, "%s: client %d op %s: %s%s%.*s\n", prog, c->idx,
            c->op == OP_NONE ? "-" : ops[c->op].what, why, frame != NULL ? ": " : "",
            frame != NULL ? (int)(len > 300 ? 300 : len) : 0, frame != NULL ? frame : "");
}

static void op_fail(struct conn *c, const char *why, const char *frame, size_t len)
{
    if (!c->failed_op && c->op != OP_NONE) {
        c->failed_op = 1;
        S.errors[c->op]++;
    }
    show(c, why, frame, len);
}

/* ------------------------------------------------------------ sessions */

static void session_add(struct conn *c, const char *sid)
{
    if (c->nsess == SOAK_MAX_SESSIONS) { /* cannot happen with --max-sessions <= 16 */
        memmove(c->sessions[0], c->sessions[1], sizeof(c->sessions[0]) * (SOAK_MAX_SESSIONS - 1));
        c->nsess--;
    }
    snprintf(c->sessions[c->nsess++], sizeof(c->sessions[0]), "%s", sid);
}

static void session_remove(struct conn *c, const char *sid)
{
    for (int k = 0; k < c->nsess; k++)
        if (strcmp(c->sessions[k], sid) == 0) {
            memmove(c->sessions[k], c->sessions[k + 1],
                    sizeof(c->sessions[0]) * (size_t)(c->nsess - k - 1));
            c->nsess--;
            return;
        }
}

/* ----------------------------------------------------------- the mix */

static enum op pick_op(struct conn *c)
{
    int r = (int)(rnd() % 100), acc = 0;
    enum op op = OP_USER;
    for (int k = 0; k < OP_N; k++) {
        acc += ops[k].pct;
        if (r < acc) {
            op = (enum op)k;
            break;
        }
    }
    int creates = op == OP_CHAT_NEW || op == OP_STOP;
    if (creates && c->nsess >= S.max_sessions)
        op = OP_DELETE; /* make room: delete the oldest instead */
    else if (c->nsess == 0 && (op == OP_CHATS || op == OP_CHAT_CONT || op == OP_DELETE))
        op = OP_CHAT_NEW;
    c->target[0] = '\0';
    if (op == OP_DELETE)
        memcpy(c->target, c->sessions[0], sizeof(c->target));
    else if (op == OP_CHATS || op == OP_CHAT_CONT || (op == OP_CHAT_STREAM && c->nsess > 0))
        memcpy(c->target, c->sessions[rnd() % (uint64_t)c->nsess], sizeof(c->target));
    return op;
}

static const char *long_message =
    "please write a long answer about the history of the printing press and its effect on how "
    "people in europe learned to read write argue trade and govern over the next three hundred "
    "years with examples";

/* The request of c's operation into S.scratch after LWS_PRE; its length. */
static size_t build_request(struct conn *c)
{
    char *out = (char *)S.scratch + LWS_PRE;
    const char *user = S.users[c->user];
    int n;
    switch (c->op) {
    case OP_CHAT_NEW:
    case OP_CHAT_CONT:
    case OP_CHAT_STREAM:
    case OP_STOP: {
        int stream = c->op == OP_CHAT_STREAM || c->op == OP_STOP;
        char msg[512];
        if (c->op == OP_STOP)
            snprintf(msg, sizeof(msg), "%s", long_message);
        else
            snprintf(msg, sizeof(msg), "soak client %d turn %ld: tell me something about %s",
                     c->idx, c->seq, stream ? "rivers and the towns built along them" : "numbers");
        n = snprintf(out, SOAK_SCRATCH,
                     "{\"type\":3,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\","
                     "\"model_name\":\"%s\",\"message\":\"%s\",\"session_prompt\":\"%s\","
                     "\"file_name\":\"\"%s}}",
                     user, c->target[0] ? c->target : "NEW", S.model, msg,
                     c->target[0] ? "" : "You are a soak test.", stream ? ",\"stream\":true" : "");
        break;
    }
    case OP_CHATS:
    case OP_DELETE:
        n = snprintf(out, SOAK_SCRATCH,
                     "{\"type\":%d,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\"}}",
                     ops[c->op].code, user, c->target);
        break;
    default:
        n = snprintf(out, SOAK_SCRATCH, "{\"type\":%d,\"data\":{\"user_id\":\"%s\"}}",
                     ops[c->op].code, user);
        break;
    }
    return n > 0 && n < SOAK_SCRATCH ? (size_t)n : 0;
}

static size_t build_stop(struct conn *c)
{
    int n = snprintf((char *)S.scratch + LWS_PRE, SOAK_SCRATCH,
                     "{\"type\":8,\"data\":{\"user_id\":\"%s\",\"session_id\":\"%s\"}}",
                     S.users[c->user], c->target);
    return n > 0 && n < SOAK_SCRATCH ? (size_t)n : 0;
}

static void think(struct conn *c)
{
    double t = S.think_min + (S.think_max - S.think_min) * rnd_unit();
    c->next_at = ws_now_ns() + (uint64_t)(t * 1e9);
}

/* c's operation has all its answers (or failed for good). */
static void op_end(struct conn *c)
{
    c->op = OP_NONE;
    c->awaiting = 0;
    c->want_send = c->stop_due = c->stop_sent = c->stop_late = c->final_stopped = 0;
    c->seq++;
    think(c);
}

static void start_op(struct conn *c)
{
    c->op = pick_op(c);
    c->failed_op = 0;
    c->is_new = ops[c->op].code == 3 && c->target[0] == '\0';
    if (c->op == OP_STOP)
        c->is_new = 1;
    c->awaiting = AW_REPLY | (c->op == OP_STOP ? AW_STOP : 0);
    c->deadline = ws_now_ns() + (uint64_t)(S.timeout * 1e9); /* reset when written */
    c->want_send = 1;
    lws_callback_on_writable(c->ws.wsi);
}

static int write_frame(struct conn *c, size_t len)
{
    if (ws_send_text(prog, c->ws.wsi, S.scratch, len) != 0) {
        op_fail(c, "write failed", NULL, 0);
        return -1;
    }
    return 0;
}

/* The pool's on_writeable (it closes a closing connection itself). */
static int conn_write(struct ws_conn *wc)
{
    struct conn *c = conn_of(wc);
    if (c->want_send) {
        c->want_send = 0;
        size_t len = build_request(c);
        c->t_send = ws_now_ns();
        c->deadline = c->t_send + (uint64_t)(S.timeout * 1e9);
        if (write_frame(c, len) != 0)
            return -1;
        if (c->stop_due) /* cannot be yet, but keep the order if it were */
            lws_callback_on_writable(c->ws.wsi);
        return 0;
    }
    if (c->stop_due) {
        c->stop_due = 0;
        c->stop_sent = 1;
        c->t_stop = ws_now_ns();
        return write_frame(c, build_stop(c));
    }
    return 0;
}

/* ------------------------------------------------------------- replies */

static int is_uuid(const char *s) { return s != NULL && strlen(s) == 36; }

/* Does the reply's data have the shape of an answer to code `type`? */
static int shape_ok(int type, json_t *data)
{
    switch (type) {
    case 0:
        return json_is_string(json_object_get(data, "username"));
    case 1:
        return json_is_array(json_object_get(data, "session_info"));
    case 2:
        return json_is_string(json_object_get(data, "chat"));
    case 3:
        return is_uuid(json_string_value(json_object_get(data, "session_id"))) &&
               json_is_string(json_object_get(data, "message"));
    case 4:
        return json_is_string(json_object_get(data, "user_id"));
    case 5:
        return json_is_array(json_object_get(data, "models"));
    case 6:
        return json_is_number(json_object_get(data, "balance"));
    case 8:
        return json_is_true(json_object_get(data, "stopped"));
    default:
        return 0;
    }
}

static void finish_part(struct conn *c, int bit)
{
    c->awaiting &= ~bit;
    if (c->awaiting == 0)
        op_end(c);
}

/* OP_STOP's final type 3 arrived (its latency is recorded by the caller). */
static void stopped_chat_final(struct conn *c, const char *m, const char *frame, size_t len)
{
    size_t ml = strlen(m);
    c->final_stopped = ml >= 9 && strcmp(m + ml - 9, "[stopped]") == 0;
    if (!c->stop_sent) {
        /* It ended before its first delta reached us, or before our stop
         * went out: nothing to stop any more. */
        c->stop_due = 0;
        c->awaiting &= ~AW_STOP;
        S.stops_skipped++;
    } else if (c->final_stopped && c->stop_late) {
        op_fail(c, "[stopped] reply after No Chat In Progress", frame, len);
    } else if (!c->final_stopped && !c->stop_late && !(c->awaiting & AW_STOP)) {
        op_fail(c, "stop acknowledged, but the final reply came unstopped", frame, len);
    }
    /* Unstopped with the stop's answer still to come: a 23 will say the
     * stop crossed the turn's end. */
}

/* The pool's on_frame: a whole reply arrived (NULL: over SOAK_MAX_FRAME). */
static void on_frame(struct ws_conn *wc, const char *frame, size_t len)
{
    struct conn *c = conn_of(wc);
    uint64_t t = ws_now_ns();
    if (frame == NULL) {
        op_fail(c, "reply over 16 MiB", NULL, 0);
        return;
    }
    json_t *root = json_loadb(frame, len, 0, NULL);
    if (c->op == OP_NONE) {
        S.unexpected++;
        show(c, "frame while idle", frame, len);
        json_decref(root);
        return;
    }
    if (root == NULL) {
        op_fail(c, "reply is not JSON", frame, len);
        finish_part(c, c->awaiting); /* give up on this operation */
        return;
    }
    int type = (int)json_integer_value(json_object_get(root, "type"));
    json_t *data = json_object_get(root, "data");
    json_t *err = json_object_get(root, "error");
    int chat = ops[c->op].code == 3 || c->op == OP_STOP;

    if (err != NULL) {
        int code = (int)json_integer_value(json_object_get(root, "code"));
        if (c->op == OP_STOP && type == 8 && code == 23 && (c->awaiting & AW_STOP)) {
            /* Our stop crossed the turn's end: not chatd's fault, and the
             * final 3 (unstopped) comes or came anyway. */
            c->stop_late = 1;
            S.stops_late++;
            if (!(c->awaiting & AW_REPLY) && c->final_stopped)
                op_fail(c, "No Chat In Progress after a [stopped] reply", frame, len);
            finish_part(c, AW_STOP);
        } else {
            S.err_by_code[code >= 0 && code < 32 ? code : 31]++;
            op_fail(c, "error reply", frame, len);
            if (type == 8)
                finish_part(c, AW_STOP);
            else
                finish_part(c, c->awaiting); /* a failed chat sends no final 3 */
        }
    } else if (type == 7 && chat) {
        S.deltas++;
        const char *sid = json_string_value(json_object_get(data, "session_id"));
        if (!is_uuid(sid) || !json_is_string(json_object_get(data, "delta")))
            op_fail(c, "malformed delta", frame, len);
        else if (c->is_new && c->target[0] == '\0')
            memcpy(c->target, sid, 37); /* the session to stop */
        else if (strcmp(sid, c->target) != 0)
            op_fail(c, "delta names another session", frame, len);
        if (c->op == OP_STOP && c->target[0] && !c->stop_sent && !c->stop_due) {
            c->stop_due = 1;
            lws_callback_on_writable(c->ws.wsi);
        }
    } else if (type == 8 && c->op == OP_STOP && (c->awaiting & AW_STOP)) {
        if (!shape_ok(8, data)) {
            op_fail(c, "malformed stop reply", frame, len);
        } else {
            latency_add(&S.lat[OP_STOP], t - c->t_stop);
            S.done[OP_STOP]++;
            if (!(c->awaiting & AW_REPLY) && !c->final_stopped)
                op_fail(c, "stop acknowledged, but the final reply came unstopped", frame, len);
        }
        finish_part(c, AW_STOP);
    } else if (type == ops[c->op].code || (type == 3 && c->op == OP_STOP)) {
        if (!(c->awaiting & AW_REPLY)) {
            S.unexpected++;
            op_fail(c, "second reply", frame, len);
        } else if (!shape_ok(type, data)) {
            op_fail(c, "malformed reply", frame, len);
            finish_part(c, c->awaiting);
        } else {
            enum op row = c->op == OP_STOP ? OP_STOPPED_CHAT : c->op;
            if (type == 3) {
                const char *sid = json_string_value(json_object_get(data, "session_id"));
                if (c->is_new && c->target[0] == '\0')
                    memcpy(c->target, sid, 37);
                if (c->is_new)
                    session_add(c, sid);
                if (strcmp(sid, c->target) != 0)
                    op_fail(c, "reply names another session", frame, len);
                if (c->op == OP_STOP)
                    stopped_chat_final(c, json_string_value(json_object_get(data, "message")),
                                       frame, len);
            } else if (type == 4) {
                session_remove(c, c->target);
            }
            latency_add(&S.lat[row], t - c->t_send);
            S.done[row]++;
            finish_part(c, AW_REPLY);
        }
    } else {
        S.unexpected++;
        op_fail(c, "unexpected reply type", frame, len);
    }
    json_decref(root);
}

/* -------------------------------------------------------------- lws glue */

/* The pool's on_dead; it has counted the failure or the close already. */
static void conn_dead(struct ws_conn *wc, enum ws_state was)
{
    struct conn *c = conn_of(wc);
    if (was == WS_OPEN && !c->ws.closing && c->op != OP_NONE)
        op_fail(c, "connection closed by chatd", NULL, 0);
    c->op = OP_NONE;
}

static void say_closed(struct ws_conn *wc)
{
    fprintf(stderr, "%s: client %d: connection closed by chatd\n", prog, conn_of(wc)->idx);
}

static const struct ws_hooks hooks = {on_frame, conn_write, conn_dead, say_closed};

/* ------------------------------------------------------------- phases */

static long long total_done(void)
{
    long long n = 0;
    for (int k = 0; k < OP_N; k++)
        n += S.done[k];
    return n;
}

static long long total_errors(void)
{
    long long n = 0;
    for (int k = 0; k < OP_N; k++)
        n += S.errors[k];
    return n;
}

static void take_sample(double t)
{
    if (S.pid <= 0)
        return;
    if (S.ns == S.cap_s) {
        S.cap_s = S.cap_s ? S.cap_s * 2 : 128;
        S.s = realloc(S.s, S.cap_s * sizeof(*S.s));
        if (S.s == NULL)
            die("out of memory");
    }
    struct sample *x = &S.s[S.ns++];
    x->t = t;
    x->rss_kb = proc_status("VmRSS");
    x->fds = fd_census(NULL);
    x->threads = proc_status("Threads");
    x->cpu_s = proc_cpu_seconds();
    long long d = total_done();
    double dt = S.ns > 1 ? t - S.s[S.ns - 2].t : 0;
    printf("sample t=%.0f rss_kb=%ld fds=%ld threads=%ld open=%d requests=%lld errors=%lld"
           " rps=%.0f chatd_cpu=%.0f%% load1=%.2f\n",
           t, x->rss_kb, x->fds, x->threads, S.pool.open, d, total_errors(),
           dt > 0 ? (double)(d - S.done_at_last_sample) / dt : 0.0,
           dt > 0 ? (x->cpu_s - S.s[S.ns - 2].cpu_s) / dt * 100 : 0.0, loadavg1());
    fflush(stdout);
    S.done_at_last_sample = d;
    if (x->rss_kb < 0)
        fprintf(stderr, "%s: chatd (pid %d) is gone\n", prog, (int)S.pid);
}

static void set_phase(enum phase p)
{
    S.phase = p;
    S.t_phase = ws_now_ns();
    if (p == PH_RUN) {
        S.t_run = S.t_phase;
        /* Spread the first requests over one think time. */
        for (int k = 0; k < S.pool.n; k++)
            S.c[k].next_at = S.t_run + (uint64_t)(S.think_max * rnd_unit() * 1e9);
        S.next_sample = 0;
    }
    if (p == PH_CLOSE)
        ws_pool_close_all(&S.pool);
}

static int busy_count(void)
{
    int n = 0;
    for (int k = 0; k < S.pool.n; k++)
        n += S.c[k].ws.state == WS_OPEN && S.c[k].op != OP_NONE;
    return n;
}

static void check_timeouts(uint64_t now)
{
    for (int k = 0; k < S.pool.n; k++) {
        struct conn *c = &S.c[k];
        if (c->ws.state != WS_OPEN || c->ws.closing || c->op == OP_NONE || now < c->deadline)
            continue;
        S.timeouts++;
        op_fail(c, "no reply within --timeout; closing this client", NULL, 0);
        /* Its replies would be out of step from now on. */
        c->ws.closing = 1;
        c->op = OP_NONE;
        lws_callback_on_writable(c->ws.wsi);
    }
}

/* The phase machine; runs every tick. Nonzero when done. */
static int step(void)
{
    uint64_t now = ws_now_ns();
    if (ws_interrupted && S.phase < PH_DRAIN) {
        fprintf(stderr, "%s: interrupted; draining\n", prog);
        set_phase(PH_DRAIN);
    }
    switch (S.phase) {
    case PH_CONNECT:
        ws_pool_connect_more(&S.pool);
        if (ws_pool_all_tried(&S.pool)) {
            printf("connected clients=%d open=%d failed=%d in %.1f s\n", S.pool.n, S.pool.open,
                   S.pool.failed, ws_secs_since(S.t_phase));
            fflush(stdout);
            set_phase(S.pool.open > 0 ? PH_RUN : PH_CLOSE);
        } else if (ws_secs_since(S.t_phase) > S.timeout + 30) {
            fprintf(stderr, "%s: %d handshakes still pending; giving up\n", prog,
                    S.pool.connecting);
            set_phase(PH_CLOSE);
        }
        break;
    case PH_RUN: {
        double t = (double)(now - S.t_run) / 1e9;
        if (t >= S.next_sample) {
            take_sample(t);
            S.next_sample += S.sample_every;
        }
        for (int k = 0; k < S.pool.n; k++) {
            struct conn *c = &S.c[k];
            if (c->ws.state == WS_OPEN && !c->ws.closing && c->op == OP_NONE && now >= c->next_at)
                start_op(c);
        }
        check_timeouts(now);
        if (t >= S.seconds)
            set_phase(PH_DRAIN);
        break;
    }
    case PH_DRAIN:
        check_timeouts(now);
        if (busy_count() == 0) {
            double t = (double)(now - S.t_run) / 1e9;
            if (S.ns == 0 || t - S.s[S.ns - 1].t >= 1)
                take_sample(t); /* the series ends under load, all clients still open */
            set_phase(PH_CLOSE);
        }
        break;
    case PH_CLOSE:
        if (S.pool.open == 0 && S.pool.connecting == 0)
            S.phase = PH_DONE;
        else if (ws_secs_since(S.t_phase) >= 15) {
            fprintf(stderr, "%s: %d connections still open 15 s after closing\n", prog,
                    S.pool.open);
            S.phase = PH_DONE;
        }
        break;
    case PH_DONE:
        break;
    }
    return S.phase == PH_DONE;
}

/* ---------------------------------------------------------------- set-up */

static void read_users(const char *file)
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        die("cannot open --users file");
    char line[256];
    int cap = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, " \t\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (strlen(line) != 36)
            die("--users: every line must be one user UUID");
        ws_check_plain(prog, "--users line", line);
        if (S.nusers == cap) {
            cap = cap ? cap * 2 : 64;
            S.users = realloc(S.users, (size_t)cap * sizeof(*S.users));
            if (S.users == NULL)
                die("out of memory");
        }
        memcpy(S.users[S.nusers++], line, 37);
    }
    fclose(f);
    if (S.nusers == 0)
        die("--users: no user in the file");
}

/* The series' summary: RSS first/min/max/last, and growth from the first
 * sample at or after `from` seconds to the last one, with the least-squares
 * slope over that stretch. */
static void rss_summary(void)
{
    if (S.ns == 0)
        return;
    long mn = S.s[0].rss_kb, mx = S.s[0].rss_kb;
    for (size_t k = 0; k < S.ns; k++) {
        mn = S.s[k].rss_kb < mn ? S.s[k].rss_kb : mn;
        mx = S.s[k].rss_kb > mx ? S.s[k].rss_kb : mx;
    }
    /* "From the 2nd minute": warm-up (caches, pools, allocator arenas) is
     * over by then. Short runs use their first third instead. */
    double last_t = S.s[S.ns - 1].t;
    double from = last_t >= 240 ? 120 : last_t / 3;
    size_t r = 0;
    while (r + 1 < S.ns && S.s[r].t < from)
        r++;
    double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t k = r; k < S.ns; k++) {
        double x = S.s[k].t / 60, y = (double)S.s[k].rss_kb;
        n++, sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    double den = n * sxx - sx * sx;
    double slope = n >= 2 && den > 0 ? (n * sxy - sx * sy) / den : 0;
    printf("rss_kb first=%ld min=%ld max=%ld last=%ld samples=%zu from_t=%.0f from_kb=%ld"
           " growth_kb=%ld slope_kb_per_min=%.1f\n",
           S.s[0].rss_kb, mn, mx, S.s[S.ns - 1].rss_kb, S.ns, S.s[r].t, S.s[r].rss_kb,
           S.s[S.ns - 1].rss_kb - S.s[r].rss_kb, slope);
}

/* --seed: mixed into the generator, so a run can be repeated. */
static void seed_opt(const char *v) { S.rng ^= (uint64_t)atoll(v) * 0xD6E8FEB86659FD93ull; }

int main(int argc, char **argv)
{
    const char *url = NULL, *users = NULL;
    S.pool.prog = prog;
    S.pool.hooks = &hooks;
    S.pool.max_frame = SOAK_MAX_FRAME;
    S.pool.n = 1000;
    S.seconds = 600;
    S.think_min = 0.5;
    S.think_max = 1.5;
    S.timeout = 30;
    S.sample_every = 10;
    S.settle = 5;
    S.max_sessions = 3;
    S.pool.ramp = 64;
    S.model = "llama3.1:8b";
    S.rng = 0x9E3779B97F4A7C15ull;
    const struct opt opts[] = {
        {"--url", OPT_STR, &url, NULL},
        {"--users", OPT_STR, &users, NULL},
        {"--pid", OPT_INT, &S.pid, NULL},
        {"--clients", OPT_INT, &S.pool.n, NULL},
        {"--seconds", OPT_DOUBLE, &S.seconds, NULL},
        {"--think-min", OPT_DOUBLE, &S.think_min, NULL},
        {"--think-max", OPT_DOUBLE, &S.think_max, NULL},
        {"--timeout", OPT_DOUBLE, &S.timeout, NULL},
        {"--sample", OPT_DOUBLE, &S.sample_every, NULL},
        {"--settle", OPT_DOUBLE, &S.settle, NULL},
        {"--max-sessions", OPT_INT, &S.max_sessions, NULL},
        {"--model", OPT_STR, &S.model, NULL},
        {"--ramp", OPT_INT, &S.pool.ramp, NULL},
        {"--seed", OPT_CALL, NULL, seed_opt},
        {"--verbose", OPT_FLAG, &S.pool.verbose, NULL},
        {NULL, OPT_FLAG, NULL, NULL},
    };
    opts_parse(argc, argv, opts, usage);
    if (url == NULL || users == NULL || S.pool.n < 1 || S.seconds <= 0 || S.think_min < 0 ||
        S.think_max < S.think_min || S.timeout <= 0 || S.sample_every <= 0 || S.pool.ramp < 1 ||
        S.max_sessions < 1 || S.max_sessions > SOAK_MAX_SESSIONS)
        usage();
    if (S.rng == 0)
        S.rng = 1;
    ws_check_plain(prog, "--model", S.model);
    ws_parse_url(prog, url, &S.pool.url);
    read_users(users);
    if (S.pid > 0 && proc_status("VmRSS") < 0)
        die("--pid: no such process, or its /proc/PID/status is unreadable");

    S.c = ws_pool_init(&S.pool, sizeof(*S.c), offsetof(struct conn, ws));
    for (int k = 0; k < S.pool.n; k++) {
        S.c[k].idx = k;
        S.c[k].user = k % S.nusers;
        S.c[k].op = OP_NONE;
    }

    printf("soak clients=%d users=%d seconds=%.0f think=%.2f-%.2fs timeout=%.0fs mix:", S.pool.n,
           S.nusers, S.seconds, S.think_min, S.think_max, S.timeout);
    for (int k = 0; k < OP_N; k++)
        if (ops[k].pct > 0)
            printf(" %s=%d%%", ops[k].what, ops[k].pct);
    printf("\n");

    struct census base = {0}, end = {0};
    long rss_base = -1;
    if (S.pid > 0) {
        rss_base = proc_status("VmRSS");
        fd_census(&base);
        printf("baseline rss_kb=%ld fds=%ld threads=%ld (before any client connects)\n", rss_base,
               base.total, proc_status("Threads"));
        fflush(stdout);
    }

    ws_pool_start(&S.pool);
    set_phase(PH_CONNECT);
    ws_pool_run(&S.pool, step, SOAK_TICK_US); /* every socket of ours is closed past here */
    double run_s = S.t_run ? (double)(S.t_phase - S.t_run) / 1e9 : 0;

    /* Results. */
    printf("%-15s %4s %9s %6s %9s %9s %9s %9s\n", "what", "code", "requests", "errors", "p50_ms",
           "p95_ms", "p99_ms", "max_ms");
    struct latency all3 = {0};
    long long n3 = 0, e3 = 0;
    for (int k = 0; k < OP_N; k++) {
        struct latency *l = &S.lat[k];
        latency_sort(l);
        printf("%-15s %4d %9lld %6lld %9.1f %9.1f %9.1f %9.1f\n", ops[k].what, ops[k].code,
               S.done[k], S.errors[k], latency_pct(l, 50) / 1e3, latency_pct(l, 95) / 1e3,
               latency_pct(l, 99) / 1e3, latency_pct(l, 100) / 1e3);
        if (ops[k].code == 3) {
            for (size_t j = 0; j < l->n; j++)
                latency_add(&all3, (uint64_t)l->us[j] * 1000);
            n3 += S.done[k];
            e3 += S.errors[k];
        }
    }
    latency_sort(&all3);
    printf("%-15s %4d %9lld %6lld %9.1f %9.1f %9.1f %9.1f\n", "chat_all", 3, n3, e3,
           latency_pct(&all3, 50) / 1e3, latency_pct(&all3, 95) / 1e3, latency_pct(&all3, 99) / 1e3,
           latency_pct(&all3, 100) / 1e3);
    latency_free(&all3);
    long long done = total_done(), errors = total_errors();
    printf("totals requests=%lld errors=%lld rps=%.1f run_s=%.1f deltas=%lld stops_late=%lld"
           " stops_skipped=%lld timeouts=%d unexpected_frames=%d connect_failed=%d"
           " closed_by_server=%d cpu_s=%.1f\n",
           done, errors, run_s > 0 ? (double)done / run_s : 0, run_s, S.deltas, S.stops_late,
           S.stops_skipped, S.timeouts, S.unexpected, S.pool.failed, S.pool.closed_by_peer,
           measure_cpu_seconds());
    if (errors > 0) {
        printf("error replies by code:");
        for (int k = 0; k < 32; k++)
            if (S.err_by_code[k])
                printf(" %d=%lld", k, S.err_by_code[k]);
        printf("\n");
    }

    int fds_ok = 1;
    if (S.pid > 0) {
        rss_summary();
        long peak = base.total;
        for (size_t k = 0; k < S.ns; k++)
            peak = S.s[k].fds > peak ? S.s[k].fds : peak;
        fflush(stdout);
        usleep((useconds_t)(S.settle * 1e6));
        long after = fd_census(&end);
        long rss_end = proc_status("VmRSS");
        fds_ok = after >= 0 && after <= base.total;
        printf("fds baseline=%ld peak=%ld after_close=%ld (%.0f s after the last client closed)"
               " %s\n",
               base.total, peak, after, S.settle, fds_ok ? "ok" : "NOT BACK TO BASELINE");
        printf("rss_kb baseline=%ld after_close=%ld\n", rss_base, rss_end);
        if (!fds_ok && after >= 0) {
            census_print("fds at baseline by kind", &base);
            census_print("fds after close by kind", &end);
        }
    }
    int ok = errors == 0 && S.pool.failed == 0 && S.pool.closed_by_peer == 0 && S.timeouts == 0 &&
             S.unexpected == 0 && fds_ok && !ws_interrupted;
    printf("result %s\n", ok ? "ok" : "FAIL");

    ws_pool_free(&S.pool);
    for (int k = 0; k < OP_N; k++)
        latency_free(&S.lat[k]);
    free(S.s);
    free(S.users);
    return ok ? 0 : 1;
}
