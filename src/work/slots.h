/* slots.h - the order of the turns of each session in this process, and
 * the turns parked until another chatd gives their session's lease back.
 *
 * Turns of one session run one at a time, so that each sees the history
 * the previous one stored and both are stored in order: the first takes
 * the session's slot, the others queue behind it in arrival order and get
 * it one by one as each ends. A turn that holds the slot but finds the
 * session's lease (store/lease.h) held by another chatd parks here, holding
 * no thread, until that lease is given back or may have run out.
 *
 * Intrusive and knowing nothing of turns: a turn embeds a struct
 * slot_turn, and gets it back from these calls. Thread-safe; one per
 * process, owned by struct app (tests/unit/test_slots.c drives it alone). */
#ifndef CHATD_SLOTS_H
#define CHATD_SLOTS_H

#include <stdatomic.h>

struct slot_turn {
    /* The turn's own strings, set before slots_acquire and unchanged
     * while it is here. */
    const char *session_id, *user_id, *turn_id;
    /* A stop (code 8) heard for this turn from any chatd: called under the
     * slots' lock while the turn owns its slot; 1 when it took. */
    int (*stop)(struct slot_turn *st);
    /* A connection somewhere resumes this turn (slots_follow): its frames
     * go out live, not only into its stream. Never cleared. */
    atomic_int followed;
    struct slot_turn *wait_next; /* the session's queue */
    struct slot_turn *park_next; /* the parked list */
};

struct slots;

struct slots *slots_create(void);
/* Every turn has ended by then (nothing is queued or parked). */
void slots_destroy(struct slots *s);

/* 1: st owns its session's slot now; 0: it was queued behind the running
 * turn and comes back from slots_release when its time comes. */
int slots_acquire(struct slots *s, struct slot_turn *st);

/* st, the owner, ended: the next queued turn of its session, which owns
 * the slot now, or NULL (the slot is gone). */
struct slot_turn *slots_release(struct slots *s, const struct slot_turn *st);

/* Calls the stop of the turn that owns session's slot, if it is user's
 * turn turn_id (not one that started since the stop was asked). 1 when it
 * took. */
int slots_stop(struct slots *s, const char *user_id, const char *session_id, const char *turn_id);

/* Marks the turn that owns session's slot as followed, if it is user's
 * turn turn_id. 1 when this call marked it (it was not before). */
int slots_follow(struct slots *s, const char *user_id, const char *session_id, const char *turn_id);

/* Parks st, which owns its slot, until slots_unpark names its session. */
void slots_park(struct slots *s, struct slot_turn *st);

/* The parked turns of session_id (NULL: all of them), taken off the list
 * and linked by park_next, oldest first. */
struct slot_turn *slots_unpark(struct slots *s, const char *session_id);

#endif
