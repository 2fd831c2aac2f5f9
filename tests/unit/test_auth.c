/* test_auth.c - HS256 token checks and the Origin allow-list.
 *
 * The tokens were made by PyJWT (python3-jwt), not by anything in chatd,
 * so a wrong encoder here cannot hide a wrong verifier. Their exp is
 * 2000000000 (2033); "now" is passed in, so expiry is tested exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "wire/auth.h"

#define SECRET "unit-test-secret-unit-test-secret-0123"
#define SUB "bdff475a-1111-4222-8333-444455556666" /* the tokens' sub, lower-cased */
#define NOW 1800000000
#define EXP 2000000000

#define TOK_GOOD                                                                                   \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOjIwMDAwMDAwMDB9."        \
    "jETDm1XRodK9onG_DSOW7Mc735Cf3ujWTsozEp-7iCI"
#define TOK_GOOD_ISS_AUD                                                                           \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOjIwMDAwMDAwMDAsImlzcyI6" \
    "ImNoYXRkLXRlc3QiLCJhdWQiOlsieCIsImNoYXRkIl19.hVgG6NGmzoZzfWEeN943Y8wif4fXgz00bWjnEKD2T4E"
#define TOK_AUD_STRING                                                                             \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOjIwMDAwMDAwMDAsImlzcyI6" \
    "ImNoYXRkLXRlc3QiLCJhdWQiOiJjaGF0ZCJ9.DQTQPzuQN_hXL0qAxXNuhrPskh8mkWz34IuCtxuHpzA"
#define TOK_NBF_FUTURE                                                                             \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOjIwMDAwMDAwMDAsIm5iZiI6" \
    "MTkwMDAwMDAwMH0.2_coDBYzzWyu0visG9xrMmQPBqIuSs2l-Ovsj7vBOeM"
#define TOK_NO_EXP                                                                                 \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYifQ."                              \
    "Qs5usVMFHy17MB2r4zecYn7bHBCKdkQJPt-UL84WYog"
#define TOK_EXP_STRING                                                                             \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOiIyMDAwMDAwMDAwIn0.-"    \
    "aF7fOpmW8IuhVQLKVHbAMsct43aYVIPCWpPRlI8wEs"
#define TOK_WRONG_KEY                                                                              \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOjIwMDAwMDAwMDB9."        \
    "EU2P0h92RmcFuawREFxkFbn__ey0zG99LR6dA7IOzao"
#define TOK_HS512                                                                                  \
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOjIwMDAwMDAwMDB9."        \
    "KnmSl2ajgeWWyzKwUYmcijrgyXghHhgSE6p-WETYrKnL3onWPn8FT-sTLm7DowJqfnDQNyekPWU9LiJo0ki0BA"
#define TOK_SUB_NOT_UUID                                                                           \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsImV4cCI6MjAwMDAwMDAwMH0."            \
    "jXXUHDSj24vNjV5LOH53pWqW0a9Gn9YLMZf514xgBM8"
#define TOK_NO_SUB                                                                                 \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjIwMDAwMDAwMDB9."                               \
    "JyeMOIk3pPg8ibbNDAi5zrdf7FdBvBPLc_4JbDEvRNc"
#define TOK_ALG_NONE                                                                               \
    "eyJhbGciOiAibm9uZSIsICJ0eXAiOiAiSldUIn0."                                                     \
    "eyJzdWIiOiAiQkRGRjQ3NUEtMTExMS00MjIyLTgzMzMtNDQ0NDU1NTU2NjY2IiwgImV4cCI6IDIwMDAwMDAwMDB9."
#define TOK_CRIT                                                                                   \
    "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl0sInR5cCI6IkpXVCJ9."                                    \
    "eyJzdWIiOiJCREZGNDc1QS0xMTExLTQyMjItODMzMy00NDQ0NTU1NTY2NjYiLCJleHAiOjIwMDAwMDAwMDB9."        \
    "o5oIaeuljWBqqB-KtCccdxoFli9hmAKmyqgJt0hPEB0"
#define TOK_TAMPERED                                                                               \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                                        \
    "eyJzdWIiOiAiMDAwMDAwMDAtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAwIiwgImV4cCI6IDIwMDAwMDAwMDB9."    \
    "jETDm1XRodK9onG_DSOW7Mc735Cf3ujWTsozEp-7iCI"

/* ALLOWED_ORIGINS as config.c splits it at load: here the one list the
 * origin test uses (or none). */
static char *origin_items[] = {"http://localhost:3000", "https://chat.example.com"};

static struct config cfg_with(const char *iss, const char *aud, const char *origins)
{
    struct config c;
    memset(&c, 0, sizeof(c));
    c.auth_mode = (char *)"jwt";
    c.auth = CONFIG_AUTH_JWT;
    c.jwt_secret = (char *)SECRET;
    c.jwt_issuer = (char *)iss;
    c.jwt_audience = (char *)aud;
    c.allowed_origins = (char *)origins;
    if (origins[0] != '\0') {
        c.origin_list.item = origin_items;
        c.origin_list.n = 2;
    }
    return c;
}

static int verify(const struct config *c, const char *tok, long now, char *sub, const char **why)
{
    *why = "";
    return auth_verify_token(c, tok, strlen(tok), (time_t)now, sub, why);
}

static void expect_refused(const struct config *c, const char *tok, long now, const char *reason)
{
    char sub[UUID_STR_LEN + 1] = "untouched";
    const char *why;
    assert_int_equal(verify(c, tok, now, sub, &why), -1);
    if (strcmp(why, reason) != 0)
        fail_msg("refused for \"%s\", expected \"%s\"", why, reason);
}

static void test_good_token(void **state)
{
    (void)state;
    struct config c = cfg_with("", "", "");
    char sub[UUID_STR_LEN + 1];
    const char *why;
    assert_int_equal(verify(&c, TOK_GOOD, NOW, sub, &why), 0);
    assert_string_equal(sub, SUB);
}

static void test_expiry_is_exact(void **state)
{
    (void)state;
    struct config c = cfg_with("", "", "");
    char sub[UUID_STR_LEN + 1];
    const char *why;
    assert_int_equal(verify(&c, TOK_GOOD, EXP - 1, sub, &why), 0);
    expect_refused(&c, TOK_GOOD, EXP, "expired");
    expect_refused(&c, TOK_GOOD, EXP + 3600, "expired");
}

static void test_forgeries(void **state)
{
    (void)state;
    struct config c = cfg_with("", "", "");
    expect_refused(&c, TOK_WRONG_KEY, NOW, "bad signature");
    expect_refused(&c, TOK_TAMPERED, NOW, "bad signature");
    expect_refused(&c, TOK_ALG_NONE, NOW, "alg is not HS256");
    expect_refused(&c, TOK_HS512, NOW, "alg is not HS256");
    expect_refused(&c, TOK_CRIT, NOW, "crit header");
    /* the right signature under another secret is no signature at all */
    struct config other = c;
    other.jwt_secret = (char *)"a-different-secret-a-different-secret!!";
    expect_refused(&other, TOK_GOOD, NOW, "bad signature");
}

static void test_claims(void **state)
{
    (void)state;
    struct config c = cfg_with("", "", "");
    expect_refused(&c, TOK_NO_EXP, NOW, "no exp");
    expect_refused(&c, TOK_EXP_STRING, NOW, "bad exp");
    expect_refused(&c, TOK_NBF_FUTURE, NOW, "not yet valid");
    char sub[UUID_STR_LEN + 1];
    const char *why;
    assert_int_equal(verify(&c, TOK_NBF_FUTURE, 1900000000, sub, &why), 0);
    expect_refused(&c, TOK_SUB_NOT_UUID, NOW, "sub is not a user id");
    expect_refused(&c, TOK_NO_SUB, NOW, "sub is not a user id");
}

static void test_issuer_and_audience(void **state)
{
    (void)state;
    char sub[UUID_STR_LEN + 1];
    const char *why;
    struct config c = cfg_with("chatd-test", "chatd", "");
    assert_int_equal(verify(&c, TOK_GOOD_ISS_AUD, NOW, sub, &why), 0); /* aud in an array */
    assert_int_equal(verify(&c, TOK_AUD_STRING, NOW, sub, &why), 0);
    expect_refused(&c, TOK_GOOD, NOW, "wrong iss"); /* none given */
    struct config wrong_iss = cfg_with("someone-else", "chatd", "");
    expect_refused(&wrong_iss, TOK_GOOD_ISS_AUD, NOW, "wrong iss");
    struct config wrong_aud = cfg_with("chatd-test", "billing", "");
    expect_refused(&wrong_aud, TOK_GOOD_ISS_AUD, NOW, "wrong aud");
}

static void test_malformed(void **state)
{
    (void)state;
    struct config c = cfg_with("", "", "");
    expect_refused(&c, "", NOW, "bad length");
    expect_refused(&c, "abc", NOW, "not three parts");
    expect_refused(&c, "a.b", NOW, "not three parts");
    expect_refused(&c, "a.b.c.d", NOW, "not three parts");
    expect_refused(&c, "!!!.e30.", NOW, "bad header");
    expect_refused(&c, "e30.e30.", NOW, "alg is not HS256"); /* {} */
    expect_refused(&c, "W10.e30.", NOW, "bad header");       /* [] */
    /* base64 with padding or the standard alphabet is not base64url */
    char padded[512];
    snprintf(padded, sizeof(padded), "%s=", TOK_GOOD);
    expect_refused(&c, padded, NOW, "bad signature");
    char *big = malloc(AUTH_TOKEN_MAX + 2);
    assert_non_null(big);
    memset(big, 'a', AUTH_TOKEN_MAX + 1);
    big[AUTH_TOKEN_MAX + 1] = '\0';
    expect_refused(&c, big, NOW, "bad length");
    free(big);
    /* a truncated signature */
    char cut[512];
    snprintf(cut, sizeof(cut), "%s", TOK_GOOD);
    cut[strlen(cut) - 2] = '\0';
    expect_refused(&c, cut, NOW, "bad signature");
}

static void test_origins(void **state)
{
    (void)state;
    struct config any = cfg_with("", "", "");
    assert_true(auth_origin_allowed(&any, "https://evil.example"));
    assert_true(auth_origin_allowed(&any, NULL));
    struct config list = cfg_with("", "", "http://localhost:3000, https://chat.example.com");
    assert_true(auth_origin_allowed(&list, "http://localhost:3000"));
    assert_true(auth_origin_allowed(&list, "HTTPS://CHAT.EXAMPLE.COM"));
    assert_true(auth_origin_allowed(&list, NULL)); /* not a browser */
    assert_false(auth_origin_allowed(&list, "http://localhost:30001"));
    assert_false(auth_origin_allowed(&list, "http://localhost"));
    assert_false(auth_origin_allowed(&list, "https://chat.example.com.evil.example"));
    assert_false(auth_origin_allowed(&list, "null"));
    assert_false(auth_origin_allowed(&list, ""));
}

static void test_loopback(void **state)
{
    (void)state;
    assert_true(auth_host_is_loopback("127.0.0.1"));
    assert_true(auth_host_is_loopback("127.1.2.3"));
    assert_true(auth_host_is_loopback("localhost"));
    assert_true(auth_host_is_loopback("::1"));
    assert_false(auth_host_is_loopback("0.0.0.0"));
    assert_false(auth_host_is_loopback("10.0.0.5"));
    assert_false(auth_host_is_loopback("1270.0.0.1"));
}

/* File references: the signature is the one docs/SECURITY.md describes
 * (computed independently with Python's hmac for NAME at NOW + 600). */
#define FNAME "0123456789abcdef0123456789abcdef.png"
#define FSIG "0db62ed94738e7a7fe7c673c7e7c080a3c7035c2ed227028561454686e2260c1"

static void test_file_references(void **state)
{
    (void)state;
    struct config c = cfg_with("", "", "");
    c.file_url_ttl_seconds = 600;
    char *ref = auth_file_ref(&c, FNAME, NOW);
    assert_string_equal(ref, FNAME "?exp=1800000600&sig=" FSIG);
    free(ref);
    assert_true(auth_file_ref_ok(&c, FNAME, "1800000600", FSIG, NOW));
    assert_true(auth_file_ref_ok(&c, FNAME, "1800000600", FSIG, NOW + 599));
    assert_false(auth_file_ref_ok(&c, FNAME, "1800000600", FSIG, NOW + 600)); /* expired */
    assert_false(auth_file_ref_ok(&c, FNAME, "1800000601", FSIG, NOW));       /* other expiry */
    assert_false(auth_file_ref_ok(&c, "0123456789abcdef0123456789abcdee.png", "1800000600", FSIG,
                                  NOW)); /* other file */
    assert_false(auth_file_ref_ok(&c, FNAME, NULL, FSIG, NOW));
    assert_false(auth_file_ref_ok(&c, FNAME, "1800000600", NULL, NOW));
    assert_false(auth_file_ref_ok(&c, FNAME, "1800000600", "00", NOW));
    assert_false(auth_file_ref_ok(&c, FNAME, "+1800000600", FSIG, NOW));
    assert_false(auth_file_ref_ok(&c, FNAME, "1800000600x", FSIG, NOW));
    char name[64];
    assert_int_equal(auth_file_ref_name(FNAME "?exp=1&sig=2", name, sizeof(name)), 0);
    assert_string_equal(name, FNAME);
    assert_int_equal(auth_file_ref_name(FNAME, name, 8), -1);
    /* AUTH_MODE=none: the bare name is the reference, and fetches */
    c.auth_mode = (char *)"none";
    c.auth = CONFIG_AUTH_NONE;
    ref = auth_file_ref(&c, FNAME, NOW);
    assert_string_equal(ref, FNAME);
    free(ref);
    assert_true(auth_file_ref_ok(&c, FNAME, NULL, NULL, NOW));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_token),
        cmocka_unit_test(test_expiry_is_exact),
        cmocka_unit_test(test_forgeries),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_issuer_and_audience),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_file_references),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
