/* server.h - the WebSocket server: one libwebsockets service thread owns
 * every socket and every connection's state.
 *
 * Other threads never touch a connection. They post results with the
 * server_* functions below, which queue them under a mutex and wake the
 * service thread with lws_cancel_service(); the service thread applies them
 * in LWS_CALLBACK_EVENT_WAIT_CANCELLED and writes from
 * LWS_CALLBACK_SERVER_WRITEABLE. Connections are named by a 64-bit id that
 * is never reused, so a result for a connection that has gone is simply
 * dropped. */
#ifndef CHATD_SERVER_H
#define CHATD_SERVER_H

#include <jansson.h>
#include <stdint.h>

#include "pool.h"
#include "proto.h"

struct config;
struct server;
struct chat_turn;

/* One request of one connection, as handed to a worker. */
struct server_request {
    struct pool_job job; /* first: the pool runs it */
    struct server *srv;
    uint64_t conn_id;
    struct proto_request req;
    struct server_request *next; /* the connection's FIFO */
    char *ready;                 /* an answer known without a worker */
    size_t ready_len;
};

/* Runs the server until SIGINT/SIGTERM. Returns the exit status. */
int server_run(const struct config *cfg);

const struct config *server_config(const struct server *srv);
struct pool *server_pool(const struct server *srv);
struct agent_client *server_agent(const struct server *srv);
/* Service thread only: open WebSocket connections; 1 while draining on
 * SIGTERM. */
int server_connections(const struct server *srv);
int server_draining(const struct server *srv);

/* Answers the request a worker is running for conn_id (the head of that
 * connection's FIFO); the next request of the connection may then start.
 * Steals data. Thread-safe. */
void server_reply(struct server *srv, uint64_t conn_id, int type, json_t *data);
void server_reply_error(struct server *srv, uint64_t conn_id, int type, int code,
                        const char *text /* NULL: the code's standard text */);

/* The head request became a chat turn that answers later with
 * server_push: the connection's next requests may start now. Takes a
 * reference on turn, which the connection keeps for stop and cancel. */
void server_detach(struct server *srv, uint64_t conn_id, struct chat_turn *turn);

/* A frame outside the request order (stream deltas, a turn's final reply).
 * Steals frame (malloc'd). Thread-safe. */
void server_push(struct server *srv, uint64_t conn_id, char *frame, size_t len);

/* The turn has finished: the connection drops its reference. */
void server_turn_done(struct server *srv, uint64_t conn_id, struct chat_turn *turn);

/* The answer to HTTP transaction txn_id (see http.c): status and a JSON
 * body (malloc'd, stolen). Dropped when the transaction has gone. Thread-safe. */
void server_http_reply(struct server *srv, uint64_t txn_id, unsigned status, char *body,
                       size_t len);

/* Frees a request (after proto_request_free of its contents). */
void server_request_free(struct server_request *r);

#endif
