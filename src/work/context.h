/* context.h - what the agent is given of a session besides the new
 * message: its running summary and its recent messages, read from the
 * Redis copy when that copy is current, else from PostgreSQL, trimmed to
 * the model's context window; and the copy written after a stored turn.
 *
 * A copy is versioned by the session's next_seq and names the message its
 * path ends at: one left behind by a failed write or delete, or by a
 * Redis that stalled, is older, and one of another path (after a switch
 * or an edit) ends elsewhere; neither is ever used, so Redis may lose or
 * keep anything without a wrong context. */
#ifndef CHATD_CONTEXT_H
#define CHATD_CONTEXT_H

#include <jansson.h>
#include <stddef.h>

struct config;
struct worker;

enum context_status {
    CONTEXT_OK,
    CONTEXT_NO_SESSION, /* not the user's session, or gone */
    CONTEXT_ERROR,
};

/* The context of user_id's session_id as of next_seq seen_seq, for a
 * turn that continues after message end (-1: at the start, which has no
 * context): the running summary of the path to end, *summary (malloc'd),
 * and the newest messages of that path, *history (a JSON array of {role,
 * content}, at most MAX_CHAT_HISTORY_CONTEXT entries, a reference the
 * caller owns), and *ctx_seq, the next_seq they were read at. Nothing set
 * unless CONTEXT_OK. */
enum context_status context_load(struct worker *w, const struct config *cfg, const char *user_id,
                                 const char *session_id, long long seen_seq, long long end,
                                 char **summary, json_t **history, long long *ctx_seq);

/* One stored turn of a session, as the next turn's context. */
struct context_turn {
    const char *session_id;
    long long next_seq;   /* after the turn: the copy's version */
    long long leaf;       /* the turn's last message, where the copy's path ends */
    const json_t *before; /* the history the turn was given */
    const char *message, *reply;
    const char *file_name; /* NULL: none */
    const char *summary;   /* after the turn */
};

/* Writes the Redis copy of the session's context after ct. Best effort. */
void context_store(struct worker *w, const struct config *cfg, const struct context_turn *ct);

/* Tokens estimated for n bytes of text: bytes/3, rounded up. Deliberately
 * more than real tokenizers give for most text, so that what we send fits. */
size_t context_estimate_tokens(size_t bytes);

/* Drops the oldest entries of history (a JSON array of {role, content})
 * until fixed_bytes plus the history fit context_tokens. Returns how many
 * entries were dropped. */
size_t context_trim(json_t *history, size_t fixed_bytes, long context_tokens);

#endif
