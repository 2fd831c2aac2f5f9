/* test_bg.c - the polling background thread (lib/bg.c) alone: a wake, a
 * ready descriptor and a stop each end its wait, and stop joins it. The
 * thread reports what each wait returned through a pipe, so the test
 * waits for events, never for time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <unistd.h>

#include "lib/bg.h"

struct probe {
    struct bg bg;
    int fd;     /* what the thread also waits for */
    int out[2]; /* it writes each wait's result here */
};

static void *probe_main(void *arg)
{
    struct probe *p = arg;
    while (!bg_stopping(&p->bg)) {
        char r = (char)('0' + bg_wait(&p->bg, p->fd, -1));
        if (r == '0' + BG_READY) { /* take the byte so the next wait blocks */
            char c;
            ssize_t n = read(p->fd, &c, 1);
            (void)n;
        }
        if (write(p->out[1], &r, 1) != 1)
            break;
    }
    return NULL;
}

static char next_result(struct probe *p)
{
    char r = 0;
    assert_int_equal(read(p->out[0], &r, 1), 1);
    return r;
}

static void test_wake_ready_and_stop(void **state)
{
    (void)state;
    struct probe p = {0};
    int in[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(p.out), 0);
    p.fd = in[0];
    assert_int_equal(bg_start(&p.bg, probe_main, &p), 0);
    assert_false(bg_stopping(&p.bg));

    bg_wake(&p.bg);
    assert_int_equal(next_result(&p), '0' + BG_WOKEN);
    assert_int_equal(write(in[1], "x", 1), 1);
    assert_int_equal(next_result(&p), '0' + BG_READY);
    bg_wake(&p.bg); /* again: the pipe was emptied, so a wake still wakes */
    assert_int_equal(next_result(&p), '0' + BG_WOKEN);

    bg_stop(&p.bg); /* returns only once the thread has */
    assert_true(bg_stopping(&p.bg));
    assert_int_equal(p.bg.running, 0);
    assert_int_equal(p.bg.wake[0], -1);
    bg_stop(&p.bg); /* twice is fine */
    close(in[0]);
    close(in[1]);
    close(p.out[0]);
    close(p.out[1]);
}

static void test_wait_times_out_without_events(void **state)
{
    (void)state;
    struct bg b = {.wake = {-1, -1}};
    /* not started: a wait on nothing but the (absent) pipe times out */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    b.wake[0] = fds[0];
    b.wake[1] = fds[1];
    assert_int_equal(bg_wait(&b, -1, 0), BG_TIMEOUT);
    bg_wake(&b);
    assert_int_equal(bg_wait(&b, -1, 0), BG_WOKEN);
    assert_int_equal(bg_wait(&b, -1, 0), BG_TIMEOUT); /* emptied */
    bg_stop(&b);                                      /* never started: closes only */
    assert_int_equal(b.wake[1], -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wake_ready_and_stop),
        cmocka_unit_test(test_wait_times_out_without_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
