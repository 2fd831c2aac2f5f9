/* export_zip.c - see export_zip.h. */
#include "work/export_zip.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/uuid.h"
#include "lib/zipout.h"
#include "store/files.h"
#include "work/app.h"

#define ZIP_FILES_PAGE 100
#define EXPORT_PIECE_BYTES_ZIP (64 * 1024) /* a piece is posted once it holds this much */
#define ZIP_FILE_SLICE (64 * 1024)         /* of a file per read */

enum zip_stage { ZIP_SESSIONS, ZIP_FILES, ZIP_USAGE, ZIP_END };

struct export_zip {
    struct app *app;
    char user_id[UUID_STR_LEN + 1];
    struct zipout *out;
    struct buf *b; /* where the archive's bytes go: the piece being made */
    enum zip_stage stage;
    time_t now;

    /* sessions: a page of the list, and the one being written */
    struct db_export_session *list;
    int n_list, i_list, list_done;
    long long cursor_us;
    char cursor_id[UUID_STR_LEN + 1];
    struct export_job *chat; /* NULL between sessions */

    /* files: a page of them, and the one being read */
    json_t *files;
    size_t i_file;
    int files_done;
    char after[FILES_NAME_MAX];
    int fd;
};

static int zip_sink(void *arg, const void *p, size_t n)
{
    struct export_zip *z = arg;
    return buf_append(z->b, p, n);
}

static struct export_zip *export_zip_new(struct app *app, const char *user_id)
{
    struct export_zip *z = calloc(1, sizeof(*z));
    if (z == NULL)
        return NULL;
    z->app = app;
    z->fd = -1;
    z->cursor_us = -1;
    z->now = time(NULL);
    snprintf(z->user_id, sizeof(z->user_id), "%s", user_id);
    return z;
}

static void export_zip_free(void *state)
{
    struct export_zip *z = state;
    if (z == NULL)
        return;
    zipout_free(z->out);
    export_free(z->chat);
    for (int i = 0; i < z->n_list; i++)
        db_export_session_free(&z->list[i]);
    free(z->list);
    json_decref(z->files);
    if (z->fd >= 0)
        close(z->fd);
    free(z);
}

/* The next session's id into id; 0, 1 when none is left, -1 on error. */
static int next_session(struct export_zip *z, const struct export_source *src,
                        char id[UUID_STR_LEN + 1])
{
    if (z->i_list == z->n_list) {
        for (int i = 0; i < z->n_list; i++)
            db_export_session_free(&z->list[i]);
        free(z->list);
        z->list = NULL;
        z->n_list = z->i_list = 0;
        if (z->list_done)
            return 1;
        if (src->sessions(src->ctx, z->user_id, z->cursor_us, z->cursor_id, EXPORT_SESSIONS_PAGE,
                          &z->list, &z->n_list) != DB_OK)
            return -1;
        z->list_done = z->n_list < EXPORT_SESSIONS_PAGE;
        if (z->n_list == 0)
            return 1;
        z->cursor_us = z->list[z->n_list - 1].cursor_us;
        snprintf(z->cursor_id, sizeof(z->cursor_id), "%s", z->list[z->n_list - 1].session_id);
    }
    snprintf(id, UUID_STR_LEN + 1, "%s", z->list[z->i_list++].session_id);
    return 0;
}

/* One page of the current session, or the start of the next one. 0, or
 * -1 on error. */
static int step_sessions(struct export_zip *z, const struct export_source *src)
{
    struct buf piece = {0};
    int rc = -1;
    if (z->chat == NULL) {
        char id[UUID_STR_LEN + 1];
        int n = next_session(z, src, id);
        if (n != 0) {
            z->stage = ZIP_FILES;
            return n < 0 ? -1 : 0;
        }
        if ((z->chat = export_job_new(z->app, 0, z->user_id, id, EXPORT_JSON)) == NULL)
            return -1;
        export_job_all_branches(z->chat);
        enum export_piece e = export_piece(z->chat, src, &piece);
        if (e == EXPORT_PIECE_NOT_FOUND) { /* deleted since the list was read */
            rc = 0;
            goto done;
        }
        char name[160];
        snprintf(name, sizeof(name), "chats/%s", export_filename(z->chat));
        if ((e != EXPORT_PIECE_MORE && e != EXPORT_PIECE_LAST) ||
            zipout_begin(z->out, name, z->now) != 0 ||
            zipout_write(z->out, piece.p, piece.len) != 0)
            goto done;
        rc = e == EXPORT_PIECE_LAST ? zipout_end(z->out) : 0;
        if (e == EXPORT_PIECE_LAST)
            goto done;
        free(piece.p);
        return rc;
    }
    enum export_piece e = export_piece(z->chat, src, &piece);
    if ((e != EXPORT_PIECE_MORE && e != EXPORT_PIECE_LAST) ||
        zipout_write(z->out, piece.p, piece.len) != 0)
        goto done;
    rc = 0;
    if (e == EXPORT_PIECE_LAST) {
        rc = zipout_end(z->out);
        goto done;
    }
    free(piece.p);
    return rc;
done:
    free(piece.p);
    export_free(z->chat);
    z->chat = NULL;
    return rc;
}

/* One slice of the current file, or the start of the next one. */
static int step_files(struct export_zip *z, const struct export_source *src)
{
    if (z->fd < 0) {
        if (z->files == NULL || z->i_file == json_array_size(z->files)) {
            json_decref(z->files);
            z->files = NULL;
            z->i_file = 0;
            char *text = NULL;
            if (z->files_done) {
                z->stage = ZIP_USAGE;
                return 0;
            }
            if (src->files(src->ctx, z->user_id, z->after, ZIP_FILES_PAGE, &text) != DB_OK)
                return -1;
            z->files = json_loads(text, 0, NULL);
            free(text);
            if (!json_is_array(z->files))
                return -1;
            z->files_done = json_array_size(z->files) < ZIP_FILES_PAGE;
            if (json_array_size(z->files) == 0)
                return 0;
        }
        json_t *f = json_array_get(z->files, z->i_file++);
        const char *name = json_string_value(json_object_get(f, "stored_name"));
        if (name == NULL)
            return -1;
        snprintf(z->after, sizeof(z->after), "%s", name);
        char path[FILES_PATH_MAX];
        if (files_path(z->app->cfg, name, path) != 0)
            return 0; /* not of the stored shape: nothing on disk to give */
        if ((z->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
            if (errno == ENOENT) /* its row is there, the file not (being deleted) */
                return 0;
            log_warn("event=export_file_unreadable file=%s errno=%d", name, errno);
            return -1;
        }
        char entry[FILES_NAME_MAX + 8];
        snprintf(entry, sizeof(entry), "files/%s", name);
        return zipout_begin(z->out, entry, z->now);
    }
    char *slice = malloc(ZIP_FILE_SLICE);
    if (slice == NULL)
        return -1;
    ssize_t n = read(z->fd, slice, ZIP_FILE_SLICE);
    int rc = n < 0 ? -1 : zipout_write(z->out, slice, (size_t)n);
    free(slice);
    if (rc == 0 && n == 0) {
        close(z->fd);
        z->fd = -1;
        rc = zipout_end(z->out);
    }
    return rc;
}

/* A small JSON document read whole (usage, budget) as one entry. */
static int put_doc(struct export_zip *z, const struct export_source *src,
                   enum db_status (*read)(void *, const char *, char **), const char *name)
{
    char *text = NULL;
    if (read(src->ctx, z->user_id, &text) != DB_OK)
        return -1;
    int rc = zipout_begin(z->out, name, z->now) | zipout_write(z->out, text, strlen(text)) |
             zipout_write(z->out, "\n", 1) | zipout_end(z->out);
    free(text);
    return rc != 0 ? -1 : 0;
}

static enum export_piece export_zip_piece(void *state, const struct export_source *src,
                                          struct buf *b)
{
    struct export_zip *z = state;
    z->b = b;
    if (z->out == NULL) { /* the first piece */
        if (src->user(src->ctx, z->user_id) != DB_OK)
            return EXPORT_PIECE_NOT_FOUND;
        if ((z->out = zipout_open(zip_sink, z)) == NULL)
            return EXPORT_PIECE_UNREADABLE;
    }
    int rc = 0;
    while (rc == 0 && b->len < EXPORT_PIECE_BYTES_ZIP) {
        switch (z->stage) {
        case ZIP_SESSIONS:
            rc = step_sessions(z, src);
            break;
        case ZIP_FILES:
            rc = step_files(z, src);
            break;
        case ZIP_USAGE:
            rc = put_doc(z, src, src->usage, "usage.json") |
                 put_doc(z, src, src->budget, "budget.json");
            z->stage = ZIP_END;
            break;
        case ZIP_END:
            rc = zipout_close(z->out);
            z->out = NULL;
            return rc == 0 ? EXPORT_PIECE_LAST : EXPORT_PIECE_FAILED;
        }
    }
    return rc == 0 ? EXPORT_PIECE_MORE : EXPORT_PIECE_FAILED;
}

int export_zip_start(struct app *app, uint64_t txn, const char *user_id)
{
    struct export_zip *z = export_zip_new(app, user_id);
    struct export_job *j = z != NULL ? export_job_new(app, txn, user_id, NULL, EXPORT_ZIP) : NULL;
    if (j == NULL) {
        export_zip_free(z);
        return -1;
    }
    export_job_delegate(j, "chatd-export.zip", export_zip_piece, export_zip_free, z);
    export_submit(j);
    return 0;
}
