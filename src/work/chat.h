/* chat.h - code 3, the chat turn: checks, the session's turn order, the
 * agent call, and the one transaction that stores the whole turn.
 *
 * A turn moves between threads: its checks run on a worker, its agent call
 * completes on the agent client's thread, and its storing runs on a worker
 * again. It is reference-counted; the connection that started it holds a
 * reference (for stop and for cancel on disconnect) until the turn ends. */
#ifndef CHATD_CHAT_H
#define CHATD_CHAT_H

#include <jansson.h>
#include <stddef.h>

#include "work/pool.h"

struct config;
struct chat_turn;
struct work_request;

/* Runs code 3 for r on worker w; owns r. */
void chat_handle(struct worker *w, struct work_request *r);

/* Stops the turn's agent call. by_user: a code 8 stop (the partial reply is
 * stored); otherwise the client went away (nothing is stored). Returns 0
 * when a stop came too late (the agent had already answered, so the whole
 * reply will be stored), else 1. Any thread. */
int chat_turn_cancel(struct chat_turn *t, int by_user);

void chat_turn_ref(struct chat_turn *t);
void chat_turn_unref(struct chat_turn *t);

/* 1 when t is user_id's turn on session_id. */
int chat_turn_matches(const struct chat_turn *t, const char *user_id, const char *session_id);

/* The URL of a stored file as the agent (or a client) fetches it:
 * PUBLIC_BASE_URL/uploads/<reference> (auth_file_ref). malloc'd. */
char *chat_file_url(const struct config *cfg, const char *name);

/* Sets key of every file entry of msgs (a JSON array of {role, content},
 * content a stored name) to link(cfg, name): its reference
 * (auth_file_ref), or its URL (chat_file_url). 0, or -1 when out of
 * memory. */
int chat_link_files(const struct config *cfg, json_t *msgs, const char *key,
                    char *(*link)(const struct config *, const char *));

/* A code 2 "chat" array (JSON text) whose file entries hold signed
 * references instead of bare names (AUTH_MODE=jwt). malloc'd; NULL on
 * error. */
char *chat_sign_files(const struct config *cfg, const char *chat_json);

/* The turn's rules, pure (tests/unit/test_turn.c):
 * whether a cancel is taken: a connection's always; a user's stop (code 8)
 * only while the agent has not answered (else the whole reply is stored
 * and the stop gets error 23). */
int chat_stop_takes(int agent_done, int by_user);

/* How a turn ends, from whether it was cancelled (and by whom) and the
 * agent's status. */
enum chat_end {
    CHAT_END_STORED,           /* the whole reply, the agent's cost */
    CHAT_END_STOPPED,          /* a stop crossed the end: stored as stopped, the agent's cost */
    CHAT_END_STOPPED_ESTIMATE, /* stopped mid-reply: the partial text, an estimated cost */
    CHAT_END_DROPPED,          /* its connection went: nothing stored */
    CHAT_END_FAILED,           /* the agent failed: nothing stored, error 6 */
};
enum chat_end chat_end_of(int cancelled, int by_user, int status);

/* Turns started and not yet finished, process-wide. */
int chat_active_turns(void);

/* A stop (code 8) heard from any chatd for turn turn_id on user_id's
 * session: cancels it if this process runs it. 1 when it took. Any
 * thread. (Its store honours the stop either way: db_turn_stop.) */
int chat_stop_session(const char *user_id, const char *session_id, const char *turn_id);

/* store/lease.h's on_free, with the app as arg: a turn lease was given
 * back (session_id), or may have run out (NULL): the turns waiting for
 * one try again. */
void chat_lease_freed(void *arg, const char *session_id);

/* Tokens estimated for n bytes of text: bytes/3, rounded up. Deliberately
 * more than real tokenizers give for most text, so that what we send fits. */
size_t chat_estimate_tokens(size_t bytes);

/* Drops the oldest entries of history (a JSON array of {role, content})
 * until fixed_bytes plus the history fit context_tokens. Returns how many
 * entries were dropped. */
size_t chat_trim_history(json_t *history, size_t fixed_bytes, long context_tokens);

#endif
