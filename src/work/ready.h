/* ready.h - GET /readyz: is each part chatd needs answering? A worker job,
 * since it talks to PostgreSQL, Redis and the agent. */
#ifndef CHATD_READY_H
#define CHATD_READY_H

#include <stdint.h>

struct app;

/* Probes PostgreSQL, Redis and the agent on a worker and answers HTTP
 * transaction txn through the outbox: 200 when all answer, else 503 with
 * the part that is down, e.g.
 * {"status":"unavailable","postgres":"ok","redis":"down","agent":"ok"}.
 * 0, or -1 when out of memory (nothing was sent). */
int ready_probe(struct app *app, uint64_t txn);

#endif
