/* db.h - every PostgreSQL read and write of chatd, as typed calls.
 *
 * Each function runs one prepared statement of store/pg.c and reads its
 * row into C values, so that no caller outside store/ ever sees a
 * PGresult or a column number. They return
 *   DB_OK         done (a row was found, or the write happened),
 *   DB_NOT_FOUND  no such row (for a user's session: missing, or someone
 *                 else's; callers answer both alike),
 *   DB_ERROR      PostgreSQL failed or is unreachable (logged by pg.c).
 * Strings a function hands out are malloc'd and the caller's. */
#ifndef CHATD_DB_H
#define CHATD_DB_H

#include <stddef.h>
#include <stdint.h>

#include "lib/uuid.h"
#include "store/dbrow.h"
#include "store/pg.h"

/* The snapshot a read ran in, which a cached copy records (store/inval.h). */
struct db_snapshot {
    uint64_t xmin, xmax;
};

/* ------------------------------------------------------ users and models */

struct db_model {
    int id;
    char *name, *provider;
    long context_length;
    double price_in, price_out; /* dollars per 1K tokens */
};
void db_model_free(struct db_model *m);

/* The one check of who may use what. */
enum db_access {
    DB_ACCESS_OK,
    DB_ACCESS_NO_USER,       /* no such user */
    DB_ACCESS_UNKNOWN_MODEL, /* no such model in the catalogue */
    DB_ACCESS_DENIED,        /* the model is not among the user's */
    DB_ACCESS_ERROR,
};

/* The user exists (and *balance is theirs, when balance is not NULL);
 * with model_name (or, when it is NULL, model_id >= 0) the model exists
 * and is one of the user's, and *model is filled (free with
 * db_model_free). With neither, only the user is checked. */
enum db_access db_access(struct pg *pg, const char *user_id, const char *model_name, int model_id,
                         double *balance, struct db_model *model);

/* A chat turn's checks in one round trip: db_access's, and the session
 * session_id (NULL for a new one) and the file file_name (NULL for none)
 * in it. On DB_ACCESS_OK, *target says what was found (free its name with
 * free()). */
struct db_turn_target {
    int session_found;
    char *session_name;
    long long next_seq;
    int file_found;
};
enum db_access db_turn_check(struct pg *pg, const char *user_id, const char *model_name,
                             int model_id, const char *session_id, const char *file_name,
                             double *balance, struct db_model *model,
                             struct db_turn_target *target);

/* Codes 17 (edit) and 18 (regenerate): db_turn_check's for message seq of
 * the session. With model_name NULL the model is the session's. On
 * DB_ACCESS_OK, *target says what was found; free with
 * db_branch_target_free. */
struct db_branch_target {
    int session_found;
    char *session_name;
    long long next_seq;
    char role[16];    /* of message seq; "" when the session has none */
    long long parent; /* its parent; -1: none */
    char *content;    /* its text */
    char parent_role[16];
    long long grandparent; /* the parent's parent; -1: none */
    char *parent_content;  /* NULL when it has no parent */
    char *file_name;       /* the file its turn showed; NULL: none */
    char *prompt;          /* the session's prompt */
};
void db_branch_target_free(struct db_branch_target *t);
enum db_access db_branch_check(struct pg *pg, const char *user_id, const char *model_name,
                               const char *session_id, long long seq, double *balance,
                               struct db_model *model, struct db_branch_target *target);

/* Code 0: username and model ids (a JSON array). */
enum db_status db_user_profile(struct pg *pg, const char *user_id, char **username,
                               char **models_json, struct db_snapshot *snap);
enum db_status db_balance(struct pg *pg, const char *user_id, double *balance);
/* Code 5 with "mine": the names of the user's models, sorted, as a JSON
 * array. Straight from PostgreSQL, so never stale. DB_NOT_FOUND: no user. */
enum db_status db_user_models(struct pg *pg, const char *user_id, char **json);
/* Code 1: [{session_id, session_name}], newest first. DB_NOT_FOUND: no user. */
enum db_status db_sessions_list(struct pg *pg, const char *user_id, char **json,
                                struct db_snapshot *snap);
/* Code 1 with "limit": a page of that list after cursor ("<epoch us>:<id>",
 * NULL: from the newest); *next is the cursor of the page's last session
 * (NULL at the end). DB_NOT_FOUND: no user. */
enum db_status db_sessions_page(struct pg *pg, const char *user_id, const char *cursor, int limit,
                                char **json, int *has_more, char **next);
/* Code 5: model names, sorted. */
enum db_status db_models_list(struct pg *pg, char **json, struct db_snapshot *snap);

/* ------------------------------------------------------------- sessions */

/* Code 2: [{role, content}] of the active path, in order. */
enum db_status db_chats(struct pg *pg, const char *user_id, const char *session_id, char **json);

struct db_session {
    int model_id;
    char *name, *summary;
    char *recent_json; /* the newest messages asked for, oldest first */
    long long next_seq;
};
void db_session_free(struct db_session *s);
/* The user's session with the newest `recent` messages (0: none) of the
 * path that ends at message end (-1: none), oldest first, and that path's
 * running summary. */
enum db_status db_session_get(struct pg *pg, const char *user_id, const char *session_id,
                              long long end, int recent, struct db_session *out);

/* Code 4: deletes the user's session; *files_json lists its stored file
 * names (now to remove from disk), *xid the deleting transaction. */
enum db_status db_session_delete(struct pg *pg, const char *user_id, const char *session_id,
                                 char **files_json, uint64_t *xid);

/* Code 9: a page of the active path of the user's session, newest first:
 * up to limit messages before message before (before < 0: the newest), as
 * a JSON array in ascending seq ({seq, role, content, created_at,
 * parent_seq, siblings, sibling_index} and, where they apply, rating,
 * content_type, size, original_name). */
struct db_page {
    char *name;
    char *messages_json;
    char *organized_json; /* {"pinned", "archived", "tags"} of the session */
    int has_more;
    long long lowest_seq; /* -1 when the page is empty */
};
void db_page_free(struct db_page *p);
enum db_status db_history_page(struct pg *pg, const char *user_id, const char *session_id,
                               long long before, int limit, struct db_page *out);

/* Code 11: the user's hits for query on every branch, best first, limit
 * of them from offset on: a JSON array of {session_id, session_name, seq,
 * role, snippet, created_at, on_active_path}, the snippet's matched words
 * between U+E000 and U+E001 (and no other such character in it). */
struct db_search_scope {
    const char *tag;               /* NULL: any */
    const char *pinned, *archived; /* "t"/"f", NULL: either */
};
enum db_status db_search(struct pg *pg, const char *user_id, const char *query,
                         const struct db_search_scope *scope, int limit, int offset,
                         char **hits_json, int *has_more);

/* Code 10; *xid is the renaming transaction. */
enum db_status db_session_rename(struct pg *pg, const char *user_id, const char *session_id,
                                 const char *name, uint64_t *xid);

/* Code 12: the role of message seq of the user's session: DB_OK with *role
 * ("" when the session has no such message), DB_NOT_FOUND: no such session
 * of the user's. */
enum db_status db_message_role(struct pg *pg, const char *user_id, const char *session_id,
                               long long seq, char role[16]);
/* Sets (rating 1 or -1) or clears (0) the rating of message seq. */
enum db_status db_feedback(struct pg *pg, const char *user_id, const char *session_id,
                           long long seq, int rating, const char *comment);

/* Code 19: the active leaf of the user's session becomes the newest
 * message under message seq. DB_OK with *leaf and *xid; DB_NOT_FOUND: no
 * such session of the user's; *leaf = -1 with DB_OK: no such message. */
enum db_status db_switch(struct pg *pg, const char *user_id, const char *session_id, long long seq,
                         long long *leaf, uint64_t *xid);
/* Code 20, first step: the stored names of the files on the path to
 * message seq (a JSON array). DB_NOT_FOUND: no such session of the
 * user's; DB_OK with *json NULL: no such message. */
enum db_status db_fork_files(struct pg *pg, const char *user_id, const char *session_id,
                             long long seq, char **json);
/* Code 20: the fork (see pg.c's PG_FORK): new_id, named name (NULL: the
 * original's with " (fork)"), its files the copies to_names[i] of
 * from_names[i] (Postgres array literals). *name is the fork's name
 * (malloc'd). DB_NOT_FOUND: the session or the message is gone. */
enum db_status db_fork(struct pg *pg, const char *user_id, const char *session_id, long long seq,
                       const char *owner, const char *new_id, const char *name,
                       const char *from_names, const char *to_names, char **fork_name,
                       uint64_t *xid);

/* ---------------------------------- organizing and share links (db_share.c)
 * The fork above copies from user_id's session into owner's: the same
 * user, or the viewer of a share link (db_share_source). */

/* Code 24: pinned, archived ("t"/"f", NULL: unchanged) and tags (a JSON
 * array of checked tags, NULL: unchanged) of the user's session. DB_OK
 * with the new state (*tags_json malloc'd) and *xid. */
enum db_status db_organize(struct pg *pg, const char *user_id, const char *session_id,
                           const char *pinned, const char *archived, const char *tags_json,
                           int *is_pinned, int *is_archived, char **tags_json_out, uint64_t *xid);
/* Code 1 with a filter: archived and pinned ("t"/"f"; pinned NULL: either),
 * tag (NULL: any), the temporary chats or the others, after cursor
 * ("<0|1>:<us>:<uuid>", NULL: from the top), limit entries. DB_NOT_FOUND:
 * no such user. */
enum db_status db_sessions_filter(struct pg *pg, const char *user_id, const char *archived,
                                  const char *pinned, const char *tag, int temporary,
                                  const char *cursor, int limit, char **json, int *has_more,
                                  char **next);

/* Code 21: link share_id to the path ending at seq (-1: the active leaf),
 * expiring after expires_in seconds (<= 0: never) and max_views views (0:
 * no limit). DB_OK with *expires_at (malloc'd, NULL: never); DB_NOT_FOUND:
 * no such session of the user's; *no_message: no such message. */
enum db_status db_share_create(struct pg *pg, const char *user_id, const char *session_id,
                               long long seq, const char *share_id, long long expires_in,
                               long long max_views, int *no_message, char **expires_at);
/* Code 22: the user's links (JSON). DB_NOT_FOUND: no such user. */
enum db_status db_shares_list(struct pg *pg, const char *user_id, char **json);
/* Code 23. DB_NOT_FOUND: no such link of the user's. */
enum db_status db_share_revoke(struct pg *pg, const char *user_id, const char *share_id);
/* GET /s/<id>: the snapshot (JSON), one view counted. DB_NOT_FOUND: no
 * link that can be viewed (unknown, revoked, expired, used up, gone). */
enum db_status db_share_view(struct pg *pg, const char *share_id, char **json);
/* GET /s/<id>/files/<name>: the file's type when the link shows it. */
enum db_status db_share_file(struct pg *pg, const char *share_id, const char *name,
                             char **content_type);
/* Code 20 from a link: the owner, session and message the link ends at,
 * and the name it was shared under (*title malloc'd). */
enum db_status db_share_source(struct pg *pg, const char *share_id, char owner[UUID_STR_LEN + 1],
                               char session_id[UUID_STR_LEN + 1], long long *seq, char **title);

/* ---------------------------------------------------------- import (db_import.c) */

/* POST /import's row (total < 0: not known). */
enum db_status db_import_start(struct pg *pg, const char *import_id, const char *user_id,
                               const char *format, long long total);
/* One conversation, in one statement (see pg.c's PG_IMPORT_CONVO):
 * *stored 0 when it was imported before; *messages stored. */
enum db_status db_import_convo(struct pg *pg, const char *user_id, const char *session_id,
                               const char *title, const char *source, long long created_us,
                               const char *messages_json, long long leaf, int *stored,
                               long long *messages, uint64_t *xid);
enum db_status db_import_update(struct pg *pg, const char *import_id, long long done,
                                long long sessions, long long messages, const char *skipped_json,
                                const char *status, const char *error);
/* The user's import as JSON. DB_NOT_FOUND: none of theirs. */
enum db_status db_import_get(struct pg *pg, const char *user_id, const char *import_id,
                             char **json);

/* ---------------------------------------------------------------- export */

struct db_export_session {
    char *session_id, *name, *created_at, *prompt, *model;
    long long cursor_us; /* its created_at: the next list page starts after it */
};
void db_export_session_free(struct db_export_session *s);
/* The user's session (model filled; session_id not). */
enum db_status db_export_session(struct pg *pg, const char *user_id, const char *session_id,
                                 struct db_export_session *out);
/* Up to limit of the user's sessions after the cursor (cursor_us < 0:
 * from the oldest), oldest first; *n set. The caller frees each and the
 * array. */
enum db_status db_export_sessions(struct pg *pg, const char *user_id, long long cursor_us,
                                  const char *cursor_id, int limit, struct db_export_session **out,
                                  int *n);
/* Up to limit messages of the user's session after seq after, ascending:
 * of its active path (all_branches 0), or of its whole tree. A JSON array
 * ({seq, role, content, created_at} and, where they apply, rating,
 * comment, content_type, size, original_name; with all_branches
 * parent_seq, null for a first message); *last_seq the highest (-1 when
 * none). *path is the active path as export_path reads it once, NULL
 * until then: read here at the first page and kept by the caller (free
 * it with free()) for the next pages of the same session. */
enum db_status db_export_page(struct pg *pg, const char *user_id, const char *session_id,
                              long long after, int limit, int all_branches, char **path,
                              char **json, long long *last_seq);

/* ----------------------------------------------------- one transaction */

enum db_status db_begin(struct pg *pg);
enum db_status db_commit(struct pg *pg);
void db_rollback(struct pg *pg);

enum db_status db_session_insert(struct pg *pg, const char *session_id, const char *user_id,
                                 const char *name, int model_id, const char *prompt);
/* Locks the user's session row until commit; *next_seq is its value and
 * owner the turn that holds its lease ("" for none). DB_NOT_FOUND:
 * missing, someone else's, or deleted meanwhile. */
enum db_status db_session_lock(struct pg *pg, const char *user_id, const char *session_id,
                               long long *next_seq, char owner[UUID_STR_LEN + 1]);
/* ------------------------------------------------------------ turn lease */

/* Money set aside before calls to the agent (migration 0013): one amount
 * per call, each the most the call can cost or its share of what is left
 * of the balance and every cap; a call is never charged more. */
#define DB_RESERVE_MAX 8
#define DB_MONEY_TEXT 64
struct db_reserve {
    int n; /* amounts reserved, one per model asked for */
    char amount[DB_RESERVE_MAX][DB_MONEY_TEXT];
    /* refused (DB_REFUSED): what is used up, "balance", "user" (the user's
     * monthly cap), "model:<name>" or "group:<name>", and the moment it
     * resets (epoch seconds; 0 for the balance) */
    char refused[160];
    long long resets;
};

/* The session's turn lease for turn_id, for seconds (migration 0007);
 * session_new: the session has no row yet. With it, when models is not
 * NULL, the reservation of `calls` calls of each of the n_models models
 * (at most DB_RESERVE_MAX), held as turn_id's until the store charges it
 * or the lease is dropped or runs out. DB_OK with *next_seq and the
 * active leaf *leaf (-1: no message yet) as they are now, and *res;
 * DB_BUSY while another turn holds it; DB_REFUSED (res->refused set, no
 * lease taken) when the money is not there; DB_NOT_FOUND when the user
 * has no such session. */
enum db_status db_lease_take(struct pg *pg, const char *user_id, const char *session_id,
                             const char *turn_id, int seconds, int session_new, const int *models,
                             int n_models, int calls, long long *next_seq, long long *leaf,
                             struct db_reserve *res);
/* A reservation of one call of model_id as hold_id (a title's), for
 * seconds, of at most in_tokens in and out_tokens out (below the model's
 * limits): DB_OK, DB_REFUSED or DB_ERROR. */
enum db_status db_reserve(struct pg *pg, const char *user_id, const char *hold_id, int model_id,
                          int seconds, long in_tokens, long out_tokens, struct db_reserve *res);
/* Gives back hold_id's reservation (a title not called). */
enum db_status db_reserve_drop(struct pg *pg, const char *hold_id);
/* Gives back slot's part of hold_id's reservation (one answer side by
 * side that failed, while the others run on). */
enum db_status db_reserve_drop_slot(struct pg *pg, const char *hold_id, int slot);
/* The turn running on the user's session (its lease not run out), "" for
 * none; *next_seq as now (0 for a new session whose first turn runs).
 * DB_NOT_FOUND: no such session of the user's, and no turn creating it. */
enum db_status db_session_turn(struct pg *pg, const char *user_id, const char *session_id,
                               long long *next_seq, char turn_id[UUID_STR_LEN + 1]);
/* Gives it back unless it has passed to another turn already. */
enum db_status db_lease_drop(struct pg *pg, const char *session_id, const char *turn_id);
/* Code 8 for a turn running anywhere: marks the lease of the turn running
 * on the user's session (not run out) as stopped, which its store reads
 * (db_turn_store). DB_OK with turn_id set; DB_NOT_FOUND when no turn runs
 * there (or the session is not the user's). */
enum db_status db_turn_stop(struct pg *pg, const char *user_id, const char *session_id,
                            char turn_id[UUID_STR_LEN + 1]);

/* What became of turn_id, a turn of the user's on session_id, for whoever
 * resumes it. A lease that ran out is deleted first, so a turn found LOST
 * can never be stored afterwards (its store is fenced on the lease). */
enum db_outcome {
    DB_OUTCOME_RUNNING,     /* it holds its lease */
    DB_OUTCOME_STORED,      /* *reply, *session_name (malloc'd) and *deltas set */
    DB_OUTCOME_STORED_GONE, /* stored, and the session deleted since */
    DB_OUTCOME_LOST,        /* not stored, and never will be */
    DB_OUTCOME_ERROR,
};
enum db_outcome db_turn_outcome(struct pg *pg, const char *user_id, const char *session_id,
                                const char *turn_id, char **reply, char **session_name,
                                long long *deltas);

/* A charge: its ledger row and the balance deducted, in one statement. */
struct db_charge {
    const char *user_id, *session_id;
    long long seq;    /* the assistant message's */
    const char *kind; /* "turn" or "title" */
    int model_id;
    const char *model_name;
    const char *cost;         /* decimal text; NULL: the token estimate at the model's prices */
    const char *summary_cost; /* decimal text added to it; NULL: none */
    unsigned prompt_tokens, completion_tokens; /* 0: not reported */
    int estimated;
    const char *hold_id; /* the reservation it settles; NULL: none */
    char balance[64];    /* out: the balance after the charge, exact decimal text */
};
/* *xid is the transaction's id (xid may be NULL). */
enum db_status db_charge(struct pg *pg, struct db_charge *c, uint64_t *xid);

/* A chat turn, stored in one statement (one round trip): its messages,
 * next_seq, the active leaf and summary, the ledger row and the charge c
 * (c->seq and c->balance are set), and its lease given back. Fenced:
 * nothing at all is written unless the session's lease is still
 * turn_id's. The messages are the rows user (message), assistant (reply,
 * with the path's summary), file (file_name) from row first on,
 * n_messages of them, each under the one before and the first under
 * parent: a turn 0 and 2 (3 with a file); a regenerated answer 1 and 1
 * (2 with its question's file). */
struct db_turn_store {
    const char *user_id, *session_id, *turn_id;
    int first;        /* 0, or 1: the question is stored already */
    int n_messages;   /* rows inserted */
    long long parent; /* of the first row; -1: none (a first message) */
    const char *message, *reply, *file_name, *summary;
    int session_new; /* insert the session row with it */
    const char *session_name, *prompt;
    int reply_stopped;          /* reply carries the stop marker already (a stop heard here) */
    long long deltas;           /* type 7 frames the turn streamed */
    int keep_lease;             /* one of several answers, not the last: the lease stays */
    int slot;                   /* its answer's reservation, of those turn_id holds */
    int temporary;              /* a new session: a temporary chat (migration 0013) */
    const char *client_turn_id; /* the client's name for the turn; NULL: none */
};
enum db_store {
    DB_STORE_OK,
    DB_STORE_NO_SESSION, /* deleted while the agent was thinking */
    DB_STORE_FENCED,     /* the lease is another turn's (or gone) */
    DB_STORE_DUPLICATE,  /* client_turn_id names a turn stored already */
    DB_STORE_UNKNOWN,    /* the connection went before the outcome came:
                          * stored or not, db_turn_stored says */
    DB_STORE_ERROR,
};
/* *base: next_seq before the turn (the first new message's seq); *xid the
 * transaction's id; *stopped_here 1 when a stop from elsewhere had marked
 * the lease (db_turn_stop) and the reply was stored with the marker
 * " [stopped]" appended (an empty reply: "[stopped]"). */
enum db_store db_turn_store(struct pg *pg, const struct db_turn_store *in, struct db_charge *c,
                            long long *base, uint64_t *xid, int *stopped_here);

/* Whether answer slot of turn_id on session_id was stored, asked after
 * DB_STORE_UNKNOWN on a new connection (to the primary of the moment):
 * DB_OK with *seq (the answer's), *reply (malloc'd, as stored) and balance
 * (of cap bytes: the user's now); DB_NOT_FOUND when it was not. The
 * session row is locked first, so a store still in flight on the server
 * asked is waited for: the answer is final. */
enum db_status db_turn_stored(struct pg *pg, const char *session_id, const char *turn_id, int slot,
                              long long *seq, char **reply, char *balance, size_t cap);

/* A turn the client named (migration 0014), as it was stored. */
struct db_client_turn {
    char session_id[UUID_STR_LEN + 1];
    char *session_name, *reply; /* malloc'd */
    int temporary;
    long long base, n, parent; /* parent -1: none */
};
enum db_status db_client_turn(struct pg *pg, const char *user_id, const char *client_turn_id,
                              struct db_client_turn *out);
void db_client_turn_free(struct db_client_turn *ct);

/* Code 13: {user_id, balance, spent, turns, by_model: [{model, turns,
 * spent}]} as JSON text that PostgreSQL wrote, its money the exact
 * decimals (JSON numbers of any length), for the ledger between since_us
 * and until_us (epoch microseconds; < 0: open). DB_NOT_FOUND: no user. */
enum db_status db_usage(struct pg *pg, const char *user_id, long long since_us, long long until_us,
                        char **json);

/* A title from the agent: DB_NOT_FOUND when the user renamed the session
 * meanwhile (or it is gone). */
enum db_status db_title_set(struct pg *pg, const char *user_id, const char *session_id,
                            const char *title, uint64_t *xid);

/* ---------------------------------------------------------------- files */

enum db_status db_file_insert(struct pg *pg, const char *session_id, const char *user_id,
                              const char *name, const char *original_name, const char *content_type,
                              uint64_t size, uint64_t *xid);
/* Deletes the file's row unless a stored turn shows it: DB_OK when it was
 * deleted (remove it from disk), DB_NOT_FOUND when it stays or was gone. */
enum db_status db_file_delete(struct pg *pg, const char *user_id, const char *session_id,
                              const char *name);

/* ---------------------------------------------------------------- other */

/* The user's chat turns since minute_start and since day_start (epoch s). */
enum db_status db_turns_since(struct pg *pg, const char *user_id, long long minute_start,
                              long long day_start, long long *minute, long long *day);
enum db_status db_ping(struct pg *pg);

/* ------------------------------------ lifecycle and budgets (db_life.c) */

/* Code 25: the user's temporary chat made ordinary (any session of the
 * user's: no change for an ordinary one). DB_NOT_FOUND: not the user's. */
enum db_status db_keep(struct pg *pg, const char *user_id, const char *session_id, uint64_t *xid);
/* Code 26: the personal cap, decimal text (NULL: none). DB_NOT_FOUND: no
 * such user. */
enum db_status db_budget_set(struct pg *pg, const char *user_id, const char *personal_cap);
/* Code 26's answer: {user_id, balance, reserved, monthly_cap,
 * personal_cap, caps: [{scope, name, cap, spent, reserved, left}],
 * caps_reset} as JSON text PostgreSQL wrote. DB_NOT_FOUND: no user. */
enum db_status db_budget(struct pg *pg, const char *user_id, char **json);

/* GET /export?format=zip: up to limit of the user's files after stored
 * name after ("" from the first), by name, as a JSON array of
 * {stored_name, original_name, session_id, content_type, size}. */
enum db_status db_user_files(struct pg *pg, const char *user_id, const char *after, int limit,
                             char **json);

/* What the sweeper deletes (work/sweep.c). */
struct db_sweep_policy {
    int temporary_hours;            /* temporary chats idle longer */
    int retention_days;             /* others, for users without their own; 0: kept */
    long long clock_offset_seconds; /* as if the clock ran this far ahead */
    int batch;                      /* sessions per statement of each kind */
};
/* 1 when this connection took the sweeper's lock (one sweeper across
 * every chatd), else 0; db_sweep_unlock gives it back. */
int db_sweep_lock(struct pg *pg);
void db_sweep_unlock(struct pg *pg);
/* One batch: up to pol->batch temporary chats and as many sessions past
 * retention deleted, in one short statement (rows a turn holds are
 * skipped until the next); the counts of each. */
enum db_status db_sweep(struct pg *pg, const struct db_sweep_policy *pol, int *temporary,
                        int *retention);
/* What db_sweep would delete now, every session, oldest first: fn gets
 * session, user, reason, last activity. */
typedef void (*db_rows_fn)(void *arg, const char *const *row, int ncols);
enum db_status db_sweep_plan(struct pg *pg, const struct db_sweep_policy *pol, db_rows_fn fn,
                             void *arg);

/* The erasure queue (migration 0013): files and Redis keys whose rows are
 * gone. db_erasure_run takes up to limit entries in a transaction, lets fn
 * remove them (it sets done on each it removed: the others stay queued)
 * and commits; *taken: how many it took. */
struct db_erasure_item {
    const char *kind; /* "file" (name: stored name), "session" or "user" (name: id) */
    const char *name;
    int done;
};
typedef void (*db_erasure_fn)(void *arg, struct db_erasure_item *items, int n);
enum db_status db_erasure_run(struct pg *pg, int limit, db_erasure_fn fn, void *arg, int *taken);
/* Reservations and leases run out an hour ago deleted. */
enum db_status db_runout_purge(struct pg *pg);
/* `chatd erase-user`: everything of the user (chatd_erase_user).
 * DB_NOT_FOUND: no such user. */
enum db_status db_erase_user(struct pg *pg, const char *user_id, long long *sessions);

#endif
