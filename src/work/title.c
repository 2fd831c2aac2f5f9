/* title.c - see title.h. */
#include "work/title.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/agent.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/lease.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/events.h"
#include "work/pool.h"

/* What a title's call is reserved for beyond its two texts: the
 * instructions and framing of the request (tokens in), and its answer. */
#define TITLE_IN_EXTRA 256
#define TITLE_OUT_TOKENS 256

struct title_job {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    char *user_id, *session_id, *model_name, *provider, *user_message, *assistant_message;
    int model_id;
    long long seq;
    char *raw; /* the agent's answer; NULL when it failed */
    char cost[UTIL_MONEY_MAX];
    /* Its reservation (migration 0013), held while the call runs. */
    char hold_id[UUID_STR_LEN + 1];
};

static void title_job_free(struct title_job *j)
{
    free(j->user_id);
    free(j->session_id);
    free(j->model_name);
    free(j->provider);
    free(j->user_message);
    free(j->assistant_message);
    free(j->raw);
    free(j);
}

/* ------------------------------------------------------------- cleaning */

/* Removes <tag>...</tag> blocks of the reasoning tags models emit, an
 * unclosed one to the end, and everything before a closing tag whose
 * opening one never came (some servers strip only the opening tag). In
 * place. */
static void strip_reasoning(char *s)
{
    static const char *const tags[] = {"think", "thinking", "reasoning", "reflection"};
    for (size_t t = 0; t < sizeof(tags) / sizeof(tags[0]); t++) {
        char open[24], close[24];
        snprintf(open, sizeof(open), "<%s>", tags[t]);
        snprintf(close, sizeof(close), "</%s>", tags[t]);
        size_t cl = strlen(close);
        char *c;
        /* an orphan closing tag: what precedes it is reasoning */
        while ((c = strcasestr(s, close)) != NULL) {
            char *o = strcasestr(s, open);
            if (o != NULL && o < c) {
                memmove(o, c + cl, strlen(c + cl) + 1); /* a whole block */
            } else {
                memmove(s, c + cl, strlen(c + cl) + 1);
            }
        }
        char *o = strcasestr(s, open);
        if (o != NULL)
            *o = '\0'; /* never closed */
    }
}

/* Removes one matching pair of wrapping quotes or marks; 1 when it did. */
static int unwrap(char *s, size_t *n)
{
    static const char *const pairs[][2] = {
        {"\"", "\""},
        {"'", "'"},
        {"`", "`"},
        {"*", "*"},
        {"_", "_"},
        {"\xe2\x80\x9c", "\xe2\x80\x9d"}, /* “ ” */
        {"\xe2\x80\x98", "\xe2\x80\x99"}, /* ‘ ’ */
        {"\xc2\xab", "\xc2\xbb"},         /* « » */
        {"\xe2\x80\x9e", "\xe2\x80\x9c"}, /* „ “ */
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        size_t a = strlen(pairs[i][0]), b = strlen(pairs[i][1]);
        if (*n >= a + b && memcmp(s, pairs[i][0], a) == 0 &&
            memcmp(s + *n - b, pairs[i][1], b) == 0) {
            memmove(s, s + a, *n - a - b);
            *n -= a + b;
            s[*n] = '\0';
            return 1;
        }
    }
    return 0;
}

static void trim(char *s, size_t *n)
{
    size_t i = 0;
    while (i < *n && s[i] == ' ')
        i++;
    memmove(s, s + i, *n - i);
    *n -= i;
    while (*n > 0 && s[*n - 1] == ' ')
        (*n)--;
    s[*n] = '\0';
}

int title_clean(const char *raw, char *out, size_t cap)
{
    if (raw == NULL || cap < TITLE_MAX_BYTES ||
        !util_utf8_valid((const unsigned char *)raw, strlen(raw)))
        return -1;
    char *s = strdup(raw);
    if (s == NULL)
        return -1;
    strip_reasoning(s);
    /* Quotes around the whole answer first: a quoted title that runs over
     * several lines would otherwise keep its opening quote alone. */
    size_t lead = strspn(s, " \t\r\n"), whole = strlen(s + lead);
    memmove(s, s + lead, whole + 1);
    while (whole > 0 && strchr(" \t\r\n", s[whole - 1]) != NULL)
        s[--whole] = '\0';
    while (unwrap(s, &whole))
        trim(s, &whole);

    /* The first line with something on it. */
    char *line = s;
    for (;;) {
        size_t len = strcspn(line, "\r\n");
        if (strspn(line, " \t") < len || line[len] == '\0') {
            line[len] = '\0';
            break;
        }
        line += len + 1;
    }
    /* Control characters (C0, DEL, C1, U+2028/9) and tabs become spaces;
     * runs of spaces one. */
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)line; *p != '\0'; p++) {
        int ctl = 0, skip = 0;
        if (*p < 0x20 || *p == 0x7f)
            ctl = 1;
        else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            ctl = 1, skip = 1;
        else if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
            ctl = 1, skip = 2;
        p += skip;
        char c = ctl ? ' ' : (char)*p;
        if (c == ' ' && (n == 0 || line[n - 1] == ' '))
            continue;
        line[n++] = c;
    }
    line[n] = '\0';
    trim(line, &n);
    /* Markdown heading marks, a "Title:" label, then wrapping quotes
     * (several layers: **"Title"**). */
    while (n > 0 && line[0] == '#') {
        memmove(line, line + 1, n--);
    }
    trim(line, &n);
    if (strncasecmp(line, "title:", 6) == 0) {
        memmove(line, line + 6, n - 5);
        n -= 6;
        trim(line, &n);
    }
    while (unwrap(line, &n))
        trim(line, &n);
    /* A sentence's full stop is not part of a title. */
    while (n > 0 && line[n - 1] == '.')
        line[--n] = '\0';
    trim(line, &n);

    int rc = -1;
    if (n > 0) {
        size_t keep = proto_utf8_prefix(line, TITLE_MAX_CHARS);
        line[keep] = '\0';
        n = keep;
        trim(line, &n);
        if (n > 0) {
            memcpy(out, line, n + 1);
            rc = 0;
        }
    }
    free(s);
    return rc;
}

/* ----------------------------------------------------------------- job */

/* On a worker: store the title (unless renamed meanwhile), charge it. */
static void title_run(struct worker *w, struct pool_job *job)
{
    struct title_job *j = (struct title_job *)job;
    char title[TITLE_MAX_BYTES];
    if (j->raw != NULL && title_clean(j->raw, title, sizeof(title)) == 0) {
        uint64_t xid = 0;
        enum db_status st = db_title_set(&w->pg, j->user_id, j->session_id, title, &xid);
        if (st == DB_OK) {
            cache_saw_write(&w->cache, j->user_id, xid);
            log_info("event=session_titled session=%s", j->session_id);
            events_emit(j->app, j->user_id,
                        json_pack("{s:s, s:s, s:s}", "kind", "session_renamed", "session_id",
                                  j->session_id, "session_name", title));
        } else if (st == DB_NOT_FOUND) {
            log_info("event=title_skipped session=%s reason=renamed_or_deleted", j->session_id);
        }
    } else if (j->raw != NULL) {
        log_info("event=title_skipped session=%s reason=empty_after_cleaning", j->session_id);
    }
    /* What the agent spent on it is spent, used or not; the charge
     * settles the reservation, which is given back when nothing was. */
    if (strcmp(j->cost, "0") != 0) {
        struct db_charge c = {
            .user_id = j->user_id,
            .session_id = j->session_id,
            .seq = j->seq,
            .kind = "title",
            .model_id = j->model_id,
            .model_name = j->model_name,
            .cost = j->cost,
            .hold_id = j->hold_id,
        };
        if (db_charge(&w->pg, &c, NULL) != DB_OK)
            log_warn("event=title_charge_failed session=%s cost=%s", j->session_id, j->cost);
        else
            events_emit(
                j->app, j->user_id,
                json_pack("{s:s, s:f}", "kind", "balance", "balance", strtod(c.balance, NULL)));
    } else if (db_reserve_drop(&w->pg, j->hold_id) != DB_OK) {
        log_warn("event=title_reserve_drop_failed session=%s", j->session_id);
    }
    lease_let_go(j->app->lease, j->hold_id);
    title_job_free(j);
}

/* On the agent's thread: hand the answer to a worker. */
static void title_done(void *ud, const struct agent_title_result *res)
{
    struct title_job *j = ud;
    memcpy(j->cost, res->cost, sizeof(j->cost));
    if (res->status == AGENT_OK)
        j->raw = strdup(res->title);
    else if (res->status != AGENT_UNIMPLEMENTED)
        log_info("event=title_failed session=%s grpc_status=%d details=\"%s\"", j->session_id,
                 res->status, res->status_details);
    pool_submit(j->app->pool, &j->job);
}

void title_request(struct worker *w, struct app *app, const struct title_source *src)
{
    if (!agent_client_supports_title(app->agent))
        return;
    struct title_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->app = app;
    j->job.run = title_run;
    j->model_id = src->model_id;
    j->seq = src->seq;
    j->user_id = strdup(src->user_id);
    j->session_id = strdup(src->session_id);
    j->model_name = strdup(src->model_name);
    j->provider = strdup(src->provider);
    j->user_message = strdup(src->user_message);
    j->assistant_message = strdup(src->assistant_message);
    if (!j->user_id || !j->session_id || !j->model_name || !j->provider || !j->user_message ||
        !j->assistant_message || uuid_generate(j->hold_id) != 0)
        goto fail;
    /* The money first, never spent past a cap or the balance. Its text is
     * known: a token is at least a byte, plus what the request around it
     * takes; a title is one short line, and an answer longer than
     * TITLE_OUT_TOKENS is charged no more than reserved. */
    long in_tokens =
        (long)(strlen(j->user_message) + strlen(j->assistant_message)) + TITLE_IN_EXTRA;
    struct db_reserve res;
    enum db_status st = db_reserve(&w->pg, j->user_id, j->hold_id, j->model_id,
                                   app->cfg->turn_lease_seconds, in_tokens, TITLE_OUT_TOKENS, &res);
    if (st != DB_OK) {
        log_info("event=title_skipped session=%s reason=%s", j->session_id,
                 st == DB_REFUSED ? "spending_limit" : "reserve_failed");
        goto fail;
    }
    /* Kept alive with the leases; one whose chatd dies runs out. */
    if (lease_hold(app->lease, j->hold_id) != 0)
        log_warn("event=title_hold_untracked session=%s", j->session_id);
    struct agent_title_request req = {
        .user_id = j->user_id,
        .session_id = j->session_id,
        .model_name = j->model_name,
        .model_provider = j->provider,
        .user_message = j->user_message,
        .assistant_message = j->assistant_message,
    };
    if (agent_title(app->agent, &req, app->cfg->ai_title_timeout_seconds, title_done, j) == 0)
        return; /* title_done owns j now */
    lease_let_go(app->lease, j->hold_id);
    db_reserve_drop(&w->pg, j->hold_id);
fail:
    title_job_free(j);
}
