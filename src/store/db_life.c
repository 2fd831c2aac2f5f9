/* db_life.c - the typed calls of the data's lifecycle and of budgets
 * (migration 0013): temporary chats kept (code 25), caps (code 26), the
 * sweeper's batches, the erasure queue, a user erased (see db.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/db.h"
#include "store/dbrow.h"

enum db_status db_keep(struct pg *pg, const char *user_id, const char *session_id, uint64_t *xid)
{
    const char *p[2] = {user_id, session_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_KEEP, 2, p, &r);
    if (st != DB_OK)
        return st;
    *xid = dbrow_u64(r, 0);
    PQclear(r);
    return DB_OK;
}

enum db_status db_budget_set(struct pg *pg, const char *user_id, const char *personal_cap)
{
    const char *p[2] = {user_id, personal_cap};
    char *one = NULL;
    enum db_status st = dbrow_text_row(pg, PG_BUDGET_SET, 2, p, &one);
    free(one);
    return st;
}

enum db_status db_budget(struct pg *pg, const char *user_id, char **json)
{
    const char *p[1] = {user_id};
    return dbrow_text_row(pg, PG_BUDGET, 1, p, json);
}

enum db_status db_user_files(struct pg *pg, const char *user_id, const char *after, int limit,
                             char **json)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[3] = {user_id, after, lim};
    return dbrow_text_row(pg, PG_USER_FILES, 3, p, json);
}

/* ------------------------------------------------------------ sweeper */

int db_sweep_lock(struct pg *pg)
{
    PGresult *r = pg_exec(pg, PG_SWEEP_LOCK, 0, NULL);
    int got = r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
              strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return got;
}

void db_sweep_unlock(struct pg *pg)
{
    PGresult *r = pg_exec(pg, PG_SWEEP_UNLOCK, 0, NULL);
    PQclear(r);
}

static void sweep_params(const struct db_sweep_policy *pol, char hours[24], char days[24],
                         char offset[24], char limit[24], const char **p)
{
    snprintf(hours, 24, "%d", pol->temporary_hours);
    snprintf(days, 24, "%d", pol->retention_days);
    snprintf(offset, 24, "%lld", pol->clock_offset_seconds);
    snprintf(limit, 24, "%d", pol->batch);
    p[0] = hours;
    p[1] = days;
    p[2] = offset;
    p[3] = limit;
}

enum db_status db_sweep(struct pg *pg, const struct db_sweep_policy *pol, int *temporary,
                        int *retention)
{
    char h[24], d[24], o[24], l[24];
    const char *p[4];
    sweep_params(pol, h, d, o, l, p);
    *temporary = *retention = 0;
    PGresult *r = pg_exec(pg, PG_SWEEP, 4, p);
    if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return DB_ERROR;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        if (strcmp(PQgetvalue(r, i, 2), "temporary") == 0)
            (*temporary)++;
        else
            (*retention)++;
    }
    PQclear(r);
    return DB_OK;
}

enum db_status db_sweep_plan(struct pg *pg, const struct db_sweep_policy *pol, db_rows_fn fn,
                             void *arg)
{
    char h[24], d[24], o[24], l[24];
    const char *p[4];
    sweep_params(pol, h, d, o, l, p);
    PGresult *r = pg_exec(pg, PG_SWEEP_PLAN, 3, p);
    if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return DB_ERROR;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *row[4] = {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                              PQgetvalue(r, i, 3)};
        fn(arg, row, 4);
    }
    PQclear(r);
    return DB_OK;
}

enum db_status db_erasure_run(struct pg *pg, int limit, db_erasure_fn fn, void *arg, int *taken)
{
    *taken = 0;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[1] = {lim};
    if (pg_command(pg, "begin") != 0)
        return DB_ERROR;
    PGresult *r = pg_exec(pg, PG_ERASURE_TAKE, 1, p);
    char *ids = NULL;
    if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK)
        goto fail;
    int n = PQntuples(r);
    *taken = n;
    struct db_erasure_item *items = calloc((size_t)n + 1, sizeof(*items));
    ids = malloc((size_t)n * 21 + 3);
    if (items == NULL || ids == NULL) {
        free(items);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        items[i].kind = PQgetvalue(r, i, 1);
        items[i].name = PQgetvalue(r, i, 2);
    }
    fn(arg, items, n); /* sets done on what it removed */
    size_t k = 0;
    ids[k++] = '{';
    for (int i = 0; i < n; i++)
        if (items[i].done)
            k += (size_t)sprintf(ids + k, "%s%s", k > 1 ? "," : "", PQgetvalue(r, i, 0));
    ids[k++] = '}';
    ids[k] = '\0';
    free(items);
    const char *d[1] = {ids};
    if (dbrow_command(pg, PG_ERASURE_DONE, 1, d) != DB_OK)
        goto fail;
    PQclear(r);
    free(ids);
    return pg_command(pg, "commit") == 0 ? DB_OK : DB_ERROR;
fail:
    PQclear(r);
    free(ids);
    pg_command(pg, "rollback");
    return DB_ERROR;
}

enum db_status db_runout_purge(struct pg *pg)
{
    return dbrow_command(pg, PG_RUNOUT_PURGE, 0, NULL);
}

enum db_status db_erase_user(struct pg *pg, const char *user_id, long long *sessions)
{
    const char *p[1] = {user_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_ERASE_USER, 1, p, &r);
    if (st != DB_OK)
        return st;
    st = PQgetisnull(r, 0, 0) ? DB_NOT_FOUND : DB_OK;
    *sessions = st == DB_OK ? atoll(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return st;
}
