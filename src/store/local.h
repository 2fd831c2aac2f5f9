/* local.h - copies of cached answers in this process's memory, in front of
 * the Redis copies, kept exact the same way (store/inval.h).
 *
 * A copy is the JSON a worker read from PostgreSQL or found fresh in Redis,
 * with the snapshot it was read in. local_get hands it out only while
 * inval says PostgreSQL cannot contradict it, so a copy here is never
 * staler than one in Redis: an admin's SQL, a write of this process or a
 * lost LISTEN connection makes it unusable at once. What Redis does
 * (flushed, down, stalled) does not matter to these copies.
 *
 * Why: codes 0, 1 and 5 answered from here need no worker and no Redis
 * round trip, so the service thread answers them itself (work/handlers.c
 * handlers_inline). Any thread may call these; one mutex guards the table,
 * held for a lookup or an insert, never across I/O. Bounded by entries and
 * bytes, the least recently used copy going first. */
#ifndef CHATD_LOCAL_H
#define CHATD_LOCAL_H

#include <stddef.h>
#include <stdint.h>

struct inval;
struct local;

struct local *local_create(struct inval *iv, size_t max_entries, size_t max_bytes);
void local_destroy(struct local *l);

/* The payload of key's copy (malloc'd, NUL-terminated, *len set) when it
 * is fresh for user_id (NULL: a copy of the catalogue); else NULL (a stale
 * copy is dropped on the way). */
char *local_get(struct local *l, const char *key, const char *user_id, size_t *len);

/* Stores a copy read in snapshot (xmin, xmax), unless one read in a newer
 * snapshot is there already. Payloads over a quarter of max_bytes are not
 * kept. Best effort: out of memory, nothing is stored. */
void local_put(struct local *l, const char *key, uint64_t xmin, uint64_t xmax, const char *payload,
               size_t len);

/* Entries and payload bytes held (for tests and /metrics). */
void local_stats(struct local *l, size_t *entries, size_t *bytes);

#endif
