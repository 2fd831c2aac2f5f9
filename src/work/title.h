/* title.h - a new session's title from the agent.
 *
 * After the first turn of a NEW session is stored and answered, chatd asks
 * the agent's optional Title RPC for a title (first user and assistant
 * messages and the model in, one line out). When it comes, a worker cleans
 * it (title_clean), stores it unless the user renamed the session in the
 * meantime, and charges what it cost to the ledger. UNIMPLEMENTED, an
 * error, AI_TITLE_TIMEOUT_SECONDS or a title that cleans to nothing keep
 * the 20-character name the type 3 reply showed. */
#ifndef CHATD_TITLE_H
#define CHATD_TITLE_H

#include <stddef.h>

struct app;

#define TITLE_MAX_CHARS 60
#define TITLE_MAX_BYTES (TITLE_MAX_CHARS * 4 + 1)

/* What the title is asked from; copied by title_request. */
struct title_source {
    const char *user_id, *session_id;
    int model_id;
    const char *model_name, *provider;
    const char *user_message, *assistant_message;
    long long seq; /* the first turn's assistant message: the ledger row's */
};

/* Reserves the call's money on w (migration 0013; refused: no title) and
 * starts the Title call; nothing happens when the agent lacks it. On the
 * worker that finishes the session's first turn: the turn still runs, so
 * the agent client and the pool outlive the call's start. */
struct worker;
void title_request(struct worker *w, struct app *app, const struct title_source *src);

/* Pure (tests/unit/test_title.c): the raw title made one clean line of at
 * most TITLE_MAX_CHARS characters into out (cap >= TITLE_MAX_BYTES):
 * reasoning blocks (<think>...</think> and the like) removed, the first
 * non-empty line, a "Title:" prefix, surrounding quotes, backticks,
 * asterisks and heading marks removed, control characters and runs of
 * white space made one space. 0, or -1 when nothing usable is left (or
 * raw is not UTF-8). */
int title_clean(const char *raw, char *out, size_t cap);

#endif
