/* test_local.c - copies in memory (store/local.h), without a database:
 * a copy is handed out only while inval says it is fresh, a late reader
 * never replaces a newer copy, and the table stays within its bounds,
 * oldest use first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/inval.h"
#include "store/local.h"

#define U1 "bdff475a-a7f7-4590-9595-15fd8e6c7d0c"
#define U2 "00000000-0000-4000-8000-000000000001"

static char *get(struct local *l, const char *key, const char *user)
{
    size_t len = 0;
    char *v = local_get(l, key, user, &len);
    if (v != NULL)
        assert_int_equal(len, strlen(v));
    return v;
}

static void expect(struct local *l, const char *key, const char *user, const char *want)
{
    char *v = get(l, key, user);
    if (want == NULL) {
        assert_null(v);
    } else {
        assert_non_null(v);
        assert_string_equal(v, want);
    }
    free(v);
}

static void test_fresh_only(void **state)
{
    (void)state;
    struct inval *iv = inval_new_detached();
    struct local *l = local_create(iv, 100, 1 << 20);
    local_put(l, "p:" U1, 10, 12, "{\"username\":\"a\"}", 16);
    local_put(l, "m", 10, 12, "[\"x\"]", 5);
    expect(l, "p:" U1, U1, "{\"username\":\"a\"}");
    expect(l, "m", NULL, "[\"x\"]");
    expect(l, "p:" U2, U2, NULL);
    /* a write to U1 the copy's snapshot may have missed: stale, and gone */
    inval_saw_user(iv, U1, 11);
    expect(l, "p:" U1, U1, NULL);
    size_t n, bytes;
    local_stats(l, &n, &bytes);
    assert_int_equal(n, 1);
    assert_int_equal(bytes, 5);
    /* the catalogue changed */
    assert_int_equal(inval_apply(iv, "m:20"), 0);
    expect(l, "m", NULL, NULL);
    /* a copy read after the write is fresh */
    local_put(l, "p:" U1, 21, 22, "{\"username\":\"b\"}", 16);
    expect(l, "p:" U1, U1, "{\"username\":\"b\"}");
    local_destroy(l);
    inval_stop(iv);
}

static void test_newer_wins(void **state)
{
    (void)state;
    struct inval *iv = inval_new_detached();
    struct local *l = local_create(iv, 100, 1 << 20);
    local_put(l, "s:" U1, 50, 51, "[2]", 3);
    local_put(l, "s:" U1, 40, 41, "[1]", 3); /* read earlier, stored later */
    expect(l, "s:" U1, U1, "[2]");
    local_put(l, "s:" U1, 60, 61, "[3]", 3);
    expect(l, "s:" U1, U1, "[3]");
    local_destroy(l);
    inval_stop(iv);
}

static void test_bounds(void **state)
{
    (void)state;
    struct inval *iv = inval_new_detached();
    struct local *l = local_create(iv, 3, 1000);
    char key[32];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "m%d", i);
        local_put(l, key, 5, 6, "abc", 3);
    }
    expect(l, "m0", NULL, "abc"); /* m0 used: m1 is now the oldest */
    local_put(l, "m3", 5, 6, "abc", 3);
    expect(l, "m1", NULL, NULL);
    expect(l, "m0", NULL, "abc");
    expect(l, "m2", NULL, "abc");
    expect(l, "m3", NULL, "abc");
    /* bytes: 251 is over a quarter of 1000, never kept; 240 makes room */
    char big[300];
    memset(big, 'x', sizeof(big));
    big[251] = '\0';
    local_put(l, "big", 5, 6, big, 251);
    expect(l, "big", NULL, NULL);
    big[240] = '\0';
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "b%d", i);
        local_put(l, key, 5, 6, big, 240);
    }
    size_t n, bytes;
    local_stats(l, &n, &bytes);
    assert_true(n <= 3);
    assert_true(bytes <= 1000);
    expect(l, "b5", NULL, big);
    local_destroy(l);
    inval_stop(iv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_only),
        cmocka_unit_test(test_newer_wins),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
