/* resume.h - one connection's resume of a running turn (code 16), alone:
 * which live frames it is sent, which are held while its replay (or a
 * refill) is read, and when it must ask for the frames it missed. Pure:
 * what it sends and asks goes through struct resume_io, so
 * tests/unit/test_resume.c drives it without a socket or a Redis.
 *
 *   NONE -> PENDING (code 16: live frames of the session are held until
 *   the replay is read, so none published meanwhile is missed) -> LIVE
 *   (the replay named the turn: each next frame is sent as it comes)
 *   -> REFILL (a frame came after a gap: it is held and the missing ones
 *   are read from the stream) -> LIVE ... -> NONE (the turn's last frame
 *   was sent, or the replay ended it). */
#ifndef CHATD_RESUME_H
#define CHATD_RESUME_H

#include <stddef.h>

#include "lib/uuid.h"

enum resume_state { RESUME_NONE, RESUME_PENDING, RESUME_LIVE, RESUME_REFILL };

/* A live frame of a turn: 'D' a delta (index: its own), 'F' the last
 * frame (index: the last delta's, -1 for none). */
struct resume_frame {
    const char *session;
    char tag;
    const char *turn;
    long long index;
    const char *frame;
    size_t len;
};

struct resume_io {
    /* Sends a copy of frame to the client. */
    void (*send)(void *ctx, const char *frame, size_t len);
    /* Asks for the frames of r->turn after delta r->last (events_refill);
     * they come back through resume_replayed(refill 1). */
    void (*refill)(void *ctx, const char *session, const char *turn, long long after);
    void *ctx;
};

struct resume_held;

struct resume {
    enum resume_state state;
    char session[UUID_STR_LEN + 1];
    char turn[UUID_STR_LEN + 1]; /* the turn it resumes, once the replay named it */
    long long last;              /* the last delta index the client was sent */
    struct resume_held *held, *held_tail;
};

/* Code 16 for session, the client having every delta up to after. */
void resume_begin(struct resume *r, const char *session, long long after);

/* A live frame of some session of the user: for the session r resumes,
 * sent, held, dropped (one it was sent already), or held while a refill
 * is asked; any other is not r's. */
void resume_live(struct resume *r, const struct resume_frame *f, const struct resume_io *io);

/* Whether an answer belongs to r as it is now: the replay (refill 0) of a
 * code 16 still pending for session, or a refill of turn that r waits
 * for. Else it was replaced by a later code 16 meanwhile. */
int resume_owns(const struct resume *r, int refill, const char *session, const char *turn);

/* The caller has sent an answer r owns (resume_owns): its frames end the
 * turn (ended), or the last delta in them is index (-1: none) of turn, and
 * the frames held meanwhile follow now. */
void resume_replayed(struct resume *r, int refill, const char *turn, long long index, int ended,
                     const struct resume_io *io);

/* Ends it (the client left, subscribed as another user, or is done). */
void resume_end(struct resume *r);

#endif
