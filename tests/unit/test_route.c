/* test_route.c - the HTTP route table (net/route.c) alone: which resource
 * a path names, which methods it has, what a 405 lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "net/route.h"

/* The page claims "/", "/app.js" and what is under "/lib/", and "/healthz"
 * only when asked to (a WEB_DIR with such a file). */
static int page(const void *arg, const char *uri)
{
    int claim_healthz = arg != NULL;
    return strcmp(uri, "/") == 0 || strcmp(uri, "/app.js") == 0 || strncmp(uri, "/lib/", 5) == 0 ||
           (claim_healthz && strcmp(uri, "/healthz") == 0);
}

static struct route find(const char *uri, enum route_method m)
{
    struct route r;
    route_find(uri, m, page, NULL, &r);
    return r;
}

static void test_each_resource_by_its_path(void **state)
{
    (void)state;
    static const struct {
        const char *uri;
        enum route_id id;
    } cases[] = {
        {"/upload", ROUTE_UPLOAD},
        {"/uploads/abc.png", ROUTE_FILE},
        {"/uploads/", ROUTE_FILE}, /* its handler refuses the empty name */
        {"/export", ROUTE_EXPORT},
        {"/sessions/0b1f/export", ROUTE_EXPORT},
        {"/client-config", ROUTE_CLIENT_CONFIG},
        {"/", ROUTE_PAGE},
        {"/app.js", ROUTE_PAGE},
        {"/lib/marked/marked.min.js", ROUTE_PAGE},
        {"/healthz", ROUTE_HEALTHZ},
        {"/readyz", ROUTE_READYZ},
        {"/metrics", ROUTE_METRICS},
        {"/nothing", ROUTE_NONE},
        {"/uploadx", ROUTE_NONE},
        {"/Upload", ROUTE_NONE},
        {"/export/", ROUTE_NONE},
        {"/sessions//export", ROUTE_NONE},    /* an empty id */
        {"/sessions/a/b/export", ROUTE_NONE}, /* a slash in it */
        {"/sessions/export", ROUTE_NONE},
        {"/healthz/", ROUTE_NONE},
        {"", ROUTE_NONE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct route r = find(cases[i].uri, ROUTE_GET);
        if (r.id != cases[i].id)
            fail_msg("%s: route %d, want %d", cases[i].uri, r.id, cases[i].id);
    }
}

static void test_arguments(void **state)
{
    (void)state;
    struct route r = find("/uploads/u/1.png", ROUTE_GET);
    assert_string_equal(r.arg, "u/1.png");
    r = find("/sessions/6f9c0f6e-8c4b-4b1e-9a57-3f7f1a1f1e2d/export", ROUTE_GET);
    assert_string_equal(r.arg, "6f9c0f6e-8c4b-4b1e-9a57-3f7f1a1f1e2d");
    r = find("/export", ROUTE_GET);
    assert_null(r.arg); /* every session */
    /* an id as long as the buffer holds is not cut short: no route */
    char uri[ROUTE_ARG_MAX + 32];
    strcpy(uri, "/sessions/");
    memset(uri + 10, 'a', ROUTE_ARG_MAX);
    strcpy(uri + 10 + ROUTE_ARG_MAX, "/export");
    assert_int_equal(find(uri, ROUTE_GET).id, ROUTE_NONE);
    uri[10 + ROUTE_ARG_MAX - 1] = '\0';
    strcat(uri, "/export");
    r = find(uri, ROUTE_GET);
    assert_int_equal(r.id, ROUTE_EXPORT);
    assert_int_equal(strlen(r.arg), ROUTE_ARG_MAX - 1);
}

static void test_methods(void **state)
{
    (void)state;
    struct route r = find("/upload", ROUTE_POST);
    assert_true(r.allowed);
    r = find("/upload", ROUTE_GET);
    assert_false(r.allowed);
    assert_string_equal(r.allow, "POST, OPTIONS");
    r = find("/upload", ROUTE_OPTIONS); /* a preflight, always */
    assert_true(r.allowed);
    r = find("/metrics", ROUTE_POST);
    assert_false(r.allowed);
    assert_string_equal(r.allow, "GET, OPTIONS");
    r = find("/", ROUTE_OTHER); /* PUT, DELETE, ... */
    assert_int_equal(r.id, ROUTE_PAGE);
    assert_false(r.allowed);
    r = find("/export", ROUTE_GET);
    assert_true(r.allowed);
}

static void test_fixed_routes_before_the_page_and_the_page_before_probes(void **state)
{
    (void)state;
    struct route r;
    /* the page is asked only when no fixed route has the path */
    route_find("/upload", ROUTE_POST, page, "claims all", &r);
    assert_int_equal(r.id, ROUTE_UPLOAD);
    /* a page file named like a probe is the page's, as it always was */
    route_find("/healthz", ROUTE_GET, page, "claims healthz", &r);
    assert_int_equal(r.id, ROUTE_PAGE);
    /* no page at all (WEB_DIR unset) */
    route_find("/", ROUTE_GET, NULL, NULL, &r);
    assert_int_equal(r.id, ROUTE_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_resource_by_its_path),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_fixed_routes_before_the_page_and_the_page_before_probes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
