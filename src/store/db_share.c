/* db_share.c - the typed calls of organizing (code 24, code 1's filter)
 * and of share links (codes 21..23, GET /s/...), over their statements in
 * pg.c (see db.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/db.h"
#include "store/dbrow.h"

enum db_status db_organize(struct pg *pg, const char *user_id, const char *session_id,
                           const char *pinned, const char *archived, const char *tags_json,
                           int *is_pinned, int *is_archived, char **tags_json_out, uint64_t *xid)
{
    const char *p[5] = {user_id, session_id, pinned, archived, tags_json};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_ORGANIZE, 5, p, &r);
    if (st != DB_OK)
        return st;
    *is_pinned = dbrow_bool(r, 0);
    *is_archived = dbrow_bool(r, 1);
    *tags_json_out = dbrow_text(r, 2);
    *xid = dbrow_u64(r, 3);
    PQclear(r);
    return *tags_json_out != NULL ? DB_OK : DB_ERROR;
}

enum db_status db_sessions_filter(struct pg *pg, const char *user_id, const char *archived,
                                  const char *pinned, const char *tag, int temporary,
                                  const char *cursor, int limit, char **json, int *has_more,
                                  char **next)
{
    /* "<0|1>:<us>:<uuid>", checked by the decoder (wire/proto.c) */
    char cp[2] = "", ct[24] = "", cid[UUID_STR_LEN + 1] = "";
    if (cursor != NULL) {
        const char *a = strchr(cursor, ':'), *b = a != NULL ? strchr(a + 1, ':') : NULL;
        if (a == NULL || b == NULL || (size_t)(b - a - 1) >= sizeof(ct))
            return DB_ERROR;
        cp[0] = cursor[0] == '1' ? 't' : 'f';
        cp[1] = '\0';
        memcpy(ct, a + 1, (size_t)(b - a - 1));
        snprintf(cid, sizeof(cid), "%s", b + 1);
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[9] = {user_id,
                        archived,
                        pinned,
                        tag,
                        cursor != NULL ? cp : NULL,
                        cursor != NULL ? ct : NULL,
                        cursor != NULL ? cid : NULL,
                        lim,
                        temporary ? "true" : "false"};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SESSIONS_FILTER, 9, p, &r);
    if (st != DB_OK)
        return st;
    *has_more = dbrow_bool(r, 0);
    *json = dbrow_text(r, 1);
    *next = *has_more ? dbrow_text_or_null(r, 2) : NULL;
    PQclear(r);
    return *json != NULL ? DB_OK : DB_ERROR;
}

enum db_status db_share_create(struct pg *pg, const char *user_id, const char *session_id,
                               long long seq, const char *share_id, long long expires_in,
                               long long max_views, int *no_message, char **expires_at)
{
    char sq[24], ex[24], mv[24];
    snprintf(sq, sizeof(sq), "%lld", seq);
    snprintf(ex, sizeof(ex), "%lld", expires_in);
    snprintf(mv, sizeof(mv), "%lld", max_views);
    const char *p[6] = {user_id,
                        session_id,
                        seq >= 0 ? sq : NULL,
                        share_id,
                        expires_in > 0 ? ex : NULL,
                        max_views > 0 ? mv : NULL};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SHARE_CREATE, 6, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    *no_message = 0;
    *expires_at = NULL;
    if (!dbrow_bool(r, 0)) {
        st = DB_NOT_FOUND;
    } else if (!dbrow_bool(r, 1)) {
        *no_message = 1;
    } else if (!PQgetisnull(r, 0, 2) && (*expires_at = dbrow_text(r, 2)) == NULL) {
        st = DB_ERROR;
    }
    PQclear(r);
    return st;
}

enum db_status db_shares_list(struct pg *pg, const char *user_id, char **json)
{
    const char *p[1] = {user_id};
    return dbrow_text_row(pg, PG_SHARES_LIST, 1, p, json);
}

enum db_status db_share_revoke(struct pg *pg, const char *user_id, const char *share_id)
{
    const char *p[2] = {user_id, share_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SHARE_REVOKE, 2, p, &r);
    if (st == DB_OK)
        PQclear(r);
    return st;
}

enum db_status db_share_view(struct pg *pg, const char *share_id, char **json)
{
    const char *p[1] = {share_id};
    return dbrow_text_row(pg, PG_SHARE_VIEW, 1, p, json);
}

enum db_status db_share_file(struct pg *pg, const char *share_id, const char *name,
                             char **content_type)
{
    const char *p[2] = {share_id, name};
    return dbrow_text_row(pg, PG_SHARE_FILE, 2, p, content_type);
}

enum db_status db_share_source(struct pg *pg, const char *share_id, char owner[UUID_STR_LEN + 1],
                               char session_id[UUID_STR_LEN + 1], long long *seq, char **title)
{
    const char *p[1] = {share_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SHARE_SOURCE, 1, p, &r);
    if (st != DB_OK)
        return st;
    snprintf(owner, UUID_STR_LEN + 1, "%s", PQgetvalue(r, 0, 0));
    snprintf(session_id, UUID_STR_LEN + 1, "%s", PQgetvalue(r, 0, 1));
    *seq = atoll(PQgetvalue(r, 0, 2));
    *title = dbrow_text(r, 3);
    PQclear(r);
    return *title != NULL ? DB_OK : DB_ERROR;
}
