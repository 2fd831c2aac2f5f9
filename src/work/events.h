/* events.h - live updates across every chatd: a user's events (codes 14
 * and 15), a running turn's frames for code 16, and stops (code 8) from
 * any connection of the user, on any instance. store/live.h carries them
 * over Redis; this module says what is sent and where it lands.
 *
 * Messages, one letter then its fields. On a user's channel (every chatd
 * hears it):
 *   E<json>                    an event: the data of a type 15 frame
 *   S<session>                 stop the turn running on that session
 * On a session's turn channel, after the user's id (heard only where a
 * connection resumes that session: events_watch_turn):
 *   D<session> <index> <frame> a running turn's type 7 frame
 *   F<session> <frame>         a turn's last frame (type 3, or its error)
 * A chatd publishes what happened on it, once; every chatd delivers E, D
 * and F to its own connections (net/), and the one running the turn acts
 * on S. An admin's SQL is heard from PostgreSQL by every chatd instead
 * (events_admin). */
#ifndef CHATD_EVENTS_H
#define CHATD_EVENTS_H

#include <jansson.h>
#include <stddef.h>

struct app;
struct worker;
struct work_request;

/* store/live.h's on_message, with the app as arg (subscriber thread). */
void events_on_message(void *arg, const char *user_id, const char *msg, size_t len);

/* Publishes event (stolen: {"kind": ..., ...}) to user_id's connections on
 * every chatd. */
void events_emit(struct app *app, const char *user_id, json_t *event);

/* A running turn's frames: its stream for code 16, and the live copies. */
void events_turn_begin(struct app *app, const char *session_id, const char *turn_id);
void events_turn_frame(struct app *app, const char *user_id, const char *session_id,
                       long long index, const char *frame, size_t len);
void events_turn_end(struct app *app, const char *user_id, const char *session_id,
                     const char *frame, size_t len);

/* A connection here starts or stops resuming session_id (service thread;
 * counted, so each watch needs its unwatch). */
void events_watch_turn(struct app *app, const char *session_id);
void events_unwatch_turn(struct app *app, const char *session_id);

/* inval.h's admin hook: an admin's SQL changed something of a user's
 * (payload: the trigger's JSON, with "user_id" and "kind"). Every chatd
 * hears it, and delivers it to its own connections only. */
void events_admin(void *arg, const char *payload);

/* Once a second (the lease thread's tick): the turns resumed here whose
 * chatd died get their resumers told (error 29). */
void events_tick(struct app *app);

/* Code 14, code 16, and code 8 for a turn this connection did not start. */
void events_subscribe(struct worker *w, struct work_request *r);
void events_resume(struct worker *w, struct work_request *r);
void events_stop(struct worker *w, struct work_request *r);

#endif
