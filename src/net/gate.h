/* gate.h - the gate of every WebSocket upgrade, before any connection
 * state exists (LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, where an HTTP status
 * can still be sent). Each refusal is an HTTP/1.1 answer with a JSON body
 * that a strict RFC 6455 client can read. Cheap checks go first, so a
 * flood of upgrades costs no HMAC once a cap is reached:
 *   path /ws (404), not draining (503), Sec-WebSocket-Version 13 (426),
 *   ALLOWED_ORIGINS (403), MAX_CONNECTIONS and MAX_CONNECTIONS_PER_IP
 *   (503), then with AUTH_MODE=jwt the token (401). */
#ifndef CHATD_GATE_H
#define CHATD_GATE_H

#include <libwebsockets.h>

struct conns;

/* 1 when the request is for the WebSocket path. */
int gate_is_ws_path(struct lws *wsi);

/* 0 to let the upgrade through; 1 after answering a refusal. */
int gate_check(struct conns *cs, struct lws *wsi);

#endif
