/* bearer.c - the bearer token of an HTTP request or WebSocket upgrade,
 * checked with wire/auth.c's verifier. Service thread. */
#include "net/bearer.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#include "net/urlarg.h"
#include "wire/auth.h"

int bearer_token(struct lws *wsi, int allow_query, char *buf, size_t cap)
{
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n > 0) {
        /* "Bearer " + token, so the header may be 7 bytes longer. */
        char hdr[AUTH_TOKEN_MAX + 16];
        if (n >= (int)sizeof(hdr) ||
            lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
            return -1;
        const char *p = hdr;
        if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
            return 0; /* another scheme: no token of ours */
        p += 6;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, " \t");
        if (len + 1 > cap)
            return -1;
        memcpy(buf, p, len);
        buf[len] = '\0';
        return (int)len;
    }
    if (!allow_query)
        return 0;
    /* Browsers cannot set headers on a WebSocket, hence ?token= on /ws. */
    switch (urlarg_get(wsi, "token", buf, cap)) {
    case URLARG_FOUND:
        return (int)strlen(buf);
    case URLARG_ABSENT:
        return 0;
    case URLARG_INVALID:
        break;
    }
    return -1; /* too long, or given twice */
}

int bearer_check(const struct config *cfg, struct lws *wsi, int allow_query,
                 char sub[UUID_STR_LEN + 1], const char **why)
{
    char token[AUTH_TOKEN_MAX + 1];
    int n = bearer_token(wsi, allow_query, token, sizeof(token));
    if (n <= 0) {
        *why = n == 0 ? "no token" : "token too long";
        return -1;
    }
    return auth_verify_token(cfg, token, (size_t)n, time(NULL), sub, why);
}
