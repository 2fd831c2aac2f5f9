/* live.c - see live.h.
 *
 * Longer than most files on purpose: the publisher thread, its resend
 * queue and the subscriber thread share one Redis connection state and one
 * set of channels, and the turn streams' key and id rules are written
 * once, next to the code that writes them; the parts are marked. */
#include "store/live.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/bg.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "store/cache.h"

#define LIVE_CHANNEL_PATTERN "chatd:{u:*}:live"
#define LIVE_RETRY_MS 1000
#define LIVE_QUEUE_MAX 100000 /* commands; past it, new ones are dropped */
#define LIVE_RESEND_MS 200    /* how often unsent commands are tried again */
/* The publisher lets a batch gather this long after its first command (or
 * until LIVE_BATCH_FULL are queued) before it writes: Redis's cost is per
 * read and write far more than per command (a PUBLISH runs in 0.1 us and
 * an XADD in 0.5 us of the 3-4 us each cost when they came in batches of
 * two or three), and a resumer or a subscribed tab does not see 1 ms. */
#define LIVE_LINGER_US 1000
#define LIVE_BATCH_FULL 256

/* One queued command, already in Redis's wire form: formatting it here,
 * on the caller's thread, is one allocation where copying each argument
 * was one per argument, and the publisher then only writes bytes. */
struct live_cmd {
    struct live_cmd *next;
    char *cmd; /* from redisFormatCommandArgv */
    long long len;
};

#define LIVE_WATCH_BUCKETS 1024
#define LIVE_WATCH_LINGER_S 10

struct live_watch {
    struct live_watch *next;
    char session[UUID_STR_LEN + 1];
    int refs;          /* connections here that resume the session */
    int sent;          /* SUBSCRIBE written on the current connection */
    int confirmed;     /* ... and Redis answered it */
    time_t idle_since; /* refs went to 0 */
};

struct live {
    const struct config *cfg;
    live_msg_fn on_message;
    void *arg;
    atomic_int stopping;
    atomic_int up;

    pthread_mutex_t mu; /* the queue */
    pthread_cond_t cv;
    struct live_cmd *head, *tail;
    size_t queued;
    time_t dropped_logged;

    pthread_t pub;
    int pub_running;
    struct bg sub; /* the subscriber, woken to stop or to (un)subscribe */

    /* The sessions whose turn channel the subscriber listens to: those a
     * connection here resumes (live_watch), and for LIVE_WATCH_LINGER_S
     * after the last one stops, so that a reconnecting page does not make
     * it unsubscribe and subscribe again. */
    pthread_mutex_t wmu;
    pthread_cond_t wcv; /* a subscription was confirmed */
    struct live_watch *watch[LIVE_WATCH_BUCKETS];
    int watch_dirty; /* an entry needs a SUBSCRIBE or may be done with */
    int watch_idle;  /* entries with no watcher left, lingering */
    time_t watch_swept;
};

static void cmd_free(struct live_cmd *c)
{
    if (c == NULL)
        return;
    redisFreeCommand(c->cmd);
    free(c);
}

/* Queues argv (argl lengths; 0 means strlen). Never blocks on Redis. */
static void enqueue(struct live *lv, int argc, const char *const *argv, const size_t *argl)
{
    size_t lens[8];
    if (argc > (int)(sizeof(lens) / sizeof(lens[0])))
        return;
    for (int i = 0; i < argc; i++)
        lens[i] = argl != NULL && argl[i] > 0 ? argl[i] : strlen(argv[i]);
    struct live_cmd *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    if ((c->len = redisFormatCommandArgv(&c->cmd, argc, (const char **)argv, lens)) < 0) {
        c->cmd = NULL;
        goto fail;
    }
    pthread_mutex_lock(&lv->mu);
    if (lv->queued >= LIVE_QUEUE_MAX) {
        time_t now = time(NULL);
        if (now != lv->dropped_logged)
            log_warn("event=live_queue_full dropped=1");
        lv->dropped_logged = now;
        pthread_mutex_unlock(&lv->mu);
        goto fail;
    }
    QUEUE_APPEND(lv->head, lv->tail, c, next);
    /* The publisher waits for the first command, or lingers until a batch
     * is full: any other signal would only wake it for nothing. */
    if (++lv->queued == 1 || lv->queued == LIVE_BATCH_FULL)
        pthread_cond_signal(&lv->cv);
    pthread_mutex_unlock(&lv->mu);
    return;
fail:
    cmd_free(c);
}

/* The session's latest turn: its id; and each turn's own stream. One
 * stream per turn, so that a turn whose chatd stalled and wakes up after
 * the next turn began writes into its own stream, never into that one's. */
static void pointer_key(char *out, size_t cap, const char *session_id)
{
    snprintf(out, cap, "chatd:{s:%s}:turn", session_id);
}

static void stream_key(char *out, size_t cap, const char *session_id, const char *turn_id)
{
    snprintf(out, cap, "chatd:{s:%s}:turn:%s", session_id, turn_id);
}

/* Both kinds of channel are "chatd:{<kind>:<uuid>}:live": a user's ('u',
 * LIVE_CHANNEL_PATTERN) and a session's turn channel ('s'). */
#define LIVE_USER 'u'
#define LIVE_TURN 's'

static void channel_name(char *out, size_t cap, char kind, const char *id)
{
    snprintf(out, cap, "chatd:{%c:%s}:live", kind, id);
}

/* The uuid in ch, a channel of that kind, into out; -1 if it is not one. */
static int channel_id(const redisReply *ch, char kind, char out[UUID_STR_LEN + 1])
{
    static const char post[] = "}:live";
    char pre[16];
    size_t n = (size_t)snprintf(pre, sizeof(pre), "chatd:{%c:", kind);
    if (ch->type != REDIS_REPLY_STRING || ch->len != n + UUID_STR_LEN + sizeof(post) - 1 ||
        memcmp(ch->str, pre, n) != 0)
        return -1;
    memcpy(out, ch->str + n, UUID_STR_LEN);
    out[UUID_STR_LEN] = '\0';
    return uuid_valid(out) ? 0 : -1;
}

void live_publish(struct live *lv, const char *user_id, const char *msg, size_t len)
{
    char ch[80];
    channel_name(ch, sizeof(ch), LIVE_USER, user_id);
    const char *argv[3] = {"PUBLISH", ch, msg};
    size_t argl[3] = {0, 0, len};
    enqueue(lv, 3, argv, argl);
}

void live_publish_turn(struct live *lv, const char *session_id, const char *msg, size_t len)
{
    char ch[80];
    channel_name(ch, sizeof(ch), LIVE_TURN, session_id);
    const char *argv[3] = {"PUBLISH", ch, msg};
    size_t argl[3] = {0, 0, len};
    enqueue(lv, 3, argv, argl);
}

/* A turn stream's entries carry ids chatd chooses, not Redis's clock:
 * "0-1" names the turn, "1-<i>" is delta i, "2-<last + 1>" the end after
 * delta last. So the ids say which frames the stream holds (a gap shows),
 * and an XADD sent again after a lost connection is refused as "equal or
 * smaller" instead of stored twice: the publisher may resend. */
void live_stream_begin(struct live *lv, const char *session_id, const char *turn_id)
{
    char ptr[80], key[128];
    pointer_key(ptr, sizeof(ptr), session_id);
    stream_key(key, sizeof(key), session_id, turn_id);
    /* Until the end sets the retention: a chatd that dies mid-turn
     * leaves nothing behind for long. */
    const char *set[5] = {"SET", ptr, turn_id, "EX", "3600"};
    enqueue(lv, 5, set, NULL);
    const char *add[5] = {"XADD", key, "0-1", "turn", turn_id};
    enqueue(lv, 5, add, NULL);
    const char *exp[3] = {"EXPIRE", key, "3600"};
    enqueue(lv, 3, exp, NULL);
}

void live_stream_add(struct live *lv, const char *session_id, const char *turn_id, long long index,
                     const char *frame, size_t len)
{
    char key[128], max[16], id[32], idx[24];
    stream_key(key, sizeof(key), session_id, turn_id);
    snprintf(max, sizeof(max), "%d", LIVE_STREAM_MAXLEN);
    snprintf(id, sizeof(id), "1-%lld", index);
    snprintf(idx, sizeof(idx), "%lld", index);
    const char *argv[8] = {"XADD", key, "MAXLEN", "~", max, id, idx, frame};
    size_t argl[8] = {0, 0, 0, 0, 0, 0, 0, len};
    enqueue(lv, 8, argv, argl);
}

void live_stream_end(struct live *lv, const char *session_id, const char *turn_id,
                     long long last_index, const char *frame, size_t len, int retain_seconds)
{
    char key[128], id[32], secs[16];
    stream_key(key, sizeof(key), session_id, turn_id);
    snprintf(id, sizeof(id), "2-%lld", last_index + 1);
    const char *argv[5] = {"XADD", key, id, "end", frame};
    size_t argl[5] = {0, 0, 0, 0, len};
    enqueue(lv, 5, argv, argl);
    snprintf(secs, sizeof(secs), "%d", retain_seconds > 0 ? retain_seconds : 1);
    const char *exp[3] = {"EXPIRE", key, secs};
    enqueue(lv, 3, exp, NULL);
}

/* ------------------------------------------------------------ publisher */

static void cmds_free(struct live_cmd *c)
{
    while (c != NULL) {
        struct live_cmd *next = c->next;
        cmd_free(c);
        c = next;
    }
}

/* Sends batch, pipelined; returns the commands whose reply did not come
 * (NULL when all did): the connection failed or stalled, and Redis may or
 * may not have run them. The others are freed. */
static struct live_cmd *pub_send(struct cache *c, struct live_cmd *batch)
{
    redisContext *rc = cache_conn(c);
    if (rc == NULL)
        return batch;
    int n = 0, failed = 0;
    for (struct live_cmd *m = batch; m != NULL && !failed; m = m->next, n++)
        if (redisAppendFormattedCommand(rc, m->cmd, (size_t)m->len) != REDIS_OK)
            failed = 1;
    for (int i = 0; i < n && !failed; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) != REDIS_OK) {
            failed = 1;
            break;
        }
        if (r != NULL && cache_demoted(r)) {
            /* A replica now (a failover): sent again to the new master. */
            freeReplyObject(r);
            failed = 1;
            break;
        }
        /* An error reply (an XADD sent again, now "equal or smaller") is
         * Redis's answer to that command: it is done with. */
        freeReplyObject(r);
        struct live_cmd *done = batch;
        batch = batch->next;
        cmd_free(done);
    }
    if (failed)
        cache_fail(c, "live_publish");
    return batch;
}

/* The last command of list c (NULL for none), and their count in *n. */
static struct live_cmd *cmds_last(struct live_cmd *c, size_t *n)
{
    *n = 0;
    struct live_cmd *last = NULL;
    for (; c != NULL; c = c->next, (*n)++)
        last = c;
    return last;
}

/* *until = now + us, as pthread_cond_timedwait takes it. */
static void deadline_in(struct timespec *until, long us)
{
    clock_gettime(CLOCK_REALTIME, until);
    until->tv_sec += us / 1000000L;
    until->tv_nsec += (us % 1000000L) * 1000L;
    if (until->tv_nsec >= 1000000000L) {
        until->tv_sec++;
        until->tv_nsec -= 1000000000L;
    }
}

/* Publisher thread. What could not be sent is sent again, in order, once
 * Redis answers again, before anything queued after it: a turn stream
 * keeps every frame (the ids make a resend harmless, see
 * live_stream_begin), and a PUBLISH sent twice reaches a resumer that
 * skips the index it has. After a failure it waits LIVE_RESEND_MS, however
 * much is queued meanwhile, so a Redis that is down costs no spinning.
 * Only past LIVE_QUEUE_MAX unsent commands, or at shutdown, is anything
 * dropped: a resumer then finds the gap by the ids and is told (error
 * 30). */
static void *pub_main(void *arg)
{
    struct live *lv = arg;
    struct cache c;
    cache_open(&c, lv->cfg, NULL);
    struct live_cmd *unsent = NULL, *unsent_last = NULL;
    size_t n_unsent = 0;
    for (;;) {
        pthread_mutex_lock(&lv->mu);
        if (unsent != NULL) {
            struct timespec until;
            deadline_in(&until, LIVE_RESEND_MS * 1000L);
            while (!atomic_load(&lv->stopping) &&
                   pthread_cond_timedwait(&lv->cv, &lv->mu, &until) == 0)
                ; /* more was queued: it waits behind the unsent anyway */
        }
        while (unsent == NULL && lv->head == NULL && !atomic_load(&lv->stopping))
            pthread_cond_wait(&lv->cv, &lv->mu);
        if (unsent == NULL && lv->queued < LIVE_BATCH_FULL && !atomic_load(&lv->stopping)) {
            struct timespec until;
            deadline_in(&until, LIVE_LINGER_US);
            while (lv->queued < LIVE_BATCH_FULL && !atomic_load(&lv->stopping) &&
                   pthread_cond_timedwait(&lv->cv, &lv->mu, &until) == 0)
                ;
        }
        struct live_cmd *queued = lv->head, *queued_last = lv->tail;
        size_t n_queued = lv->queued;
        lv->head = lv->tail = NULL;
        lv->queued = 0;
        int stopping = atomic_load(&lv->stopping);
        pthread_mutex_unlock(&lv->mu);
        if (unsent != NULL) { /* the unsent first, then what came since */
            unsent_last->next = queued;
            if (queued != NULL)
                unsent_last = queued_last;
        } else {
            unsent = queued;
            unsent_last = queued_last;
        }
        n_unsent += n_queued;
        if (unsent == NULL)
            break; /* stopping, and everything queued was sent */
        unsent = pub_send(&c, unsent);
        unsent_last = cmds_last(unsent, &n_unsent);
        if (unsent != NULL && (stopping || n_unsent > LIVE_QUEUE_MAX)) {
            log_warn("event=live_dropped commands=%zu reason=\"%s\"", n_unsent,
                     stopping ? "shutdown" : "Redis unreachable too long");
            cmds_free(unsent);
            unsent = unsent_last = NULL;
            n_unsent = 0;
            if (stopping)
                break;
        }
    }
    cmds_free(unsent);
    cache_close(&c);
    return NULL;
}

/* Waits for fd or the wake pipe at most ms: 2 when fd is readable (or
 * closed), 1 when only woken (the pipe is emptied), 0 when the time ran
 * out. */
static void wake_subscriber(struct live *lv) { bg_wake(&lv->sub); }

/* --------------------------------------------------------------- watches */

static struct live_watch **watch_find(struct live *lv, const char *session)
{
    struct live_watch **pp = &lv->watch[util_hash(session) % LIVE_WATCH_BUCKETS];
    while (*pp != NULL && strcmp((*pp)->session, session) != 0)
        pp = &(*pp)->next;
    return pp;
}

void live_watch(struct live *lv, const char *session_id)
{
    if (lv == NULL || !uuid_valid(session_id))
        return;
    pthread_mutex_lock(&lv->wmu);
    struct live_watch **pp = watch_find(lv, session_id);
    struct live_watch *e = *pp;
    int wake = 0;
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        snprintf(e->session, sizeof(e->session), "%s", session_id);
        *pp = e;
        lv->watch_dirty = wake = 1;
    }
    if (e != NULL && e->refs++ == 0 && e->idle_since != 0) {
        e->idle_since = 0;
        lv->watch_idle--;
    }
    pthread_mutex_unlock(&lv->wmu);
    if (wake)
        wake_subscriber(lv);
}

void live_unwatch(struct live *lv, const char *session_id)
{
    if (lv == NULL)
        return;
    pthread_mutex_lock(&lv->wmu);
    struct live_watch *e = *watch_find(lv, session_id);
    if (e != NULL && e->refs > 0 && --e->refs == 0) {
        e->idle_since = time(NULL);
        lv->watch_idle++;
    }
    pthread_mutex_unlock(&lv->wmu);
}

int live_watch_wait(struct live *lv, const char *session_id, int timeout_ms)
{
    if (lv == NULL)
        return -1;
    struct timespec until;
    deadline_in(&until, timeout_ms * 1000L);
    pthread_mutex_lock(&lv->wmu);
    struct live_watch *e;
    while ((e = *watch_find(lv, session_id)) != NULL && !e->confirmed)
        if (pthread_cond_timedwait(&lv->wcv, &lv->wmu, &until) != 0)
            break;
    int ok = e != NULL && e->confirmed;
    pthread_mutex_unlock(&lv->wmu);
    return ok ? 0 : -1;
}

/* Subscriber thread: SUBSCRIBE what is new, UNSUBSCRIBE what lingered
 * long enough, then write it all. -1 when the connection failed. */
static int watch_sync(struct live *lv, redisContext *rc)
{
    time_t now = time(NULL);
    int wrote = 0;
    pthread_mutex_lock(&lv->wmu);
    if (!lv->watch_dirty && (lv->watch_idle == 0 || now == lv->watch_swept)) {
        pthread_mutex_unlock(&lv->wmu);
        return 0;
    }
    lv->watch_dirty = 0;
    lv->watch_swept = now;
    for (int b = 0; b < LIVE_WATCH_BUCKETS; b++) {
        struct live_watch **pp = &lv->watch[b];
        while (*pp != NULL) {
            struct live_watch *e = *pp;
            char ch[80];
            channel_name(ch, sizeof(ch), LIVE_TURN, e->session);
            if (e->refs == 0 && now - e->idle_since >= LIVE_WATCH_LINGER_S) {
                if (e->sent && redisAppendCommand(rc, "UNSUBSCRIBE %s", ch) == REDIS_OK)
                    wrote = 1;
                *pp = e->next;
                lv->watch_idle--;
                free(e);
                continue;
            }
            if (!e->sent && redisAppendCommand(rc, "SUBSCRIBE %s", ch) == REDIS_OK)
                e->sent = wrote = 1;
            pp = &e->next;
        }
    }
    pthread_mutex_unlock(&lv->wmu);
    int done = !wrote;
    while (!done)
        if (redisBufferWrite(rc, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* The connection is gone: every watch must be subscribed again on the
 * next one, and is not listening until then. */
static void watch_reset(struct live *lv)
{
    pthread_mutex_lock(&lv->wmu);
    for (int b = 0; b < LIVE_WATCH_BUCKETS; b++)
        for (struct live_watch *e = lv->watch[b]; e != NULL; e = e->next)
            e->sent = e->confirmed = 0;
    lv->watch_dirty = 1;
    pthread_mutex_unlock(&lv->wmu);
}

static void watch_confirmed(struct live *lv, const redisReply *ch)
{
    char session[UUID_STR_LEN + 1];
    if (channel_id(ch, LIVE_TURN, session) != 0)
        return;
    pthread_mutex_lock(&lv->wmu);
    struct live_watch *e = *watch_find(lv, session);
    if (e != NULL && e->sent) {
        e->confirmed = 1;
        pthread_cond_broadcast(&lv->wcv);
    }
    pthread_mutex_unlock(&lv->wmu);
}

/* ----------------------------------------------------------- subscriber */

static int reply_is(const redisReply *r, size_t n, const char *kind)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements == n &&
           r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, kind) == 0;
}

/* A user's channel: [pmessage, pattern, channel, payload]. A turn's:
 * [message, channel, payload], the payload led by the user's id. And the
 * answers to SUBSCRIBE, which a resume waits for. */
static void deliver(struct live *lv, redisReply *r)
{
    if (reply_is(r, 3, "subscribe")) {
        watch_confirmed(lv, r->element[1]);
        return;
    }
    if (reply_is(r, 3, "message")) {
        char session[UUID_STR_LEN + 1], user[UUID_STR_LEN + 1];
        const redisReply *msg = r->element[2];
        if (channel_id(r->element[1], LIVE_TURN, session) != 0 || msg->type != REDIS_REPLY_STRING ||
            msg->len <= UUID_STR_LEN)
            return;
        memcpy(user, msg->str, UUID_STR_LEN);
        user[UUID_STR_LEN] = '\0';
        if (uuid_valid(user))
            lv->on_message(lv->arg, user, msg->str + UUID_STR_LEN, msg->len - UUID_STR_LEN);
        return;
    }
    if (!reply_is(r, 4, "pmessage"))
        return;
    const redisReply *msg = r->element[3];
    char user[UUID_STR_LEN + 1];
    if (channel_id(r->element[2], LIVE_USER, user) != 0 || msg->type != REDIS_REPLY_STRING)
        return;
    lv->on_message(lv->arg, user, msg->str, msg->len);
}

static void *sub_main(void *arg)
{
    struct live *lv = arg;
    struct cache c;
    cache_open(&c, lv->cfg, NULL);
    while (!atomic_load(&lv->stopping)) {
        redisContext *rc = cache_conn(&c);
        redisReply *r = rc != NULL ? redisCommand(rc, "PSUBSCRIBE %s", LIVE_CHANNEL_PATTERN) : NULL;
        int ok = r != NULL && r->type == REDIS_REPLY_ARRAY;
        freeReplyObject(r);
        if (!ok) {
            if (rc != NULL)
                cache_fail(&c, "live_subscribe");
            bg_wait(&lv->sub, -1, LIVE_RETRY_MS);
            continue;
        }
        atomic_store(&lv->up, 1);
        log_info("event=live_subscribed");
        for (;;) {
            if (watch_sync(lv, rc) != 0)
                break;
            enum bg_wait w = bg_wait(&lv->sub, rc->fd, LIVE_RETRY_MS);
            if (atomic_load(&lv->stopping))
                goto out;
            if (w != BG_READY)
                continue; /* woken to (un)subscribe, or a quiet second */
            if (redisBufferRead(rc) != REDIS_OK)
                break;
            void *reply = NULL;
            int got;
            while ((got = redisGetReplyFromReader(rc, &reply)) == REDIS_OK && reply != NULL) {
                deliver(lv, reply);
                freeReplyObject(reply);
                reply = NULL;
            }
            if (got != REDIS_OK)
                break;
        }
        atomic_store(&lv->up, 0);
        watch_reset(lv);
        cache_fail(&c, "live_subscriber");
    }
out:
    atomic_store(&lv->up, 0);
    cache_close(&c);
    return NULL;
}

/* ---------------------------------------------------------------- life */

int live_up(const struct live *lv) { return lv != NULL && atomic_load(&lv->up); }

struct live *live_start(const struct config *cfg, live_msg_fn on_message, void *arg)
{
    struct live *lv = calloc(1, sizeof(*lv));
    if (lv == NULL)
        return NULL;
    lv->cfg = cfg;
    lv->on_message = on_message;
    lv->arg = arg;
    lv->sub.wake[0] = lv->sub.wake[1] = -1;
    pthread_mutex_init(&lv->mu, NULL);
    pthread_cond_init(&lv->cv, NULL);
    pthread_mutex_init(&lv->wmu, NULL);
    pthread_cond_init(&lv->wcv, NULL);
    if (pthread_create(&lv->pub, NULL, pub_main, lv) != 0)
        goto fail;
    lv->pub_running = 1;
    if (bg_start(&lv->sub, sub_main, lv) != 0)
        goto fail;
    return lv;
fail:
    log_error("event=live_start_failed error=\"%s\"", strerror(errno));
    live_stop(lv);
    return NULL;
}

void live_stop(struct live *lv)
{
    if (lv == NULL)
        return;
    atomic_store(&lv->stopping, 1);
    bg_stop(&lv->sub);
    if (lv->pub_running) {
        pthread_mutex_lock(&lv->mu);
        pthread_cond_broadcast(&lv->cv);
        pthread_mutex_unlock(&lv->mu);
        pthread_join(lv->pub, NULL);
    }
    while (lv->head != NULL) {
        struct live_cmd *n = lv->head->next;
        cmd_free(lv->head);
        lv->head = n;
    }
    for (int b = 0; b < LIVE_WATCH_BUCKETS; b++)
        while (lv->watch[b] != NULL) {
            struct live_watch *n = lv->watch[b]->next;
            free(lv->watch[b]);
            lv->watch[b] = n;
        }
    pthread_cond_destroy(&lv->wcv);
    pthread_mutex_destroy(&lv->wmu);
    pthread_cond_destroy(&lv->cv);
    pthread_mutex_destroy(&lv->mu);
    free(lv);
}

/* --------------------------------------------------------------- reader */

void live_entries_free(struct live_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].frame);
    free(e);
}

/* An entry's id, of the form live_stream_begin describes: its kind and
 * number, or -1 for one of another form. */
static int entry_id(const redisReply *id, char *kind, long long *num)
{
    if (id->type != REDIS_REPLY_STRING || id->len < 3 || id->len > 24 || id->str[1] != '-')
        return -1;
    char buf[32], *end;
    memcpy(buf, id->str + 2, id->len - 2);
    buf[id->len - 2] = '\0';
    long long v = strtoll(buf, &end, 10);
    if (*end != '\0' || v < 0)
        return -1;
    switch (id->str[0]) {
    case '0':
        *kind = LIVE_ENTRY_TURN;
        break;
    case '1':
        *kind = LIVE_ENTRY_DELTA;
        break;
    case '2':
        *kind = LIVE_ENTRY_END;
        v -= 1; /* the last delta's index */
        break;
    default:
        return -1;
    }
    *num = v;
    return 0;
}

/* The stream of the session's latest turn, in one round trip (the keys
 * share the session's hash tag). */
static const char latest_script[] = "local t = redis.call('GET', KEYS[1]) "
                                    "if not t then return {} end "
                                    "return redis.call('XRANGE', KEYS[1] .. ':' .. t, '-', '+')";

int live_stream_read(struct cache *c, const char *session_id, const char *turn_id,
                     struct live_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char key[128];
    redisReply *r;
    if (turn_id != NULL) {
        stream_key(key, sizeof(key), session_id, turn_id);
        r = cache_command(c, "xrange", "XRANGE %s - +", key);
    } else {
        pointer_key(key, sizeof(key), session_id);
        r = cache_command(c, "xrange", "EVAL %s 1 %s", latest_script, key);
    }
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return -1; /* a key of another type: not ours */
    }
    struct live_entry *e = calloc(r->elements > 0 ? r->elements : 1, sizeof(*e));
    size_t k = 0;
    for (size_t i = 0; e != NULL && i < r->elements; i++) {
        /* [id, [field, value]] */
        const redisReply *ent = r->element[i];
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
            ent->element[1]->type != REDIS_REPLY_ARRAY || ent->element[1]->elements != 2 ||
            entry_id(ent->element[0], &e[k].kind, &e[k].index) != 0)
            continue;
        const redisReply *v = ent->element[1]->element[1];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        if ((e[k].frame = util_memdup(v->str, v->len)) == NULL)
            break;
        e[k].len = v->len;
        k++;
    }
    freeReplyObject(r);
    if (e == NULL)
        return -1;
    *out = e;
    *n = k;
    return 0;
}
