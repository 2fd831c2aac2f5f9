/* test_export.c - the pure parts of work/export.c: CSV cells, download
 * names and formats. Whole exports run against PostgreSQL in
 * tests/integration/test_export.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "work/export.h"

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
        cmocka_unit_test(test_csv_cells),
        cmocka_unit_test(test_file_names),
        cmocka_unit_test(test_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
