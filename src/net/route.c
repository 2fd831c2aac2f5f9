/* route.c - the HTTP route table (see route.h). */
#include "net/route.h"

#include <string.h>

#define GET_ONLY "GET, OPTIONS"
#define POST_ONLY "POST, OPTIONS"

enum route_match { MATCH_EXACT, MATCH_PREFIX, MATCH_SESSION_EXPORT, MATCH_PAGE };

/* In the order they are tried: the first row that matches is the route. */
static const struct route_row {
    enum route_id id;
    enum route_match match;
    const char *path;
    enum route_method method;
} route_table[] = {
    {ROUTE_UPLOAD, MATCH_EXACT, "/upload", ROUTE_POST},
    {ROUTE_IMPORT, MATCH_EXACT, "/import", ROUTE_POST},
    {ROUTE_IMPORT_STATE, MATCH_PREFIX, "/import/", ROUTE_GET},
    {ROUTE_FILE, MATCH_PREFIX, "/uploads/", ROUTE_GET},
    {ROUTE_EXPORT, MATCH_SESSION_EXPORT, "/sessions/", ROUTE_GET},
    {ROUTE_EXPORT, MATCH_EXACT, "/export", ROUTE_GET},
    {ROUTE_CLIENT_CONFIG, MATCH_EXACT, "/client-config", ROUTE_GET},
    {ROUTE_SHARE, MATCH_PREFIX, "/s/", ROUTE_GET},
    {ROUTE_PAGE, MATCH_PAGE, NULL, ROUTE_GET},
    {ROUTE_HEALTHZ, MATCH_EXACT, "/healthz", ROUTE_GET},
    {ROUTE_READYZ, MATCH_EXACT, "/readyz", ROUTE_GET},
    {ROUTE_METRICS, MATCH_EXACT, "/metrics", ROUTE_GET},
};

/* /sessions/<id>/export, the id non-empty, without '/', shorter than buf. */
static int session_export(const char *uri, const char *prefix, char *buf, size_t cap)
{
    static const char tail[] = "/export";
    size_t plen = strlen(prefix), ulen = strlen(uri), tlen = sizeof(tail) - 1;
    if (strncmp(uri, prefix, plen) != 0 || ulen <= plen + tlen ||
        strcmp(uri + ulen - tlen, tail) != 0)
        return 0;
    size_t n = ulen - plen - tlen;
    if (n >= cap || memchr(uri + plen, '/', n) != NULL)
        return 0;
    memcpy(buf, uri + plen, n);
    buf[n] = '\0';
    return 1;
}

void route_find(const char *uri, enum route_method m,
                int (*page_claims)(const void *arg, const char *uri), const void *arg,
                struct route *out)
{
    memset(out, 0, sizeof(*out));
    out->id = ROUTE_NONE;
    for (size_t i = 0; i < sizeof(route_table) / sizeof(route_table[0]); i++) {
        const struct route_row *r = &route_table[i];
        int hit = 0;
        switch (r->match) {
        case MATCH_EXACT:
            hit = strcmp(uri, r->path) == 0;
            break;
        case MATCH_PREFIX:
            hit = strncmp(uri, r->path, strlen(r->path)) == 0;
            if (hit)
                out->arg = uri + strlen(r->path);
            break;
        case MATCH_SESSION_EXPORT:
            hit = session_export(uri, r->path, out->buf, sizeof(out->buf));
            if (hit)
                out->arg = out->buf;
            break;
        case MATCH_PAGE:
            hit = page_claims != NULL && page_claims(arg, uri);
            break;
        }
        if (!hit)
            continue;
        out->id = r->id;
        out->allowed = m == ROUTE_OPTIONS || m == r->method;
        out->allow = r->method == ROUTE_POST ? POST_ONLY : GET_ONLY;
        return;
    }
}
