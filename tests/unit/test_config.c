/* test_config.c - configuration parsing: defaults, bounds, clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"

static const char *vars[] = {"SERVER_PORT",
                             "DB_PORT",
                             "LOG_LEVEL",
                             "WORKER_THREADS",
                             "SERVER_HOST",
                             "CHATD_TEST_A",
                             "CHATD_TEST_B",
                             "ALLOWED_ORIGINS",
                             "UPLOAD_ALLOWED_TYPES",
                             "CORS_ORIGINS",
                             "REDIS_SENTINELS",
                             "REDIS_MASTER_NAME",
                             "DATABASE_URL",
                             "DATABASE_READ_MAX_LAG_MS",
                             "AUTH_MODE",
                             "JWT_SECRET",
                             "SEARCH_LANGUAGE"};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    return 0;
}

static void expect_fail(const char *var, const char *val, const char *msg)
{
    struct config cfg;
    char err[256] = "";
    setenv(var, val, 1);
    assert_int_equal(config_from_env(&cfg, err, sizeof(err)), -1);
    if (strstr(err, msg) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, msg);
    assert_non_null(strstr(err, var)); /* the line names the variable */
    unsetenv(var);
}

static void test_defaults(void **state)
{
    (void)state;
    struct config cfg;
    char err[256];
    assert_int_equal(config_from_env(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.server_port, 8000);
    assert_string_equal(cfg.server_host, "127.0.0.1");
    assert_int_equal(cfg.max_message_bytes, 1048576);
    assert_int_equal(cfg.max_chat_history_context, 20);
    assert_string_equal(cfg.log_level, "info");
    config_free(&cfg);
}

static void test_values(void **state)
{
    (void)state;
    setenv("SERVER_PORT", "9001", 1);
    setenv("LOG_LEVEL", "debug", 1);
    struct config cfg;
    char err[256];
    assert_int_equal(config_from_env(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.server_port, 9001);
    assert_string_equal(cfg.log_level, "debug");
    config_free(&cfg);
}

static void test_malformed(void **state)
{
    (void)state;
    expect_fail("SERVER_PORT", "abc", "is not an integer");
    expect_fail("SEARCH_LANGUAGE", "english'; drop table x; --", "not a text-search configuration");
    expect_fail("SEARCH_LANGUAGE", "", "not a text-search configuration");
    expect_fail("SERVER_PORT", "80x", "is not an integer");
    expect_fail("SERVER_PORT", "", "is not an integer");
    expect_fail("SERVER_PORT", " 80", "is not an integer");
    expect_fail("SERVER_PORT", "70000", "out of range");
    expect_fail("DB_PORT", "0", "out of range");
    expect_fail("WORKER_THREADS", "99999999999999999999", "is not an integer");
    expect_fail("LOG_LEVEL", "loud", "is not one of");
    expect_fail("SERVER_HOST", "", "must not be empty");
    expect_fail("REDIS_SENTINELS", "10.0.0.1", "is not host:port");
    expect_fail("REDIS_SENTINELS", "a:1,:26379", "is not host:port");
    expect_fail("REDIS_SENTINELS", "a:1,b:70000", "is not host:port");
    expect_fail("DATABASE_READ_MAX_LAG_MS", "-1", "out of range");
}

/* Issue 23: Sentinels split at load; DATABASE_URL kept as it is. */
static void test_failover_settings(void **state)
{
    (void)state;
    setenv("REDIS_SENTINELS", "10.0.0.1:26379, s2:26380,[::1]:26381", 1);
    setenv("DATABASE_URL", "postgresql://u:p@h1:5432,h2:5432/db", 1);
    struct config cfg;
    char err[256];
    assert_int_equal(config_from_env(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.sentinel_list.n, 3);
    assert_string_equal(cfg.sentinel_list.item[1], "s2:26380");
    assert_string_equal(cfg.sentinel_list.item[2], "[::1]:26381");
    assert_string_equal(cfg.redis_master_name, "mymaster");
    assert_string_equal(cfg.database_url, "postgresql://u:p@h1:5432,h2:5432/db");
    config_free(&cfg);
    setenv("REDIS_MASTER_NAME", "", 1);
    assert_int_equal(config_from_env(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "needs REDIS_MASTER_NAME"));
}

static void test_dotenv(void **state)
{
    (void)state;
    char path[] = "/tmp/chatd-dotenv-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "# comment\n\nCHATD_TEST_A=one\nexport CHATD_TEST_B = \"two words\"\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    setenv("CHATD_TEST_A", "from-env", 1); /* the environment wins */
    char err[256];
    assert_int_equal(config_load_dotenv(path, err, sizeof(err)), 0);
    assert_string_equal(getenv("CHATD_TEST_A"), "from-env");
    assert_string_equal(getenv("CHATD_TEST_B"), "two words");

    FILE *f = fopen(path, "w");
    fputs("NOT A PAIR\n", f);
    fclose(f);
    assert_int_equal(config_load_dotenv(path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":1: expected KEY=VALUE"));
    unlink(path);
}

/* Lists and enums are parsed once, at load, into what requests use. */
static void test_parsed_at_load(void **state)
{
    (void)state;
    setenv("ALLOWED_ORIGINS", " http://a.example,https://b.example ,,\thttp://c.example", 1);
    setenv("UPLOAD_ALLOWED_TYPES", ".PNG, jpg,.Md", 1);
    setenv("CORS_ORIGINS", "https://x.example", 1);
    setenv("LOG_LEVEL", "warn", 1);
    setenv("AUTH_MODE", "jwt", 1);
    setenv("JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
    struct config cfg;
    char err[256];
    assert_int_equal(config_from_env(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.origin_list.n, 3);
    assert_string_equal(cfg.origin_list.item[0], "http://a.example");
    assert_string_equal(cfg.origin_list.item[1], "https://b.example");
    assert_string_equal(cfg.origin_list.item[2], "http://c.example");
    assert_true(config_list_has(&cfg.origin_list, "HTTP://A.EXAMPLE", 16, 1));
    assert_false(config_list_has(&cfg.origin_list, "HTTP://A.EXAMPLE", 16, 0));
    assert_false(config_list_has(&cfg.origin_list, "http://a.exampl", 15, 1));
    assert_int_equal(cfg.upload_types.n, 3);
    assert_string_equal(cfg.upload_types.item[0], "png");
    assert_string_equal(cfg.upload_types.item[2], "md");
    assert_false(cfg.cors_any);
    assert_true(config_list_has(&cfg.cors_list, "https://x.example", 17, 0));
    assert_int_equal(cfg.log_lvl, LOG_WARN);
    assert_int_equal(cfg.auth, CONFIG_AUTH_JWT);
    config_free(&cfg);
    assert_int_equal(cfg.origin_list.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_parsed_at_load, clear_env),
        cmocka_unit_test_setup(test_values, clear_env),
        cmocka_unit_test_setup(test_malformed, clear_env),
        cmocka_unit_test_setup(test_dotenv, clear_env),
        cmocka_unit_test_setup(test_failover_settings, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
