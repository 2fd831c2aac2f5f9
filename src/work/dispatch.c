/* dispatch.c - the table from message code to handler (see dispatch.h). */
#include "work/dispatch.h"

#include <stdlib.h>

#include "lib/metrics.h"
#include "work/app.h"
#include "work/chat.h"
#include "work/events.h"
#include "work/handlers.h"
#include "work/history.h"
#include "work/outbox.h"

static const struct dispatch_row dispatch_table[] = {
    {PROTO_USER_DETAILS, "user_details", handlers_user_details},
    {PROTO_LIST_SESSIONS, "list_sessions", handlers_list_sessions},
    {PROTO_CHATS, "chats", handlers_chats},
    {PROTO_CHAT, "chat", chat_handle},
    {PROTO_DELETE_SESSION, "delete_session", handlers_delete_session},
    {PROTO_LIST_MODELS, "list_models", handlers_list_models},
    {PROTO_BALANCE, "balance", handlers_balance},
    /* A connection stops the turns it runs itself (net/conn.c); a stop of
     * another connection's turn, on any chatd, comes here. */
    {PROTO_STOP, "stop", events_stop},
    {PROTO_HISTORY, "history", history_page},
    {PROTO_RENAME, "rename", history_rename},
    {PROTO_SEARCH, "search", history_search},
    {PROTO_FEEDBACK, "feedback", history_feedback},
    {PROTO_USAGE, "usage", handlers_usage},
    {PROTO_SUBSCRIBE, "subscribe", events_subscribe},
    {PROTO_RESUME, "resume", events_resume},
};

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

void work_request_free(struct work_request *r)
{
    if (r == NULL)
        return;
    proto_request_free(&r->req);
    free(r->ready);
    free(r);
}

static void dispatch_run(struct worker *w, struct pool_job *job)
{
    struct work_request *r = (struct work_request *)job;
    const struct dispatch_row *row = dispatch_find(r->req.type);
    if (row != NULL && row->run != NULL)
        row->run(w, r);
    else /* proto_decode admits only codes of the table */
        outbox_reply_error(r->app->outbox, r->conn_id, r->req.type, PERR_UNKNOWN_MESSAGE, NULL);
    work_request_free(r);
}

void dispatch_submit(struct app *app, struct work_request *r)
{
    r->app = app;
    r->job.run = dispatch_run;
    pool_submit(app->pool, &r->job);
}
