/* conn.h - WebSocket connections: frame assembly, the request order and
 * output queue (net/connq.c's rules applied with libwebsockets), the turns
 * a connection runs, and the table that finds a connection by its id.
 *
 * Service thread only. A connection is named by a 64-bit id that is never
 * reused, so a post for a connection that has gone finds nothing and is
 * dropped, never written to freed memory. */
#ifndef CHATD_CONN_H
#define CHATD_CONN_H

#include <libwebsockets.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/uuid.h"
#include "net/connq.h"
#include "net/peers.h"
#include "net/resume.h"

struct app;
struct turn;
struct outbox_post;

#define CONN_BUCKETS 4096

struct conn_turn {
    struct conn_turn *next;
    struct turn *turn;
};

struct conn {
    struct lws *wsi;
    uint64_t id; /* 0: refused before it was counted */
    struct conn *hnext;

    struct buf rx;  /* the message being assembled */
    int rx_discard; /* oversized: drop the rest, then close */

    struct connq q;
    int busy_type;          /* the code of the request with a worker, for metrics */
    uint64_t busy_since_us; /* when it went there */
    int slow_close_seconds; /* SLOW_READER_CLOSE_SECONDS */
    int closing;            /* a close is queued: read nothing more */
    int behind;             /* its socket was full with frames to write, and
                               they are not all written yet: join deltas */
    int close_status;       /* the close code it will carry */

    struct conn_turn *turns; /* the chat turns this connection started */
    int nturns;

    char user[UUID_STR_LEN + 1]; /* AUTH_MODE=jwt: the token's sub; "" otherwise */

    /* Live (work/events.h): the user whose events (code 14) or whose
     * turn's frames (code 16) it gets, "" for none; listed in
     * conns.live under that user while it gets either. */
    char live_user[UUID_STR_LEN + 1];
    struct conn *live_next;
    int subscribed;
    struct resume resume;           /* code 16 (net/resume.h) */
    char watched[UUID_STR_LEN + 1]; /* the session whose turn channel it holds a watch on */
    char addr[PEERS_ADDR_MAX];      /* the peer's address, counted in peers */

    /* Keep-alive (conn_keepalive): when the peer last sent anything (a
     * frame or a pong), monotonic seconds; a ping waits for WRITEABLE. */
    int64_t heard;
    unsigned char ping_due, ping_sent, hung_up;

    /* Frames queued while the table held writes (conn_hold_writes): the
     * connection is listed in conns.due, to be written when they end. */
    struct conns *cs;
    struct conn *due_next;
    int write_due;
};

/* Every connection of the server. */
struct conns {
    struct app *app;
    struct peers *peers;
    int draining; /* shutting down: no new connections or turns */
    struct conn *buckets[CONN_BUCKETS];
    struct conn *live[CONN_BUCKETS]; /* by live_user */
    uint64_t next_id;
    int n;
    int holding;      /* conn_hold_writes .. conn_write_held */
    struct conn *due; /* the connections owed a write meanwhile */
};

/* LWS_CALLBACK_ESTABLISHED: c is the connection's user space. 0, or -1 to
 * refuse it. */
int conn_open(struct conns *cs, struct lws *wsi, struct conn *c);
/* LWS_CALLBACK_RECEIVE. 0, or -1 to close. */
int conn_receive(struct conns *cs, struct conn *c, const void *in, size_t len);
/* LWS_CALLBACK_SERVER_WRITEABLE: a ping, the close, or the frames queued
 * while the socket takes them. 0, or -1 to close. */
int conn_writeable(struct conns *cs, struct conn *c);
/* LWS_CALLBACK_CLOSED: its turns are cancelled (what committed stays). */
void conn_close(struct conns *cs, struct conn *c);

/* Applies a post for a connection (reply, detach, push, turn done, the
 * answers of codes 14 and 16) or for the connections of a user (live); a
 * connection that has gone drops it. Takes what it keeps from p. */
void conn_apply(struct conns *cs, struct outbox_post *p);

/* Between these two calls (the service thread applying the outbox's posts,
 * outside any callback of a connection) a connection that gets frames
 * asks for no writable callback: conn_write_held writes them then, each
 * connection's in one go, and asks lws for a writable callback only for
 * what its socket would not take. A stream's delta thus costs one write
 * and no change of the poll set (two epoll_ctl calls and a turn of the
 * loop per frame before). */
void conn_hold_writes(struct conns *cs);
void conn_write_held(struct conns *cs);

/* Closes every connection with status once its queued frames are out. */
void conn_close_all(struct conns *cs, int status);

/* LWS_CALLBACK_RECEIVE_PONG: the peer is there. */
void conn_heard(struct conn *c);

/* Once a second: pings a connection that has said nothing for
 * ping_seconds, and hangs up one that has said nothing for twice that.
 * chatd's own, not libwebsockets' "validity" timers: lws 4.1 keeps those in
 * one sorted list, and re-inserting each connection's timer walks it, so
 * with 10,000 connections a round of pongs (all due together) took
 * seconds of the service thread. One pass over the table costs microseconds. */
void conn_keepalive(struct conns *cs, int ping_seconds);

#endif
