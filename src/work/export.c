/* export.c - see export.h. */
#include "work/export.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/uuid.h"
#include "store/db.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/links.h"
#include "work/outbox.h"
#include "work/pool.h"
#include "work/reads.h"

/* A piece is posted once it holds this much (or its page is done). */
#define EXPORT_PIECE_BYTES (64 * 1024)

struct export_job {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    uint64_t txn;
    enum export_format format;
    int all_branches;
    char *path; /* the current session's active path (db_export_page), NULL until read */
    char user_id[UUID_STR_LEN + 1];
    char session_id[UUID_STR_LEN + 1]; /* "" for every session (jsonl) */
    int started;                       /* the first piece was posted */
    char filename[96];

    struct db_export_session cur; /* the session being written */
    int have_cur;
    long long after; /* its last message written */
    int n_written;   /* its messages written so far (for separators) */

    /* jsonl: a page of the list of sessions */
    struct db_export_session *list;
    int n_list, i_list, list_done;
    long long list_cursor_us;
    char list_cursor_id[UUID_STR_LEN + 1];

    /* A download made by another module (export_zip.h), which gives
     * each piece of its own, reading from this job's sources. */
    export_piece_fn other;
    void (*other_free)(void *);
    void *other_state;
};

static const struct {
    const char *name, *ext, *content_type;
} formats[] = {
    [EXPORT_JSON] = {"json", "json", "application/json"},
    [EXPORT_MD] = {"md", "md", "text/markdown; charset=utf-8"},
    [EXPORT_TXT] = {"txt", "txt", "text/plain; charset=utf-8"},
    [EXPORT_CSV] = {"csv", "csv", "text/csv; charset=utf-8; header=present"},
    [EXPORT_JSONL] = {"jsonl", "jsonl", "application/jsonl"},
    [EXPORT_ZIP] = {"zip", "zip", "application/zip"},
};

int export_format_parse(const char *name, int all_sessions, enum export_format *out)
{
    if (all_sessions) {
        if (strcmp(name, "jsonl") != 0 && strcmp(name, "zip") != 0)
            return -1;
        *out = name[0] == 'j' ? EXPORT_JSONL : EXPORT_ZIP;
        return 0;
    }
    for (int f = EXPORT_JSON; f <= EXPORT_CSV; f++) {
        if (strcmp(name, formats[f].name) == 0) {
            *out = (enum export_format)f;
            return 0;
        }
    }
    return -1;
}

const char *export_content_type(const struct export_job *j)
{
    return formats[j->format].content_type;
}

const char *export_filename(const struct export_job *j) { return j->filename; }

/* ---------------------------------------------------------------- text */

int export_csv_text(struct buf *b, const char *s)
{
    if (buf_puts(b, "\"") != 0)
        return -1;
    if (strchr("=+-@\t\r", s[0]) != NULL && s[0] != '\0' && buf_puts(b, "'") != 0)
        return -1;
    for (const char *q; (q = strchr(s, '"')) != NULL; s = q + 1)
        if (buf_append(b, s, (size_t)(q - s)) != 0 || buf_puts(b, "\"\"") != 0)
            return -1;
    return buf_puts(b, s) != 0 || buf_puts(b, "\"") != 0 ? -1 : 0;
}

void export_file_name(char *out, size_t cap, const char *name, const char *id, const char *ext)
{
    char base[41];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0' && n < 40; p++) {
        int keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');
        if (keep)
            base[n++] = (char)*p;
        else if (n > 0 && base[n - 1] != '-')
            base[n++] = '-';
    }
    while (n > 0 && base[n - 1] == '-')
        n--;
    base[n] = '\0';
    snprintf(out, cap, "%s-%s.%s", n > 0 ? base : "chat", id, ext);
}

/* A JSON value, compact; -1 when it cannot be encoded. */
static int put_json(struct buf *b, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    int rc = s != NULL ? buf_puts(b, s) : -1;
    free(s);
    return rc;
}

static const char *role_title(const char *role)
{
    if (strcmp(role, "user") == 0)
        return "User";
    if (strcmp(role, "assistant") == 0)
        return "Assistant";
    return "File";
}

static const char *rating_word(json_int_t r) { return r > 0 ? "good" : "bad"; }

/* ---------------------------------------------------- heads and tails */

static int head_single(struct export_job *j, struct buf *b)
{
    const struct db_export_session *s = &j->cur;
    int rc = 0;
    switch (j->format) {
    case EXPORT_JSON: {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "session_id", j->session_id,
                              "session_name", s->name, "created_at", s->created_at, "model",
                              s->model, "session_prompt", s->prompt);
        char *t = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        /* {"session_id":...,"session_prompt":"..."} minus its '}' */
        rc = t != NULL ? buf_append(b, t, strlen(t) - 1) | buf_puts(b, ",\"messages\":[") : -1;
        free(t);
        break;
    }
    case EXPORT_MD:
        rc = buf_puts(b, "# ") | buf_puts(b, s->name) | buf_puts(b, "\n\n- Session: ") |
             buf_puts(b, j->session_id) | buf_puts(b, "\n- Created: ") |
             buf_puts(b, s->created_at) | buf_puts(b, "\n- Model: ") | buf_puts(b, s->model) |
             buf_puts(b, "\n");
        if (s->prompt[0] != '\0')
            rc |= buf_puts(b, "- System prompt: ") | buf_puts(b, s->prompt) | buf_puts(b, "\n");
        rc |= buf_puts(b, "\n---\n");
        break;
    case EXPORT_TXT:
        rc = buf_puts(b, s->name) | buf_puts(b, "\nSession ") | buf_puts(b, j->session_id) |
             buf_puts(b, ", created ") | buf_puts(b, s->created_at) | buf_puts(b, ", model ") |
             buf_puts(b, s->model) | buf_puts(b, "\n");
        if (s->prompt[0] != '\0')
            rc |= buf_puts(b, "System prompt: ") | buf_puts(b, s->prompt) | buf_puts(b, "\n");
        break;
    case EXPORT_CSV:
        rc = buf_puts(b, "session_id,seq,created_at,role,content,rating,comment,file_url,"
                         "file_name,file_type,file_size\r\n");
        break;
    case EXPORT_JSONL:
    case EXPORT_ZIP: /* never: its pieces are export_zip.c's */
        break;
    }
    return rc != 0 ? -1 : 0;
}

static int head_jsonl(struct export_job *j, struct buf *b)
{
    const struct db_export_session *s = &j->cur;
    json_t *o = json_pack("{s:s, s:s, s:s}", "session_id", s->session_id, "session_name", s->name,
                          "created_at", s->created_at);
    char *t = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    int rc = t != NULL ? buf_append(b, t, strlen(t) - 1) | buf_puts(b, ",\"messages\":[") : -1;
    free(t);
    /* The session prompt is the conversation's system message. */
    if (rc == 0 && s->prompt[0] != '\0') {
        json_t *m = json_pack("{s:s, s:s}", "role", "system", "content", s->prompt);
        rc = m != NULL ? put_json(b, m) : -1;
        json_decref(m);
        j->n_written++;
    }
    return rc;
}

static int tail(struct export_job *j, struct buf *b)
{
    switch (j->format) {
    case EXPORT_JSON:
        return buf_puts(b, "]}\n");
    case EXPORT_JSONL:
        return buf_puts(b, "]}\n");
    default:
        return 0;
    }
}

/* ------------------------------------------------------------ messages */

static int put_message(struct export_job *j, struct buf *b, json_t *m)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    const char *content = json_string_value(json_object_get(m, "content"));
    const char *created = json_string_value(json_object_get(m, "created_at"));
    json_t *rating = json_object_get(m, "rating");
    const char *comment = json_string_value(json_object_get(m, "comment"));
    const char *url = json_string_value(json_object_get(m, "url"));
    const char *fname = json_string_value(json_object_get(m, "original_name"));
    const char *ftype = json_string_value(json_object_get(m, "content_type"));
    json_t *fsize = json_object_get(m, "size");
    if (role == NULL || content == NULL || created == NULL)
        return -1;
    int file = strcmp(role, "file") == 0;
    char num[32];
    int rc = 0;

    switch (j->format) {
    case EXPORT_JSON:
        rc = (j->n_written > 0 ? buf_puts(b, ",") : 0) | put_json(b, m);
        break;
    case EXPORT_JSONL: {
        /* {role, content} for fine-tuning tools: files are not turns. */
        if (file)
            return 0;
        json_t *o = json_pack("{s:s, s:s}", "role", role, "content", content);
        rc = o != NULL ? (j->n_written > 0 ? buf_puts(b, ",") : 0) | put_json(b, o) : -1;
        json_decref(o);
        break;
    }
    case EXPORT_MD:
        rc = buf_puts(b, "\n### ") | buf_puts(b, role_title(role)) | buf_puts(b, " · ") |
             buf_puts(b, created);
        if (json_is_integer(rating))
            rc |= buf_puts(b, " · rated ") | buf_puts(b, rating_word(json_integer_value(rating)));
        rc |= buf_puts(b, "\n\n");
        if (file) {
            rc |= buf_puts(b, "[") | buf_puts(b, fname && *fname ? fname : content) |
                  buf_puts(b, "](") | buf_puts(b, url ? url : content) | buf_puts(b, ")");
            if (ftype != NULL && json_is_integer(fsize)) {
                snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(fsize));
                rc |= buf_puts(b, " (") | buf_puts(b, ftype) | buf_puts(b, ", ") |
                      buf_puts(b, num) | buf_puts(b, " bytes)");
            }
            rc |= buf_puts(b, "\n");
        } else {
            rc |= buf_puts(b, content) | buf_puts(b, "\n");
        }
        if (comment != NULL)
            rc |= buf_puts(b, "\n> Comment: ") | buf_puts(b, comment) | buf_puts(b, "\n");
        break;
    case EXPORT_TXT:
        rc = buf_puts(b, "\n[") | buf_puts(b, created) | buf_puts(b, "] ") |
             buf_puts(b, role_title(role));
        if (json_is_integer(rating))
            rc |= buf_puts(b, " (rated ") | buf_puts(b, rating_word(json_integer_value(rating))) |
                  (comment != NULL ? buf_puts(b, ": ") | buf_puts(b, comment) : 0) |
                  buf_puts(b, ")");
        rc |= buf_puts(b, ":\n");
        if (file)
            rc |= buf_puts(b, fname && *fname ? fname : content) | buf_puts(b, " <") |
                  buf_puts(b, url ? url : content) | buf_puts(b, ">\n");
        else
            rc |= buf_puts(b, content) | buf_puts(b, "\n");
        break;
    case EXPORT_CSV:
        snprintf(num, sizeof(num), "%lld",
                 (long long)json_integer_value(json_object_get(m, "seq")));
        rc = buf_puts(b, j->session_id) | buf_puts(b, ",") | buf_puts(b, num) | buf_puts(b, ",") |
             buf_puts(b, created) | buf_puts(b, ",") | buf_puts(b, role) | buf_puts(b, ",") |
             export_csv_text(b, content) | buf_puts(b, ",");
        if (json_is_integer(rating)) {
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(rating));
            rc |= buf_puts(b, num);
        }
        rc |= buf_puts(b, ",") | (comment ? export_csv_text(b, comment) : 0) | buf_puts(b, ",") |
              (url ? export_csv_text(b, url) : 0) | buf_puts(b, ",") |
              (fname ? export_csv_text(b, fname) : 0) | buf_puts(b, ",") |
              (ftype ? export_csv_text(b, ftype) : 0) | buf_puts(b, ",");
        if (json_is_integer(fsize)) {
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(fsize));
            rc |= buf_puts(b, num);
        }
        rc |= buf_puts(b, "\r\n");
        break;
    case EXPORT_ZIP:
        break;
    }
    j->n_written++;
    return rc != 0 ? -1 : 0;
}

/* One page of the current session into b. 1 when it was the last page,
 * 0 when more may follow, -1 on error. */
static int put_page(const struct export_source *src, struct export_job *j, struct buf *b)
{
    const char *sid = j->format == EXPORT_JSONL ? j->cur.session_id : j->session_id;
    char *text = NULL;
    long long last = -1;
    if (src->page(src->ctx, j->user_id, sid, j->after, EXPORT_PAGE, j->all_branches, &j->path,
                  &text, &last) != DB_OK)
        return -1;
    json_t *msgs = json_loads(text, 0, NULL);
    free(text);
    int rc = json_is_array(msgs) ? 0 : -1;
    if (rc == 0 && j->format != EXPORT_JSONL)
        rc = links_apply(j->app->cfg, msgs, "url", links_file_url);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        if (rc == 0)
            rc = put_message(j, b, m);
    }
    size_t n = json_array_size(msgs);
    json_decref(msgs);
    if (rc != 0)
        return -1;
    if (last >= 0)
        j->after = last;
    return n < EXPORT_PAGE ? 1 : 0;
}

/* jsonl: the next session to write into j->cur; 0, 1 when none is left,
 * -1 on error. */
static int next_session(const struct export_source *src, struct export_job *j)
{
    if (j->i_list == j->n_list) {
        for (int i = 0; i < j->n_list; i++)
            db_export_session_free(&j->list[i]);
        free(j->list);
        j->list = NULL;
        j->n_list = j->i_list = 0;
        if (j->list_done)
            return 1;
        if (src->sessions(src->ctx, j->user_id, j->list_cursor_us, j->list_cursor_id,
                          EXPORT_SESSIONS_PAGE, &j->list, &j->n_list) != DB_OK)
            return -1;
        if (j->n_list < EXPORT_SESSIONS_PAGE)
            j->list_done = 1;
        if (j->n_list == 0)
            return 1;
        struct db_export_session *lastp = &j->list[j->n_list - 1];
        j->list_cursor_us = lastp->cursor_us;
        snprintf(j->list_cursor_id, sizeof(j->list_cursor_id), "%s", lastp->session_id);
    }
    j->cur = j->list[j->i_list]; /* moved: the list slot is emptied */
    memset(&j->list[j->i_list], 0, sizeof(j->list[0]));
    j->i_list++;
    j->have_cur = 1;
    j->after = -1;
    free(j->path); /* the path read was the last session's */
    j->path = NULL;
    j->n_written = 0;
    return 0;
}

/* ----------------------------------------------------------------- job */

enum export_piece export_piece(struct export_job *j, const struct export_source *src, struct buf *b)
{
    int last = 0, rc = 0;
    if (j->other != NULL) {
        j->started = 1;
        return j->other(j->other_state, src, b);
    }
    if (!j->started) {
        enum db_status st;
        j->started = 1;
        if (j->format == EXPORT_JSONL) {
            st = src->user(src->ctx, j->user_id); /* the user exists */
            snprintf(j->filename, sizeof(j->filename), "chatd-export.jsonl");
        } else {
            st = src->session(src->ctx, j->user_id, j->session_id, &j->cur);
            if (st == DB_OK) {
                j->have_cur = 1;
                j->after = -1;
                export_file_name(j->filename, sizeof(j->filename), j->cur.name, j->session_id,
                                 formats[j->format].ext);
                rc = head_single(j, b);
            }
        }
        /* Someone else's session answers exactly like a missing one. */
        if (st != DB_OK)
            return st == DB_NOT_FOUND ? EXPORT_PIECE_NOT_FOUND : EXPORT_PIECE_UNREADABLE;
    }

    while (rc == 0 && !last && b->len < EXPORT_PIECE_BYTES) {
        if (j->format == EXPORT_JSONL && !j->have_cur) {
            int n = next_session(src, j);
            if (n != 0) {
                rc = n < 0 ? -1 : 0;
                last = 1;
                break;
            }
            rc = head_jsonl(j, b);
            if (rc != 0)
                break;
        }
        int end = put_page(src, j, b);
        if (end < 0) {
            rc = -1;
            break;
        }
        if (end == 1) {
            rc = tail(j, b);
            if (j->format == EXPORT_JSONL) {
                db_export_session_free(&j->cur);
                j->have_cur = 0;
            } else {
                last = 1;
            }
        } else if (j->format != EXPORT_JSONL) {
            break; /* one page per piece */
        }
    }
    if (rc != 0)
        return EXPORT_PIECE_FAILED;
    return last ? EXPORT_PIECE_LAST : EXPORT_PIECE_MORE;
}

/* ------------------------------------------------- PostgreSQL, on a worker */

static enum db_status pg_user(void *pg, const char *user_id)
{
    double balance;
    return db_balance(pg, user_id, &balance);
}

static enum db_status pg_session(void *pg, const char *user_id, const char *session_id,
                                 struct db_export_session *out)
{
    return db_export_session(pg, user_id, session_id, out);
}

static enum db_status pg_sessions(void *pg, const char *user_id, long long cursor_us,
                                  const char *cursor_id, int limit, struct db_export_session **out,
                                  int *n)
{
    return db_export_sessions(pg, user_id, cursor_us, cursor_id, limit, out, n);
}

static enum db_status pg_page(void *pg, const char *user_id, const char *session_id,
                              long long after, int limit, int all_branches, char **path,
                              char **json, long long *last)
{
    return db_export_page(pg, user_id, session_id, after, limit, all_branches, path, json, last);
}

static enum db_status pg_files(void *pg, const char *user_id, const char *after, int limit,
                               char **json)
{
    return db_user_files(pg, user_id, after, limit, json);
}

static enum db_status pg_usage(void *pg, const char *user_id, char **json)
{
    return db_usage(pg, user_id, -1, -1, json);
}

static enum db_status pg_budget(void *pg, const char *user_id, char **json)
{
    return db_budget(pg, user_id, json);
}

static void export_run(struct worker *w, struct pool_job *job)
{
    struct export_job *j = (struct export_job *)job;
    const struct export_source src = {pg_user,  pg_session, pg_sessions, pg_page,
                                      pg_files, pg_usage,   pg_budget,   reads_pg(w)};
    struct buf b = {0};
    enum export_piece e = export_piece(j, &src, &b);
    switch (e) {
    case EXPORT_PIECE_MORE:
    case EXPORT_PIECE_LAST:
        outbox_export(j->app->outbox, j->txn, OUTBOX_DONE, b.p, b.len, e == EXPORT_PIECE_LAST, j,
                      export_release);
        return;
    case EXPORT_PIECE_NOT_FOUND:
    case EXPORT_PIECE_UNREADABLE:
    case EXPORT_PIECE_FAILED:
        break;
    }
    free(b.p);
    if (e != EXPORT_PIECE_FAILED) {
        /* Before anything was sent: an answer of its own. */
        int found = e != EXPORT_PIECE_NOT_FOUND;
        size_t len = 0;
        char *body = proto_encode_http(found ? "Internal Server Error" : "Not Found", NULL, &len);
        outbox_export(j->app->outbox, j->txn, found ? OUTBOX_FAILED : OUTBOX_NOT_FOUND, body, len,
                      1, j, export_release);
        return;
    }
    /* The headers are out: the download ends without its last chunk,
     * which every HTTP client reports as an incomplete transfer, never as
     * a complete file. */
    log_warn("event=export_failed user=%s session=%s", j->user_id,
             j->session_id[0] ? j->session_id : "all");
    outbox_export(j->app->outbox, j->txn, OUTBOX_FAILED, NULL, 0, 1, j, export_release);
}

struct export_job *export_job_new(struct app *app, uint64_t txn, const char *user_id,
                                  const char *session_id, enum export_format format)
{
    struct export_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->job.run = export_run;
    j->app = app;
    j->txn = txn;
    j->format = format;
    j->after = -1;
    j->list_cursor_us = -1;
    snprintf(j->user_id, sizeof(j->user_id), "%s", user_id);
    snprintf(j->session_id, sizeof(j->session_id), "%s", session_id != NULL ? session_id : "");
    return j;
}

int export_start(struct app *app, uint64_t txn, const char *user_id, const char *session_id,
                 enum export_format format, int all_branches)
{
    struct export_job *j = export_job_new(app, txn, user_id, session_id, format);
    if (j == NULL)
        return -1;
    j->all_branches = all_branches;
    pool_submit(app->pool, &j->job);
    return 0;
}

void export_job_all_branches(struct export_job *j) { j->all_branches = 1; }

void export_job_delegate(struct export_job *j, const char *filename, export_piece_fn piece,
                         void (*free_state)(void *), void *state)
{
    snprintf(j->filename, sizeof(j->filename), "%s", filename);
    j->other = piece;
    j->other_free = free_state;
    j->other_state = state;
}

void export_submit(struct export_job *j) { pool_submit(j->app->pool, &j->job); }

void export_next(struct export_job *j) { pool_submit(j->app->pool, &j->job); }

void export_release(void *job) { export_free(job); }

void export_free(struct export_job *j)
{
    if (j == NULL)
        return;
    if (j->have_cur)
        db_export_session_free(&j->cur);
    for (int i = 0; i < j->n_list; i++)
        db_export_session_free(&j->list[i]);
    free(j->list);
    free(j->path);
    if (j->other_free != NULL)
        j->other_free(j->other_state);
    free(j);
}
