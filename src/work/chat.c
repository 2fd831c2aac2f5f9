/* chat.c - code 3: the checks of a chat turn, in the documented order:
 * user 3, model 24/7, balance 15, session 18, file 17, then the per-user
 * rate limits 28/27 (work/ratelimit.h). A turn that passes them runs in
 * work/turn.c. */
#include "work/chat.h"

#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/uuid.h"
#include "store/db.h"
#include "wire/auth.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/links.h"
#include "work/outbox.h"
#include "work/ratelimit.h"
#include "work/request.h"
#include "work/resend.h"
#include "work/turn.h"

#define CHAT_SESSION_NAME_CHARS 20

/* --------------------------------------------------------------- checks */

/* The checks of code 3, in the documented order. */
static enum turn_error chat_check(struct worker *w, struct turn *t, const struct proto_request *q,
                                  int *wait_seconds)
{
    const struct config *cfg = t->app->cfg;
    struct db_model model = {0};
    struct db_turn_target target;
    /* The client may send back the file reference it was given (signed
     * with AUTH_MODE=jwt): the stored name is what comes before any '?'. */
    int has_file = q->file_name[0] != '\0';
    if (has_file && !q->session_new &&
        auth_file_ref_name(q->file_name, t->file_name, strlen(t->file_name) + 1) != 0)
        t->file_name[0] = '\0'; /* matches no stored file */
    enum turn_error access = turn_access_error(db_turn_check(
        &w->pg, q->user_id, q->model_name, q->model_id, q->session_new ? NULL : q->session_id,
        has_file && !q->session_new ? t->file_name : NULL, &t->balance, &model, &target));
    if (access != TURN_OK)
        return access;
    t->session_name = target.session_name; /* NULL for a new or missing one */
    t->model_id = model.id;
    t->model_name = model.name; /* the turn owns them now */
    t->provider = model.provider;
    t->context_length = model.context_length;
    if (!(t->balance > 0))
        return TURN_NO_BALANCE;

    if (q->session_new) {
        if (uuid_generate(t->session_id) != 0)
            return TURN_CREATE_SESSION;
        t->session_new = 1;
        t->temporary = q->temporary;
        t->session_name =
            strndup(q->message, proto_utf8_prefix(q->message, CHAT_SESSION_NAME_CHARS));
    } else {
        memcpy(t->session_id, q->session_id, sizeof(t->session_id));
        if (!target.session_found)
            return TURN_NO_SESSION;
        t->seen_seq = target.next_seq;
    }
    if (t->session_name == NULL)
        return TURN_INTERNAL;

    if (has_file) {
        /* A file is uploaded into a session first; the row proves it is
         * this user's, in this session. */
        if (t->session_new || !target.file_found)
            return TURN_BAD_FILE;
        if ((t->file_url = links_file_url(cfg, t->file_name)) == NULL)
            return TURN_INTERNAL;
    }

    /* Last, so that only a turn that would otherwise run is counted: a
     * request refused for any other reason does not use up the quota. */
    switch (ratelimit_check(&w->cache, &w->pg, cfg, t->user_id, wait_seconds)) {
    case RATELIMIT_OVER_DAY:
        return TURN_DAY_LIMIT;
    case RATELIMIT_OVER_MINUTE:
        return TURN_MINUTE_LIMIT;
    case RATELIMIT_OK:
        break;
    }
    return TURN_OK;
}

void chat_handle(struct worker *w, struct work_request *r)
{
    struct app *app = r->app;
    if (resend_answer(w, app, r->conn_id, &r->req))
        return;
    struct turn *t = turn_new(app, r->conn_id);
    if (t == NULL) {
        outbox_reply_error(app->outbox, r->conn_id, PROTO_CHAT, PERR_INTERNAL, NULL);
        return;
    }
    t->stream = r->req.stream;
    memcpy(t->client_turn_id, r->req.client_turn_id, sizeof(t->client_turn_id));
    memcpy(t->user_id, r->req.user_id, sizeof(t->user_id));
    t->message = strdup(r->req.message);
    t->prompt = strdup(r->req.session_prompt);
    t->file_name = strdup(r->req.file_name);

    int wait_seconds = 0; /* refused by a rate limit: until its window ends */
    enum turn_error err = (t->message && t->prompt && t->file_name)
                              ? chat_check(w, t, &r->req, &wait_seconds)
                              : TURN_INTERNAL;
    if (err != TURN_OK) {
        turn_refuse(t, err,
                    err == TURN_BAD_FILE ? "Invalid field 'file_name': no such file in this session"
                                         : NULL,
                    wait_seconds);
        return;
    }
    turn_begin(w, t); /* takes our reference */
}
