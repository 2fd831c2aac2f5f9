/* urlarg.h - one argument of a request's query string, wherever it stands.
 *
 * lws keeps each argument ("name=value", decoded) as a fragment of
 * WSI_TOKEN_HTTP_URI_ARGS. Its own lws_get_urlarg_by_name copies each
 * fragment into the caller's buffer and stops at the first one that does
 * not fit, so "?user_id=<uuid>&format=csv" with a 32-byte buffer never
 * reached "format". This looks at every fragment by its length first. */
#ifndef CHATD_URLARG_H
#define CHATD_URLARG_H

#include <libwebsockets.h>
#include <stddef.h>

enum urlarg_result {
    URLARG_FOUND,   /* out holds the value, NUL-terminated */
    URLARG_ABSENT,  /* no argument of that name */
    URLARG_INVALID, /* given twice, or its value longer than cap - 1 */
};

/* The value of argument name (without the '='), into out. */
enum urlarg_result urlarg_get(struct lws *wsi, const char *name, char *out, size_t cap);

#endif
