/* test_connq.c - one connection's request order, output queue and
 * back-pressure rules (net/connq.c), without a socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "net/connq.h"
#include "work/request.h"

#define PRE 16

static struct work_request *job(int type)
{
    struct work_request *r = calloc(1, sizeof(*r));
    r->req.type = type;
    return r;
}

static struct work_request *ready(const char *text)
{
    struct work_request *r = calloc(1, sizeof(*r));
    r->ready = strdup(text);
    r->ready_len = strlen(text);
    return r;
}

static char *frame(const char *text) { return strdup(text); }

/* The frames owed, in order, joined with '|'. */
static void expect_out(const struct connq *q, const char *want)
{
    char got[256] = "";
    for (struct connq_msg *m = q->out_head; m != NULL; m = m->next) {
        if (got[0] != '\0')
            strcat(got, "|");
        strncat(got, (const char *)m->buf + PRE, m->len);
    }
    assert_string_equal(got, want);
}

static void test_one_request_at_a_time_in_order(void **state)
{
    (void)state;
    struct connq q;
    connq_init(&q, PRE, 1000, 8);
    connq_push(&q, job(0));
    connq_push(&q, job(1));
    connq_push(&q, job(2));
    int fx = 0;
    struct work_request *r = connq_next(&q, &fx);
    assert_non_null(r);
    assert_int_equal(r->req.type, 0);
    assert_null(connq_next(&q, &fx)); /* the first is with a worker */
    work_request_free(r);
    assert_int_equal(connq_answered(&q, frame("a0"), 2) & CONNQ_WRITE, CONNQ_WRITE);
    r = connq_next(&q, &fx);
    assert_int_equal(r->req.type, 1);
    work_request_free(r);
    connq_answered(&q, NULL, 0); /* it became a chat turn: nothing to send now */
    r = connq_next(&q, &fx);
    assert_int_equal(r->req.type, 2);
    work_request_free(r);
    connq_answered(&q, frame("a2"), 2);
    assert_null(connq_next(&q, &fx));
    expect_out(&q, "a0|a2");
    connq_clear(&q);
}

static void test_ready_answers_keep_their_place(void **state)
{
    (void)state;
    struct connq q;
    connq_init(&q, PRE, 1000, 8);
    connq_push(&q, ready("bad frame"));
    connq_push(&q, job(1));
    connq_push(&q, ready("stopped"));
    int fx = 0;
    struct work_request *r = connq_next(&q, &fx);
    assert_int_equal(r->req.type, 1); /* the ready one went out on the way */
    expect_out(&q, "bad frame");
    assert_null(connq_next(&q, &fx)); /* "stopped" waits behind the worker */
    work_request_free(r);
    connq_answered(&q, frame("one"), 3);
    assert_null(connq_next(&q, &fx));
    expect_out(&q, "bad frame|one|stopped");
    connq_clear(&q);
}

static void test_pause_at_max_inflight_and_resume_below_half(void **state)
{
    (void)state;
    struct connq q;
    connq_init(&q, PRE, 1000, 4);
    int fx = 0;
    connq_push(&q, job(0));
    struct work_request *busy = connq_next(&q, &fx);
    assert_int_equal(fx & CONNQ_PAUSE, 0);
    for (int i = 1; i <= 4; i++) {
        connq_push(&q, job(i));
        fx = 0;
        assert_null(connq_next(&q, &fx));
        /* four waiting behind the busy one: stop reading at the fourth */
        assert_int_equal((fx & CONNQ_PAUSE) != 0, i == 4);
    }
    assert_true(q.paused);
    /* draining, as the transport does (next until NULL after each answer):
     * reading resumes when fewer than max/2 + 1 wait */
    int resumed_at = -1;
    while (busy != NULL) {
        work_request_free(busy);
        connq_answered(&q, NULL, 0);
        fx = 0;
        busy = connq_next(&q, &fx);
        struct work_request *none = connq_next(&q, &fx);
        assert_null(none);
        if ((fx & CONNQ_RESUME) != 0 && resumed_at < 0)
            resumed_at = q.q_len;
    }
    assert_int_equal(resumed_at, 2);
    assert_false(q.paused);
    connq_clear(&q);
}

static void test_output_limit_pauses_marks_slow_and_recovers(void **state)
{
    (void)state;
    struct connq q;
    connq_init(&q, PRE, 100, 64);
    char big[61];
    memset(big, 'x', 60);
    big[60] = '\0';
    int fx = connq_send(&q, frame(big), 60, 0);
    assert_int_equal(fx, CONNQ_WRITE);
    fx = connq_send(&q, frame(big), 60, 0); /* 120 owed > 100 */
    assert_int_equal(fx, CONNQ_WRITE | CONNQ_PAUSE | CONNQ_SLOW);
    fx = connq_send(&q, frame("tail"), 4, 0);
    assert_int_equal(fx, CONNQ_WRITE); /* already paused and slow */
    fx = connq_sent(&q);               /* 64 owed: not slow, not yet half */
    assert_int_equal(fx, CONNQ_UNSLOW | CONNQ_WRITE);
    fx = connq_sent(&q); /* 4 owed: below half, read again */
    assert_int_equal(fx, CONNQ_WRITE | CONNQ_RESUME);
    fx = connq_sent(&q);
    assert_int_equal(fx, 0);
    assert_null(connq_head(&q));
    assert_int_equal(connq_sent(&q), 0); /* nothing owed: nothing happens */
    connq_clear(&q);
}

static void test_close_marker_and_clear(void **state)
{
    (void)state;
    struct connq q;
    connq_init(&q, PRE, 1000, 8);
    connq_send(&q, frame("last words"), 10, 0);
    assert_int_equal(connq_send(&q, NULL, 0, 1), CONNQ_WRITE);
    assert_int_equal(connq_send(&q, NULL, 0, 0), 0); /* no frame, no close: nothing */
    struct connq_msg *m = connq_head(&q);
    assert_false(m->is_close);
    connq_sent(&q);
    assert_true(connq_head(&q)->is_close);
    connq_push(&q, job(3)); /* freed by connq_clear, as at a close */
    connq_push(&q, ready("never sent"));
    connq_clear(&q);
    assert_null(connq_head(&q));
    assert_int_equal(q.q_len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_request_at_a_time_in_order),
        cmocka_unit_test(test_ready_answers_keep_their_place),
        cmocka_unit_test(test_pause_at_max_inflight_and_resume_below_half),
        cmocka_unit_test(test_output_limit_pauses_marks_slow_and_recovers),
        cmocka_unit_test(test_close_marker_and_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
