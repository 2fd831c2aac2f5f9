/* lease.c - see lease.h. */
#include "store/lease.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/bg.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/uuid.h"
#include "store/pg.h"

#define LEASE_CHANNEL "chatd_turn"
#define LEASE_TICK_MS 1000
/* Leases whose give-back failed, kept to give back again; past this many
 * the next ones just run out. */
#define LEASE_DROPS_MAX 1024

struct lease_drop {
    char session_id[UUID_STR_LEN + 1], turn_id[UUID_STR_LEN + 1];
};

struct lease {
    const struct config *cfg;
    lease_free_fn on_free;
    void *arg;
    struct bg bg; /* the keeper */

    pthread_mutex_t mu; /* guards ids and drops */
    char (*ids)[UUID_STR_LEN + 1];
    size_t n, cap;
    struct lease_drop *drops; /* LEASE_DROPS_MAX of them */
    size_t n_drops;
};

void lease_give_back_later(struct lease *ls, const char *session_id, const char *turn_id)
{
    pthread_mutex_lock(&ls->mu);
    if (ls->drops == NULL)
        ls->drops = calloc(LEASE_DROPS_MAX, sizeof(*ls->drops));
    if (ls->drops != NULL && ls->n_drops < LEASE_DROPS_MAX) {
        struct lease_drop *d = &ls->drops[ls->n_drops++];
        snprintf(d->session_id, sizeof(d->session_id), "%s", session_id);
        snprintf(d->turn_id, sizeof(d->turn_id), "%s", turn_id);
    }
    pthread_mutex_unlock(&ls->mu);
}

/* Gives back the leases whose give-back failed (the database was away, as
 * in a failover), so the sessions' next turns need not wait for them to
 * run out. -1 when the connection failed. */
static int give_back(struct lease *ls, PGconn *c)
{
    for (;;) {
        struct lease_drop d;
        pthread_mutex_lock(&ls->mu);
        int any = ls->n_drops > 0;
        if (any)
            d = ls->drops[ls->n_drops - 1];
        pthread_mutex_unlock(&ls->mu);
        if (!any)
            return 0;
        const char *p[2] = {d.session_id, d.turn_id};
        PGresult *r = PQexecParams(c, pg_sql(PG_LEASE_DROP), 2, NULL, p, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        int reconnect = !ok && pg_needs_reconnect(c, r);
        PQclear(r);
        if (!ok)
            return reconnect ? -1 : 0;
        pthread_mutex_lock(&ls->mu);
        for (size_t i = ls->n_drops; i-- > 0;) /* this one: the list may have grown */
            if (strcmp(ls->drops[i].turn_id, d.turn_id) == 0) {
                ls->drops[i] = ls->drops[--ls->n_drops];
                break;
            }
        pthread_mutex_unlock(&ls->mu);
        log_info("event=lease_given_back session=%s", d.session_id);
    }
}

int lease_hold(struct lease *ls, const char *turn_id)
{
    int rc = 0;
    pthread_mutex_lock(&ls->mu);
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 64;
        void *p = realloc(ls->ids, cap * sizeof(*ls->ids));
        if (p == NULL) {
            rc = -1;
            goto out;
        }
        ls->ids = p;
        ls->cap = cap;
    }
    snprintf(ls->ids[ls->n++], UUID_STR_LEN + 1, "%s", turn_id);
out:
    pthread_mutex_unlock(&ls->mu);
    return rc;
}

void lease_let_go(struct lease *ls, const char *turn_id)
{
    pthread_mutex_lock(&ls->mu);
    for (size_t i = 0; i < ls->n; i++) {
        if (strcmp(ls->ids[i], turn_id) == 0) {
            memcpy(ls->ids[i], ls->ids[--ls->n], sizeof(ls->ids[0]));
            break;
        }
    }
    pthread_mutex_unlock(&ls->mu);
}

/* "{id,id,...}" of the leases held now; NULL when there are none. */
static char *held_array(struct lease *ls)
{
    pthread_mutex_lock(&ls->mu);
    char *s = NULL;
    if (ls->n > 0 && (s = malloc(ls->n * (UUID_STR_LEN + 1) + 3)) != NULL) {
        char *p = s;
        *p++ = '{';
        for (size_t i = 0; i < ls->n; i++) {
            memcpy(p, ls->ids[i], UUID_STR_LEN);
            p += UUID_STR_LEN;
            *p++ = i + 1 < ls->n ? ',' : '}';
        }
        *p = '\0';
    }
    pthread_mutex_unlock(&ls->mu);
    return s;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 0, or -1 when the connection is no good. */
static int renew(struct lease *ls, PGconn *c)
{
    char *ids = held_array(ls);
    if (ids == NULL)
        return 0;
    char secs[16];
    snprintf(secs, sizeof(secs), "%d", ls->cfg->turn_lease_seconds);
    const char *p[2] = {ids, secs};
    PGresult *r = PQexecParams(c, pg_sql(PG_LEASE_RENEW), 2, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    /* After a switchover this connection may be to a standby now. */
    int reconnect = !ok && pg_needs_reconnect(c, r);
    if (!ok)
        log_warn("event=lease_renew_failed error=\"%.*s\"", (int)strcspn(PQerrorMessage(c), "\n"),
                 PQerrorMessage(c));
    PQclear(r);
    free(ids);
    return reconnect ? -1 : 0;
}

static PGconn *lease_connect(struct lease *ls)
{
    PGconn *c = pg_connect(ls->cfg, PG_PRIMARY);
    if (c == NULL)
        return NULL;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "listen " LEASE_CHANNEL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (ok)
            return c;
    }
    log_warn("event=lease_connect_failed error=\"%.*s\"", (int)strcspn(PQerrorMessage(c), "\n"),
             PQerrorMessage(c));
    PQfinish(c);
    return NULL;
}

/* Waits for fd (or -1), at most ms; 1 to stop. */
static int wait_for(struct lease *ls, int fd, int ms)
{
    bg_wait(&ls->bg, fd, ms);
    return bg_stopping(&ls->bg);
}

static void *lease_main(void *arg)
{
    struct lease *ls = arg;
    /* A third of the lease: two renewals may fail before it runs out. */
    uint64_t every = (uint64_t)ls->cfg->turn_lease_seconds * 1000 / 3;
    uint64_t next_renew = 0, next_tick = now_ms() + LEASE_TICK_MS;
    PGconn *c = NULL;
    for (;;) {
        if (c == NULL && (c = lease_connect(ls)) == NULL) {
            if (wait_for(ls, -1, LEASE_TICK_MS))
                break;
            ls->on_free(ls->arg, NULL); /* leases still run out */
            continue;
        }
        uint64_t now = now_ms();
        if (now >= next_renew) {
            if (renew(ls, c) != 0)
                goto lost;
            next_renew = now + every;
        }
        if (now >= next_tick) {
            if (give_back(ls, c) != 0)
                goto lost;
            ls->on_free(ls->arg, NULL);
            next_tick = now + LEASE_TICK_MS;
        }
        uint64_t due = next_renew < next_tick ? next_renew : next_tick;
        now = now_ms();
        if (wait_for(ls, PQsocket(c), due > now ? (int)(due - now) : 0))
            break;
        if (!PQconsumeInput(c) || PQstatus(c) != CONNECTION_OK)
            goto lost;
        PGnotify *n;
        while ((n = PQnotifies(c)) != NULL) {
            if (uuid_valid(n->extra))
                ls->on_free(ls->arg, n->extra);
            PQfreemem(n);
        }
        continue;
    lost:
        log_warn("event=lease_connection_lost error=\"%.*s\"",
                 (int)strcspn(PQerrorMessage(c), "\n"), PQerrorMessage(c));
        PQfinish(c);
        c = NULL;
    }
    PQfinish(c);
    return NULL;
}

struct lease *lease_start(const struct config *cfg, lease_free_fn on_free, void *arg)
{
    struct lease *ls = calloc(1, sizeof(*ls));
    if (ls == NULL)
        return NULL;
    ls->cfg = cfg;
    ls->on_free = on_free;
    ls->arg = arg;
    pthread_mutex_init(&ls->mu, NULL);
    if (bg_start(&ls->bg, lease_main, ls) != 0)
        goto fail;
    return ls;
fail:
    log_error("event=lease_start_failed");
    lease_free(ls);
    return NULL;
}

void lease_stop(struct lease *ls)
{
    if (ls != NULL)
        bg_stop(&ls->bg);
}

void lease_free(struct lease *ls)
{
    if (ls == NULL)
        return;
    bg_stop(&ls->bg); /* a second stop is nothing */
    pthread_mutex_destroy(&ls->mu);
    free(ls->ids);
    free(ls->drops);
    free(ls);
}
