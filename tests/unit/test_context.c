/* test_context.c - work/context.c's pure parts: the token estimate and
 * trimming a history to a model's context window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "work/context.h"

static json_t *history_of(int n, size_t bytes_each)
{
    json_t *h = json_array();
    char buf[1024];
    memset(buf, 'x', bytes_each);
    buf[bytes_each] = '\0';
    for (int i = 0; i < n; i++) {
        buf[0] = (char)('a' + i % 26); /* tell entries apart */
        json_array_append_new(
            h, json_pack("{s:s, s:s}", "role", i % 2 ? "assistant" : "user", "content", buf));
    }
    return h;
}

static void test_estimate(void **state)
{
    (void)state;
    assert_int_equal(context_estimate_tokens(0), 0);
    assert_int_equal(context_estimate_tokens(1), 1);
    assert_int_equal(context_estimate_tokens(3), 1);
    assert_int_equal(context_estimate_tokens(4), 2);
    assert_int_equal(context_estimate_tokens(3000), 1000);
}

static void test_trim_keeps_all_when_it_fits(void **state)
{
    (void)state;
    json_t *h = history_of(10, 100);
    assert_int_equal(context_trim(h, 300, 128000), 0);
    assert_int_equal(json_array_size(h), 10);
    json_decref(h);
}

static void test_trim_drops_oldest_first(void **state)
{
    (void)state;
    json_t *h = history_of(10, 270); /* (270 + 32) bytes ~ 101 tokens each */
    /* 300 fixed bytes = 100 tokens; budget 500 leaves room for 3 entries */
    size_t dropped = context_trim(h, 300, 500);
    assert_int_equal(dropped, 7);
    assert_int_equal(json_array_size(h), 3);
    /* the newest three remain, in order: entries 7, 8, 9 start h, i, j */
    assert_int_equal(json_string_value(json_object_get(json_array_get(h, 0), "content"))[0], 'h');
    assert_int_equal(json_string_value(json_object_get(json_array_get(h, 2), "content"))[0], 'j');
    json_decref(h);
}

static void test_trim_to_nothing(void **state)
{
    (void)state;
    json_t *h = history_of(4, 100);
    assert_int_equal(context_trim(h, 100000, 4096), 4);
    assert_int_equal(json_array_size(h), 0);
    json_decref(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimate),
        cmocka_unit_test(test_trim_keeps_all_when_it_fits),
        cmocka_unit_test(test_trim_drops_oldest_first),
        cmocka_unit_test(test_trim_to_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
