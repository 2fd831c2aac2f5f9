/* metrics.c - lock-free counters and histograms behind GET /metrics.
 *
 * Each value is a _Atomic uint64_t bumped with relaxed ordering: the
 * numbers are independent, so no recording thread ever waits for another
 * or for a scrape. Histograms keep one non-cumulative count per bucket and
 * a sum in microseconds; metrics_render() turns them into Prometheus'
 * cumulative "le" buckets. */
#include "lib/metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* A slot per request code the server answers (metrics_request_codes says
 * which), then one for anything else: an unknown code, or a frame that was
 * not JSON and has no type. */
#define METRICS_CODE_MAX 63
#define METRICS_CODES (METRICS_CODE_MAX + 2)
#define METRICS_OTHER (METRICS_CODES - 1)
#define METRICS_HTTP_STATUSES 600

/* Upper bounds in seconds; a last implicit bucket is +Inf. From a cached
 * read (a millisecond) to a chat turn on a slow model (ten minutes). */
static const double metrics_bounds[] = {.001, .005, .01, .05, .1, .5, 1, 5, 30, 120, 600};
#define METRICS_BUCKETS (sizeof(metrics_bounds) / sizeof(metrics_bounds[0]) + 1)

struct metrics_hist {
    _Atomic uint64_t buckets[METRICS_BUCKETS];
    _Atomic uint64_t sum_us;
};

static _Atomic uint64_t metrics_requests[METRICS_CODES][2]; /* [code][ok] */
/* Set once at start-up, before any thread records: which codes have a
 * series of their own. */
static unsigned char metrics_known[METRICS_CODE_MAX + 1];
static struct metrics_hist metrics_request_hist[METRICS_CODES];
static struct metrics_hist metrics_agent_hist;
static _Atomic uint64_t metrics_agent_errors;
static _Atomic uint64_t metrics_pg_errors;
static _Atomic uint64_t metrics_pg_roundtrips;
static _Atomic uint64_t metrics_redis_errors;
static _Atomic uint64_t metrics_upload_bytes_total;
static _Atomic uint64_t metrics_retention[2]; /* temporary, retention */
static _Atomic uint64_t metrics_resolved[2];  /* not stored, stored */
static _Atomic uint64_t metrics_pg_reconnects;
static _Atomic uint64_t metrics_reads[2];    /* primary, standby */
static _Atomic uint64_t metrics_erasures[2]; /* files, redis keys */
static _Atomic uint64_t metrics_ratings[3];  /* bad, cleared, good */
static _Atomic uint64_t metrics_http[METRICS_HTTP_STATUSES];

static void add(_Atomic uint64_t *v, uint64_t n)
{
    atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t get(_Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }

uint64_t metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void observe(struct metrics_hist *h, double seconds)
{
    if (!(seconds >= 0))
        seconds = 0; /* NaN or a clock oddity: count it, in the first bucket */
    size_t i = 0;
    while (i < METRICS_BUCKETS - 1 && seconds > metrics_bounds[i])
        i++;
    add(&h->buckets[i], 1);
    add(&h->sum_us, (uint64_t)(seconds * 1e6));
}

void metrics_request_codes(const int *codes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (codes[i] >= 0 && codes[i] <= METRICS_CODE_MAX)
            metrics_known[codes[i]] = 1;
}

static int code_slot(int code)
{
    return code >= 0 && code <= METRICS_CODE_MAX && metrics_known[code] ? code : METRICS_OTHER;
}

void metrics_request(int code, int ok, double seconds)
{
    int c = code_slot(code);
    add(&metrics_requests[c][ok ? 1 : 0], 1);
    observe(&metrics_request_hist[c], seconds);
}

void metrics_agent_call(double seconds, int failed)
{
    observe(&metrics_agent_hist, seconds);
    if (failed)
        add(&metrics_agent_errors, 1);
}

void metrics_agent_error(void) { add(&metrics_agent_errors, 1); }
void metrics_pg_error(void) { add(&metrics_pg_errors, 1); }
void metrics_pg_roundtrip(void) { add(&metrics_pg_roundtrips, 1); }
void metrics_redis_error(void) { add(&metrics_redis_errors, 1); }
void metrics_upload_bytes(uint64_t n) { add(&metrics_upload_bytes_total, n); }

void metrics_feedback(int rating)
{
    if (rating >= -1 && rating <= 1)
        add(&metrics_ratings[rating + 1], 1);
}

void metrics_retention_deleted(int temporary, uint64_t n)
{
    add(&metrics_retention[temporary ? 0 : 1], n);
}

void metrics_turn_resolved(int stored) { add(&metrics_resolved[stored ? 1 : 0], 1); }

void metrics_pg_reconnect(void) { add(&metrics_pg_reconnects, 1); }

void metrics_read_on(int standby) { add(&metrics_reads[standby ? 1 : 0], 1); }

void metrics_erased(int redis_keys, uint64_t n) { add(&metrics_erasures[redis_keys ? 1 : 0], n); }

void metrics_http_response(unsigned status)
{
    if (status < METRICS_HTTP_STATUSES)
        add(&metrics_http[status], 1);
}

/* ------------------------------------------------------------- render */

static void code_label(char out[8], int slot)
{
    if (slot == METRICS_OTHER)
        snprintf(out, 8, "other");
    else
        snprintf(out, 8, "%d", slot);
}

/* One histogram's _bucket, _sum and _count lines; labels is "" or e.g.
 * `code="3"`. */
static void render_hist(FILE *f, const char *name, const char *labels, struct metrics_hist *h)
{
    const char *sep = labels[0] != '\0' ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < METRICS_BUCKETS; i++) {
        cum += get(&h->buckets[i]);
        if (i < METRICS_BUCKETS - 1)
            fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, metrics_bounds[i],
                    (unsigned long long)cum);
        else
            fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                    (unsigned long long)cum);
    }
    const char *open = labels[0] != '\0' ? "{" : "", *close = labels[0] != '\0' ? "}" : "";
    fprintf(f, "%s_sum%s%s%s %.6f\n", name, open, labels, close, (double)get(&h->sum_us) / 1e6);
    fprintf(f, "%s_count%s%s%s %llu\n", name, open, labels, close, (unsigned long long)cum);
}

static void render_counter(FILE *f, const char *name, const char *help, uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
            (unsigned long long)v);
}

char *metrics_render(int connections_open, int turns_in_flight, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (f == NULL)
        return NULL;
    char code[8], labels[32];

    fprintf(f,
            "# HELP chatd_connections_open WebSocket connections open now.\n"
            "# TYPE chatd_connections_open gauge\n"
            "chatd_connections_open %d\n",
            connections_open);
    fprintf(f,
            "# HELP chatd_turns_in_flight Chat turns past their checks and not yet answered.\n"
            "# TYPE chatd_turns_in_flight gauge\n"
            "chatd_turns_in_flight %d\n",
            turns_in_flight);

    fprintf(f, "# HELP chatd_requests_total WebSocket requests answered, by request code and "
               "outcome.\n# TYPE chatd_requests_total counter\n");
    for (int c = 0; c < METRICS_CODES; c++) {
        if (c != METRICS_OTHER && !metrics_known[c])
            continue;
        code_label(code, c);
        fprintf(f, "chatd_requests_total{code=\"%s\",outcome=\"ok\"} %llu\n", code,
                (unsigned long long)get(&metrics_requests[c][1]));
        fprintf(f, "chatd_requests_total{code=\"%s\",outcome=\"error\"} %llu\n", code,
                (unsigned long long)get(&metrics_requests[c][0]));
    }

    fprintf(f, "# HELP chatd_request_duration_seconds Time from a request's start to its "
               "answer, by request code.\n# TYPE chatd_request_duration_seconds histogram\n");
    for (int c = 0; c < METRICS_CODES; c++) {
        if (c != METRICS_OTHER && !metrics_known[c])
            continue;
        code_label(code, c);
        snprintf(labels, sizeof(labels), "code=\"%s\"", code);
        render_hist(f, "chatd_request_duration_seconds", labels, &metrics_request_hist[c]);
    }

    fprintf(f, "# HELP chatd_agent_call_duration_seconds Duration of agent Process calls.\n"
               "# TYPE chatd_agent_call_duration_seconds histogram\n");
    render_hist(f, "chatd_agent_call_duration_seconds", "", &metrics_agent_hist);

    render_counter(f, "chatd_agent_errors_total",
                   "Agent calls that failed (down, deadline, error status).",
                   get(&metrics_agent_errors));
    render_counter(f, "chatd_pg_errors_total", "Failed PostgreSQL connects and statements.",
                   get(&metrics_pg_errors));
    render_counter(f, "chatd_pg_roundtrips_total",
                   "Request/response exchanges with PostgreSQL on worker connections.",
                   get(&metrics_pg_roundtrips));
    render_counter(f, "chatd_redis_errors_total", "Failed Redis connects and commands.",
                   get(&metrics_redis_errors));
    render_counter(f, "chatd_upload_bytes_total", "Bytes of uploaded files stored.",
                   get(&metrics_upload_bytes_total));

    fprintf(f,
            "# HELP chatd_feedback_total Ratings of assistant messages (code 12), by rating.\n"
            "# TYPE chatd_feedback_total counter\n"
            "chatd_feedback_total{rating=\"good\"} %llu\n"
            "chatd_feedback_total{rating=\"bad\"} %llu\n"
            "chatd_feedback_total{rating=\"cleared\"} %llu\n",
            (unsigned long long)get(&metrics_ratings[2]),
            (unsigned long long)get(&metrics_ratings[0]),
            (unsigned long long)get(&metrics_ratings[1]));

    fprintf(f,
            "# HELP chatd_retention_deleted_total Sessions deleted by the sweeper, by reason.\n"
            "# TYPE chatd_retention_deleted_total counter\n"
            "chatd_retention_deleted_total{reason=\"temporary\"} %llu\n"
            "chatd_retention_deleted_total{reason=\"retention\"} %llu\n"
            "# HELP chatd_erased_total What the sweeper removed after rows were deleted.\n"
            "# TYPE chatd_erased_total counter\n"
            "chatd_erased_total{what=\"file\"} %llu\n"
            "chatd_erased_total{what=\"redis_key\"} %llu\n",
            (unsigned long long)get(&metrics_retention[0]),
            (unsigned long long)get(&metrics_retention[1]),
            (unsigned long long)get(&metrics_erasures[0]),
            (unsigned long long)get(&metrics_erasures[1]));

    fprintf(f,
            "# HELP chatd_turn_outcome_resolved_total Stores whose commit outcome was unknown"
            " (a failover), as the database then said.\n"
            "# TYPE chatd_turn_outcome_resolved_total counter\n"
            "chatd_turn_outcome_resolved_total{stored=\"1\"} %llu\n"
            "chatd_turn_outcome_resolved_total{stored=\"0\"} %llu\n"
            "# HELP chatd_pg_reconnects_total Worker connections to PostgreSQL made again.\n"
            "# TYPE chatd_pg_reconnects_total counter\n"
            "chatd_pg_reconnects_total %llu\n"
            "# HELP chatd_reads_total Reads that may run on a standby (DATABASE_READ_URL),"
            " by where they ran.\n"
            "# TYPE chatd_reads_total counter\n"
            "chatd_reads_total{on=\"primary\"} %llu\n"
            "chatd_reads_total{on=\"standby\"} %llu\n",
            (unsigned long long)get(&metrics_resolved[1]),
            (unsigned long long)get(&metrics_resolved[0]),
            (unsigned long long)get(&metrics_pg_reconnects),
            (unsigned long long)get(&metrics_reads[0]), (unsigned long long)get(&metrics_reads[1]));

    fprintf(f, "# HELP chatd_http_responses_total HTTP responses, by status.\n"
               "# TYPE chatd_http_responses_total counter\n");
    for (unsigned s = 100; s < METRICS_HTTP_STATUSES; s++) {
        uint64_t v = get(&metrics_http[s]);
        if (v > 0)
            fprintf(f, "chatd_http_responses_total{status=\"%u\"} %llu\n", s,
                    (unsigned long long)v);
    }

    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}
