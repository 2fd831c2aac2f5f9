/* http.c - HTTP requests that are not WebSocket upgrades.
 *
 * Every answer is small and known at once, so it is written in one go with
 * lws_http_transaction_completed(); anything unknown is a 404. */
#include "http.h"

#include <string.h>

static int http_respond(struct lws *wsi, unsigned status, const char *ctype, const char *body)
{
    unsigned char buf[LWS_PRE + 1024];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf) - 1;
    size_t blen = strlen(body);
    if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)blen, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (blen > 0 && lws_write(wsi, (unsigned char *)body, blen, LWS_WRITE_HTTP_FINAL) < (int)blen)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

void http_configure(struct lws_context_creation_info *info, struct server *srv)
{
    (void)info;
    (void)srv;
}

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    if (reason == LWS_CALLBACK_HTTP) {
        const char *uri = in;
        if (strcmp(uri, "/healthz") == 0)
            return http_respond(wsi, HTTP_STATUS_OK, "application/json", "{\"status\":\"ok\"}");
        return http_respond(wsi, HTTP_STATUS_NOT_FOUND, "application/json",
                            "{\"message\":\"Not Found\",\"data\":null}");
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
