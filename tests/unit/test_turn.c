/* test_turn.c - the rules of a chat turn's end (work/turn.c), alone: who
 * may stop it when, and what is stored and charged for each way it ends.
 * The same rules run end to end in tests/integration/test_chat.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "work/turn.h"

#define FAILED_STATUS 14 /* UNAVAILABLE: the agent is down */

static void test_who_may_stop_when(void **state)
{
    (void)state;
    /* the user's stop: only while the agent is still answering */
    assert_true(turn_stop_takes(0, 1));
    assert_false(turn_stop_takes(1, 1)); /* too late: error 23, the reply is stored */
    /* a dropped connection cancels at any time */
    assert_true(turn_stop_takes(0, 0));
    assert_true(turn_stop_takes(1, 0));
}

static void test_how_a_turn_ends(void **state)
{
    (void)state;
    /* start -> deltas -> done */
    assert_int_equal(turn_end_of(0, 0, AGENT_OK), TURN_END_STORED);
    /* start -> deltas -> stop (code 8) -> the call ends cancelled */
    assert_int_equal(turn_end_of(1, 1, AGENT_CANCELLED), TURN_END_STOPPED_ESTIMATE);
    /* the stop crossed the agent's last message: still stored as stopped,
     * since the user was told so, at the agent's own cost */
    assert_int_equal(turn_end_of(1, 1, AGENT_OK), TURN_END_STOPPED);
    /* the connection went (cancel, not a stop): nothing stored */
    assert_int_equal(turn_end_of(1, 0, AGENT_CANCELLED), TURN_END_DROPPED);
    /* ...but a reply the agent had finished before the cancel is kept */
    assert_int_equal(turn_end_of(1, 0, AGENT_OK), TURN_END_STORED);
    /* the agent failed: nothing stored, whether or not anyone cancelled */
    assert_int_equal(turn_end_of(0, 0, FAILED_STATUS), TURN_END_FAILED);
    assert_int_equal(turn_end_of(1, 1, FAILED_STATUS), TURN_END_FAILED);
    assert_int_equal(turn_end_of(0, 0, AGENT_UNIMPLEMENTED), TURN_END_FAILED);
    /* a call that reads cancelled though nobody cancelled it is a failure */
    assert_int_equal(turn_end_of(0, 0, AGENT_CANCELLED), TURN_END_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_who_may_stop_when),
        cmocka_unit_test(test_how_a_turn_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
