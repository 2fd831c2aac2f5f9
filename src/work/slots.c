/* slots.c - per-session turn order and parking (see slots.h). */
#include "work/slots.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/queue.h"
#include "lib/util.h"
#include "lib/uuid.h"

#define SLOTS_BUCKETS 1024

/* A session with a turn running, and the turns waiting behind it. */
struct slot {
    struct slot *next;
    char session_id[UUID_STR_LEN + 1];
    struct slot_turn *owner; /* the turn running now; NULL: out of memory (see acquire) */
    struct slot_turn *wait_head, *wait_tail;
};

struct slots {
    pthread_mutex_t mu; /* guards buckets */
    struct slot *buckets[SLOTS_BUCKETS];
    pthread_mutex_t park_mu; /* guards parked */
    struct slot_turn *parked;
};

struct slots *slots_create(void)
{
    struct slots *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->park_mu, NULL);
    return s;
}

void slots_destroy(struct slots *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < SLOTS_BUCKETS; i++)
        while (s->buckets[i] != NULL) {
            struct slot *n = s->buckets[i]->next;
            free(s->buckets[i]);
            s->buckets[i] = n;
        }
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->park_mu);
    free(s);
}

static struct slot **find(struct slots *s, const char *session_id)
{
    struct slot **pp = &s->buckets[util_hash(session_id) % SLOTS_BUCKETS];
    while (*pp != NULL && strcmp((*pp)->session_id, session_id) != 0)
        pp = &(*pp)->next;
    return pp;
}

int slots_acquire(struct slots *s, struct slot_turn *st)
{
    int owned = 1;
    pthread_mutex_lock(&s->mu);
    struct slot **pp = find(s, st->session_id);
    if (*pp != NULL) {
        QUEUE_APPEND((*pp)->wait_head, (*pp)->wait_tail, st, wait_next);
        owned = 0;
    } else {
        struct slot *n = calloc(1, sizeof(*n));
        if (n != NULL) { /* out of memory: run unordered rather than fail */
            memcpy(n->session_id, st->session_id, sizeof(n->session_id));
            n->owner = st;
            *pp = n;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return owned;
}

struct slot_turn *slots_release(struct slots *s, const struct slot_turn *st)
{
    struct slot_turn *next = NULL;
    pthread_mutex_lock(&s->mu);
    struct slot **pp = find(s, st->session_id);
    struct slot *slot = *pp;
    /* A turn that ran unordered (out of memory) owns no slot: it must not
     * release the one another turn took since. */
    if (slot != NULL && slot->owner == st) {
        QUEUE_POP(slot->wait_head, slot->wait_tail, next, wait_next);
        if (next != NULL) {
            slot->owner = next;
        } else {
            *pp = slot->next;
            free(slot);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return next;
}

/* The turn that owns session's slot if it is user's turn turn_id, else
 * NULL (under s->mu). The owner is alive while it owns the slot (its turn
 * releases the slot before its last reference goes). */
static struct slot_turn *named_owner(struct slots *s, const char *user_id, const char *session_id,
                                     const char *turn_id)
{
    struct slot *slot = *find(s, session_id);
    struct slot_turn *o = slot != NULL ? slot->owner : NULL;
    if (o == NULL || strcmp(o->user_id, user_id) != 0 || strcmp(o->turn_id, turn_id) != 0)
        return NULL;
    return o;
}

int slots_stop(struct slots *s, const char *user_id, const char *session_id, const char *turn_id)
{
    int took = 0;
    pthread_mutex_lock(&s->mu);
    struct slot_turn *o = named_owner(s, user_id, session_id, turn_id);
    if (o != NULL && o->stop != NULL)
        took = o->stop(o);
    pthread_mutex_unlock(&s->mu);
    return took;
}

int slots_follow(struct slots *s, const char *user_id, const char *session_id, const char *turn_id)
{
    int marked = 0;
    pthread_mutex_lock(&s->mu);
    struct slot_turn *o = named_owner(s, user_id, session_id, turn_id);
    if (o != NULL)
        marked = atomic_exchange(&o->followed, 1) == 0;
    pthread_mutex_unlock(&s->mu);
    return marked;
}

void slots_park(struct slots *s, struct slot_turn *st)
{
    pthread_mutex_lock(&s->park_mu);
    st->park_next = s->parked;
    s->parked = st;
    pthread_mutex_unlock(&s->park_mu);
}

struct slot_turn *slots_unpark(struct slots *s, const char *session_id)
{
    struct slot_turn *go = NULL;
    pthread_mutex_lock(&s->park_mu);
    /* The list is newest first; prepending what is taken makes go oldest
     * first. */
    for (struct slot_turn **pp = &s->parked; *pp != NULL;) {
        struct slot_turn *t = *pp;
        if (session_id == NULL || strcmp(t->session_id, session_id) == 0) {
            *pp = t->park_next;
            t->park_next = go;
            go = t;
        } else {
            pp = &t->park_next;
        }
    }
    pthread_mutex_unlock(&s->park_mu);
    return go;
}
