/* migrate.c - schema migrations under an advisory lock. */
#include "store/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/log.h"
#include "store/pg.h"

/* Any constant works; all chatd instances must agree on it. "chatdmig". */
#define MIGRATE_LOCK_KEY "7523094288207667559"

static int exec_ok(PGconn *c, const char *sql, const char *what)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        log_error("event=migrate_failed step=\"%s\" error=\"%.*s\"", what,
                  (int)strcspn(PQerrorMessage(c), "\n"), PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0)
        goto fail;
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto fail;
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
        goto fail;
    buf[n] = '\0';
    fclose(f);
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

/* Sorted list of *.sql names in dir; NULL on error. */
static char **list_migrations(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        log_error("event=migrate_failed step=opendir dir=%s error=\"%s\"", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".sql") != 0 || e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof(*names));
            if (grown == NULL)
                goto fail;
            names = grown;
        }
        if ((names[n] = strdup(e->d_name)) == NULL)
            goto fail;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_names);
    *count = n;
    if (names == NULL)
        names = calloc(1, sizeof(*names)); /* empty but not an error */
    return names;
fail:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return NULL;
}

static int apply_one(PGconn *c, const char *dir, const char *name)
{
    const char *params[1] = {name};
    PGresult *r = PQexecParams(c, "select 1 from schema_migrations where version = $1", 1, NULL,
                               params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_error("event=migrate_failed step=check file=%s error=\"%.*s\"", name,
                  (int)strcspn(PQerrorMessage(c), "\n"), PQerrorMessage(c));
        PQclear(r);
        return -1;
    }
    int done = PQntuples(r) > 0;
    PQclear(r);
    if (done)
        return 0;

    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *sql = read_file(path);
    if (sql == NULL) {
        log_error("event=migrate_failed step=read file=%s error=\"%s\"", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    if (exec_ok(c, "begin", "begin") != 0)
        goto out;
    if (exec_ok(c, sql, name) != 0)
        goto rollback;
    r = PQexecParams(c, "insert into schema_migrations (version) values ($1)", 1, NULL, params,
                     NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok || exec_ok(c, "commit", "commit") != 0)
        goto rollback;
    log_info("event=migration_applied file=%s", name);
    rc = 1;
    goto out;
rollback:
    exec_ok(c, "rollback", "rollback");
out:
    free(sql);
    return rc;
}

int migrate_run(const struct config *cfg)
{
    int applied = 0;
    size_t n = 0;
    char **names = NULL;
    PGconn *c = pg_connect(cfg, PG_PRIMARY);
    if (c == NULL)
        return -1;
    if (PQstatus(c) != CONNECTION_OK) {
        log_error("event=migrate_failed step=connect error=\"%.*s\"",
                  (int)strcspn(PQerrorMessage(c), "\n"), PQerrorMessage(c));
        applied = -1;
        goto out;
    }
    /* What a migration may read with current_setting() (0005: search). */
    const char *lang[1] = {cfg->search_language};
    PGresult *sr = PQexecParams(c, "select set_config('chatd.search_language', $1, false)", 1, NULL,
                                lang, NULL, NULL, 0);
    int set_ok = PQresultStatus(sr) == PGRES_TUPLES_OK;
    PQclear(sr);
    if (!set_ok || exec_ok(c, "set client_min_messages = warning", "settings") != 0 ||
        exec_ok(c, "select pg_advisory_lock(" MIGRATE_LOCK_KEY ")", "lock") != 0) {
        applied = -1;
        goto out;
    }
    if (exec_ok(c,
                "create table if not exists schema_migrations ("
                " version text primary key,"
                " applied_at timestamptz not null default now())",
                "schema_migrations") != 0) {
        applied = -1;
        goto unlock;
    }
    names = list_migrations(cfg->migrations_dir, &n);
    if (names == NULL) {
        applied = -1;
        goto unlock;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = apply_one(c, cfg->migrations_dir, names[i]);
        if (rc < 0) {
            applied = -1;
            goto unlock;
        }
        applied += rc;
    }
unlock:
    exec_ok(c, "select pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", "unlock");
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    PQfinish(c);
    return applied;
}
