/* local.c - copies in this process's memory (local.h): a chained hash
 * table of keys, and a doubly linked list in order of use for eviction. */
#include "store/local.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "store/inval.h"

#define LOCAL_BUCKETS 16384 /* a power of two */

struct local_entry {
    struct local_entry *chain;         /* same bucket */
    struct local_entry *newer, *older; /* use order */
    uint64_t xmin, xmax;
    char *payload;
    size_t len;
    char key[];
};

struct local {
    pthread_mutex_t mu;
    struct inval *inval;
    struct local_entry *bucket[LOCAL_BUCKETS];
    struct local_entry *newest, *oldest;
    size_t n, bytes, max_n, max_bytes;
};

struct local *local_create(struct inval *iv, size_t max_entries, size_t max_bytes)
{
    struct local *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    pthread_mutex_init(&l->mu, NULL);
    l->inval = iv;
    l->max_n = max_entries;
    l->max_bytes = max_bytes;
    return l;
}

void local_destroy(struct local *l)
{
    if (l == NULL)
        return;
    struct local_entry *e = l->newest;
    while (e != NULL) {
        struct local_entry *next = e->older;
        free(e->payload);
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static struct local_entry **slot(struct local *l, const char *key)
{
    struct local_entry **p = &l->bucket[util_hash(key) & (LOCAL_BUCKETS - 1)];
    while (*p != NULL && strcmp((*p)->key, key) != 0)
        p = &(*p)->chain;
    return p;
}

static void unlink_use(struct local *l, struct local_entry *e)
{
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        l->newest = e->older;
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        l->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void link_newest(struct local *l, struct local_entry *e)
{
    e->older = l->newest;
    e->newer = NULL;
    if (l->newest != NULL)
        l->newest->newer = e;
    l->newest = e;
    if (l->oldest == NULL)
        l->oldest = e;
}

/* Removes the entry *p points at (from its bucket chain and the list). */
static void drop(struct local *l, struct local_entry **p)
{
    struct local_entry *e = *p;
    *p = e->chain;
    unlink_use(l, e);
    l->n--;
    l->bytes -= e->len;
    free(e->payload);
    free(e);
}

char *local_get(struct local *l, const char *key, const char *user_id, size_t *len)
{
    char *out = NULL;
    pthread_mutex_lock(&l->mu);
    struct local_entry **p = slot(l, key), *e = *p;
    if (e != NULL) {
        int fresh = user_id != NULL ? inval_user_fresh(l->inval, user_id, e->xmin, e->xmax)
                                    : inval_models_fresh(l->inval, e->xmin, e->xmax);
        if (!fresh) {
            drop(l, p); /* it can never become fresh again */
        } else if ((out = util_memdup(e->payload, e->len)) != NULL) {
            *len = e->len;
            unlink_use(l, e);
            link_newest(l, e);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return out;
}

void local_put(struct local *l, const char *key, uint64_t xmin, uint64_t xmax, const char *payload,
               size_t len)
{
    if (len > l->max_bytes / 4)
        return;
    size_t klen = strlen(key);
    struct local_entry *fresh = malloc(sizeof(*fresh) + klen + 1);
    char *copy = util_memdup(payload, len);
    if (fresh == NULL || copy == NULL) {
        free(fresh);
        free(copy);
        return;
    }
    memcpy(fresh->key, key, klen + 1);
    fresh->xmin = xmin;
    fresh->xmax = xmax;
    fresh->payload = copy;
    fresh->len = len;

    pthread_mutex_lock(&l->mu);
    struct local_entry **p = slot(l, key);
    if (*p != NULL && (*p)->xmin > xmin) {
        /* A copy from a newer snapshot is here: a late reader loses. */
        pthread_mutex_unlock(&l->mu);
        free(copy);
        free(fresh);
        return;
    }
    if (*p != NULL)
        drop(l, p);
    while (l->oldest != NULL && (l->n + 1 > l->max_n || l->bytes + len > l->max_bytes))
        drop(l, slot(l, l->oldest->key));
    fresh->chain = NULL;
    *slot(l, key) = fresh;
    link_newest(l, fresh);
    l->n++;
    l->bytes += len;
    pthread_mutex_unlock(&l->mu);
}

void local_stats(struct local *l, size_t *entries, size_t *bytes)
{
    pthread_mutex_lock(&l->mu);
    *entries = l->n;
    *bytes = l->bytes;
    pthread_mutex_unlock(&l->mu);
}
