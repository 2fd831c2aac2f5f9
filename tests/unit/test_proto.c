/* test_proto.c - frame decoding and validation, reply encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "wire/proto.h"
#include "work/dispatch.h"

#define UID "bdff475a-a7f7-4590-9595-15fd8e6c7d0c"
#define SID "0e7c1f0a-1111-4222-8333-444455556666"

static const struct proto_limits lim = {.max_chat_message_bytes = 32};

static int decode(const char *frame, struct proto_request *req, struct proto_error *err)
{
    return proto_decode(frame, strlen(frame), &lim, dispatch_decoder, req, err);
}

static void expect_error(const char *frame, int code, const char *text_part)
{
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode(frame, &req, &err), -1);
    assert_int_equal(err.code, code);
    /* A variable part is in the text (code 17's documented form) or in
     * the detail (everything else), never both. */
    if (text_part != NULL && strstr(err.text, text_part) == NULL &&
        strstr(err.detail, text_part) == NULL)
        fail_msg("error \"%s\" / \"%s\" lacks \"%s\" (frame %s)", err.text, err.detail, text_part,
                 frame);
    if (code != PERR_INVALID_FIELD)
        assert_string_equal(err.text, proto_err_text(code));
    assert_null(req.root);
}

static void test_valid_simple_codes(void **state)
{
    (void)state;
    for (int t = 0; t <= 6; t++) {
        if (t == 2 || t == 3 || t == 4)
            continue;
        char frame[256];
        snprintf(frame, sizeof(frame), "{\"type\": %d, \"data\": {\"user_id\": \"%s\"}}", t,
                 "BDFF475A-A7F7-4590-9595-15FD8E6C7D0C");
        struct proto_request req;
        struct proto_error err;
        assert_int_equal(decode(frame, &req, &err), 0);
        assert_int_equal(req.type, t);
        assert_string_equal(req.user_id, UID); /* normalized to lower case */
        proto_request_free(&req);
    }
}

static void test_session_codes_need_session(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode("{\"type\":2,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID
                            "\"}}",
                            &req, &err),
                     0);
    assert_string_equal(req.session_id, SID);
    proto_request_free(&req);
    expect_error("{\"type\":2,\"data\":{\"user_id\":\"" UID "\"}}", PERR_INVALID_FIELD,
                 "'session_id': missing");
    expect_error("{\"type\":4,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\"}}",
                 PERR_INVALID_FIELD, "'session_id': not a valid UUID");
    expect_error("{\"type\":4,\"data\":{\"user_id\":\"" UID "\",\"session_id\":7}}",
                 PERR_INVALID_FIELD, "'session_id': expected a string");
}

static void test_chat_frame(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\","
                            "\"model_name\":\"llama3.1:8b\",\"message\":\"hi\","
                            "\"session_prompt\":\"\",\"file_name\":\"\",\"extra\":1}}",
                            &req, &err),
                     0);
    assert_true(req.session_new);
    assert_string_equal(req.model_name, "llama3.1:8b");
    assert_int_equal(req.model_id, -1);
    assert_string_equal(req.message, "hi");
    assert_int_equal(req.stream, 0);
    proto_request_free(&req);

    assert_int_equal(decode("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID
                            "\",\"model_id\":8,\"message\":\"hi\",\"stream\":true}}",
                            &req, &err),
                     0);
    assert_false(req.session_new);
    assert_int_equal(req.model_id, 8);
    assert_string_equal(req.session_prompt, "");
    assert_string_equal(req.file_name, "");
    assert_int_equal(req.stream, 1);
    proto_request_free(&req);
}

static void test_chat_errors(void **state)
{
    (void)state;
    expect_error("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\","
                 "\"message\":\"hi\"}}",
                 PERR_INVALID_FIELD, "'model_name': missing");
    expect_error("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\","
                 "\"model_name\":\"m\",\"message\":\"\"}}",
                 PERR_INVALID_FIELD, "'message': must not be empty");
    expect_error("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\","
                 "\"model_name\":\"m\",\"message\":[\"x\"]}}",
                 PERR_INVALID_FIELD, "'message': expected a string");
    expect_error("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\","
                 "\"model_name\":\"m\",\"message\":\"0123456789012345678901234567890123\"}}",
                 PERR_MESSAGE_TOO_LONG, "'message' exceeds 32 bytes");
    expect_error("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\","
                 "\"model_name\":\"m\",\"message\":\"x\",\"stream\":\"yes\"}}",
                 PERR_INVALID_FIELD, "'stream'");
    expect_error("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"new\","
                 "\"model_name\":\"m\",\"message\":\"x\"}}",
                 PERR_INVALID_FIELD, "'session_id'");
    expect_error("{\"type\":3,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"NEW\","
                 "\"model_id\":\"4\",\"message\":\"x\"}}",
                 PERR_INVALID_FIELD, "'model_id': expected an integer");
}

#define SID9 "0e9f2b52-9d54-4c43-8b0a-55e7b8b0f6a1"

/* Codes 9, 10, 12: their fields, defaults and bounds. */
static void test_history_codes(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode("{\"type\":9,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\"}}",
                            &req, &err),
                     0);
    assert_int_equal(req.limit, PROTO_PAGE_DEFAULT);
    assert_int_equal(req.before, -1);
    proto_request_free(&req);
    assert_int_equal(decode("{\"type\":9,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\",\"before\":7,\"limit\":200}}",
                            &req, &err),
                     0);
    assert_int_equal(req.limit, 200);
    assert_int_equal(req.before, 7);
    proto_request_free(&req);
    expect_error("{\"type\":9,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"limit\":0}}",
                 PERR_INVALID_FIELD, "'limit': out of range [1, 200]");
    expect_error("{\"type\":9,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"before\":-2}}",
                 PERR_INVALID_FIELD, "'before'");
    expect_error("{\"type\":9,\"data\":{\"user_id\":\"" UID "\"}}", PERR_INVALID_FIELD,
                 "'session_id'");

    assert_int_equal(decode("{\"type\":10,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\",\"session_name\":\"  My  trip \"}}",
                            &req, &err),
                     0);
    assert_string_equal(req.session_name, "My  trip"); /* trimmed, inner spaces kept */
    proto_request_free(&req);
    expect_error("{\"type\":10,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"session_name\":\"a\\nb\"}}",
                 PERR_INVALID_FIELD, "one line");
    expect_error("{\"type\":10,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"session_name\":\"  \"}}",
                 PERR_INVALID_FIELD, "must not be empty");
    /* A number past 64 bits is a field out of range, not bad JSON. */
    expect_error("{\"type\":9,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"before\": 123456789012345678901234567890}}",
                 PERR_INVALID_FIELD, "Invalid field 'before': integer out of range");
    expect_error("{\"type\":99999999999999999999999}", PERR_INVALID_FIELD,
                 "Invalid field 'type': integer out of range");
    expect_error("[1, -99999999999999999999999]", PERR_INVALID_FIELD,
                 "Invalid field 'frame': integer out of range");
    /* Every Unicode space is trimmed; a name of U+3000 alone is empty. */
    expect_error("{\"type\":10,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"session_name\":\"\\u3000\\u00a0\"}}",
                 PERR_INVALID_FIELD, "must not be empty");
    assert_int_equal(decode("{\"type\":10,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\",\"session_name\":\"\\u3000Trip\\u2003\\u00a0\"}}",
                            &req, &err),
                     0);
    assert_string_equal(req.session_name, "Trip");
    proto_request_free(&req);
    /* Format characters: bidirectional overrides and isolates, zero-width
     * ones, a BOM. A joiner between two characters (an emoji family) is
     * kept. */
    static const char *const hidden[] = {
        "abc\\u202efdp.exe", "a\\u202ab", "a\\u2066b\\u2069", "a\\u200bb",   "\\ufeffname",
        "a\\u2060b",         "a\\u200d",  "\\u200da",         "a \\u200d b", "a\\u00adb"};
    for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++) {
        char frame[256];
        snprintf(frame, sizeof(frame),
                 "{\"type\":10,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"session_name\":\"%s\"}}",
                 hidden[i]);
        expect_error(frame, PERR_INVALID_FIELD, "invisible or direction-changing");
    }
    assert_int_equal(decode("{\"type\":10,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\",\"session_name\":\"\\ud83d\\udc68\\u200d\\ud83d\\udc67\"}}",
                            &req, &err),
                     0);
    assert_string_equal(req.session_name, "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa7");
    proto_request_free(&req);

    assert_int_equal(decode("{\"type\":12,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\",\"seq\":3,\"rating\":-1}}",
                            &req, &err),
                     0);
    assert_int_equal(req.seq, 3);
    assert_int_equal(req.rating, -1);
    assert_string_equal(req.comment, "");
    proto_request_free(&req);
    expect_error("{\"type\":12,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"seq\":3}}",
                 PERR_INVALID_FIELD, "'rating': missing");
    expect_error("{\"type\":12,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"seq\":3,\"rating\":5}}",
                 PERR_INVALID_FIELD, "'rating': out of range");
    assert_int_equal(
        decode("{\"type\":11,\"data\":{\"user_id\":\"" UID "\",\"query\":\"a b\"}}", &req, &err),
        0);
    assert_int_equal(req.limit, PROTO_SEARCH_DEFAULT);
    assert_int_equal(req.offset, 0);
    proto_request_free(&req);
    expect_error("{\"type\":11,\"data\":{\"user_id\":\"" UID "\",\"query\":\"  \"}}",
                 PERR_INVALID_FIELD, "'query': must not be empty");
    expect_error("{\"type\":11,\"data\":{\"user_id\":\"" UID
                 "\",\"query\":\"x\",\"offset\":10001}}",
                 PERR_INVALID_FIELD, "'offset': out of range");
    /* code 1: whole without limit/before, a page with them */
    assert_int_equal(decode("{\"type\":1,\"data\":{\"user_id\":\"" UID "\"}}", &req, &err), 0);
    assert_false(req.paged);
    proto_request_free(&req);
    assert_int_equal(decode("{\"type\":1,\"data\":{\"user_id\":\"" UID "\",\"before\":\"17:" SID9
                            "\"}}",
                            &req, &err),
                     0);
    assert_true(req.paged);
    assert_int_equal(req.limit, PROTO_PAGE_DEFAULT);
    assert_string_equal(req.cursor, "17:" SID9);
    proto_request_free(&req);
    expect_error("{\"type\":1,\"data\":{\"user_id\":\"" UID "\",\"before\":\"17:x\"}}",
                 PERR_INVALID_FIELD, "'before': not a cursor");
    /* code 13: optional RFC 3339 times, until not before since */
    assert_int_equal(decode("{\"type\":13,\"data\":{\"user_id\":\"" UID "\"}}", &req, &err), 0);
    assert_true(req.since_us == -1 && req.until_us == -1);
    proto_request_free(&req);
    assert_int_equal(decode("{\"type\":13,\"data\":{\"user_id\":\"" UID
                            "\",\"since\":\"2026-11-30\","
                            "\"until\":\"2026-12-01T00:00:00Z\"}}",
                            &req, &err),
                     0);
    assert_int_equal(req.since_us, 1795996800LL * 1000000);
    assert_int_equal(req.until_us, 1796083200LL * 1000000);
    proto_request_free(&req);
    expect_error("{\"type\":13,\"data\":{\"user_id\":\"" UID "\",\"since\":1}}", PERR_INVALID_FIELD,
                 "'since': expected a string");
    expect_error("{\"type\":13,\"data\":{\"user_id\":\"" UID "\",\"until\":\"tomorrow\"}}",
                 PERR_INVALID_FIELD, "'until': not an RFC 3339");
    expect_error("{\"type\":13,\"data\":{\"user_id\":\"" UID "\",\"since\":\"2026-12-02\","
                 "\"until\":\"2026-12-01\"}}",
                 PERR_INVALID_FIELD, "'until': before 'since'");
    /* 14 subscribe; 15 is the server's only; 16 resume (after >= -1) */
    assert_int_equal(decode("{\"type\":14,\"data\":{\"user_id\":\"" UID "\"}}", &req, &err), 0);
    proto_request_free(&req);
    expect_error("{\"type\":15,\"data\":{\"user_id\":\"" UID "\"}}", PERR_UNKNOWN_MESSAGE, NULL);
    assert_int_equal(decode("{\"type\":16,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\"}}",
                            &req, &err),
                     0);
    assert_int_equal(req.after, -1);
    proto_request_free(&req);
    assert_int_equal(decode("{\"type\":16,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                            "\",\"after\":41}}",
                            &req, &err),
                     0);
    assert_int_equal(req.after, 41);
    proto_request_free(&req);
    expect_error("{\"type\":16,\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9
                 "\",\"after\":-2}}",
                 PERR_INVALID_FIELD, "'after'");
    expect_error("{\"type\":16,\"data\":{\"user_id\":\"" UID "\"}}", PERR_INVALID_FIELD,
                 "'session_id'");
    expect_error("{\"type\":27,\"data\":{\"user_id\":\"" UID "\"}}", PERR_UNKNOWN_MESSAGE, NULL);
}

#define TREE(type, rest)                                                                           \
    "{\"type\":" #type ",\"data\":{\"user_id\":\"" UID "\",\"session_id\":\"" SID9 "\"" rest "}}"

#define USER(type, rest) "{\"type\":" #type ",\"data\":{\"user_id\":\"" UID "\"" rest "}}"

/* Code 11's qualifiers come out of the words; code 1's filter has a
 * cursor of its own; codes 21..24 (issue 24). */
static void test_organize_and_share_codes(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(
        decode(USER(11, ",\"query\":\"a  tag:\\\"Two Words\\\" IS:PINNED b\""), &req, &err), 0);
    assert_string_equal(req.words, "a b");
    assert_string_equal(req.tag, "Two Words");
    assert_int_equal(req.pinned, 1);
    assert_int_equal(req.archived, -1);
    proto_request_free(&req);
    assert_int_equal(decode(USER(11, ",\"query\":\"is:archived\""), &req, &err), 0);
    assert_string_equal(req.words, "");
    assert_int_equal(req.archived, 1);
    proto_request_free(&req);
    /* "tag:" alone and "is:other" are words */
    assert_int_equal(decode(USER(11, ",\"query\":\"tag: is:other\""), &req, &err), 0);
    assert_string_equal(req.words, "tag: is:other");
    assert_string_equal(req.tag, "");
    proto_request_free(&req);
    expect_error(USER(11, ",\"query\":\"tag:a tag:b\""), PERR_INVALID_FIELD, "only one tag:");
    expect_error(USER(11, ",\"query\":\"tag:\\\"open\""), PERR_INVALID_FIELD, "closing quote");
    expect_error(USER(11, ",\"query\":\"tag:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""),
                 PERR_INVALID_FIELD, "longer than 40");

    assert_int_equal(decode(USER(1, ",\"filter\":{\"tag\":\" x \",\"pinned\":false}"), &req, &err),
                     0);
    assert_true(req.filtered && req.paged);
    assert_int_equal(req.limit, PROTO_PAGE_DEFAULT);
    assert_int_equal(req.archived, 0);
    assert_int_equal(req.pinned, 0);
    assert_string_equal(req.tag, "x");
    proto_request_free(&req);
    assert_int_equal(decode(USER(1, ",\"filter\":{},\"before\":\"1:17:" SID9 "\""), &req, &err), 0);
    assert_string_equal(req.cursor, "1:17:" SID9);
    assert_int_equal(req.pinned, -1);
    proto_request_free(&req);
    expect_error(USER(1, ",\"filter\":{},\"before\":\"17:" SID9 "\""), PERR_INVALID_FIELD,
                 "'before'");
    expect_error(USER(1, ",\"before\":\"1:17:" SID9 "\""), PERR_INVALID_FIELD, "'before'");
    expect_error(USER(1, ",\"filter\":3"), PERR_INVALID_FIELD, "'filter'");
    expect_error(USER(1, ",\"filter\":{\"archived\":\"no\"}"), PERR_INVALID_FIELD, "'archived'");

    assert_int_equal(decode(TREE(24, ",\"tags\":[\" a \",\"b\"],\"archived\":true"), &req, &err),
                     0);
    assert_int_equal(req.pinned, -1);
    assert_int_equal(req.archived, 1);
    assert_int_equal(json_array_size(req.tags), 2);
    assert_string_equal(json_string_value(json_array_get(req.tags, 0)), "a");
    proto_request_free(&req);
    /* a failure after some tags were read leaks nothing (ASan) */
    expect_error(TREE(24, ",\"tags\":[\"a\",\"\"]"), PERR_INVALID_FIELD,
                 "'tags': must not be empty");
    expect_error(TREE(24, ",\"tags\":[\"a\",1]"), PERR_INVALID_FIELD, "'tags'");
    expect_error(TREE(24, ",\"tags\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]"),
                 PERR_INVALID_FIELD, "more than 20");
    expect_error(TREE(24, ",\"pinned\":1"), PERR_INVALID_FIELD, "'pinned'");

    assert_int_equal(decode(TREE(21, ""), &req, &err), 0);
    assert_true(req.seq == -1 && req.expires_in == 0 && req.max_views == 0);
    proto_request_free(&req);
    assert_int_equal(
        decode(TREE(21, ",\"seq\":3,\"expires_in_seconds\":60,\"max_views\":1"), &req, &err), 0);
    assert_true(req.seq == 3 && req.expires_in == 60 && req.max_views == 1);
    proto_request_free(&req);
    expect_error(TREE(21, ",\"expires_in_seconds\":59"), PERR_INVALID_FIELD, "out of range");
    expect_error(TREE(21, ",\"max_views\":1000001"), PERR_INVALID_FIELD, "out of range");

    assert_int_equal(
        decode(USER(23, ",\"share_id\":\"abcdefghijklmnopqrstuvwxyz012-_Z\""), &req, &err), 0);
    assert_string_equal(req.share_id, "abcdefghijklmnopqrstuvwxyz012-_Z");
    proto_request_free(&req);
    expect_error(USER(23, ",\"share_id\":\"abcdefghijklmnopqrstuvwxyz012-_\""), PERR_INVALID_FIELD,
                 "'share_id'");
    expect_error(USER(23, ",\"share_id\":\"abcdefghijklmnopqrstuvwxyz012-_+\""), PERR_INVALID_FIELD,
                 "'share_id'");
    assert_int_equal(
        decode(USER(20, ",\"share_id\":\"abcdefghijklmnopqrstuvwxyz012-_Z\""), &req, &err), 0);
    assert_string_equal(req.share_id, "abcdefghijklmnopqrstuvwxyz012-_Z");
    assert_string_equal(req.session_id, "");
    proto_request_free(&req);
    expect_error(USER(20, ""), PERR_INVALID_FIELD, "'session_id'");
}

/* Issue 23: the client's name for a turn, on codes 3, 17 and 18. */
static void test_client_turn_id(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode(USER(3, ",\"session_id\":\"NEW\",\"model_name\":\"m\","
                                    "\"message\":\"hi\",\"client_turn_id\":\"a-1.b_2:c\""),
                            &req, &err),
                     0);
    assert_string_equal(req.client_turn_id, "a-1.b_2:c");
    proto_request_free(&req);
    assert_int_equal(decode(USER(3, ",\"session_id\":\"NEW\",\"model_name\":\"m\","
                                    "\"message\":\"hi\",\"client_turn_id\":null"),
                            &req, &err),
                     0);
    assert_string_equal(req.client_turn_id, "");
    proto_request_free(&req);
    assert_int_equal(decode(TREE(18, ",\"seq\":3,\"client_turn_id\":\"r\""), &req, &err), 0);
    assert_string_equal(req.client_turn_id, "r");
    proto_request_free(&req);
    const char *bad[] = {"\"\"",
                         "\"a b\"",
                         "\"a#1\"",
                         "7",
                         "[\"a\"]",
                         "\"\\u00e9\"",
                         "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char frame[512];
        snprintf(frame, sizeof(frame),
                 USER(3, ",\"session_id\":\"NEW\",\"model_name\":\"m\",\"message\":\"hi\","
                         "\"client_turn_id\":%s"),
                 bad[i]);
        expect_error(frame, PERR_INVALID_FIELD, "'client_turn_id'");
    }
}

/* Issue 25: code 3's temporary, code 25, code 26's cap. */
static void test_lifecycle_codes(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode(USER(3, ",\"session_id\":\"NEW\",\"model_name\":\"m\","
                                    "\"message\":\"hi\",\"temporary\":true"),
                            &req, &err),
                     0);
    assert_int_equal(req.temporary, 1);
    proto_request_free(&req);
    assert_int_equal(decode(USER(3, ",\"session_id\":\"NEW\",\"model_name\":\"m\","
                                    "\"message\":\"hi\""),
                            &req, &err),
                     0);
    assert_int_equal(req.temporary, 0);
    proto_request_free(&req);
    expect_error(USER(3, ",\"session_id\":\"" SID9 "\",\"model_name\":\"m\","
                         "\"message\":\"hi\",\"temporary\":true"),
                 PERR_INVALID_FIELD, "only a NEW session can be temporary");
    expect_error(USER(3, ",\"session_id\":\"NEW\",\"model_name\":\"m\","
                         "\"message\":\"hi\",\"temporary\":1"),
                 PERR_INVALID_FIELD, "'temporary'");
    assert_int_equal(decode(USER(1, ",\"filter\":{\"temporary\":true}"), &req, &err), 0);
    assert_int_equal(req.temporary, 1);
    assert_int_equal(req.filtered, 1);
    proto_request_free(&req);

    assert_int_equal(decode(USER(25, ",\"session_id\":\"" SID9 "\""), &req, &err), 0);
    assert_string_equal(req.session_id, SID9);
    proto_request_free(&req);
    expect_error(USER(25, ""), PERR_INVALID_FIELD, "'session_id'");

    assert_int_equal(decode(USER(26, ""), &req, &err), 0);
    assert_int_equal(req.cap_given, 0);
    proto_request_free(&req);
    assert_int_equal(decode(USER(26, ",\"monthly_cap\":12.34"), &req, &err), 0);
    assert_int_equal(req.cap_given, 1);
    assert_string_equal(req.cap, "12.34");
    proto_request_free(&req);
    assert_int_equal(decode(USER(26, ",\"monthly_cap\":null"), &req, &err), 0);
    assert_int_equal(req.cap_given, 1);
    assert_string_equal(req.cap, "");
    proto_request_free(&req);
    expect_error(USER(26, ",\"monthly_cap\":-1"), PERR_INVALID_FIELD, "'monthly_cap'");
    expect_error(USER(26, ",\"monthly_cap\":\"5\""), PERR_INVALID_FIELD, "'monthly_cap'");
    expect_error(USER(26, ",\"monthly_cap\":1e13"), PERR_INVALID_FIELD, "'monthly_cap'");
}

/* Codes 17..20: a session and a message's seq, and each code's own. */
static void test_tree_codes(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    /* 17: seq, message; model_name (NULL: the session's) and stream optional */
    assert_int_equal(
        decode(TREE(17, ",\"seq\":4,\"message\":\"again\",\"stream\":true"), &req, &err), 0);
    assert_int_equal(req.seq, 4);
    assert_string_equal(req.message, "again");
    assert_null(req.model_name);
    assert_int_equal(req.stream, 1);
    proto_request_free(&req);
    expect_error(TREE(17, ",\"message\":\"x\""), PERR_INVALID_FIELD, "'seq': missing");
    expect_error(TREE(17, ",\"seq\":-1,\"message\":\"x\""), PERR_INVALID_FIELD, "'seq'");
    expect_error(TREE(17, ",\"seq\":\"1\",\"message\":\"x\""), PERR_INVALID_FIELD, "'seq'");
    expect_error(TREE(17, ",\"seq\":1"), PERR_INVALID_FIELD, "'message': missing");
    expect_error(TREE(17, ",\"seq\":1,\"message\":\"\""), PERR_INVALID_FIELD, "'message'");
    expect_error(TREE(17, ",\"seq\":1,\"message\":\"x\",\"model_name\":\"\""), PERR_INVALID_FIELD,
                 "'model_name'");
    expect_error(TREE(17, ",\"seq\":1,\"message\":\"x\",\"stream\":1"), PERR_INVALID_FIELD,
                 "'stream'");
    expect_error("{\"type\":17,\"data\":{\"user_id\":\"" UID "\",\"seq\":1,\"message\":\"x\"}}",
                 PERR_INVALID_FIELD, "'session_id'");

    /* 18: one model, or 2..4 distinct ones side by side */
    assert_int_equal(decode(TREE(18, ",\"seq\":1,\"model_name\":\"m\""), &req, &err), 0);
    assert_string_equal(req.model_name, "m");
    assert_int_equal(req.n_models, 0);
    proto_request_free(&req);
    assert_int_equal(decode(TREE(18, ",\"seq\":1,\"model_names\":[\"a\",\"b\",\"c\"]"), &req, &err),
                     0);
    assert_int_equal(req.n_models, 3);
    assert_string_equal(req.model_names[2], "c");
    proto_request_free(&req);
    expect_error(TREE(18, ",\"seq\":1,\"model_names\":[\"a\"]"), PERR_INVALID_FIELD,
                 "'model_names'");
    expect_error(TREE(18, ",\"seq\":1,\"model_names\":[\"a\",\"b\",\"c\",\"d\",\"e\"]"),
                 PERR_INVALID_FIELD, "'model_names'");
    expect_error(TREE(18, ",\"seq\":1,\"model_names\":[\"a\",\"a\"]"), PERR_INVALID_FIELD, "twice");
    expect_error(TREE(18, ",\"seq\":1,\"model_names\":[\"a\",2]"), PERR_INVALID_FIELD,
                 "'model_names'");
    expect_error(TREE(18, ",\"seq\":1,\"model_name\":\"a\",\"model_names\":[\"a\",\"b\"]"),
                 PERR_INVALID_FIELD, "either");

    /* 19: seq only; 20: seq and an optional name, checked as code 10's */
    assert_int_equal(decode(TREE(19, ",\"seq\":0"), &req, &err), 0);
    assert_int_equal(req.seq, 0);
    proto_request_free(&req);
    expect_error(TREE(19, ""), PERR_INVALID_FIELD, "'seq': missing");
    assert_int_equal(decode(TREE(20, ",\"seq\":3"), &req, &err), 0);
    assert_string_equal(req.session_name, "");
    proto_request_free(&req);
    assert_int_equal(decode(TREE(20, ",\"seq\":3,\"session_name\":\"  Plan B \""), &req, &err), 0);
    assert_string_equal(req.session_name, "Plan B");
    proto_request_free(&req);
    expect_error(TREE(20, ",\"seq\":3,\"session_name\":\" \""), PERR_INVALID_FIELD,
                 "'session_name'");
    expect_error(TREE(20, ",\"seq\":3,\"session_name\":7"), PERR_INVALID_FIELD, "'session_name'");
}

/* Clients match on "error": it is exactly the documented text, and what
 * varies (a position, a limit) travels in "detail". */
static void test_error_text_is_exact_detail_separate(void **state)
{
    (void)state;
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode("not json", &req, &err), -1);
    assert_string_equal(err.text, "JSON Parsing Error");
    assert_non_null(strstr(err.detail, "position"));
    size_t len;
    char *s = proto_encode_error(&err, &len);
    json_t *o = json_loads(s, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "error")), "JSON Parsing Error");
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "position"));
    json_decref(o);
    free(s);
    s = proto_encode_error_code(3, PERR_FRAME_TOO_LARGE, NULL, "limit is 9 bytes", &len);
    assert_string_equal(s, "{\"error\":\"Frame Too Large\",\"code\":19,\"type\":3,"
                           "\"detail\":\"limit is 9 bytes\"}");
    free(s);
    s = proto_encode_error_code(-1, PERR_INTERNAL, NULL, NULL, &len);
    assert_string_equal(s, "{\"error\":\"Internal Server Error\",\"code\":14}");
    free(s);
    /* One of several answers side by side: the error says which. */
    s = proto_encode_answer_error(18, PERR_AGENT, NULL, 1, 3, "gpt-4", &len);
    assert_string_equal(s, "{\"error\":\"Unable to Receive Response To Query\",\"code\":6,"
                           "\"type\":18,\"answer\":1,\"answers\":3,\"model_name\":\"gpt-4\"}");
    assert_int_equal(len, strlen(s));
    free(s);
}

/* The delta frame written by hand is byte for byte the one jansson would
 * write, for text that needs escaping, long text and side-by-side answers;
 * text that is not UTF-8 gives no frame (as json_stringn refuses it). */
static void test_encode_delta(void **state)
{
    (void)state;
    static char long_text[3000];
    memset(long_text, 'x', sizeof(long_text) - 1);
    long_text[7] = '"';
    long_text[2000] = '\n';
    const char *texts[] = {"hello", "quote \" back \\ slash / tab\t nl\n cr\r \x01 \x1f",
                           "caf\xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80", "", long_text};
    const char *sid = "0e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10";
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        for (int answer = -1; answer <= 2; answer += 3) {
            json_t *data = json_pack("{s:s, s:s, s:I}", "session_id", sid, "delta", texts[i],
                                     "index", (json_int_t)(41 + i));
            if (answer >= 0)
                json_object_set_new(data, "answer", json_integer(answer));
            size_t want_len = 0, got_len = 0;
            char *want = proto_encode_reply(PROTO_CHAT_DELTA, data, &want_len);
            char *got = proto_encode_delta(sid, texts[i], strlen(texts[i]), 41 + (long long)i,
                                           answer, &got_len);
            assert_non_null(got);
            assert_int_equal(got_len, want_len);
            assert_string_equal(got, want);
            free(want);
            free(got);
        }
    size_t len = 0;
    assert_null(proto_encode_delta(sid, "bad \xff utf-8", 11, 0, -1, &len));
    assert_null(proto_encode_delta(sid, "cut \xc3", 5, 0, -1, &len));
}

/* Delta frames a connection has not sent yet, joined into one: the texts
 * concatenate (escapes kept as they are), "index" is the last piece's and
 * "first" the first's; only pieces that follow each other, of one session
 * and answer, join; anything else is not read as a delta frame. */
static void test_delta_join(void **state)
{
    (void)state;
    const char *sid = "0e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10";
    const char *other = "1e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10";
    const char *texts[] = {"Hel", "lo \"w\\", "orld\n\xc3\xa9", "!"};
    char *f[4];
    size_t fl[4];
    struct proto_delta_view v[4];
    for (int i = 0; i < 4; i++) {
        f[i] = proto_encode_delta(sid, texts[i], strlen(texts[i]), 7 + i, -1, &fl[i]);
        assert_int_equal(proto_delta_view(f[i], fl[i], &v[i]), 0);
        assert_int_equal(v[i].first, 7 + i);
        assert_int_equal(v[i].last, 7 + i);
        assert_int_equal(v[i].answer, -1);
        if (i > 0)
            assert_true(proto_delta_follows(&v[i - 1], &v[i]));
    }
    assert_false(proto_delta_follows(&v[0], &v[2])); /* a gap */
    assert_false(proto_delta_follows(&v[1], &v[0])); /* backwards */
    char out[512];
    size_t n = proto_delta_join(v, 4, out, sizeof(out));
    assert_int_equal(n, proto_delta_join_len(v, 4));
    out[n] = '\0';
    json_t *o = json_loads(out, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "type")), PROTO_CHAT_DELTA);
    json_t *d = json_object_get(o, "data");
    assert_string_equal(json_string_value(json_object_get(d, "session_id")), sid);
    assert_string_equal(json_string_value(json_object_get(d, "delta")),
                        "Hello \"w\\orld\n\xc3\xa9!");
    assert_int_equal(json_integer_value(json_object_get(d, "index")), 10);
    assert_int_equal(json_integer_value(json_object_get(d, "first")), 7);
    assert_null(json_object_get(d, "answer"));
    json_decref(o);
    /* a joined frame is read back, and joins on */
    struct proto_delta_view j;
    assert_int_equal(proto_delta_view(out, n, &j), 0);
    assert_int_equal(j.first, 7);
    assert_int_equal(j.last, 10);
    /* one piece alone is written as proto_encode_delta writes it */
    n = proto_delta_join(v, 1, out, sizeof(out));
    assert_int_equal(n, fl[0]);
    assert_memory_equal(out, f[0], n);
    /* too small a buffer: nothing */
    assert_int_equal(proto_delta_join(v, 4, out, 20), 0);
    /* answers side by side: the same answer only */
    size_t la, lb, lc;
    char *a = proto_encode_delta(sid, "x", 1, 3, 1, &la);
    char *b = proto_encode_delta(sid, "y", 1, 4, 1, &lb);
    char *c = proto_encode_delta(sid, "z", 1, 5, 0, &lc);
    struct proto_delta_view va, vb, vc;
    assert_int_equal(proto_delta_view(a, la, &va), 0);
    assert_int_equal(proto_delta_view(b, lb, &vb), 0);
    assert_int_equal(proto_delta_view(c, lc, &vc), 0);
    assert_true(proto_delta_follows(&va, &vb));
    assert_false(proto_delta_follows(&vb, &vc));
    struct proto_delta_view ab[2] = {va, vb};
    n = proto_delta_join(ab, 2, out, sizeof(out));
    out[n] = '\0';
    assert_string_equal(out,
                        "{\"type\":7,\"data\":{\"session_id\":\"0e6bd7e4-6c1a-4c73-8a39-"
                        "0f3f4a1e2b10\",\"delta\":\"xy\",\"index\":4,\"first\":3,\"answer\":1}}");
    assert_int_equal(proto_delta_view(out, n, &j), 0);
    assert_int_equal(j.answer, 1);
    /* another session's pieces never join */
    size_t lo;
    char *fo = proto_encode_delta(other, "w", 1, 11, -1, &lo);
    struct proto_delta_view vo;
    assert_int_equal(proto_delta_view(fo, lo, &vo), 0);
    assert_false(proto_delta_follows(&v[3], &vo));
    /* not delta frames */
    const char *nots[] = {
        "{\"type\":3,\"data\":{}}",
        "{\"type\":7,\"data\":{\"session_id\":\"0e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10\",\"delta\":"
        "\"x\\",
        "{\"type\":7,\"data\":{\"session_id\":\"0e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10\",\"delta\":"
        "\"x\",\"index\":}}",
        "{\"type\":7,\"data\":{\"session_id\":\"0e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10\",\"delta\":"
        "\"x\",\"index\":1}} ",
        "{\"type\":7,\"data\":{\"session_id\":\"0e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10\",\"delta\":"
        "\"x\",\"index\":1,\"first\":2}}",
        "{\"type\":7,\"data\":{\"session_id\":\"0e6bd7e4-6c1a-4c73-8a39-0f3f4a1e2b10\",\"delta\":"
        "\"x\",\"index\":1234567890123456789}}",
    };
    for (size_t i = 0; i < sizeof(nots) / sizeof(nots[0]); i++)
        assert_int_equal(proto_delta_view(nots[i], strlen(nots[i]), &j), -1);
    for (int i = 0; i < 4; i++)
        free(f[i]);
    free(a);
    free(b);
    free(c);
    free(fo);
}

static void test_envelope_errors(void **state)
{
    (void)state;
    expect_error("", PERR_JSON_PARSE, "JSON Parsing Error");
    expect_error("{\"type\":0,", PERR_JSON_PARSE, "JSON Parsing Error");
    expect_error("\"hello\"", PERR_JSON_PARSE, NULL); /* not an object or array */
    expect_error("[1, 2]", PERR_INVALID_FIELD, "'frame': expected a JSON object");
    expect_error("{\"data\":{}}", PERR_INVALID_FIELD, "'type': missing");
    expect_error("{\"type\":\"0\",\"data\":{}}", PERR_INVALID_FIELD, "'type': expected an integer");
    expect_error("{\"type\":1.5,\"data\":{}}", PERR_INVALID_FIELD, "'type': expected an integer");
    expect_error("{\"type\":0}", PERR_INVALID_FIELD, "'data': missing");
    expect_error("{\"type\":0,\"data\":[]}", PERR_INVALID_FIELD, "'data': expected an object");
    expect_error("{\"type\":0,\"data\":{\"user_id\":null}}", PERR_INVALID_FIELD,
                 "'user_id': expected a string");
    expect_error("{\"type\":0,\"data\":{\"user_id\":\"" UID "x\"}}", PERR_INVALID_FIELD,
                 "not a valid UUID");
    expect_error("{\"type\":0,\"data\":{\"user_id\":\"' or 1=1 --\"}}", PERR_INVALID_FIELD,
                 "not a valid UUID");
    /* duplicate keys are ambiguous: refuse rather than pick one */
    expect_error("{\"type\":0,\"type\":1,\"data\":{}}", PERR_JSON_PARSE, NULL);
    /* invalid UTF-8 and NUL inside strings */
    expect_error("{\"type\":0,\"data\":{\"user_id\":\"\xff\"}}", PERR_JSON_PARSE, NULL);
    expect_error("{\"type\":0,\"data\":{\"user_id\":\"a\\u0000b\"}}", PERR_JSON_PARSE, NULL);

    struct proto_request req;
    struct proto_error err;
    assert_int_equal(decode("{\"type\":42,\"data\":{}}", &req, &err), -1);
    assert_int_equal(err.code, PERR_UNKNOWN_MESSAGE);
    assert_int_equal(err.type, 42);
    assert_string_equal(err.text, "Unknown Message");
    assert_int_equal(decode("{\"type\":7,\"data\":{}}", &req, &err), -1); /* server-only */
    assert_int_equal(err.code, PERR_UNKNOWN_MESSAGE);
}

/* Found by fuzz/fuzz_proto.c: jansson quotes the bad input in its error
 * text, and invalid UTF-8 there made the error reply unencodable. */
static void test_parse_error_with_invalid_utf8_still_encodes(void **state)
{
    (void)state;
    const char frame[] = "{\"type\":3,\"data\":{\"message\":\"\\u4\xd2\x9a\xc6\xdd\"}}";
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(proto_decode(frame, sizeof(frame) - 1, &lim, dispatch_decoder, &req, &err),
                     -1);
    assert_int_equal(err.code, PERR_JSON_PARSE);
    size_t len;
    char *s = proto_encode_error(&err, &len);
    assert_non_null(s);
    json_t *back = json_loads(s, 0, NULL);
    assert_non_null(back);
    assert_true(json_is_string(json_object_get(back, "error")));
    json_decref(back);
    free(s);

    /* and an error whose text is not UTF-8 falls back to the code's text */
    proto_error_set(&err, 0, PERR_JSON_PARSE);
    strcpy(err.text, "bad \xff");
    s = proto_encode_error(&err, &len);
    assert_string_equal(s, "{\"error\":\"JSON Parsing Error\",\"code\":0,\"type\":0}");
    free(s);
}

static void test_deep_nesting_is_refused(void **state)
{
    (void)state;
    size_t depth = 100000;
    char *frame = malloc(depth * 2 + 1);
    memset(frame, '[', depth);
    memset(frame + depth, ']', depth);
    frame[depth * 2] = '\0';
    struct proto_request req;
    struct proto_error err;
    assert_int_equal(proto_decode(frame, depth * 2, &lim, dispatch_decoder, &req, &err), -1);
    assert_int_equal(err.code, PERR_JSON_PARSE);
    free(frame);
}

static void test_encode(void **state)
{
    (void)state;
    size_t len;
    char *s = proto_encode_reply(6, json_pack("{s:f}", "balance", 9.9985), &len);
    assert_string_equal(s, "{\"type\":6,\"data\":{\"balance\":9.9985}}");
    assert_int_equal(len, strlen(s));
    free(s);

    struct proto_error err;
    proto_error_set(&err, 2, PERR_NO_SESSION);
    s = proto_encode_error(&err, &len);
    assert_string_equal(s, "{\"error\":\"Session Not Found\",\"code\":18,\"type\":2}");
    free(s);
    proto_error_set(&err, -1, PERR_JSON_PARSE);
    s = proto_encode_error(&err, &len);
    assert_string_equal(s, "{\"error\":\"JSON Parsing Error\",\"code\":0}");
    free(s);
}

static void test_inherited_error_texts(void **state)
{
    (void)state;
    assert_string_equal(proto_err_text(3), "User Does Not Exists");
    assert_string_equal(proto_err_text(6), "Unable to Receive Response To Query");
    assert_string_equal(proto_err_text(7), "User Does Not Have Model Access");
    assert_string_equal(proto_err_text(15), "Insufficient balance");
    assert_string_equal(proto_err_text(16), "Unable to get balance details");
}

static void test_utf8_prefix(void **state)
{
    (void)state;
    assert_int_equal(proto_utf8_prefix("hello world", 5), 5);
    assert_int_equal(proto_utf8_prefix("hi", 20), 2);
    /* "é" is 2 bytes, "€" 3, "😀" 4: counted as one character each */
    assert_int_equal(proto_utf8_prefix("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80x", 3), 9);
    assert_int_equal(proto_utf8_prefix("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80x", 2), 5);
    /* a truncated sequence at the end is not stepped over */
    assert_int_equal(proto_utf8_prefix("ab\xe2\x82", 20), 2);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_simple_codes),
        cmocka_unit_test(test_session_codes_need_session),
        cmocka_unit_test(test_chat_frame),
        cmocka_unit_test(test_chat_errors),
        cmocka_unit_test(test_encode_delta),
        cmocka_unit_test(test_delta_join),
        cmocka_unit_test(test_envelope_errors),
        cmocka_unit_test(test_error_text_is_exact_detail_separate),
        cmocka_unit_test(test_history_codes),
        cmocka_unit_test(test_tree_codes),
        cmocka_unit_test(test_organize_and_share_codes),
        cmocka_unit_test(test_lifecycle_codes),
        cmocka_unit_test(test_parse_error_with_invalid_utf8_still_encodes),
        cmocka_unit_test(test_deep_nesting_is_refused),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_inherited_error_texts),
        cmocka_unit_test(test_utf8_prefix),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_client_turn_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
