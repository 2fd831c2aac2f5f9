/* test_title.c - how an agent's title is cleaned (work/title.c,
 * title_clean). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "work/title.h"

static void expect_title(const char *raw, const char *want)
{
    char out[TITLE_MAX_BYTES];
    if (want == NULL) {
        assert_int_equal(title_clean(raw, out, sizeof(out)), -1);
        return;
    }
    assert_int_equal(title_clean(raw, out, sizeof(out)), 0);
    assert_string_equal(out, want);
}

static void test_title_clean(void **state)
{
    {
        char q[TITLE_MAX_BYTES];
        /* quotes around an answer of several lines: the first line, unquoted */
        assert_int_equal(title_clean("\n\"Hello there\nsecond line\"\n", q, sizeof(q)), 0);
        assert_string_equal(q, "Hello there");
    }
    (void)state;
    expect_title("Trip to Rome", "Trip to Rome");
    expect_title("\"Trip to Rome\"", "Trip to Rome");
    expect_title("  **\"Trip to Rome.\"**  ", "Trip to Rome");
    expect_title("\xe2\x80\x9cTrip to Rome\xe2\x80\x9d", "Trip to Rome");
    expect_title("Title: Trip to Rome", "Trip to Rome");
    expect_title("## Trip to Rome", "Trip to Rome");
    expect_title("<think>The user wants a title.\nMaybe Rome?</think>\n\nTrip to Rome",
                 "Trip to Rome");
    expect_title("<THINK>x</THINK>Trip to Rome", "Trip to Rome");
    expect_title("reasoning without an opening tag</think>Trip to Rome", "Trip to Rome");
    expect_title("Trip to Rome<think>never closed", "Trip to Rome");
    expect_title("<thinking>a</thinking><reasoning>b</reasoning>Trip", "Trip");
    expect_title("\n\n  \nFirst line\nSecond line", "First line");
    expect_title("tab\there\x01"
                 "and\x7fthere",
                 "tab here and there");
    expect_title("a\xc2\x85"
                 "b\xe2\x80\xa8"
                 "c",
                 "a b c");
    expect_title("\"\"", NULL);
    expect_title("<think>only reasoning</think>", NULL);
    expect_title("   \n\t", NULL);
    expect_title("", NULL);
    expect_title("\xff\xfe not UTF-8", NULL);
    /* at most 60 characters, cut on a character boundary */
    char longer[200];
    memset(longer, 'a', 100);
    longer[100] = '\0';
    char want[61];
    memset(want, 'a', 60);
    want[60] = '\0';
    expect_title(longer, want);
    char cyr[300] = "";
    for (int i = 0; i < 70; i++)
        strcat(cyr, "\xd0\x96"); /* Ж: 2 bytes */
    char out[TITLE_MAX_BYTES];
    assert_int_equal(title_clean(cyr, out, sizeof(out)), 0);
    assert_int_equal(strlen(out), 120);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_title_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
