/* test_ledger.c - the pure parts of issue 12's money, titles, times and
 * exports: how an agent's cost becomes the decimal PostgreSQL stores
 * (util_money_text), how a title is cleaned (title_clean), code 13's
 * times (proto_parse_time), CSV cells and download names (work/export.c).
 * The ledger itself runs against PostgreSQL in
 * tests/integration/test_ledger.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "wire/proto.h"
#include "work/export.h"
#include "work/title.h"

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

static void test_parse_time(void **state)
{
    (void)state;
    long long us;
    assert_int_equal(proto_parse_time("1970-01-01T00:00:00Z", &us), 0);
    assert_int_equal(us, 0);
    assert_int_equal(proto_parse_time("2026-11-30T08:00:00Z", &us), 0);
    assert_int_equal(us, 1796025600LL * 1000000);
    assert_int_equal(proto_parse_time("2026-11-30", &us), 0);
    assert_int_equal(us, 1795996800LL * 1000000);
    assert_int_equal(proto_parse_time("2026-11-30T09:00:00.5+01:00", &us), 0);
    assert_int_equal(us, 1796025600LL * 1000000 + 500000);
    assert_int_equal(proto_parse_time("2026-11-30T07:30:00.123456789-00:30", &us), 0);
    assert_int_equal(us, 1796025600LL * 1000000 + 123456);
    assert_int_equal(proto_parse_time("2024-02-29T12:00:00z", &us), 0);
    const char *bad[] = {"",
                         "2026-11-30T08:00:00",
                         "2026-13-01",
                         "2026-02-30",
                         "2025-02-29",
                         "2026-11-30T24:00:00Z",
                         "2026-11-30T08:00Z",
                         "+026-11-30",
                         "2026-1-30",
                         "1969-12-31T23:59:59Z",
                         "2026-11-30T08:00:00.Z",
                         "2026-11-30T08:00:00Z trailing",
                         "2026-11-30T08:00:00+1:00",
                         " 2026-11-30",
                         "2026-11-30x",
                         "yesterday"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(proto_parse_time(bad[i], &us), -1);
}

static void expect_csv(const char *in, const char *want)
{
    struct buf b = {0};
    assert_int_equal(export_csv_text(&b, in), 0);
    assert_string_equal(b.p, want);
    free(b.p);
}

static void test_csv_cells(void **state)
{
    (void)state;
    expect_csv("plain", "\"plain\"");
    expect_csv("", "\"\"");
    expect_csv("a \"quoted\", word\r\nnext", "\"a \"\"quoted\"\", word\r\nnext\"");
    expect_csv("=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\"");
    expect_csv("+1", "\"'+1\"");
    expect_csv("-1", "\"'-1\"");
    expect_csv("@SUM(A1)", "\"'@SUM(A1)\"");
    expect_csv("\tx", "\"'\tx\"");
    expect_csv("\rx", "\"'\rx\"");
    expect_csv("a=1", "\"a=1\""); /* only a leading character matters */
}

static void test_file_names(void **state)
{
    (void)state;
    char out[96];
    const char *id = "0123abcd-0000-4000-8000-000000000000";
    export_file_name(out, sizeof(out), "Trip to Rome: plans!", id, "md");
    assert_string_equal(out, "Trip-to-Rome-plans-0123abcd-0000-4000-8000-000000000000.md");
    export_file_name(out, sizeof(out), "\"; rm -rf /; x=\"../..", id, "csv");
    assert_string_equal(out, "rm-rf-x-0123abcd-0000-4000-8000-000000000000.csv");
    export_file_name(out, sizeof(out), "Привет", id, "json");
    assert_string_equal(out, "chat-0123abcd-0000-4000-8000-000000000000.json");
    export_file_name(out, sizeof(out), "a very long session name that goes on and on and on and on",
                     id, "txt");
    assert_string_equal(
        out, "a-very-long-session-name-that-goes-on-an-0123abcd-0000-4000-8000-000000000000.txt");
}

static void test_formats(void **state)
{
    (void)state;
    enum export_format f;
    assert_int_equal(export_format_parse("csv", 0, &f), 0);
    assert_int_equal(f, EXPORT_CSV);
    assert_int_equal(export_format_parse("jsonl", 1, &f), 0);
    assert_int_equal(f, EXPORT_JSONL);
    assert_int_equal(export_format_parse("jsonl", 0, &f), -1);
    assert_int_equal(export_format_parse("json", 1, &f), -1);
    assert_int_equal(export_format_parse("CSV", 0, &f), -1);
    assert_int_equal(export_format_parse("", 0, &f), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money_float_at_float_precision),
        cmocka_unit_test(test_money_double_preferred),
        cmocka_unit_test(test_money_refuses_what_no_agent_may_charge),
        cmocka_unit_test(test_title_clean),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_csv_cells),
        cmocka_unit_test(test_file_names),
        cmocka_unit_test(test_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
