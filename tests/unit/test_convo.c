/* test_convo.c - wire/jsonsplit.c and wire/convo.c alone: an export split
 * into its conversations a few bytes at a time, each read as chatd's tree
 * (tests/fixtures/import/, written from each format's public description). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wire/convo.h"
#include "wire/jsonsplit.h"

struct got {
    json_t *v[16];
    size_t n;
};

static int keep(void *arg, json_t *v)
{
    struct got *g = arg;
    if (g->n == 16) {
        json_decref(v);
        return 1;
    }
    g->v[g->n++] = v;
    return 0;
}

static void got_free(struct got *g)
{
    for (size_t i = 0; i < g->n; i++)
        json_decref(g->v[i]);
    g->n = 0;
}

/* Splits text fed step bytes at a time. */
static enum jsonsplit_status split(const char *text, size_t step, struct got *g, char *why)
{
    struct jsonsplit s;
    jsonsplit_init(&s, 1 << 20, keep, g);
    enum jsonsplit_status st = JSONSPLIT_OK;
    size_t n = strlen(text);
    for (size_t i = 0; i < n && st == JSONSPLIT_OK; i += step)
        st = jsonsplit_feed(&s, text + i, i + step <= n ? step : n - i);
    if (st == JSONSPLIT_OK)
        st = jsonsplit_end(&s);
    if (why != NULL)
        snprintf(why, 160, "%s", s.why);
    jsonsplit_free(&s);
    return st;
}

static char *slurp(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/fixtures/import/%s", name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_split_shapes(void **state)
{
    (void)state;
    struct got g = {0};
    char why[160];
    static const size_t steps[] = {1, 2, 3, 7, 1000};
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        assert_int_equal(split(" [ {\"a\":\"}]\\\"{\"} , {\"b\":[1,{}]} ]\n", steps[k], &g, why),
                         JSONSPLIT_OK);
        assert_int_equal(g.n, 2);
        assert_string_equal(json_string_value(json_object_get(g.v[0], "a")), "}]\"{");
        got_free(&g);
        /* JSON Lines, and one object alone */
        assert_int_equal(split("{\"x\":1}\n{\"x\":2}\n", steps[k], &g, why), JSONSPLIT_OK);
        assert_int_equal(g.n, 2);
        got_free(&g);
        assert_int_equal(split("{\"x\":1}", steps[k], &g, why), JSONSPLIT_OK);
        assert_int_equal(g.n, 1);
        got_free(&g);
        assert_int_equal(split("[]", steps[k], &g, why), JSONSPLIT_OK);
        assert_int_equal(g.n, 0);
    }
    assert_int_equal(split("[{\"a\":1}", 3, &g, why), JSONSPLIT_BAD);
    assert_non_null(strstr(why, "']'"));
    got_free(&g);
    assert_int_equal(split("[{\"a\":1} {\"b\":2}]", 3, &g, why), JSONSPLIT_BAD);
    got_free(&g);
    assert_int_equal(split("[1, 2]", 3, &g, why), JSONSPLIT_BAD);
    assert_int_equal(split("not json", 3, &g, why), JSONSPLIT_BAD);
    assert_int_equal(split("", 3, &g, why), JSONSPLIT_BAD);
    assert_int_equal(split("[{\"a\":tru}]", 3, &g, why), JSONSPLIT_BAD);
    assert_non_null(strstr(why, "not JSON"));
    assert_int_equal(split("[{\"a\":1}] x", 3, &g, why), JSONSPLIT_BAD);
    got_free(&g);
    assert_int_equal(split("{\"a\":\"unterminated}", 3, &g, why), JSONSPLIT_BAD);
    /* one value past the bound */
    struct jsonsplit s;
    jsonsplit_init(&s, 8, keep, &g);
    assert_int_equal(jsonsplit_feed(&s, "[{\"a\":\"0123456789\"}]", 20), JSONSPLIT_TOO_BIG);
    jsonsplit_free(&s);
    got_free(&g);
}

static void read_one(json_t *v, enum convo_format f, struct convo *c)
{
    char why[160];
    assert_int_equal(convo_detect(v), f);
    if (convo_read(v, f, c, why, sizeof(why)) != 0)
        fail_msg("%s", why);
}

static void test_chatgpt(void **state)
{
    (void)state;
    struct got g = {0};
    assert_int_equal(split(slurp("chatgpt.json"), 5, &g, NULL), JSONSPLIT_OK);
    assert_int_equal(g.n, 3);
    struct convo c;
    read_one(g.v[0], CONVO_CHATGPT, &c);
    assert_string_equal(c.title, "Trip to Lisbon");
    assert_string_equal(c.source_id, "6631f0a0-1111-4aaa-8bbb-000000000001");
    assert_int_equal(c.created_us, 1714557600500000LL);
    /* root, hidden system, tool: left out; the edited question is a branch */
    assert_int_equal(c.n, 5);
    assert_int_equal(c.skipped, 3);
    assert_string_equal(c.msgs[0].role, "user");
    assert_int_equal(c.msgs[0].parent, -1); /* bridged over root and system */
    assert_string_equal(c.msgs[1].content, "Alfama, Belém and the **trams**.");
    assert_int_equal(c.msgs[1].parent, 0);
    /* two questions under the answer, in their time order */
    assert_string_equal(c.msgs[2].content, "Where to eat?");
    assert_string_equal(c.msgs[3].content, "And this photo?"); /* its image part left out */
    assert_int_equal(c.msgs[2].parent, 1);
    assert_int_equal(c.msgs[3].parent, 1);
    assert_int_equal(c.msgs[4].parent, 3);
    assert_int_equal(c.leaf, 4); /* current_node */
    convo_free(&c);
    char why[160];
    assert_int_equal(convo_read(g.v[1], CONVO_CHATGPT, &c, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "cycle"));
    assert_int_equal(convo_read(g.v[2], CONVO_CHATGPT, &c, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "parent is not in"));
    got_free(&g);
}

static void test_claude_and_openwebui(void **state)
{
    (void)state;
    struct got g = {0};
    struct convo c;
    assert_int_equal(split(slurp("claude.json"), 64, &g, NULL), JSONSPLIT_OK);
    assert_int_equal(g.n, 2);
    read_one(g.v[0], CONVO_CLAUDE, &c);
    assert_string_equal(c.title, "Haiku about rain");
    assert_int_equal(c.n, 2);
    assert_int_equal(c.msgs[0].parent, -1);
    assert_int_equal(c.msgs[1].parent, 0);
    assert_string_equal(c.msgs[1].content, "Soft rain on the roof"); /* the tool part left out */
    assert_int_equal(c.msgs[1].created_us, 1717232405000000LL);      /* "+00:00" */
    convo_free(&c);
    read_one(g.v[1], CONVO_CLAUDE, &c);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.msgs[2].parent, 1);
    assert_int_equal(c.leaf, 2);
    convo_free(&c);
    got_free(&g);

    assert_int_equal(split(slurp("openwebui.json"), 17, &g, NULL), JSONSPLIT_OK);
    read_one(g.v[0], CONVO_OPENWEBUI, &c);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.msgs[1].parent, 0);
    assert_int_equal(c.msgs[2].parent, 0);
    assert_string_equal(c.msgs[c.leaf].content, "Try `[^@]+@[^@]+`.");
    assert_int_equal(c.created_us, 1717232400000000LL);
    convo_free(&c);
    got_free(&g);
}

static void test_chatd_exports(void **state)
{
    (void)state;
    struct got g = {0};
    struct convo c;
    /* the tree (branches=all): parent_seq null for a first message */
    assert_int_equal(
        split(
            "{\"session_id\":\"s\",\"session_name\":\"T\",\"created_at\":\"2026-01-01T00:00:00Z\","
            "\"messages\":[{\"seq\":0,\"parent_seq\":null,\"role\":\"user\",\"content\":\"q\"},"
            "{\"seq\":1,\"parent_seq\":0,\"role\":\"assistant\",\"content\":\"a\"},"
            "{\"seq\":2,\"parent_seq\":null,\"role\":\"user\",\"content\":\"q2\"},"
            "{\"seq\":3,\"parent_seq\":2,\"role\":\"file\",\"content\":\"x.png\"}]}",
            9, &g, NULL),
        JSONSPLIT_OK);
    read_one(g.v[0], CONVO_CHATD, &c);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.skipped, 1);
    /* in the export's order (its seqs): a chatd export comes back as it was */
    assert_int_equal(c.msgs[0].parent, -1);
    assert_int_equal(c.msgs[1].parent, 0);
    assert_string_equal(c.msgs[2].content, "q2");
    assert_int_equal(c.msgs[2].parent, -1); /* the second first message */
    assert_int_equal(c.created_us, 1767225600000000LL);
    convo_free(&c);
    got_free(&g);
    /* jsonl: one path */
    assert_int_equal(
        split("{\"session_id\":\"a\",\"session_name\":\"A\",\"messages\":[{\"role\":\"system\","
              "\"content\":\"p\"},{\"role\":\"user\",\"content\":\"q\"},{\"role\":"
              "\"assistant\",\"content\":\"r\"}]}\n",
              4, &g, NULL),
        JSONSPLIT_OK);
    read_one(g.v[0], CONVO_CHATD, &c);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.msgs[1].parent, 0);
    assert_int_equal(c.leaf, 1);
    convo_free(&c);
    got_free(&g);
    assert_int_equal(split("{\"hello\":1}", 4, &g, NULL), JSONSPLIT_OK);
    assert_int_equal(convo_detect(g.v[0]), CONVO_UNKNOWN);
    got_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_shapes),
        cmocka_unit_test(test_chatgpt),
        cmocka_unit_test(test_claude_and_openwebui),
        cmocka_unit_test(test_chatd_exports),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
