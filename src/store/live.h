/* live.h - what every chatd must hear at once, through Redis: events for
 * a user's subscribed connections, a running turn's frames for the
 * connections that resume it, and stops for the chatd that runs a turn.
 *
 * Two threads, each with a Redis connection of its own:
 *   - the publisher takes commands from a queue (live_publish, the
 *     stream calls) and sends them pipelined, in queue order; queuing
 *     never blocks, so the agent's thread may queue a turn's deltas;
 *   - the subscriber PSUBSCRIBEs to every user's channel,
 *     chatd:{u:<user>}:live (events and stops: a few per turn), and
 *     SUBSCRIBEs to a session's turn channel, chatd:{s:<session>}:live
 *     (the deltas of a turn someone resumes: work/events.h), only while a
 *     connection here resumes that session
 *     (live_watch). It calls on_message for each message, on its own
 *     thread: it must not block.
 * So a delta comes back from Redis only to the chatd instances that have
 * a resumer of its turn, not to all of them; a message is published once,
 * by the chatd where it happened.
 *
 * Redis pub/sub is at most once: a message published while the subscriber
 * is cut off (a Redis restart, a failover) is lost. Clients re-read with
 * codes 1 and 9 after a reconnect; a running turn's frames are also kept
 * in a Redis Stream of its own (chatd:{s:<session>}:turn:<turn>, the
 * session's latest turn named by chatd:{s:<session>}:turn), capped, for
 * STREAM_RETAIN_SECONDS after the turn ends, which code 16 replays. */
#ifndef CHATD_LIVE_H
#define CHATD_LIVE_H

#include <stddef.h>

struct cache;
struct config;
struct live;

#define LIVE_STREAM_MAXLEN 100000 /* a turn's frames kept for resuming */

typedef void (*live_msg_fn)(void *arg, const char *user_id, const char *msg, size_t len);

/* NULL on allocation failure (logged); Redis down is retried. */
struct live *live_start(const struct config *cfg, live_msg_fn on_message, void *arg);
void live_stop(struct live *lv);

/* 1 while the subscriber is connected (what subscribe and resume need). */
int live_up(const struct live *lv);

/* Queue a message on user_id's channel. */
void live_publish(struct live *lv, const char *user_id, const char *msg, size_t len);

/* Queue a message on session_id's turn channel. msg starts with the id of
 * the session's user (UUID_STR_LEN characters), which on_message gets as
 * user_id, followed by what it gets as the message. */
void live_publish_turn(struct live *lv, const char *session_id, const char *msg, size_t len);

/* A connection here resumes session_id (service thread): listen to its turn
 * channel until the matching live_unwatch, counted per session. */
void live_watch(struct live *lv, const char *session_id);
void live_unwatch(struct live *lv, const char *session_id);
/* A worker, before it reads the turn stream for a resume: waits until Redis
 * has confirmed the subscription, so that no frame published after the
 * read can be missed. 0, or -1 after timeout_ms or if nothing watches it. */
int live_watch_wait(struct live *lv, const char *session_id, int timeout_ms);

/* A turn's stream, which code 16 replays: begun by the turn (which
 * becomes the session's latest), one entry per delta (its index), then its
 * end: the last frame, after delta last_index (-1: none), kept
 * retain_seconds. Each turn has a stream of its own. */
void live_stream_begin(struct live *lv, const char *session_id, const char *turn_id);
void live_stream_add(struct live *lv, const char *session_id, const char *turn_id, long long index,
                     const char *frame, size_t len);
void live_stream_end(struct live *lv, const char *session_id, const char *turn_id,
                     long long last_index, const char *frame, size_t len, int retain_seconds);

/* A worker's read of turn_id's stream, or with turn_id NULL of the
 * session's latest turn's (on its own cache connection): the entries in
 * order. 0, or -1 when Redis failed. A missing stream is 0 entries. */
enum { LIVE_ENTRY_TURN = 't', LIVE_ENTRY_DELTA = 'd', LIVE_ENTRY_END = 'e' };
struct live_entry {
    char kind;       /* LIVE_ENTRY_* */
    long long index; /* DELTA: its index; END: the last delta's (-1: none) */
    char *frame;     /* TURN: the turn's id */
    size_t len;
};
int live_stream_read(struct cache *c, const char *session_id, const char *turn_id,
                     struct live_entry **out, size_t *n);
void live_entries_free(struct live_entry *e, size_t n);

#endif
