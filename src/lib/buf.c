/* buf.c - a growable byte buffer (see buf.h). */
#include "lib/buf.h"

#include <stdlib.h>
#include <string.h>

#define BUF_FIRST 256

int buf_grow(struct buf *b, size_t need, size_t max)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : BUF_FIRST;
    while (cap < need)
        cap *= 2;
    if (max != 0 && cap > max)
        cap = max;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *s, size_t n)
{
    if (buf_grow(b, b->len + n + 1, 0) != 0)
        return -1;
    if (n > 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int buf_puts(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
