/* jsonsplit.h - the values of a large JSON file one at a time, never the
 * whole file in memory: the elements of a top-level array (ChatGPT's and
 * Claude's conversations.json, Open WebUI's export), or values one after
 * another (JSON Lines, chatd's jsonl export), or one value alone (chatd's
 * json export of one session).
 *
 * A small state machine over bytes (strings and escapes, nesting depth)
 * finds where each value ends; jansson then parses that value alone, so
 * every syntax rule is still jansson's. Memory is one value, bounded by
 * max_value. Pure: fed bytes, no I/O (tests/unit/test_jsonsplit.c, and a
 * fuzz target). */
#ifndef CHATD_JSONSPLIT_H
#define CHATD_JSONSPLIT_H

#include <jansson.h>
#include <stddef.h>

#include "lib/buf.h"

enum jsonsplit_status {
    JSONSPLIT_OK,      /* fed; more may come */
    JSONSPLIT_BAD,     /* not JSON (or not one of the shapes above): see why */
    JSONSPLIT_TOO_BIG, /* one value over max_value */
    JSONSPLIT_NOMEM,
    JSONSPLIT_STOPPED, /* the callback asked to stop */
};

/* Called with each value (the callback takes the reference); nonzero
 * stops the split. */
typedef int (*jsonsplit_fn)(void *arg, json_t *value);

struct jsonsplit {
    size_t max_value;
    jsonsplit_fn fn;
    void *arg;
    /* where it is */
    int shape;                    /* 0 not yet known, '[' array, '{' values one after another */
    int in_value;                 /* inside a value being gathered */
    int depth;                    /* of [ and { inside the value */
    int in_string;                /* inside "..." */
    int escape;                   /* after a backslash in a string */
    int need_sep;                 /* an array element ended: ',' or ']' next */
    int closed;                   /* the array's ']' was seen */
    size_t values;                /* handed to fn */
    enum jsonsplit_status status; /* the last feed's, for a caller that feeds from a callback */
    struct buf value;
    char why[160];
};

void jsonsplit_init(struct jsonsplit *s, size_t max_value, jsonsplit_fn fn, void *arg);
/* Feeds n more bytes. */
enum jsonsplit_status jsonsplit_feed(struct jsonsplit *s, const char *p, size_t n);
/* The input has ended: JSONSPLIT_OK when it ended where a whole file can. */
enum jsonsplit_status jsonsplit_end(struct jsonsplit *s);
void jsonsplit_free(struct jsonsplit *s);

#endif
