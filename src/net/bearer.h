/* bearer.h - finding a request's token (AUTH_MODE=jwt; docs/SECURITY.md). */
#ifndef CHATD_BEARER_H
#define CHATD_BEARER_H

#include <libwebsockets.h>
#include <stddef.h>

#include "lib/uuid.h"

struct config;

/* Copies the request's token into buf (NUL-terminated): the value of
 * "Authorization: Bearer <token>", else, when allow_query, of "?token=".
 * Returns its length, 0 when there is none, or -1 when it is longer than
 * cap - 1 (tokens over AUTH_TOKEN_MAX are refused unread). */
int bearer_token(struct lws *wsi, int allow_query, char *buf, size_t cap);

/* Finds and verifies the request's token at the current time: 0 and sub
 * set, or -1 and *why set (for the log; the client only learns 401). */
int bearer_check(const struct config *cfg, struct lws *wsi, int allow_query,
                 char sub[UUID_STR_LEN + 1], const char **why);

#endif
