/* budget.c - code 26 (see budget.h). */
#include "work/budget.h"

#include <stdlib.h>

#include "store/db.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/outbox.h"
#include "work/request.h"

void budget_handle(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct app *app = r->app;
    enum db_status st = DB_OK;
    if (q->cap_given)
        st = db_budget_set(&w->pg, q->user_id, q->cap[0] != '\0' ? q->cap : NULL);
    char *json = NULL;
    if (st == DB_OK)
        st = db_budget(&w->pg, q->user_id, &json);
    if (st != DB_OK) {
        outbox_reply_error(app->outbox, r->conn_id, q->type,
                           st == DB_NOT_FOUND ? PERR_NO_USER : PERR_BALANCE, NULL);
        return;
    }
    outbox_reply_text(app->outbox, r->conn_id, q->type, json);
    free(json);
}
