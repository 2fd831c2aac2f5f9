/* test_watch.c - the resumed turns watched for their end (work/watch.c)
 * alone: one watch per turn, one sweep at a time, dropped once its end is
 * delivered, and where an ended turn's last frame comes from while Redis
 * is away. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "work/pool.h"
#include "work/watch.h"

#define U "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define S1 "11111111-1111-4111-8111-111111111111"
#define S2 "22222222-2222-4222-8222-222222222222"
#define T1 "33333333-3333-4333-8333-333333333333"
#define T2 "44444444-4444-4444-8444-444444444444"

struct sweep {
    int seen;          /* watches the sweep was shown */
    const char *ended; /* the turn that has ended (its watch is dropped) */
};

static int ended(void *ctx, struct watch *x)
{
    struct sweep *s = ctx;
    s->seen++;
    assert_string_equal(x->user, U);
    return s->ended != NULL && strcmp(x->turn, s->ended) == 0;
}

static void test_one_watch_per_turn_dropped_when_it_ended(void **state)
{
    (void)state;
    struct watches *ws = watches_create();
    assert_null(watches_due(ws)); /* nothing watched: no sweep */
    watches_add(ws, U, S1, T1);
    watches_add(ws, U, S1, T1); /* two resumers of one turn */
    watches_add(ws, U, S2, T2);
    struct pool_job *job = watches_due(ws);
    assert_non_null(job);
    assert_null(watches_due(ws)); /* one sweep at a time */
    struct sweep s = {0};
    watches_sweep(ws, ended, &s);
    assert_int_equal(s.seen, 2);            /* nothing ended: both stay */
    assert_ptr_equal(watches_due(ws), job); /* the sweep is over: due again */
    s = (struct sweep){.ended = T1};
    watches_sweep(ws, ended, &s);
    assert_int_equal(s.seen, 2);
    assert_non_null(watches_due(ws));
    s = (struct sweep){.ended = T2};
    watches_sweep(ws, ended, &s);
    assert_int_equal(s.seen, 1);  /* T1's was dropped */
    assert_null(watches_due(ws)); /* none left */
    watches_add(ws, U, S1, T1);   /* watched again after its drop: a new watch */
    assert_non_null(watches_due(ws));
    s = (struct sweep){0};
    watches_sweep(ws, ended, &s);
    assert_int_equal(s.seen, 1);
    watches_destroy(ws); /* with one left */
}

static void test_where_the_end_comes_from(void **state)
{
    (void)state;
    struct watch x = {0};
    /* the stream has the turn's own last frame: those bytes */
    assert_int_equal(watch_source(&x, 1, 1), WATCH_FROM_STREAM);
    /* the stream lacks it (the chatd died before writing it): PostgreSQL's */
    assert_int_equal(watch_source(&x, 1, 0), WATCH_FROM_PG);
    assert_int_equal(x.redis_failed, 0);
    /* Redis away: wait a few sweeps for it, then PostgreSQL's */
    for (int i = 1; i < WATCH_REDIS_SWEEPS; i++)
        assert_int_equal(watch_source(&x, 0, 0), WATCH_WAIT);
    assert_int_equal(watch_source(&x, 0, 0), WATCH_FROM_PG);
    /* back in time: the stream's own frame after all */
    struct watch y = {0};
    assert_int_equal(watch_source(&y, 0, 0), WATCH_WAIT);
    assert_int_equal(watch_source(&y, 1, 1), WATCH_FROM_STREAM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_watch_per_turn_dropped_when_it_ended),
        cmocka_unit_test(test_where_the_end_comes_from),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
