/* stream.h - what a connection that resumes a turn (code 16), or refills
 * frames it missed, reads of it: the turn's stream in Redis
 * (store/live.h), checked for gaps, and the turn's end from PostgreSQL
 * when the stream cannot give it. Used by work/events.c. */
#ifndef CHATD_STREAM_H
#define CHATD_STREAM_H

#include <stddef.h>

#include "lib/uuid.h"

struct live_entry;
struct worker;

/* What a read of a session's turn stream holds for a resumer that has
 * every delta up to after: the deltas after it, in order, and the end if
 * it is there. The entries' ids number the deltas (store/live.c), so a
 * frame Redis lost shows as a gap, never as a shorter reply. */
struct stream_view {
    int has_turn; /* the first entry names a turn */
    char turn[UUID_STR_LEN + 1];
    int ended;      /* the frames end with the turn's end */
    int gap;        /* a delta after `after` is missing */
    long long last; /* the highest delta index in frames (else after) */
    char **frames;  /* malloc'd, with lens: deltas, then the end */
    size_t *lens;
    size_t n;
};

void stream_view_free(struct stream_view *v);

/* Takes the frames after delta `after` out of the n entries e of a read
 * (their frames become NULL) into v. Pure (tests/unit/test_stream.c). 0,
 * or -1 when out of memory. */
int stream_view_take(struct live_entry *e, size_t n, long long after, struct stream_view *v);

/* A turn that no longer holds its lease and whose end is not in its
 * stream: its end from PostgreSQL (see stream.c). 1 with *frame set,
 * 0 while it still runs, -1 when PostgreSQL cannot tell now. */
int stream_settle(struct worker *w, const char *user, const char *session, const char *turn,
                  char **frame, size_t *len, long long *last);

/* Reads session's stream of turn (live_stream_read). 0, or -1. */
int stream_read(struct worker *w, const char *session, const char *turn, struct live_entry **e,
                size_t *n);

#endif
