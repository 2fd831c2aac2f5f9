/* test_export.c - the pure parts of work/export.c: CSV cells, download
 * names and formats. Whole exports run against PostgreSQL in
 * tests/integration/test_export.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <stdio.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "store/db.h"
#include "work/app.h"
#include "work/export.h"

static void expect_csv(const char *in, const char *want)
{
    struct buf b = {0};
    assert_int_equal(export_csv_text(&b, in), 0);
    assert_string_equal(b.p, want);
    free(b.p);
}

static void test_csv_cells(void **state)
{
    (void)state;
    expect_csv("plain", "\"plain\"");
    expect_csv("", "\"\"");
    expect_csv("a \"quoted\", word\r\nnext", "\"a \"\"quoted\"\", word\r\nnext\"");
    expect_csv("=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\"");
    expect_csv("+1", "\"'+1\"");
    expect_csv("-1", "\"'-1\"");
    expect_csv("@SUM(A1)", "\"'@SUM(A1)\"");
    expect_csv("\tx", "\"'\tx\"");
    expect_csv("\rx", "\"'\rx\"");
    expect_csv("a=1", "\"a=1\""); /* only a leading character matters */
}

static void test_file_names(void **state)
{
    (void)state;
    char out[96];
    const char *id = "0123abcd-0000-4000-8000-000000000000";
    export_file_name(out, sizeof(out), "Trip to Rome: plans!", id, "md");
    assert_string_equal(out, "Trip-to-Rome-plans-0123abcd-0000-4000-8000-000000000000.md");
    export_file_name(out, sizeof(out), "\"; rm -rf /; x=\"../..", id, "csv");
    assert_string_equal(out, "rm-rf-x-0123abcd-0000-4000-8000-000000000000.csv");
    export_file_name(out, sizeof(out), "Привет", id, "json");
    assert_string_equal(out, "chat-0123abcd-0000-4000-8000-000000000000.json");
    export_file_name(out, sizeof(out), "a very long session name that goes on and on and on and on",
                     id, "txt");
    assert_string_equal(
        out, "a-very-long-session-name-that-goes-on-an-0123abcd-0000-4000-8000-000000000000.txt");
}

static void test_formats(void **state)
{
    (void)state;
    enum export_format f;
    assert_int_equal(export_format_parse("csv", 0, &f), 0);
    assert_int_equal(f, EXPORT_CSV);
    assert_int_equal(export_format_parse("jsonl", 1, &f), 0);
    assert_int_equal(f, EXPORT_JSONL);
    assert_int_equal(export_format_parse("jsonl", 0, &f), -1);
    assert_int_equal(export_format_parse("json", 1, &f), -1);
    assert_int_equal(export_format_parse("CSV", 0, &f), -1);
    assert_int_equal(export_format_parse("", 0, &f), -1);
}

/* ------------------------------------------------------------- paging */

/* The user's sessions and messages in memory: session k has msgs[k]
 * messages, seq 0.., content "s<k>m<seq>". */
#define FAKE_SESSIONS 120 /* more than two list pages */
struct fake {
    int n_sessions;
    int msgs[FAKE_SESSIONS];
    int fail_page_at; /* the page read that fails (1-based), 0: none */
    int pages_read, lists_read;
    int exists;
};

static char *id_of(int k)
{
    char id[40];
    snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012d", k);
    return strdup(id);
}

static int index_of(const char *id) { return atoi(id + 24); }

static void fill(struct db_export_session *s, int k)
{
    char name[32];
    snprintf(name, sizeof(name), "Session %d", k);
    s->session_id = id_of(k);
    s->name = strdup(name);
    s->created_at = strdup("2026-12-05T10:00:00.000000Z");
    s->prompt = strdup("");
    s->model = strdup("m");
    s->cursor_us = 1000 + k;
}

static enum db_status f_user(void *ctx, const char *user_id)
{
    (void)user_id;
    return ((struct fake *)ctx)->exists ? DB_OK : DB_NOT_FOUND;
}

static enum db_status f_session(void *ctx, const char *user_id, const char *session_id,
                                struct db_export_session *out)
{
    struct fake *f = ctx;
    (void)user_id;
    int k = index_of(session_id);
    if (!f->exists || k >= f->n_sessions)
        return DB_NOT_FOUND;
    fill(out, k);
    free(out->session_id);
    out->session_id = NULL; /* as db_export_session leaves it */
    return DB_OK;
}

static enum db_status f_sessions(void *ctx, const char *user_id, long long cursor_us,
                                 const char *cursor_id, int limit, struct db_export_session **out,
                                 int *n)
{
    struct fake *f = ctx;
    (void)user_id;
    f->lists_read++;
    /* after the cursor: the cursor is the last one listed before */
    int from = cursor_us < 0 ? 0 : (int)(cursor_us - 1000) + 1;
    if (cursor_us >= 0)
        assert_int_equal(index_of(cursor_id), from - 1);
    int count = f->n_sessions - from < limit ? f->n_sessions - from : limit;
    *out = calloc((size_t)(count > 0 ? count : 1), sizeof(**out));
    for (int i = 0; i < count; i++)
        fill(&(*out)[i], from + i);
    *n = count;
    return DB_OK;
}

static enum db_status f_page(void *ctx, const char *user_id, const char *session_id,
                             long long after, int limit, int all_branches, char **path, char **json,
                             long long *last)
{
    struct fake *f = ctx;
    (void)user_id;
    assert_int_equal(all_branches, 0); /* export_job_new's: the active path */
    /* Read once per session: a session's first page finds no path kept. */
    assert_true((*path == NULL) == (after < 0));
    if (*path == NULL && (*path = strdup(session_id)) == NULL)
        return DB_ERROR;
    assert_string_equal(*path, session_id);
    if (++f->pages_read == f->fail_page_at)
        return DB_ERROR;
    int k = index_of(session_id);
    json_t *a = json_array();
    long long seq = after + 1;
    for (; seq < f->msgs[k] && (int)json_array_size(a) < limit; seq++) {
        char content[48];
        snprintf(content, sizeof(content), "s%dm%lld", k, seq);
        json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s}", "seq", (json_int_t)seq, "role",
                                           seq % 2 ? "assistant" : "user", "content", content,
                                           "created_at", "2026-12-05T10:00:01.000000Z"));
    }
    *last = json_array_size(a) > 0 ? seq - 1 : -1;
    *json = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return DB_OK;
}

/* Runs job j to its end: the whole download, and how many pieces. */
static enum export_piece run_all(struct export_job *j, struct fake *f, struct buf *all, int *pieces)
{
    const struct export_source src = {f_user, f_session, f_sessions, f_page, .ctx = f};
    *pieces = 0;
    for (;;) {
        struct buf b = {0};
        enum export_piece e = export_piece(j, &src, &b);
        if (b.len > 0)
            buf_append(all, b.p, b.len);
        buf_free(&b);
        if (e != EXPORT_PIECE_MORE)
            return e;
        (*pieces)++;
        assert_true(*pieces < 10000);
    }
}

static struct config test_cfg;
static struct app test_app = {.cfg = &test_cfg};

static void test_one_session_a_page_per_piece(void **state)
{
    (void)state;
    static const int lengths[] = {
        0, 1, EXPORT_PAGE - 1, EXPORT_PAGE, EXPORT_PAGE + 1, 3 * EXPORT_PAGE + 7};
    for (size_t t = 0; t < sizeof(lengths) / sizeof(lengths[0]); t++) {
        struct fake f = {.n_sessions = 4, .exists = 1};
        f.msgs[3] = lengths[t];
        char *sid = id_of(3);
        struct export_job *j = export_job_new(&test_app, 1, "u", sid, EXPORT_JSON);
        struct buf all = {0};
        int pieces;
        assert_int_equal(run_all(j, &f, &all, &pieces), EXPORT_PIECE_LAST);
        /* a page a piece, and one read more when the last page was full */
        assert_int_equal(f.pages_read, lengths[t] / EXPORT_PAGE + 1);
        assert_int_equal(pieces + 1, f.pages_read);
        json_t *doc = json_loadb(all.p, all.len, 0, NULL);
        assert_non_null(doc);
        json_t *msgs = json_object_get(doc, "messages");
        assert_int_equal(json_array_size(msgs), lengths[t]);
        for (int i = 0; i < lengths[t]; i++) {
            char want[48];
            snprintf(want, sizeof(want), "s3m%d", i);
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(msgs, (size_t)i), "content")),
                want);
        }
        assert_string_equal(export_filename(j),
                            "Session-3-00000000-0000-4000-8000-000000000003.json");
        json_decref(doc);
        buf_free(&all);
        export_free(j);
        free(sid);
    }
}

static void test_every_session_once_in_order(void **state)
{
    (void)state;
    struct fake f = {.n_sessions = FAKE_SESSIONS, .exists = 1};
    for (int k = 0; k < FAKE_SESSIONS; k++)
        f.msgs[k] = k % 7 == 0 ? 0 : (k * 37) % (EXPORT_PAGE + 40);
    struct export_job *j = export_job_new(&test_app, 1, "u", NULL, EXPORT_JSONL);
    struct buf all = {0};
    int pieces;
    assert_int_equal(run_all(j, &f, &all, &pieces), EXPORT_PIECE_LAST);
    /* the list is read a page at a time, and once more to find its end */
    assert_int_equal(f.lists_read, FAKE_SESSIONS / EXPORT_SESSIONS_PAGE + 1);
    int k = 0;
    for (char *line = all.p, *nl; line != NULL && *line != '\0'; line = nl + 1, k++) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, NULL);
        assert_non_null(o);
        char *id = id_of(k);
        assert_string_equal(json_string_value(json_object_get(o, "session_id")), id);
        free(id);
        json_t *msgs = json_object_get(o, "messages");
        assert_int_equal(json_array_size(msgs), f.msgs[k]);
        if (f.msgs[k] > 0) {
            char want[48];
            snprintf(want, sizeof(want), "s%dm%d", k, f.msgs[k] - 1);
            assert_string_equal(json_string_value(json_object_get(
                                    json_array_get(msgs, (size_t)f.msgs[k] - 1), "content")),
                                want);
        }
        json_decref(o);
    }
    assert_int_equal(k, FAKE_SESSIONS);
    assert_true(pieces > 1); /* bounded pieces, not one */
    assert_string_equal(export_filename(j), "chatd-export.jsonl");
    buf_free(&all);
    export_free(j);
}

static void test_missing_and_failing(void **state)
{
    (void)state;
    struct buf all = {0};
    int pieces;
    /* someone else's or a missing session: not found, before anything */
    struct fake f = {.n_sessions = 1, .exists = 1};
    char *sid = id_of(5);
    struct export_job *j = export_job_new(&test_app, 1, "u", sid, EXPORT_MD);
    assert_int_equal(run_all(j, &f, &all, &pieces), EXPORT_PIECE_NOT_FOUND);
    assert_int_equal(all.len, 0);
    export_free(j);
    free(sid);
    /* a missing user, for every session */
    struct fake nobody = {.n_sessions = 3};
    j = export_job_new(&test_app, 1, "u", NULL, EXPORT_JSONL);
    assert_int_equal(run_all(j, &nobody, &all, &pieces), EXPORT_PIECE_NOT_FOUND);
    export_free(j);
    /* a read that fails after the first piece: the download ends failed */
    struct fake late = {.n_sessions = 1, .exists = 1, .fail_page_at = 3};
    late.msgs[0] = 5 * EXPORT_PAGE;
    sid = id_of(0);
    j = export_job_new(&test_app, 1, "u", sid, EXPORT_CSV);
    assert_int_equal(run_all(j, &late, &all, &pieces), EXPORT_PIECE_FAILED);
    assert_int_equal(pieces, 2);
    export_free(j);
    free(sid);
    buf_free(&all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_cells),
        cmocka_unit_test(test_file_names),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_one_session_a_page_per_piece),
        cmocka_unit_test(test_every_session_once_in_order),
        cmocka_unit_test(test_missing_and_failing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
