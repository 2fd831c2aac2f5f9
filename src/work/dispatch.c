/* dispatch.c - the table from message code to handler (see dispatch.h). */
#include "work/dispatch.h"

#include <stdlib.h>

#include "lib/log.h"
#include "lib/metrics.h"
#include "work/app.h"
#include "work/branch.h"
#include "work/budget.h"
#include "work/chat.h"
#include "work/events.h"
#include "work/handlers.h"
#include "work/history.h"
#include "work/organize.h"
#include "work/outbox.h"
#include "work/request.h"
#include "work/share.h"

/* One row per code a client may send: its name (metrics, logs), the
 * decoder of its data (wire/proto.h) and the handler that answers it. */
static const struct dispatch_row dispatch_table[] = {
    {PROTO_USER_DETAILS, "user_details", proto_data_user, handlers_user_details},
    {PROTO_LIST_SESSIONS, "list_sessions", proto_data_list_sessions, handlers_list_sessions},
    {PROTO_CHATS, "chats", proto_data_session, handlers_chats},
    {PROTO_CHAT, "chat", proto_data_chat, chat_handle},
    {PROTO_DELETE_SESSION, "delete_session", proto_data_session, handlers_delete_session},
    {PROTO_LIST_MODELS, "list_models", proto_data_list_models, handlers_list_models},
    {PROTO_BALANCE, "balance", proto_data_user, handlers_balance},
    /* A connection stops the turns it runs itself (net/conn.c); a stop of
     * another connection's turn, on any chatd, comes here. */
    {PROTO_STOP, "stop", proto_data_session, events_stop},
    {PROTO_HISTORY, "history", proto_data_history, history_page},
    {PROTO_RENAME, "rename", proto_data_rename, history_rename},
    {PROTO_SEARCH, "search", proto_data_search, history_search},
    {PROTO_FEEDBACK, "feedback", proto_data_feedback, history_feedback},
    {PROTO_USAGE, "usage", proto_data_usage, handlers_usage},
    {PROTO_SUBSCRIBE, "subscribe", proto_data_user, events_subscribe},
    {PROTO_RESUME, "resume", proto_data_resume, events_resume},
    {PROTO_EDIT, "edit", proto_data_edit, branch_edit},
    {PROTO_REGENERATE, "regenerate", proto_data_regenerate, branch_regenerate},
    {PROTO_SWITCH, "switch", proto_data_seq, branch_switch},
    {PROTO_FORK, "fork", proto_data_fork, branch_fork},
    {PROTO_SHARE, "share", proto_data_share, share_create},
    {PROTO_SHARES, "shares", proto_data_user, share_list},
    {PROTO_UNSHARE, "unshare", proto_data_unshare, share_revoke},
    {PROTO_ORGANIZE, "organize", proto_data_organize, organize_session},
    {PROTO_KEEP, "keep", proto_data_session, organize_keep},
    {PROTO_BUDGET, "budget", proto_data_budget, budget_handle},
};

proto_data_fn dispatch_decoder(int type)
{
    const struct dispatch_row *row = dispatch_find(type);
    return row != NULL ? row->decode : NULL;
}

const struct dispatch_row *dispatch_find(int type)
{
    for (size_t i = 0; i < sizeof(dispatch_table) / sizeof(dispatch_table[0]); i++)
        if (dispatch_table[i].type == type)
            return &dispatch_table[i];
    return NULL;
}

void dispatch_register_metrics(void)
{
    int codes[sizeof(dispatch_table) / sizeof(dispatch_table[0])];
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        codes[i] = dispatch_table[i].type;
    metrics_request_codes(codes, sizeof(codes) / sizeof(codes[0]));
}

static void dispatch_run(struct worker *w, struct pool_job *job)
{
    struct work_request *r = (struct work_request *)job;
    const struct dispatch_row *row = dispatch_find(r->req.type);
    if (row != NULL) {
        log_debug("event=request conn=%llu code=%d name=%s", (unsigned long long)r->conn_id,
                  row->type, row->name);
        row->run(w, r);
    } else { /* proto_decode admits only codes of the table */
        outbox_reply_error(r->app->outbox, r->conn_id, r->req.type, PERR_UNKNOWN_MESSAGE, NULL);
    }
    work_request_free(r);
}

void dispatch_submit(struct app *app, struct work_request *r)
{
    r->app = app;
    r->job.run = dispatch_run;
    pool_submit(app->pool, &r->job);
}
