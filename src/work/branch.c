/* branch.c - codes 17..20 (see branch.h). */
#include "work/branch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/uuid.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/files.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/events.h"
#include "work/links.h"
#include "work/outbox.h"
#include "work/ratelimit.h"
#include "work/request.h"
#include "work/resend.h"
#include "work/turn.h"

#define BRANCH_NO_MESSAGE "Invalid field 'seq': no such message in this session"

/* ------------------------------------------------------- 17 and 18: turns */

/* The checks of codes 17 and 18, in code 3's order: user 3, model 24/7,
 * balance 15, session 18, then the message seq (17, with *why), then the
 * rate limits 28/27. want_role is the role seq must have. */
static enum turn_error branch_check(struct worker *w, struct turn *t, const struct proto_request *q,
                                    const char *model_name, const char *want_role, const char **why,
                                    int *wait_seconds)
{
    struct db_model model = {0};
    struct db_branch_target target;
    enum turn_error access = turn_access_error(db_branch_check(
        &w->pg, q->user_id, model_name, q->session_id, q->seq, &t->balance, &model, &target));
    if (access != TURN_OK)
        return access;
    t->model_id = model.id;
    t->model_name = model.name; /* the turn owns them now (NULL: none read) */
    t->provider = model.provider;
    t->context_length = model.context_length;
    enum turn_error err = TURN_OK;
    if (!(t->balance > 0)) {
        err = TURN_NO_BALANCE;
        goto out;
    }
    if (!target.session_found) {
        err = TURN_NO_SESSION;
        goto out;
    }
    if (strcmp(target.role, want_role) != 0) {
        *why = target.role[0] == '\0' ? BRANCH_NO_MESSAGE
               : strcmp(want_role, "user") == 0
                   ? "Invalid field 'seq': only user messages are edited"
                   : "Invalid field 'seq': only assistant messages "
                     "are regenerated";
        err = TURN_BAD_SEQ;
        goto out;
    }
    memcpy(t->session_id, q->session_id, sizeof(t->session_id));
    t->seen_seq = target.next_seq;
    t->follow_leaf = 0;
    t->session_name = target.session_name;
    t->prompt = target.prompt;
    target.session_name = target.prompt = NULL;
    if (strcmp(want_role, "user") == 0) { /* an edit: beside seq, on seq's path */
        t->message = strdup(q->message);
        t->parent = t->ctx_end = target.parent;
    } else { /* a new answer: beside seq, to its question, on the question's path */
        if (strcmp(target.parent_role, "user") != 0) {
            /* written by plain SQL without a question before it */
            *why = "Invalid field 'seq': this answer has no question to answer again";
            err = TURN_BAD_SEQ;
            goto out;
        }
        t->message = target.parent_content;
        target.parent_content = NULL;
        t->first = 1;
        t->parent = target.parent;
        t->ctx_end = target.grandparent;
    }
    if (target.file_name != NULL) { /* the turn's file goes with it */
        t->file_name = target.file_name;
        target.file_name = NULL;
        if ((t->file_url = links_file_url(t->app->cfg, t->file_name)) == NULL) {
            err = TURN_INTERNAL;
            goto out;
        }
    } else if ((t->file_name = strdup("")) == NULL) {
        err = TURN_INTERNAL;
        goto out;
    }
    if (t->message == NULL || t->session_name == NULL || t->prompt == NULL) {
        err = TURN_INTERNAL;
        goto out;
    }
    switch (ratelimit_check(&w->cache, &w->pg, t->app->cfg, t->user_id, wait_seconds)) {
    case RATELIMIT_OVER_DAY:
        err = TURN_DAY_LIMIT;
        break;
    case RATELIMIT_OVER_MINUTE:
        err = TURN_MINUTE_LIMIT;
        break;
    case RATELIMIT_OK:
        break;
    }
out:
    db_branch_target_free(&target);
    return err;
}

/* Answer i of a compare, beside lead (checked): the same question in the
 * same place, by model_name, which must be one of the user's (24/7). */
static enum turn_error branch_answer(struct worker *w, const struct turn *lead, struct turn *a,
                                     const char *model_name)
{
    struct db_model model = {0};
    enum turn_error access =
        turn_access_error(db_access(&w->pg, lead->user_id, model_name, -1, NULL, &model));
    if (access != TURN_OK)
        return access;
    a->model_id = model.id;
    a->model_name = model.name;
    a->provider = model.provider;
    a->context_length = model.context_length;
    a->code = lead->code;
    a->stream = lead->stream;
    memcpy(a->client_turn_id, lead->client_turn_id, sizeof(a->client_turn_id));
    memcpy(a->user_id, lead->user_id, sizeof(a->user_id));
    memcpy(a->session_id, lead->session_id, sizeof(a->session_id));
    a->balance = lead->balance;
    a->seen_seq = lead->seen_seq;
    a->follow_leaf = 0;
    a->first = lead->first;
    a->parent = lead->parent;
    a->ctx_end = lead->ctx_end;
    a->session_name = strdup(lead->session_name);
    a->prompt = strdup(lead->prompt);
    a->message = strdup(lead->message);
    a->file_name = strdup(lead->file_name);
    a->file_url = lead->file_url != NULL ? strdup(lead->file_url) : NULL;
    if (a->session_name == NULL || a->prompt == NULL || a->message == NULL ||
        a->file_name == NULL || (lead->file_url != NULL && a->file_url == NULL))
        return TURN_INTERNAL;
    return TURN_OK;
}

/* Code 18 with model_names: the lead checked as any new answer, then one
 * more answer per model, run side by side (turn_group_make). */
static enum turn_error branch_compare(struct worker *w, struct turn *lead,
                                      const struct proto_request *q, const char **why,
                                      int *wait_seconds)
{
    enum turn_error err =
        branch_check(w, lead, q, q->model_names[0], "assistant", why, wait_seconds);
    struct turn *m[PROTO_COMPARE_MAX] = {lead};
    int n = 1;
    for (; err == TURN_OK && n < q->n_models; n++) {
        if ((m[n] = turn_new(lead->app, lead->conn_id)) == NULL) {
            err = TURN_INTERNAL;
            break;
        }
        err = branch_answer(w, lead, m[n], q->model_names[n]);
        if (err != TURN_OK) {
            n++; /* freed below with the others */
            break;
        }
    }
    if (err == TURN_OK && turn_group_make(m, n) == 0)
        return TURN_OK; /* the group holds the answers now */
    for (int i = 1; i < n; i++)
        if (m[i] != NULL)
            turn_unref(m[i]);
    return err != TURN_OK ? err : TURN_INTERNAL;
}

/* Codes 17 and 18: checks, then the turn of work/turn.c. */
static void branch_turn(struct worker *w, struct work_request *r, const char *want_role)
{
    struct app *app = r->app;
    const struct proto_request *q = &r->req;
    if (resend_answer(w, app, r->conn_id, q))
        return;
    struct turn *t = turn_new(app, r->conn_id);
    if (t == NULL) {
        outbox_reply_error(app->outbox, r->conn_id, q->type, PERR_INTERNAL, NULL);
        return;
    }
    t->code = q->type;
    t->stream = q->stream;
    memcpy(t->client_turn_id, q->client_turn_id, sizeof(t->client_turn_id));
    memcpy(t->user_id, q->user_id, sizeof(t->user_id));
    const char *why = NULL;
    int wait_seconds = 0;
    enum turn_error err =
        q->n_models > 0 ? branch_compare(w, t, q, &why, &wait_seconds)
                        : branch_check(w, t, q, q->model_name, want_role, &why, &wait_seconds);
    if (err != TURN_OK) {
        turn_refuse(t, err, why, wait_seconds);
        return;
    }
    turn_begin(w, t); /* takes our reference */
}

void branch_edit(struct worker *w, struct work_request *r) { branch_turn(w, r, "user"); }

void branch_regenerate(struct worker *w, struct work_request *r) { branch_turn(w, r, "assistant"); }

/* ------------------------------------------------------------ 19: switch */

void branch_switch(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct outbox *ob = r->app->outbox;
    long long leaf = -1;
    uint64_t xid = 0;
    switch (db_switch(&w->pg, q->user_id, q->session_id, q->seq, &leaf, &xid)) {
    case DB_OK:
        break;
    case DB_NOT_FOUND:
        outbox_reply_error(ob, r->conn_id, q->type, PERR_NO_SESSION, NULL);
        return;
    default:
        outbox_reply_error(ob, r->conn_id, q->type, PERR_INTERNAL, NULL);
        return;
    }
    if (leaf < 0) {
        outbox_reply_error(ob, r->conn_id, q->type, PERR_INVALID_FIELD, BRANCH_NO_MESSAGE);
        return;
    }
    /* Every tab of the user, on every chatd, shows the same path. */
    events_emit(r->app, q->user_id,
                json_pack("{s:s, s:s, s:I}", "kind", "branch_switched", "session_id", q->session_id,
                          "active_leaf", (json_int_t)leaf));
    outbox_reply(ob, r->conn_id, q->type,
                 json_pack("{s:s, s:s, s:I}", "user_id", q->user_id, "session_id", q->session_id,
                           "active_leaf", (json_int_t)leaf));
}

/* -------------------------------------------------------------- 20: fork */

/* Removes the stored files of list, a PostgreSQL array literal of
 * names ("{a,b}"), which this request made and nothing refers to. */
static void branch_remove_listed(const struct config *cfg, const char *list)
{
    char *copy = list != NULL ? strdup(list) : NULL, *save = NULL;
    if (copy == NULL)
        return;
    for (char *c = strtok_r(copy, "{,}", &save); c != NULL; c = strtok_r(NULL, "{,}", &save))
        files_remove(cfg, c);
    free(copy);
}

/* Links a copy of each stored file named in names (a JSON array) and
 * writes both lists as PostgreSQL array literals (the names are of the
 * stored shape: hex and an extension, nothing to quote). 0, or -1 with
 * every copy made removed again. */
static int branch_copy_files(const struct config *cfg, json_t *names, char **from, char **to)
{
    size_t n = json_array_size(names), cap = 3 + n * (FILES_NAME_MAX + 1);
    char *f = *from = calloc(1, cap), *t = *to = calloc(1, cap);
    if (f == NULL || t == NULL)
        goto fail;
    *f++ = '{';
    *t++ = '{';
    for (size_t i = 0; i < n; i++) {
        const char *name = json_string_value(json_array_get(names, i));
        char copy[FILES_NAME_MAX];
        if (name == NULL || strlen(name) >= FILES_NAME_MAX || files_link(cfg, name, copy) != 0)
            goto fail;
        f += sprintf(f, "%s%s", i > 0 ? "," : "", name);
        t += sprintf(t, "%s%s", i > 0 ? "," : "", copy);
    }
    strcpy(f, "}");
    strcpy(t, "}");
    return 0;
fail:
    branch_remove_listed(cfg, *to); /* the copies made so far */
    free(*from);
    free(*to);
    *from = *to = NULL;
    return -1;
}

void branch_fork(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct app *app = r->app;
    const struct config *cfg = app->cfg;
    char *files_json = NULL, *from = NULL, *to = NULL, *name = NULL, *shared_name = NULL;
    json_t *files = NULL;
    int code = PERR_INTERNAL;
    const char *why = NULL;
    /* What is copied: the user's own session up to seq, or what a share
     * link shows (another user's session, up to the link's message). */
    char src_user[UUID_STR_LEN + 1], src_session[UUID_STR_LEN + 1];
    long long seq = q->seq;
    memcpy(src_user, q->user_id, sizeof(src_user));
    memcpy(src_session, q->session_id, sizeof(src_session));
    if (q->share_id[0] != '\0') {
        switch (db_access(&w->pg, q->user_id, NULL, -1, NULL, NULL)) {
        case DB_ACCESS_OK:
            break;
        case DB_ACCESS_NO_USER:
            code = PERR_NO_USER;
            goto fail;
        default:
            goto fail;
        }
        enum db_status st =
            db_share_source(&w->pg, q->share_id, src_user, src_session, &seq, &shared_name);
        if (st != DB_OK) {
            code = st == DB_NOT_FOUND ? PERR_NO_SHARE : PERR_INTERNAL;
            goto fail;
        }
    }
    switch (db_fork_files(&w->pg, src_user, src_session, seq, &files_json)) {
    case DB_OK:
        break;
    case DB_NOT_FOUND:
        code = q->share_id[0] != '\0' ? PERR_NO_SHARE : PERR_NO_SESSION;
        goto fail;
    default:
        goto fail;
    }
    if (files_json == NULL) {
        code = PERR_INVALID_FIELD;
        why = BRANCH_NO_MESSAGE;
        goto fail;
    }
    files = json_loads(files_json, 0, NULL);
    if (!json_is_array(files) || branch_copy_files(cfg, files, &from, &to) != 0)
        goto fail;
    char id[UUID_STR_LEN + 1];
    uint64_t xid = 0;
    /* From a link, the name it was shared under: never one the owner
     * gave it since. */
    char fork_name[PROTO_NAME_MAX_CHARS * 4 + sizeof(" (fork)")] = "";
    if (shared_name != NULL && strlen(shared_name) + sizeof(" (fork)") <= sizeof(fork_name))
        snprintf(fork_name, sizeof(fork_name), "%s (fork)", shared_name);
    enum db_status st = uuid_generate(id) == 0
                            ? db_fork(&w->pg, src_user, src_session, seq, q->user_id, id,
                                      q->session_name[0] != '\0' ? q->session_name
                                      : fork_name[0] != '\0'     ? fork_name
                                                                 : NULL,
                                      from, to, &name, &xid)
                            : DB_ERROR;
    if (st != DB_OK) {
        branch_remove_listed(cfg, to); /* the copies are nobody's */
        if (st == DB_NOT_FOUND)        /* deleted since the first step */
            code = q->share_id[0] != '\0' ? PERR_NO_SHARE : PERR_NO_SESSION;
        goto fail;
    }
    /* Before the answer: this chatd lists the new session at once. */
    cache_saw_write(&w->cache, q->user_id, xid);
    log_info("event=session_forked session=%s seq=%lld fork=%s files=%zu shared=%d", src_session,
             seq, id, json_array_size(files), q->share_id[0] != '\0');
    events_emit(app, q->user_id,
                json_pack("{s:s, s:s, s:s}", "kind", "session_created", "session_id", id,
                          "session_name", name));
    /* From a link, the reply names the link, never the owner's session. */
    json_t *from_what =
        q->share_id[0] != '\0'
            ? json_pack("{s:s}", "share_id", q->share_id)
            : json_pack("{s:s, s:I}", "session_id", q->session_id, "seq", (json_int_t)q->seq);
    outbox_reply(app->outbox, r->conn_id, q->type,
                 json_pack("{s:s, s:s, s:s, s:o}", "user_id", q->user_id, "session_id", id,
                           "session_name", name, "forked_from", from_what));
    goto out;
fail:
    outbox_reply_error(app->outbox, r->conn_id, q->type, code, why);
out:
    free(shared_name);
    free(files_json);
    free(from);
    free(to);
    free(name);
    json_decref(files);
}
