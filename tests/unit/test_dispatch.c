/* test_dispatch.c - the table of message codes (work/dispatch.c) alone:
 * every row is whole, the decoder admits exactly the codes of the table,
 * and each of them has series of its own in the metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/metrics.h"
#include "wire/proto.h"
#include "work/dispatch.h"

#define UID "bdff475a-a7f7-4590-9595-15fd8e6c7d0c"

/* The codes the existing client and chatd's own page send. */
static const int client_codes[] = {0,  1,  2,  3,  4,  5,  6,  8,  9,  10, 11, 12, 13,
                                   14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26};

static void test_every_row_is_whole_and_found_by_its_code(void **state)
{
    (void)state;
    int rows = 0;
    for (int code = -1; code <= 200; code++) {
        const struct dispatch_row *row = dispatch_find(code);
        assert_true((row != NULL) == (dispatch_decoder(code) != NULL));
        if (row == NULL)
            continue;
        rows++;
        assert_int_equal(row->type, code);
        assert_non_null(row->name);
        assert_true(row->name[0] != '\0');
        assert_non_null(row->decode);
        assert_non_null(row->run);
        assert_ptr_equal(dispatch_decoder(code), row->decode);
    }
    assert_int_equal(rows, sizeof(client_codes) / sizeof(client_codes[0]));
    for (size_t i = 0; i < sizeof(client_codes) / sizeof(client_codes[0]); i++)
        assert_non_null(dispatch_find(client_codes[i]));
    /* the server's own frames are never requests */
    assert_null(dispatch_find(PROTO_CHAT_DELTA));
    assert_null(dispatch_find(PROTO_EVENT));
}

static void test_the_decoder_admits_exactly_the_table(void **state)
{
    (void)state;
    static const struct proto_limits lim = {.max_chat_message_bytes = 64};
    for (int code = 0; code <= 40; code++) {
        char frame[160];
        snprintf(frame, sizeof(frame), "{\"type\":%d,\"data\":{\"user_id\":\"%s\"}}", code, UID);
        struct proto_request req;
        struct proto_error err;
        int rc = proto_decode(frame, strlen(frame), &lim, dispatch_decoder, &req, &err);
        if (dispatch_find(code) == NULL) {
            assert_int_equal(rc, -1);
            assert_int_equal(err.code, PERR_UNKNOWN_MESSAGE);
            assert_int_equal(err.type, code);
        } else if (rc == 0) {
            assert_int_equal(req.type, code);
            proto_request_free(&req);
        } else {
            /* the code's own fields are missing: its decoder said which */
            assert_int_equal(err.code, PERR_INVALID_FIELD);
            assert_int_equal(err.type, code);
        }
    }
}

static void test_every_code_has_its_own_metrics_series(void **state)
{
    (void)state;
    dispatch_register_metrics();
    size_t len = 0;
    char *text = metrics_render(0, 0, &len);
    assert_non_null(text);
    for (int code = 0; code <= 63; code++) {
        char series[96];
        snprintf(series, sizeof(series), "chatd_requests_total{code=\"%d\",outcome=\"ok\"}", code);
        /* a row of the table has a series; no other code has */
        if ((strstr(text, series) != NULL) != (dispatch_find(code) != NULL))
            fail_msg("code %d: series %s, row %s", code, strstr(text, series) ? "yes" : "no",
                     dispatch_find(code) ? "yes" : "no");
        snprintf(series, sizeof(series), "chatd_request_duration_seconds_count{code=\"%d\"}", code);
        assert_true((strstr(text, series) != NULL) == (dispatch_find(code) != NULL));
    }
    assert_non_null(strstr(text, "chatd_requests_total{code=\"other\",outcome=\"ok\"}"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_row_is_whole_and_found_by_its_code),
        cmocka_unit_test(test_the_decoder_admits_exactly_the_table),
        cmocka_unit_test(test_every_code_has_its_own_metrics_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
