/* test_shutdown.c - the phases of a graceful stop (net/shutdown.c) alone:
 * turns first, then connections, each phase bounded by its deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "net/shutdown.h"

#define T0 1000000

static void test_running_waits_and_begins_once(void **state)
{
    (void)state;
    struct shutdown s = {0};
    assert_int_equal(shutdown_step(&s, T0, 0, 0), SHUTDOWN_WAIT); /* no SIGTERM yet */
    assert_int_equal(s.phase, SHUTDOWN_RUNNING);
    assert_int_equal(shutdown_begin(&s, T0, 30), 1);
    assert_int_equal(s.phase, SHUTDOWN_DRAIN_TURNS);
    assert_int_equal(s.deadline, T0 + 30);
    assert_int_equal(shutdown_begin(&s, T0 + 5, 30), 0); /* a second SIGTERM changes nothing */
    assert_int_equal(s.deadline, T0 + 30);
}

static void test_turns_then_connections(void **state)
{
    (void)state;
    struct shutdown s = {0};
    shutdown_begin(&s, T0, 30);
    /* a turn runs: its connection stays open for its reply */
    assert_int_equal(shutdown_step(&s, T0 + 1, 1, 3), SHUTDOWN_WAIT);
    assert_int_equal(shutdown_step(&s, T0 + 29, 2, 3), SHUTDOWN_WAIT);
    /* the last turn ended: close every connection */
    assert_int_equal(shutdown_step(&s, T0 + 29, 0, 3), SHUTDOWN_CLOSE_ALL);
    assert_int_equal(s.phase, SHUTDOWN_DRAIN_CONNS);
    assert_int_equal(s.deadline, T0 + 29 + SHUTDOWN_CLOSE_SECONDS);
    assert_int_equal(shutdown_step(&s, T0 + 30, 0, 2), SHUTDOWN_WAIT);
    assert_int_equal(shutdown_step(&s, T0 + 30, 0, 0), SHUTDOWN_STOP);
    assert_int_equal(s.phase, SHUTDOWN_STOPPED);
    assert_int_equal(shutdown_step(&s, T0 + 31, 0, 0), SHUTDOWN_WAIT); /* stopped stays */
}

static void test_deadlines_bound_each_phase(void **state)
{
    (void)state;
    struct shutdown s = {0};
    shutdown_begin(&s, T0, 10);
    /* a turn that never ends: the grace is over */
    assert_int_equal(shutdown_step(&s, T0 + 9, 1, 1), SHUTDOWN_WAIT);
    assert_int_equal(shutdown_step(&s, T0 + 10, 1, 1), SHUTDOWN_CLOSE_ALL);
    /* a connection that never closes: stop anyway */
    assert_int_equal(shutdown_step(&s, T0 + 12, 1, 1), SHUTDOWN_WAIT);
    assert_int_equal(shutdown_step(&s, T0 + 10 + SHUTDOWN_CLOSE_SECONDS, 1, 1), SHUTDOWN_STOP);
}

static void test_nothing_open_stops_at_once(void **state)
{
    (void)state;
    struct shutdown s = {0};
    shutdown_begin(&s, T0, 30);
    /* the server asks again after each step, in the same tick */
    assert_int_equal(shutdown_step(&s, T0, 0, 0), SHUTDOWN_CLOSE_ALL);
    assert_int_equal(shutdown_step(&s, T0, 0, 0), SHUTDOWN_STOP);
    /* no grace at all: turns get none */
    struct shutdown z = {0};
    shutdown_begin(&z, T0, 0);
    assert_int_equal(shutdown_step(&z, T0, 4, 4), SHUTDOWN_CLOSE_ALL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_running_waits_and_begins_once),
        cmocka_unit_test(test_turns_then_connections),
        cmocka_unit_test(test_deadlines_bound_each_phase),
        cmocka_unit_test(test_nothing_open_stops_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
