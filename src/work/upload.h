/* upload.h - POST /upload, the worker's half: a file that net/multipart.c
 * has parsed, checked and streamed to a temporary file is recorded in
 * PostgreSQL and given its name, and the HTTP transaction answered.
 *
 *   worker: fsync; user exists; one transaction: the session row for
 *           "NEW" (model known and the user's) or a lock on the user's own
 *           session, then the file row; commit; rename to the stored name;
 *           answer 202 {"message", "data": {fileName, sessionId, imageUrl,
 *           size}}.
 *
 * The final name exists only once its row committed, and every failure
 * removes the temporary file: a refused or failed upload leaves neither a
 * file nor a row. */
#ifndef CHATD_UPLOAD_H
#define CHATD_UPLOAD_H

#include <stdint.h>

#include "lib/uuid.h"
#include "store/files.h"
#include "work/pool.h"

struct app;

struct upload_job {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    uint64_t txn;                  /* the HTTP transaction to answer */
    int fd;                        /* the temporary file, open; -1 once closed */
    char tmp_path[FILES_PATH_MAX]; /* "" once renamed or removed */
    char name[FILES_NAME_MAX];     /* the stored name it will get */
    char *original_name;           /* the client's, cleaned: metadata only */
    const char *content_type;
    uint64_t size;
    char user_id[UUID_STR_LEN + 1];
    char session_id[UUID_STR_LEN + 1]; /* "" for NEW */
    int session_new;
    char *model_name, *prompt;
};

/* A job with no file yet (fd -1); NULL when out of memory. */
struct upload_job *upload_job_new(void);
/* Closes and removes its temporary file, frees it. */
void upload_job_free(struct upload_job *j);
/* Records the upload on a worker, which then owns j and answers txn
 * through the outbox. */
void upload_submit(struct app *app, struct upload_job *j, uint64_t txn);

#endif
