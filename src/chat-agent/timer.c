/* timer.c - one thread and a binary min-heap of due callbacks.
 *
 * The echo back end plays a slow model by scheduling each of its sends here,
 * so 2,000 delayed calls cost 2,000 heap entries instead of 2,000 sleeping
 * threads, and the CQ thread never sleeps. Entries due at the same time run
 * in insertion order (seq), which keeps a stream's chunks in order. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "chat_agent.h"
#include "lib/log.h"

struct ca_timer_entry {
    uint64_t due_ms;
    uint64_t seq;
    ca_timer_fn fn;
    void *arg;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    pthread_t thread;
    int started;
    int stopping;
    struct ca_timer_entry *heap;
    size_t len, cap;
    uint64_t seq;
} tm = {.lock = PTHREAD_MUTEX_INITIALIZER};

uint64_t ca_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int ca_timer_less(const struct ca_timer_entry *a, const struct ca_timer_entry *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void ca_timer_swap(size_t i, size_t j)
{
    struct ca_timer_entry t = tm.heap[i];
    tm.heap[i] = tm.heap[j];
    tm.heap[j] = t;
}

static struct ca_timer_entry ca_timer_pop_locked(void)
{
    struct ca_timer_entry top = tm.heap[0];
    tm.heap[0] = tm.heap[--tm.len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < tm.len && ca_timer_less(&tm.heap[l], &tm.heap[m]))
            m = l;
        if (r < tm.len && ca_timer_less(&tm.heap[r], &tm.heap[m]))
            m = r;
        if (m == i)
            break;
        ca_timer_swap(i, m);
        i = m;
    }
    return top;
}

static void *ca_timer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&tm.lock);
    while (!tm.stopping) {
        if (tm.len == 0) {
            pthread_cond_wait(&tm.cond, &tm.lock);
            continue;
        }
        uint64_t now = ca_now_ms();
        if (tm.heap[0].due_ms > now) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wait = tm.heap[0].due_ms - now;
            ts.tv_sec += (time_t)(wait / 1000);
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&tm.cond, &tm.lock, &ts);
            continue;
        }
        struct ca_timer_entry e = ca_timer_pop_locked();
        pthread_mutex_unlock(&tm.lock);
        e.fn(e.arg, 1);
        pthread_mutex_lock(&tm.lock);
    }
    pthread_mutex_unlock(&tm.lock);
    return NULL;
}

int ca_timer_start(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&tm.cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&tm.thread, NULL, ca_timer_main, NULL) != 0)
        return -1;
    pthread_setname_np(tm.thread, "agent-timer");
    tm.started = 1;
    return 0;
}

void ca_timer_add(uint64_t due_ms, ca_timer_fn fn, void *arg)
{
    pthread_mutex_lock(&tm.lock);
    if (tm.stopping || !tm.started)
        goto drop;
    if (tm.len == tm.cap) {
        size_t cap = tm.cap ? tm.cap * 2 : 1024;
        struct ca_timer_entry *h = realloc(tm.heap, cap * sizeof(*h));
        if (!h) {
            log_error("chat-agent: timer heap: out of memory");
            goto drop;
        }
        tm.heap = h;
        tm.cap = cap;
    }
    size_t i = tm.len++;
    tm.heap[i] = (struct ca_timer_entry){due_ms, tm.seq++, fn, arg};
    while (i > 0 && ca_timer_less(&tm.heap[i], &tm.heap[(i - 1) / 2])) {
        ca_timer_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    if (i == 0) /* a new earliest entry: the thread may sleep too long */
        pthread_cond_signal(&tm.cond);
    pthread_mutex_unlock(&tm.lock);
    return;

drop:
    pthread_mutex_unlock(&tm.lock);
    fn(arg, 0);
}

/* Joins the thread, then drops every entry left (fn(arg, 0) releases what
 * the entry held). Later ca_timer_add() calls drop at once. */
void ca_timer_stop(void)
{
    if (!tm.started)
        return;
    pthread_mutex_lock(&tm.lock);
    tm.stopping = 1;
    pthread_cond_signal(&tm.cond);
    pthread_mutex_unlock(&tm.lock);
    pthread_join(tm.thread, NULL);

    pthread_mutex_lock(&tm.lock);
    while (tm.len > 0) {
        struct ca_timer_entry e = ca_timer_pop_locked();
        pthread_mutex_unlock(&tm.lock);
        e.fn(e.arg, 0);
        pthread_mutex_lock(&tm.lock);
    }
    free(tm.heap);
    tm.heap = NULL;
    tm.cap = 0;
    tm.started = 0;
    pthread_mutex_unlock(&tm.lock);
    pthread_cond_destroy(&tm.cond);
}
