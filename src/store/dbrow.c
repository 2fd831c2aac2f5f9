/* dbrow.c - one row of a statement (see dbrow.h). */
#include "store/dbrow.h"

#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

enum db_status dbrow_query(struct pg *pg, enum pg_stmt stmt, int n, const char *const *p,
                           PGresult **out)
{
    PGresult *r = pg_exec(pg, stmt, n, p);
    if (r == NULL)
        return DB_ERROR;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return DB_NOT_FOUND;
    }
    *out = r;
    return DB_OK;
}

enum db_status dbrow_text_row(struct pg *pg, enum pg_stmt stmt, int n, const char *const *p,
                              char **out)
{
    PGresult *r;
    enum db_status st = dbrow_query(pg, stmt, n, p, &r);
    if (st != DB_OK)
        return st;
    *out = dbrow_text(r, 0);
    PQclear(r);
    return *out != NULL ? DB_OK : DB_ERROR;
}

enum db_status dbrow_command(struct pg *pg, enum pg_stmt stmt, int n, const char *const *p)
{
    PGresult *r = pg_exec(pg, stmt, n, p);
    if (r == NULL)
        return DB_ERROR;
    PQclear(r);
    return DB_OK;
}

char *dbrow_text(const PGresult *r, int c) { return strdup(PQgetvalue(r, 0, c)); }

char *dbrow_text_or_null(const PGresult *r, int c)
{
    return PQgetisnull(r, 0, c) ? NULL : dbrow_text(r, c);
}

uint64_t dbrow_u64(const PGresult *r, int c)
{
    uint64_t v = 0;
    util_parse_u64(PQgetvalue(r, 0, c), &v);
    return v;
}

int dbrow_bool(const PGresult *r, int c) { return strcmp(PQgetvalue(r, 0, c), "t") == 0; }
