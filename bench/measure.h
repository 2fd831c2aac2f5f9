/* measure.h - what the load generators in bench/ measure: latency samples
 * with nearest-rank percentiles, and the process's own CPU time (which shows
 * whether the client, not the server, was the limit). Header-only: each .c
 * in bench/ is its own program. */
#ifndef CHATD_BENCH_MEASURE_H
#define CHATD_BENCH_MEASURE_H

#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>

struct latency {
    uint32_t *us; /* one sample per measured reply, microseconds */
    size_t n, cap;
};

static inline void latency_add(struct latency *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 65536;
        uint32_t *grown = realloc(l->us, cap * sizeof(*grown));
        if (grown == NULL)
            return; /* keep counting; the percentiles just miss a sample */
        l->us = grown;
        l->cap = cap;
    }
    uint64_t us = ns / 1000;
    l->us[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static inline int latency_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static inline void latency_sort(struct latency *l)
{
    qsort(l->us, l->n, sizeof(*l->us), latency_cmp);
}

/* Nearest-rank percentile p (0..100) of the sorted samples; 0 if none. */
static inline uint32_t latency_pct(const struct latency *l, double p)
{
    if (l->n == 0)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)l->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > l->n)
        rank = l->n;
    return l->us[rank - 1];
}

static inline void latency_free(struct latency *l)
{
    free(l->us);
    l->us = NULL;
    l->n = l->cap = 0;
}

/* User + system CPU seconds of the whole process, all threads included. */
static inline double measure_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

#endif
