/* test_resume.c - a connection's resume of a running turn (net/resume.c)
 * alone: frames held while the replay is read, sent in order once it is,
 * duplicates dropped, a gap held while a refill is asked, the end of the
 * turn ending it. What it sends and asks is recorded, not sent. The same
 * rules run end to end in tests/integration/test_resume.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "net/resume.h"

#define S1 "11111111-1111-4111-8111-111111111111"
#define S2 "22222222-2222-4222-8222-222222222222"
#define T1 "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define T0 "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

struct record {
    char sent[512];  /* frames sent, joined with ',' */
    char asked[128]; /* refills asked: "after=<n>" each */
    int refills;
};

static void rec_send(void *ctx, const char *frame, size_t len)
{
    struct record *r = ctx;
    if (r->sent[0] != '\0')
        strcat(r->sent, ",");
    strncat(r->sent, frame, len);
}

static void rec_refill(void *ctx, const char *session, const char *turn, long long after)
{
    struct record *r = ctx;
    assert_string_equal(session, S1);
    assert_string_equal(turn, T1);
    char one[32];
    snprintf(one, sizeof(one), "%safter=%lld", r->asked[0] ? "," : "", after);
    strcat(r->asked, one);
    r->refills++;
}

/* A live frame: "d<i>" a delta, "f<i>" the last frame after delta i. */
static void live(struct resume *rs, struct record *rec, const char *session, const char *turn,
                 const char *frame)
{
    struct resume_frame f = {session, frame[0] == 'd' ? 'D' : 'F', turn, 0, frame, strlen(frame)};
    sscanf(frame + 1, "%lld", &f.index);
    struct resume_io io = {rec_send, rec_refill, rec};
    resume_live(rs, &f, &io);
}

static void replayed(struct resume *rs, struct record *rec, int refill, long long index, int ended)
{
    struct resume_io io = {rec_send, rec_refill, rec};
    assert_true(resume_owns(rs, refill, S1, T1));
    resume_replayed(rs, refill, T1, index, ended, &io);
}

static void test_frames_during_the_replay_are_held_then_sent_in_order(void **state)
{
    (void)state;
    struct resume rs = {0};
    struct record rec = {0};
    resume_begin(&rs, S1, 1); /* the client has deltas 0 and 1 */
    assert_int_equal(rs.state, RESUME_PENDING);
    live(&rs, &rec, S1, T1, "d3"); /* published while the replay is read */
    live(&rs, &rec, S1, T1, "d4");
    live(&rs, &rec, S1, T0, "d9"); /* another turn's (an older one): not ours */
    assert_string_equal(rec.sent, "");
    /* the replay had delta 2 (sent by the caller): the held ones follow */
    replayed(&rs, &rec, 0, 2, 0);
    assert_int_equal(rs.state, RESUME_LIVE);
    assert_string_equal(rs.turn, T1);
    assert_string_equal(rec.sent, "d3,d4");
    assert_int_equal(rs.last, 4);
    live(&rs, &rec, S1, T1, "d5");
    live(&rs, &rec, S1, T1, "f5");
    assert_string_equal(rec.sent, "d3,d4,d5,f5");
    assert_int_equal(rs.state, RESUME_NONE);
    assert_int_equal(rec.refills, 0);
    live(&rs, &rec, S1, T1, "d6"); /* after the end: nothing */
    assert_string_equal(rec.sent, "d3,d4,d5,f5");
}

static void test_duplicates_and_other_sessions_are_dropped(void **state)
{
    (void)state;
    struct resume rs = {0};
    struct record rec = {0};
    resume_begin(&rs, S1, -1);
    replayed(&rs, &rec, 0, 1, 0);  /* the replay had 0 and 1 */
    live(&rs, &rec, S1, T1, "d1"); /* replayed already */
    live(&rs, &rec, S1, T1, "d0"); /* resent by a publisher */
    live(&rs, &rec, S2, T1, "d2"); /* another session */
    live(&rs, &rec, S1, T0, "d2"); /* another turn */
    assert_string_equal(rec.sent, "");
    live(&rs, &rec, S1, T1, "d2");
    live(&rs, &rec, S1, T1, "d2");
    assert_string_equal(rec.sent, "d2");
    resume_end(&rs);
}

static void test_a_gap_holds_and_asks_for_a_refill(void **state)
{
    (void)state;
    struct resume rs = {0};
    struct record rec = {0};
    resume_begin(&rs, S1, -1);
    replayed(&rs, &rec, 0, 0, 0);
    live(&rs, &rec, S1, T1, "d3"); /* 1 and 2 never came */
    assert_int_equal(rs.state, RESUME_REFILL);
    assert_string_equal(rec.asked, "after=0");
    live(&rs, &rec, S1, T1, "d4"); /* held with it */
    assert_string_equal(rec.sent, "");
    /* a refill for another turn, or a replay, is not the one it waits for */
    assert_false(resume_owns(&rs, 1, S1, T0));
    assert_false(resume_owns(&rs, 0, S1, T1));
    /* the refill brought 1..3 (sent by the caller): 4 follows */
    replayed(&rs, &rec, 1, 3, 0);
    assert_int_equal(rs.state, RESUME_LIVE);
    assert_string_equal(rec.sent, "d4");
    assert_int_equal(rs.last, 4);
    /* a last frame after deltas it never got is a gap too */
    live(&rs, &rec, S1, T1, "f6");
    assert_int_equal(rs.state, RESUME_REFILL);
    assert_string_equal(rec.asked, "after=0,after=4");
    replayed(&rs, &rec, 1, 6, 0); /* 5 and 6: then the held end */
    assert_string_equal(rec.sent, "d4,f6");
    assert_int_equal(rs.state, RESUME_NONE);
}

static void test_a_replay_that_ends_the_turn_ends_the_resume(void **state)
{
    (void)state;
    struct resume rs = {0};
    struct record rec = {0};
    resume_begin(&rs, S1, 3);
    live(&rs, &rec, S1, T1, "d4"); /* held */
    replayed(&rs, &rec, 0, 4, 1);  /* the replay held the end */
    assert_int_equal(rs.state, RESUME_NONE);
    assert_string_equal(rec.sent, ""); /* the held ones went with it */
}

static void test_a_later_resume_replaces_the_earlier(void **state)
{
    (void)state;
    struct resume rs = {0};
    struct record rec = {0};
    resume_begin(&rs, S2, -1);
    struct resume_frame f = {S2, 'D', T1, 0, "x", 1};
    struct resume_io io = {rec_send, rec_refill, &rec};
    resume_live(&rs, &f, &io);                 /* held for S2 */
    resume_begin(&rs, S1, -1);                 /* a second code 16, another session */
    assert_false(resume_owns(&rs, 0, S2, T1)); /* the first's answer is not ours */
    replayed(&rs, &rec, 0, -1, 0);
    assert_string_equal(rec.sent, ""); /* S2's held frame went with it */
    assert_int_equal(rs.state, RESUME_LIVE);
    resume_end(&rs);
    assert_int_equal(rs.state, RESUME_NONE);
    assert_false(resume_owns(&rs, 0, S1, T1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_during_the_replay_are_held_then_sent_in_order),
        cmocka_unit_test(test_duplicates_and_other_sessions_are_dropped),
        cmocka_unit_test(test_a_gap_holds_and_asks_for_a_refill),
        cmocka_unit_test(test_a_replay_that_ends_the_turn_ends_the_resume),
        cmocka_unit_test(test_a_later_resume_replaces_the_earlier),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
