/* resend.h - a turn the client sends again under the same client_turn_id
 * (codes 3, 17, 18): after a failure it could not read (a lost
 * connection, a failover), a client may send its turn again with the name
 * it gave it. A turn of that name stored already is answered from the
 * database as its own reply was, and never stored or charged again
 * (migration 0014); see docs/PROTOCOL.md. */
#ifndef CHATD_RESEND_H
#define CHATD_RESEND_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store/pg.h"

struct app;
struct proto_request;
struct worker;

enum resend {
    RESEND_NONE,  /* no turn of that name: run this one */
    RESEND_FOUND, /* *data: the stored turn's reply */
    RESEND_ERROR, /* the database did not answer */
};

/* What a stored turn's reply says: its first answer (turn.c) and its
 * answer again (resend_data) are built by one function, so a resend
 * answers exactly as the first reply did. */
struct resend_reply {
    int code; /* 3, 17 or 18 */
    const char *user_id, *session_id, *session_name, *message;
    long long base, n; /* the new messages' seqs: base .. base + n - 1 */
    long long parent;  /* the first one's parent, -1 for none */
    int temporary;
    const char *client_turn_id; /* its first client_turn_id_len bytes, when not 0 */
    size_t client_turn_id_len;
};

/* The reply's data (the caller owns it; NULL when out of memory). */
json_t *resend_reply(const struct resend_reply *r);

/* The reply's data (the caller owns it) a request of code (3, 17, 18)
 * gets for the turn user_id named client_turn_id, as it was stored. */
enum resend resend_data(struct pg *pg, int code, const char *user_id, const char *client_turn_id,
                        json_t **data);

/* Before a turn of request q (code 3, 17 or 18) on connection conn is
 * checked: 1 when q names a turn stored already, which answered it (or
 * error 14 when the database did not answer); 0 when it is to run. */
int resend_answer(struct worker *w, struct app *app, uint64_t conn, const struct proto_request *q);

#endif
