/* context.c - a session's summary and recent messages (see context.h). */
#include "work/context.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "store/cache.h"
#include "store/db.h"
#include "work/pool.h"

size_t context_estimate_tokens(size_t bytes) { return (bytes + 2) / 3; }

enum context_status context_load(struct worker *w, const struct config *cfg, const char *user_id,
                                 const char *session_id, long long seen_seq, long long end,
                                 char **summary, json_t **history, long long *ctx_seq)
{
    if (end < 0) { /* a first message, or a new version of one */
        *summary = strdup("");
        *history = json_array();
        if (*summary == NULL || *history == NULL) {
            free(*summary);
            json_decref(*history);
            return CONTEXT_ERROR;
        }
        *ctx_seq = seen_seq;
        return CONTEXT_OK;
    }
    /* A copy is this session's context only at the version the turn knows
     * to be current, and only for the path the turn continues (aux: its
     * last message + 1, so that 0, which copies from before the tree
     * carry, never matches). */
    char key[CACHE_KEY_MAX];
    cache_key_context(key, session_id);
    struct cache_copy cp;
    if (cache_get_copy(&w->cache, key, &cp) == 0) {
        json_t *ctx = cp.version == (uint64_t)seen_seq && cp.aux == (uint64_t)end + 1
                          ? json_loadb(cp.payload, cp.len, 0, NULL)
                          : NULL;
        free(cp.payload);
        json_t *msgs = json_object_get(ctx, "messages");
        json_t *sum = json_object_get(ctx, "summary");
        char *s =
            json_is_array(msgs) && json_is_string(sum) ? strdup(json_string_value(sum)) : NULL;
        if (s != NULL) {
            while (json_array_size(msgs) > (size_t)cfg->max_chat_history_context)
                json_array_remove(msgs, 0);
            *summary = s;
            *history = json_incref(msgs);
            *ctx_seq = seen_seq;
        }
        json_decref(ctx);
        if (s != NULL)
            return CONTEXT_OK;
    }
    struct db_session row;
    enum db_status st =
        db_session_get(&w->pg, user_id, session_id, end, cfg->max_chat_history_context, &row);
    if (st != DB_OK)
        return st == DB_NOT_FOUND ? CONTEXT_NO_SESSION : CONTEXT_ERROR;
    json_t *h = json_loads(row.recent_json, 0, NULL);
    if (!json_is_array(h)) {
        json_decref(h);
        db_session_free(&row);
        return CONTEXT_ERROR;
    }
    *summary = row.summary;
    row.summary = NULL;
    *history = h;
    *ctx_seq = row.next_seq;
    db_session_free(&row);
    return CONTEXT_OK;
}

void context_store(struct worker *w, const struct config *cfg, const struct context_turn *ct)
{
    char key[CACHE_KEY_MAX];
    cache_key_context(key, ct->session_id);
    json_t *msgs = json_deep_copy(ct->before);
    if (msgs == NULL)
        return;
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", ct->message));
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "assistant", "content", ct->reply));
    if (ct->file_name != NULL)
        json_array_append_new(msgs,
                              json_pack("{s:s, s:s}", "role", "file", "content", ct->file_name));
    while (json_array_size(msgs) > (size_t)cfg->max_chat_history_context)
        json_array_remove(msgs, 0);
    json_t *ctx = json_pack("{s:s, s:o}", "summary", ct->summary, "messages", msgs);
    char *s = ctx != NULL ? json_dumps(ctx, JSON_COMPACT) : NULL;
    json_decref(ctx);
    if (s != NULL)
        cache_put_copy(&w->cache, key, (uint64_t)ct->next_seq, (uint64_t)ct->leaf + 1, s, strlen(s),
                       CACHE_TTL_CONTEXT);
    free(s);
}

size_t context_trim(json_t *history, size_t fixed_bytes, long context_tokens)
{
    size_t hist_bytes = 0, n = json_array_size(history);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_object_get(json_array_get(history, i), "content");
        hist_bytes += json_string_length(c) + 32; /* JSON framing per entry */
    }
    size_t dropped = 0;
    while (json_array_size(history) > 0 &&
           (long)context_estimate_tokens(fixed_bytes + hist_bytes) > context_tokens) {
        json_t *c = json_object_get(json_array_get(history, 0), "content");
        hist_bytes -= json_string_length(c) + 32;
        json_array_remove(history, 0);
        dropped++;
    }
    return dropped;
}
