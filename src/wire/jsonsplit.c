/* jsonsplit.c - a JSON file's values one at a time (see jsonsplit.h). */
#include "wire/jsonsplit.h"

#include <stdio.h>
#include <string.h>

void jsonsplit_init(struct jsonsplit *s, size_t max_value, jsonsplit_fn fn, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->max_value = max_value;
    s->fn = fn;
    s->arg = arg;
}

void jsonsplit_free(struct jsonsplit *s) { buf_free(&s->value); }

static enum jsonsplit_status bad(struct jsonsplit *s, const char *why)
{
    snprintf(s->why, sizeof(s->why), "%s (value %zu)", why, s->values + 1);
    return JSONSPLIT_BAD;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The value gathered is whole: parsed by jansson and handed over. */
static enum jsonsplit_status emit(struct jsonsplit *s)
{
    json_error_t err;
    json_t *v = json_loadb(s->value.p, s->value.len, JSON_REJECT_DUPLICATES, &err);
    s->value.len = 0;
    s->in_value = 0;
    if (v == NULL) {
        snprintf(s->why, sizeof(s->why), "not JSON: %.100s (value %zu)", err.text, s->values + 1);
        return JSONSPLIT_BAD;
    }
    s->values++;
    if (s->shape == '[')
        s->need_sep = 1;
    return s->fn(s->arg, v) != 0 ? JSONSPLIT_STOPPED : JSONSPLIT_OK;
}

enum jsonsplit_status jsonsplit_feed(struct jsonsplit *s, const char *p, size_t n)
{
    size_t start = 0; /* of the part of p that belongs to the value */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!s->in_value) {
            if (is_space(c))
                continue;
            if (s->closed)
                return bad(s, "text after the array's end");
            if (s->shape == 0) {
                if (c == '[') { /* the elements are the values */
                    s->shape = '[';
                    continue;
                }
                if (c != '{')
                    return bad(s, "expected an array or an object");
                s->shape = '{';
            } else if (s->shape == '[') {
                if (c == ']' && (s->need_sep || s->values == 0)) {
                    s->closed = 1;
                    continue;
                }
                if (s->need_sep) {
                    if (c != ',')
                        return bad(s, "expected ',' or ']' between elements");
                    s->need_sep = 0;
                    continue;
                }
                if (c != '{')
                    return bad(s, "an element that is not an object");
            } else if (c != '{') {
                return bad(s, "expected one object after another");
            }
            s->in_value = 1;
            s->depth = 0;
            s->in_string = s->escape = 0;
            start = i;
        }
        /* inside a value: find its end */
        if (s->in_string) {
            if (s->escape)
                s->escape = 0;
            else if (c == '\\')
                s->escape = 1;
            else if (c == '"')
                s->in_string = 0;
            continue;
        }
        if (c == '"') {
            s->in_string = 1;
        } else if (c == '{' || c == '[') {
            s->depth++;
        } else if (c == '}' || c == ']') {
            if (--s->depth == 0) {
                size_t len = i + 1 - start;
                if (s->value.len + len > s->max_value)
                    return JSONSPLIT_TOO_BIG;
                if (buf_append(&s->value, p + start, len) != 0)
                    return JSONSPLIT_NOMEM;
                enum jsonsplit_status st = emit(s);
                if (st != JSONSPLIT_OK)
                    return st;
            }
        }
    }
    if (s->in_value) { /* the rest of p is the start of a value */
        size_t len = n - start;
        if (s->value.len + len > s->max_value)
            return JSONSPLIT_TOO_BIG;
        if (buf_append(&s->value, p + start, len) != 0)
            return JSONSPLIT_NOMEM;
    }
    return JSONSPLIT_OK;
}

enum jsonsplit_status jsonsplit_end(struct jsonsplit *s)
{
    if (s->in_value)
        return bad(s, "the file ends inside a value");
    if (s->shape == 0)
        return bad(s, "empty");
    if (s->shape == '[' && !s->closed)
        return bad(s, "the file ends before the array's ']'");
    return JSONSPLIT_OK;
}
