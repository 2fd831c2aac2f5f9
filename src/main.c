/* main.c - chatd's entry point.
 *
 *   chatd            migrate, then serve (the normal start)
 *   chatd migrate    apply migrations and exit
 *   chatd check      load and validate the configuration, then exit
 *   chatd retention [--dry-run]
 *                    one sweep now (work/sweep.h): what it deleted, or with
 *                    --dry-run what it would delete, one line per session
 *   chatd erase-user <uuid>
 *                    everything of one user, everywhere chatd put it
 *
 * Configuration comes from the environment (and .env); a bad value stops
 * start-up with one line naming the variable. */
#include <grpc/grpc.h>
#include <libpq-fe.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "agent/agent.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/uuid.h"
#include "net/server.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/inval.h"
#include "store/lease.h"
#include "store/live.h"
#include "store/local.h"
#include "store/migrate.h"
#include "store/pg.h"
#include "work/app.h"
#include "work/dispatch.h"
#include "work/events.h"
#include "work/import.h"
#include "work/outbox.h"
#include "work/pool.h"
#include "work/slots.h"
#include "work/sweep.h"
#include "work/turn.h"
#include "work/watch.h"

/* Copies of codes 0, 1 and 5 held in memory (store/local.h): every user's
 * profile and session list of a busy instance, within 64 MiB. */
#define MAIN_LOCAL_ENTRIES 200000
#define MAIN_LOCAL_BYTES (64u * 1024 * 1024)

/* Each WebSocket is a descriptor: take every one the hard limit allows,
 * since the default soft limit (1024) would cap chatd at about a thousand
 * clients. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("event=rlimit_nofile_failed");
    }
}

/* store/lease.h's news: a lease given back (session_id), or a second gone
 * by (NULL). */
static void lease_news(void *arg, const char *session_id)
{
    turn_lease_freed(arg, session_id);
    if (session_id == NULL)
        events_tick(arg);
}

/* The layers, built bottom up and torn down top down: what PostgreSQL
 * announces, the agent client, the outbox and the workers (work/), then
 * the network edge (net/), which runs until SIGTERM. */
static int serve(const struct config *cfg)
{
    int rc = 1;
    struct app app = {.cfg = cfg};
    app.limits.max_chat_message_bytes = (size_t)cfg->max_chat_message_bytes;
    char target[300];
    snprintf(target, sizeof(target), "%s:%d", cfg->ai_server_host, cfg->ai_server_port);
    /* Listening before the first worker reads a copy; until it listens,
     * every copy counts as stale. */
    if ((app.inval = inval_start(cfg, events_admin, &app)) == NULL ||
        (app.local = local_create(app.inval, MAIN_LOCAL_ENTRIES, MAIN_LOCAL_BYTES)) == NULL)
        goto out;
    if ((app.agent = agent_client_create(target, cfg->ai_timeout_seconds)) == NULL) {
        log_error("event=agent_client_failed target=%s", target);
        goto out;
    }
    if ((app.outbox = outbox_create()) == NULL || (app.slots = slots_create()) == NULL ||
        (app.watches = watches_create()) == NULL ||
        (app.pool = pool_create(&app, cfg->worker_threads)) == NULL ||
        (app.import_pool = pool_create(&app, 1)) == NULL ||
        (app.lease = lease_start(cfg, lease_news, &app)) == NULL ||
        (app.live = live_start(cfg, events_on_message, &app)) == NULL ||
        (app.sweep = sweep_start(cfg)) == NULL)
        goto out;
    rc = server_run(&app);
out:
    /* Turns cancelled when the connections closed end through the pool
     * and the agent client, so both must outlive them. */
    for (int i = 0; turn_active() > 0; i++) {
        if (i == 100) {
            log_error("event=shutdown_stuck turns=%d", turn_active());
            return 1; /* leave the rest to the kernel rather than free live state */
        }
        usleep(100 * 1000);
    }
    sweep_stop(app.sweep);
    if (app.agent != NULL)
        agent_client_destroy(app.agent);
    lease_stop(app.lease); /* it resubmits parked turns to the pool */
    import_stop();         /* a running import ends at its next conversation */
    pool_destroy(app.import_pool);
    pool_destroy(app.pool); /* its last jobs may still publish (titles) */
    lease_free(app.lease);  /* those jobs hold and let go of leases (titles) */
    live_stop(app.live);    /* both post to the outbox: before it goes */
    local_destroy(app.local);
    inval_stop(app.inval);
    outbox_destroy(app.outbox);
    slots_destroy(app.slots);
    watches_destroy(app.watches);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: chatd [serve|migrate|check|--version]\n"
                    "       chatd retention [--dry-run]\n"
                    "       chatd erase-user <uuid>\n");
    return 2;
}

static void print_plan_row(void *arg, const char *const *row, int n)
{
    (*(long *)arg)++;
    (void)n;
    printf("%s\tuser=%s\treason=%s\tlast_activity=%s\n", row[0], row[1], row[2], row[3]);
}

/* `chatd retention [--dry-run]` and `chatd erase-user <uuid>`: one
 * connection of each kind, the same code the server runs. */
static int admin_command(const struct config *cfg, const char *cmd, const char *arg)
{
    struct pg pg = {.cfg = cfg};
    struct cache c;
    cache_open(&c, cfg, NULL);
    int rc = 1;
    struct sweep_stats st = {0};
    if (pg_ensure(&pg) != 0) {
        fprintf(stderr, "chatd: cannot reach PostgreSQL (see the log line above)\n");
        goto out;
    }
    if (strcmp(cmd, "retention") == 0 && arg != NULL) { /* --dry-run */
        struct db_sweep_policy pol = {cfg->temporary_chat_hours, cfg->retention_days,
                                      cfg->sweep_clock_offset_seconds, 0};
        long n = 0;
        if (db_sweep_plan(&pg, &pol, print_plan_row, &n) != DB_OK)
            goto out;
        printf("would delete %ld sessions\n", n);
        rc = 0;
    } else if (strcmp(cmd, "retention") == 0) {
        if (sweep_once(&pg, &c, cfg, &st) != 0)
            goto out;
        printf("deleted %llu temporary and %llu expired sessions; removed %llu files and %llu "
               "redis keys\n",
               (unsigned long long)st.temporary, (unsigned long long)st.retention,
               (unsigned long long)st.files, (unsigned long long)st.redis_keys);
        rc = 0;
    } else { /* erase-user */
        long long sessions = 0;
        enum db_status s = db_erase_user(&pg, arg, &sessions);
        if (s == DB_NOT_FOUND) {
            fprintf(stderr, "chatd: no user %s\n", arg);
            goto out;
        }
        if (s != DB_OK)
            goto out;
        /* The rows are gone (committed); their files and keys now. */
        int swept = sweep_erasures(&pg, &c, cfg, &st);
        printf("erased user %s: %lld sessions, %llu files, %llu redis keys%s\n", arg, sessions,
               (unsigned long long)st.files, (unsigned long long)st.redis_keys,
               swept == 0 ? "" : " (the rest is queued for the sweeper)");
        rc = 0;
    }
out:
    cache_close(&c);
    pg_close(&pg);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (argc == 2 && (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0)) {
        int pq = PQlibVersion(); /* major * 10000 + minor since PostgreSQL 10 */
        printf("chatd %s (libwebsockets %s, gRPC core %s, libpq %d.%d)\n", CHATD_VERSION,
               lws_get_library_version(), grpc_version_string(), pq / 10000, pq % 10000);
        return 0;
    }
    const char *arg = argc > 2 ? argv[2] : NULL;
    int admin = strcmp(cmd, "retention") == 0 || strcmp(cmd, "erase-user") == 0;
    if (argc > 3 || (!admin && argc > 2) ||
        (strcmp(cmd, "serve") && strcmp(cmd, "migrate") && strcmp(cmd, "check") && !admin) ||
        (strcmp(cmd, "retention") == 0 && arg != NULL && strcmp(arg, "--dry-run") != 0) ||
        (strcmp(cmd, "erase-user") == 0 && (arg == NULL || !uuid_valid(arg))))
        return usage();

    struct config cfg;
    char err[512];
    if (config_load(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "chatd: %s\n", err);
        return 1;
    }
    log_set_level(cfg.log_lvl);

    int rc = 0;
    if (strcmp(cmd, "check") == 0) {
        printf("configuration ok\n");
        goto out;
    }
    if (migrate_run(&cfg) < 0) {
        fprintf(stderr, "chatd: migrations failed (see the log line above)\n");
        rc = 1;
        goto out;
    }
    if (strcmp(cmd, "migrate") == 0)
        goto out;
    if (admin) {
        char id[UUID_STR_LEN + 1];
        if (arg != NULL && uuid_valid(arg)) /* the database compares lower case */
            uuid_normalize(arg, id);
        rc = admin_command(&cfg, cmd, arg != NULL && uuid_valid(arg) ? id : arg);
        goto out;
    }

    raise_fd_limit();
    dispatch_register_metrics(); /* before any thread records a request */
    grpc_init();
    rc = serve(&cfg);
    grpc_shutdown();
out:
    config_free(&cfg);
    return rc;
}
