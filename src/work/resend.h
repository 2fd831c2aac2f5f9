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

/* The reply's data (the caller owns it) a request of code (3, 17, 18)
 * gets for the turn user_id named client_turn_id, as it was stored. */
enum resend resend_data(struct pg *pg, int code, const char *user_id, const char *client_turn_id,
                        json_t **data);

/* Before a turn of request q (code 3, 17 or 18) on connection conn is
 * checked: 1 when q names a turn stored already, which answered it (or
 * error 14 when the database did not answer); 0 when it is to run. */
int resend_answer(struct worker *w, struct app *app, uint64_t conn, const struct proto_request *q);

#endif
