/* route.h - which HTTP resource a request names, and whether its method
 * is one the resource has: a table, pure (tests/unit/test_route.c), so
 * that adding an endpoint is one row and one handler in net/http.c. */
#ifndef CHATD_ROUTE_H
#define CHATD_ROUTE_H

#include <stddef.h>

enum route_id {
    ROUTE_NONE, /* no resource: 404 */
    ROUTE_UPLOAD,
    ROUTE_FILE,   /* /uploads/<name>: arg is the name */
    ROUTE_EXPORT, /* /export, or /sessions/<id>/export: arg is the id */
    ROUTE_CLIENT_CONFIG,
    ROUTE_PAGE, /* the chat page's files (net/web.h) */
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_SHARE,        /* /s/<id>, /s/<id>.json, /s/<id>/files/<name>: arg is what follows /s/ */
    ROUTE_IMPORT,       /* POST /import */
    ROUTE_IMPORT_STATE, /* GET /import/<id>: arg is the id */
};

enum route_method { ROUTE_GET, ROUTE_POST, ROUTE_OPTIONS, ROUTE_OTHER };

#define ROUTE_ARG_MAX 64

struct route {
    enum route_id id;
    int allowed;       /* the method is one the resource has (OPTIONS always is) */
    const char *allow; /* the methods it has, for a 405's Allow header */
    const char *arg;   /* ROUTE_FILE, ROUTE_EXPORT: NULL or into uri / buf */
    char buf[ROUTE_ARG_MAX];
};

/* Finds uri's resource. page_claims(arg, uri): whether the page's files
 * have uri (asked only when no fixed route has it). */
void route_find(const char *uri, enum route_method m,
                int (*page_claims)(const void *arg, const char *uri), const void *arg,
                struct route *out);

#endif
