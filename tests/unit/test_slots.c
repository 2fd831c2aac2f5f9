/* test_slots.c - the turn order of each session and the parking of turns
 * that wait for another chatd's lease (work/slots.c), without a turn,
 * a worker or a database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "work/slots.h"

#define S1 "11111111-1111-4111-8111-111111111111"
#define S2 "22222222-2222-4222-8222-222222222222"
#define U1 "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define U2 "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

struct fake_turn {
    struct slot_turn slot;
    int stops;   /* how often its stop was called */
    int stop_rc; /* what its stop answers */
};

static int fake_stop(struct slot_turn *st)
{
    struct fake_turn *f = (struct fake_turn *)st; /* slot is first */
    f->stops++;
    return f->stop_rc;
}

static void fake(struct fake_turn *f, const char *session, const char *user, const char *turn)
{
    memset(f, 0, sizeof(*f));
    f->slot.session_id = session;
    f->slot.user_id = user;
    f->slot.turn_id = turn;
    f->slot.stop = fake_stop;
    f->stop_rc = 1;
}

static void test_turns_of_a_session_run_one_at_a_time_in_order(void **state)
{
    (void)state;
    struct slots *s = slots_create();
    struct fake_turn a, b, c;
    fake(&a, S1, U1, "t-a");
    fake(&b, S1, U1, "t-b");
    fake(&c, S1, U1, "t-c");
    assert_int_equal(slots_acquire(s, &a.slot), 1);
    assert_int_equal(slots_acquire(s, &b.slot), 0);
    assert_int_equal(slots_acquire(s, &c.slot), 0);
    /* each ending hands the slot to the next in arrival order */
    assert_ptr_equal(slots_release(s, &a.slot), &b.slot);
    assert_ptr_equal(slots_release(s, &b.slot), &c.slot);
    assert_null(slots_release(s, &c.slot));
    /* the slot is gone: the next turn owns it at once */
    assert_int_equal(slots_acquire(s, &a.slot), 1);
    assert_null(slots_release(s, &a.slot));
    slots_destroy(s);
}

static void test_sessions_do_not_wait_for_each_other(void **state)
{
    (void)state;
    struct slots *s = slots_create();
    struct fake_turn a, b, a2;
    fake(&a, S1, U1, "t-a");
    fake(&b, S2, U1, "t-b");
    fake(&a2, S1, U1, "t-a2");
    assert_int_equal(slots_acquire(s, &a.slot), 1);
    assert_int_equal(slots_acquire(s, &b.slot), 1);
    assert_int_equal(slots_acquire(s, &a2.slot), 0);
    assert_null(slots_release(s, &b.slot)); /* S2's end gives S1's queue nothing */
    assert_ptr_equal(slots_release(s, &a.slot), &a2.slot);
    assert_null(slots_release(s, &a2.slot));
    slots_destroy(s);
}

static void test_a_turn_that_owns_no_slot_releases_nothing(void **state)
{
    (void)state;
    struct slots *s = slots_create();
    struct fake_turn a, b, stray;
    fake(&a, S1, U1, "t-a");
    fake(&b, S1, U1, "t-b");
    fake(&stray, S1, U1, "t-stray");
    assert_int_equal(slots_acquire(s, &a.slot), 1);
    assert_int_equal(slots_acquire(s, &b.slot), 0);
    /* not the owner (one that ran unordered): the queue stays */
    assert_null(slots_release(s, &stray.slot));
    assert_ptr_equal(slots_release(s, &a.slot), &b.slot);
    assert_null(slots_release(s, &b.slot));
    slots_destroy(s);
}

static void test_a_stop_reaches_only_the_turn_it_names(void **state)
{
    (void)state;
    struct slots *s = slots_create();
    struct fake_turn a, b;
    fake(&a, S1, U1, "t-a");
    fake(&b, S1, U1, "t-b");
    /* nothing runs on the session */
    assert_int_equal(slots_stop(s, U1, S1, "t-a"), 0);
    assert_int_equal(slots_acquire(s, &a.slot), 1);
    assert_int_equal(slots_acquire(s, &b.slot), 0);
    /* another user's stop, another turn's, a queued turn's: none */
    assert_int_equal(slots_stop(s, U2, S1, "t-a"), 0);
    assert_int_equal(slots_stop(s, U1, S1, "t-old"), 0);
    assert_int_equal(slots_stop(s, U1, S1, "t-b"), 0);
    assert_int_equal(slots_stop(s, U1, S2, "t-a"), 0);
    assert_int_equal(a.stops + b.stops, 0);
    /* the running one: its stop's answer is the answer */
    assert_int_equal(slots_stop(s, U1, S1, "t-a"), 1);
    a.stop_rc = 0; /* too late */
    assert_int_equal(slots_stop(s, U1, S1, "t-a"), 0);
    assert_int_equal(a.stops, 2);
    /* b owns it now: a stop naming b reaches it */
    assert_ptr_equal(slots_release(s, &a.slot), &b.slot);
    assert_int_equal(slots_stop(s, U1, S1, "t-b"), 1);
    assert_int_equal(b.stops, 1);
    assert_null(slots_release(s, &b.slot));
    slots_destroy(s);
}

static void test_a_follow_marks_only_the_turn_it_names(void **state)
{
    (void)state;
    struct slots *s = slots_create();
    struct fake_turn a, b;
    fake(&a, S1, U1, "t-a");
    fake(&b, S1, U1, "t-b");
    /* nothing runs on the session */
    assert_int_equal(slots_follow(s, U1, S1, "t-a"), 0);
    assert_int_equal(slots_acquire(s, &a.slot), 1);
    assert_int_equal(slots_acquire(s, &b.slot), 0);
    /* another user's, another turn's, a queued turn's, another session's */
    assert_int_equal(slots_follow(s, U2, S1, "t-a"), 0);
    assert_int_equal(slots_follow(s, U1, S1, "t-old"), 0);
    assert_int_equal(slots_follow(s, U1, S1, "t-b"), 0);
    assert_int_equal(slots_follow(s, U1, S2, "t-a"), 0);
    assert_int_equal(atomic_load(&a.slot.followed) + atomic_load(&b.slot.followed), 0);
    /* the running one, once: said again, it stays marked */
    assert_int_equal(slots_follow(s, U1, S1, "t-a"), 1);
    assert_int_equal(slots_follow(s, U1, S1, "t-a"), 0);
    assert_int_equal(atomic_load(&a.slot.followed), 1);
    assert_int_equal(atomic_load(&b.slot.followed), 0);
    /* b owns it now, unmarked until named */
    assert_ptr_equal(slots_release(s, &a.slot), &b.slot);
    assert_int_equal(atomic_load(&b.slot.followed), 0);
    assert_int_equal(slots_follow(s, U1, S1, "t-b"), 1);
    assert_null(slots_release(s, &b.slot));
    slots_destroy(s);
}

static int count(struct slot_turn *list, const char *const *want)
{
    int n = 0;
    for (; list != NULL; list = list->park_next, n++)
        assert_string_equal(list->turn_id, want[n]);
    return n;
}

static void test_parked_turns_come_back_by_session_oldest_first(void **state)
{
    (void)state;
    struct slots *s = slots_create();
    struct fake_turn a, b, c, d;
    fake(&a, S1, U1, "t-a");
    fake(&b, S2, U1, "t-b");
    fake(&c, S1, U2, "t-c");
    fake(&d, S2, U2, "t-d");
    assert_null(slots_unpark(s, NULL));
    slots_park(s, &a.slot);
    slots_park(s, &b.slot);
    slots_park(s, &c.slot);
    slots_park(s, &d.slot);
    static const char *const s1[] = {"t-a", "t-c"};
    assert_int_equal(count(slots_unpark(s, S1), s1), 2);
    assert_null(slots_unpark(s, S1)); /* taken off the list */
    /* a lease that may have run out: every one left */
    static const char *const all[] = {"t-b", "t-d"};
    assert_int_equal(count(slots_unpark(s, NULL), all), 2);
    assert_null(slots_unpark(s, NULL));
    /* parked again after a retry that found the lease still held */
    slots_park(s, &a.slot);
    static const char *const again[] = {"t-a"};
    assert_int_equal(count(slots_unpark(s, S1), again), 1);
    slots_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_turns_of_a_session_run_one_at_a_time_in_order),
        cmocka_unit_test(test_sessions_do_not_wait_for_each_other),
        cmocka_unit_test(test_a_turn_that_owns_no_slot_releases_nothing),
        cmocka_unit_test(test_a_stop_reaches_only_the_turn_it_names),
        cmocka_unit_test(test_a_follow_marks_only_the_turn_it_names),
        cmocka_unit_test(test_parked_turns_come_back_by_session_oldest_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
