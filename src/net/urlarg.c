/* urlarg.c - see urlarg.h. */
#include "net/urlarg.h"

#include <stdlib.h>
#include <string.h>

enum urlarg_result urlarg_get(struct lws *wsi, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    enum urlarg_result res = URLARG_ABSENT;
    char *frag = NULL;
    size_t frag_cap = 0;
    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len <= 0)
            break;
        if ((size_t)len + 1 > frag_cap) {
            char *grown = realloc(frag, (size_t)len + 1);
            if (grown == NULL) {
                res = URLARG_INVALID;
                break;
            }
            frag = grown;
            frag_cap = (size_t)len + 1;
        }
        if (lws_hdr_copy_fragment(wsi, frag, (int)frag_cap, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            break;
        if (strncmp(frag, name, nlen) != 0 || frag[nlen] != '=')
            continue;
        /* A second one: which of them a proxy in front acted on is
         * anybody's guess, so neither is taken. */
        if (res == URLARG_FOUND) {
            res = URLARG_INVALID;
            break;
        }
        size_t vlen = strlen(frag + nlen + 1);
        if (vlen + 1 > cap) {
            res = URLARG_INVALID;
            break;
        }
        memcpy(out, frag + nlen + 1, vlen + 1);
        res = URLARG_FOUND;
    }
    free(frag);
    if (res != URLARG_FOUND && cap > 0)
        out[0] = '\0';
    return res;
}
