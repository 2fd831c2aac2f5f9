/* stream.c - reading a running turn's stream (see stream.h). */
#include "work/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "store/cache.h"
#include "store/db.h"
#include "store/live.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/pool.h"

void stream_view_free(struct stream_view *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->frames[i]);
    free(v->frames);
    free(v->lens);
    memset(v, 0, sizeof(*v));
}

/* Takes the frames out of e (their entries' frames become NULL). 0, or -1
 * when out of memory. */
int stream_view_take(struct live_entry *e, size_t n, long long after, struct stream_view *v)
{
    memset(v, 0, sizeof(*v));
    v->last = after;
    if (n == 0 || e[0].kind != LIVE_ENTRY_TURN || !uuid_valid(e[0].frame))
        return 0;
    v->has_turn = 1;
    snprintf(v->turn, sizeof(v->turn), "%s", e[0].frame);
    v->frames = calloc(n + 1, sizeof(*v->frames));
    v->lens = calloc(n + 1, sizeof(*v->lens));
    if (v->frames == NULL || v->lens == NULL)
        return -1;
    for (size_t i = 1; i < n && !v->ended && !v->gap; i++) {
        if (e[i].kind == LIVE_ENTRY_DELTA) {
            if (e[i].index <= after)
                continue;
            if (e[i].index != v->last + 1) {
                v->gap = 1;
                break;
            }
            v->last = e[i].index;
        } else if (e[i].kind == LIVE_ENTRY_END) {
            if (e[i].index > v->last) {
                v->gap = 1; /* deltas before the end are missing */
                break;
            }
            v->ended = 1;
        } else {
            continue;
        }
        v->frames[v->n] = e[i].frame;
        v->lens[v->n] = e[i].len;
        e[i].frame = NULL;
        v->n++;
    }
    return 0;
}

/* A turn that no longer holds its lease and whose end is not in its
 * stream (its chatd died, stalled, or the end never reached Redis): its
 * end from PostgreSQL, the truth. 1 with *frame set: the stored reply as
 * its connection got it, after delta *last (how many it streamed is
 * stored with it, so a resumer knows whether it missed any), or error 29
 * when it was not stored, which is then final (db_turn_outcome); 0 while
 * it still runs; -1 when PostgreSQL cannot tell now. */
int stream_settle(struct worker *w, const char *user, const char *session, const char *turn,
                  char **frame, size_t *len, long long *last)
{
    char *reply = NULL, *name = NULL;
    long long streamed = 0;
    *frame = NULL;
    *last = -1;
    switch (db_turn_outcome(&w->pg, user, session, turn, &reply, &name, &streamed)) {
    case DB_OUTCOME_RUNNING:
        return 0;
    case DB_OUTCOME_ERROR:
        return -1;
    case DB_OUTCOME_LOST:
        log_info("event=turn_interrupted session=%s turn=%s", session, turn);
        *frame = proto_encode_error_code(PROTO_CHAT, PERR_TURN_INTERRUPTED, NULL, NULL, len);
        break;
    case DB_OUTCOME_STORED_GONE:
        *frame = proto_encode_error_code(PROTO_CHAT, PERR_NO_SESSION, NULL, NULL, len);
        break;
    case DB_OUTCOME_STORED:
        *frame = proto_encode_reply(PROTO_CHAT,
                                    json_pack("{s:s, s:s, s:s, s:s}", "user_id", user, "session_id",
                                              session, "session_name", name, "message", reply),
                                    len);
        *last = streamed - 1;
        break;
    }
    free(reply);
    free(name);
    return *frame != NULL ? 1 : -1;
}

/* A read of a turn stream for a resume or a refill, which come while the
 * live subscriber hears Redis: a worker whose own connection is still in
 * its back-off from an earlier failure (a stall that is over) connects
 * again at once rather than answer error 30 while Redis is up. */
int stream_read(struct worker *w, const char *session, const char *turn, struct live_entry **e,
                size_t *n)
{
    if (live_stream_read(&w->cache, session, turn, e, n) == 0)
        return 0;
    if (!live_up(w->app->live))
        return -1;
    cache_retry_now(&w->cache);
    return live_stream_read(&w->cache, session, turn, e, n);
}
