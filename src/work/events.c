/* events.c - see events.h. */
#include "work/events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/uuid.h"
#include "store/db.h"
#include "store/live.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/chat.h"
#include "work/dispatch.h"
#include "work/outbox.h"
#include "work/pool.h"

/* --------------------------------------------------------------- publish */

static void publish(struct app *app, const char *user_id, const char *msg, size_t len)
{
    if (app->live != NULL)
        live_publish(app->live, user_id, msg, len);
}

void events_emit(struct app *app, const char *user_id, json_t *event)
{
    char *s = event != NULL ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(event);
    if (s == NULL)
        return;
    size_t n = strlen(s);
    char *msg = malloc(n + 2);
    if (msg != NULL) {
        msg[0] = 'E';
        memcpy(msg + 1, s, n + 1);
        publish(app, user_id, msg, n + 1);
    }
    free(msg);
    free(s);
}

/* RESUMABLE_STREAMS=0: a turn's frames go only to its own connection. */
static int streams_on(const struct app *app)
{
    return app->live != NULL && app->cfg->resumable_streams;
}

void events_turn_begin(struct app *app, const char *session_id, const char *turn_id)
{
    if (streams_on(app))
        live_stream_begin(app->live, session_id, turn_id);
}

/* A turn's frame on its session's channel: "<user>D<session> <index>
 * <frame>" (or "F<session> <frame>" for the last), heard only by the
 * chatd instances that have a resumer of the session. */
static void publish_turn(struct app *app, const char *user_id, const char *session_id,
                         const char *head, const char *frame, size_t len)
{
    char *msg = malloc(len + 128);
    if (msg == NULL)
        return;
    int h = snprintf(msg, 128, "%s%s", user_id, head);
    if (h < 0 || h >= 128 || strlen(user_id) != UUID_STR_LEN) {
        free(msg);
        return;
    }
    memcpy(msg + h, frame, len);
    live_publish_turn(app->live, session_id, msg, (size_t)h + len);
    free(msg);
}

void events_turn_frame(struct app *app, const char *user_id, const char *session_id,
                       long long index, const char *frame, size_t len)
{
    if (!streams_on(app))
        return;
    char idx[24], head[80];
    snprintf(idx, sizeof(idx), "%lld", index);
    live_stream_add(app->live, session_id, idx, frame, len);
    snprintf(head, sizeof(head), "D%s %lld ", session_id, index);
    publish_turn(app, user_id, session_id, head, frame, len);
}

void events_turn_end(struct app *app, const char *user_id, const char *session_id,
                     const char *frame, size_t len)
{
    if (!streams_on(app))
        return;
    live_stream_end(app->live, session_id, frame, len, app->cfg->stream_retain_seconds);
    char head[80];
    snprintf(head, sizeof(head), "F%s ", session_id);
    publish_turn(app, user_id, session_id, head, frame, len);
}

void events_watch_turn(struct app *app, const char *session_id)
{
    live_watch(app->live, session_id);
}

void events_unwatch_turn(struct app *app, const char *session_id)
{
    live_unwatch(app->live, session_id);
}

/* ------------------------------------------------------------- delivery */

/* A frame for the connections: {"type": 15, "data": event}. */
static char *event_frame(const char *event_json, size_t len, size_t *out_len)
{
    json_t *ev = json_loadb(event_json, len, 0, NULL);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return NULL;
    }
    return proto_encode_reply(PROTO_EVENT, ev, out_len);
}

void events_on_message(void *arg, const char *user_id, const char *msg, size_t len)
{
    struct app *app = arg;
    if (len < 1)
        return;
    const char *body = msg + 1;
    size_t blen = len - 1;
    char session[UUID_STR_LEN + 1] = "";
    if (msg[0] != 'E') {
        if (blen < UUID_STR_LEN)
            return;
        memcpy(session, body, UUID_STR_LEN);
        if (!uuid_valid(session))
            return;
        body += UUID_STR_LEN;
        blen -= UUID_STR_LEN;
    }
    switch (msg[0]) {
    case 'E': {
        size_t flen = 0;
        char *frame = event_frame(body, blen, &flen);
        if (frame != NULL)
            outbox_live(app->outbox, user_id, 'E', NULL, -1, frame, flen);
        return;
    }
    case 'D': {
        /* " <index> <frame>" */
        char *end = NULL;
        if (blen < 3 || body[0] != ' ')
            return;
        long long index = strtoll(body + 1, &end, 10);
        if (end == NULL || end >= body + blen || *end != ' ' || index < 0)
            return;
        size_t flen = blen - (size_t)(end + 1 - body);
        char *frame = strndup(end + 1, flen);
        if (frame != NULL)
            outbox_live(app->outbox, user_id, 'D', session, index, frame, flen);
        return;
    }
    case 'F': {
        if (blen < 2 || body[0] != ' ')
            return;
        char *frame = strndup(body + 1, blen - 1);
        if (frame != NULL)
            outbox_live(app->outbox, user_id, 'F', session, -1, frame, blen - 1);
        return;
    }
    case 'S':
        if (chat_stop_session(user_id, session))
            log_info("event=turn_stop_heard session=%s", session);
        return;
    default:
        return;
    }
}

void events_admin(void *arg, const char *payload)
{
    struct app *app = arg;
    json_t *ev = json_loads(payload, 0, NULL);
    const char *user = json_string_value(json_object_get(ev, "user_id"));
    char user_id[UUID_STR_LEN + 1];
    if (user == NULL || !uuid_valid(user)) {
        json_decref(ev);
        return;
    }
    uuid_normalize(user, user_id);
    json_object_del(ev, "user_id"); /* the event is the user's own */
    size_t flen = 0;
    char *frame = proto_encode_reply(PROTO_EVENT, ev, &flen);
    if (frame != NULL)
        outbox_live(app->outbox, user_id, 'E', NULL, -1, frame, flen);
}

/* ---------------------------------------------------------------- watch */

/* Turns that connections here resume, watched in case their last frame
 * never reaches them: their chatd died (nobody sends it), or it was
 * published while this chatd's subscriber was reconnecting (pub/sub is at
 * most once). Once a second a worker looks at them all; for one whose
 * lease is gone, the stream says which: with no end it was interrupted,
 * and its resumers are told so (error 29); with an end, they are given
 * that end. By this chatd, to its own connections. */
struct watch {
    struct watch *next;
    char user[UUID_STR_LEN + 1], session[UUID_STR_LEN + 1], turn[UUID_STR_LEN + 1];
    time_t since; /* when it was first seen without a lease and an end */
};

/* A turn that ended writes its last frame right after its commit (through
 * the publisher's queue): one seen without its lease and without that end
 * for this long is taken for interrupted. */
#define EVENTS_END_GRACE_SECONDS 2

/* How long a resume waits for Redis to confirm its subscription. */
#define EVENTS_WATCH_WAIT_MS 3000

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static struct watch *watches;
static atomic_int watch_busy;
static struct pool_job watch_job;

static void watch_add(const char *user, const char *session, const char *turn)
{
    pthread_mutex_lock(&watch_mu);
    struct watch *x = watches;
    while (x != NULL && !(strcmp(x->session, session) == 0 && strcmp(x->turn, turn) == 0))
        x = x->next;
    if (x == NULL && (x = calloc(1, sizeof(*x))) != NULL) {
        snprintf(x->user, sizeof(x->user), "%s", user);
        snprintf(x->session, sizeof(x->session), "%s", session);
        snprintf(x->turn, sizeof(x->turn), "%s", turn);
        x->next = watches;
        watches = x;
    }
    pthread_mutex_unlock(&watch_mu);
}

static void watch_drop(struct watch *gone)
{
    pthread_mutex_lock(&watch_mu);
    for (struct watch **pp = &watches; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == gone) {
            *pp = gone->next;
            free(gone);
            break;
        }
    }
    pthread_mutex_unlock(&watch_mu);
}

static void watch_run(struct worker *w, struct pool_job *job)
{
    (void)job;
    /* Entries are freed only here (one job at a time), so walking the
     * list outside the lock is safe; new ones are added at its head. */
    pthread_mutex_lock(&watch_mu);
    struct watch *x = watches;
    pthread_mutex_unlock(&watch_mu);
    while (x != NULL) {
        struct watch *next = x->next;
        char running[UUID_STR_LEN + 1] = "";
        long long next_seq;
        int st = db_session_turn(&w->pg, x->user, x->session, &next_seq, running);
        if (st == DB_ERROR || (st == DB_OK && strcmp(running, x->turn) == 0)) {
            x = next; /* still running (or we cannot tell now) */
            continue;
        }
        struct live_entry *e = NULL;
        size_t n = 0;
        if (live_stream_read(&w->cache, x->session, &e, &n) != 0) {
            x = next;
            continue;
        }
        int ours = n > 0 && strcmp(e[0].index, "turn") == 0 && strcmp(e[0].frame, x->turn) == 0;
        int ended = ours && strcmp(e[n - 1].index, "end") == 0;
        time_t now = time(NULL);
        if (ours && x->since == 0)
            x->since = now;
        if (ours && now - x->since < EVENTS_END_GRACE_SECONDS) {
            live_entries_free(e, n);
            x = next; /* its end may be on its way */
            continue;
        }
        if (ours) {
            /* Ended: its last frame was published, but pub/sub is at most
             * once (the subscriber may have been reconnecting), so it is
             * given again from the stream; a connection that had it is
             * no longer resuming and ignores it. Not ended: its chatd
             * died. */
            size_t len = 0;
            char *frame = NULL;
            if (ended) {
                frame = e[n - 1].frame;
                len = e[n - 1].len;
                e[n - 1].frame = NULL;
            } else {
                frame = proto_encode_error_code(PROTO_CHAT, PERR_TURN_INTERRUPTED, NULL, NULL, &len);
                log_info("event=turn_interrupted session=%s turn=%s", x->session, x->turn);
            }
            if (frame != NULL)
                outbox_live(w->app->outbox, x->user, 'F', x->session, -1, frame, len);
        }
        live_entries_free(e, n);
        watch_drop(x);
        x = next;
    }
    atomic_store(&watch_busy, 0);
}

void events_tick(struct app *app)
{
    pthread_mutex_lock(&watch_mu);
    int any = watches != NULL;
    pthread_mutex_unlock(&watch_mu);
    if (!any || atomic_exchange(&watch_busy, 1))
        return;
    watch_job.run = watch_run;
    pool_submit(app->pool, &watch_job);
}

/* -------------------------------------------------------------- handlers */

static void reply_error(struct work_request *r, int code, const char *detail)
{
    size_t len = 0;
    char *frame = proto_encode_error_code(r->req.type, code, NULL, detail, &len);
    if (r->req.type == PROTO_SUBSCRIBE)
        outbox_subscribed(r->app->outbox, r->conn_id, r->req.user_id, 0, frame, len);
    else if (r->req.type == PROTO_RESUME)
        outbox_resumed(r->app->outbox, r->conn_id, r->req.user_id, r->req.session_id, frame,
                       len, NULL, NULL, 0, -1, 0);
    else
        outbox_reply_error(r->app->outbox, r->conn_id, r->req.type, code, NULL);
    if (r->req.type != PROTO_SUBSCRIBE && r->req.type != PROTO_RESUME)
        free(frame);
}

/* Code 14: from now on this connection gets the user's events. */
void events_subscribe(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    double balance;
    int st = db_balance(&w->pg, q->user_id, &balance); /* the user exists */
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_INTERNAL, NULL);
        return;
    }
    if (!live_up(r->app->live)) {
        reply_error(r, PERR_LIVE_UNAVAILABLE, "Redis is unreachable; try again");
        return;
    }
    size_t len = 0;
    char *frame = proto_encode_reply(
        PROTO_SUBSCRIBE, json_pack("{s:s, s:b}", "user_id", q->user_id, "subscribed", 1), &len);
    if (frame == NULL) {
        reply_error(r, PERR_JSON_MARSHAL, NULL);
        return;
    }
    outbox_subscribed(r->app->outbox, r->conn_id, q->user_id, 1, frame, len);
}

/* Code 16. The connection has registered for the session's live frames
 * already (net/conn.c), so none published from now on is missed; this
 * reads what the stream holds, which the connection sends first, then
 * those it buffered with a higher index. */
void events_resume(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct live_entry *e = NULL;
    size_t n = 0;
    char running[UUID_STR_LEN + 1] = "";
    long long next_seq = 0;
    int st = db_session_turn(&w->pg, q->user_id, q->session_id, &next_seq, running);
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_INTERNAL, NULL);
        return;
    }
    if (!r->app->cfg->resumable_streams) {
        reply_error(r, PERR_LIVE_UNAVAILABLE, "RESUMABLE_STREAMS=0: turns are not kept for resuming");
        return;
    }
    /* The connection watches the session's channel (net/conn.c); reading
     * the stream before Redis confirmed it could miss a frame. */
    if (!live_up(r->app->live) ||
        live_watch_wait(r->app->live, q->session_id, EVENTS_WATCH_WAIT_MS) != 0 ||
        live_stream_read(&w->cache, q->session_id, &e, &n) != 0) {
        reply_error(r, PERR_LIVE_UNAVAILABLE, "Redis is unreachable; try again");
        return;
    }
    int has_turn = n > 0 && strcmp(e[0].index, "turn") == 0;
    json_t *ack;
    if (!has_turn) {
        if (running[0] != '\0') {
            /* A turn runs, and Redis lost its stream (a flush, a restart):
             * what it sent before cannot be replayed. */
            live_entries_free(e, n);
            reply_error(r, PERR_LIVE_UNAVAILABLE, "the running turn's frames were lost");
            return;
        }
        ack = json_pack("{s:s, s:s, s:b, s:I}", "user_id", q->user_id, "session_id",
                        q->session_id, "active", 0, "last_seq", (json_int_t)(next_seq - 1));
        size_t len = 0;
        char *frame = ack != NULL ? proto_encode_reply(PROTO_RESUME, ack, &len) : NULL;
        live_entries_free(e, n);
        outbox_resumed(r->app->outbox, r->conn_id, q->user_id, q->session_id, frame, len, NULL,
                       NULL, 0, -1, 0);
        return;
    }
    int ended = strcmp(e[n - 1].index, "end") == 0;
    /* The frames after the client's index, and the last one. */
    char **frames = calloc(n, sizeof(*frames));
    size_t *lens = calloc(n, sizeof(*lens));
    size_t k = 0;
    long long last = q->after;
    for (size_t i = 1; frames != NULL && lens != NULL && i < n; i++) {
        int is_end = strcmp(e[i].index, "end") == 0;
        long long idx = is_end ? -1 : strtoll(e[i].index, NULL, 10);
        if (!is_end && idx <= q->after)
            continue;
        frames[k] = e[i].frame;
        lens[k] = e[i].len;
        e[i].frame = NULL;
        k++;
        if (!is_end && idx > last)
            last = idx;
    }
    char e0_turn[UUID_STR_LEN + 1];
    snprintf(e0_turn, sizeof(e0_turn), "%s", e[0].frame);
    ack = json_pack("{s:s, s:s, s:b, s:s, s:I}", "user_id", q->user_id, "session_id",
                    q->session_id, "active", !ended, "turn_id", e0_turn, "after",
                    (json_int_t)q->after);
    live_entries_free(e, n);
    size_t len = 0;
    char *frame = ack != NULL && frames != NULL && lens != NULL
                      ? proto_encode_reply(PROTO_RESUME, ack, &len)
                      : (json_decref(ack), NULL);
    if (frame == NULL) {
        for (size_t i = 0; i < k; i++)
            free(frames[i]);
        free(frames);
        free(lens);
        reply_error(r, PERR_INTERNAL, NULL);
        return;
    }
    /* Not ended: it runs, or has just ended (its last frame comes right
     * after its commit, and this connection will hear it), or its chatd
     * died, which the watch finds out. */
    if (!ended)
        watch_add(q->user_id, q->session_id, e0_turn);
    outbox_resumed(r->app->outbox, r->conn_id, q->user_id, q->session_id, frame, len, frames,
                   lens, k, last, !ended);
}

/* Code 8 for a turn this connection does not run: it may run on another
 * connection or another chatd. The one that runs it stops it when it hears
 * the stop; its final reply goes where the turn's frames go. */
void events_stop(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char running[UUID_STR_LEN + 1] = "";
    long long next_seq;
    int st = db_session_turn(&w->pg, q->user_id, q->session_id, &next_seq, running);
    if (st != DB_OK || running[0] == '\0') {
        /* Someone else's session, or no turn: the same answer. */
        reply_error(r, st == DB_ERROR ? PERR_INTERNAL : PERR_NO_TURN, NULL);
        return;
    }
    if (!live_up(r->app->live)) {
        reply_error(r, PERR_LIVE_UNAVAILABLE, "Redis is unreachable; try again");
        return;
    }
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "S%s", q->session_id);
    publish(r->app, q->user_id, msg, (size_t)n);
    outbox_reply(r->app->outbox, r->conn_id, PROTO_STOP,
                 json_pack("{s:s, s:s, s:b}", "user_id", q->user_id, "session_id", q->session_id,
                           "stopped", 1));
}
