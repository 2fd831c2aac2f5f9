/* pg.h - PostgreSQL access: one connection per worker thread, every
 * statement prepared once per connection and called by its id.
 *
 * All SQL of chatd (except migrations) is in the statement table of pg.c, so
 * a reader sees every query the server can send in one place; no SQL is ever
 * built from strings. */
#ifndef CHATD_PG_H
#define CHATD_PG_H

#include <libpq-fe.h>

struct config;

enum pg_stmt {
    PG_USER_MODELS,    /* $1 user -> json array of the names of its models */
    PG_USER_GET,       /* $1 user -> username, models json, xmin, xmax */
    PG_BALANCE,        /* $1 user -> balance */
    PG_SESSIONS_LIST,  /* $1 user -> session_info json, xmin, xmax (no row: no user) */
    PG_SESSIONS_PAGE,  /* $1 user, $2 cursor time (us), $3 cursor id, $4 limit -> has_more,
                          session_info json, next cursor (no row: no user) */
    PG_CHATS_GET,      /* $1 user, $2 session -> chat json (no row: not found) */
    PG_SESSION_DELETE, /* $1 user, $2 session -> stored file names json, xid */
    PG_MODELS_LIST,    /* -> names json (sorted), xmin, xmax */
    PG_TURN_CHECK, /* access's columns + the session's name, next_seq, whether the file is in it */
    PG_BRANCH_CHECK,   /* codes 17, 18: see db_branch_check */
    PG_SWITCH,         /* $1 user, $2 session, $3 seq -> found, new leaf, xid */
    PG_FORK_FILES,     /* $1 user, $2 session, $3 seq -> file names json on the path */
    PG_FORK,           /* code 20: see db_fork */
    PG_ACCESS,         /* $1 user, $2 model name, $3 model id -> balance, model row, allowed */
    PG_SESSION_CTX,    /* $1 user, $2 session, $3 n -> model_id, name, summary, recent json,
                          next_seq */
    PG_SESSION_INSERT, /* $1 session, $2 user, $3 name, $4 model, $5 prompt */
    PG_TURN_STORE,     /* a whole turn in one statement: see db_turn_store */
    PG_TURN_STORE_NEW, /* the same for a new session */
    PG_SESSION_LOCK, /* $1 user, $2 session -> next_seq, lease's turn ('' for none) (FOR UPDATE) */
    PG_LEASE_TAKE,   /* $1 user, $2 session, $3 turn, $4 seconds, $5 new, $6 models,
                        $7 calls -> next_seq, taken, session is the user's, leaf,
                        reservation */
    PG_RESERVE,      /* $1 user, $2 hold, $3 model, $4 seconds, $5 tokens in, $6 out
                        -> reservation */
    PG_RESERVE_DROP, /* $1 hold */
    PG_SLOT_DROP,    /* $1 hold, $2 slot: one answer's part of it */
    PG_SESSION_TURN, /* $1 user, $2 session -> next_seq, running turn (both null: none) */
    PG_TURN_STOP,    /* $1 user, $2 session -> the turn marked stopped (no row: none runs) */
    PG_LEASE_EXPIRE, /* $1 session, $2 turn: deleted when it ran out */
    PG_TURN_OUTCOME, /* $1 user, $2 session, $3 turn -> holds a lease, stored, reply, name,
                        deltas */
    PG_LEASE_DROP,   /* $1 session, $2 turn */
    PG_LEASE_RENEW,  /* $1 turns (uuid[] text), $2 seconds */
    PG_CHARGE,       /* $1 user, $2 session, $3 seq, $4 kind, $5 model id, $6 model name,
                        $7 cost (null: estimate from tokens), $8 summary cost,
                        $9 prompt tokens, $10 completion tokens, $11 estimated,
                        $12 hold settled (null: none)
                        -> new balance, xid */
    PG_FILE_INSERT,  /* $1 session, $2 user, $3 stored, $4 original, $5 type, $6 size
                        -> xid */
    PG_FILE_DELETE,  /* $1 user, $2 session, $3 stored name -> it, unless a turn shows it */
    PG_TURNS_SINCE,  /* $1 user, $2 minute start, $3 day start (epoch s) -> 2 counts */
    PG_HISTORY_PAGE, /* $1 user, $2 session, $3 before, $4 limit -> name, has_more,
                        messages json, lowest seq */
    PG_SESSION_RENAME,   /* $1 user, $2 session, $3 name -> xid */
    PG_MESSAGE_ROLE,     /* $1 user, $2 session, $3 seq -> role (null: no message) */
    PG_FEEDBACK_SET,     /* $1 session, $2 seq, $3 user, $4 rating, $5 comment */
    PG_FEEDBACK_CLEAR,   /* $1 session, $2 seq */
    PG_SEARCH,           /* $1 user, $2 query, $3 limit, $4 offset -> has_more, hits json */
    PG_TITLE_SET,        /* $1 user, $2 session, $3 title -> xid (no row: renamed or gone) */
    PG_USAGE,            /* $1 user, $2 since, $3 until (epoch us, null: open) -> code 13's
                            data json (no row: no user) */
    PG_EXPORT_SESSION,   /* $1 user, $2 session -> name, created_at, prompt, model */
    PG_EXPORT_SESSIONS,  /* $1 user, $2 cursor time (us), $3 cursor id, $4 limit -> rows of
                            session_id, name, created_at, prompt, cursor time (us) */
    PG_EXPORT_PAGE,      /* $1 user, $2 session, $3 after seq, $4 limit -> messages json,
                            highest seq */
    PG_EXPORT_TREE_PAGE, /* $1 user, $2 session, $3 after seq, $4 limit -> the whole tree's */
    PG_EXPORT_PATH,      /* $1 user, $2 session -> the active path's runs, lo, hi, ... */
    PG_ORGANIZE,         /* code 24: $1 user, $2 session, $3 pinned, $4 archived, $5 tags
                            json -> pinned, archived, tags json, xid */
    PG_SESSIONS_FILTER,  /* code 1 with a filter: see pg.c */
    PG_SHARE_CREATE,     /* code 21: see pg.c */
    PG_SHARES_LIST,      /* $1 user -> links json (no row: no user) */
    PG_SHARE_REVOKE,     /* $1 user, $2 link -> 1 (no row: not the user's) */
    PG_SHARE_VIEW,       /* $1 link -> snapshot json, one view counted (no row: none) */
    PG_SHARE_FILE,       /* $1 link, $2 stored name -> content type (no row: not served) */
    PG_SHARE_SOURCE,     /* $1 link -> owner, session, seq (no row: none) */
    PG_IMPORT_START,     /* $1 import, $2 user, $3 format, $4 total */
    PG_IMPORT_CONVO,     /* one conversation imported: see pg.c */
    PG_IMPORT_UPDATE,    /* an import's progress: see pg.c */
    PG_IMPORT_GET,       /* $1 user, $2 import -> state json */
    PG_USER_FILES,       /* $1 user, $2 after name, $3 limit -> files json */
    PG_BUDGET_SET,       /* $1 user, $2 personal cap (null: none) -> 1 (no row: no user) */
    PG_BUDGET,           /* $1 user -> code 26's json (no row: no user) */
    PG_KEEP,             /* $1 user, $2 session -> xid (no row: not the user's) */
    PG_SWEEP,            /* a batch of retention: see pg.c */
    PG_SWEEP_PLAN,       /* what PG_SWEEP would delete: see pg.c */
    PG_ERASURE_TAKE,     /* $1 limit -> item, kind, name (locked) */
    PG_ERASURE_DONE,     /* $1 items (bigint[] text) */
    PG_RUNOUT_PURGE,     /* reservations and leases long run out */
    PG_ERASE_USER,       /* $1 user -> sessions erased (null: no user) */
    PG_SWEEP_LOCK,       /* -> whether this connection got the sweeper's lock */
    PG_SWEEP_UNLOCK,
    PG_TURN_STORED,
    PG_CLIENT_TURN,
    PG_WAL_LSN,  /* -> the primary's WAL position */
    PG_REPLAYED, /* $1 lsn -> "true" when this server has replayed it, else "false" */
    PG_PING,     /* -> 1 (readiness) */
    PG_STMT_COUNT
};

/* Which server a connection is for: DATABASE_URL's (or DB_*'s) primary,
 * or one of DATABASE_READ_URL's standbys. */
enum pg_target { PG_PRIMARY, PG_STANDBY };

struct pg {
    PGconn *conn;
    const struct config *cfg;
    enum pg_target target;
    int prepared;             /* statements prepared on the current connection */
    int lost;                 /* the last failure broke the connection (or found it on a
                               * standby): its statement's outcome may be unknown */
    unsigned long generation; /* connections made so far */
    char sqlstate[6];         /* the last failure's SQLSTATE ("" none) */
    char constraint[64];      /* and the constraint it names, if any */
};

/* Connects (or reconnects) and prepares. 0 on success, -1 (logged). A
 * failed pg can be retried: every call goes through pg_ensure. */
int pg_open(struct pg *pg, const struct config *cfg);
int pg_ensure(struct pg *pg);
void pg_close(struct pg *pg);

/* Runs a prepared statement. Returns a result with status TUPLES_OK or
 * COMMAND_OK, or NULL after logging the failure (the connection is reset
 * on the next call if it broke). nparams must match the statement. */
PGresult *pg_exec(struct pg *pg, enum pg_stmt stmt, int nparams, const char *const *params);

/* Plain command outside the table, for BEGIN/COMMIT/ROLLBACK only. */
int pg_command(struct pg *pg, const char *sql);

/* A new connection for cfg (its status still to be checked; NULL only
 * when out of memory): DATABASE_URL, else DB_HOST..DB_NAME, or with
 * PG_STANDBY DATABASE_READ_URL. With a multi-host URL and
 * target_session_attrs=read-write, libpq tries the hosts in turn, so a
 * reconnect after a failover finds the new primary. */
PGconn *pg_connect(const struct config *cfg, enum pg_target target);

/* The host a connection is to, for log lines ("?" before it has one). */
const char *pg_where(const PGconn *c);

/* 1 when a statement that failed with r on c calls for another
 * connection: c is broken, or its server is not (or no longer) a writable
 * primary. Not a failure of the statement itself; a reconnect finds
 * whichever host is primary now. The one rule of pg_exec and the lease
 * thread. */
int pg_needs_reconnect(const PGconn *c, const PGresult *r);

/* The SQL of a statement, for a thread that runs it on a connection of
 * its own (store/lease.c) rather than prepared on a worker's. */
const char *pg_sql(enum pg_stmt stmt);

#endif
