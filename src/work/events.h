/* events.h - live updates across every chatd: a user's events (codes 14
 * and 15), a running turn's frames for code 16, and stops (code 8) from
 * any connection of the user, on any instance. store/live.h carries them
 * over Redis; this module says what is sent and where it lands.
 *
 * Messages, one letter then its fields. On a user's channel (every chatd
 * hears it):
 *   E<json>                    an event: the data of a type 15 frame
 *   S<session><turn>           stop that turn (whose lease the stop marked)
 *   W<session><turn>           a connection resumes that turn: its chatd
 *                              publishes its deltas (D) from now on
 * On a session's turn channel, after the user's id (heard only where a
 * connection resumes that session: events_watch_turn):
 *   D<session><turn> <index> <frame> a running turn's type 7 frame, only
 *                                    once W was heard for it: a delta
 *                                    nobody follows costs one XADD only
 *   F<session><turn> <last> <frame>  a turn's last frame (type 3, or its
 *                                    error), after delta <last> (-1: none)
 * A chatd publishes what happened on it, once; every chatd delivers E, D
 * and F to its own connections (net/), and the one running the turn acts
 * on S. An admin's SQL is heard from PostgreSQL by every chatd instead
 * (events_admin). */
#ifndef CHATD_EVENTS_H
#define CHATD_EVENTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct app;
struct worker;
struct work_request;

/* store/live.h's on_message, with the app as arg (subscriber thread). */
void events_on_message(void *arg, const char *user_id, const char *msg, size_t len);

/* Publishes event (stolen: {"kind": ..., ...}) to user_id's connections on
 * every chatd. */
void events_emit(struct app *app, const char *user_id, json_t *event);

/* A running turn's frames: its stream for code 16, and the live copies,
 * a delta's only when followed (W heard for it: its slot's followed; a
 * resumer that joined before finds the ones it lacks in the stream, by
 * the index gap, see events_refill). The end is always published, and
 * names the last delta's index (-1: none). */
void events_turn_begin(struct app *app, const char *session_id, const char *turn_id);
void events_turn_frame(struct app *app, const char *user_id, const char *session_id,
                       const char *turn_id, long long index, const char *frame, size_t len,
                       int followed);
void events_turn_end(struct app *app, const char *user_id, const char *session_id,
                     const char *turn_id, long long last_index, const char *frame, size_t len);

/* A connection here resuming turn_id missed frames after index after
 * (service thread): a worker reads them from the stream and answers with
 * outbox_resumed(..., refill 1). */
void events_refill(struct app *app, uint64_t conn, const char *user, const char *session,
                   const char *turn, long long after);

/* A connection here starts or stops resuming session_id (service thread;
 * counted, so each watch needs its unwatch). */
void events_watch_turn(struct app *app, const char *session_id);
void events_unwatch_turn(struct app *app, const char *session_id);

/* inval.h's admin hook: an admin's SQL changed something of a user's
 * (payload: the trigger's JSON, with "user_id" and "kind"). Every chatd
 * hears it, and delivers it to its own connections only. */
void events_admin(void *arg, const char *payload);

/* Once a second (the lease thread's tick): the turns resumed here that no
 * longer run get their end to their resumers: the stored reply, or error
 * 29 when their chatd died or stalled before storing them. */
void events_tick(struct app *app);

/* Code 14, code 16, and code 8 for a turn this connection did not start. */
void events_subscribe(struct worker *w, struct work_request *r);
void events_resume(struct worker *w, struct work_request *r);
void events_stop(struct worker *w, struct work_request *r);

#endif
