/* metrics.h - process-wide counters and histograms, served as Prometheus
 * text (format 0.0.4) by GET /metrics.
 *
 * Every recording function is a handful of relaxed C11 atomic additions:
 * callable from any thread (service thread, workers, the agent thread)
 * without a lock. Only metrics_render() reads them all, on the service
 * thread; a scrape may see one request counted in requests_total and not
 * yet in its histogram, which Prometheus tolerates. */
#ifndef CHATD_METRICS_H
#define CHATD_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in microseconds, for durations. */
uint64_t metrics_now_us(void);

/* The request codes the server answers (work/dispatch.c's table), once at
 * start-up: each gets series of its own; anything else counts as "other". */
void metrics_request_codes(const int *codes, size_t n);

/* A WebSocket request of type code was answered, ok or with an error
 * frame, after seconds. */
void metrics_request(int code, int ok, double seconds);

/* One agent call (Process/ProcessStream) ended after seconds. failed: it
 * ended with an error status other than a cancellation. */
void metrics_agent_call(double seconds, int failed);
/* An agent call that could not even be started. */
void metrics_agent_error(void);

void metrics_pg_error(void);
/* One request/response exchange with PostgreSQL on a worker's connection
 * (a statement, a begin or commit, a prepare): what a turn's latency is
 * made of, so the benchmark reports it per turn. */
void metrics_pg_roundtrip(void);
void metrics_redis_error(void);
void metrics_upload_bytes(uint64_t n);
/* A rating set (1 good, -1 bad) or cleared (0) with code 12. */
void metrics_feedback(int rating);
/* A store whose commit outcome was unknown, found stored or not. */
void metrics_turn_resolved(int stored);
/* A connection of a worker to PostgreSQL made again (after a failover). */
void metrics_pg_reconnect(void);
/* A read that may lag ran on a standby (1) or the primary (0). */
void metrics_read_on(int standby);
/* n sessions deleted by the sweeper: temporary chats, or by retention. */
void metrics_retention_deleted(int temporary, uint64_t n);
/* n files removed from PUBLIC_DIR, or Redis keys deleted, after their
 * rows went (the erasure queue). */
void metrics_erased(int redis_keys, uint64_t n);
/* One HTTP response with this status (any endpoint). */
void metrics_http_response(unsigned status);

/* The whole exposition, malloc'd (*len set), or NULL when out of memory.
 * The gauges are passed in: their owners know them exactly. */
char *metrics_render(int connections_open, int turns_in_flight, size_t *len);

#endif
