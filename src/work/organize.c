/* organize.c - code 24 (see organize.h). */
#include "work/organize.h"

#include <jansson.h>
#include <stdlib.h>

#include "store/cache.h"
#include "store/db.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/events.h"
#include "work/outbox.h"
#include "work/request.h"

static const char *tri(int v) { return v < 0 ? NULL : v ? "t" : "f"; }

void organize_session(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct app *app = r->app;
    char *tags_in = q->tags != NULL ? json_dumps(q->tags, JSON_COMPACT) : NULL, *tags = NULL;
    json_t *state = NULL;
    int pinned, archived;
    uint64_t xid;
    if (q->tags != NULL && tags_in == NULL) {
        outbox_reply_error(app->outbox, r->conn_id, q->type, PERR_INTERNAL, NULL);
        return;
    }
    enum db_status st = db_organize(&w->pg, q->user_id, q->session_id, tri(q->pinned),
                                    tri(q->archived), tags_in, &pinned, &archived, &tags, &xid);
    free(tags_in);
    if (st != DB_OK) {
        /* someone else's session answers exactly like a missing one */
        outbox_reply_error(app->outbox, r->conn_id, q->type,
                           st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_INTERNAL, NULL);
        return;
    }
    json_t *tag_list = json_loads(tags, 0, NULL);
    free(tags);
    state = json_pack("{s:s, s:b, s:b, s:o}", "session_id", q->session_id, "pinned", pinned,
                      "archived", archived, "tags", tag_list != NULL ? tag_list : json_array());
    if (state == NULL) {
        outbox_reply_error(app->outbox, r->conn_id, q->type, PERR_INTERNAL, NULL);
        return;
    }
    json_t *event = json_deep_copy(state);
    if (event != NULL && json_object_set_new(event, "kind", json_string("session_changed")) == 0)
        events_emit(app, q->user_id, event);
    else
        json_decref(event);
    json_object_set_new(state, "user_id", json_string(q->user_id));
    outbox_reply(app->outbox, r->conn_id, q->type, state);
}

void organize_keep(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct app *app = r->app;
    uint64_t xid;
    enum db_status st = db_keep(&w->pg, q->user_id, q->session_id, &xid);
    if (st != DB_OK) {
        outbox_reply_error(app->outbox, r->conn_id, q->type,
                           st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_INTERNAL, NULL);
        return;
    }
    /* The session joins the user's list: this process's copies know. */
    cache_saw_write(&w->cache, q->user_id, xid);
    events_emit(app, q->user_id,
                json_pack("{s:s, s:s, s:b}", "kind", "session_changed", "session_id", q->session_id,
                          "temporary", 0));
    outbox_reply(app->outbox, r->conn_id, q->type,
                 json_pack("{s:s, s:s, s:b}", "user_id", q->user_id, "session_id", q->session_id,
                           "temporary", 0));
}
