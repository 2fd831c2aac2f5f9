/* test_ratelimit.c - rate-limit windows, their key names and the wait
 * reported to a refused client. (Counting itself runs against a real
 * Redis and PostgreSQL in tests/integration/test_limits.py.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "work/ratelimit.h"

#define USER "bdff475a-a7f7-4590-9595-15fd8e6c7d0c"

static void test_windows(void **state)
{
    (void)state;
    struct ratelimit_window m, d;
    /* 2024-03-01T12:34:56.5Z */
    ratelimit_windows(USER, 1709296496.5, &m, &d);
    assert_int_equal(m.start, 1709296440);
    assert_int_equal(m.end, 1709296500);
    assert_string_equal(m.key, "chatd:{u:" USER "}:rl:m:28488274");
    assert_int_equal(d.start, 1709251200); /* 2024-03-01T00:00:00Z */
    assert_int_equal(d.end, 1709337600);
    assert_string_equal(d.key, "chatd:{u:" USER "}:rl:d:20240301");
}

static void test_window_edges(void **state)
{
    (void)state;
    struct ratelimit_window m, d;
    /* the first instant of a minute and of a day belongs to it */
    ratelimit_windows(USER, 1709337600.0, &m, &d);
    assert_int_equal(m.start, 1709337600);
    assert_int_equal(d.start, 1709337600);
    assert_string_equal(d.key, "chatd:{u:" USER "}:rl:d:20240302");
    /* the last instant before still belongs to the previous ones */
    ratelimit_windows(USER, 1709337599.999, &m, &d);
    assert_int_equal(m.start, 1709337540);
    assert_int_equal(d.start, 1709251200);
    /* a leap day */
    ratelimit_windows(USER, 1709164800.0 + 3600, &m, &d);
    assert_string_equal(d.key, "chatd:{u:" USER "}:rl:d:20240229");
}

static void test_wait_seconds(void **state)
{
    (void)state;
    assert_int_equal(ratelimit_wait_seconds(1709296496.5, 1709296500), 4); /* 3.5 -> 4 */
    assert_int_equal(ratelimit_wait_seconds(1709296440.0, 1709296500), 60);
    assert_int_equal(ratelimit_wait_seconds(1709296440.001, 1709296500), 60);
    assert_int_equal(ratelimit_wait_seconds(1709296499.999, 1709296500), 1);
    assert_int_equal(ratelimit_wait_seconds(1709296500.0, 1709296500), 1); /* never 0 */
    assert_int_equal(ratelimit_wait_seconds(1709251200.0, 1709337600), 86400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_wait_seconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
