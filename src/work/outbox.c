/* outbox.c - see outbox.h. One mutex-protected list: posts are small and
 * the service thread takes them all at once. */
#include "work/outbox.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/log.h"
#include "lib/queue.h"
#include "wire/proto.h"

struct outbox {
    pthread_mutex_t mu; /* guards the list and wake */
    struct outbox_post *head, *tail;
    void (*wake)(void *arg);
    void *arg;
};

struct outbox *outbox_create(void)
{
    struct outbox *ob = calloc(1, sizeof(*ob));
    if (ob == NULL)
        return NULL;
    pthread_mutex_init(&ob->mu, NULL);
    return ob;
}

void outbox_post_free(struct outbox_post *p)
{
    if (p == NULL)
        return;
    free(p->frame);
    if (p->held != NULL)
        p->release(p->held);
    for (size_t i = 0; i < p->nframes; i++)
        free(p->frames[i]);
    free(p->frames);
    free(p->lens);
    free(p);
}

void outbox_destroy(struct outbox *ob)
{
    if (ob == NULL)
        return;
    struct outbox_post *p = outbox_take(ob);
    while (p != NULL) {
        struct outbox_post *next = p->next;
        outbox_post_free(p);
        p = next;
    }
    pthread_mutex_destroy(&ob->mu);
    free(ob);
}

void outbox_set_wake(struct outbox *ob, void (*wake)(void *arg), void *arg)
{
    pthread_mutex_lock(&ob->mu);
    ob->wake = wake;
    ob->arg = arg;
    pthread_mutex_unlock(&ob->mu);
}

struct outbox_post *outbox_take(struct outbox *ob)
{
    pthread_mutex_lock(&ob->mu);
    struct outbox_post *p = ob->head;
    ob->head = ob->tail = NULL;
    pthread_mutex_unlock(&ob->mu);
    return p;
}

/* A post for kind and id, filled by the caller before enqueue(). NULL when
 * out of memory, after logging and freeing frame. */
static struct outbox_post *post_new(enum outbox_kind kind, uint64_t id, char *frame, size_t len)
{
    struct outbox_post *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        /* The connection will miss this frame; say so. */
        log_error("event=post_oom id=%llu", (unsigned long long)id);
        free(frame);
        return NULL;
    }
    p->kind = kind;
    p->id = id;
    p->frame = frame;
    p->len = len;
    return p;
}

static void enqueue(struct outbox *ob, struct outbox_post *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&ob->mu);
    /* Only the post that makes the list non-empty wakes the service thread:
     * until it takes the list (all of it, in outbox_take) a wake is
     * already on its way. At thousands of streamed deltas a second this
     * saves a write to lws's wake pipe, and a wake-up, per post. */
    int first = ob->head == NULL;
    QUEUE_APPEND(ob->head, ob->tail, p, next);
    if (first && ob->wake != NULL)
        ob->wake(ob->arg);
    pthread_mutex_unlock(&ob->mu);
}

static void post_reply_frame(struct outbox *ob, uint64_t conn, char *frame, size_t len, int failed)
{
    struct outbox_post *p = post_new(OUTBOX_REPLY, conn, frame, len);
    if (p != NULL)
        p->failed = failed;
    enqueue(ob, p);
}

void outbox_reply(struct outbox *ob, uint64_t conn, int type, json_t *data)
{
    size_t len = 0;
    char *frame = data != NULL ? proto_encode_reply(type, data, &len) : NULL;
    int failed = frame == NULL;
    if (failed)
        frame = proto_encode_error_code(type, PERR_JSON_MARSHAL, NULL, NULL, &len);
    post_reply_frame(ob, conn, frame, len, failed);
}

void outbox_reply_text(struct outbox *ob, uint64_t conn, int type, const char *data_json)
{
    size_t len = 0;
    char *frame = data_json != NULL ? proto_encode_reply_text(type, data_json, &len) : NULL;
    int failed = frame == NULL;
    if (failed)
        frame = proto_encode_error_code(type, PERR_JSON_MARSHAL, NULL, NULL, &len);
    post_reply_frame(ob, conn, frame, len, failed);
}

void outbox_reply_error(struct outbox *ob, uint64_t conn, int type, int code, const char *text)
{
    size_t len = 0;
    char *frame = proto_encode_error_code(type, code, text, NULL, &len);
    post_reply_frame(ob, conn, frame, len, 1);
}

static void post_held(struct outbox *ob, enum outbox_kind kind, uint64_t conn, void *held,
                      outbox_release_fn release)
{
    struct outbox_post *p = post_new(kind, conn, NULL, 0);
    if (p == NULL) {
        release(held);
        return;
    }
    p->held = held;
    p->release = release;
    enqueue(ob, p);
}

void outbox_detach(struct outbox *ob, uint64_t conn, void *turn, outbox_release_fn release)
{
    post_held(ob, OUTBOX_DETACH, conn, turn, release);
}

void outbox_turn_done(struct outbox *ob, uint64_t conn, void *turn, outbox_release_fn release)
{
    post_held(ob, OUTBOX_TURN_DONE, conn, turn, release);
}

void outbox_push(struct outbox *ob, uint64_t conn, char *frame, size_t len)
{
    if (frame != NULL)
        enqueue(ob, post_new(OUTBOX_PUSH, conn, frame, len));
}

void outbox_http(struct outbox *ob, uint64_t txn, enum outbox_outcome outcome, char *body,
                 size_t len)
{
    struct outbox_post *p = post_new(OUTBOX_HTTP, txn, body, len);
    if (p != NULL)
        p->outcome = outcome;
    enqueue(ob, p);
}

void outbox_export(struct outbox *ob, uint64_t txn, enum outbox_outcome outcome, char *piece,
                   size_t len, int last, void *job, outbox_release_fn release)
{
    struct outbox_post *p = post_new(OUTBOX_EXPORT, txn, piece, len);
    if (p == NULL) { /* the transaction times out */
        release(job);
        return;
    }
    p->outcome = outcome;
    p->last = last;
    p->held = job;
    p->release = release;
    enqueue(ob, p);
}

void outbox_live(struct outbox *ob, const char *user, char tag, const char *session,
                 const char *turn, long long index, char *frame, size_t len)
{
    struct outbox_post *p = post_new(OUTBOX_LIVE, 0, frame, len);
    if (p == NULL)
        return;
    snprintf(p->user, sizeof(p->user), "%s", user);
    snprintf(p->session, sizeof(p->session), "%s", session != NULL ? session : "");
    snprintf(p->turn_id, sizeof(p->turn_id), "%s", turn != NULL ? turn : "");
    p->tag = tag;
    p->index = index;
    enqueue(ob, p);
}

void outbox_subscribed(struct outbox *ob, uint64_t conn, const char *user, int ok, char *frame,
                       size_t len)
{
    struct outbox_post *p = post_new(OUTBOX_SUBSCRIBE, conn, frame, len);
    if (p == NULL)
        return;
    snprintf(p->user, sizeof(p->user), "%s", user);
    p->failed = !ok;
    enqueue(ob, p);
}

void outbox_resumed(struct outbox *ob, uint64_t conn, const char *user, const char *session,
                    const char *turn, char *frame, size_t len, char **frames, size_t *lens,
                    size_t n, long long last_index, int active, int refill)
{
    struct outbox_post *p = post_new(OUTBOX_RESUME, conn, frame, len);
    if (p == NULL) {
        for (size_t i = 0; i < n; i++)
            free(frames[i]);
        free(frames);
        free(lens);
        return;
    }
    snprintf(p->user, sizeof(p->user), "%s", user);
    snprintf(p->session, sizeof(p->session), "%s", session);
    snprintf(p->turn_id, sizeof(p->turn_id), "%s", turn != NULL ? turn : "");
    p->frames = frames;
    p->lens = lens;
    p->nframes = n;
    p->index = last_index;
    p->last = !active;
    p->refill = refill;
    p->failed = !refill && frame == NULL;
    enqueue(ob, p);
}
