/* test_util.c - lib/util.c's money: how an agent's cost becomes the
 * decimal PostgreSQL stores (util_money_text). The ledger itself runs
 * against PostgreSQL in tests/integration/test_ledger.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

static void test_money_float_at_float_precision(void **state)
{
    (void)state;
    char m[UTIL_MONEY_MAX];
    assert_int_equal(util_money_text(m, 0.000128f, 0), 0);
    assert_string_equal(m, "0.000128"); /* not 0.00012799999967683107 */
    assert_int_equal(util_money_text(m, 0.000218f, 0), 0);
    assert_string_equal(m, "0.000218");
    assert_int_equal(util_money_text(m, 0.001f, 0), 0);
    assert_string_equal(m, "0.001");
    assert_int_equal(util_money_text(m, 1234.5678f, 0), 0);
    assert_string_equal(m, "1234.568"); /* 7 significant digits */
    assert_int_equal(util_money_text(m, 0, 0), 0);
    assert_string_equal(m, "0");
    assert_int_equal(util_money_text(m, -0.0f, 0), 0);
    assert_string_equal(m, "0");
}

static void test_money_double_preferred(void **state)
{
    (void)state;
    char m[UTIL_MONEY_MAX];
    /* the double wins when it is set, printed as the shortest text that
     * reads back as the same double */
    assert_int_equal(util_money_text(m, 0.000128f, 0.00012812345678), 0);
    assert_string_equal(m, "0.00012812345678");
    assert_int_equal(util_money_text(m, 0, 0.1 + 0.2), 0);
    assert_string_equal(m, "0.30000000000000004");
    assert_int_equal(util_money_text(m, 0, 0.000346), 0);
    assert_string_equal(m, "0.000346");
    assert_true(strtod(m, NULL) == 0.000346);
}

static void test_money_refuses_what_no_agent_may_charge(void **state)
{
    (void)state;
    char m[UTIL_MONEY_MAX];
    assert_int_equal(util_money_text(m, -0.5f, 0), -1);
    assert_string_equal(m, "0");
    assert_int_equal(util_money_text(m, NAN, 0), -1);
    assert_int_equal(util_money_text(m, INFINITY, 0), -1);
    assert_int_equal(util_money_text(m, 0, -1e-9), -1);
    assert_int_equal(util_money_text(m, 0.5f, NAN), -1);
    assert_int_equal(util_money_text(m, 0, INFINITY), -1);
    assert_string_equal(m, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money_float_at_float_precision),
        cmocka_unit_test(test_money_double_preferred),
        cmocka_unit_test(test_money_refuses_what_no_agent_may_charge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
