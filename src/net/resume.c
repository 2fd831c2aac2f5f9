/* resume.c - a connection's resume of a running turn (see resume.h). */
#include "net/resume.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/queue.h"
#include "lib/util.h"

/* A live frame that came while the replay (or a refill) was being read. */
struct resume_held {
    struct resume_held *next;
    char tag;
    char turn[UUID_STR_LEN + 1];
    long long index;
    char *frame;
    size_t len;
};

static void held_clear(struct resume *r)
{
    while (r->held != NULL) {
        struct resume_held *h = r->held;
        r->held = h->next;
        free(h->frame);
        free(h);
    }
    r->held_tail = NULL;
}

/* Out of memory: the frame is lost; the client sees a gap at the turn's
 * end and asks again (code 16 with its last index). */
static void hold(struct resume *r, const struct resume_frame *f)
{
    struct resume_held *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->frame = util_memdup(f->frame, f->len)) == NULL) {
        free(h);
        return;
    }
    h->len = f->len;
    h->tag = f->tag;
    h->index = f->index;
    snprintf(h->turn, sizeof(h->turn), "%s", f->turn);
    QUEUE_APPEND(r->held, r->held_tail, h, next);
}

void resume_end(struct resume *r)
{
    r->state = RESUME_NONE;
    r->turn[0] = '\0';
    held_clear(r);
}

void resume_begin(struct resume *r, const char *session, long long after)
{
    held_clear(r);
    r->state = RESUME_PENDING;
    snprintf(r->session, sizeof(r->session), "%s", session);
    r->turn[0] = '\0';
    r->last = after;
}

/* A frame of the turn r resumes, LIVE or REFILL: sent when it is the next
 * one; one that comes after a gap (frames published while this chatd's
 * subscriber was cut off from Redis, or a last frame after deltas it
 * never got) is held, and the missing ones are read first. */
static void deliver(struct resume *r, const struct resume_frame *f, const struct resume_io *io)
{
    if (r->state == RESUME_REFILL) {
        hold(r, f);
        return;
    }
    if (f->tag == 'D' && f->index <= r->last)
        return; /* replayed already, or sent twice by a publisher that resent */
    long long before = f->tag == 'D' ? f->index - 1 : f->index;
    if (before > r->last) {
        hold(r, f);
        r->state = RESUME_REFILL;
        io->refill(io->ctx, r->session, r->turn, r->last);
        return;
    }
    io->send(io->ctx, f->frame, f->len);
    if (f->tag == 'D')
        r->last = f->index;
    else
        resume_end(r);
}

void resume_live(struct resume *r, const struct resume_frame *f, const struct resume_io *io)
{
    if (r->state == RESUME_NONE || strcmp(r->session, f->session) != 0)
        return;
    /* While the replay is read, its turn is not known yet: kept, and
     * sorted out with the replay. */
    if (r->state == RESUME_PENDING)
        hold(r, f);
    else if (strcmp(r->turn, f->turn) == 0)
        deliver(r, f, io);
}

int resume_owns(const struct resume *r, int refill, const char *session, const char *turn)
{
    int ours = refill ? r->state == RESUME_REFILL && strcmp(r->turn, turn) == 0
                      : r->state == RESUME_PENDING;
    return ours && strcmp(r->session, session) == 0;
}

void resume_replayed(struct resume *r, int refill, const char *turn, long long index, int ended,
                     const struct resume_io *io)
{
    if (ended) {
        resume_end(r);
        return;
    }
    if (index > r->last)
        r->last = index;
    if (!refill)
        snprintf(r->turn, sizeof(r->turn), "%s", turn);
    r->state = RESUME_LIVE;
    /* What was held meanwhile, in order: each may be sent, dropped, or
     * start another refill (which holds it again, on a new list). */
    struct resume_held *h = r->held;
    r->held = r->held_tail = NULL;
    while (h != NULL) {
        struct resume_held *next = h->next;
        if (r->state != RESUME_NONE && strcmp(h->turn, r->turn) == 0) {
            struct resume_frame f = {r->session, h->tag, h->turn, h->index, h->frame, h->len};
            deliver(r, &f, io);
        }
        free(h->frame);
        free(h);
        h = next;
    }
}
