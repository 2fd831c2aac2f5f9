/* http.h - plain HTTP on the WebSocket's port: /healthz, /readyz, /metrics,
 * POST /upload, GET /uploads/<name>, the exports (GET /export,
 * GET /sessions/<id>/export), CORS preflights for them, and the chat
 * page's files (net/web.h) with GET /client-config.
 *
 * Everything here runs on the lws service thread. Answers that need
 * PostgreSQL, Redis or the agent come from a worker through the outbox
 * (outbox_http), which lands in txn_deliver() (net/txn.h). */
#ifndef CHATD_HTTP_H
#define CHATD_HTTP_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stdint.h>

#include "net/txn.h"
#include "net/web.h"

struct app;
struct conns;

/* What the HTTP side works with, per server. */
struct http_state {
    struct app *app;
    const struct conns *conns; /* how many, and whether draining */
    struct txn_list txns;      /* transactions waiting for a worker (net/txn.h) */
    struct web_site web;       /* the page at "/" (net/web.c) */
};

/* Adds what the HTTP side needs to the context's creation info, prepares
 * PUBLIC_DIR and reads the page's settings. -1 when they are malformed
 * (logged): chatd then does not start. */
int http_configure(struct lws_context_creation_info *info, struct http_state *hs);

/* The HTTP reasons of the server's one protocol callback. */
int http_callback(struct http_state *hs, struct lws *wsi, enum lws_callback_reasons reason,
                  void *user, void *in, size_t len);

#endif
