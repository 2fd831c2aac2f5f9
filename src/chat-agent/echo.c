/* echo.c - the deterministic "echo" back end.
 *
 * The reply is derived from the request alone, so tests can predict it:
 *   echo: <message> [history=<entries> summary=<bytes> files=<n>]
 * (a message of several lines: "echo:", the message, then the bracket,
 * each on a line of its own).
 * ProcessStream sends it word by word with AGENT_DELAY_MS spread evenly over
 * the words (each piece is a word plus the spaces after it, so the pieces
 * concatenate to the reply exactly); Process sends it whole after the delay.
 * Title answers with the first ECHO_TITLE_WORDS words of the user message
 * in double quotes (chatd removes them), after AGENT_DELAY_MS.
 * Delays are timer entries, never sleeps: see timer.c. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_agent.h"
#include "lib/log.h"

#define ECHO_SUMMARY_TAKE 40  /* bytes of the user message per turn */
#define ECHO_SUMMARY_MAX 1000 /* bytes of the whole summary */
#define ECHO_TITLE_WORDS 6

struct echo_job {
    struct ca_call *k;
    char *reply;
    size_t len;
    size_t pos; /* bytes pushed so far */
    size_t n_pieces;
    size_t piece; /* pieces pushed so far */
    uint64_t start_ms;
    double cost;
};

/* Largest n <= len such that s[0..n) does not end inside a UTF-8
 * character; s[len] must be readable. */
static size_t echo_utf8_cut(const char *s, size_t len)
{
    while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
        len--;
    return len;
}

/* Entries of a chat_history JSON array (empty: 0), -1 when malformed. */
static long echo_history_len(const char *json)
{
    if (!json || !*json)
        return 0;
    json_error_t err;
    json_t *j = json_loads(json, 0, &err);
    long n = j && json_is_array(j) ? (long)json_array_size(j) : -1;
    json_decref(j);
    return n;
}

static char *echo_reply_text(const AiService__Request *r, int *status, const char **details)
{
    long hist = echo_history_len(r->chat_history);
    if (hist < 0) {
        *status = GRPC_STATUS_INVALID_ARGUMENT;
        *details = "chat_history is not a JSON array";
        return NULL;
    }
    /* A message of several lines is given back on lines of its own, byte
     * for byte: after "echo: " a Markdown fence or list would not start a
     * line, and the page would show a code block typed in as one
     * paragraph. */
    int lines = strchr(r->chat_message, '\n') != NULL;
    char *out = NULL;
    if (asprintf(&out,
                 lines ? "echo:\n%s\n[history=%ld summary=%zu files=%zu]"
                       : "echo: %s [history=%ld summary=%zu files=%zu]",
                 r->chat_message, hist, strlen(r->chat_summary), r->n_file_name) < 0) {
        *status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        *details = "out of memory";
        return NULL;
    }
    *status = GRPC_STATUS_OK;
    *details = NULL;
    return out;
}

static char *echo_summary_text(const AiService__SummaryRequest *r)
{
    size_t plen = strlen(r->previous_summary);
    size_t take = strlen(r->user_message);
    if (take > ECHO_SUMMARY_TAKE)
        take = echo_utf8_cut(r->user_message, ECHO_SUMMARY_TAKE);
    const char *sep = plen > 0 ? " | " : "";
    char *out = malloc(plen + strlen(sep) + take + 1);
    if (!out)
        return NULL;
    memcpy(out, r->previous_summary, plen);
    memcpy(out + plen, sep, strlen(sep));
    memcpy(out + plen + strlen(sep), r->user_message, take);
    size_t len = plen + strlen(sep) + take;
    out[len] = '\0';
    if (len > ECHO_SUMMARY_MAX)
        out[echo_utf8_cut(out, ECHO_SUMMARY_MAX)] = '\0';
    return out;
}

/* End of the piece that starts at pos: the word, then the spaces after it. */
static size_t echo_piece_end(const char *s, size_t len, size_t pos)
{
    while (pos < len && s[pos] != ' ')
        pos++;
    while (pos < len && s[pos] == ' ')
        pos++;
    return pos;
}

static void echo_job_free(struct echo_job *j)
{
    ca_call_unref(j->k);
    free(j->reply);
    free(j);
}

/* Pushes the next piece (stream) or the whole reply (unary); returns 1 when
 * the reply is complete. */
static int echo_step(struct echo_job *j)
{
    size_t end =
        ca_call_method(j->k) == CA_STREAM ? echo_piece_end(j->reply, j->len, j->pos) : j->len;
    const char *piece = j->reply + j->pos;
    size_t n = end - j->pos;
    j->pos = end;
    j->piece++;
    if (j->pos < j->len) {
        if (ca_cfg.stamp_deltas) {
            /* The word, "@", the wall-clock time of sending in µs: what
             * bench/streambench.c measures delivery lag against. */
            char stamped[256];
            size_t word = n;
            while (word > 0 && piece[word - 1] == ' ')
                word--;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int m = snprintf(stamped, sizeof(stamped), "%.*s@%llu ", (int)(word > 200 ? 200 : word),
                             piece,
                             (unsigned long long)ts.tv_sec * 1000000ull +
                                 (unsigned long long)ts.tv_nsec / 1000ull);
            ca_call_push(j->k, stamped, (size_t)m);
        } else {
            ca_call_push(j->k, piece, n);
        }
        return 0;
    }
    ca_call_finish_text(j->k, piece, n, GRPC_STATUS_OK, NULL, j->cost);
    return 1;
}

static uint64_t echo_due(const struct echo_job *j)
{
    if (ca_cfg.delta_ms > 0 && ca_call_method(j->k) == CA_STREAM) /* a steady pace per piece */
        return j->start_ms + (uint64_t)ca_cfg.delta_ms * (j->piece + 1);
    size_t n = ca_call_method(j->k) == CA_STREAM ? j->n_pieces : 1;
    return j->start_ms + (uint64_t)ca_cfg.delay_ms * (j->piece + 1) / n;
}

static void echo_tick(void *arg, int fire)
{
    struct echo_job *j = arg;
    if (!fire || ca_call_is_dead(j->k) || echo_step(j)) {
        echo_job_free(j);
        return;
    }
    ca_timer_add(echo_due(j), echo_tick, j);
}

static void echo_summarize(struct ca_call *k)
{
    const AiService__SummaryRequest *r = ca_call_summary_request(k);
    char *s = echo_summary_text(r);
    if (!s) {
        ca_call_finish(k, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", 0);
        return;
    }
    size_t in =
        strlen(r->previous_summary) + strlen(r->user_message) + strlen(r->assistant_message);
    ca_call_finish_text(k, s, strlen(s), GRPC_STATUS_OK, NULL, ca_cost(in, strlen(s)));
    free(s);
}

struct echo_title_job {
    struct ca_call *k;
    char *title;
    double cost;
};

static void echo_title_send(void *arg, int fire)
{
    struct echo_title_job *t = arg;
    if (fire && !ca_call_is_dead(t->k)) /* (dropped at shutdown: as a reply is) */
        ca_call_finish_text(t->k, t->title, strlen(t->title), GRPC_STATUS_OK, NULL, t->cost);
    ca_call_unref(t->k);
    free(t->title);
    free(t);
}

/* Takes over the caller's reference to k. After AGENT_DELAY_MS, like a
 * reply, so that tests can act while a title is on its way. */
static void echo_title(struct ca_call *k)
{
    const AiService__TitleRequest *r = ca_call_title_request(k);
    const char *m = r->user_message;
    size_t end = 0;
    for (int w = 0; w < ECHO_TITLE_WORDS && m[end]; w++) {
        end += strspn(m + end, " ");
        end += strcspn(m + end, " ");
    }
    struct echo_title_job *t = calloc(1, sizeof(*t));
    if (t == NULL || asprintf(&t->title, "\"%.*s\"", (int)end, m) < 0) {
        free(t);
        ca_call_finish(k, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", 0);
        ca_call_unref(k);
        return;
    }
    t->k = k;
    t->cost = ca_cost(strlen(m) + strlen(r->assistant_message), strlen(t->title));
    if (ca_cfg.delay_ms <= 0)
        echo_title_send(t, 1);
    else
        ca_timer_add(ca_now_ms() + (uint64_t)ca_cfg.delay_ms, echo_title_send, t);
}

void echo_handle(struct ca_call *k)
{
    if (ca_call_method(k) == CA_SUMMARIZE) {
        echo_summarize(k);
        ca_call_unref(k);
        return;
    }
    if (ca_call_method(k) == CA_TITLE) {
        echo_title(k);
        return;
    }
    const AiService__Request *r = ca_call_request(k);
    int status;
    const char *details;
    char *reply = echo_reply_text(r, &status, &details);
    if (!reply) {
        ca_call_finish(k, (grpc_status_code)status, details, 0);
        ca_call_unref(k);
        return;
    }
    struct echo_job *j = calloc(1, sizeof(*j));
    if (!j) {
        free(reply);
        ca_call_finish(k, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", 0);
        ca_call_unref(k);
        return;
    }
    j->k = k;
    j->reply = reply;
    j->len = strlen(reply);
    j->start_ms = ca_now_ms();
    /* AGENT_DELTA_PHASE=random: this stream's words come at its own offset
     * within the pace, as real streams do, instead of every stream begun in
     * the same millisecond sending in step with the others. */
    if (ca_cfg.delta_ms > 0 && ca_cfg.delta_phase_random)
        j->start_ms += (uint64_t)(random() % ca_cfg.delta_ms);
    size_t in = strlen(r->chat_message) + strlen(r->session_prompt) + strlen(r->chat_summary) +
                strlen(r->chat_history);
    j->cost = ca_cost(in, j->len);
    ca_call_set_tokens(k, (uint32_t)ca_tokens(in), (uint32_t)ca_tokens(j->len));
    for (size_t p = 0; p < j->len; p = echo_piece_end(reply, j->len, p))
        j->n_pieces++;

    if (ca_cfg.delay_ms <= 0 && (ca_cfg.delta_ms <= 0 || ca_call_method(k) != CA_STREAM)) {
        while (!echo_step(j))
            ;
        echo_job_free(j);
        return;
    }
    ca_timer_add(echo_due(j), echo_tick, j);
}
