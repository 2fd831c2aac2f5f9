/* answer.h - writing a whole HTTP answer on the service thread: the
 * status, lws's headers with CORS and the ones RFC 9110, 6750 and 6455 ask
 * for, and the body; and the refusals of a WebSocket upgrade (net/gate.c),
 * whose status line must be ours. Every HTTP status chatd sends is chosen
 * in net/ and written here. */
#ifndef CHATD_ANSWER_H
#define CHATD_ANSWER_H

#include <libwebsockets.h>
#include <stddef.h>

#define ANSWER_ORIGIN_MAX 256
#define ANSWER_JSON "application/json"
#define ANSWER_UPGRADE_REQUIRED 426 /* not among lws 4.1's names */

/* One header line into the header buffer [*p, end); nonzero when it does
 * not fit. */
int answer_add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end);
/* Access-Control-Allow-Origin for origin ("" for none), and Vary. */
int answer_add_cors(struct lws *wsi, const char *origin, unsigned char **p, unsigned char *end);

/* Writes a whole answer, with one extra header when extra_name is not
 * NULL. Returns -1 to close the connection, else 0 (the transaction is
 * then complete unless close_after, where the caller decides when to
 * close). */
int answer_with(struct lws *wsi, unsigned status, const char *ctype, const char *body, size_t len,
                const char *origin, int close_after, const char *extra_name,
                const char *extra_value);
/* The same with any number of extra headers: extra holds name, value,
 * name, value, ... and ends with NULL (NULL for none). */
int answer_headers(struct lws *wsi, unsigned status, const char *ctype, const char *body,
                   size_t len, const char *origin, int close_after, const char *const *extra);
/* The same; a 401 names the Bearer scheme. */
int answer(struct lws *wsi, unsigned status, const char *ctype, const char *body, size_t len,
           const char *origin, int close_after);
/* A JSON body given as text. */
int answer_json(struct lws *wsi, unsigned status, const char *json, const char *origin);
/* {"message": message, "data": null}, the shape the existing client reads. */
int answer_message(struct lws *wsi, unsigned status, const char *message, const char *origin,
                   int close_after);

/* Answers the request with status and {"message": message, "data": null}
 * and "connection: close". Returns 1, which is what
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE wants after such an answer: the
 * refused WebSocket upgrades (401, 403, 404, 426, 503) go out this way. */
int answer_refusal(struct lws *wsi, unsigned status, const char *message);

#endif
