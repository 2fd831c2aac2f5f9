/* turn.h - one chat turn after its checks: the session's order and lease,
 * the agent call, and the one transaction that stores the whole turn.
 *
 *   worker:       turn_begin: detach from the connection's request FIFO,
 *                 wait for the session's previous turn (work/slots.h)
 *   worker:       take the session's lease (or park until it is free),
 *                 load the context (work/context.h), call the agent
 *   agent thread: deltas -> type 7 frames; done -> Summarize (if supported)
 *   worker:       one transaction: session row (NEW), messages, summary,
 *                 charge -> Redis context -> final type 3 reply
 *
 * A turn that fails at the agent stores nothing and charges nothing, so
 * the user never sees half a turn: either the user message, the reply
 * (and the file entry) and the charge are all committed together, or none
 * is. A turn stopped by code 8 stores the partial reply with a
 * " [stopped]" marker and charges the estimated cost of what was
 * generated.
 *
 * A turn moves between threads and is reference-counted; the connection
 * that started it holds a reference (for stop and for cancel on
 * disconnect) until the turn ends. work/chat.c makes one from a code 3
 * request. */
#ifndef CHATD_TURN_H
#define CHATD_TURN_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lib/util.h"
#include "lib/uuid.h"
#include "store/db.h"
#include "wire/proto.h"
#include "work/pool.h"
#include "work/slots.h"

struct agent_call;
struct app;
struct turn_group;

/* Why a turn was refused or failed. Chosen by the steps of chat.c and
 * turn.c; the wire code is chosen from it in one place, turn_wire_code. */
enum turn_error {
    TURN_OK = 0,
    TURN_NO_USER,
    TURN_UNKNOWN_MODEL,
    TURN_NO_MODEL_ACCESS,
    TURN_NO_BALANCE,
    TURN_SPENDING_LIMIT, /* a cap of the user's, of a model or of a group is used up */
    TURN_NO_SESSION,
    TURN_BAD_FILE, /* file_name is not a file of this session */
    TURN_BAD_SEQ,  /* codes 17, 18: seq is not a message of the kind asked for */
    TURN_DAY_LIMIT,
    TURN_MINUTE_LIMIT,
    TURN_LOAD_SESSION,
    TURN_CREATE_SESSION,
    TURN_AGENT,       /* down, too slow or failed: nothing stored */
    TURN_INTERRUPTED, /* its session's lease ran out (a stalled chatd): not stored */
    TURN_MARSHAL,
    TURN_INTERNAL,
    TURN_RESENT, /* its client_turn_id names a turn stored already: that one answers */
};

/* The error code (wire/proto.h) a client is told for e. */
int turn_wire_code(enum turn_error e);

/* What db_access (and the checks built on it) found, as a turn's error:
 * TURN_OK when the user may use the model. */
enum turn_error turn_access_error(enum db_access a);

/* A refused reservation (store/db.h) as the error it is answered with,
 * TURN_NO_BALANCE or TURN_SPENDING_LIMIT, and its detail: which cap is
 * used up and when it resets. */
struct db_reserve;
enum turn_error turn_refusal(const struct db_reserve *res, char *detail, size_t cap);

struct turn {
    struct pool_job job; /* first: the pool runs it (start, then finish) */
    atomic_int refs;
    struct app *app;
    uint64_t conn_id;

    char user_id[UUID_STR_LEN + 1];
    char session_id[UUID_STR_LEN + 1];
    char turn_id[UUID_STR_LEN + 1];
    int code; /* the request's, 3, 17 or 18: its replies' type */
    int session_new;
    int temporary; /* a new session: a temporary chat (code 3 temporary) */
    /* Where its messages go in the session's tree (migration 0010). A
     * code 3 turn continues the active leaf as its lease finds it; an edit
     * hangs beside the message it edits, a new answer beside the one it
     * replaces (its question is stored: first = 1). */
    int follow_leaf;
    int first;         /* the first of the rows user, assistant, file it stores */
    long long parent;  /* the first new message's parent; -1: none */
    long long ctx_end; /* the message its context ends at; -1: none */
    char *session_name;
    int model_id;
    char *model_name, *provider;
    long context_length;
    char *message, *prompt, *file_name, *file_url;
    double balance;
    int stream;
    char client_turn_id[PROTO_CLIENT_TURN_ID_MAX + 1]; /* "" none (work/resend.h) */
    unsigned long pg_generation;       /* the worker's connection the lease was taken on */
    uint64_t start_us, agent_start_us; /* for metrics */

    long long seen_seq;   /* the session's next_seq as last known (checks, or
                             the turn before this one on this chatd) */
    char *summary;        /* before the turn */
    json_t *history;      /* recent messages before the turn */
    long long ctx_seq;    /* the next_seq summary and history were read at */
    long long stored_seq; /* next_seq after this turn's commit; -1: none */

    pthread_mutex_t mu; /* guards call, cancelled, by_user, agent_done */
    struct agent_call *call;
    int cancelled, by_user;
    int agent_done; /* the agent has answered: too late to stop */

    /* results, written by the agent thread before the finish job */
    int status;
    char *status_details;
    char *reply;
    char cost[UTIL_MONEY_MAX]; /* as the agent reported it */
    unsigned prompt_tokens, completion_tokens;
    char *new_summary;
    char summary_cost[UTIL_MONEY_MAX];
    int stage; /* 0: start, 1: finish */

    /* The session's order in this process, and its parking while another
     * chatd holds the session's lease. */
    struct slot_turn slot;
    /* The session's lease in PostgreSQL (store/lease.h), so that turns on
     * one session run one at a time across every chatd. A new session
     * takes one too, so that other tabs can find who runs its first turn
     * (resume, stop). */
    int lease_held;
    /* Why its reservation (taken with the lease) was refused: the error's
     * detail, "" for none. */
    char refusal[200];
    /* Its slot of the reservation is given back: charged by its store,
     * or (an answer side by side that failed) dropped at its failure. */
    int slot_gone;

    /* Live (work/events.h): its frames go to a stream other connections
     * resume from, once begun. */
    int streamed;
    long long next_index; /* of the next type 7 frame (agent thread) */

    /* One of several answers to one request (code 18 with model_names),
     * or NULL. The first, the lead, is the turn the connection, the
     * session's order and its lease know; the others run their agent
     * calls beside it, send their frames into its stream, and store under
     * its lease, one at a time (turn.c, "answers side by side"). */
    struct turn_group *group;
    int answer;        /* its index: the order the request named the models in */
    int last_of_group; /* it finishes the group (set under the group's lock) */
};

/* A new turn for a request of conn, with one reference (the caller's) and
 * a fresh turn_id; NULL when out of memory. It continues the active leaf
 * and answers as code 3 until told otherwise. */
struct turn *turn_new(struct app *app, uint64_t conn_id);

/* Answers t's request with the error of err (custom: a text instead of
 * the code's, NULL for none; a rate limit's says when to try again,
 * wait_seconds) and lets go of the caller's reference: a turn refused by
 * its checks. */
void turn_refuse(struct turn *t, enum turn_error err, const char *custom, int wait_seconds);

/* Makes members[0..n) one request's answers side by side, members[0]
 * the lead: the group takes over the caller's reference of each other
 * member; the lead is then begun as any turn (turn_begin), and a cancel
 * of any member cancels them all. 0, or -1 when out of memory. */
int turn_group_make(struct turn **members, int n);

/* Runs t, whose checks passed, on worker w: takes the caller's reference
 * over as the pipeline's. The request is answered by the turn's last
 * frame from now on; the connection may go on. */
void turn_begin(struct worker *w, struct turn *t);

/* Stops the turn's agent call. by_user: a code 8 stop (the partial reply
 * is stored); otherwise the client went away (nothing is stored). Returns
 * 0 when a stop came too late (the agent had already answered, so the
 * whole reply will be stored), else 1. Any thread. */
int turn_cancel(struct turn *t, int by_user);

void turn_ref(struct turn *t);
void turn_unref(struct turn *t);
/* turn_unref for a pointer held without its type (work/outbox.h). */
void turn_release(void *t);

/* 1 when t is user_id's turn on session_id. */
int turn_matches(const struct turn *t, const char *user_id, const char *session_id);

/* The turn's rules, pure (tests/unit/test_turn.c):
 * whether a cancel is taken: a connection's always; a user's stop (code 8)
 * only while the agent has not answered (else the whole reply is stored
 * and the stop gets error 23). */
int turn_stop_takes(int agent_done, int by_user);

/* How a turn ends, from whether it was cancelled (and by whom) and the
 * agent's status. */
enum turn_end {
    TURN_END_STORED,           /* the whole reply, the agent's cost */
    TURN_END_STOPPED,          /* a stop crossed the end: stored as stopped, the agent's cost */
    TURN_END_STOPPED_ESTIMATE, /* stopped mid-reply: the partial text, an estimated cost */
    TURN_END_DROPPED,          /* its connection went: nothing stored */
    TURN_END_FAILED,           /* the agent failed: nothing stored, error 6 */
};
enum turn_end turn_end_of(int cancelled, int by_user, int status);

/* Turns started and not yet finished, process-wide. */
int turn_active(void);

/* store/lease.h's on_free, with the app as arg: a turn lease was given
 * back (session_id), or may have run out (NULL): the turns parked for one
 * try again. */
void turn_lease_freed(void *app, const char *session_id);

#endif
