/* test_stream.c - what a resumer takes of a turn's stream
 * (work/stream.c, stream_view_take) alone: the deltas after the one it
 * has, in order, the end when it is there, and a gap (a frame Redis lost)
 * found rather than passed over as a shorter reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "store/live.h"
#include "work/stream.h"

#define TURN "6f9c0f6e-8c4b-4b1e-9a57-3f7f1a1f1e2d"

/* A stream read from a spec: "t" the turn entry, "d<i>" a delta, "e<i>"
 * the end after delta i, "x" an entry of another kind. */
static struct live_entry *stream_of(const char *const *spec, size_t n)
{
    struct live_entry *e = calloc(n, sizeof(*e));
    for (size_t i = 0; i < n; i++) {
        e[i].kind = spec[i][0] == 't'   ? LIVE_ENTRY_TURN
                    : spec[i][0] == 'd' ? LIVE_ENTRY_DELTA
                    : spec[i][0] == 'e' ? LIVE_ENTRY_END
                                        : 'x';
        e[i].index = spec[i][0] == 't' ? 0 : strtoll(spec[i] + 1, NULL, 10);
        e[i].frame = strdup(spec[i][0] == 't' ? TURN : spec[i]);
        e[i].len = strlen(e[i].frame);
    }
    return e;
}

/* The frames v took, joined with ','. */
static void expect(const struct stream_view *v, const char *want)
{
    char got[256] = "";
    for (size_t i = 0; i < v->n; i++) {
        if (i > 0)
            strcat(got, ",");
        strncat(got, v->frames[i], v->lens[i]);
    }
    assert_string_equal(got, want);
}

static void take(const char *const *spec, size_t n, long long after, struct stream_view *v)
{
    struct live_entry *e = stream_of(spec, n);
    assert_int_equal(stream_view_take(e, n, after, v), 0);
    live_entries_free(e, n); /* what v took is v's */
}

static void test_a_whole_turn_from_the_start_and_from_the_middle(void **state)
{
    (void)state;
    static const char *const s[] = {"t", "d0", "d1", "d2", "e2"};
    struct stream_view v;
    take(s, 5, -1, &v);
    assert_true(v.has_turn);
    assert_string_equal(v.turn, TURN);
    assert_true(v.ended);
    assert_false(v.gap);
    assert_int_equal(v.last, 2);
    expect(&v, "d0,d1,d2,e2");
    stream_view_free(&v);
    take(s, 5, 1, &v); /* has 0 and 1 */
    expect(&v, "d2,e2");
    assert_int_equal(v.last, 2);
    stream_view_free(&v);
    take(s, 5, 2, &v); /* has every delta: only the end */
    expect(&v, "e2");
    assert_true(v.ended);
    stream_view_free(&v);
}

static void test_a_running_turn_has_no_end_yet(void **state)
{
    (void)state;
    static const char *const s[] = {"t", "d0", "d1"};
    struct stream_view v;
    take(s, 3, 0, &v);
    assert_false(v.ended);
    assert_false(v.gap);
    assert_int_equal(v.last, 1);
    expect(&v, "d1");
    stream_view_free(&v);
    take(s, 3, 5, &v); /* ahead of the stream: nothing to give, no gap */
    assert_int_equal(v.n, 0);
    assert_int_equal(v.last, 5);
    assert_false(v.gap);
    stream_view_free(&v);
}

static void test_a_lost_delta_is_a_gap(void **state)
{
    (void)state;
    static const char *const s[] = {"t", "d0", "d2", "e2"};
    struct stream_view v;
    take(s, 4, -1, &v);
    assert_true(v.gap);
    assert_false(v.ended);
    expect(&v, "d0"); /* up to the gap */
    assert_int_equal(v.last, 0);
    stream_view_free(&v);
    take(s, 4, 1, &v); /* the lost one is behind it: no gap */
    assert_false(v.gap);
    expect(&v, "d2,e2");
    stream_view_free(&v);
}

static void test_an_end_after_missing_deltas_is_a_gap(void **state)
{
    (void)state;
    static const char *const s[] = {"t", "d0", "e3"};
    struct stream_view v;
    take(s, 3, -1, &v);
    assert_true(v.gap);
    assert_false(v.ended);
    expect(&v, "d0");
    stream_view_free(&v);
    /* a turn that streamed nothing: its end says -1 */
    static const char *const none[] = {"t", "e-1"};
    take(none, 2, -1, &v);
    assert_true(v.ended);
    assert_false(v.gap);
    expect(&v, "e-1");
    stream_view_free(&v);
}

static void test_no_turn_entry_no_view(void **state)
{
    (void)state;
    static const char *const s[] = {"d0", "d1"};
    struct stream_view v;
    take(s, 2, -1, &v);
    assert_false(v.has_turn);
    assert_int_equal(v.n, 0);
    stream_view_free(&v);
    take(s, 0, -1, &v);
    assert_false(v.has_turn);
    stream_view_free(&v);
    /* entries of a kind it does not know are passed over */
    static const char *const odd[] = {"t", "x", "d0", "x", "e0"};
    take(odd, 5, -1, &v);
    expect(&v, "d0,e0");
    assert_true(v.ended);
    stream_view_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_whole_turn_from_the_start_and_from_the_middle),
        cmocka_unit_test(test_a_running_turn_has_no_end_yet),
        cmocka_unit_test(test_a_lost_delta_is_a_gap),
        cmocka_unit_test(test_an_end_after_missing_deltas_is_a_gap),
        cmocka_unit_test(test_no_turn_entry_no_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
