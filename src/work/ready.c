/* ready.c - the readiness probe (see ready.h). */
#include "work/ready.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "lib/log.h"
#include "store/cache.h"
#include "store/db.h"
#include "work/app.h"
#include "work/outbox.h"
#include "work/pool.h"

#define READY_AGENT_PROBE_MS 1000

struct ready_job {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    uint64_t txn;
};

static void ready_run(struct worker *w, struct pool_job *job)
{
    struct ready_job *j = (struct ready_job *)job;
    /* Twice: the first use of a connection PostgreSQL dropped fails, and
     * the second reconnects. */
    int pg_ok = db_ping(&w->pg) == DB_OK || db_ping(&w->pg) == DB_OK;
    w->cache.retry_at = 0; /* a probe looks now, past the cache's back-off */
    int redis_ok = cache_ping(&w->cache) == 0;
    int agent_ok = agent_ping(j->app->agent, READY_AGENT_PROBE_MS) == 0;
    int ok = pg_ok && redis_ok && agent_ok;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "status", ok ? "ok" : "unavailable", "postgres",
                          pg_ok ? "ok" : "down", "redis", redis_ok ? "ok" : "down", "agent",
                          agent_ok ? "ok" : "down");
    char *body = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!ok)
        log_warn("event=not_ready postgres=%d redis=%d agent=%d", pg_ok, redis_ok, agent_ok);
    if (body == NULL)
        outbox_http(j->app->outbox, j->txn, OUTBOX_FAILED, strdup("{\"status\":\"error\"}"), 18);
    else
        outbox_http(j->app->outbox, j->txn, ok ? OUTBOX_DONE : OUTBOX_UNAVAILABLE, body,
                    strlen(body));
    free(j);
}

int ready_probe(struct app *app, uint64_t txn)
{
    struct ready_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -1;
    j->app = app;
    j->txn = txn;
    j->job.run = ready_run;
    pool_submit(app->pool, &j->job);
    return 0;
}
