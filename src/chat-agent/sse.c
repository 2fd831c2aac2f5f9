/* sse.c - incremental server-sent events parser (see sse.h). */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

void sse_init(struct sse_parser *p, sse_event_fn on_event, void *ud, size_t max)
{
    memset(p, 0, sizeof(*p));
    p->on_event = on_event;
    p->ud = ud;
    p->max = max;
}

void sse_free(struct sse_parser *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
}

/* Appends n bytes, keeping room for a NUL; -1 when over max or no memory. */
static int sse_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n, size_t max)
{
    if (*len + n > max)
        return -1;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 128;
        while (c < *len + n + 1)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static int sse_dispatch(struct sse_parser *p)
{
    if (!p->have_data)
        return 0;
    p->have_data = 0;
    const char *d = p->data ? p->data : "";
    size_t n = p->data_len;
    int rc = p->on_event(p->ud, d, n);
    p->data_len = 0;
    if (p->data)
        p->data[0] = '\0';
    return rc;
}

static int sse_line(struct sse_parser *p)
{
    const char *l = p->line ? p->line : "";
    size_t n = p->line_len;
    p->line_len = 0;
    if (n == 0)
        return sse_dispatch(p);
    if (l[0] == ':')
        return 0; /* comment, e.g. a keep-alive */
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    if (flen != 4 || memcmp(l, "data", 4) != 0)
        return 0;
    const char *v = colon ? colon + 1 : l + n;
    if (v < l + n && *v == ' ')
        v++;
    size_t vlen = (size_t)(l + n - v);
    if (p->have_data && sse_append(&p->data, &p->data_len, &p->data_cap, "\n", 1, p->max) != 0)
        return -1;
    if (sse_append(&p->data, &p->data_len, &p->data_cap, v, vlen, p->max) != 0)
        return -1;
    p->have_data = 1;
    return 0;
}

int sse_feed(struct sse_parser *p, const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && !p->stopped) {
        if (p->after_cr && buf[i] == '\n') {
            p->after_cr = 0;
            i++;
            continue;
        }
        p->after_cr = 0;
        /* Copy up to the next line end in one go. */
        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if (j > i &&
            sse_append(&p->line, &p->line_len, &p->line_cap, buf + i, j - i, p->max) != 0) {
            p->stopped = -1;
            break;
        }
        if (j == len)
            break;
        p->after_cr = buf[j] == '\r';
        i = j + 1;
        p->stopped = sse_line(p);
    }
    return p->stopped;
}

int sse_finish(struct sse_parser *p)
{
    if (p->stopped)
        return p->stopped;
    if (p->line_len > 0)
        p->stopped = sse_line(p);
    if (!p->stopped)
        p->stopped = sse_dispatch(p);
    return p->stopped;
}
