/* export.h - downloads of a user's history, the worker's half.
 *
 *   GET /sessions/<id>/export?format=json|md|txt|csv   one session
 *   GET /sessions/<id>/export?format=json&branches=all its whole tree
 *   GET /export?format=jsonl                           every session, one
 *                                                       line each
 *   GET /export?format=zip                             everything of the
 *                                                       user (export_zip.h)
 *
 * A session is its active path (what code 2 shows) unless the whole tree
 * is asked for, where each message names its parent.
 *
 * An export is a job that produces its download one piece at a time: a
 * piece is at most one page of EXPORT_PAGE messages read from PostgreSQL
 * by one index range, formatted, and posted to the service thread
 * (outbox_export) with the job itself. The transport writes the piece and
 * only then hands the job back (export_next) for the next one, so a
 * download holds one page in memory whatever the session's length, and a
 * client that reads slowly slows the reading of the database instead of
 * filling chatd's memory.
 *
 * The first piece carries the outcome: OUTBOX_DONE, or OUTBOX_NOT_FOUND for
 * a session (or user) that does not exist or is someone else's (the same
 * answer), or OUTBOX_FAILED; net/http.c makes them 200, 404 and 500. */
#ifndef CHATD_EXPORT_H
#define CHATD_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

struct app;
struct buf;
struct export_job;

#define EXPORT_PAGE 250         /* messages read per piece */
#define EXPORT_SESSIONS_PAGE 50 /* sessions listed per read (jsonl) */

enum export_format { EXPORT_JSON, EXPORT_MD, EXPORT_TXT, EXPORT_CSV, EXPORT_JSONL, EXPORT_ZIP };

/* The format named name: json, md, txt or csv for one session, jsonl or
 * zip for all of them. 0, or -1 when there is no such format for that
 * kind. */
int export_format_parse(const char *name, int all_sessions, enum export_format *out);

/* Starts an export for the HTTP transaction txn: user_id's session
 * session_id, or every session of the user when session_id is NULL; of
 * each its active path, or with all_branches its whole tree. The first
 * piece arrives through the outbox. 0, or -1 when out of memory. */
int export_start(struct app *app, uint64_t txn, const char *user_id, const char *session_id,
                 enum export_format format, int all_branches);

/* The transport has written the last piece: read and post the next. */
void export_next(struct export_job *j);

/* NULL is fine. */
void export_free(struct export_job *j);
/* export_free for a job held without its type (work/outbox.h). */
void export_release(void *job);

/* The download's Content-Type and a file name that needs no quoting
 * (letters, digits, '-', '_', '.'): set once the first piece is posted. */
const char *export_content_type(const struct export_job *j);
const char *export_filename(const struct export_job *j);

/* ---- the paging, alone (tests/unit/test_export.c) */

/* Where an export reads: PostgreSQL on a worker (db_balance for the user,
 * db_export_session, db_export_sessions, db_export_page), or pages in
 * memory in a test. */
struct db_export_session;
struct export_source {
    enum db_status (*user)(void *ctx, const char *user_id);
    enum db_status (*session)(void *ctx, const char *user_id, const char *session_id,
                              struct db_export_session *out);
    enum db_status (*sessions)(void *ctx, const char *user_id, long long cursor_us,
                               const char *cursor_id, int limit, struct db_export_session **out,
                               int *n);
    enum db_status (*page)(void *ctx, const char *user_id, const char *session_id, long long after,
                           int limit, int all_branches, char **path, char **json, long long *last);
    /* zip only: a page of the user's files (db_user_files), the usage
     * (db_usage) and the caps (db_budget) */
    enum db_status (*files)(void *ctx, const char *user_id, const char *after, int limit,
                            char **json);
    enum db_status (*usage)(void *ctx, const char *user_id, char **json);
    enum db_status (*budget)(void *ctx, const char *user_id, char **json);
    void *ctx;
};

/* A job as export_start makes it, not yet submitted. NULL when out of
 * memory. */
struct export_job *export_job_new(struct app *app, uint64_t txn, const char *user_id,
                                  const char *session_id, enum export_format format);
/* The whole tree of each session instead of its active path. */
void export_job_all_branches(struct export_job *j);

enum export_piece;
/* A download whose pieces another module makes (export_zip.h): piece is
 * called with state for each, with the job's sources, and free_state
 * when the job goes. */
typedef enum export_piece (*export_piece_fn)(void *state, const struct export_source *src,
                                             struct buf *b);
void export_job_delegate(struct export_job *j, const char *filename, export_piece_fn piece,
                         void (*free_state)(void *), void *state);
/* Runs a job made by export_job_new: its first piece comes through the
 * outbox. */
void export_submit(struct export_job *j);

enum export_piece {
    EXPORT_PIECE_MORE,       /* b holds a piece; more follow */
    EXPORT_PIECE_LAST,       /* b holds the last piece */
    EXPORT_PIECE_NOT_FOUND,  /* first piece: no such session (or user), or not theirs */
    EXPORT_PIECE_UNREADABLE, /* first piece: the database failed */
    EXPORT_PIECE_FAILED,     /* later: the download ends incomplete */
};

/* Appends the job's next piece to b (a page of messages for one session,
 * up to EXPORT_PIECE_BYTES for all of them), reading from src. */
enum export_piece export_piece(struct export_job *j, const struct export_source *src,
                               struct buf *b);

/* ---- pure */

/* s as one RFC 4180 field, always quoted; a text that a spreadsheet would
 * take for a formula (it starts with '=', '+', '-', '@', a tab or a
 * carriage return) gets a leading apostrophe, which spreadsheets show as
 * text. */
int export_csv_text(struct buf *b, const char *s);

/* A file name for a download of the session named name: its ASCII letters
 * and digits, runs of anything else made one '-', at most 40 characters,
 * then "-<id>", the whole session id, and ext ("chat" when the name has
 * none of those). */
void export_file_name(char *out, size_t cap, const char *name, const char *id, const char *ext);

#endif
