/* resend.c - a turn sent again under its client_turn_id (see resend.h). */
#include "work/resend.h"

#include <jansson.h>
#include <string.h>

#include "store/db.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/outbox.h"
#include "work/pool.h"

json_t *resend_reply(const struct resend_reply *r)
{
    json_t *data = json_pack("{s:s, s:s, s:s, s:s}", "user_id", r->user_id, "session_id",
                             r->session_id, "session_name", r->session_name, "message", r->message);
    if (data != NULL && r->code != PROTO_CHAT) {
        /* Codes 17 and 18 also say where the new messages are: the
         * existing client's code 3 reply stays as it was. */
        json_t *seqs = json_array();
        for (long long s = r->base; s < r->base + r->n; s++)
            json_array_append_new(seqs, json_integer(s));
        json_object_set_new(data, "seqs", seqs);
        json_object_set_new(data, "parent_seq",
                            r->parent >= 0 ? json_integer(r->parent) : json_null());
        json_object_set_new(data, "active_leaf", json_integer(r->base + r->n - 1));
    }
    if (data != NULL && r->temporary) /* only then: the existing reply stays as it was */
        json_object_set_new(data, "temporary", json_true());
    if (data != NULL && r->client_turn_id_len > 0)
        json_object_set_new(data, "client_turn_id",
                            json_stringn(r->client_turn_id, r->client_turn_id_len));
    return data;
}

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
    json_t *data = resend_reply(&(struct resend_reply){
        .code = code,
        .user_id = user_id,
        .session_id = ct.session_id,
        .session_name = ct.session_name,
        .message = ct.reply,
        .base = ct.base,
        .n = ct.n,
        .parent = ct.parent,
        .temporary = ct.temporary,
        .client_turn_id = client_turn_id,
        .client_turn_id_len = strcspn(client_turn_id, "#"),
    });
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
