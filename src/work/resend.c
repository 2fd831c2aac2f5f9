/* resend.c - a turn sent again under its client_turn_id (see resend.h). */
#include "work/resend.h"

#include <jansson.h>
#include <string.h>

#include "store/db.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/outbox.h"
#include "work/pool.h"

enum resend resend_data(struct pg *pg, int code, const char *user_id, const char *client_turn_id,
                        json_t **out)
{
    struct db_client_turn ct;
    *out = NULL;
    switch (db_client_turn(pg, user_id, client_turn_id, &ct)) {
    case DB_OK:
        break;
    case DB_NOT_FOUND:
        return RESEND_NONE;
    default:
        return RESEND_ERROR;
    }
    /* The fields work/turn.c's turn_reply gave the first time. */
    json_t *data = json_pack("{s:s, s:s, s:s, s:s}", "user_id", user_id, "session_id",
                             ct.session_id, "session_name", ct.session_name, "message", ct.reply);
    if (data != NULL && code != PROTO_CHAT) {
        json_t *seqs = json_array();
        for (long long s = ct.base; s < ct.base + ct.n; s++)
            json_array_append_new(seqs, json_integer(s));
        json_object_set_new(data, "seqs", seqs);
        json_object_set_new(data, "parent_seq",
                            ct.parent >= 0 ? json_integer(ct.parent) : json_null());
        json_object_set_new(data, "active_leaf", json_integer(ct.base + ct.n - 1));
    }
    if (data != NULL && ct.temporary)
        json_object_set_new(data, "temporary", json_true());
    if (data != NULL) /* the client's name, without the '#<answer>' of answers side by side */
        json_object_set_new(data, "client_turn_id",
                            json_stringn(client_turn_id, strcspn(client_turn_id, "#")));
    db_client_turn_free(&ct);
    *out = data;
    return data != NULL ? RESEND_FOUND : RESEND_ERROR;
}

int resend_answer(struct worker *w, struct app *app, uint64_t conn, const struct proto_request *q)
{
    if (q->client_turn_id[0] == '\0')
        return 0;
    json_t *data = NULL;
    switch (resend_data(&w->pg, q->type, q->user_id, q->client_turn_id, &data)) {
    case RESEND_NONE:
        return 0;
    case RESEND_FOUND:
        outbox_reply(app->outbox, conn, q->type, data);
        return 1;
    case RESEND_ERROR:
        break;
    }
    outbox_reply_error(app->outbox, conn, q->type, PERR_INTERNAL, NULL);
    return 1;
}
