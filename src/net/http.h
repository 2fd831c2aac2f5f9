/* http.h - plain HTTP on the WebSocket's port: /healthz, /readyz, /metrics,
 * POST /upload, GET /uploads/<name>, the exports (GET /export,
 * GET /sessions/<id>/export), CORS preflights for them, and the chat
 * page's files (net/web.h) with GET /client-config.
 *
 * Everything here runs on the lws service thread. Answers that need
 * PostgreSQL, Redis or the agent come from a worker through the outbox
 * (outbox_http), which lands in http_deliver(). */
#ifndef CHATD_HTTP_H
#define CHATD_HTTP_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stdint.h>

#include "net/web.h"

struct app;
struct conns;
struct export_job;
struct http_txn;

/* The HTTP transactions waiting for a worker (uploads, probes), per
 * server. Few wait at once, so a list is enough for the lookup by id. */
struct http_state {
    struct app *app;
    const struct conns *conns; /* how many, and whether draining */
    struct http_txn *txns;
    uint64_t next_id;
    struct web_site web; /* the page at "/" (net/web.c) */
};

/* Frees what is left at shutdown. */
void http_state_clear(struct http_state *hs);

/* Adds what the HTTP side needs to the context's creation info, prepares
 * PUBLIC_DIR and reads the page's settings. -1 when they are malformed
 * (logged): chatd then does not start. */
int http_configure(struct lws_context_creation_info *info, struct http_state *hs);

/* The HTTP reasons of the server's one protocol callback. */
int http_callback(struct http_state *hs, struct lws *wsi, enum lws_callback_reasons reason,
                  void *user, void *in, size_t len);

/* The answer to HTTP transaction txn_id, posted by a worker: written when
 * the socket is writable, or dropped (body freed) when the transaction has
 * gone. Steals body. */
void http_deliver(struct http_state *hs, uint64_t txn_id, unsigned status, char *body, size_t len);

/* A piece of export download txn_id (work/export.h), posted by a worker
 * with its job: written when the socket is writable, after which the job
 * goes back to a worker for the next piece; or dropped with the job when
 * the transaction has gone. Steals piece and job. */
void http_deliver_export(struct http_state *hs, uint64_t txn_id, unsigned status, char *piece,
                         size_t len, int last, struct export_job *job);

#endif
