/* inval.c - LISTEN chatd_cache on a connection of its own; see inval.h.
 *
 * The buckets are a fixed array of atomics: a user id hashes to one, and a
 * bucket holds the newest writing transaction announced for any user in
 * it. Two users sharing a bucket only make a copy look stale more often
 * (one more PostgreSQL read), never fresh when it is not, and the memory is
 * constant however many users write. */
#include "store/inval.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bg.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "store/pg.h"

#define INVAL_BUCKETS 16384
#define INVAL_CHANNEL "chatd_cache"
#define INVAL_ADMIN_CHANNEL "chatd_admin"
#define INVAL_RETRY_MS 1000
/* Nothing is fresh while not listening: a floor no xid reaches. */
#define INVAL_NOT_LISTENING UINT64_MAX

struct inval {
    const struct config *cfg;
    inval_admin_fn admin; /* set before the thread starts */
    void *admin_arg;
    struct bg bg; /* the listener */
    _Atomic uint64_t floor;
    _Atomic uint64_t models;
    _Atomic uint64_t users[INVAL_BUCKETS];
};

static void bump(_Atomic uint64_t *slot, uint64_t xid)
{
    uint64_t cur = atomic_load(slot);
    while (cur < xid && !atomic_compare_exchange_weak(slot, &cur, xid))
        ;
}

static _Atomic uint64_t *user_slot(const struct inval *iv, const char *user_id)
{
    /* The table is read-only here but the atomics are not const. */
    struct inval *m = (struct inval *)iv;
    return &m->users[util_hash(user_id) % INVAL_BUCKETS];
}

int inval_user_fresh(const struct inval *iv, const char *user_id, uint64_t xmin, uint64_t xmax)
{
    return xmax > atomic_load(&iv->floor) && xmin > atomic_load(user_slot(iv, user_id));
}

int inval_models_fresh(const struct inval *iv, uint64_t xmin, uint64_t xmax)
{
    return xmax > atomic_load(&iv->floor) && xmin > atomic_load(&iv->models);
}

void inval_saw_user(struct inval *iv, const char *user_id, uint64_t xid)
{
    bump(user_slot(iv, user_id), xid);
}

int inval_listening(const struct inval *iv)
{
    return atomic_load(&iv->floor) != INVAL_NOT_LISTENING;
}

int inval_apply(struct inval *iv, const char *payload)
{
    uint64_t xid;
    if (strncmp(payload, "m:", 2) == 0) {
        if (util_parse_u64(payload + 2, &xid) != 0)
            return -1;
        bump(&iv->models, xid);
        return 0;
    }
    if (strncmp(payload, "u:", 2) != 0 || strlen(payload) < 2 + UUID_STR_LEN + 2 ||
        payload[2 + UUID_STR_LEN] != ':')
        return -1;
    char id[UUID_STR_LEN + 1];
    memcpy(id, payload + 2, UUID_STR_LEN);
    id[UUID_STR_LEN] = '\0';
    if (!uuid_valid(id) || util_parse_u64(payload + 3 + UUID_STR_LEN, &xid) != 0)
        return -1;
    uuid_normalize(id, id);
    bump(user_slot(iv, id), xid);
    return 0;
}

/* ----------------------------------------------------------- the thread */

static PGresult *exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    log_warn("event=inval_query_failed error=\"%.*s\"", (int)strcspn(PQerrorMessage(c), "\n"),
             PQerrorMessage(c));
    PQclear(r);
    return NULL;
}

/* LISTEN first, then take the floor: a transaction begun after LISTEN, so
 * every write a copy read after it could miss is announced to us. */
static PGconn *listen_connect(struct inval *iv)
{
    PGconn *c = pg_connect(iv->cfg, PG_PRIMARY);
    if (c == NULL)
        return NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        log_warn("event=inval_connect_failed error=\"%.*s\"", (int)strcspn(PQerrorMessage(c), "\n"),
                 PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PGresult *r = exec_ok(c, "listen " INVAL_CHANNEL);
    if (r == NULL)
        goto fail;
    PQclear(r);
    if ((r = exec_ok(c, "listen " INVAL_ADMIN_CHANNEL)) == NULL)
        goto fail;
    PQclear(r);
    uint64_t floor;
    r = exec_ok(c, "select pg_current_xact_id()::text");
    if (r == NULL)
        goto fail;
    int ok = PQntuples(r) == 1 && util_parse_u64(PQgetvalue(r, 0, 0), &floor) == 0;
    PQclear(r);
    if (!ok)
        goto fail;
    atomic_store(&iv->floor, floor);
    log_info("event=inval_listening floor=%llu", (unsigned long long)floor);
    return c;
fail:
    PQfinish(c);
    return NULL;
}

/* Waits for input on fd (or -1: none), at most ms. Returns 1 to stop, 0
 * otherwise. */
static int wait_for(struct inval *iv, int fd, int ms)
{
    bg_wait(&iv->bg, fd, ms);
    return bg_stopping(&iv->bg);
}

static void *inval_main(void *arg)
{
    struct inval *iv = arg;
    for (;;) {
        PGconn *c = listen_connect(iv);
        if (c == NULL) {
            if (wait_for(iv, -1, INVAL_RETRY_MS))
                return NULL;
            continue;
        }
        for (;;) {
            if (wait_for(iv, PQsocket(c), 1000)) {
                PQfinish(c);
                return NULL;
            }
            if (!PQconsumeInput(c) || PQstatus(c) != CONNECTION_OK)
                break;
            PGnotify *n;
            while ((n = PQnotifies(c)) != NULL) {
                if (strcmp(n->relname, INVAL_ADMIN_CHANNEL) == 0) {
                    if (iv->admin != NULL)
                        iv->admin(iv->admin_arg, n->extra);
                } else if (inval_apply(iv, n->extra) != 0) {
                    log_warn("event=inval_bad_payload payload=\"%.80s\"", n->extra);
                }
                PQfreemem(n);
            }
        }
        /* Announcements may be lost from here on: trust no copy until we
         * listen again, with a new floor. */
        atomic_store(&iv->floor, INVAL_NOT_LISTENING);
        log_warn("event=inval_connection_lost error=\"%.*s\"",
                 (int)strcspn(PQerrorMessage(c), "\n"), PQerrorMessage(c));
        PQfinish(c);
    }
}

struct inval *inval_new_detached(void)
{
    struct inval *iv = calloc(1, sizeof(*iv));
    if (iv == NULL)
        return NULL;
    iv->bg.wake[0] = iv->bg.wake[1] = -1;
    atomic_store(&iv->floor, 0);
    return iv;
}

struct inval *inval_start(const struct config *cfg, inval_admin_fn admin, void *admin_arg)
{
    struct inval *iv = inval_new_detached();
    if (iv == NULL)
        goto fail;
    iv->cfg = cfg;
    iv->admin = admin;
    iv->admin_arg = admin_arg;
    atomic_store(&iv->floor, INVAL_NOT_LISTENING);
    if (bg_start(&iv->bg, inval_main, iv) != 0)
        goto fail;
    return iv;
fail:
    log_error("event=inval_start_failed");
    inval_stop(iv);
    return NULL;
}

void inval_stop(struct inval *iv)
{
    if (iv == NULL)
        return;
    bg_stop(&iv->bg);
    free(iv);
}
