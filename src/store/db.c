/* db.c - the typed calls of db.h over the statements of pg.c.
 *
 * The only file that reads result columns (besides pg.c's connection code
 * and inval.c's own connection): each function names its statement's
 * columns once, here, next to the C value it becomes.
 *
 * Longer than most files on purpose: it is one short function per
 * statement of pg.h, in the same order, and splitting them by table would
 * put the statements of one turn's transaction in several places. */
#include "store/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "store/dbrow.h"

static void snapshot(const PGresult *r, int c, struct db_snapshot *snap)
{
    snap->xmin = dbrow_u64(r, c);
    snap->xmax = dbrow_u64(r, c + 1);
}

/* One JSON text column (c) and the snapshot after it. */
static enum db_status json_and_snapshot(struct pg *pg, enum pg_stmt stmt, int n,
                                        const char *const *p, char **json, struct db_snapshot *snap)
{
    PGresult *r;
    enum db_status st = dbrow_query(pg, stmt, n, p, &r);
    if (st != DB_OK)
        return st;
    *json = dbrow_text(r, 0);
    snapshot(r, 1, snap);
    PQclear(r);
    return *json != NULL ? DB_OK : DB_ERROR;
}

/* ------------------------------------------------------ users and models */

void db_model_free(struct db_model *m)
{
    free(m->name);
    free(m->provider);
    m->name = m->provider = NULL;
}

/* db_access's columns 0..7 of r: the balance, the model row, allowed. */
static enum db_access access_columns(PGresult *r, int model_asked, double *balance,
                                     struct db_model *model)
{
    if (balance != NULL)
        *balance = strtod(PQgetvalue(r, 0, 0), NULL);
    if (!model_asked)
        return DB_ACCESS_OK;
    if (PQgetisnull(r, 0, 1))
        return DB_ACCESS_UNKNOWN_MODEL;
    if (strcmp(PQgetvalue(r, 0, 7), "t") != 0)
        return DB_ACCESS_DENIED;
    model->id = atoi(PQgetvalue(r, 0, 1));
    model->name = dbrow_text(r, 2);
    model->provider = dbrow_text(r, 3);
    model->context_length = atol(PQgetvalue(r, 0, 4));
    model->price_in = strtod(PQgetvalue(r, 0, 5), NULL);
    model->price_out = strtod(PQgetvalue(r, 0, 6), NULL);
    if (model->name == NULL || model->provider == NULL) {
        db_model_free(model);
        return DB_ACCESS_ERROR;
    }
    return DB_ACCESS_OK;
}

enum db_access db_access(struct pg *pg, const char *user_id, const char *model_name, int model_id,
                         double *balance, struct db_model *model)
{
    char id[16];
    snprintf(id, sizeof(id), "%d", model_id);
    const char *p[3] = {user_id, model_name, model_name == NULL && model_id >= 0 ? id : NULL};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_ACCESS, 3, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ACCESS_NO_USER : DB_ACCESS_ERROR;
    enum db_access a = access_columns(r, p[1] != NULL || p[2] != NULL, balance, model);
    PQclear(r);
    return a;
}

enum db_access db_turn_check(struct pg *pg, const char *user_id, const char *model_name,
                             int model_id, const char *session_id, const char *file_name,
                             double *balance, struct db_model *model, struct db_turn_target *target)
{
    char id[16];
    snprintf(id, sizeof(id), "%d", model_id);
    const char *p[5] = {user_id, model_name, model_name == NULL && model_id >= 0 ? id : NULL,
                        session_id, file_name};
    memset(target, 0, sizeof(*target));
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_TURN_CHECK, 5, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ACCESS_NO_USER : DB_ACCESS_ERROR;
    enum db_access a = access_columns(r, p[1] != NULL || p[2] != NULL, balance, model);
    if (a == DB_ACCESS_OK && !PQgetisnull(r, 0, 9)) {
        target->session_found = 1;
        target->next_seq = atoll(PQgetvalue(r, 0, 9));
        if ((target->session_name = dbrow_text(r, 8)) == NULL) {
            db_model_free(model);
            a = DB_ACCESS_ERROR;
        }
    }
    target->file_found = strcmp(PQgetvalue(r, 0, 10), "t") == 0;
    PQclear(r);
    return a;
}

void db_branch_target_free(struct db_branch_target *t)
{
    free(t->session_name);
    free(t->content);
    free(t->parent_content);
    free(t->file_name);
    free(t->prompt);
    t->session_name = t->content = t->parent_content = t->file_name = t->prompt = NULL;
}

enum db_access db_branch_check(struct pg *pg, const char *user_id, const char *model_name,
                               const char *session_id, long long seq, double *balance,
                               struct db_model *model, struct db_branch_target *target)
{
    char sq[24];
    snprintf(sq, sizeof(sq), "%lld", seq);
    const char *p[4] = {user_id, model_name, session_id, sq};
    memset(target, 0, sizeof(*target));
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_BRANCH_CHECK, 4, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ACCESS_NO_USER : DB_ACCESS_ERROR;
    /* No session and no model named: the caller says "no session". */
    target->session_found = !PQgetisnull(r, 0, 9);
    enum db_access a =
        access_columns(r, model_name != NULL || target->session_found, balance, model);
    if (a == DB_ACCESS_OK && target->session_found) {
        int oom = 0;
        target->next_seq = atoll(PQgetvalue(r, 0, 9));
        oom |= (target->session_name = dbrow_text(r, 8)) == NULL;
        if (!PQgetisnull(r, 0, 10)) {
            snprintf(target->role, sizeof(target->role), "%s", PQgetvalue(r, 0, 10));
            target->parent = atoll(PQgetvalue(r, 0, 11));
            oom |= (target->content = dbrow_text(r, 12)) == NULL;
        }
        if (!PQgetisnull(r, 0, 13)) {
            snprintf(target->parent_role, sizeof(target->parent_role), "%s", PQgetvalue(r, 0, 13));
            target->grandparent = atoll(PQgetvalue(r, 0, 14));
            oom |= (target->parent_content = dbrow_text(r, 15)) == NULL;
        }
        target->file_name = dbrow_text_or_null(r, 16);
        oom |= !PQgetisnull(r, 0, 16) && target->file_name == NULL;
        oom |= (target->prompt = dbrow_text(r, 17)) == NULL;
        if (oom) {
            db_branch_target_free(target);
            if (model_name != NULL || target->session_found)
                db_model_free(model);
            a = DB_ACCESS_ERROR;
        }
    }
    PQclear(r);
    return a;
}

enum db_status db_user_profile(struct pg *pg, const char *user_id, char **username,
                               char **models_json, struct db_snapshot *snap)
{
    const char *p[1] = {user_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_USER_GET, 1, p, &r);
    if (st != DB_OK)
        return st;
    *username = dbrow_text(r, 0);
    *models_json = dbrow_text(r, 1);
    snapshot(r, 2, snap);
    PQclear(r);
    if (*username != NULL && *models_json != NULL)
        return DB_OK;
    free(*username);
    free(*models_json);
    return DB_ERROR;
}

enum db_status db_balance(struct pg *pg, const char *user_id, double *balance)
{
    const char *p[1] = {user_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_BALANCE, 1, p, &r);
    if (st != DB_OK)
        return st;
    *balance = strtod(PQgetvalue(r, 0, 0), NULL);
    PQclear(r);
    return DB_OK;
}

enum db_status db_sessions_list(struct pg *pg, const char *user_id, char **json,
                                struct db_snapshot *snap)
{
    const char *p[1] = {user_id};
    return json_and_snapshot(pg, PG_SESSIONS_LIST, 1, p, json, snap);
}

enum db_status db_sessions_page(struct pg *pg, const char *user_id, const char *cursor, int limit,
                                char **json, int *has_more, char **next)
{
    char us[24] = "", id[40] = "", l[16];
    if (cursor != NULL) { /* "<digits>:<uuid>", checked by wire/proto.c */
        size_t n = strcspn(cursor, ":");
        snprintf(us, sizeof(us), "%.*s", (int)(n < sizeof(us) ? n : sizeof(us) - 1), cursor);
        snprintf(id, sizeof(id), "%s", cursor[n] == ':' ? cursor + n + 1 : "");
    }
    snprintf(l, sizeof(l), "%d", limit);
    const char *p[4] = {user_id, cursor != NULL ? us : NULL, cursor != NULL ? id : NULL, l};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SESSIONS_PAGE, 4, p, &r);
    if (st != DB_OK)
        return st;
    *has_more = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    *json = dbrow_text(r, 1);
    *next = *has_more && !PQgetisnull(r, 0, 2) ? dbrow_text(r, 2) : NULL;
    PQclear(r);
    if (*json != NULL && (*next != NULL || !*has_more))
        return DB_OK;
    free(*json);
    free(*next);
    return DB_ERROR;
}

enum db_status db_user_models(struct pg *pg, const char *user_id, char **json)
{
    const char *p[1] = {user_id};
    return dbrow_text_row(pg, PG_USER_MODELS, 1, p, json);
}

enum db_status db_models_list(struct pg *pg, char **json, struct db_snapshot *snap)
{
    return json_and_snapshot(pg, PG_MODELS_LIST, 0, NULL, json, snap);
}

/* ------------------------------------------------------------- sessions */

enum db_status db_chats(struct pg *pg, const char *user_id, const char *session_id, char **json)
{
    const char *p[2] = {user_id, session_id};
    return dbrow_text_row(pg, PG_CHATS_GET, 2, p, json);
}

void db_session_free(struct db_session *s)
{
    free(s->name);
    free(s->summary);
    free(s->recent_json);
    s->name = s->summary = s->recent_json = NULL;
}

enum db_status db_session_get(struct pg *pg, const char *user_id, const char *session_id,
                              long long end, int recent, struct db_session *out)
{
    char n[16], e[24];
    snprintf(n, sizeof(n), "%d", recent);
    snprintf(e, sizeof(e), "%lld", end);
    const char *p[4] = {user_id, session_id, n, e};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SESSION_CTX, 4, p, &r);
    if (st != DB_OK)
        return st;
    out->model_id = atoi(PQgetvalue(r, 0, 0));
    out->name = dbrow_text(r, 1);
    out->summary = dbrow_text(r, 2);
    out->recent_json = dbrow_text(r, 3);
    out->next_seq = atoll(PQgetvalue(r, 0, 4));
    PQclear(r);
    if (out->name != NULL && out->summary != NULL && out->recent_json != NULL)
        return DB_OK;
    db_session_free(out);
    return DB_ERROR;
}

enum db_status db_switch(struct pg *pg, const char *user_id, const char *session_id, long long seq,
                         long long *leaf, uint64_t *xid)
{
    char sq[24];
    snprintf(sq, sizeof(sq), "%lld", seq);
    const char *p[3] = {user_id, session_id, sq};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SWITCH, 3, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    int found = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    *leaf = PQgetisnull(r, 0, 1) ? -1 : atoll(PQgetvalue(r, 0, 1));
    *xid = dbrow_u64(r, 2);
    PQclear(r);
    return found ? DB_OK : DB_NOT_FOUND;
}

enum db_status db_fork_files(struct pg *pg, const char *user_id, const char *session_id,
                             long long seq, char **json)
{
    char sq[24];
    snprintf(sq, sizeof(sq), "%lld", seq);
    const char *p[3] = {user_id, session_id, sq};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_FORK_FILES, 3, p, &r);
    if (st != DB_OK)
        return st;
    *json = dbrow_text_or_null(r, 0);
    st = PQgetisnull(r, 0, 0) || *json != NULL ? DB_OK : DB_ERROR;
    PQclear(r);
    return st;
}

enum db_status db_fork(struct pg *pg, const char *user_id, const char *session_id, long long seq,
                       const char *owner, const char *new_id, const char *name,
                       const char *from_names, const char *to_names, char **fork_name,
                       uint64_t *xid)
{
    char sq[24];
    snprintf(sq, sizeof(sq), "%lld", seq);
    const char *p[8] = {user_id, session_id, sq, new_id, name, from_names, to_names, owner};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_FORK, 8, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0 || PQgetisnull(r, 0, 2)) {
        st = DB_NOT_FOUND;
    } else {
        *fork_name = dbrow_text(r, 2);
        *xid = dbrow_u64(r, 4);
        st = *fork_name != NULL ? DB_OK : DB_ERROR;
    }
    PQclear(r);
    return st;
}

enum db_status db_session_delete(struct pg *pg, const char *user_id, const char *session_id,
                                 char **files_json, uint64_t *xid)
{
    const char *p[2] = {user_id, session_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SESSION_DELETE, 2, p, &r);
    if (st != DB_OK)
        return st;
    *files_json = dbrow_text(r, 0);
    *xid = dbrow_u64(r, 1);
    PQclear(r);
    /* Deleted either way; a list we cannot copy only leaves files behind. */
    return DB_OK;
}

void db_page_free(struct db_page *p)
{
    free(p->name);
    free(p->messages_json);
    free(p->organized_json);
    p->name = p->messages_json = p->organized_json = NULL;
}

enum db_status db_history_page(struct pg *pg, const char *user_id, const char *session_id,
                               long long before, int limit, struct db_page *out)
{
    char b[24], l[16];
    snprintf(b, sizeof(b), "%lld", before);
    snprintf(l, sizeof(l), "%d", limit);
    const char *p[4] = {user_id, session_id, before >= 0 ? b : NULL, l};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_HISTORY_PAGE, 4, p, &r);
    if (st != DB_OK)
        return st;
    out->name = dbrow_text(r, 0);
    out->has_more = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    out->messages_json = dbrow_text(r, 2);
    out->lowest_seq = PQgetisnull(r, 0, 3) ? -1 : atoll(PQgetvalue(r, 0, 3));
    out->organized_json = dbrow_text(r, 4);
    PQclear(r);
    if (out->name != NULL && out->messages_json != NULL && out->organized_json != NULL)
        return DB_OK;
    db_page_free(out);
    return DB_ERROR;
}

enum db_status db_search(struct pg *pg, const char *user_id, const char *query,
                         const struct db_search_scope *scope, int limit, int offset,
                         char **hits_json, int *has_more)
{
    char l[16], o[16];
    snprintf(l, sizeof(l), "%d", limit);
    snprintf(o, sizeof(o), "%d", offset);
    const char *p[7] = {user_id, query, l, o, scope->tag, scope->pinned, scope->archived};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SEARCH, 7, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    *has_more = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    *hits_json = dbrow_text(r, 1);
    PQclear(r);
    return *hits_json != NULL ? DB_OK : DB_ERROR;
}

enum db_status db_session_rename(struct pg *pg, const char *user_id, const char *session_id,
                                 const char *name, uint64_t *xid)
{
    const char *p[3] = {user_id, session_id, name};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SESSION_RENAME, 3, p, &r);
    if (st != DB_OK)
        return st;
    *xid = dbrow_u64(r, 0);
    PQclear(r);
    return DB_OK;
}

enum db_status db_message_role(struct pg *pg, const char *user_id, const char *session_id,
                               long long seq, char role[16])
{
    char s[24];
    snprintf(s, sizeof(s), "%lld", seq);
    const char *p[3] = {user_id, session_id, s};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_MESSAGE_ROLE, 3, p, &r);
    if (st != DB_OK)
        return st;
    snprintf(role, 16, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return DB_OK;
}

enum db_status db_feedback(struct pg *pg, const char *user_id, const char *session_id,
                           long long seq, int rating, const char *comment)
{
    char s[24], rt[8];
    snprintf(s, sizeof(s), "%lld", seq);
    snprintf(rt, sizeof(rt), "%d", rating);
    if (rating == 0) {
        const char *p[2] = {session_id, s};
        return dbrow_command(pg, PG_FEEDBACK_CLEAR, 2, p);
    }
    const char *p[5] = {session_id, s, user_id, rt, comment};
    return dbrow_command(pg, PG_FEEDBACK_SET, 5, p);
}

/* ----------------------------------------------------- one transaction */

enum db_status db_begin(struct pg *pg) { return pg_command(pg, "begin") == 0 ? DB_OK : DB_ERROR; }
enum db_status db_commit(struct pg *pg) { return pg_command(pg, "commit") == 0 ? DB_OK : DB_ERROR; }
void db_rollback(struct pg *pg) { pg_command(pg, "rollback"); }

enum db_status db_session_insert(struct pg *pg, const char *session_id, const char *user_id,
                                 const char *name, int model_id, const char *prompt)
{
    char model[16];
    snprintf(model, sizeof(model), "%d", model_id);
    const char *p[5] = {session_id, user_id, name, model, prompt};
    return dbrow_command(pg, PG_SESSION_INSERT, 5, p);
}

enum db_status db_session_lock(struct pg *pg, const char *user_id, const char *session_id,
                               long long *next_seq, char owner[UUID_STR_LEN + 1])
{
    const char *p[2] = {user_id, session_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SESSION_LOCK, 2, p, &r);
    if (st != DB_OK)
        return st;
    *next_seq = atoll(PQgetvalue(r, 0, 0));
    snprintf(owner, UUID_STR_LEN + 1, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    return DB_OK;
}

/* Columns c.. of row 0: amounts (numeric[] text), refused, resets. */
static void reserve_read(const PGresult *r, int c, struct db_reserve *res)
{
    memset(res, 0, sizeof(*res));
    if (!PQgetisnull(r, 0, c + 1)) {
        snprintf(res->refused, sizeof(res->refused), "%s", PQgetvalue(r, 0, c + 1));
        res->resets = PQgetisnull(r, 0, c + 2) ? 0 : atoll(PQgetvalue(r, 0, c + 2));
        return;
    }
    const char *a = PQgetisnull(r, 0, c) ? "{}" : PQgetvalue(r, 0, c);
    a += *a == '{';
    while (*a != '\0' && *a != '}' && res->n < DB_RESERVE_MAX) {
        size_t k = strcspn(a, ",}");
        snprintf(res->amount[res->n++], DB_MONEY_TEXT, "%.*s", (int)k, a);
        a += k + (a[k] == ',');
    }
}

/* "{1,2,3}" for n ids. */
static void int_array(char *out, size_t cap, const int *v, int n)
{
    size_t k = (size_t)snprintf(out, cap, "{");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%d", i ? "," : "", v[i]);
    if (k < cap)
        snprintf(out + k, cap - k, "}");
}

enum db_status db_lease_take(struct pg *pg, const char *user_id, const char *session_id,
                             const char *turn_id, int seconds, int session_new, const int *models,
                             int n_models, int calls, long long *next_seq, long long *leaf,
                             struct db_reserve *res)
{
    char s[16], ids[DB_RESERVE_MAX * 12 + 3], c[8];
    snprintf(s, sizeof(s), "%d", seconds);
    snprintf(c, sizeof(c), "%d", calls);
    int_array(ids, sizeof(ids), models, n_models < DB_RESERVE_MAX ? n_models : DB_RESERVE_MAX);
    const char *p[7] = {user_id,
                        session_id,
                        turn_id,
                        s,
                        session_new ? "true" : "false",
                        models != NULL ? ids : NULL,
                        c};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_LEASE_TAKE, 7, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    *next_seq = atoll(PQgetvalue(r, 0, 0));
    *leaf = atoll(PQgetvalue(r, 0, 3));
    int taken = dbrow_bool(r, 1);
    int exists = dbrow_bool(r, 2);
    reserve_read(r, 4, res);
    PQclear(r);
    if (res->refused[0] != '\0')
        return DB_REFUSED;
    return taken ? DB_OK : exists ? DB_BUSY : DB_NOT_FOUND;
}

enum db_status db_reserve(struct pg *pg, const char *user_id, const char *hold_id, int model_id,
                          int seconds, long in_tokens, long out_tokens, struct db_reserve *res)
{
    char m[16], s[16], in[24], out[24];
    snprintf(m, sizeof(m), "%d", model_id);
    snprintf(s, sizeof(s), "%d", seconds);
    snprintf(in, sizeof(in), "%ld", in_tokens);
    snprintf(out, sizeof(out), "%ld", out_tokens);
    const char *p[6] = {user_id, hold_id, m, s, in, out};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_RESERVE, 6, p, &r);
    if (st != DB_OK)
        return DB_ERROR; /* one row, always */
    reserve_read(r, 0, res);
    PQclear(r);
    return res->refused[0] != '\0' ? DB_REFUSED : DB_OK;
}

enum db_status db_reserve_drop(struct pg *pg, const char *hold_id)
{
    const char *p[1] = {hold_id};
    return dbrow_command(pg, PG_RESERVE_DROP, 1, p);
}

enum db_status db_reserve_drop_slot(struct pg *pg, const char *hold_id, int slot)
{
    char sl[16];
    snprintf(sl, sizeof(sl), "%d", slot);
    const char *p[2] = {hold_id, sl};
    return dbrow_command(pg, PG_SLOT_DROP, 2, p);
}

enum db_status db_session_turn(struct pg *pg, const char *user_id, const char *session_id,
                               long long *next_seq, char turn_id[UUID_STR_LEN + 1])
{
    const char *p[2] = {user_id, session_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_SESSION_TURN, 2, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    int none = PQgetisnull(r, 0, 0) && PQgetisnull(r, 0, 1);
    *next_seq = PQgetisnull(r, 0, 0) ? 0 : atoll(PQgetvalue(r, 0, 0));
    snprintf(turn_id, UUID_STR_LEN + 1, "%s", PQgetisnull(r, 0, 1) ? "" : PQgetvalue(r, 0, 1));
    PQclear(r);
    return none ? DB_NOT_FOUND : DB_OK;
}

enum db_status db_turn_stop(struct pg *pg, const char *user_id, const char *session_id,
                            char turn_id[UUID_STR_LEN + 1])
{
    const char *p[2] = {user_id, session_id};
    char *t = NULL;
    enum db_status st = dbrow_text_row(pg, PG_TURN_STOP, 2, p, &t);
    if (st == DB_OK)
        snprintf(turn_id, UUID_STR_LEN + 1, "%s", t);
    free(t);
    return st;
}

enum db_outcome db_turn_outcome(struct pg *pg, const char *user_id, const char *session_id,
                                const char *turn_id, char **reply, char **session_name,
                                long long *deltas)
{
    *reply = *session_name = NULL;
    *deltas = 0;
    /* First the lease, if it ran out: from then on the turn cannot be
     * stored, so what the next statement reads is final. */
    const char *e[2] = {session_id, turn_id};
    if (dbrow_command(pg, PG_LEASE_EXPIRE, 2, e) == DB_ERROR)
        return DB_OUTCOME_ERROR;
    const char *p[3] = {user_id, session_id, turn_id};
    PGresult *r;
    if (dbrow_query(pg, PG_TURN_OUTCOME, 3, p, &r) != DB_OK)
        return DB_OUTCOME_ERROR; /* one row, always */
    enum db_outcome out;
    if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
        out = DB_OUTCOME_RUNNING;
    } else if (strcmp(PQgetvalue(r, 0, 1), "t") != 0) {
        out = DB_OUTCOME_LOST;
    } else if (PQgetisnull(r, 0, 2) || PQgetisnull(r, 0, 3)) {
        out = DB_OUTCOME_STORED_GONE;
    } else if ((*reply = strdup(PQgetvalue(r, 0, 2))) == NULL ||
               (*session_name = strdup(PQgetvalue(r, 0, 3))) == NULL) {
        free(*reply);
        *reply = NULL;
        out = DB_OUTCOME_ERROR;
    } else {
        *deltas = atoll(PQgetvalue(r, 0, 4));
        out = DB_OUTCOME_STORED;
    }
    PQclear(r);
    return out;
}

enum db_status db_turn_stored(struct pg *pg, const char *session_id, const char *turn_id, int slot,
                              long long *seq, char **reply, char *balance, size_t cap)
{
    char sl[16];
    snprintf(sl, sizeof(sl), "%d", slot);
    const char *p[3] = {turn_id, sl, session_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_TURN_STORED, 3, p, &r);
    if (st != DB_OK)
        return st;
    *seq = atoll(PQgetvalue(r, 0, 0));
    *reply = dbrow_text(r, 1);
    snprintf(balance, cap, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    return *reply != NULL ? DB_OK : DB_ERROR;
}

void db_client_turn_free(struct db_client_turn *ct)
{
    free(ct->session_name);
    free(ct->reply);
    ct->session_name = ct->reply = NULL;
}

enum db_status db_client_turn(struct pg *pg, const char *user_id, const char *client_turn_id,
                              struct db_client_turn *out)
{
    memset(out, 0, sizeof(*out));
    const char *p[2] = {user_id, client_turn_id};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_CLIENT_TURN, 2, p, &r);
    if (st != DB_OK)
        return st;
    snprintf(out->session_id, sizeof(out->session_id), "%s", PQgetvalue(r, 0, 0));
    out->session_name = dbrow_text(r, 1);
    out->temporary = dbrow_bool(r, 2);
    out->reply = dbrow_text(r, 3);
    out->base = atoll(PQgetvalue(r, 0, 4));
    out->n = atoll(PQgetvalue(r, 0, 5));
    out->parent = PQgetisnull(r, 0, 6) ? -1 : atoll(PQgetvalue(r, 0, 6));
    PQclear(r);
    if (out->session_name != NULL && out->reply != NULL)
        return DB_OK;
    db_client_turn_free(out);
    return DB_ERROR;
}

enum db_status db_lease_drop(struct pg *pg, const char *session_id, const char *turn_id)
{
    const char *p[2] = {session_id, turn_id};
    return dbrow_command(pg, PG_LEASE_DROP, 2, p);
}

/* The eight parameters a charge adds to a statement, from kind to
 * estimated, in the order charge and turn_store take them; t holds the
 * numbers as text while p is used. */
struct charge_text {
    char model[16], pt[16], ct[16];
};
static void charge_params(const struct db_charge *c, struct charge_text *t, const char **p)
{
    snprintf(t->model, sizeof(t->model), "%d", c->model_id);
    snprintf(t->pt, sizeof(t->pt), "%u", c->prompt_tokens);
    snprintf(t->ct, sizeof(t->ct), "%u", c->completion_tokens);
    p[0] = c->kind;
    p[1] = c->model_id >= 0 ? t->model : NULL;
    p[2] = c->model_name;
    p[3] = c->cost;
    p[4] = c->summary_cost != NULL ? c->summary_cost : "0";
    p[5] = c->prompt_tokens > 0 ? t->pt : NULL;
    p[6] = c->completion_tokens > 0 ? t->ct : NULL;
    p[7] = c->estimated ? "true" : "false";
}

enum db_status db_charge(struct pg *pg, struct db_charge *c, uint64_t *xid)
{
    char seq[24];
    struct charge_text t;
    snprintf(seq, sizeof(seq), "%lld", c->seq);
    const char *p[12] = {c->user_id, c->session_id, seq};
    charge_params(c, &t, p + 3);
    p[11] = c->hold_id;
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_CHARGE, 12, p, &r);
    if (st != DB_OK)
        return st;
    snprintf(c->balance, sizeof(c->balance), "%s", PQgetvalue(r, 0, 0));
    if (xid != NULL)
        *xid = dbrow_u64(r, 1);
    PQclear(r);
    return DB_OK;
}

enum db_store db_turn_store(struct pg *pg, const struct db_turn_store *in, struct db_charge *c,
                            long long *base, uint64_t *xid, int *stopped_here)
{
    *stopped_here = 0;
    char n[8], parent[24], first[8];
    struct charge_text t;
    snprintf(n, sizeof(n), "%d", in->n_messages);
    snprintf(parent, sizeof(parent), "%lld", in->parent);
    snprintf(first, sizeof(first), "%d", in->first);
    char slot[8];
    snprintf(slot, sizeof(slot), "%d", in->slot);
    const char *p[23] = {in->user_id, in->session_id, in->turn_id,   n,
                         in->message, in->reply,      in->file_name, in->summary};
    charge_params(c, &t, p + 8);
    const char *stopped = in->reply_stopped ? "true" : "false";
    char deltas[24];
    snprintf(deltas, sizeof(deltas), "%lld", in->deltas);
    if (in->session_new) { /* its name and prompt come before these two */
        p[16] = in->session_name;
        p[17] = in->prompt;
        p[18] = stopped;
        p[19] = deltas;
        p[20] = slot;
        p[21] = in->temporary ? "true" : "false";
    } else { /* and the chain's place after them */
        p[16] = stopped;
        p[17] = deltas;
        p[18] = parent;
        p[19] = first;
        p[20] = in->keep_lease ? "true" : "false";
        p[21] = slot;
    }
    p[22] = in->client_turn_id;
    PGresult *r;
    enum db_status st = in->session_new ? dbrow_query(pg, PG_TURN_STORE_NEW, 23, p, &r)
                                        : dbrow_query(pg, PG_TURN_STORE, 23, p, &r);
    if (st != DB_OK && pg->lost)
        return DB_STORE_UNKNOWN;
    if (st != DB_OK && strcmp(pg->sqlstate, "23505") == 0 &&
        strcmp(pg->constraint, "client_turns_pkey") == 0)
        return DB_STORE_DUPLICATE;
    if (st != DB_OK)
        return DB_STORE_ERROR; /* one row, always */
    enum db_store out;
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        out = DB_STORE_NO_SESSION;
    } else if (strcmp(PQgetvalue(r, 0, 1), "t") != 0) {
        out = DB_STORE_FENCED;
    } else if (PQgetisnull(r, 0, 2) || PQgetisnull(r, 0, 4) ||
               atoi(PQgetvalue(r, 0, 3)) != in->n_messages) {
        out = DB_STORE_ERROR; /* cannot happen: each step follows the last */
    } else {
        *base = atoll(PQgetvalue(r, 0, 2));
        c->seq = *base + 1 - in->first; /* the answer's */
        snprintf(c->balance, sizeof(c->balance), "%s", PQgetvalue(r, 0, 4));
        *xid = dbrow_u64(r, 5);
        *stopped_here = strcmp(PQgetvalue(r, 0, 6), "t") == 0;
        out = DB_STORE_OK;
    }
    PQclear(r);
    return out;
}

enum db_status db_usage(struct pg *pg, const char *user_id, long long since_us, long long until_us,
                        char **json)
{
    char a[24], b[24];
    snprintf(a, sizeof(a), "%lld", since_us);
    snprintf(b, sizeof(b), "%lld", until_us);
    const char *p[3] = {user_id, since_us >= 0 ? a : NULL, until_us >= 0 ? b : NULL};
    return dbrow_text_row(pg, PG_USAGE, 3, p, json);
}

enum db_status db_title_set(struct pg *pg, const char *user_id, const char *session_id,
                            const char *title, uint64_t *xid)
{
    const char *p[3] = {user_id, session_id, title};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_TITLE_SET, 3, p, &r);
    if (st != DB_OK)
        return st;
    *xid = dbrow_u64(r, 0);
    PQclear(r);
    return DB_OK;
}

/* ---------------------------------------------------------------- export */

void db_export_session_free(struct db_export_session *s)
{
    free(s->session_id);
    free(s->name);
    free(s->created_at);
    free(s->prompt);
    free(s->model);
    memset(s, 0, sizeof(*s));
}

enum db_status db_export_session(struct pg *pg, const char *user_id, const char *session_id,
                                 struct db_export_session *out)
{
    const char *p[2] = {user_id, session_id};
    PGresult *r;
    memset(out, 0, sizeof(*out));
    enum db_status st = dbrow_query(pg, PG_EXPORT_SESSION, 2, p, &r);
    if (st != DB_OK)
        return st;
    out->name = dbrow_text(r, 0);
    out->created_at = dbrow_text(r, 1);
    out->prompt = dbrow_text(r, 2);
    out->model = dbrow_text(r, 3);
    PQclear(r);
    if (out->name && out->created_at && out->prompt && out->model)
        return DB_OK;
    db_export_session_free(out);
    return DB_ERROR;
}

enum db_status db_export_sessions(struct pg *pg, const char *user_id, long long cursor_us,
                                  const char *cursor_id, int limit, struct db_export_session **out,
                                  int *n)
{
    char c[24], l[16];
    snprintf(c, sizeof(c), "%lld", cursor_us);
    snprintf(l, sizeof(l), "%d", limit);
    const char *p[4] = {user_id, cursor_us >= 0 ? c : NULL, cursor_us >= 0 ? cursor_id : NULL, l};
    *out = NULL;
    *n = 0;
    PGresult *r = pg_exec(pg, PG_EXPORT_SESSIONS, 4, p);
    if (r == NULL)
        return DB_ERROR;
    int rows = PQntuples(r);
    struct db_export_session *v = calloc(rows > 0 ? (size_t)rows : 1, sizeof(*v));
    if (v == NULL)
        goto fail;
    for (int i = 0; i < rows; i++) {
        v[i].session_id = strdup(PQgetvalue(r, i, 0));
        v[i].name = strdup(PQgetvalue(r, i, 1));
        v[i].created_at = strdup(PQgetvalue(r, i, 2));
        v[i].prompt = strdup(PQgetvalue(r, i, 3));
        v[i].model = strdup("");
        v[i].cursor_us = atoll(PQgetvalue(r, i, 4));
        if (!v[i].session_id || !v[i].name || !v[i].created_at || !v[i].prompt || !v[i].model) {
            for (int j = 0; j <= i; j++)
                db_export_session_free(&v[j]);
            free(v);
            goto fail;
        }
    }
    PQclear(r);
    *out = v;
    *n = rows;
    return DB_OK;
fail:
    PQclear(r);
    return DB_ERROR;
}

enum db_status db_export_page(struct pg *pg, const char *user_id, const char *session_id,
                              long long after, int limit, int all_branches, char **path,
                              char **json, long long *last_seq)
{
    if (!all_branches && *path == NULL) {
        /* The path's runs, once: each page then reads key ranges, so an
         * export costs the same per page whatever the session's length. */
        const char *q[2] = {user_id, session_id};
        enum db_status st = dbrow_text_row(pg, PG_EXPORT_PATH, 2, q, path);
        if (st != DB_OK)
            return st == DB_NOT_FOUND ? DB_ERROR : st; /* checked before: deleted meanwhile */
    }
    char a[24], l[16];
    snprintf(a, sizeof(a), "%lld", after);
    snprintf(l, sizeof(l), "%d", limit);
    const char *p[5] = {user_id, session_id, a, l, *path};
    PGresult *r;
    enum db_status st = all_branches ? dbrow_query(pg, PG_EXPORT_TREE_PAGE, 4, p, &r)
                                     : dbrow_query(pg, PG_EXPORT_PAGE, 5, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st; /* one row, always */
    *json = dbrow_text(r, 0);
    *last_seq = PQgetisnull(r, 0, 1) ? -1 : atoll(PQgetvalue(r, 0, 1));
    PQclear(r);
    return *json != NULL ? DB_OK : DB_ERROR;
}

/* ---------------------------------------------------------------- files */

enum db_status db_file_insert(struct pg *pg, const char *session_id, const char *user_id,
                              const char *name, const char *original_name, const char *content_type,
                              uint64_t size, uint64_t *xid)
{
    char sz[24];
    snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size);
    const char *p[6] = {session_id, user_id, name, original_name, content_type, sz};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_FILE_INSERT, 6, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st;
    *xid = dbrow_u64(r, 0);
    PQclear(r);
    return DB_OK;
}

enum db_status db_file_delete(struct pg *pg, const char *user_id, const char *session_id,
                              const char *name)
{
    const char *p[3] = {user_id, session_id, name};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_FILE_DELETE, 3, p, &r);
    if (st == DB_OK)
        PQclear(r);
    return st;
}

/* ---------------------------------------------------------------- other */

enum db_status db_turns_since(struct pg *pg, const char *user_id, long long minute_start,
                              long long day_start, long long *minute, long long *day)
{
    char ms[24], ds[24];
    snprintf(ms, sizeof(ms), "%lld", minute_start);
    snprintf(ds, sizeof(ds), "%lld", day_start);
    const char *p[3] = {user_id, ms, ds};
    PGresult *r;
    enum db_status st = dbrow_query(pg, PG_TURNS_SINCE, 3, p, &r);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? DB_ERROR : st;
    *minute = atoll(PQgetvalue(r, 0, 0));
    *day = atoll(PQgetvalue(r, 0, 1));
    PQclear(r);
    return DB_OK;
}

enum db_status db_ping(struct pg *pg) { return dbrow_command(pg, PG_PING, 0, NULL); }
