/* test_inval.c - what makes a cached copy fresh (inval.h), without a
 * database: announcements are applied as the listening thread would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>

#include "store/inval.h"

#define U1 "bdff475a-a7f7-4590-9595-15fd8e6c7d0c"
#define U2 "00000000-0000-4000-8000-000000000001"

static void test_announcements(void **state)
{
    (void)state;
    struct inval *iv = inval_new_detached();
    assert_non_null(iv);
    /* nothing heard: any copy read after the (zero) floor is fresh */
    assert_true(inval_user_fresh(iv, U1, 5, 9));
    assert_int_equal(inval_apply(iv, "u:" U1 ":100"), 0);
    /* a copy whose snapshot may have missed transaction 100 is stale... */
    assert_false(inval_user_fresh(iv, U1, 100, 120));
    assert_false(inval_user_fresh(iv, U1, 40, 101));
    /* ...one read after it is not */
    assert_true(inval_user_fresh(iv, U1, 101, 101));
    /* other users are not touched (unless they share a bucket) */
    assert_true(inval_user_fresh(iv, U2, 5, 9));
    /* upper case ids are the same user; older news changes nothing */
    assert_int_equal(inval_apply(iv, "u:BDFF475A-A7F7-4590-9595-15FD8E6C7D0C:150"), 0);
    assert_int_equal(inval_apply(iv, "u:" U1 ":7"), 0);
    assert_false(inval_user_fresh(iv, U1, 150, 160));
    assert_true(inval_user_fresh(iv, U1, 151, 160));
    /* this process's own writes */
    inval_saw_user(iv, U2, 300);
    assert_false(inval_user_fresh(iv, U2, 300, 301));
    /* the catalogue */
    assert_true(inval_models_fresh(iv, 1, 2));
    assert_int_equal(inval_apply(iv, "m:42"), 0);
    assert_false(inval_models_fresh(iv, 42, 50));
    assert_true(inval_models_fresh(iv, 43, 50));
    inval_stop(iv);
}

static void test_bad_payloads(void **state)
{
    (void)state;
    struct inval *iv = inval_new_detached();
    const char *bad[] = {"",
                         "u:",
                         "m:",
                         "m:-1",
                         "m:12x",
                         "x:1",
                         "u:" U1,
                         "u:" U1 ":",
                         "u:" U1 "1:5",
                         "u:not-a-uuid-not-a-uuid-not-a-uuid-xx:5",
                         "m:99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(inval_apply(iv, bad[i]), -1);
    assert_true(inval_user_fresh(iv, U1, 1, 2));
    assert_true(inval_models_fresh(iv, 1, 2));
    inval_stop(iv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_announcements),
        cmocka_unit_test(test_bad_payloads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
