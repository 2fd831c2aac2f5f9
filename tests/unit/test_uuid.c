/* test_uuid.c - lib/uuid.c: generating and checking session and user ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lib/uuid.h"

static void test_uuid(void **state)
{
    (void)state;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1];
    assert_int_equal(uuid_generate(a), 0);
    assert_int_equal(uuid_generate(b), 0);
    assert_true(uuid_valid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4'); /* version 4 */
    assert_true(uuid_valid("BDFF475A-a7f7-4590-9595-15fd8e6c7d0c"));
    assert_false(uuid_valid("bdff475a-a7f7-4590-9595-15fd8e6c7d0"));
    assert_false(uuid_valid("bdff475a-a7f7-4590-9595-15fd8e6c7d0cc"));
    assert_false(uuid_valid("bdff475aa-7f7-4590-9595-15fd8e6c7d0c"));
    assert_false(uuid_valid("gdff475a-a7f7-4590-9595-15fd8e6c7d0c"));
    assert_false(uuid_valid(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
