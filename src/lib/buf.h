/* buf.h - a growable byte buffer: the text of an agent's reply, a piece of
 * an export, a WebSocket message arriving in fragments.
 *
 * The buffer owns p; {0} is an empty buffer. Growth doubles, so n appends
 * cost O(n) copies in all. */
#ifndef CHATD_BUF_H
#define CHATD_BUF_H

#include <stddef.h>

struct buf {
    char *p; /* NULL until the first growth */
    size_t len, cap;
};

/* Room for need bytes in all (cap >= need), doubling from 256, but never
 * more than max (0: no bound; need must not exceed a bound). 0, or -1 when
 * out of memory (b unchanged). */
int buf_grow(struct buf *b, size_t need, size_t max);

/* Appends n bytes of s and keeps p NUL-terminated (the NUL is not counted
 * in len). 0, or -1 when out of memory (b unchanged). */
int buf_append(struct buf *b, const void *s, size_t n);
int buf_puts(struct buf *b, const char *s);

/* Frees p and empties b. */
void buf_free(struct buf *b);

#endif
