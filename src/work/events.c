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
#include "store/cache.h"
#include "store/db.h"
#include "store/live.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/outbox.h"
#include "work/pool.h"
#include "work/request.h"
#include "work/slots.h"
#include "work/stream.h"
#include "work/watch.h"

/* How long a resume waits for Redis to confirm its subscription. */
#define EVENTS_WATCH_WAIT_MS 3000

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

/* A turn's frame on its session's channel: "<user>D<session><turn>
 * <index> <frame>" (or "F<session><turn> <last> <frame>" for the last
 * frame, after delta last), heard only by the chatd instances that have a
 * resumer of the session. The turn's id lets a resumer take only the
 * frames of the turn it resumes. */
static void publish_turn(struct app *app, const char *user_id, const char *session_id,
                         const char *head, const char *frame, size_t len)
{
    char *msg = malloc(len + 160);
    if (msg == NULL)
        return;
    int h = snprintf(msg, 160, "%s%s", user_id, head);
    if (h < 0 || h >= 160 || strlen(user_id) != UUID_STR_LEN) {
        free(msg);
        return;
    }
    memcpy(msg + h, frame, len);
    live_publish_turn(app->live, session_id, msg, (size_t)h + len);
    free(msg);
}

void events_turn_frame(struct app *app, const char *user_id, const char *session_id,
                       const char *turn_id, long long index, const char *frame, size_t len,
                       int followed)
{
    if (!streams_on(app))
        return;
    live_stream_add(app->live, session_id, turn_id, index, frame, len);
    if (!followed)
        return; /* nobody resumes it: the stream alone keeps the frame */
    char head[128];
    snprintf(head, sizeof(head), "D%s%s %lld ", session_id, turn_id, index);
    publish_turn(app, user_id, session_id, head, frame, len);
}

void events_turn_end(struct app *app, const char *user_id, const char *session_id,
                     const char *turn_id, long long last_index, const char *frame, size_t len)
{
    if (!streams_on(app))
        return;
    live_stream_end(app->live, session_id, turn_id, last_index, frame, len,
                    app->cfg->stream_retain_seconds);
    char head[128];
    snprintf(head, sizeof(head), "F%s%s %lld ", session_id, turn_id, last_index);
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

/* A connection here resumes turn_id: its chatd, wherever it is, publishes
 * its deltas from now on (W, see events.h). Those it streamed before are
 * in its stream, which the resume or a refill reads. */
static void follow(struct app *app, const char *user_id, const char *session_id,
                   const char *turn_id)
{
    char msg[128];
    int n = snprintf(msg, sizeof(msg), "W%s%s", session_id, turn_id);
    if (n > 0 && (size_t)n < sizeof(msg))
        publish(app, user_id, msg, (size_t)n);
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

/* A uuid at the head of *body, into out, *body and *blen moved past it. */
static int take_uuid(const char **body, size_t *blen, char out[UUID_STR_LEN + 1])
{
    if (*blen < UUID_STR_LEN)
        return -1;
    memcpy(out, *body, UUID_STR_LEN);
    out[UUID_STR_LEN] = '\0';
    *body += UUID_STR_LEN;
    *blen -= UUID_STR_LEN;
    return uuid_valid(out) ? 0 : -1;
}

void events_on_message(void *arg, const char *user_id, const char *msg, size_t len)
{
    struct app *app = arg;
    if (len < 1)
        return;
    const char *body = msg + 1;
    size_t blen = len - 1;
    if (msg[0] == 'E') {
        size_t flen = 0;
        char *frame = event_frame(body, blen, &flen);
        if (frame != NULL)
            outbox_live(app->outbox, user_id, 'E', NULL, NULL, -1, frame, flen);
        return;
    }
    /* D, F, S and W name a session and a turn. */
    char session[UUID_STR_LEN + 1], turn[UUID_STR_LEN + 1];
    if (take_uuid(&body, &blen, session) != 0 || take_uuid(&body, &blen, turn) != 0)
        return;
    switch (msg[0]) {
    case 'D':
    case 'F': {
        /* " <index> <frame>": the delta's index, or the last one's */
        char *end = NULL;
        if (blen < 3 || body[0] != ' ')
            return;
        long long index = strtoll(body + 1, &end, 10);
        if (end == NULL || end >= body + blen || *end != ' ' || index < -1)
            return;
        size_t flen = blen - (size_t)(end + 1 - body);
        char *frame = strndup(end + 1, flen);
        if (frame != NULL)
            outbox_live(app->outbox, user_id, msg[0], session, turn, index, frame, flen);
        return;
    }
    case 'S':
        if (slots_stop(app->slots, user_id, session, turn))
            log_info("event=turn_stop_heard session=%s turn=%s", session, turn);
        return;
    case 'W':
        if (slots_follow(app->slots, user_id, session, turn))
            log_info("event=turn_followed session=%s turn=%s", session, turn);
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
        outbox_live(app->outbox, user_id, 'E', NULL, NULL, -1, frame, flen);
}

/* ---------------------------------------------------------------- watch */

/* The end of a watched turn that no longer runs (work/watch.h): 1 and
 * *frame, *last set; 0 while it runs or nothing can be said yet. */
static int watch_end(struct worker *w, struct watch *x, char **frame, size_t *len, long long *last)
{
    char *settled = NULL;
    size_t slen = 0;
    long long slast = -1;
    if (stream_settle(w, x->user, x->session, x->turn, &settled, &slen, &slast) <= 0)
        return 0;
    struct live_entry *e = NULL;
    size_t n = 0;
    int read = live_stream_read(&w->cache, x->session, x->turn, &e, &n) == 0;
    int has_end = read && n > 1 && e[0].kind == LIVE_ENTRY_TURN &&
                  strcmp(e[0].frame, x->turn) == 0 && e[n - 1].kind == LIVE_ENTRY_END;
    switch (watch_source(x, read, has_end)) {
    case WATCH_WAIT:
        free(settled);
        live_entries_free(e, n);
        return 0;
    case WATCH_FROM_STREAM:
        free(settled);
        *frame = e[n - 1].frame;
        *len = e[n - 1].len;
        *last = e[n - 1].index;
        e[n - 1].frame = NULL;
        break;
    case WATCH_FROM_PG:
        /* After as many deltas as it streamed: a resumer that lacks some
         * reads them from the stream. */
        *frame = settled;
        *len = slen;
        *last = slast;
        break;
    }
    live_entries_free(e, n);
    return 1;
}

static int watch_ended(void *ctx, struct watch *x)
{
    struct worker *w = ctx;
    char *frame = NULL;
    size_t len = 0;
    long long last = -1;
    if (!watch_end(w, x, &frame, &len, &last)) {
        /* It runs: said again each sweep, in case its chatd's subscriber
         * was cut off from Redis when the resume said it. */
        follow(w->app, x->user, x->session, x->turn);
        return 0;
    }
    outbox_live(w->app->outbox, x->user, 'F', x->session, x->turn, last, frame, len);
    return 1;
}

static void watch_run(struct worker *w, struct pool_job *job)
{
    (void)job;
    watches_sweep(w->app->watches, watch_ended, w);
}

void events_tick(struct app *app)
{
    struct pool_job *job = watches_due(app->watches);
    if (job == NULL)
        return;
    job->run = watch_run;
    pool_submit(app->pool, job);
}

/* -------------------------------------------------------------- handlers */

static void reply_error(struct work_request *r, int code, const char *detail)
{
    size_t len = 0;
    char *frame = proto_encode_error_code(r->req.type, code, NULL, detail, &len);
    if (r->req.type == PROTO_SUBSCRIBE)
        outbox_subscribed(r->app->outbox, r->conn_id, r->req.user_id, 0, frame, len);
    else if (r->req.type == PROTO_RESUME)
        outbox_resumed(r->app->outbox, r->conn_id, r->req.user_id, r->req.session_id, NULL, frame,
                       len, NULL, NULL, 0, -1, 0, 0);
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
    enum db_status st = db_balance(&w->pg, q->user_id, &balance); /* the user exists */
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

#define EVENTS_FRAMES_LOST "the running turn's frames were lost"

/* Code 16. The connection has registered for the session's live frames
 * already (net/conn.c), so none published from now on is missed; this
 * reads what the stream holds, which the connection sends first, then
 * those it buffered with a higher index. Whether the turn still runs is
 * PostgreSQL's to say: one that does not, and whose end the stream lacks,
 * is settled there (turn_settle), so that a later resume hears the same. */
/* Code 16's answer when the session has no turn to resume: the last seq
 * stored, so the client reads what it lacks with code 9. */
static void resume_no_turn(struct work_request *r, long long next_seq)
{
    const struct proto_request *q = &r->req;
    json_t *ack = json_pack("{s:s, s:s, s:b, s:I}", "user_id", q->user_id, "session_id",
                            q->session_id, "active", 0, "last_seq", (json_int_t)(next_seq - 1));
    size_t len = 0;
    char *frame = ack != NULL ? proto_encode_reply(PROTO_RESUME, ack, &len) : NULL;
    outbox_resumed(r->app->outbox, r->conn_id, q->user_id, q->session_id, NULL, frame, len, NULL,
                   NULL, 0, -1, 0, 0);
}

/* A turn that no longer runs and whose end is not in its stream: its end
 * is on its way, or never comes; PostgreSQL says which. 0 (v ends with
 * it, or it is still on its way), 1 when deltas it streamed are not in the
 * stream (lost), -1 when PostgreSQL cannot tell now. */
static int resume_settle(struct worker *w, const struct proto_request *q, struct stream_view *v)
{
    char *end = NULL;
    size_t elen = 0;
    long long elast = -1;
    int settled = stream_settle(w, q->user_id, q->session_id, v->turn, &end, &elen, &elast);
    if (settled <= 0)
        return settled;
    if (elast > v->last) {
        free(end);
        return 1;
    }
    v->frames[v->n] = end;
    v->lens[v->n] = elen;
    v->n++;
    v->ended = 1;
    return 0;
}

void events_resume(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct live_entry *e = NULL;
    size_t n = 0;
    char running[UUID_STR_LEN + 1] = "";
    long long next_seq = 0;
    enum db_status st = db_session_turn(&w->pg, q->user_id, q->session_id, &next_seq, running);
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_INTERNAL, NULL);
        return;
    }
    if (!r->app->cfg->resumable_streams) {
        reply_error(r, PERR_LIVE_UNAVAILABLE,
                    "RESUMABLE_STREAMS=0: turns are not kept for resuming");
        return;
    }
    /* The connection watches the session's channel (net/conn.c); reading
     * the stream before Redis confirmed it could miss a frame. The turn
     * that runs, PostgreSQL says which; with none, the latest one's
     * stream, which may hold a turn that ended a moment ago. */
    const char *turn = running[0] != '\0' ? running : NULL;
    int up = live_up(r->app->live) &&
             live_watch_wait(r->app->live, q->session_id, EVENTS_WATCH_WAIT_MS) == 0;
    if (up && turn != NULL)
        follow(r->app, q->user_id, q->session_id, turn); /* before the read: fewer refills */
    if (!up || stream_read(w, q->session_id, turn, &e, &n) != 0) {
        reply_error(r, PERR_LIVE_UNAVAILABLE, "Redis is unreachable; try again");
        return;
    }
    struct stream_view v;
    int oom = stream_view_take(e, n, q->after, &v) != 0;
    live_entries_free(e, n);
    if (!oom && !v.has_turn && turn != NULL) {
        /* It runs, and its stream does not show it yet: its first
         * commands are still on their way to Redis (or being sent again).
         * Its frames come live; one after a gap is read from the stream
         * then (a refill), and if Redis lost them the connection is told
         * (error 30). */
        stream_view_free(&v);
        v.has_turn = 1;
        v.last = q->after;
        snprintf(v.turn, sizeof(v.turn), "%s", turn);
        v.frames = calloc(1, sizeof(*v.frames));
        v.lens = calloc(1, sizeof(*v.lens));
        oom = v.frames == NULL || v.lens == NULL;
    }
    if (oom) {
        stream_view_free(&v);
        reply_error(r, PERR_INTERNAL, NULL);
        return;
    }
    if (!v.has_turn) {
        stream_view_free(&v);
        resume_no_turn(r, next_seq);
        return;
    }
    if (v.gap) {
        stream_view_free(&v);
        reply_error(r, PERR_LIVE_UNAVAILABLE, EVENTS_FRAMES_LOST);
        return;
    }
    if (!v.ended && strcmp(running, v.turn) != 0) {
        int settled = resume_settle(w, q, &v);
        if (settled != 0) {
            stream_view_free(&v);
            reply_error(r, settled < 0 ? PERR_INTERNAL : PERR_LIVE_UNAVAILABLE,
                        settled < 0 ? NULL : EVENTS_FRAMES_LOST);
            return;
        }
    }
    json_t *ack =
        json_pack("{s:s, s:s, s:b, s:s, s:I}", "user_id", q->user_id, "session_id", q->session_id,
                  "active", !v.ended, "turn_id", v.turn, "after", (json_int_t)q->after);
    size_t len = 0;
    char *frame = ack != NULL ? proto_encode_reply(PROTO_RESUME, ack, &len) : NULL;
    if (frame == NULL) {
        stream_view_free(&v);
        reply_error(r, PERR_INTERNAL, NULL);
        return;
    }
    /* Not ended: it runs, or has just ended (its last frame comes right
     * after its commit, and this connection will hear it), or its chatd
     * died, which the watch finds out. */
    if (!v.ended)
        watches_add(r->app->watches, q->user_id, q->session_id, v.turn);
    outbox_resumed(r->app->outbox, r->conn_id, q->user_id, q->session_id, v.turn, frame, len,
                   v.frames, v.lens, v.n, v.last, !v.ended, 0);
}

/* A refill: a connection resuming turn `turn` saw a delta index jump (a
 * frame published while this chatd's subscriber was cut off from Redis)
 * and holds what came since; this reads what it missed from the stream. */
struct refill {
    struct pool_job job; /* first */
    struct app *app;
    uint64_t conn;
    char user[UUID_STR_LEN + 1], session[UUID_STR_LEN + 1], turn[UUID_STR_LEN + 1];
    long long after;
};

/* The refill's answer: frames (stolen; an end among them ends the
 * resume when !active). */
static void refill_answer(struct refill *f, char **frames, size_t *lens, size_t n, long long last,
                          int active)
{
    outbox_resumed(f->app->outbox, f->conn, f->user, f->session, f->turn, NULL, 0, frames, lens, n,
                   last, active, 1);
}

/* Only the turn's end (stolen): a refill that cannot give the frames. */
static void refill_end(struct refill *f, char *end, size_t len)
{
    char **frames = malloc(sizeof(*frames));
    size_t *lens = malloc(sizeof(*lens));
    if (end == NULL || frames == NULL || lens == NULL) {
        free(end);
        free(frames);
        free(lens);
        refill_answer(f, NULL, NULL, 0, f->after, 0);
        return;
    }
    frames[0] = end;
    lens[0] = len;
    refill_answer(f, frames, lens, 1, f->after, 0);
}

/* A refill that found nothing after f->after in the turn's stream asks
 * PostgreSQL whether the turn ended: 1 when it did and the resumer has
 * every delta (its end is the answer, given), 0 when it ended after deltas
 * the resumer lacks (lost), -1 while it runs or PostgreSQL cannot tell. */
static int refill_settled(struct worker *w, struct refill *f)
{
    char *end = NULL;
    size_t elen = 0;
    long long elast = -1;
    if (stream_settle(w, f->user, f->session, f->turn, &end, &elen, &elast) <= 0)
        return -1;
    if (elast > f->after) {
        free(end);
        return 0;
    }
    refill_end(f, end, elen);
    return 1;
}

static void refill_run(struct worker *w, struct pool_job *job)
{
    struct refill *f = (struct refill *)job;
    struct live_entry *e = NULL;
    size_t n = 0;
    struct stream_view v;
    memset(&v, 0, sizeof(v));
    int failed = stream_read(w, f->session, f->turn, &e, &n) != 0 ||
                 stream_view_take(e, n, f->after, &v) != 0;
    live_entries_free(e, n);
    int ended = -1;
    if (!failed && !v.gap && (!v.has_turn || strcmp(v.turn, f->turn) != 0)) {
        /* Its stream is gone (Redis flushed or restarted, or its
         * retention ran out): if it has ended, its end says how, with the
         * whole reply; running without its stream, its deltas are lost. */
        if ((ended = refill_settled(w, f)) != 1)
            v.gap = 1;
    } else if (!failed && !v.gap && v.n == 0 && !v.ended) {
        /* Nothing after `after`, and no end, in the turn's stream. A
         * running turn's next frames are still to come. But a resumer asks
         * for a refill holding a later frame: when that is the turn's end
         * (given by the watch from PostgreSQL, its chatd killed before its
         * publisher got the last deltas and the end to Redis), the deltas
         * in between will never come, and an answer of "nothing yet" made
         * the connection ask again at once, for ever (a resumer hung in
         * test_coherence's RandomizedLive). */
        if ((ended = refill_settled(w, f)) == 0)
            v.gap = 1;
    }
    if (ended == 1) { /* answered with the end */
        stream_view_free(&v);
        free(f);
        return;
    }
    if (failed || v.gap) {
        stream_view_free(&v);
        size_t elen = 0;
        char *end = proto_encode_error_code(
            PROTO_RESUME, PERR_LIVE_UNAVAILABLE, NULL,
            failed ? "Redis is unreachable; try again" : EVENTS_FRAMES_LOST, &elen);
        refill_end(f, end, elen);
        free(f);
        return;
    }
    refill_answer(f, v.frames, v.lens, v.n, v.last, !v.ended);
    free(f);
}

void events_refill(struct app *app, uint64_t conn, const char *user, const char *session,
                   const char *turn, long long after)
{
    struct refill *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return; /* the connection waits for the turn's end, which the watch gives */
    f->job.run = refill_run;
    f->app = app;
    f->conn = conn;
    snprintf(f->user, sizeof(f->user), "%s", user);
    snprintf(f->session, sizeof(f->session), "%s", session);
    snprintf(f->turn, sizeof(f->turn), "%s", turn);
    f->after = after;
    pool_submit(app->pool, &f->job);
}

/* Code 8 for a turn this connection does not run: it may run on another
 * connection or another chatd. The turn's lease is marked first, under
 * the lock its store takes (db_turn_stop): so "stopped" is answered only
 * when the turn will be stored as stopped, wherever it runs, and a stop
 * that comes after the store finds no turn (error 23). Then the chatd that
 * runs it hears the stop and cuts the agent's call short; its final reply
 * goes where the turn's frames go. */
void events_stop(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    if (!live_up(r->app->live)) {
        /* Its chatd would not hear it: the reply would run to its end. */
        reply_error(r, PERR_LIVE_UNAVAILABLE, "Redis is unreachable; try again");
        return;
    }
    char turn[UUID_STR_LEN + 1] = "";
    enum db_status st = db_turn_stop(&w->pg, q->user_id, q->session_id, turn);
    if (st != DB_OK) {
        /* Someone else's session, or no turn: the same answer. */
        reply_error(r, st == DB_ERROR ? PERR_INTERNAL : PERR_NO_TURN, NULL);
        return;
    }
    if (!slots_stop(r->app->slots, q->user_id, q->session_id, turn)) {
        char msg[128];
        int n = snprintf(msg, sizeof(msg), "S%s%s", q->session_id, turn);
        publish(r->app, q->user_id, msg, (size_t)n);
    }
    outbox_reply(r->app->outbox, r->conn_id, PROTO_STOP,
                 json_pack("{s:s, s:s, s:b}", "user_id", q->user_id, "session_id", q->session_id,
                           "stopped", 1));
}
