/* http.h - plain HTTP on the WebSocket's port: /healthz today; uploads,
 * file serving, /readyz and /metrics belong here as they come. */
#ifndef CHATD_HTTP_H
#define CHATD_HTTP_H

#include <libwebsockets.h>

struct server;

/* Adds what the HTTP side needs to the context's creation info. */
void http_configure(struct lws_context_creation_info *info, struct server *srv);

/* The HTTP reasons of the server's one protocol callback. */
int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len);

#endif
