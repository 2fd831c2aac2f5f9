/* live.c - see live.h. */
#include "store/live.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "store/cache.h"

#define LIVE_CHANNEL_PATTERN "chatd:{u:*}:live"
#define LIVE_RETRY_MS 1000
#define LIVE_QUEUE_MAX 100000 /* commands; past it, new ones are dropped */

/* One queued command: its argv, each argument copied. */
struct live_cmd {
    struct live_cmd *next;
    int argc;
    char **argv;
    size_t *argl;
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

    pthread_t pub, sub;
    int pub_running, sub_running;
    int wake[2]; /* a byte here stops the subscriber */
};

static void cmd_free(struct live_cmd *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->argl);
    free(c);
}

/* Queues argv (argl lengths; 0 means strlen). Never blocks on Redis. */
static void enqueue(struct live *lv, int argc, const char *const *argv, const size_t *argl)
{
    struct live_cmd *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->argc = argc;
    c->argv = calloc((size_t)argc, sizeof(*c->argv));
    c->argl = calloc((size_t)argc, sizeof(*c->argl));
    if (c->argv == NULL || c->argl == NULL)
        goto fail;
    for (int i = 0; i < argc; i++) {
        size_t n = argl != NULL && argl[i] > 0 ? argl[i] : strlen(argv[i]);
        if ((c->argv[i] = util_memdup(argv[i], n)) == NULL)
            goto fail;
        c->argl[i] = n;
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
    if (lv->tail != NULL)
        lv->tail->next = c;
    else
        lv->head = c;
    lv->tail = c;
    lv->queued++;
    pthread_cond_signal(&lv->cv);
    pthread_mutex_unlock(&lv->mu);
    return;
fail:
    cmd_free(c);
}

void live_stream_key(char *out, size_t cap, const char *session_id)
{
    snprintf(out, cap, "chatd:{s:%s}:turn", session_id);
}

void live_publish(struct live *lv, const char *user_id, const char *msg, size_t len)
{
    char ch[80];
    snprintf(ch, sizeof(ch), "chatd:{u:%s}:live", user_id);
    const char *argv[3] = {"PUBLISH", ch, msg};
    size_t argl[3] = {0, 0, len};
    enqueue(lv, 3, argv, argl);
}

void live_stream_begin(struct live *lv, const char *session_id, const char *turn_id)
{
    char key[80];
    live_stream_key(key, sizeof(key), session_id);
    const char *del[2] = {"DEL", key};
    enqueue(lv, 2, del, NULL);
    const char *add[5] = {"XADD", key, "*", "turn", turn_id};
    enqueue(lv, 5, add, NULL);
    /* Until the end sets the retention: a chatd that dies mid-turn
     * leaves nothing behind for long. */
    const char *exp[3] = {"EXPIRE", key, "3600"};
    enqueue(lv, 3, exp, NULL);
}

void live_stream_add(struct live *lv, const char *session_id, const char *index,
                     const char *frame, size_t len)
{
    char key[80], max[16];
    live_stream_key(key, sizeof(key), session_id);
    snprintf(max, sizeof(max), "%d", LIVE_STREAM_MAXLEN);
    const char *argv[8] = {"XADD", key, "MAXLEN", "~", max, "*", index, frame};
    size_t argl[8] = {0, 0, 0, 0, 0, 0, 0, len};
    enqueue(lv, 8, argv, argl);
}

void live_stream_end(struct live *lv, const char *session_id, const char *frame, size_t len,
                     int retain_seconds)
{
    live_stream_add(lv, session_id, "end", frame, len);
    char key[80], secs[16];
    live_stream_key(key, sizeof(key), session_id);
    snprintf(secs, sizeof(secs), "%d", retain_seconds > 0 ? retain_seconds : 1);
    const char *exp[3] = {"EXPIRE", key, secs};
    enqueue(lv, 3, exp, NULL);
}

/* ------------------------------------------------------------ publisher */

static void *pub_main(void *arg)
{
    struct live *lv = arg;
    struct cache c;
    cache_open(&c, lv->cfg, NULL);
    for (;;) {
        pthread_mutex_lock(&lv->mu);
        while (lv->head == NULL && !atomic_load(&lv->stopping))
            pthread_cond_wait(&lv->cv, &lv->mu);
        struct live_cmd *batch = lv->head;
        lv->head = lv->tail = NULL;
        lv->queued = 0;
        pthread_mutex_unlock(&lv->mu);
        if (batch == NULL)
            break; /* stopping, and everything queued was sent */
        redisContext *rc = cache_conn(&c);
        int n = 0, failed = rc == NULL;
        for (struct live_cmd *m = batch; m != NULL && !failed; m = m->next, n++)
            if (redisAppendCommandArgv(rc, m->argc, (const char **)m->argv, m->argl) != REDIS_OK)
                failed = 1;
        for (int i = 0; i < n && !failed; i++) {
            redisReply *r = NULL;
            if (redisGetReply(rc, (void **)&r) != REDIS_OK)
                failed = 1;
            freeReplyObject(r);
        }
        if (failed && rc != NULL)
            cache_fail(&c, "live_publish");
        /* Lost while Redis is down: pub/sub is at most once (live.h). */
        while (batch != NULL) {
            struct live_cmd *next = batch->next;
            cmd_free(batch);
            batch = next;
        }
    }
    cache_close(&c);
    return NULL;
}

/* ----------------------------------------------------------- subscriber */

/* Waits for fd or the stop byte at most ms: 1 to stop, 2 when fd is
 * readable (or closed), 0 when the time ran out. */
static int wait_for(struct live *lv, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = lv->wake[0], .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    poll(p, fd >= 0 ? 2 : 1, ms);
    if ((p[0].revents & POLLIN) != 0)
        return 1;
    return fd >= 0 && p[1].revents != 0 ? 2 : 0;
}

/* A pmessage: [pmessage, pattern, channel, payload]. */
static void deliver(struct live *lv, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "pmessage") != 0)
        return;
    const redisReply *ch = r->element[2], *msg = r->element[3];
    /* chatd:{u:<uuid>}:live */
    static const char pre[] = "chatd:{u:";
    if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING ||
        ch->len != sizeof(pre) - 1 + UUID_STR_LEN + 6 || memcmp(ch->str, pre, sizeof(pre) - 1) != 0)
        return;
    char user[UUID_STR_LEN + 1];
    memcpy(user, ch->str + sizeof(pre) - 1, UUID_STR_LEN);
    user[UUID_STR_LEN] = '\0';
    if (!uuid_valid(user))
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
            if (wait_for(lv, -1, LIVE_RETRY_MS) == 1)
                break;
            continue;
        }
        atomic_store(&lv->up, 1);
        log_info("event=live_subscribed");
        for (;;) {
            int w = wait_for(lv, rc->fd, LIVE_RETRY_MS);
            if (w == 1)
                goto out;
            if (w == 0)
                continue; /* a quiet second */
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
    lv->wake[0] = lv->wake[1] = -1;
    pthread_mutex_init(&lv->mu, NULL);
    pthread_cond_init(&lv->cv, NULL);
    if (pipe(lv->wake) != 0)
        goto fail;
    if (pthread_create(&lv->pub, NULL, pub_main, lv) != 0)
        goto fail;
    lv->pub_running = 1;
    if (pthread_create(&lv->sub, NULL, sub_main, lv) != 0)
        goto fail;
    lv->sub_running = 1;
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
    if (lv->sub_running) {
        ssize_t w = write(lv->wake[1], "x", 1);
        (void)w;
        pthread_join(lv->sub, NULL);
    }
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
    if (lv->wake[0] >= 0) {
        close(lv->wake[0]);
        close(lv->wake[1]);
    }
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

int live_stream_read(struct cache *c, const char *session_id, struct live_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    redisContext *rc = cache_conn(c);
    if (rc == NULL)
        return -1;
    char key[80];
    live_stream_key(key, sizeof(key), session_id);
    redisReply *r = redisCommand(rc, "XRANGE %s - +", key);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        cache_fail(c, "xrange");
        return -1;
    }
    struct live_entry *e = calloc(r->elements > 0 ? r->elements : 1, sizeof(*e));
    size_t k = 0;
    for (size_t i = 0; e != NULL && i < r->elements; i++) {
        /* [id, [field, value]] */
        const redisReply *ent = r->element[i];
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
            ent->element[1]->type != REDIS_REPLY_ARRAY || ent->element[1]->elements != 2)
            continue;
        const redisReply *f = ent->element[1]->element[0], *v = ent->element[1]->element[1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            f->len >= sizeof(e[k].index))
            continue;
        memcpy(e[k].index, f->str, f->len);
        e[k].index[f->len] = '\0';
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
