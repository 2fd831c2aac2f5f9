/* answer.c - writing HTTP answers (see answer.h). */
#include "net/answer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/metrics.h"
#include "wire/proto.h"

#define ANSWER_BEARER_CHALLENGE "Bearer realm=\"chatd\""

int answer_add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

int answer_add_cors(struct lws *wsi, const char *origin, unsigned char **p, unsigned char *end)
{
    if (origin[0] == '\0')
        return 0;
    if (answer_add_header(wsi, "access-control-allow-origin:", origin, p, end))
        return 1;
    /* The answer depends on the request's Origin: caches must know. */
    return strcmp(origin, "*") != 0 && answer_add_header(wsi, "vary:", "Origin", p, end);
}

/* Writes a whole answer. Returns -1 to close the connection, else 0 (the
 * transaction is then complete unless close_after, where the caller
 * decides when to close). */
int answer_headers(struct lws *wsi, unsigned status, const char *ctype, const char *body,
                   size_t len, const char *origin, int close_after, const char *const *extra)
{
    unsigned char hdr[LWS_PRE + 2048];
    unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)len, &p, end) ||
        answer_add_cors(wsi, origin, &p, end) ||
        (close_after && answer_add_header(wsi, "connection:", "close", &p, end)))
        return -1;
    for (; extra != NULL && extra[0] != NULL; extra += 2)
        if (answer_add_header(wsi, extra[0], extra[1], &p, end))
            return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    metrics_http_response(status);
    if (len > 0) {
        /* lws may write framing in front of what it is given. */
        unsigned char *buf = malloc(LWS_PRE + len);
        if (buf == NULL)
            return -1;
        memcpy(buf + LWS_PRE, body, len);
        int n = lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
        free(buf);
        if (n < (int)len)
            return -1;
    }
    if (close_after)
        return 0;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int answer_with(struct lws *wsi, unsigned status, const char *ctype, const char *body, size_t len,
                const char *origin, int close_after, const char *extra_name,
                const char *extra_value)
{
    const char *extra[3] = {extra_name, extra_value, NULL};
    return answer_headers(wsi, status, ctype, body, len, origin, close_after, extra);
}

int answer(struct lws *wsi, unsigned status, const char *ctype, const char *body, size_t len,
           const char *origin, int close_after)
{
    /* RFC 6750: every 401 names the scheme that would have been accepted. */
    int unauthorized = status == HTTP_STATUS_UNAUTHORIZED;
    return answer_with(wsi, status, ctype, body, len, origin, close_after,
                       unauthorized ? "www-authenticate:" : NULL, ANSWER_BEARER_CHALLENGE);
}

static const char *reason_phrase(unsigned status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 426:
        return "Upgrade Required";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

/* At the upgrade gate lws has not yet read the request's HTTP version, and
 * its status line would say HTTP/1.0, which RFC 6455 clients reject as an
 * invalid handshake answer without looking at the status. So the status
 * line is ours; the headers are lws's. */
int answer_refusal(struct lws *wsi, unsigned status, const char *message)
{
    size_t len;
    char *body = proto_encode_http(message, NULL, &len);
    unsigned char hdr[LWS_PRE + 1024];
    unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    char line[64];
    snprintf(line, sizeof(line), "HTTP/1.1 %u %s\x0d\x0a", status, reason_phrase(status));
    memcpy(p, line, strlen(line));
    p += strlen(line);
    char clen[24];
    snprintf(clen, sizeof(clen), "%zu", len);
    /* RFC 6750: a 401 names the scheme that would have been accepted;
     * RFC 6455 4.4: a 426 names the version we speak. */
    if (answer_add_header(wsi, "content-type:", ANSWER_JSON, &p, end) ||
        answer_add_header(wsi, "content-length:", clen, &p, end) ||
        answer_add_header(wsi, "connection:", "close", &p, end) ||
        (status == HTTP_STATUS_UNAUTHORIZED &&
         answer_add_header(wsi, "www-authenticate:", ANSWER_BEARER_CHALLENGE, &p, end)) ||
        (status == ANSWER_UPGRADE_REQUIRED &&
         answer_add_header(wsi, "sec-websocket-version:", "13", &p, end)) ||
        lws_finalize_write_http_header(wsi, start, &p, end)) {
        free(body);
        return 1;
    }
    metrics_http_response(status);
    unsigned char *buf = malloc(LWS_PRE + len);
    if (buf != NULL) {
        memcpy(buf + LWS_PRE, body, len);
        lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
        free(buf);
    }
    free(body);
    return 1;
}

int answer_json(struct lws *wsi, unsigned status, const char *json, const char *origin)
{
    return answer(wsi, status, ANSWER_JSON, json, strlen(json), origin, 0);
}

int answer_message(struct lws *wsi, unsigned status, const char *message, const char *origin,
                   int close_after)
{
    size_t len;
    char *body = proto_encode_http(message, NULL, &len);
    int rc = answer(wsi, status, ANSWER_JSON, body, len, origin, close_after);
    free(body);
    return rc;
}
