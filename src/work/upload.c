/* upload.c - the worker's half of POST /upload (see upload.h). */
#include "work/upload.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "store/cache.h"
#include "store/db.h"
#include "wire/auth.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/outbox.h"

#define UPLOAD_SESSION_NAME "New Chat"

/* How an upload ended, and what the client is told: the outcome (whose
 * HTTP status net/http.c chooses) and the message, in this one table. */
enum upload_outcome {
    UPLOAD_STORED,
    UPLOAD_NO_USER,
    UPLOAD_NO_SESSION,
    UPLOAD_UNKNOWN_MODEL,
    UPLOAD_NO_MODEL_ACCESS,
    UPLOAD_NO_SPACE,
    UPLOAD_DB_ERROR,
    UPLOAD_NO_CREATE,
    UPLOAD_FAILED,
};

static const struct {
    enum outbox_outcome outcome;
    const char *message;
} upload_answers[] = {
    [UPLOAD_STORED] = {OUTBOX_ACCEPTED, "File uploaded successfully"},
    [UPLOAD_NO_USER] = {OUTBOX_REFUSED, "User Does Not Exists"},
    /* someone else's session answers like a missing one */
    [UPLOAD_NO_SESSION] = {OUTBOX_REFUSED, "Session Not Found"},
    [UPLOAD_UNKNOWN_MODEL] = {OUTBOX_REFUSED, "Unknown Model"},
    [UPLOAD_NO_MODEL_ACCESS] = {OUTBOX_REFUSED, "User Does Not Have Model Access"},
    [UPLOAD_NO_SPACE] = {OUTBOX_NO_SPACE, "Insufficient storage: no space left for the file"},
    [UPLOAD_DB_ERROR] = {OUTBOX_FAILED, "Database error, try again"},
    [UPLOAD_NO_CREATE] = {OUTBOX_FAILED, "Unable to Create Session"},
    [UPLOAD_FAILED] = {OUTBOX_FAILED, "Unable to store the file"},
};

struct upload_job *upload_job_new(void)
{
    struct upload_job *j = calloc(1, sizeof(*j));
    if (j != NULL)
        j->fd = -1;
    return j;
}

void upload_job_free(struct upload_job *j)
{
    if (j == NULL)
        return;
    if (j->fd >= 0)
        close(j->fd);
    files_remove_temp(j->tmp_path);
    free(j->original_name);
    free(j->model_name);
    free(j->prompt);
    free(j);
}

/* The rows (and the session for NEW) in one transaction. */
static enum upload_outcome store_rows(struct worker *w, struct upload_job *j)
{
    struct pg *pg = &w->pg;
    struct db_model model = {0};
    enum db_access a =
        db_access(pg, j->user_id, j->session_new ? j->model_name : NULL, -1, NULL, &model);
    switch (a) {
    case DB_ACCESS_OK:
        break;
    case DB_ACCESS_NO_USER:
        return UPLOAD_NO_USER;
    case DB_ACCESS_UNKNOWN_MODEL:
        return UPLOAD_UNKNOWN_MODEL;
    case DB_ACCESS_DENIED:
        return UPLOAD_NO_MODEL_ACCESS;
    case DB_ACCESS_ERROR:
        return UPLOAD_DB_ERROR;
    }
    int model_id = model.id;
    db_model_free(&model);
    if (j->session_new && uuid_generate(j->session_id) != 0)
        return UPLOAD_NO_CREATE;

    if (db_begin(pg) != DB_OK)
        return UPLOAD_DB_ERROR;
    enum upload_outcome out = UPLOAD_DB_ERROR;
    if (j->session_new) {
        if (db_session_insert(pg, j->session_id, j->user_id, UPLOAD_SESSION_NAME, model_id,
                              j->prompt) != DB_OK) {
            out = UPLOAD_NO_CREATE;
            goto rollback;
        }
    } else {
        /* Owned by this user, and kept from being deleted until commit. */
        long long next_seq;
        char owner[UUID_STR_LEN + 1]; /* (a file needs no turn lease) */
        enum db_status st = db_session_lock(pg, j->user_id, j->session_id, &next_seq, owner);
        if (st != DB_OK) {
            out = st == DB_NOT_FOUND ? UPLOAD_NO_SESSION : UPLOAD_DB_ERROR;
            goto rollback;
        }
    }
    uint64_t xid = 0;
    if (db_file_insert(pg, j->session_id, j->user_id, j->name, j->original_name, j->content_type,
                       j->size, &xid) != DB_OK)
        goto rollback;
    if (db_commit(pg) != DB_OK)
        return UPLOAD_DB_ERROR;
    /* A new session is in the user's list from now on, here at once. */
    if (j->session_new)
        cache_saw_write(&w->cache, j->user_id, xid);
    return UPLOAD_STORED;
rollback:
    db_rollback(pg);
    return out;
}

/* After the rename failed: take back what committed. */
static void unstore_rows(struct worker *w, struct upload_job *j)
{
    int st;
    if (j->session_new) { /* it holds only this file: the row cascades */
        char *files = NULL;
        uint64_t xid;
        st = db_session_delete(&w->pg, j->user_id, j->session_id, &files, &xid);
        free(files);
    } else {
        st = db_file_delete(&w->pg, j->user_id, j->session_id, j->name);
    }
    if (st == DB_ERROR)
        log_error("event=upload_unstore_failed file=%s", j->name);
}

static enum upload_outcome upload_store(struct worker *w, struct upload_job *j)
{
    /* Durable before the row says it exists. */
    int err = files_sync_close(j->fd);
    j->fd = -1;
    if (err != 0) {
        log_error("event=upload_fsync_failed path=%s error=\"%s\"", j->tmp_path, strerror(err));
        return err == ENOSPC || err == EDQUOT ? UPLOAD_NO_SPACE : UPLOAD_FAILED;
    }
    enum upload_outcome out = store_rows(w, j);
    if (out != UPLOAD_STORED)
        return out;
    if (files_commit(j->app->cfg, j->tmp_path, j->name) != 0) {
        unstore_rows(w, j);
        return UPLOAD_FAILED;
    }
    j->tmp_path[0] = '\0'; /* renamed: nothing to clean up */
    metrics_upload_bytes(j->size);
    log_info("event=upload_stored user=%s session=%s%s file=%s bytes=%llu", j->user_id,
             j->session_id, j->session_new ? " new_session=1" : "", j->name,
             (unsigned long long)j->size);
    return UPLOAD_STORED;
}

/* {"fileName", "sessionId", "imageUrl", "size"}: the reference (signed
 * with AUTH_MODE=jwt) is what the client sends back as file_name and links
 * to under .../uploads/. NULL when out of memory. */
static json_t *stored_data(const struct upload_job *j)
{
    const struct config *cfg = j->app->cfg;
    char *ref = auth_file_ref(cfg, j->name, time(NULL));
    char *url = ref != NULL ? files_url(cfg, ref) : NULL;
    json_t *data = url != NULL
                       ? json_pack("{s:s, s:s, s:s, s:I}", "fileName", ref, "sessionId",
                                   j->session_id, "imageUrl", url, "size", (json_int_t)j->size)
                       : NULL;
    free(url);
    free(ref);
    return data;
}

static void upload_run(struct worker *w, struct pool_job *job)
{
    struct upload_job *j = (struct upload_job *)job;
    enum upload_outcome out = upload_store(w, j);
    json_t *data = NULL;
    if (out == UPLOAD_STORED && (data = stored_data(j)) == NULL)
        out = UPLOAD_FAILED; /* out of memory; the stored file stays */
    else if (out != UPLOAD_STORED)
        log_info("event=upload_refused user=%s reason=\"%s\"", j->user_id,
                 upload_answers[out].message);
    size_t len;
    char *body = proto_encode_http(upload_answers[out].message, data, &len);
    struct outbox *ob = j->app->outbox;
    uint64_t txn = j->txn;
    /* A refused upload's temp file is gone before the client hears. */
    upload_job_free(j);
    outbox_http(ob, txn, upload_answers[out].outcome, body, len);
}

void upload_submit(struct app *app, struct upload_job *j, uint64_t txn)
{
    j->app = app;
    j->txn = txn;
    j->job.run = upload_run;
    pool_submit(app->pool, &j->job);
}
