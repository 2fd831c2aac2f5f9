/* test_outbox.c - posts from any thread reach the service thread in order
 * (work/outbox.c), without a transport: the wake is a counter here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "wire/proto.h"
#include "work/outbox.h"

static atomic_int wakes;

static void wake(void *arg)
{
    assert_ptr_equal(arg, &wakes);
    atomic_fetch_add(&wakes, 1);
}

static void test_posts_in_order_with_their_fields(void **state)
{
    (void)state;
    struct outbox *ob = outbox_create();
    outbox_reply(ob, 7, PROTO_BALANCE, json_pack("{s:f}", "balance", 1.5)); /* no wake yet */
    outbox_set_wake(ob, wake, &wakes);
    atomic_store(&wakes, 0);
    outbox_reply_error(ob, 7, PROTO_CHATS, PERR_NO_SESSION, NULL);
    outbox_push(ob, 8, strdup("{\"type\":7}"), 10);
    outbox_push(ob, 8, NULL, 0); /* nothing to push: no post */
    outbox_http(ob, 99, OUTBOX_ACCEPTED, strdup("{}"), 2);
    /* The list already held the first reply, so a wake was owed by whoever
     * sets one (net/server.c wakes itself once when it starts). */
    assert_int_equal(atomic_load(&wakes), 0);

    struct outbox_post *p = outbox_take(ob);
    assert_null(outbox_take(ob)); /* taken whole */
    assert_int_equal(p->kind, OUTBOX_REPLY);
    assert_int_equal(p->id, 7);
    assert_false(p->failed);
    assert_string_equal(p->frame, "{\"type\":6,\"data\":{\"balance\":1.5}}");
    struct outbox_post *n = p->next;
    outbox_post_free(p);
    p = n;
    assert_int_equal(p->kind, OUTBOX_REPLY);
    assert_true(p->failed);
    assert_non_null(strstr(p->frame, "\"code\":18"));
    n = p->next;
    outbox_post_free(p);
    p = n;
    assert_int_equal(p->kind, OUTBOX_PUSH);
    assert_int_equal(p->id, 8);
    assert_int_equal(p->len, 10);
    n = p->next;
    outbox_post_free(p);
    p = n;
    assert_int_equal(p->kind, OUTBOX_HTTP);
    assert_int_equal(p->outcome, OUTBOX_ACCEPTED);
    assert_int_equal(p->id, 99);
    assert_null(p->next);
    outbox_post_free(p);
    outbox_destroy(ob);
}

/* Only the post that makes the list non-empty wakes: the service thread
 * takes the whole list, so until then a wake is on its way. */
static void test_one_wake_per_batch(void **state)
{
    (void)state;
    struct outbox *ob = outbox_create();
    outbox_set_wake(ob, wake, &wakes);
    atomic_store(&wakes, 0);
    outbox_push(ob, 1, strdup("a"), 1);
    assert_int_equal(atomic_load(&wakes), 1);
    outbox_push(ob, 1, strdup("b"), 1);
    outbox_push(ob, 2, strdup("c"), 1);
    assert_int_equal(atomic_load(&wakes), 1);
    struct outbox_post *p = outbox_take(ob);
    int n = 0;
    while (p != NULL) {
        struct outbox_post *next = p->next;
        outbox_post_free(p);
        p = next;
        n++;
    }
    assert_int_equal(n, 3);
    outbox_push(ob, 1, strdup("d"), 1); /* the list was emptied: wake again */
    assert_int_equal(atomic_load(&wakes), 2);
    outbox_set_wake(ob, NULL, NULL);
    outbox_destroy(ob);
}

static void test_a_reply_that_cannot_be_encoded_is_error_2(void **state)
{
    (void)state;
    struct outbox *ob = outbox_create();
    outbox_reply(ob, 1, PROTO_USER_DETAILS, NULL); /* a handler that ran out of memory */
    struct outbox_post *p = outbox_take(ob);
    assert_true(p->failed);
    assert_non_null(strstr(p->frame, "\"error\":\"JSON Marshal Error\""));
    outbox_post_free(p);
    outbox_destroy(ob);
}

struct poster {
    struct outbox *ob;
    int id;
};

static void *post_many(void *arg)
{
    struct poster *ps = arg;
    for (int i = 0; i < 1000; i++) {
        char *f = malloc(16);
        snprintf(f, 16, "%d", i);
        outbox_push(ps->ob, (uint64_t)ps->id, f, strlen(f));
    }
    return NULL;
}

/* Many threads: every post arrives once, each thread's in its order. */
static void test_threads_keep_their_order(void **state)
{
    (void)state;
    struct outbox *ob = outbox_create();
    outbox_set_wake(ob, wake, &wakes);
    pthread_t th[4];
    struct poster ps[4];
    for (int t = 0; t < 4; t++) {
        ps[t] = (struct poster){ob, t};
        pthread_create(&th[t], NULL, post_many, &ps[t]);
    }
    int next[4] = {0, 0, 0, 0}, total = 0;
    while (total < 4000) {
        struct outbox_post *p = outbox_take(ob);
        while (p != NULL) {
            struct outbox_post *n = p->next;
            assert_int_equal(atoi(p->frame), next[p->id]++);
            total++;
            outbox_post_free(p);
            p = n;
        }
    }
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    assert_null(outbox_take(ob));
    outbox_set_wake(ob, NULL, NULL);
    outbox_push(ob, 1, strdup("kept"), 4); /* no transport: kept, freed below */
    outbox_destroy(ob);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posts_in_order_with_their_fields),
        cmocka_unit_test(test_one_wake_per_batch),
        cmocka_unit_test(test_a_reply_that_cannot_be_encoded_is_error_2),
        cmocka_unit_test(test_threads_keep_their_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
