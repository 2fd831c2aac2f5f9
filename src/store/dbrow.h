/* dbrow.h - reading one row of a statement of pg.c: what the typed calls
 * of db.c and share.c share, so that each of them is the statement's
 * parameters and the C values of its columns, nothing more. store/ only. */
#ifndef CHATD_DBROW_H
#define CHATD_DBROW_H

#include <libpq-fe.h>
#include <stdint.h>

#include "store/pg.h"

/* What every db_* function without an answer of its own returns, so that
 * callers can switch over it (-Wswitch names a case they forgot). */
enum db_status {
    DB_OK = 0,
    DB_NOT_FOUND, /* no such row, or not the user's: the same to a caller */
    DB_BUSY,      /* only db_lease_take: another turn holds the lease */
    DB_REFUSED,   /* only reservations: the balance or a cap is used up */
    DB_ERROR,     /* the database failed or is unreachable (logged) */
};

/* Runs stmt; DB_OK with *out set (a result with at least one row),
 * DB_NOT_FOUND (no row; nothing to free), or DB_ERROR. */
enum db_status dbrow_query(struct pg *pg, enum pg_stmt stmt, int n, const char *const *p,
                           PGresult **out);
/* The one text column of a statement's one row, malloc'd into *out. */
enum db_status dbrow_text_row(struct pg *pg, enum pg_stmt stmt, int n, const char *const *p,
                              char **out);
/* A write whose result has no rows to read. */
enum db_status dbrow_command(struct pg *pg, enum pg_stmt stmt, int n, const char *const *p);
/* A copy of column c of row 0; NULL when out of memory. */
char *dbrow_text(const PGresult *r, int c);
/* The same, NULL for a null column too. */
char *dbrow_text_or_null(const PGresult *r, int c);
/* Column c of row 0 as an unsigned number (0 when it is not one). */
uint64_t dbrow_u64(const PGresult *r, int c);
/* Column c of row 0 is true. */
int dbrow_bool(const PGresult *r, int c);

#endif
