/* sse.h - incremental parser of server-sent events (text/event-stream).
 *
 * Bytes arrive in arbitrary pieces from libcurl's write callback; the parser
 * assembles lines (LF, CRLF or CR), collects "data:" fields and hands each
 * complete event's data (multi-line data joined with '\n') to a callback
 * at the blank line that ends it. Comments (":...") and other fields (event,
 * id, retry) are ignored: OpenAI-compatible servers use data only. */
#ifndef CHAT_AGENT_SSE_H
#define CHAT_AGENT_SSE_H

#include <stddef.h>

/* data is NUL-terminated. Return 0 to go on, non-zero to stop parsing. */
typedef int (*sse_event_fn)(void *ud, const char *data, size_t len);

struct sse_parser {
    sse_event_fn on_event;
    void *ud;
    size_t max; /* largest line or event accepted */
    char *line;
    size_t line_len, line_cap;
    char *data;
    size_t data_len, data_cap;
    int have_data; /* a data field was seen since the last dispatch */
    int after_cr;  /* the last byte was CR: a following LF is not a new line */
    int stopped;   /* the callback's non-zero answer, or -1 on error */
};

void sse_init(struct sse_parser *p, sse_event_fn on_event, void *ud, size_t max);

/* Returns 0, the callback's non-zero answer, or -1 when a line or event
 * exceeds max or memory runs out. Once non-zero, every later call returns
 * the same without parsing. */
int sse_feed(struct sse_parser *p, const char *buf, size_t len);

/* End of stream: dispatches a last event not followed by a blank line
 * (lenient towards servers that close right after the data). */
int sse_finish(struct sse_parser *p);

void sse_free(struct sse_parser *p);

#endif
