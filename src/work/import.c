/* import.c - POST /import and GET /import/<id> (see import.h). */
#include "work/import.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/uuid.h"
#include "store/archive.h"
#include "store/cache.h"
#include "store/db.h"
#include "wire/convo.h"
#include "wire/jsonsplit.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/events.h"
#include "work/outbox.h"
#include "work/pool.h"
#include "work/upload.h"

#define IMPORT_READ 65536
/* One conversation's JSON may be this large (a long chat with its tree). */
#define IMPORT_VALUE_MAX (64 * 1024 * 1024)
/* How often progress is written and told. */
#define IMPORT_PROGRESS_EVERY 50
/* Skipped conversations listed (the count goes on past it). */
#define IMPORT_SKIPPED_MAX 1000
#define IMPORT_TITLE_CHARS 100

static atomic_int import_stopping;

void import_stop(void) { atomic_store(&import_stopping, 1); }

static void answer(struct app *app, uint64_t txn, enum outbox_outcome o, const char *message,
                   json_t *data)
{
    size_t len;
    char *body = proto_encode_http(message, data, &len);
    outbox_http(app->outbox, txn, o, body, len);
}

/* ---------------------------------------------------------- one reading */

struct pass {
    struct worker *w;
    struct app *app;
    const char *user, *import_id;
    int storing;             /* the second reading: store; else count */
    enum convo_format first; /* the first value's format */
    long long values, total, done, sessions, messages, skipped_n;
    json_t *skipped;     /* not yet written to the row */
    json_t *skipped_all; /* for import_finished */
    int db_failed;
    int stopped; /* chatd is stopping */
};

static void skip(struct pass *p, const char *title, const char *why)
{
    p->skipped_n++;
    if (json_array_size(p->skipped_all) >= IMPORT_SKIPPED_MAX)
        return;
    json_t *e =
        json_pack("{s:s, s:s}", "title", title[0] != '\0' ? title : "(untitled)", "reason", why);
    json_array_append(p->skipped, e);
    json_array_append_new(p->skipped_all, e);
}

/* A title chatd shows: one line, at most IMPORT_TITLE_CHARS characters. */
static char *clean_title(const char *t)
{
    size_t n = strlen(t), chars = 0, i = 0;
    char *out = malloc(n + sizeof("Imported chat"));
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (; i < n && chars < IMPORT_TITLE_CHARS; i++) {
        unsigned char c = (unsigned char)t[i];
        if ((c & 0xc0) != 0x80)
            chars++;
        out[o++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    while (i < n && ((unsigned char)t[i] & 0xc0) == 0x80) /* the rest of a character */
        out[o++] = t[i++];
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    if (o == 0)
        strcpy(out, "Imported chat");
    return out;
}

static json_t *messages_json(const struct convo *c)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < c->n; i++) {
        const struct convo_msg *m = &c->msgs[i];
        long long us = m->created_us >= 0 ? m->created_us : c->created_us;
        json_t *o = json_pack("{s:I, s:I, s:s, s:s, s:o}", "seq", (json_int_t)i, "parent_seq",
                              (json_int_t)m->parent, "role", m->role, "content", m->content, "us",
                              us >= 0 ? json_integer(us) : json_null());
        if (o == NULL || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static void store(struct pass *p, const json_t *v)
{
    char why[160];
    enum convo_format f = convo_detect(v);
    struct convo c;
    const char *t = json_string_value(json_object_get(v, "title"));
    if (f == CONVO_UNKNOWN) {
        skip(p, t != NULL ? t : "", "not a conversation of a format chatd knows");
        return;
    }
    if (convo_read(v, f, &c, why, sizeof(why)) != 0) {
        skip(p, c.title != NULL ? c.title : "", why);
        return;
    }
    if (c.n == 0) {
        skip(p, c.title, c.skipped > 0 ? c.skip_why : "no messages");
        convo_free(&c);
        return;
    }
    char sid[UUID_STR_LEN + 1], source[256] = "";
    if (c.source_id[0] != '\0')
        snprintf(source, sizeof(source), "%s:%s", convo_format_name(f), c.source_id);
    json_t *msgs = messages_json(&c);
    char *text = msgs != NULL ? json_dumps(msgs, JSON_COMPACT) : NULL;
    char *title = clean_title(c.title);
    int stored = 0;
    long long n = 0;
    uint64_t xid = 0;
    enum db_status st = text != NULL && title != NULL && uuid_generate(sid) == 0
                            ? db_import_convo(&p->w->pg, p->user, sid, title, source, c.created_us,
                                              text, c.leaf, &stored, &n, &xid)
                            : DB_ERROR;
    if (st != DB_OK) {
        p->db_failed = 1;
    } else if (!stored) {
        skip(p, title, "imported before");
    } else {
        p->sessions++;
        p->messages += n;
        /* this chatd lists it at once: a copy of the list from before is
         * stale from here on */
        cache_saw_write(&p->w->cache, p->user, xid);
    }
    free(title);
    free(text);
    json_decref(msgs);
    convo_free(&c);
}

static void progress(struct pass *p, const char *status, const char *error)
{
    char *sk = json_dumps(p->skipped, JSON_COMPACT);
    if (db_import_update(&p->w->pg, p->import_id, p->done, p->sessions, p->messages,
                         sk != NULL ? sk : "[]", status, error) != DB_OK)
        p->db_failed = 1;
    free(sk);
    json_array_clear(p->skipped);
}

static int on_value(void *arg, json_t *v)
{
    struct pass *p = arg;
    p->values++;
    if (p->first == CONVO_UNKNOWN) /* the export's format: its first known value's */
        p->first = convo_detect(v);
    if (p->storing) {
        store(p, v);
        p->done++;
        if (p->done % IMPORT_PROGRESS_EVERY == 0) {
            progress(p, "running", NULL);
            events_emit(p->app, p->user,
                        json_pack("{s:s, s:s, s:I, s:I}", "kind", "import_progress", "import_id",
                                  p->import_id, "done", (json_int_t)p->done, "total",
                                  (json_int_t)p->total));
        }
    }
    json_decref(v);
    if (p->storing && atomic_load(&import_stopping)) {
        p->stopped = 1;
        return 1;
    }
    return p->db_failed; /* PostgreSQL is down: stop here */
}

static int feed(void *arg, const char *buf, size_t n)
{
    struct jsonsplit *s = arg;
    s->status = jsonsplit_feed(s, buf, n);
    return s->status != JSONSPLIT_OK;
}

/* Reads an export through a jsonsplit: the file, or each JSON file of a
 * zip archive as a document of its own. JSONSPLIT_OK, or how it failed
 * (*why says). An archive's own trouble is *zip_st. */
static enum jsonsplit_status read_export(const char *path, int zipped, uint64_t max, struct pass *p,
                                         enum archive_status *zip_st, char *why, size_t len)
{
    struct jsonsplit s;
    enum jsonsplit_status st = JSONSPLIT_OK;
    *zip_st = ARCHIVE_OK;
    why[0] = '\0';
    if (zipped) {
        struct archive *a = NULL;
        *zip_st = archive_open(path, max, &a, why, len);
        if (*zip_st != ARCHIVE_OK)
            return JSONSPLIT_BAD;
        for (size_t i = 0; st == JSONSPLIT_OK && i < archive_count(a); i++) {
            jsonsplit_init(&s, IMPORT_VALUE_MAX, on_value, p);
            *zip_st = archive_read(a, i, feed, &s, why, len);
            st = s.status;
            if (st == JSONSPLIT_OK && *zip_st == ARCHIVE_OK)
                st = jsonsplit_end(&s);
            if (st != JSONSPLIT_OK && why[0] == '\0')
                snprintf(why, len, "%s: %s", archive_name(a, i), s.why);
            if (*zip_st != ARCHIVE_OK && st == JSONSPLIT_OK)
                st = JSONSPLIT_BAD;
            jsonsplit_free(&s);
        }
        archive_close(a);
        return st;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(why, len, "the file went missing");
        return JSONSPLIT_BAD;
    }
    jsonsplit_init(&s, IMPORT_VALUE_MAX, on_value, p);
    static __thread char buf[IMPORT_READ];
    size_t n;
    while (st == JSONSPLIT_OK && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        st = jsonsplit_feed(&s, buf, n);
    if (st == JSONSPLIT_OK)
        st = jsonsplit_end(&s);
    snprintf(why, len, "%s", s.why);
    jsonsplit_free(&s);
    fclose(f);
    return st;
}

/* -------------------------------------------------------------- the job */

struct import_job {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    uint64_t txn;
    struct upload_job *file;
    /* once checked and recorded, for the import pool's worker */
    char id[UUID_STR_LEN + 1];
    int zipped;
    long long total;
};

static void import_store_run(struct worker *w, struct pool_job *job);

static void import_run(struct worker *w, struct pool_job *job)
{
    struct import_job *j = (struct import_job *)job;
    struct app *app = j->app;
    struct upload_job *file = j->file;
    char id[UUID_STR_LEN + 1], why[200];
    struct pass p = {.w = w, .app = app, .user = file->user_id, .import_id = id};
    p.skipped = json_array();
    p.skipped_all = json_array();
    if (file->fd >= 0) { /* written by the service thread: read from the start */
        close(file->fd);
        file->fd = -1;
    }
    if (p.skipped == NULL || p.skipped_all == NULL || uuid_generate(id) != 0) {
        answer(app, j->txn, OUTBOX_FAILED, "Out of memory", NULL);
        goto out;
    }
    switch (db_access(&w->pg, file->user_id, NULL, -1, NULL, NULL)) {
    case DB_ACCESS_OK:
        break;
    case DB_ACCESS_NO_USER:
        answer(app, j->txn, OUTBOX_REFUSED, "User Does Not Exists", NULL);
        goto out;
    default:
        answer(app, j->txn, OUTBOX_FAILED, "Database error, try again", NULL);
        goto out;
    }
    int zipped = strcmp(file->content_type, "application/zip") == 0;
    uint64_t max = (uint64_t)app->cfg->import_max_bytes;
    enum archive_status zst;
    /* 1: JSON, of a shape chatd knows, counted */
    enum jsonsplit_status st = read_export(file->tmp_path, zipped, max, &p, &zst, why, sizeof(why));
    if (zst == ARCHIVE_TOO_LARGE) {
        char msg[256];
        snprintf(msg, sizeof(msg), "File too large: %s", why);
        answer(app, j->txn, OUTBOX_TOO_LARGE, msg, NULL);
        goto out;
    }
    if (zst == ARCHIVE_EMPTY) {
        answer(app, j->txn, OUTBOX_UNSUPPORTED,
               "Unsupported Media Type: no .json or .jsonl file in the archive", NULL);
        goto out;
    }
    if (st == JSONSPLIT_TOO_BIG) {
        answer(app, j->txn, OUTBOX_TOO_LARGE, "File too large: one conversation is over 64 MB",
               NULL);
        goto out;
    }
    if (st != JSONSPLIT_OK) {
        char msg[256];
        snprintf(msg, sizeof(msg), "Bad Request: not an export chatd can read: %s", why);
        answer(app, j->txn, OUTBOX_REFUSED, msg, NULL);
        goto out;
    }
    if (p.values > 0 && p.first == CONVO_UNKNOWN) {
        answer(app, j->txn, OUTBOX_UNSUPPORTED,
               "Unsupported Media Type: not an export of ChatGPT, Claude, Open WebUI or chatd",
               NULL);
        goto out;
    }
    p.total = p.values;
    if (db_import_start(&w->pg, id, file->user_id, convo_format_name(p.first), p.total) != DB_OK) {
        answer(app, j->txn, OUTBOX_FAILED, "Database error, try again", NULL);
        goto out;
    }
    log_info("event=import_started user=%s import=%s format=%s conversations=%lld bytes=%llu",
             file->user_id, id, convo_format_name(p.first), p.total,
             (unsigned long long)file->size);
    answer(app, j->txn, OUTBOX_ACCEPTED, "Import started",
           json_pack("{s:s, s:I}", "import_id", id, "total", (json_int_t)p.total));
    /* 3 on the import pool's worker, which j now belongs to */
    memcpy(j->id, id, sizeof(j->id));
    j->zipped = zipped;
    j->total = p.total;
    j->job.run = import_store_run;
    json_decref(p.skipped);
    json_decref(p.skipped_all);
    pool_submit(app->import_pool, &j->job);
    return;
out:
    json_decref(p.skipped);
    json_decref(p.skipped_all);
    upload_job_free(file); /* and its temporary file */
    free(j);
}

/* Step 3: each conversation stored, progress told. */
static void import_store_run(struct worker *w, struct pool_job *job)
{
    struct import_job *j = (struct import_job *)job;
    struct app *app = j->app;
    struct upload_job *file = j->file;
    char why[200];
    enum archive_status zst;
    struct pass p = {.w = w, .app = app, .user = file->user_id, .import_id = j->id, .storing = 1};
    p.total = j->total;
    p.skipped = json_array();
    p.skipped_all = json_array();
    enum jsonsplit_status st =
        p.skipped != NULL && p.skipped_all != NULL
            ? read_export(file->tmp_path, j->zipped, (uint64_t)app->cfg->import_max_bytes, &p, &zst,
                          why, sizeof(why))
            : JSONSPLIT_NOMEM;
    const char *status = st == JSONSPLIT_OK && !p.db_failed ? "finished" : "failed";
    if (p.stopped)
        snprintf(why, sizeof(why),
                 "chatd stopped; what was imported stays: import the file "
                 "again for the rest");
    else if (p.db_failed)
        snprintf(why, sizeof(why), "the database failed; what was imported stays");
    else if (st == JSONSPLIT_NOMEM)
        snprintf(why, sizeof(why), "out of memory");
    p.db_failed = 0;
    progress(&p, status, strcmp(status, "finished") == 0 ? NULL : why);
    log_info("event=import_%s user=%s import=%s sessions=%lld messages=%lld skipped=%lld", status,
             file->user_id, j->id, p.sessions, p.messages, p.skipped_n);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:O?}", "kind", "import_finished",
                           "import_id", j->id, "status", status, "sessions", (json_int_t)p.sessions,
                           "messages", (json_int_t)p.messages, "skipped_count",
                           (json_int_t)p.skipped_n, "skipped", p.skipped_all);
    events_emit(app, file->user_id, ev);
    json_decref(p.skipped);
    json_decref(p.skipped_all);
    upload_job_free(file); /* and its temporary file */
    free(j);
}

void import_submit(struct app *app, struct upload_job *file, uint64_t txn)
{
    struct import_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        upload_job_free(file);
        answer(app, txn, OUTBOX_FAILED, "Out of memory", NULL);
        return;
    }
    j->app = app;
    j->txn = txn;
    j->file = file;
    j->job.run = import_run;
    pool_submit(app->pool, &j->job);
}

/* ------------------------------------------------------ GET /import/<id> */

struct state_job {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    uint64_t txn;
    char user[UUID_STR_LEN + 1], id[UUID_STR_LEN + 1];
};

static void state_run(struct worker *w, struct pool_job *job)
{
    struct state_job *j = (struct state_job *)job;
    char *json = NULL;
    enum db_status st = db_import_get(&w->pg, j->user, j->id, &json);
    if (st == DB_OK)
        outbox_http(j->app->outbox, j->txn, OUTBOX_DONE, json, strlen(json));
    else
        answer(j->app, j->txn, st == DB_NOT_FOUND ? OUTBOX_NOT_FOUND : OUTBOX_FAILED,
               st == DB_NOT_FOUND ? "Not Found" : "Database error, try again", NULL);
    free(j);
}

int import_state_submit(struct app *app, uint64_t txn, const char *user_id, const char *import_id)
{
    struct state_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -1;
    j->app = app;
    j->txn = txn;
    snprintf(j->user, sizeof(j->user), "%s", user_id);
    snprintf(j->id, sizeof(j->id), "%s", import_id);
    j->job.run = state_run;
    pool_submit(app->pool, &j->job);
    return 0;
}
