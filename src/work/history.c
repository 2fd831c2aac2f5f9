/* history.c - codes 9, 10 and 12 (see history.h). Each is one or two
 * statements of store/db.c; wire codes are chosen here.
 *
 * Code 9 reads pages newest first by sequence number, so a page costs one
 * backward index range whatever the session's length; the client asks for
 * the next (older) page with "before": the reply's "next_before". */
#include "work/history.h"

#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "store/cache.h"
#include "store/db.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/events.h"
#include "work/links.h"
#include "work/outbox.h"
#include "work/reads.h"

static void reply(struct work_request *r, json_t *data)
{
    outbox_reply(r->app->outbox, r->conn_id, r->req.type, data);
}

static void reply_error(struct work_request *r, int code, const char *text)
{
    outbox_reply_error(r->app->outbox, r->conn_id, r->req.type, code, text);
}

void history_page(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    struct db_page page;
    enum db_status st =
        db_history_page(reads_pg(w), q->user_id, q->session_id, q->before, q->limit, &page);
    if (st != DB_OK) {
        /* Someone else's session answers exactly like a missing one. */
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_LOAD_CHATS, NULL);
        return;
    }
    json_t *msgs = json_loads(page.messages_json, 0, NULL);
    /* File entries get "url" (signed with AUTH_MODE=jwt) beside the bare
     * stored name in "content". */
    if (!json_is_array(msgs) || links_apply(r->app->cfg, msgs, "url", links_file_url) != 0) {
        json_decref(msgs);
        db_page_free(&page);
        reply_error(r, PERR_INTERNAL, NULL);
        return;
    }
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:o, s:b}", "user_id", q->user_id, "session_id", q->session_id,
                  "session_name", page.name, "messages", msgs, "has_more", page.has_more);
    if (data != NULL)
        json_object_set_new(data, "next_before",
                            page.has_more ? json_integer(page.lowest_seq) : json_null());
    /* pinned, archived, tags (code 24) */
    json_t *org = json_loads(page.organized_json, 0, NULL);
    if (data != NULL && json_object_update(data, org) != 0) {
        json_decref(data);
        data = NULL;
    }
    json_decref(org);
    db_page_free(&page);
    reply(r, data);
}

/* "a \uE000b\uE001 c" -> [{"text":"a ","hit":false},{"text":"b","hit":true},
 * {"text":" c","hit":false}]: parts a client shows as text, the hits
 * marked, with no markup that message text could imitate (the database
 * removed these two characters from the text before marking). */
static json_t *snippet_parts(const char *s)
{
    static const char start[] = "\xee\x80\x80", stop[] = "\xee\x80\x81"; /* U+E000, U+E001 */
    json_t *parts = json_array();
    int hit = 0;
    while (parts != NULL && *s != '\0') {
        const char *mark = strstr(s, hit ? stop : start);
        size_t n = mark != NULL ? (size_t)(mark - s) : strlen(s);
        if (n > 0 &&
            json_array_append_new(parts, json_pack("{s:s%, s:b}", "text", s, n, "hit", hit)) != 0) {
            json_decref(parts);
            return NULL;
        }
        if (mark == NULL)
            break;
        s = mark + 3;
        hit = !hit;
    }
    return parts;
}

void history_search(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char *text = NULL;
    int has_more = 0;
    const struct db_search_scope scope = {
        .tag = q->tag[0] != '\0' ? q->tag : NULL,
        .pinned = q->pinned == 1 ? "t" : NULL,
        .archived = q->archived == 1 ? "t" : NULL,
    };
    if (db_search(reads_pg(w), q->user_id, q->words, &scope, q->limit, q->offset, &text,
                  &has_more) != DB_OK) {
        reply_error(r, PERR_INTERNAL, NULL);
        return;
    }
    json_t *hits = json_loads(text, 0, NULL);
    free(text);
    size_t i;
    json_t *h;
    int ok = json_is_array(hits);
    json_array_foreach(hits, i, h)
    {
        const char *snippet = json_string_value(json_object_get(h, "snippet"));
        json_t *parts = snippet_parts(snippet != NULL ? snippet : "");
        if (parts == NULL || json_object_set_new(h, "snippet", parts) != 0)
            ok = 0;
    }
    if (!ok) {
        json_decref(hits);
        reply_error(r, PERR_INTERNAL, NULL);
        return;
    }
    reply(r, json_pack("{s:s, s:s, s:o, s:b}", "user_id", q->user_id, "query", q->query, "hits",
                       hits, "has_more", has_more));
}

void history_rename(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    uint64_t xid;
    enum db_status st = db_session_rename(&w->pg, q->user_id, q->session_id, q->session_name, &xid);
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_INTERNAL, NULL);
        return;
    }
    /* Before the answer: this chatd shows the new name in code 1 at once. */
    cache_saw_write(&w->cache, q->user_id, xid);
    events_emit(r->app, q->user_id,
                json_pack("{s:s, s:s, s:s}", "kind", "session_renamed", "session_id", q->session_id,
                          "session_name", q->session_name));
    reply(r, json_pack("{s:s, s:s, s:s}", "user_id", q->user_id, "session_id", q->session_id,
                       "session_name", q->session_name));
}

void history_feedback(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char role[16];
    enum db_status st = db_message_role(&w->pg, q->user_id, q->session_id, q->seq, role);
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_INTERNAL, NULL);
        return;
    }
    if (strcmp(role, "assistant") != 0) {
        reply_error(r, PERR_INVALID_FIELD,
                    role[0] == '\0' ? "Invalid field 'seq': no such message in this session"
                                    : "Invalid field 'seq': only assistant messages are rated");
        return;
    }
    if (db_feedback(&w->pg, q->user_id, q->session_id, q->seq, q->rating, q->comment) != DB_OK) {
        reply_error(r, PERR_INTERNAL, NULL);
        return;
    }
    metrics_feedback(q->rating);
    reply(r, json_pack("{s:s, s:s, s:I, s:i}", "user_id", q->user_id, "session_id", q->session_id,
                       "seq", (json_int_t)q->seq, "rating", q->rating));
}
