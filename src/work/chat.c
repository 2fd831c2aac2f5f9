/* chat.c - one chat turn, from checks to the stored reply.
 *
 *   worker:      checks (user 3, model 24/7, balance 15, session 18, file 17,
 *                then the per-user rate limits 28/27, see ratelimit.c)
 *                -> detach from the connection's request FIFO
 *                -> wait for the session's previous turn (session_slots)
 *   worker:      load context (Redis, else PostgreSQL), trim, call agent
 *   agent thread: deltas -> type 7 frames; done -> Summarize (if supported)
 *   worker:      one transaction: session row (NEW), messages, summary,
 *                balance -> Redis context -> final type 3 reply
 *
 * A turn that fails at the agent stores nothing and charges nothing, so the
 * user never sees half a turn: either the user message, the reply (and the
 * file entry) and the charge are all committed together, or none is. A
 * turn stopped by code 8 stores the partial reply with a " [stopped]"
 * marker and charges the estimated cost of what was generated. */
#include "work/chat.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/files.h"
#include "store/lease.h"
#include "wire/auth.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/dispatch.h"
#include "work/events.h"
#include "work/outbox.h"
#include "work/ratelimit.h"
#include "work/title.h"

#define CHAT_STOP_MARKER "[stopped]"
#define CHAT_SESSION_NAME_CHARS 20

/* Why a turn was refused or failed. Chosen by the steps below; the wire
 * code is chosen from it in one place, turn_wire_code(). */
enum turn_error {
    TURN_OK = 0,
    TURN_NO_USER,
    TURN_UNKNOWN_MODEL,
    TURN_NO_MODEL_ACCESS,
    TURN_NO_BALANCE,
    TURN_NO_SESSION,
    TURN_BAD_FILE, /* file_name is not a file of this session */
    TURN_DAY_LIMIT,
    TURN_MINUTE_LIMIT,
    TURN_LOAD_SESSION,
    TURN_CREATE_SESSION,
    TURN_AGENT, /* down, too slow or failed: nothing stored */
    TURN_INTERRUPTED, /* its session's lease ran out (a stalled chatd): not stored */
    TURN_MARSHAL,
    TURN_INTERNAL,
};

static int turn_wire_code(enum turn_error e)
{
    static const int codes[] = {
        [TURN_OK] = PERR_INTERNAL, /* never sent */
        [TURN_NO_USER] = PERR_NO_USER,
        [TURN_UNKNOWN_MODEL] = PERR_UNKNOWN_MODEL,
        [TURN_NO_MODEL_ACCESS] = PERR_NO_MODEL_ACCESS,
        [TURN_NO_BALANCE] = PERR_NO_BALANCE,
        [TURN_NO_SESSION] = PERR_NO_SESSION,
        [TURN_BAD_FILE] = PERR_INVALID_FIELD,
        [TURN_DAY_LIMIT] = PERR_DAILY_LIMIT,
        [TURN_MINUTE_LIMIT] = PERR_RATE_LIMITED,
        [TURN_LOAD_SESSION] = PERR_LOAD_SESSION,
        [TURN_CREATE_SESSION] = PERR_CREATE_SESSION,
        [TURN_AGENT] = PERR_AGENT,
        [TURN_INTERRUPTED] = PERR_TURN_INTERRUPTED,
        [TURN_MARSHAL] = PERR_JSON_MARSHAL,
        [TURN_INTERNAL] = PERR_INTERNAL,
    };
    return codes[e];
}

struct chat_turn {
    struct pool_job job; /* first: the pool runs it (start, then finish) */
    atomic_int refs;
    struct app *app;
    uint64_t conn_id;

    char user_id[UUID_STR_LEN + 1];
    char session_id[UUID_STR_LEN + 1];
    int session_new;
    char *session_name;
    int model_id;
    char *model_name, *provider;
    long context_length;
    char *message, *prompt, *file_name, *file_url;
    double balance;
    int wait_seconds; /* refused by a rate limit: until its window ends */
    int stream;
    uint64_t start_us, agent_start_us; /* for metrics */

    long long seen_seq; /* the session's next_seq as last known (checks, or
                           the turn before this one on this chatd) */
    char *summary;      /* before the turn */
    json_t *history;    /* recent messages before the turn */
    long long ctx_seq;  /* the next_seq summary and history were read at */
    long long stored_seq; /* next_seq after this turn's commit; -1: none */

    pthread_mutex_t mu; /* guards call, cancelled, by_user, agent_done */
    agent_call *call;
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

    struct chat_turn *wait_next; /* the session's queue */

    /* The session's lease in PostgreSQL (store/lease.h): existing
     * sessions only, so that turns on one session run one at a time
     * across every chatd. */
    char turn_id[UUID_STR_LEN + 1];
    int lease_held;
    struct chat_turn *park_next; /* waiting for the lease (parked) */

    /* Live (work/events.h): its frames go to a stream other connections
     * resume from, once begun. */
    int streamed;
    long long next_index; /* of the next type 7 frame (agent thread) */
};

static atomic_int chat_turns_active;

int chat_active_turns(void) { return atomic_load(&chat_turns_active); }

size_t chat_estimate_tokens(size_t bytes) { return (bytes + 2) / 3; }

/* --------------------------------------------------------- turn lifetime */

void chat_turn_ref(struct chat_turn *t) { atomic_fetch_add(&t->refs, 1); }

void chat_turn_unref(struct chat_turn *t)
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

int chat_turn_matches(const struct chat_turn *t, const char *user_id, const char *session_id)
{
    return strcmp(t->user_id, user_id) == 0 && strcmp(t->session_id, session_id) == 0;
}

int chat_stop_takes(int agent_done, int by_user)
{
    /* Once the agent has answered, the whole reply will be stored: a stop
     * then must not be acknowledged as if it had cut the reply short. A
     * dropped connection cancels whatever the agent has done. */
    return !agent_done || !by_user;
}

enum chat_end chat_end_of(int cancelled, int by_user, int status)
{
    /* A stop that was acknowledged is honoured even when the call ended
     * well anyway (the cancel crossed the agent's last message): the user
     * was told the reply was stopped, so it is stored as stopped. */
    int user_stop = cancelled && by_user && (status == AGENT_OK || status == AGENT_CANCELLED);
    if (user_stop)
        return status == AGENT_OK ? CHAT_END_STOPPED : CHAT_END_STOPPED_ESTIMATE;
    if (status != AGENT_OK)
        return status == AGENT_CANCELLED && cancelled ? CHAT_END_DROPPED : CHAT_END_FAILED;
    return CHAT_END_STORED;
}

int chat_turn_cancel(struct chat_turn *t, int by_user)
{
    pthread_mutex_lock(&t->mu);
    int took = chat_stop_takes(t->agent_done, by_user);
    if (took && !t->cancelled) {
        t->cancelled = 1;
        t->by_user = by_user;
        if (t->call != NULL)
            agent_call_cancel(t->call);
    }
    pthread_mutex_unlock(&t->mu);
    /* One waiting for its session's lease ends now (turn_take_lease). */
    if (took && !by_user)
        chat_lease_freed(NULL, t->session_id);
    return took;
}

/* ---------------------------------------------------- session turn order */

/* Sessions with a turn running, each with the turns waiting behind it.
 * Turns of one session run one at a time so that each sees the history the
 * previous one stored, and both are stored in order. */
#define SLOT_BUCKETS 1024

struct session_slot {
    struct session_slot *next;
    char session_id[UUID_STR_LEN + 1];
    struct chat_turn *owner; /* the turn running now (in this process) */
    struct chat_turn *wait_head, *wait_tail;
};

static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static struct session_slot *slots[SLOT_BUCKETS];

static unsigned slot_hash(const char *id) { return util_hash(id) % SLOT_BUCKETS; }

/* 1: t owns the session now; 0: t was queued and will be resubmitted. */
static int slot_acquire(struct chat_turn *t)
{
    unsigned h = slot_hash(t->session_id);
    int owned = 1;
    pthread_mutex_lock(&slots_mu);
    struct session_slot *s = slots[h];
    while (s != NULL && strcmp(s->session_id, t->session_id) != 0)
        s = s->next;
    if (s != NULL) {
        t->wait_next = NULL;
        if (s->wait_tail != NULL)
            s->wait_tail->wait_next = t;
        else
            s->wait_head = t;
        s->wait_tail = t;
        owned = 0;
    } else {
        s = calloc(1, sizeof(*s));
        if (s != NULL) { /* out of memory: run unordered rather than fail */
            memcpy(s->session_id, t->session_id, sizeof(s->session_id));
            s->owner = t;
            s->next = slots[h];
            slots[h] = s;
        }
    }
    pthread_mutex_unlock(&slots_mu);
    return owned;
}

/* The session's turn ended: start the next waiting one, if any. */
static void slot_release(struct chat_turn *t)
{
    unsigned h = slot_hash(t->session_id);
    struct chat_turn *next = NULL;
    pthread_mutex_lock(&slots_mu);
    struct session_slot **pp = &slots[h];
    while (*pp != NULL && strcmp((*pp)->session_id, t->session_id) != 0)
        pp = &(*pp)->next;
    struct session_slot *s = *pp;
    if (s != NULL) {
        next = s->wait_head;
        if (next != NULL) {
            s->owner = next;
            s->wait_head = next->wait_next;
            if (s->wait_head == NULL)
                s->wait_tail = NULL;
        } else {
            *pp = s->next;
            free(s);
        }
    }
    pthread_mutex_unlock(&slots_mu);
    if (next != NULL) {
        /* What this turn committed is newer than what next's checks saw. */
        if (t->stored_seq >= 0)
            next->seen_seq = t->stored_seq;
        pool_submit(next->app->pool, &next->job);
    }
}

int chat_stop_session(const char *user_id, const char *session_id, const char *turn_id)
{
    int took = 0;
    pthread_mutex_lock(&slots_mu);
    struct session_slot *s = slots[slot_hash(session_id)];
    while (s != NULL && strcmp(s->session_id, session_id) != 0)
        s = s->next;
    /* The owner is alive while it owns the slot (slot_release comes before
     * its last reference goes). Only the turn the stop names: the one
     * whose lease it marked, not one that started since. */
    if (s != NULL && s->owner != NULL && chat_turn_matches(s->owner, user_id, session_id) &&
        strcmp(s->owner->turn_id, turn_id) == 0)
        took = chat_turn_cancel(s->owner, 1);
    pthread_mutex_unlock(&slots_mu);
    return took;
}

/* ------------------------------------------------- the session's lease */

/* Turns waiting for a session lease that another chatd's turn holds. They
 * hold no thread: chat_lease_freed resubmits them. */
static pthread_mutex_t parked_mu = PTHREAD_MUTEX_INITIALIZER;
static struct chat_turn *parked;

static void park(struct chat_turn *t)
{
    pthread_mutex_lock(&parked_mu);
    t->park_next = parked;
    parked = t;
    pthread_mutex_unlock(&parked_mu);
}

void chat_lease_freed(void *arg, const char *session_id)
{
    (void)arg;
    struct chat_turn *go = NULL;
    pthread_mutex_lock(&parked_mu);
    for (struct chat_turn **pp = &parked; *pp != NULL;) {
        struct chat_turn *t = *pp;
        if (session_id == NULL || strcmp(t->session_id, session_id) == 0) {
            *pp = t->park_next;
            t->park_next = go;
            go = t;
        } else {
            pp = &t->park_next;
        }
    }
    pthread_mutex_unlock(&parked_mu);
    while (go != NULL) {
        struct chat_turn *t = go;
        go = t->park_next;
        pool_submit(t->app->pool, &t->job);
    }
}

/* TURN_OK with the lease held (and t->seen_seq what it was taken at);
 * TURN_DEFERRED when another chatd's turn holds it and t is parked; else
 * the error. A new session takes one too, so that other tabs can find
 * who runs its first turn (resume, stop). */
#define TURN_DEFERRED (-1)
static int turn_take_lease(struct worker *w, struct chat_turn *t)
{
    if (t->lease_held)
        return TURN_OK;
    /* Its connection went away while it waited: nothing to wait for. (A
     * user's stop waits, so that the stop is stored like any other.) */
    pthread_mutex_lock(&t->mu);
    int dropped = t->cancelled && !t->by_user;
    pthread_mutex_unlock(&t->mu);
    if (dropped)
        return TURN_AGENT;
    long long next_seq;
    int st = db_lease_take(&w->pg, t->user_id, t->session_id, t->turn_id,
                           t->app->cfg->turn_lease_seconds, t->session_new, &next_seq);
    switch (st) {
    case DB_OK:
        t->lease_held = 1;
        lease_hold(t->app->lease, t->turn_id);
        if (!t->session_new)
            t->seen_seq = next_seq;
        return TURN_OK;
    case DB_BUSY:
        log_debug("event=turn_waits_for_lease session=%s", t->session_id);
        park(t);
        return TURN_DEFERRED;
    case DB_NOT_FOUND:
        return TURN_NO_SESSION; /* deleted while it waited */
    default:
        return TURN_INTERNAL;
    }
}

/* Gives the lease back, unless the store already did. */
static void turn_drop_lease(struct worker *w, struct chat_turn *t)
{
    if (!t->lease_held)
        return;
    lease_let_go(t->app->lease, t->turn_id);
    t->lease_held = 0;
    /* Best effort: one not given back runs out in TURN_LEASE_SECONDS. */
    db_lease_drop(&w->pg, t->session_id, t->turn_id);
}

/* ----------------------------------------------------------- end of turn */

/* The turn's last frame: to its connection, and to whoever resumes it. */
static void turn_push_last(struct chat_turn *t, char *frame, size_t len)
{
    if (t->streamed)
        events_turn_end(t->app, t->user_id, t->session_id, t->turn_id, t->next_index - 1, frame,
                        len);
    outbox_push(t->app->outbox, t->conn_id, frame, len);
}

static void turn_push_error(struct chat_turn *t, enum turn_error e)
{
    size_t len = 0;
    char *frame = proto_encode_error_code(PROTO_CHAT, turn_wire_code(e), NULL, NULL, &len);
    metrics_request(PROTO_CHAT, 0, (double)(metrics_now_us() - t->start_us) / 1e6);
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
static void turn_drop_file(struct worker *w, struct chat_turn *t)
{
    if (t->file_url == NULL ||
        db_file_delete(&w->pg, t->user_id, t->session_id, t->file_name) != DB_OK)
        return;
    files_remove(t->app->cfg, t->file_name);
    log_info("event=turn_file_removed session=%s file=%s", t->session_id, t->file_name);
}

static void turn_fail(struct worker *w, struct chat_turn *t, enum turn_error e)
{
    turn_drop_file(w, t);
    turn_push_error(t, e);
}

/* Every turn that got past its checks ends here exactly once. */
static void turn_end(struct worker *w, struct chat_turn *t)
{
    turn_drop_lease(w, t);
    slot_release(t);
    outbox_turn_done(t->app->outbox, t->conn_id, t);
    atomic_fetch_sub(&chat_turns_active, 1);
    chat_turn_unref(t); /* the pipeline's reference */
}

/* ---------------------------------------------------------------- store */

/* Stores the turn: one statement, so one round trip (db_turn_store). On
 * success sets t->stored_seq and *lock_seq (next_seq before the turn,
 * under the row lock), and tells the cache of this process about a new
 * session before anyone is told. */
static enum turn_error turn_store(struct worker *w, struct chat_turn *t, const char *reply,
                                  int reply_stopped, struct db_charge *charge,
                                  long long *lock_seq, int *stopped_here)
{
    /* The file entry holds the bare stored name: the existing client links
     * it as .../uploads/<content>. */
    struct db_turn_store in = {
        .user_id = t->user_id,
        .session_id = t->session_id,
        .turn_id = t->turn_id,
        .n_messages = t->file_url != NULL ? 3 : 2,
        .message = t->message,
        .reply = reply,
        .file_name = t->file_name,
        .summary = t->new_summary != NULL ? t->new_summary : t->summary,
        .session_new = t->session_new,
        .session_name = t->session_name,
        .prompt = t->prompt,
        .reply_stopped = reply_stopped,
        .deltas = t->next_index,
    };
    charge->session_id = t->session_id;
    long long seq = 0;
    uint64_t xid = 0;
    switch (db_turn_store(&w->pg, &in, charge, &seq, &xid, stopped_here)) {
    case DB_STORE_OK:
        break;
    case DB_STORE_NO_SESSION:
        return TURN_NO_SESSION;
    case DB_STORE_FENCED:
        /* Stored only while the lease is still this turn's. One that ran
         * out (this chatd stalled past TURN_LEASE_SECONDS) may have let
         * another turn run on the session meanwhile. */
        log_warn("event=turn_lease_lost session=%s", t->session_id);
        return TURN_INTERRUPTED;
    case DB_STORE_ERROR:
        return TURN_INTERNAL;
    }
    if (t->lease_held) { /* the statement gave it back */
        lease_let_go(t->app->lease, t->turn_id);
        t->lease_held = 0;
    }
    *lock_seq = seq;
    t->stored_seq = seq + in.n_messages;
    if (t->session_new)
        cache_saw_write(&w->cache, t->user_id, xid);
    return TURN_OK;
}

/* Writes the Redis copy of the session's context as PostgreSQL now holds
 * it, versioned by next_seq, so the next turn needs no database read. Only
 * when the history this turn read is exactly what preceded it under the
 * row lock (lock_seq); otherwise another chatd stored a turn in between,
 * and the next turn reads PostgreSQL. A copy that fails to be written, or
 * an older one left behind, is harmless: a turn uses a copy only when its
 * version is the session's next_seq (turn_load_context). */
static void turn_refresh_cache(struct worker *w, struct chat_turn *t, const char *reply,
                               long long lock_seq)
{
    if (lock_seq != t->ctx_seq) {
        /* The session's lease keeps every other turn out between its take
         * (which read ctx_seq) and this store: this would be a bug. */
        log_warn("event=turn_context_stale session=%s read_at=%lld stored_at=%lld",
                 t->session_id, t->ctx_seq, lock_seq);
        return;
    }
    const struct config *cfg = t->app->cfg;
    char key[CACHE_KEY_MAX];
    cache_key_context(key, t->session_id);
    json_t *msgs = json_deep_copy(t->history);
    if (msgs == NULL)
        return;
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", t->message));
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "assistant", "content", reply));
    if (t->file_url != NULL)
        json_array_append_new(msgs,
                              json_pack("{s:s, s:s}", "role", "file", "content", t->file_name));
    while (json_array_size(msgs) > (size_t)cfg->max_chat_history_context)
        json_array_remove(msgs, 0);
    json_t *ctx = json_pack("{s:s, s:o}", "summary",
                            t->new_summary != NULL ? t->new_summary : t->summary, "messages", msgs);
    char *s = ctx != NULL ? json_dumps(ctx, JSON_COMPACT) : NULL;
    json_decref(ctx);
    if (s != NULL)
        cache_put_copy(&w->cache, key, (uint64_t)t->stored_seq, 0, s, strlen(s),
                       CACHE_TTL_CONTEXT);
    free(s);
}

/* What the user's other connections, on any chatd, hear of a stored turn. */
static void turn_announce(struct chat_turn *t, const struct db_charge *charge, long long lock_seq)
{
    struct app *app = t->app;
    if (t->session_new)
        events_emit(app, t->user_id,
                    json_pack("{s:s, s:s, s:s}", "kind", "session_created", "session_id",
                              t->session_id, "session_name", t->session_name));
    json_t *seqs = json_array();
    for (long long s = lock_seq; s < t->stored_seq; s++)
        json_array_append_new(seqs, json_integer(s));
    events_emit(app, t->user_id,
                json_pack("{s:s, s:s, s:b, s:o}", "kind", "turn_finished", "session_id",
                          t->session_id, "stored", 1, "seqs", seqs));
    events_emit(app, t->user_id,
                json_pack("{s:s, s:f}", "kind", "balance", "balance",
                          strtod(charge->balance, NULL)));
}

static char *build_stopped_reply(const char *partial)
{
    size_t n = strlen(partial);
    char *out = malloc(n + sizeof(CHAT_STOP_MARKER) + 2);
    if (out == NULL)
        return NULL;
    if (n == 0)
        strcpy(out, CHAT_STOP_MARKER);
    else
        sprintf(out, "%s " CHAT_STOP_MARKER, partial);
    return out;
}

/* Runs on a worker after the agent (and Summarize) answered. */
static void turn_finish(struct worker *w, struct chat_turn *t)
{
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

    enum chat_end end = chat_end_of(cancelled, by_user, t->status);
    switch (end) {
    case CHAT_END_DROPPED:
        log_info("event=turn_cancelled conn=%llu session=%s", (unsigned long long)t->conn_id,
                 t->session_id);
        turn_fail(w, t, TURN_AGENT);
        goto out;
    case CHAT_END_FAILED:
        log_warn("event=agent_call_failed session=%s grpc_status=%d details=\"%s\"",
                 t->session_id, t->status, t->status_details ? t->status_details : "");
        turn_fail(w, t, TURN_AGENT);
        goto out;
    case CHAT_END_STOPPED:
    case CHAT_END_STOPPED_ESTIMATE:
        /* Stopped by the user: keep what was generated. */
        if ((stopped = build_stopped_reply(reply)) == NULL) {
            turn_fail(w, t, TURN_INTERNAL);
            goto out;
        }
        reply = stopped;
        if (end == CHAT_END_STOPPED_ESTIMATE) {
            /* Agents report cost only at the end: charge the estimate of
             * what was sent and generated, at the model's prices (in
             * exact decimals, by PostgreSQL). */
            size_t in_bytes = strlen(t->message) + strlen(t->prompt) + strlen(t->summary);
            charge.cost = NULL;
            charge.prompt_tokens = (unsigned)chat_estimate_tokens(in_bytes);
            charge.completion_tokens =
                (unsigned)chat_estimate_tokens(strlen(t->reply ? t->reply : ""));
            charge.estimated = 1;
        }
        break;
    case CHAT_END_STORED:
        break;
    }

    long long lock_seq = -1;
    int stopped_here = 0;
    enum turn_error err = turn_store(w, t, reply, stopped != NULL, &charge, &lock_seq,
                                     &stopped_here);
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
    log_info("event=turn_stored session=%s bytes_in=%zu bytes_out=%zu cost=%s%s%s",
             t->session_id, strlen(t->message), strlen(reply),
             charge.cost != NULL ? charge.cost : "estimated",
             strcmp(t->summary_cost, "0") != 0 ? "+summary" : "", stopped ? " stopped=1" : "");

    json_t *data = json_pack("{s:s, s:s, s:s, s:s}", "user_id", t->user_id, "session_id",
                             t->session_id, "session_name", t->session_name, "message", reply);
    size_t len = 0;
    char *frame = data != NULL ? proto_encode_reply(PROTO_CHAT, data, &len) : NULL;
    if (frame != NULL) {
        metrics_request(PROTO_CHAT, 1, (double)(metrics_now_us() - t->start_us) / 1e6);
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
        title_request(t->app, &src);
    }
out:
    free(stopped);
    turn_end(w, t);
}

/* ------------------------------------------------------- agent callbacks */

static void on_summary(void *ud, const struct agent_summary_result *res)
{
    struct chat_turn *t = ud;
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
    struct chat_turn *t = ud;
    if (!t->stream || len == 0)
        return;
    /* index: 0, 1, 2, ... within the turn, so that a client resuming it
     * (code 16) knows where it is. */
    long long index = t->next_index++;
    json_t *data = json_pack("{s:s, s:s%, s:I}", "session_id", t->session_id, "delta", text, len,
                             "index", (json_int_t)index);
    size_t flen = 0;
    char *frame = data != NULL ? proto_encode_reply(PROTO_CHAT_DELTA, data, &flen) : NULL;
    if (frame == NULL)
        return;
    events_turn_frame(t->app, t->user_id, t->session_id, t->turn_id, index, frame, flen);
    outbox_push(t->app->outbox, t->conn_id, frame, flen);
}

static void on_done(void *ud, const struct agent_result *res)
{
    struct chat_turn *t = ud;
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

/* ------------------------------------------------------------ file links */

char *chat_file_url(const struct config *cfg, const char *name)
{
    char *ref = auth_file_ref(cfg, name, time(NULL));
    char *url = ref != NULL ? files_url(cfg, ref) : NULL;
    free(ref);
    return url;
}

int chat_link_files(const struct config *cfg, json_t *msgs, const char *key,
                    char *(*link)(const struct config *, const char *))
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *name = json_string_value(json_object_get(m, "content"));
        if (role == NULL || strcmp(role, "file") != 0 || name == NULL)
            continue;
        char *s = link(cfg, name);
        int failed = s == NULL || json_object_set_new(m, key, json_string(s)) != 0;
        free(s);
        if (failed)
            return -1;
    }
    return 0;
}

static char *file_ref_now(const struct config *cfg, const char *name)
{
    return auth_file_ref(cfg, name, time(NULL));
}

char *chat_sign_files(const struct config *cfg, const char *chat_json)
{
    json_t *msgs = json_loads(chat_json, 0, NULL);
    char *out = json_is_array(msgs) && chat_link_files(cfg, msgs, "content", file_ref_now) == 0
                    ? json_dumps(msgs, JSON_COMPACT)
                    : NULL;
    json_decref(msgs);
    return out;
}

/* ------------------------------------------------------------ turn start */

/* The session's summary and recent messages: Redis, else PostgreSQL. */
static enum turn_error turn_load_context(struct worker *w, struct chat_turn *t)
{
    const struct config *cfg = t->app->cfg;
    if (t->session_new) {
        t->summary = strdup("");
        t->history = json_array();
        return t->summary != NULL && t->history != NULL ? TURN_OK : TURN_INTERNAL;
    }
    /* A copy is this session's context only at the version the turn
     * knows to be current: one left behind by a failed write or delete, or
     * by a Redis that stalled, is older and never used. */
    char key[CACHE_KEY_MAX];
    cache_key_context(key, t->session_id);
    struct cache_copy cp;
    if (cache_get_copy(&w->cache, key, &cp) == 0) {
        json_t *ctx = cp.version == (uint64_t)t->seen_seq && cp.aux == 0
                          ? json_loadb(cp.payload, cp.len, 0, NULL)
                          : NULL;
        free(cp.payload);
        json_t *msgs = json_object_get(ctx, "messages");
        json_t *sum = json_object_get(ctx, "summary");
        if (json_is_array(msgs) && json_is_string(sum)) {
            t->summary = strdup(json_string_value(sum));
            t->history = json_incref(msgs);
            t->ctx_seq = t->seen_seq;
            while (json_array_size(t->history) > (size_t)cfg->max_chat_history_context)
                json_array_remove(t->history, 0);
        }
        json_decref(ctx);
        if (t->history != NULL)
            return t->summary != NULL ? TURN_OK : TURN_INTERNAL;
    }
    struct db_session row;
    int st = db_session_get(&w->pg, t->user_id, t->session_id, cfg->max_chat_history_context,
                            &row);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? TURN_NO_SESSION : TURN_LOAD_SESSION;
    t->summary = row.summary;
    row.summary = NULL;
    t->history = json_loads(row.recent_json, 0, NULL);
    t->ctx_seq = row.next_seq;
    db_session_free(&row);
    if (!json_is_array(t->history))
        return TURN_LOAD_SESSION;
    return TURN_OK;
}

size_t chat_trim_history(json_t *history, size_t fixed_bytes, long context_tokens)
{
    size_t hist_bytes = 0, n = json_array_size(history);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_object_get(json_array_get(history, i), "content");
        hist_bytes += json_string_length(c) + 32; /* JSON framing per entry */
    }
    size_t dropped = 0;
    while (json_array_size(history) > 0 &&
           (long)chat_estimate_tokens(fixed_bytes + hist_bytes) > context_tokens) {
        json_t *c = json_object_get(json_array_get(history, 0), "content");
        hist_bytes -= json_string_length(c) + 32;
        json_array_remove(history, 0);
        dropped++;
    }
    return dropped;
}

static void turn_start(struct worker *w, struct chat_turn *t)
{
    int lease = turn_take_lease(w, t);
    if (lease == TURN_DEFERRED)
        return; /* parked until the lease is given back or runs out */
    enum turn_error err = lease == TURN_OK ? turn_load_context(w, t) : (enum turn_error)lease;
    if (err != TURN_OK) {
        turn_fail(w, t, err);
        turn_end(w, t);
        return;
    }
    json_t *history = json_deep_copy(t->history);
    /* History keeps a file as its bare stored name (as PostgreSQL does);
     * the agent is given the URL it can fetch, as always. */
    if (history != NULL && chat_link_files(t->app->cfg, history, "content", chat_file_url) != 0) {
        json_decref(history);
        history = NULL;
    }
    size_t fixed = strlen(t->prompt) + strlen(t->summary) + strlen(t->message);
    size_t dropped = history ? chat_trim_history(history, fixed, t->context_length) : 0;
    char *hist = history != NULL ? json_dumps(history, JSON_COMPACT) : NULL;
    json_decref(history);
    if (hist == NULL) {
        turn_fail(w, t, TURN_INTERNAL);
        turn_end(w, t);
        return;
    }
    log_debug("event=turn_start session=%s history=%zu dropped=%zu", t->session_id,
              json_array_size(t->history), dropped);
    /* From here on other connections can follow it (code 16), and the
     * user's other tabs hear of it. */
    events_turn_begin(t->app, t->session_id, t->turn_id);
    t->streamed = 1;
    events_emit(t->app, t->user_id,
                json_pack("{s:s, s:s, s:b}", "kind", "turn_started", "session_id", t->session_id,
                          "new_session", t->session_new));

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
    if (t->cancelled) {
        pthread_mutex_unlock(&t->mu);
        free(hist);
        t->status = AGENT_CANCELLED;
        t->stage = 1;
        turn_finish(w, t);
        return;
    }
    /* The whole turn may finish on other threads before agent_process
     * returns; our own reference keeps t alive until we let go of it. */
    chat_turn_ref(t);
    t->agent_start_us = metrics_now_us();
    t->call = agent_process(t->app->agent, &req, t->stream, on_delta, on_done, t);
    int started = t->call != NULL;
    pthread_mutex_unlock(&t->mu);
    free(hist);
    if (!started) {
        log_warn("event=agent_call_not_started session=%s", t->session_id);
        metrics_agent_error();
        turn_fail(w, t, TURN_AGENT);
        turn_end(w, t);
    }
    chat_turn_unref(t);
}

static void turn_run(struct worker *w, struct pool_job *job)
{
    struct chat_turn *t = (struct chat_turn *)job;
    if (t->stage == 0)
        turn_start(w, t);
    else
        turn_finish(w, t);
}

/* --------------------------------------------------------------- checks */

/* The checks of code 3, in the documented order. */
static enum turn_error turn_check(struct worker *w, struct chat_turn *t,
                                  const struct proto_request *q)
{
    const struct config *cfg = t->app->cfg;
    struct db_model model = {0};
    struct db_turn_target target;
    /* The client may send back the file reference it was given (signed
     * with AUTH_MODE=jwt): the stored name is what comes before any '?'. */
    int has_file = q->file_name[0] != '\0';
    if (has_file && !q->session_new &&
        auth_file_ref_name(q->file_name, t->file_name, strlen(t->file_name) + 1) != 0)
        t->file_name[0] = '\0'; /* matches no stored file */
    switch (db_turn_check(&w->pg, q->user_id, q->model_name, q->model_id,
                          q->session_new ? NULL : q->session_id,
                          has_file && !q->session_new ? t->file_name : NULL, &t->balance, &model,
                          &target)) {
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
    t->session_name = target.session_name; /* NULL for a new or missing one */
    t->model_id = model.id;
    t->model_name = model.name; /* the turn owns them now */
    t->provider = model.provider;
    t->context_length = model.context_length;
    if (!(t->balance > 0))
        return TURN_NO_BALANCE;

    if (q->session_new) {
        if (uuid_generate(t->session_id) != 0)
            return TURN_CREATE_SESSION;
        t->session_new = 1;
        t->session_name = strndup(q->message, proto_utf8_prefix(q->message, CHAT_SESSION_NAME_CHARS));
    } else {
        memcpy(t->session_id, q->session_id, sizeof(t->session_id));
        if (!target.session_found)
            return TURN_NO_SESSION;
        t->seen_seq = target.next_seq;
    }
    if (t->session_name == NULL)
        return TURN_INTERNAL;

    if (has_file) {
        /* A file is uploaded into a session first; the row proves it is
         * this user's, in this session. */
        if (t->session_new || !target.file_found)
            return TURN_BAD_FILE;
        if ((t->file_url = chat_file_url(cfg, t->file_name)) == NULL)
            return TURN_INTERNAL;
    }

    /* Last, so that only a turn that would otherwise run is counted: a
     * request refused for any other reason does not use up the quota. */
    switch (ratelimit_check(&w->cache, &w->pg, cfg, t->user_id, &t->wait_seconds)) {
    case RATELIMIT_OVER_DAY:
        return TURN_DAY_LIMIT;
    case RATELIMIT_OVER_MINUTE:
        return TURN_MINUTE_LIMIT;
    case RATELIMIT_OK:
        break;
    }
    return TURN_OK;
}

void chat_handle(struct worker *w, struct work_request *r)
{
    struct app *app = r->app;
    struct chat_turn *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        outbox_reply_error(app->outbox, r->conn_id, PROTO_CHAT, PERR_INTERNAL, NULL);
        return;
    }
    atomic_init(&t->refs, 1);
    t->stored_seq = -1;
    if (uuid_generate(t->turn_id) != 0) {
        outbox_reply_error(app->outbox, r->conn_id, PROTO_CHAT, PERR_INTERNAL, NULL);
        free(t);
        return;
    }
    strcpy(t->cost, "0");
    strcpy(t->summary_cost, "0");
    pthread_mutex_init(&t->mu, NULL);
    t->app = app;
    t->conn_id = r->conn_id;
    t->start_us = metrics_now_us();
    t->job.run = turn_run;
    t->stream = r->req.stream;
    memcpy(t->user_id, r->req.user_id, sizeof(t->user_id));
    t->message = strdup(r->req.message);
    t->prompt = strdup(r->req.session_prompt);
    t->file_name = strdup(r->req.file_name);

    enum turn_error err =
        (t->message && t->prompt && t->file_name) ? turn_check(w, t, &r->req) : TURN_INTERNAL;
    if (err != TURN_OK) {
        int code = turn_wire_code(err);
        char text[128];
        const char *custom = NULL;
        if (err == TURN_BAD_FILE) {
            custom = "Invalid field 'file_name': no such file in this session";
        } else if (err == TURN_DAY_LIMIT || err == TURN_MINUTE_LIMIT) {
            snprintf(text, sizeof(text), "%s: try again in %d seconds", proto_err_text(code),
                     t->wait_seconds);
            custom = text;
        }
        outbox_reply_error(app->outbox, r->conn_id, PROTO_CHAT, code, custom);
        chat_turn_unref(t);
        return;
    }

    atomic_fetch_add(&chat_turns_active, 1);
    outbox_detach(app->outbox, t->conn_id, t);
    if (slot_acquire(t))
        turn_start(w, t);
    /* else: the session's running turn resubmits t when it ends */
}
