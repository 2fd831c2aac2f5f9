/* db_import.c - the typed calls of POST /import and GET /import/<id>
 * over their statements in pg.c (see db.h). */
#include <stdio.h>
#include <stdlib.h>

#include "store/db.h"
#include "store/dbrow.h"

enum db_status db_import_start(struct pg *pg, const char *import_id, const char *user_id,
                               const char *format, long long total)
{
    char t[24];
    snprintf(t, sizeof(t), "%lld", total);
    const char *p[4] = {import_id, user_id, format, total >= 0 ? t : NULL};
    return dbrow_command(pg, PG_IMPORT_START, 4, p);
}

enum db_status db_import_convo(struct pg *pg, const char *user_id, const char *session_id,
                               const char *title, const char *source, long long created_us,
                               const char *messages_json, long long leaf, int *stored,
                               long long *messages, uint64_t *xid)
{
    char cu[24], lf[24];
    snprintf(cu, sizeof(cu), "%lld", created_us);
    snprintf(lf, sizeof(lf), "%lld", leaf);
    const char *p[7] = {user_id,
                        session_id,
                        title,
                        source[0] != '\0' ? source : NULL,
                        created_us >= 0 ? cu : NULL,
                        messages_json,
                        lf};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_IMPORT_CONVO, 7, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    *stored = dbrow_bool(r, 0);
    *messages = atoll(PQgetvalue(r, 0, 1));
    *xid = dbrow_u64(r, 2);
    PQclear(r);
    return DB_OK;
}

enum db_status db_import_update(struct pg *pg, const char *import_id, long long done,
                                long long sessions, long long messages, const char *skipped_json,
                                const char *status, const char *error)
{
    char d[24], s[24], m[24];
    snprintf(d, sizeof(d), "%lld", done);
    snprintf(s, sizeof(s), "%lld", sessions);
    snprintf(m, sizeof(m), "%lld", messages);
    const char *p[7] = {import_id, d, s, m, skipped_json, status, error};
    return dbrow_command(pg, PG_IMPORT_UPDATE, 7, p);
}

enum db_status db_import_get(struct pg *pg, const char *user_id, const char *import_id, char **json)
{
    const char *p[2] = {user_id, import_id};
    return dbrow_text_row(pg, PG_IMPORT_GET, 2, p, json);
}
