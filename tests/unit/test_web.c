/* test_web.c - which file a page URL names (net/web.c), alone: the name
 * rules that keep requests inside WEB_DIR and the library mounts, content
 * types, validators and the Content-Security-Policy. The page served by a
 * real chatd is tested in tests/integration/test_web.py and, in a
 * browser, test_page.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/web.h"

static char tmp[64];
static struct web_site site;

static void put(const char *rel, const char *text)
{
    char p[WEB_PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/chatd-web-XXXXXX");
    if (mkdtemp(tmp) == NULL)
        return -1;
    char d[WEB_PATH_MAX];
    snprintf(d, sizeof(d), "%s/web", tmp);
    mkdir(d, 0700);
    snprintf(d, sizeof(d), "%s/web/js", tmp);
    mkdir(d, 0700);
    snprintf(d, sizeof(d), "%s/web/sub.css", tmp); /* a directory named like a file */
    mkdir(d, 0700);
    snprintf(d, sizeof(d), "%s/lib", tmp);
    mkdir(d, 0700);
    put("web/index.html", "<!doctype html>");
    put("web/js/app.js", "export {}");
    put("web/.hidden.js", "secret");
    put("web/notes.exe", "x");
    put("lib/marked.min.js", "marked");
    put("secret.txt", "outside");
    char root[WEB_PATH_MAX], libs[WEB_PATH_MAX + 16], err[256];
    snprintf(root, sizeof(root), "%s/web", tmp);
    snprintf(libs, sizeof(libs), "marked=%s/lib", tmp);
    return web_site_init(&site, root, libs, err, sizeof(err));
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static int found(const char *uri)
{
    char path[WEB_PATH_MAX];
    const char *ctype;
    struct stat st;
    return web_resolve(&site, uri, path, &ctype, &st) == 0;
}

static void test_resolve(void **state)
{
    (void)state;
    char path[WEB_PATH_MAX];
    const char *ctype;
    struct stat st;
    assert_int_equal(web_resolve(&site, "/", path, &ctype, &st), 0);
    assert_non_null(strstr(path, "/web/index.html"));
    assert_string_equal(ctype, "text/html; charset=utf-8");
    assert_int_equal(web_resolve(&site, "/js/app.js", path, &ctype, &st), 0);
    assert_string_equal(ctype, "text/javascript; charset=utf-8");
    assert_int_equal(web_resolve(&site, "/lib/marked/marked.min.js", path, &ctype, &st), 0);
    assert_non_null(strstr(path, "/lib/marked.min.js"));
}

static void test_refusals(void **state)
{
    (void)state;
    const char *bad[] = {
        "/../secret.txt",
        "/js/../index.html",
        "/./index.html",
        "/.hidden.js",
        "//index.html",
        "/js//app.js",
        "/js/",
        "/js",
        "/sub.css",
        "/notes.exe",
        "/missing.js",
        "index.html",
        "",
        "/lib/marked/",
        "/lib/marked/../../secret.txt",
        "/lib/other/marked.min.js",
        "/lib/marked",
        "/lib/marked/.x.js",
        "/js\\app.js",
        "/js/app.js%00",
        "/-x.js",
        "/index.html ",
        "/index.html\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (found(bad[i]))
            fail_msg("served %s", bad[i]);
    }
    assert_false(web_claims(&site, "/metrics")); /* no extension: an API path */
    assert_false(web_claims(&site, "/ws"));
    assert_true(web_claims(&site, "/missing.js")); /* ours to answer, with 404 */
}

static void test_off(void **state)
{
    (void)state;
    struct web_site off;
    char err[128];
    assert_int_equal(web_site_init(&off, "", NULL, err, sizeof(err)), 0);
    assert_false(off.on);
    assert_false(web_claims(&off, "/"));
    assert_int_equal(web_site_init(&off, "web", "nodir", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "WEB_LIBS"));
    assert_int_equal(web_site_init(&off, "web", "=dir", err, sizeof(err)), -1);
    assert_int_equal(web_site_init(&off, "web", "a/b=dir", err, sizeof(err)), -1);
    assert_int_equal(web_site_init(&off, "web", "..=dir", err, sizeof(err)), -1);
    assert_int_equal(web_site_init(&off, "web", "a=/x,b=/y", err, sizeof(err)), 0);
    assert_int_equal(off.n_mounts, 2);
    assert_string_equal(off.mount[1].dir, "/y");
}

static void test_types(void **state)
{
    (void)state;
    assert_string_equal(web_content_type("a.CSS"), "text/css; charset=utf-8");
    assert_string_equal(web_content_type("x/y.svg"), "image/svg+xml");
    assert_null(web_content_type("a.map.exe"));
    assert_null(web_content_type("dir.js/file"));
    assert_null(web_content_type("noext"));
}

static void test_etags(void **state)
{
    (void)state;
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_size = 255;
    st.st_mtim.tv_sec = 16;
    st.st_mtim.tv_nsec = 1;
    char e[WEB_ETAG_MAX];
    web_etag(&st, e);
    assert_string_equal(e, "\"ff-10-1\"");
    assert_true(web_etag_match("\"ff-10-1\"", e));
    assert_true(web_etag_match("W/\"ff-10-1\"", e));
    assert_true(web_etag_match("\"a\", \"ff-10-1\"", e));
    assert_true(web_etag_match("*", e));
    assert_false(web_etag_match("\"ff-10-2\"", e));
    assert_false(web_etag_match("\"ff-10-1", e));
    assert_false(web_etag_match("", e));
    assert_false(web_etag_match("\"ff-10-1x\"", e));
}

static void test_csp(void **state)
{
    (void)state;
    char c[WEB_CSP_MAX];
    web_csp("localhost:8000", c);
    assert_non_null(strstr(c, "script-src 'self';"));
    assert_non_null(strstr(c, "connect-src 'self' ws://localhost:8000 wss://localhost:8000;"));
    assert_null(strstr(c, "unsafe"));
    web_csp("evil; script-src *", c); /* a Host that would inject a directive */
    assert_null(strstr(c, "evil"));
    assert_non_null(strstr(c, "connect-src 'self';"));
    web_csp(NULL, c);
    assert_non_null(strstr(c, "default-src 'none'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve), cmocka_unit_test(test_refusals), cmocka_unit_test(test_off),
        cmocka_unit_test(test_types),   cmocka_unit_test(test_etags),    cmocka_unit_test(test_csp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
