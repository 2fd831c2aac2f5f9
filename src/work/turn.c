/* turn.c - a chat turn from its session's order to its stored reply (see
 * turn.h). Sections follow the turn: lifetime, answers side by side,
 * lease, end, store, agent callbacks, start.
 *
 * Longer than most files (about 900 lines): the answers side by side of
 * code 18 change how a turn ends, stores and streams at exactly the
 * places where a single turn does, and kept here each of those places
 * reads whole; a module of their own would have to reach into all of
 * them. */
#include "work/turn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/files.h"
#include "store/lease.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/context.h"
#include "work/events.h"
#include "work/links.h"
#include "work/outbox.h"
#include "work/resend.h"
#include "work/title.h"

#define TURN_STOP_MARKER "[stopped]"
/* The status of a call that never started: gRPC's UNAVAILABLE, so that it
 * ends as a failed call does (error 6, nothing stored). */
#define TURN_CALL_NOT_STARTED 14
/* Calls to the agent a turn makes, each reserved for: the answer and the
 * summary. */
#define TURN_CALLS 2
/* A store whose outcome is unknown is asked after for this long, every
 * TURN_RESOLVE_PAUSE_MS (turn_resolve). */
#define TURN_RESOLVE_SECONDS 30
#define TURN_RESOLVE_PAUSE_MS 200
#define TURN_CLIENT_KEY_MAX (PROTO_CLIENT_TURN_ID_MAX + 8)

/* Code 18 with model_names: one request, one answer per model. The lead
 * (m[0]) holds the connection's place, the session's order and lease;
 * every answer streams into the lead's stream (one sequence of indexes,
 * each delta naming its answer), is charged and stored on its own, one at
 * a time under mu, fenced on the lead's lease, which the last one to
 * finish gives back; that one also ends the stream and the lead. */
struct turn_group {
    pthread_mutex_t mu;      /* one answer finishes at a time */
    atomic_int refs;         /* the group's own (until its end), and cancels under way */
    atomic_llong next_index; /* of the stream's next frame */
    int n, left;             /* answers, and those not finished (under mu) */
    int started;             /* every answer's call was started: each one finishes */
    struct turn *m[PROTO_COMPARE_MAX];
};

int turn_wire_code(enum turn_error e)
{
    static const int codes[] = {
        [TURN_OK] = PERR_INTERNAL, /* never sent */
        [TURN_NO_USER] = PERR_NO_USER,
        [TURN_UNKNOWN_MODEL] = PERR_UNKNOWN_MODEL,
        [TURN_NO_MODEL_ACCESS] = PERR_NO_MODEL_ACCESS,
        [TURN_NO_BALANCE] = PERR_NO_BALANCE,
        [TURN_SPENDING_LIMIT] = PERR_SPENDING_LIMIT,
        [TURN_NO_SESSION] = PERR_NO_SESSION,
        [TURN_BAD_FILE] = PERR_INVALID_FIELD,
        [TURN_BAD_SEQ] = PERR_INVALID_FIELD,
        [TURN_DAY_LIMIT] = PERR_DAILY_LIMIT,
        [TURN_MINUTE_LIMIT] = PERR_RATE_LIMITED,
        [TURN_LOAD_SESSION] = PERR_LOAD_SESSION,
        [TURN_CREATE_SESSION] = PERR_CREATE_SESSION,
        [TURN_AGENT] = PERR_AGENT,
        [TURN_INTERRUPTED] = PERR_TURN_INTERRUPTED,
        [TURN_MARSHAL] = PERR_JSON_MARSHAL,
        [TURN_INTERNAL] = PERR_INTERNAL,
        [TURN_RESENT] = PERR_INTERNAL, /* when the stored one cannot be read */
    };
    return codes[e];
}

enum turn_error turn_access_error(enum db_access a)
{
    switch (a) {
    case DB_ACCESS_OK:
        break;
    case DB_ACCESS_NO_USER:
        return TURN_NO_USER;
    case DB_ACCESS_UNKNOWN_MODEL:
        return TURN_UNKNOWN_MODEL;
    case DB_ACCESS_DENIED:
        return TURN_NO_MODEL_ACCESS;
    case DB_ACCESS_ERROR:
        return TURN_INTERNAL;
    }
    return TURN_OK;
}

static atomic_int turns_active;

int turn_active(void) { return atomic_load(&turns_active); }

static void turn_run(struct worker *w, struct pool_job *job);
static int turn_stop_heard(struct slot_turn *st);

static struct turn *turn_of_slot(struct slot_turn *st)
{
    return (struct turn *)((char *)st - offsetof(struct turn, slot));
}

/* --------------------------------------------------------- turn lifetime */

struct turn *turn_new(struct app *app, uint64_t conn_id)
{
    struct turn *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    if (uuid_generate(t->turn_id) != 0) {
        free(t);
        return NULL;
    }
    atomic_init(&t->refs, 1);
    pthread_mutex_init(&t->mu, NULL);
    t->app = app;
    t->conn_id = conn_id;
    t->stored_seq = -1;
    t->code = PROTO_CHAT;
    t->follow_leaf = 1;
    t->parent = t->ctx_end = -1;
    t->start_us = metrics_now_us();
    t->job.run = turn_run;
    strcpy(t->cost, "0");
    strcpy(t->summary_cost, "0");
    t->slot.session_id = t->session_id;
    t->slot.user_id = t->user_id;
    t->slot.turn_id = t->turn_id;
    t->slot.stop = turn_stop_heard;
    return t;
}

void turn_ref(struct turn *t) { atomic_fetch_add(&t->refs, 1); }

void turn_refuse(struct turn *t, enum turn_error err, const char *custom, int wait_seconds)
{
    char text[128];
    if (err == TURN_DAY_LIMIT || err == TURN_MINUTE_LIMIT) {
        snprintf(text, sizeof(text), "%s: try again in %d seconds",
                 proto_err_text(turn_wire_code(err)), wait_seconds);
        custom = text;
    }
    outbox_reply_error(t->app->outbox, t->conn_id, t->code, turn_wire_code(err), custom);
    turn_unref(t);
}

void turn_unref(struct turn *t)
{
    if (atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    if (t->call != NULL)
        agent_call_release(t->call);
    pthread_mutex_destroy(&t->mu);
    free(t->session_name);
    free(t->model_name);
    free(t->provider);
    free(t->message);
    free(t->prompt);
    free(t->file_name);
    free(t->file_url);
    free(t->summary);
    json_decref(t->history);
    free(t->status_details);
    free(t->reply);
    free(t->new_summary);
    free(t);
}

void turn_release(void *t) { turn_unref(t); }

int turn_matches(const struct turn *t, const char *user_id, const char *session_id)
{
    return strcmp(t->user_id, user_id) == 0 && strcmp(t->session_id, session_id) == 0;
}

int turn_stop_takes(int agent_done, int by_user)
{
    /* Once the agent has answered, the whole reply will be stored: a stop
     * then must not be acknowledged as if it had cut the reply short. A
     * dropped connection cancels whatever the agent has done. */
    return !agent_done || !by_user;
}

enum turn_end turn_end_of(int cancelled, int by_user, int status)
{
    /* A stop that was acknowledged is honoured even when the call ended
     * well anyway (the cancel crossed the agent's last message): the user
     * was told the reply was stopped, so it is stored as stopped. */
    int user_stop = cancelled && by_user && (status == AGENT_OK || status == AGENT_CANCELLED);
    if (user_stop)
        return status == AGENT_OK ? TURN_END_STOPPED : TURN_END_STOPPED_ESTIMATE;
    if (status != AGENT_OK)
        return status == AGENT_CANCELLED && cancelled ? TURN_END_DROPPED : TURN_END_FAILED;
    return TURN_END_STORED;
}

static int turn_cancel_one(struct turn *t, int by_user)
{
    pthread_mutex_lock(&t->mu);
    int took = turn_stop_takes(t->agent_done, by_user);
    if (took && !t->cancelled) {
        t->cancelled = 1;
        t->by_user = by_user;
        if (t->call != NULL)
            agent_call_cancel(t->call);
    }
    pthread_mutex_unlock(&t->mu);
    return took;
}

static void turn_group_unref(struct turn_group *g);

int turn_cancel(struct turn *t, int by_user)
{
    int took = turn_cancel_one(t, by_user);
    /* Answers side by side stop together. */
    pthread_mutex_lock(&t->mu);
    struct turn_group *g = t->group;
    if (g != NULL)
        atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&t->mu);
    if (g != NULL) {
        for (int i = 0; i < g->n; i++)
            if (g->m[i] != t)
                took |= turn_cancel_one(g->m[i], by_user);
        turn_group_unref(g);
    }
    /* One parked for its session's lease ends now (turn_take_lease). */
    if (took && !by_user)
        turn_lease_freed(t->app, t->session_id);
    return took;
}

/* A stop (code 8) from another connection or chatd, for the turn that owns
 * its session's slot (slots_stop). */
static int turn_stop_heard(struct slot_turn *st) { return turn_cancel(turn_of_slot(st), 1); }

/* ------------------------------------------------- answers side by side */

int turn_group_make(struct turn **members, int n)
{
    struct turn_group *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -1;
    pthread_mutex_init(&g->mu, NULL);
    atomic_init(&g->refs, 1);
    atomic_init(&g->next_index, 0);
    g->n = g->left = n;
    turn_ref(members[0]); /* every member lives as long as the group */
    for (int i = 0; i < n; i++) {
        g->m[i] = members[i];
        members[i]->group = g;
        members[i]->answer = i;
    }
    return 0;
}

static void turn_group_unref(struct turn_group *g)
{
    if (atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    for (int i = 0; i < g->n; i++)
        turn_unref(g->m[i]);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* The group is over: no member refers to it any more. */
static void turn_group_close(struct turn_group *g)
{
    for (int i = 0; i < g->n; i++) {
        pthread_mutex_lock(&g->m[i]->mu);
        g->m[i]->group = NULL;
        pthread_mutex_unlock(&g->m[i]->mu);
    }
}

/* The turn whose lease (and stream) t's answer goes under. */
static const char *turn_lease_id(const struct turn *t)
{
    return t->group != NULL ? t->group->m[0]->turn_id : t->turn_id;
}

/* 1 once a connection somewhere resumes it (the lead's slot is marked). */
static int turn_followed(const struct turn *t)
{
    const struct turn *lead = t->group != NULL ? t->group->m[0] : t;
    return atomic_load(&lead->slot.followed);
}

/* ------------------------------------------------- the session's lease */

void turn_lease_freed(void *app, const char *session_id)
{
    struct app *a = app;
    struct slot_turn *go = slots_unpark(a->slots, session_id);
    while (go != NULL) {
        struct turn *t = turn_of_slot(go);
        go = go->park_next;
        pool_submit(a->pool, &t->job);
    }
}

enum lease_take {
    LEASE_HELD,   /* t->seen_seq is what it was taken at */
    LEASE_PARKED, /* another chatd's turn holds it: t waits, holding no thread */
    LEASE_FAILED, /* *err says why */
};

/* A refused reservation as the turn's error, and its detail: which cap,
 * and when it resets. */
enum turn_error turn_refusal(const struct db_reserve *res, char *detail, size_t cap)
{
    if (strcmp(res->refused, "balance") == 0) {
        snprintf(detail, cap, "the balance left does not cover the call");
        return TURN_NO_BALANCE;
    }
    char when[40] = "";
    time_t at = (time_t)res->resets;
    struct tm tm;
    if (at > 0 && gmtime_r(&at, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *colon = strchr(res->refused, ':');
    if (colon == NULL)
        snprintf(detail, cap, "monthly cap of the user reached; resets %s", when);
    else
        snprintf(detail, cap, "monthly cap of %.*s %s reached; resets %s",
                 (int)(colon - res->refused), res->refused, colon + 1, when);
    return TURN_SPENDING_LIMIT;
}

/* The session's lease for t. */
static enum lease_take turn_take_lease(struct worker *w, struct turn *t, enum turn_error *err)
{
    if (t->lease_held)
        return LEASE_HELD;
    /* Its connection went away while it waited: nothing to wait for. (A
     * user's stop waits, so that the stop is stored like any other.) */
    pthread_mutex_lock(&t->mu);
    int dropped = t->cancelled && !t->by_user;
    pthread_mutex_unlock(&t->mu);
    if (dropped) {
        *err = TURN_AGENT;
        return LEASE_FAILED;
    }
    /* The money for every answer's calls (the answer, then the summary)
     * is reserved with the lease (migration 0013). */
    int models[DB_RESERVE_MAX], n = 0;
    if (t->group == NULL)
        models[n++] = t->model_id;
    for (int i = 0; t->group != NULL && i < t->group->n && n < DB_RESERVE_MAX; i++)
        models[n++] = t->group->m[i]->model_id;
    long long next_seq, leaf;
    struct db_reserve res;
    enum db_status st = db_lease_take(&w->pg, t->user_id, t->session_id, t->turn_id,
                                      t->app->cfg->turn_lease_seconds, t->session_new, models, n,
                                      TURN_CALLS, &next_seq, &leaf, &res);
    switch (st) {
    case DB_OK:
        t->lease_held = 1;
        t->pg_generation = w->pg.generation;
        lease_hold(t->app->lease, t->turn_id);
        if (!t->session_new)
            t->seen_seq = next_seq;
        /* Read under the lease: no other turn moves it until this one
         * stores (a switch may, and this turn's store then wins). */
        if (t->follow_leaf && !t->session_new)
            t->parent = t->ctx_end = leaf;
        return LEASE_HELD;
    case DB_REFUSED:
        *err = turn_refusal(&res, t->refusal, sizeof(t->refusal));
        return LEASE_FAILED;
    case DB_BUSY:
        log_debug("event=turn_waits_for_lease session=%s", t->session_id);
        slots_park(t->app->slots, &t->slot);
        return LEASE_PARKED;
    case DB_NOT_FOUND:
        *err = TURN_NO_SESSION; /* deleted while it waited */
        return LEASE_FAILED;
    default:
        *err = TURN_INTERNAL;
        return LEASE_FAILED;
    }
}

/* Gives the lease back, unless the store already did. */
static void turn_drop_lease(struct worker *w, struct turn *t)
{
    if (!t->lease_held)
        return;
    lease_let_go(t->app->lease, t->turn_id);
    t->lease_held = 0;
    /* One not given back now (the database away, as in a failover) is
     * given back by the lease thread once it can, else runs out in
     * TURN_LEASE_SECONDS. */
    if (db_lease_drop(&w->pg, t->session_id, t->turn_id) != DB_OK)
        lease_give_back_later(t->app->lease, t->session_id, t->turn_id);
}

/* ----------------------------------------------------------- end of turn */

/* The turn's last frame: to its connection, and to whoever resumes it. */
static void turn_push_last(struct turn *t, char *frame, size_t len)
{
    struct turn_group *g = t->group;
    if (!t->streamed)
        ;                                                  /* nobody follows it yet */
    else if (g != NULL && g->started && !t->last_of_group) /* one answer's end, in the stream */
        events_turn_frame(t->app, t->user_id, t->session_id, turn_lease_id(t),
                          atomic_fetch_add(&g->next_index, 1), frame, len, turn_followed(t));
    else
        events_turn_end(t->app, t->user_id, t->session_id, turn_lease_id(t),
                        (g != NULL ? atomic_load(&g->next_index) : t->next_index) - 1, frame, len);
    outbox_push(t->app->outbox, t->conn_id, frame, len);
}

static void turn_push_error(struct turn *t, enum turn_error e)
{
    size_t len = 0;
    const char *detail = t->refusal[0] != '\0' ? t->refusal : NULL;
    /* One answer side by side, the others going on: it says which. */
    char *frame = t->group != NULL && t->group->started
                      ? proto_encode_answer_error(t->code, turn_wire_code(e), detail, t->answer,
                                                  t->group->n, t->model_name, &len)
                      : proto_encode_error_code(t->code, turn_wire_code(e), NULL, detail, &len);
    metrics_request(t->code, 0, (double)(metrics_now_us() - t->start_us) / 1e6);
    if (frame != NULL)
        turn_push_last(t, frame, len);
    if (t->streamed) /* a turn other tabs saw start, that stored nothing */
        events_emit(t->app, t->user_id,
                    json_pack("{s:s, s:s, s:b}", "kind", "turn_finished", "session_id",
                              t->session_id, "stored", 0));
}

/* A turn that fails (anything but a code-8 stop) takes its attached file
 * with it, row and disk: the client uploads again when it resends, so the
 * old copy would only be garbage. db_file_delete keeps a file that a
 * stored turn already shows. Best effort: a failure here is only logged. */
static void turn_drop_file(struct worker *w, struct turn *t)
{
    if (t->file_url == NULL ||
        db_file_delete(&w->pg, t->user_id, t->session_id, t->file_name) != DB_OK)
        return;
    files_remove(t->app->cfg, t->file_name);
    log_info("event=turn_file_removed session=%s file=%s", t->session_id, t->file_name);
}

/* A turn alone that ends without storing gives its lease and the money it
 * reserved back before its last frame goes out (a stored one's store
 * statement does both): a client that sends its next turn as soon as it
 * has the answer must find its balance whole, not less this turn's hold.
 * An answer side by side leaves the lease to its group's end (turn_end),
 * but gives back its own slot of the reservation now: a model that fails
 * at once must not hold the user's money while the slowest answer runs. */
static void turn_let_go(struct worker *w, struct turn *t)
{
    if (t->group == NULL) {
        turn_drop_lease(w, t);
        return;
    }
    if (t->group->started && !t->slot_gone &&
        db_reserve_drop_slot(&w->pg, turn_lease_id(t), t->answer) == DB_OK)
        t->slot_gone = 1;
}

/* What a turn that stores nothing gives back before its last frame goes
 * out: its file, and its lease (or its answer's slot of the reservation). */
static void turn_give_back(struct worker *w, struct turn *t)
{
    turn_drop_file(w, t);
    turn_let_go(w, t);
}

static void turn_fail(struct worker *w, struct turn *t, enum turn_error e)
{
    turn_give_back(w, t);
    turn_push_error(t, e);
}

/* The name client_turns knows answer t by (NULL: the client gave none):
 * client_turn_id, and for the second and later answers side by side
 * "<client_turn_id>#<answer>" ('#' is not a character a client's name may
 * hold), so each answer is stored at most once. */
static const char *turn_client_key(const struct turn *t, char key[TURN_CLIENT_KEY_MAX])
{
    if (t->client_turn_id[0] == '\0')
        return NULL;
    if (t->answer == 0)
        snprintf(key, TURN_CLIENT_KEY_MAX, "%s", t->client_turn_id);
    else
        snprintf(key, TURN_CLIENT_KEY_MAX, "%s#%d", t->client_turn_id, t->answer);
    return key;
}

/* The same turn, sent again under its client_turn_id while the first
 * ran, was stored by the first: this one stored nothing and answers as
 * the first did. */
static void turn_answer_resent(struct worker *w, struct turn *t)
{
    char key[TURN_CLIENT_KEY_MAX];
    json_t *data = NULL;
    size_t len = 0;
    turn_give_back(w, t);
    char *frame =
        resend_data(&w->pg, t->code, t->user_id, turn_client_key(t, key), &data) == RESEND_FOUND
            ? proto_encode_reply(t->code, data, &len)
            : NULL;
    if (frame != NULL)
        turn_push_last(t, frame, len);
    else
        turn_push_error(t, TURN_RESENT);
}

static void turn_end_alone(struct worker *w, struct turn *t);

/* Every turn that got past its checks ends here exactly once. An answer
 * side by side (called with its group's lock held, from turn_finish)
 * ends the lead when it is the last. */
static void turn_end(struct worker *w, struct turn *t)
{
    struct turn_group *g = t->group;
    if (g == NULL) {
        turn_end_alone(w, t);
        return;
    }
    if (!g->started) { /* the lead failed before any call: the others never ran */
        turn_group_close(g);
        turn_end_alone(w, t);
        turn_group_unref(g);
        return;
    }
    int last = t->last_of_group;
    pthread_mutex_unlock(&g->mu);
    if (!last)
        return;
    struct turn *lead = g->m[0];
    /* A slot an answer that failed could not give back (the database
     * away) is not taken along by the lease, given back by another's
     * store: it goes now. */
    int held = 0;
    for (int i = 0; i < g->n; i++)
        held |= !g->m[i]->slot_gone;
    if (held && !lead->lease_held)
        db_reserve_drop(&w->pg, lead->turn_id);
    turn_group_close(g);
    turn_end_alone(w, lead);
    turn_group_unref(g);
}

static void turn_end_alone(struct worker *w, struct turn *t)
{
    turn_drop_lease(w, t);
    struct slot_turn *next = slots_release(t->app->slots, &t->slot);
    if (next != NULL) {
        struct turn *n = turn_of_slot(next);
        /* What this turn committed is newer than what n's checks saw. */
        if (t->stored_seq >= 0)
            n->seen_seq = t->stored_seq;
        pool_submit(n->app->pool, &n->job);
    }
    outbox_turn_done(t->app->outbox, t->conn_id, t, turn_release); /* the pipeline's reference */
    atomic_fetch_sub(&turns_active, 1);
}

/* ---------------------------------------------------------------- store */

/* The store's commit outcome is unknown: its connection went before the
 * answer came (the primary died, or a switchover cut the wait for the
 * synchronous standby short). Whether it was stored is asked of whichever
 * server is primary once one answers, for up to TURN_RESOLVE_SECONDS, so
 * the client is told what the database holds: a success only if stored,
 * an error only if not. (A store that stays unknown past that is an
 * error 14, logged as such.) The worker waits meanwhile, as every worker
 * waits for the database during a failover. */
static enum db_store turn_resolve(struct worker *w, const struct db_turn_store *in,
                                  struct db_charge *charge, long long *base, int *stopped_here)
{
    uint64_t until = metrics_now_us() + TURN_RESOLVE_SECONDS * 1000000ULL;
    for (;;) {
        long long seq = 0;
        char *stored = NULL;
        enum db_status st = db_turn_stored(&w->pg, in->session_id, in->turn_id, in->slot, &seq,
                                           &stored, charge->balance, sizeof(charge->balance));
        if (st == DB_OK) {
            *base = seq - 1 + in->first;
            charge->seq = seq;
            /* A stop from elsewhere marked it as it was stored. */
            *stopped_here = !in->reply_stopped && strcmp(stored, in->reply) != 0;
            free(stored);
            metrics_turn_resolved(1);
            log_warn("event=turn_outcome_resolved session=%s stored=1", in->session_id);
            return DB_STORE_OK;
        }
        if (st == DB_NOT_FOUND) {
            metrics_turn_resolved(0);
            log_warn("event=turn_outcome_resolved session=%s stored=0", in->session_id);
            return DB_STORE_ERROR;
        }
        if (metrics_now_us() >= until) {
            log_error("event=turn_outcome_unknown session=%s", in->session_id);
            return DB_STORE_UNKNOWN;
        }
        struct timespec pause = {0, TURN_RESOLVE_PAUSE_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
}

/* Stores the turn: one statement, so one round trip (db_turn_store). On
 * success sets t->stored_seq and *lock_seq (next_seq before the turn,
 * under the row lock), and tells the cache of this process about a new
 * session before anyone is told. */
static enum turn_error turn_store(struct worker *w, struct turn *t, const char *reply,
                                  int reply_stopped, struct db_charge *charge, long long *lock_seq,
                                  int *stopped_here)
{
    char key[TURN_CLIENT_KEY_MAX];
    /* The file entry holds the bare stored name: the existing client links
     * it as .../uploads/<content>. */
    struct db_turn_store in = {
        .user_id = t->user_id,
        .session_id = t->session_id,
        .turn_id = turn_lease_id(t),
        .first = t->first,
        .n_messages = (t->file_url != NULL ? 3 : 2) - t->first,
        .parent = t->parent,
        .message = t->message,
        .reply = reply,
        .file_name = t->file_name,
        .summary = t->new_summary != NULL ? t->new_summary : t->summary,
        .session_new = t->session_new,
        .session_name = t->session_name,
        .prompt = t->prompt,
        .reply_stopped = reply_stopped,
        .deltas = t->next_index,
        .keep_lease = t->group != NULL && !t->last_of_group,
        .slot = t->group != NULL ? t->answer : 0,
        .temporary = t->temporary,
        .client_turn_id = turn_client_key(t, key),
    };
    struct turn *lead = t->group != NULL ? t->group->m[0] : t;
    charge->session_id = t->session_id;
    long long seq = 0;
    uint64_t xid = 0;
    enum db_store st = db_turn_store(&w->pg, &in, charge, &seq, &xid, stopped_here);
    if (st == DB_STORE_UNKNOWN)
        st = turn_resolve(w, &in, charge, &seq, stopped_here);
    switch (st) {
    case DB_STORE_OK:
        break;
    case DB_STORE_NO_SESSION:
        return TURN_NO_SESSION;
    case DB_STORE_FENCED:
        /* Stored only while the lease is still this turn's. One that ran
         * out (this chatd stalled past TURN_LEASE_SECONDS) may have let
         * another turn run on the session meanwhile. A lease taken on a
         * connection since replaced was lost in a failover (it commits
         * without waiting for the standby): the database failed, error 14. */
        log_warn("event=turn_lease_lost session=%s failover=%d", t->session_id,
                 lead->pg_generation != w->pg.generation);
        return lead->pg_generation != w->pg.generation ? TURN_INTERNAL : TURN_INTERRUPTED;
    case DB_STORE_DUPLICATE:
        log_info("event=turn_resent session=%s client_turn_id=%s", t->session_id,
                 t->client_turn_id);
        return TURN_RESENT;
    case DB_STORE_UNKNOWN:
    case DB_STORE_ERROR:
        return TURN_INTERNAL;
    }
    if (lead->lease_held && !in.keep_lease) { /* the statement gave it back */
        lease_let_go(t->app->lease, lead->turn_id);
        lead->lease_held = 0;
    }
    *lock_seq = seq;
    t->slot_gone = 1;
    t->stored_seq = lead->stored_seq = seq + in.n_messages;
    if (t->session_new)
        cache_saw_write(&w->cache, t->user_id, xid);
    return TURN_OK;
}

/* Writes the Redis copy of the session's context as PostgreSQL now holds
 * it, so the next turn needs no database read. Only when the history this
 * turn read is exactly what preceded it under the row lock (lock_seq);
 * otherwise another chatd stored a turn in between, and the next turn
 * reads PostgreSQL. */
static void turn_refresh_cache(struct worker *w, struct turn *t, const char *reply,
                               long long lock_seq)
{
    if (lock_seq != t->ctx_seq && t->group != NULL)
        return; /* an answer side by side after the first: the next turn reads PostgreSQL */
    if (lock_seq != t->ctx_seq) {
        /* The session's lease keeps every other turn out between its take
         * (which read ctx_seq) and this store: this would be a bug. */
        log_warn("event=turn_context_stale session=%s read_at=%lld stored_at=%lld", t->session_id,
                 t->ctx_seq, lock_seq);
        return;
    }
    struct context_turn ct = {
        .session_id = t->session_id,
        .next_seq = t->stored_seq,
        .leaf = t->stored_seq - 1, /* the last message it stored */
        .before = t->history,
        .message = t->message,
        .reply = reply,
        .file_name = t->file_url != NULL ? t->file_name : NULL,
        .summary = t->new_summary != NULL ? t->new_summary : t->summary,
    };
    context_store(w, t->app->cfg, &ct);
}

/* What the user's other connections, on any chatd, hear of a stored turn. */
static void turn_announce(struct turn *t, const struct db_charge *charge, long long lock_seq)
{
    struct app *app = t->app;
    if (t->session_new && !t->temporary) /* a temporary chat is in no list */
        events_emit(app, t->user_id,
                    json_pack("{s:s, s:s, s:s}", "kind", "session_created", "session_id",
                              t->session_id, "session_name", t->session_name));
    json_t *seqs = json_array();
    for (long long s = lock_seq; s < t->stored_seq; s++)
        json_array_append_new(seqs, json_integer(s));
    events_emit(app, t->user_id,
                json_pack("{s:s, s:s, s:b, s:o}", "kind", "turn_finished", "session_id",
                          t->session_id, "stored", 1, "seqs", seqs));
    events_emit(
        app, t->user_id,
        json_pack("{s:s, s:f}", "kind", "balance", "balance", strtod(charge->balance, NULL)));
}

static char *build_stopped_reply(const char *partial)
{
    size_t n = strlen(partial);
    char *out = malloc(n + sizeof(TURN_STOP_MARKER) + 2);
    if (out == NULL)
        return NULL;
    if (n == 0)
        strcpy(out, TURN_STOP_MARKER);
    else
        sprintf(out, "%s " TURN_STOP_MARKER, partial);
    return out;
}
/* The stored turn's final reply, to its connection and its resumers,
 * then a title for a new session. */
static void turn_reply(struct worker *w, struct turn *t, const char *reply, long long lock_seq)
{
    json_t *data = resend_reply(&(struct resend_reply){
        .code = t->code,
        .user_id = t->user_id,
        .session_id = t->session_id,
        .session_name = t->session_name,
        .message = reply,
        .base = lock_seq,
        .n = t->stored_seq - lock_seq,
        .parent = t->parent,
        .temporary = t->temporary,
        .client_turn_id = t->client_turn_id,
        .client_turn_id_len = strlen(t->client_turn_id),
    });
    if (data != NULL && t->group != NULL) {
        json_object_set_new(data, "answer", json_integer(t->answer));
        json_object_set_new(data, "answers", json_integer(t->group->n));
        json_object_set_new(data, "model_name", json_string(t->model_name));
    }
    size_t len = 0;
    char *frame = data != NULL ? proto_encode_reply(t->code, data, &len) : NULL;
    if (frame != NULL) {
        metrics_request(t->code, 1, (double)(metrics_now_us() - t->start_us) / 1e6);
        turn_push_last(t, frame, len);
    } else {
        turn_push_error(t, TURN_MARSHAL); /* stored: the file stays */
    }
    /* After the reply, which keeps the 20-character name the existing
     * client shows: a title for a new session, when the agent gives one. */
    if (t->session_new) {
        struct title_source src = {
            .user_id = t->user_id,
            .session_id = t->session_id,
            .model_id = t->model_id,
            .model_name = t->model_name,
            .provider = t->provider,
            .user_message = t->message,
            .assistant_message = reply,
            .seq = lock_seq + 1,
        };
        title_request(w, t->app, &src);
    }
}

/* Runs on a worker after the agent (and Summarize) answered. */
static void turn_finish(struct worker *w, struct turn *t)
{
    struct turn_group *g = t->group;
    if (g != NULL) { /* held until turn_end */
        pthread_mutex_lock(&g->mu);
        t->last_of_group = --g->left == 0;
    }
    pthread_mutex_lock(&t->mu);
    int cancelled = t->cancelled, by_user = t->by_user;
    pthread_mutex_unlock(&t->mu);

    const char *reply = t->reply != NULL ? t->reply : "";
    char *stopped = NULL;
    struct db_charge charge = {
        .user_id = t->user_id,
        .kind = "turn",
        .model_id = t->model_id,
        .model_name = t->model_name,
        .cost = t->cost,
        .summary_cost = t->summary_cost,
        .prompt_tokens = t->prompt_tokens,
        .completion_tokens = t->completion_tokens,
    };

    enum turn_end end = turn_end_of(cancelled, by_user, t->status);
    switch (end) {
    case TURN_END_DROPPED:
        log_info("event=turn_cancelled conn=%llu session=%s", (unsigned long long)t->conn_id,
                 t->session_id);
        turn_fail(w, t, TURN_AGENT);
        goto out;
    case TURN_END_FAILED:
        log_warn("event=agent_call_failed session=%s grpc_status=%d details=\"%s\"", t->session_id,
                 t->status, t->status_details ? t->status_details : "");
        turn_fail(w, t, TURN_AGENT);
        goto out;
    case TURN_END_STOPPED:
    case TURN_END_STOPPED_ESTIMATE:
        /* Stopped by the user: keep what was generated. */
        if ((stopped = build_stopped_reply(reply)) == NULL) {
            turn_fail(w, t, TURN_INTERNAL);
            goto out;
        }
        reply = stopped;
        if (end == TURN_END_STOPPED_ESTIMATE) {
            /* Agents report cost only at the end: charge the estimate of
             * what was sent and generated, at the model's prices (in
             * exact decimals, by PostgreSQL). */
            size_t in_bytes = strlen(t->message) + strlen(t->prompt) + strlen(t->summary);
            charge.cost = NULL;
            charge.prompt_tokens = (unsigned)context_estimate_tokens(in_bytes);
            charge.completion_tokens =
                (unsigned)context_estimate_tokens(strlen(t->reply ? t->reply : ""));
            charge.estimated = 1;
        }
        break;
    case TURN_END_STORED:
        break;
    }

    long long lock_seq = -1;
    int stopped_here = 0;
    enum turn_error err =
        turn_store(w, t, reply, stopped != NULL, &charge, &lock_seq, &stopped_here);
    if (err == TURN_RESENT) {
        turn_answer_resent(w, t);
        goto out;
    }
    if (err != TURN_OK) {
        turn_fail(w, t, err);
        goto out;
    }
    if (stopped_here) {
        /* A stop from another connection or chatd marked the lease before
         * the store, and was answered "stopped": the reply was stored with
         * the marker (db_turn_store), and is given out as stored. */
        if ((stopped = build_stopped_reply(reply)) == NULL) {
            turn_push_error(t, TURN_INTERNAL); /* stored: the file stays */
            goto out;
        }
        reply = stopped;
    }
    turn_refresh_cache(w, t, reply, lock_seq);
    turn_announce(t, &charge, lock_seq);
    log_info("event=turn_stored session=%s bytes_in=%zu bytes_out=%zu cost=%s%s%s", t->session_id,
             strlen(t->message), strlen(reply), charge.cost != NULL ? charge.cost : "estimated",
             strcmp(t->summary_cost, "0") != 0 ? "+summary" : "", stopped ? " stopped=1" : "");

    turn_reply(w, t, reply, lock_seq);
out:
    free(stopped);
    turn_end(w, t);
}

/* ------------------------------------------------------- agent callbacks */

static void on_summary(void *ud, const struct agent_summary_result *res)
{
    struct turn *t = ud;
    if (res->status == 0) {
        t->new_summary = strdup(res->summary);
        memcpy(t->summary_cost, res->cost, sizeof(t->summary_cost));
    } else if (res->status != AGENT_UNIMPLEMENTED) {
        /* The turn itself succeeded: keep the old summary, lose nothing. */
        log_warn("event=summary_failed session=%s grpc_status=%d details=\"%s\"", t->session_id,
                 res->status, res->status_details);
    }
    t->stage = 1;
    pool_submit(t->app->pool, &t->job);
}

static void on_delta(void *ud, const char *text, size_t len)
{
    struct turn *t = ud;
    if (!t->stream || len == 0)
        return;
    /* index: 0, 1, 2, ... within the turn, so that a client resuming it
     * (code 16) knows where it is. */
    struct turn_group *g = t->group; /* stays until this answer finishes */
    long long index = g != NULL ? atomic_fetch_add(&g->next_index, 1) : t->next_index;
    t->next_index++;
    size_t flen = 0; /* "answer": which answer it belongs to, side by side */
    char *frame =
        proto_encode_delta(t->session_id, text, len, index, g != NULL ? t->answer : -1, &flen);
    if (frame == NULL)
        return;
    events_turn_frame(t->app, t->user_id, t->session_id, turn_lease_id(t), index, frame, flen,
                      turn_followed(t));
    outbox_push(t->app->outbox, t->conn_id, frame, flen);
}

static void on_done(void *ud, const struct agent_result *res)
{
    struct turn *t = ud;
    pthread_mutex_lock(&t->mu);
    t->agent_done = 1;
    pthread_mutex_unlock(&t->mu);
    metrics_agent_call((double)(metrics_now_us() - t->agent_start_us) / 1e6,
                       res->status != AGENT_OK && res->status != AGENT_CANCELLED);
    t->status = res->status;
    t->status_details = strdup(res->status_details);
    t->reply = strndup(res->text, res->text_len);
    memcpy(t->cost, res->cost, sizeof(t->cost));
    t->prompt_tokens = res->prompt_tokens;
    t->completion_tokens = res->completion_tokens;

    agent_client *agent = t->app->agent;
    if (res->status == AGENT_OK && agent_client_supports_summary(agent)) {
        struct agent_summary_request sr = {
            .user_id = t->user_id,
            .session_id = t->session_id,
            .model_name = t->model_name,
            .model_provider = t->provider,
            .previous_summary = t->summary,
            .user_message = t->message,
            .assistant_message = t->reply != NULL ? t->reply : "",
        };
        if (agent_summarize(agent, &sr, on_summary, t) == 0)
            return;
    }
    t->stage = 1;
    pool_submit(t->app->pool, &t->job);
}

/* ------------------------------------------------------------ turn start */

/* The history the agent is given (malloc'd JSON text), trimmed to t's
 * model: a file as the URL it can fetch, where the history keeps the bare
 * stored name (as PostgreSQL does). NULL when out of memory. */
static char *turn_agent_history(struct turn *t)
{
    json_t *history = json_deep_copy(t->history);
    if (history != NULL && links_apply(t->app->cfg, history, "content", links_file_url) != 0) {
        json_decref(history);
        history = NULL;
    }
    size_t fixed = strlen(t->prompt) + strlen(t->summary) + strlen(t->message);
    size_t dropped = history ? context_trim(history, fixed, t->context_length) : 0;
    char *hist = history != NULL ? json_dumps(history, JSON_COMPACT) : NULL;
    json_decref(history);
    log_debug("event=turn_start session=%s history=%zu dropped=%zu", t->session_id,
              json_array_size(t->history), dropped);
    return hist;
}

/* Starts t's agent call with history hist (freed here; NULL: out of
 * memory). A call that cannot start, or a turn cancelled already, ends
 * through turn_finish like any other: so does every answer side by
 * side, which the group counts on. The caller keeps t alive meanwhile:
 * the call may finish the turn on other threads before this returns. */
static void turn_call(struct turn *t, char *hist)
{
    const char *files[1] = {t->file_url};
    struct agent_request req = {
        .user_id = t->user_id,
        .session_id = t->session_id,
        .chat_message = t->message,
        .model_name = t->model_name,
        .session_prompt = t->prompt,
        .chat_summary = t->summary,
        .chat_history = hist,
        .model_provider = t->provider,
        .file_names = files,
        .n_files = t->file_url != NULL ? 1 : 0,
        .balance = t->balance,
    };
    pthread_mutex_lock(&t->mu);
    if (t->cancelled || hist == NULL) {
        pthread_mutex_unlock(&t->mu);
        free(hist);
        t->status = hist == NULL ? TURN_CALL_NOT_STARTED : AGENT_CANCELLED;
        t->stage = 1;
        pool_submit(t->app->pool, &t->job);
        return;
    }
    t->agent_start_us = metrics_now_us();
    t->call = agent_process(t->app->agent, &req, t->stream, on_delta, on_done, t);
    int started = t->call != NULL;
    pthread_mutex_unlock(&t->mu);
    free(hist);
    if (!started) {
        log_warn("event=agent_call_not_started session=%s", t->session_id);
        metrics_agent_error();
        t->status = TURN_CALL_NOT_STARTED;
        t->stage = 1;
        pool_submit(t->app->pool, &t->job);
    }
}

static void turn_start(struct worker *w, struct turn *t)
{
    enum turn_error err = TURN_OK;
    switch (turn_take_lease(w, t, &err)) {
    case LEASE_PARKED:
        return; /* until the lease is given back or runs out */
    case LEASE_HELD:
        if (t->session_new) {
            t->summary = strdup("");
            t->history = json_array();
            err = t->summary != NULL && t->history != NULL ? TURN_OK : TURN_INTERNAL;
            break;
        }
        switch (context_load(w, t->app->cfg, t->user_id, t->session_id, t->seen_seq, t->ctx_end,
                             &t->summary, &t->history, &t->ctx_seq)) {
        case CONTEXT_OK:
            break;
        case CONTEXT_NO_SESSION:
            err = TURN_NO_SESSION;
            break;
        case CONTEXT_ERROR:
            err = TURN_LOAD_SESSION;
            break;
        }
        break;
    case LEASE_FAILED:
        break;
    }
    if (err != TURN_OK) {
        turn_fail(w, t, err);
        turn_end(w, t);
        return;
    }
    char *hist = turn_agent_history(t);
    if (hist == NULL) {
        turn_fail(w, t, TURN_INTERNAL);
        turn_end(w, t);
        return;
    }
    /* From here on other connections can follow it (code 16), and the
     * user's other tabs hear of it. */
    events_turn_begin(t->app, t->session_id, t->turn_id);
    t->streamed = 1;
    events_emit(t->app, t->user_id,
                t->temporary
                    ? json_pack("{s:s, s:s, s:b, s:b}", "kind", "turn_started", "session_id",
                                t->session_id, "new_session", 1, "temporary", 1)
                    : json_pack("{s:s, s:s, s:b}", "kind", "turn_started", "session_id",
                                t->session_id, "new_session", t->session_new));
    struct turn_group *g = t->group;
    if (g != NULL) /* from now on every answer finishes (turn_finish) */
        g->started = 1;
    /* The calls may finish the whole turn, or group, on other threads
     * meanwhile: our references keep both until we let go. */
    turn_ref(t);
    if (g != NULL)
        atomic_fetch_add(&g->refs, 1);
    turn_call(t, hist);
    for (int i = 1; g != NULL && i < g->n; i++) {
        struct turn *a = g->m[i];
        a->summary = strdup(t->summary);
        a->history = json_deep_copy(t->history);
        a->ctx_seq = t->ctx_seq;
        a->streamed = 1;
        char *h = a->summary != NULL && a->history != NULL ? turn_agent_history(a) : NULL;
        turn_call(a, h);
    }
    if (g != NULL)
        turn_group_unref(g);
    turn_unref(t);
}

static void turn_run(struct worker *w, struct pool_job *job)
{
    struct turn *t = (struct turn *)job;
    if (t->stage == 0)
        turn_start(w, t);
    else
        turn_finish(w, t);
}

void turn_begin(struct worker *w, struct turn *t)
{
    atomic_fetch_add(&turns_active, 1);
    turn_ref(t);
    outbox_detach(t->app->outbox, t->conn_id, t, turn_release);
    if (slots_acquire(t->app->slots, &t->slot))
        turn_start(w, t);
    /* else: the session's running turn resubmits t when it ends */
}
