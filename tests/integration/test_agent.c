/* test_agent.c - agent.c (chatd's gRPC client) against the real chat-agent
 * binary, plus the SSE parser of chat-agent's openai back end.
 *
 * Each test starts its own chat-agent on an ephemeral port with the
 * environment it needs (delays, disabled methods, fail modes) and reads the
 * port from its "listening on" line. The binary is $CHAT_AGENT_BIN, else
 * ../chat-agent next to this test binary (the build tree layout), else the
 * newest $CHATD_SOURCE_DIR/build*\/chat-agent. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/agent.h"

#include "chat-agent/sse.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char agent_bin[PATH_MAX];
static pid_t live_agent; /* for the teardown after a failed assertion */

static int find_agent_bin(void)
{
    const char *env = getenv("CHAT_AGENT_BIN");
    if (env && access(env, X_OK) == 0) {
        snprintf(agent_bin, sizeof(agent_bin), "%s", env);
        return 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        snprintf(agent_bin, sizeof(agent_bin), "%s/../chat-agent", dirname(self));
        if (access(agent_bin, X_OK) == 0)
            return 0;
    }
    const char *src = getenv("CHATD_SOURCE_DIR");
    char pattern[PATH_MAX];
    snprintf(pattern, sizeof(pattern), "%s/build*/chat-agent", src ? src : ".");
    glob_t g;
    time_t best = 0;
    int found = -1;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            struct stat st;
            if (stat(g.gl_pathv[i], &st) == 0 && st.st_mtime >= best) {
                best = st.st_mtime;
                snprintf(agent_bin, sizeof(agent_bin), "%s", g.gl_pathv[i]);
                found = 0;
            }
        }
        globfree(&g);
    }
    return found;
}

struct agent_proc {
    pid_t pid;
    int port;
    int err_fd;
    pthread_t drain;
    char target[64];
};

/* Copies the agent's stderr to ours until it exits, so it never blocks on
 * a full pipe and its log shows up in the test output. */
static void *drain_main(void *arg)
{
    struct agent_proc *p = arg;
    char buf[4096];
    ssize_t n;
    while ((n = read(p->err_fd, buf, sizeof(buf))) > 0) {
        ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
        (void)w;
    }
    return NULL;
}

/* env: NULL-terminated "KEY=VALUE" strings added to the agent's environment. */
static void agent_spawn(struct agent_proc *p, const char *const *env)
{
    /* The environment is built before fork(): gRPC's threads exist, so the
     * child only calls dup2/close/execve. */
    extern char **environ;
    static const char *const drop[] = {"AGENT_", "OPENAI_", NULL};
    size_t n_env = 0, n_extra = 0;
    while (environ[n_env])
        n_env++;
    while (env && env[n_extra])
        n_extra++;
    char **envp = calloc(n_env + n_extra + 3, sizeof(*envp));
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        int skip = 0;
        for (int d = 0; drop[d]; d++)
            skip |= strncmp(environ[i], drop[d], strlen(drop[d])) == 0;
        if (!skip)
            envp[k++] = environ[i];
    }
    envp[k++] = "AGENT_HOST=127.0.0.1";
    envp[k++] = "AGENT_PORT=0";
    for (size_t i = 0; i < n_extra; i++)
        envp[k++] = (char *)env[i];
    envp[k] = NULL;

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        /* A failed assertion longjmps past agent_stop(); the teardown
         * kills the agent then, and this covers the test itself dying. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        char *argv[] = {agent_bin, NULL};
        execve(agent_bin, argv, envp);
        _exit(127);
    }
    free(envp);
    live_agent = p->pid;
    close(fds[1]);
    p->err_fd = fds[0];

    /* Read byte by byte up to the "listening on" line: what follows is the
     * drain thread's. */
    char line[512];
    size_t len = 0;
    uint64_t deadline = now_ms() + 15000;
    p->port = 0;
    while (p->port == 0 && now_ms() < deadline) {
        struct pollfd pfd = {p->err_fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        char c;
        if (read(p->err_fd, &c, 1) != 1)
            break;
        if (c != '\n') {
            if (len < sizeof(line) - 1)
                line[len++] = c;
            continue;
        }
        line[len] = '\0';
        len = 0;
        fprintf(stderr, "[agent] %s\n", line);
        const char *at = strstr(line, "chat-agent listening on ");
        if (at) {
            const char *colon = strrchr(at, ':');
            p->port = colon ? atoi(colon + 1) : 0;
        }
    }
    if (p->port == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        fail_msg("chat-agent (%s) did not start", agent_bin);
    }
    snprintf(p->target, sizeof(p->target), "127.0.0.1:%d", p->port);
    assert_int_equal(pthread_create(&p->drain, NULL, drain_main, p), 0);
}

/* SIGTERM, and the agent must exit 0 within 10 s (clean shutdown). */
static void agent_stop(struct agent_proc *p)
{
    int status = 0;
    kill(p->pid, SIGTERM);
    uint64_t deadline = now_ms() + 10000;
    pid_t r;
    while ((r = waitpid(p->pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        usleep(10000);
    if (r == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        fail_msg("chat-agent did not stop on SIGTERM");
    }
    live_agent = 0;
    pthread_join(p->drain, NULL);
    close(p->err_fd);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Collects one call's callbacks. */
struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    int n_done; /* must stay 1 */
    int status;
    char details[256];
    char *text;
    size_t text_len;
    double cost;
    char cost_text[UTIL_MONEY_MAX];
    unsigned prompt_tokens, completion_tokens;
    int n_deltas;
    char *deltas;
    size_t deltas_len;
    uint64_t done_at;
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static void waiter_free(struct waiter *w)
{
    free(w->text);
    free(w->deltas);
    pthread_cond_destroy(&w->c);
    pthread_mutex_destroy(&w->m);
}

static void on_delta(void *ud, const char *text, size_t len)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&w->m);
    w->deltas = realloc(w->deltas, w->deltas_len + len + 1);
    memcpy(w->deltas + w->deltas_len, text, len);
    w->deltas_len += len;
    w->deltas[w->deltas_len] = '\0';
    w->n_deltas++;
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

/* Both completion callbacks record the same things. */
static void waiter_finish(struct waiter *w, int status, const char *details, const char *text,
                          size_t text_len, double cost)
{
    pthread_mutex_lock(&w->m);
    w->n_done++;
    w->done = 1;
    w->done_at = now_ms();
    w->status = status;
    snprintf(w->details, sizeof(w->details), "%s", details);
    w->text = strndup(text, text_len);
    w->text_len = text_len;
    w->cost = cost;
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void on_done(void *ud, const struct agent_result *res)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&w->m);
    memcpy(w->cost_text, res->cost, sizeof(w->cost_text));
    w->prompt_tokens = res->prompt_tokens;
    w->completion_tokens = res->completion_tokens;
    pthread_mutex_unlock(&w->m);
    waiter_finish(w, res->status, res->status_details, res->text, res->text_len,
                  strtod(res->cost, NULL));
}

static void on_summary(void *ud, const struct agent_summary_result *res)
{
    waiter_finish(ud, res->status, res->status_details, res->summary, res->summary_len,
                  strtod(res->cost, NULL));
}

static void on_title(void *ud, const struct agent_title_result *res)
{
    struct waiter *w = ud;
    pthread_mutex_lock(&w->m);
    memcpy(w->cost_text, res->cost, sizeof(w->cost_text));
    pthread_mutex_unlock(&w->m);
    waiter_finish(w, res->status, res->status_details, res->title, strlen(res->title),
                  strtod(res->cost, NULL));
}

/* Waits until done (or until n_deltas >= min_deltas when min_deltas > 0). */
static int waiter_wait(struct waiter *w, int min_deltas, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    pthread_mutex_lock(&w->m);
    while (!(min_deltas > 0 ? w->n_deltas >= min_deltas : w->done) && now_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->c, &w->m, &ts);
    }
    int ok = min_deltas > 0 ? w->n_deltas >= min_deltas : w->done;
    pthread_mutex_unlock(&w->m);
    return ok ? 0 : -1;
}

static const char *const test_files[] = {"http://x/a.pdf"};

static struct agent_request make_request(const char *message)
{
    struct agent_request r = {
        .user_id = "u1",
        .session_id = "s1",
        .chat_message = message,
        .model_name = "gpt-4o-mini",
        .session_prompt = "be brief",
        .chat_summary = "hello",
        .chat_history = "[{\"role\":\"user\",\"content\":\"a\"},"
                        "{\"role\":\"assistant\",\"content\":\"b\"}]",
        .model_provider = "openai",
        .file_names = test_files,
        .n_files = 1,
        .balance = 12.5,
    };
    return r;
}

static char *expected_echo(const char *message)
{
    char *s = NULL;
    assert_true(asprintf(&s, "echo: %s [history=2 summary=5 files=1]", message) > 0);
    return s;
}

/* Lines of the record file whose "method" is m. */
static int count_records(const char *path, const char *m)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *jm = json_string_value(json_object_get(j, "method"));
        if (jm && strcmp(jm, m) == 0)
            n++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    return n;
}

static void temp_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "/tmp/test_agent_%d_%s", (int)getpid(), name);
    unlink(buf);
}

/* Runs one call to completion. */
static void run_call(agent_client *c, const struct agent_request *r, int stream, struct waiter *w,
                     int timeout_ms)
{
    waiter_init(w);
    agent_call *call = agent_process(c, r, stream, on_delta, on_done, w);
    assert_non_null(call);
    assert_int_equal(waiter_wait(w, 0, timeout_ms), 0);
    agent_call_release(call);
}

/* Both ways (Process, then ProcessStream), r's call ends with status, and
 * with details unless that is NULL. */
static void expect_status(agent_client *c, const struct agent_request *r, int status,
                          const char *details)
{
    for (int stream = 0; stream <= 1; stream++) {
        struct waiter w;
        run_call(c, r, stream, &w, 10000);
        assert_int_equal(w.status, status);
        if (details != NULL)
            assert_string_equal(w.details, details);
        waiter_free(&w);
    }
}

/* ---------------------------------------------------------------- SSE */

struct sse_rec {
    int n;
    char ev[16][128];
};

static int sse_rec_fn(void *ud, const char *data, size_t len)
{
    struct sse_rec *r = ud;
    assert_int_equal(strlen(data), len);
    if (r->n < 16)
        snprintf(r->ev[r->n], sizeof(r->ev[0]), "%s", data);
    r->n++;
    return strcmp(data, "STOP") == 0 ? 7 : 0;
}

static void test_sse_parser(void **state)
{
    (void)state;
    const char *input = ": keep-alive\n"
                        "data: {\"a\":1}\n\n"
                        "event: x\r\ndata:no-space\r\n\r\n"
                        "data: line1\ndata: line2\n\n"
                        "id: 3\n\n" /* no data: no event */
                        "data\n\n"  /* empty data field: one empty event */
                        "data: cr\r\r"
                        "data: [DONE]\n\n"
                        "data: tail";
    /* Every split of the input into two feeds must parse alike. */
    size_t n = strlen(input);
    for (size_t cut = 0; cut <= n; cut++) {
        struct sse_rec r = {0};
        struct sse_parser p;
        sse_init(&p, sse_rec_fn, &r, 1024);
        assert_int_equal(sse_feed(&p, input, cut), 0);
        assert_int_equal(sse_feed(&p, input + cut, n - cut), 0);
        assert_int_equal(r.n, 6);
        assert_int_equal(sse_finish(&p), 0);
        sse_free(&p);
        assert_int_equal(r.n, 7);
        assert_string_equal(r.ev[0], "{\"a\":1}");
        assert_string_equal(r.ev[1], "no-space");
        assert_string_equal(r.ev[2], "line1\nline2");
        assert_string_equal(r.ev[3], "");
        assert_string_equal(r.ev[4], "cr");
        assert_string_equal(r.ev[5], "[DONE]");
        assert_string_equal(r.ev[6], "tail");
    }
    /* Byte by byte. */
    struct sse_rec r = {0};
    struct sse_parser p;
    sse_init(&p, sse_rec_fn, &r, 1024);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sse_feed(&p, input + i, 1), 0);
    assert_int_equal(r.n, 6);
    sse_free(&p);

    /* The callback's non-zero answer stops parsing and sticks. */
    memset(&r, 0, sizeof(r));
    sse_init(&p, sse_rec_fn, &r, 1024);
    assert_int_equal(sse_feed(&p, "data: STOP\n\ndata: after\n\n", 25), 7);
    assert_int_equal(sse_feed(&p, "data: x\n\n", 9), 7);
    assert_int_equal(r.n, 1);
    sse_free(&p);

    /* A line over the limit is an error, not a crash or a huge buffer. */
    memset(&r, 0, sizeof(r));
    sse_init(&p, sse_rec_fn, &r, 16);
    assert_int_equal(sse_feed(&p, "data: 0123456789abcdefghij\n\n", 28), -1);
    assert_int_equal(r.n, 0);
    sse_free(&p);
}

/* ---------------------------------------------------------------- gRPC */

static void test_process_unary(void **state)
{
    (void)state;
    struct agent_proc p;
    char rec[128];
    temp_path(rec, sizeof(rec), "unary.jsonl");
    char rec_env[160];
    snprintf(rec_env, sizeof(rec_env), "AGENT_RECORD_FILE=%s", rec);
    const char *env[] = {rec_env, NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);
    assert_non_null(c);
    assert_int_equal(agent_ping(c, 5000), 0);

    struct agent_request r = make_request("hi there");
    struct waiter w;
    run_call(c, &r, 0, &w, 10000);
    char *want = expected_echo("hi there");
    assert_int_equal(w.status, GRPC_STATUS_OK);
    assert_string_equal(w.text, want);
    assert_int_equal(w.text_len, strlen(want));
    assert_true(w.cost > 0);
    assert_int_equal(w.n_deltas, 0);
    assert_int_equal(w.n_done, 1);
    free(want);
    waiter_free(&w);

    /* Every field reached the agent. */
    FILE *f = fopen(rec, "r");
    assert_non_null(f);
    char line[4096];
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    json_t *j = json_loads(line, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "Process");
    assert_string_equal(json_string_value(json_object_get(j, "user_id")), "u1");
    assert_string_equal(json_string_value(json_object_get(j, "session_id")), "s1");
    assert_string_equal(json_string_value(json_object_get(j, "chat_message")), "hi there");
    assert_string_equal(json_string_value(json_object_get(j, "model_name")), "gpt-4o-mini");
    assert_string_equal(json_string_value(json_object_get(j, "session_prompt")), "be brief");
    assert_string_equal(json_string_value(json_object_get(j, "chat_summary")), "hello");
    assert_string_equal(json_string_value(json_object_get(j, "chat_history")), r.chat_history);
    assert_string_equal(json_string_value(json_object_get(j, "model_provider")), "openai");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "file_name"), 0)),
                        "http://x/a.pdf");
    assert_true(json_real_value(json_object_get(j, "balance")) == 12.5);
    assert_true(json_integer_value(json_object_get(j, "timestamp")) > 1600000000);
    json_decref(j);
    unlink(rec);

    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_process_stream(void **state)
{
    (void)state;
    struct agent_proc p;
    const char *env[] = {"AGENT_DELAY_MS=300", NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);

    struct agent_request r = make_request("one two three four");
    struct waiter w;
    run_call(c, &r, 1, &w, 10000);
    char *want = expected_echo("one two three four");
    assert_int_equal(w.status, GRPC_STATUS_OK);
    assert_string_equal(w.text, want);
    assert_true(w.n_deltas >= 2);
    assert_string_equal(w.deltas, w.text);
    assert_true(w.cost > 0);
    assert_int_equal(agent_client_supports_stream(c), 1);
    free(want);
    waiter_free(&w);

    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_stream_fallback(void **state)
{
    (void)state;
    struct agent_proc p;
    char rec[128], rec_env[160];
    temp_path(rec, sizeof(rec), "fallback.jsonl");
    snprintf(rec_env, sizeof(rec_env), "AGENT_RECORD_FILE=%s", rec);
    const char *env[] = {"AGENT_DISABLE=ProcessStream", rec_env, NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);
    struct agent_request r = make_request("fall back");
    char *want = expected_echo("fall back");

    for (int i = 0; i < 3; i++) {
        struct waiter w;
        run_call(c, &r, 1, &w, 10000);
        assert_int_equal(w.status, GRPC_STATUS_OK);
        assert_string_equal(w.text, want);
        assert_int_equal(w.n_deltas, 1); /* the whole reply as one delta */
        assert_string_equal(w.deltas, want);
        assert_true(w.cost > 0);
        assert_int_equal(agent_client_supports_stream(c), 0);
        waiter_free(&w);
    }
    /* Asked for the stream once only. */
    assert_int_equal(count_records(rec, "ProcessStream"), 1);
    assert_int_equal(count_records(rec, "Process"), 3);
    free(want);
    unlink(rec);
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_summarize(void **state)
{
    (void)state;
    struct agent_proc p;
    agent_spawn(&p, NULL);
    agent_client *c = agent_client_create(p.target, 10);
    struct agent_summary_request r = {
        .user_id = "u1",
        .session_id = "s1",
        .model_name = "m",
        .model_provider = "openai",
        .previous_summary = "earlier",
        .user_message = "what is the capital of France and why is it Paris?",
        .assistant_message = "Paris.",
    };
    struct waiter w;
    waiter_init(&w);
    assert_int_equal(agent_summarize(c, &r, on_summary, &w), 0);
    assert_int_equal(waiter_wait(&w, 0, 10000), 0);
    assert_int_equal(w.status, GRPC_STATUS_OK);
    assert_string_equal(w.text, "earlier | what is the capital of France and why is");
    assert_true(w.cost > 0);
    assert_int_equal(agent_client_supports_summary(c), 1);
    waiter_free(&w);
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_summarize_unimplemented(void **state)
{
    (void)state;
    struct agent_proc p;
    char rec[128], rec_env[160];
    temp_path(rec, sizeof(rec), "summary.jsonl");
    snprintf(rec_env, sizeof(rec_env), "AGENT_RECORD_FILE=%s", rec);
    const char *env[] = {"AGENT_DISABLE=Summarize", rec_env, NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);
    struct agent_summary_request r = {.previous_summary = "keep me", .user_message = "x"};

    for (int i = 0; i < 3; i++) {
        struct waiter w;
        waiter_init(&w);
        assert_int_equal(agent_summarize(c, &r, on_summary, &w), 0);
        assert_int_equal(waiter_wait(&w, 0, 10000), 0);
        assert_int_equal(w.status, GRPC_STATUS_UNIMPLEMENTED);
        assert_string_equal(w.text, "");
        assert_int_equal(w.n_done, 1);
        assert_int_equal(agent_client_supports_summary(c), 0);
        waiter_free(&w);
    }
    /* no round trip after the first */
    assert_int_equal(count_records(rec, "Summarize"), 1);
    unlink(rec);
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_title(void **state)
{
    (void)state;
    struct agent_proc p;
    char rec[128], rec_env[160];
    temp_path(rec, sizeof(rec), "title.jsonl");
    snprintf(rec_env, sizeof(rec_env), "AGENT_RECORD_FILE=%s", rec);
    const char *env[] = {rec_env, "AGENT_COSTS=0.000128", "AGENT_COST_FIELDS=float", NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);
    struct agent_title_request r = {
        .user_id = "u1",
        .session_id = "s1",
        .model_name = "m",
        .user_message = "plan a long weekend in Rome with the kids",
        .assistant_message = "Sure.",
    };
    struct waiter w;
    waiter_init(&w);
    assert_int_equal(agent_title(c, &r, 5, on_title, &w), 0);
    assert_int_equal(waiter_wait(&w, 0, 10000), 0);
    assert_int_equal(w.status, GRPC_STATUS_OK);
    assert_string_equal(w.text, "\"plan a long weekend in Rome\"");
    /* the float field alone, at float precision */
    assert_string_equal(w.cost_text, "0.000128");
    assert_int_equal(agent_client_supports_title(c), 1);
    assert_int_equal(count_records(rec, "Title"), 1);
    waiter_free(&w);
    unlink(rec);
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_title_unimplemented_and_deadline(void **state)
{
    (void)state;
    struct agent_proc p;
    char rec[128], rec_env[160];
    temp_path(rec, sizeof(rec), "title2.jsonl");
    snprintf(rec_env, sizeof(rec_env), "AGENT_RECORD_FILE=%s", rec);
    const char *env[] = {"AGENT_DISABLE=Title", rec_env, NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);
    struct agent_title_request r = {.user_message = "x", .assistant_message = "y"};
    for (int i = 0; i < 3; i++) {
        struct waiter w;
        waiter_init(&w);
        assert_int_equal(agent_title(c, &r, 5, on_title, &w), 0);
        assert_int_equal(waiter_wait(&w, 0, 10000), 0);
        assert_int_equal(w.status, GRPC_STATUS_UNIMPLEMENTED);
        assert_string_equal(w.text, "");
        assert_string_equal(w.cost_text, "0");
        assert_int_equal(agent_client_supports_title(c), 0);
        waiter_free(&w);
    }
    assert_int_equal(count_records(rec, "Title"), 1); /* remembered */
    unlink(rec);
    agent_client_destroy(c);
    agent_stop(&p);

    /* a title's own deadline, shorter than the client's */
    const char *slow[] = {"AGENT_DELAY_MS=3000", NULL};
    agent_spawn(&p, slow);
    c = agent_client_create(p.target, 10);
    struct waiter w;
    waiter_init(&w);
    assert_int_equal(agent_title(c, &r, 1, on_title, &w), 0);
    assert_int_equal(waiter_wait(&w, 0, 10000), 0);
    assert_int_equal(w.status, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_string_equal(w.text, "");
    assert_int_equal(agent_client_supports_title(c), 1);
    waiter_free(&w);
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_costs_and_tokens(void **state)
{
    (void)state;
    struct agent_proc p;
    const char *env[] = {"AGENT_COSTS=0.00012812345678", "AGENT_COST_FIELDS=double", NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);
    struct agent_request r = make_request("count my tokens");
    for (int stream = 0; stream <= 1; stream++) {
        struct waiter w;
        run_call(c, &r, stream, &w, 10000);
        assert_int_equal(w.status, GRPC_STATUS_OK);
        /* the double field, in full */
        assert_string_equal(w.cost_text, "0.00012812345678");
        /* the echo agent's estimates: (bytes + 2) / 3 */
        assert_int_equal(w.completion_tokens, (w.text_len + 2) / 3);
        assert_true(w.prompt_tokens > 0);
        waiter_free(&w);
    }
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_deadline(void **state)
{
    (void)state;
    struct agent_proc p;
    const char *env[] = {"AGENT_DELAY_MS=3000", NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 1);
    struct agent_request r = make_request("slow");
    /* (the reply would take 3 s; the deadline is 1 s) */
    expect_status(c, &r, GRPC_STATUS_DEADLINE_EXCEEDED, NULL);
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_unavailable(void **state)
{
    (void)state;
    /* A port nobody listens on: bind an ephemeral one, then close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", ntohs(sa.sin_port));
    close(fd);

    agent_client *c = agent_client_create(target, 5);
    assert_int_not_equal(agent_ping(c, 300), 0);
    struct agent_request r = make_request("anyone?");
    for (int stream = 0; stream <= 1; stream++) {
        struct waiter w;
        run_call(c, &r, stream, &w, 10000);
        assert_int_equal(w.status, GRPC_STATUS_UNAVAILABLE);
        assert_int_equal(w.text_len, 0);
        waiter_free(&w);
    }
    /* UNAVAILABLE is not UNIMPLEMENTED: nothing remembered. */
    assert_int_equal(agent_client_supports_stream(c), 1);
    agent_client_destroy(c);
}

static void test_cancel_mid_stream(void **state)
{
    (void)state;
    struct agent_proc p;
    const char *env[] = {"AGENT_DELAY_MS=3000", NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 10);
    const char *msg = "a b c d e f g h i j k l m n o p q r s t";
    struct agent_request r = make_request(msg);
    char *want = expected_echo(msg);

    struct waiter w;
    waiter_init(&w);
    agent_call *call = agent_process(c, &r, 1, on_delta, on_done, &w);
    assert_non_null(call);
    assert_int_equal(waiter_wait(&w, 2, 10000), 0);
    agent_call_cancel(call);
    assert_int_equal(waiter_wait(&w, 0, 5000), 0);
    assert_int_equal(w.status, GRPC_STATUS_CANCELLED);
    assert_true(w.text_len > 0);
    assert_true(w.text_len < strlen(want));
    assert_memory_equal(w.text, want, w.text_len); /* a prefix of the reply */
    assert_string_equal(w.text, w.deltas);         /* exactly what was shown */
    agent_call_cancel(call);                       /* harmless after completion */
    agent_call_release(call);
    assert_int_equal(w.n_done, 1);
    waiter_free(&w);
    free(want);
    agent_client_destroy(c);
    agent_stop(&p);
}

/* 200 calls by default; TEST_AGENT_CONCURRENCY=2000 plays chatd's benchmark. */
static void test_concurrent(void **state)
{
    (void)state;
    const char *nenv = getenv("TEST_AGENT_CONCURRENCY");
    const int N = nenv && atoi(nenv) > 0 ? atoi(nenv) : 200;
    struct agent_proc p;
    const char *env[] = {"AGENT_DELAY_MS=500", NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 30);
    assert_int_equal(agent_ping(c, 5000), 0);
    struct waiter *w = calloc((size_t)N, sizeof(*w));
    agent_call **calls = calloc((size_t)N, sizeof(*calls));
    char(*msg)[32] = calloc((size_t)N, sizeof(*msg));

    uint64_t t0 = now_ms();
    for (int i = 0; i < N; i++) {
        snprintf(msg[i], sizeof(msg[i]), "call %d says hi", i);
        struct agent_request r = make_request(msg[i]);
        waiter_init(&w[i]);
        calls[i] = agent_process(c, &r, i % 2, on_delta, on_done, &w[i]);
        assert_non_null(calls[i]);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(waiter_wait(&w[i], 0, 20000), 0);
        char *want = expected_echo(msg[i]);
        assert_int_equal(w[i].status, GRPC_STATUS_OK);
        assert_string_equal(w[i].text, want);
        if (i % 2)
            assert_string_equal(w[i].deltas, want);
        free(want);
    }
    uint64_t took = now_ms() - t0;
    fprintf(stderr, "[test] %d concurrent calls with a 500 ms agent: %llu ms\n", N,
            (unsigned long long)took);
    /* (a figure, not an assertion: N one after the other would take
     * N x 500 ms; scripts/bench.sh measures the same in section d) */
    for (int i = 0; i < N; i++) {
        agent_call_release(calls[i]);
        waiter_free(&w[i]);
    }
    free(w);
    free(calls);
    free(msg);
    agent_client_destroy(c);
    agent_stop(&p);
}

static void test_errors(void **state)
{
    (void)state;
    struct {
        const char *mode;
        int status;
        const char *details;
    } cases[] = {{"AGENT_FAIL_MODE=internal", GRPC_STATUS_INTERNAL, "model call failed"},
                 {"AGENT_FAIL_MODE=funds", GRPC_STATUS_UNAVAILABLE, "Insufficient funds"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct agent_proc p;
        const char *env[] = {cases[i].mode, NULL};
        agent_spawn(&p, env);
        agent_client *c = agent_client_create(p.target, 10);
        struct agent_request r = make_request("x");
        expect_status(c, &r, cases[i].status, cases[i].details);
        agent_client_destroy(c);
        agent_stop(&p);
    }

    /* AGENT_FAIL_MODELS: only the listed models' replies fail, with
     * AGENT_FAIL_MODE's status (internal when unset); others answer. */
    {
        struct agent_proc p;
        const char *env[] = {"AGENT_FAIL_MODELS=gpt-4,gpt-4o-mini", NULL};
        agent_spawn(&p, env);
        agent_client *c = agent_client_create(p.target, 10);
        struct agent_request r = make_request("x"); /* gpt-4o-mini */
        expect_status(c, &r, GRPC_STATUS_INTERNAL, "model call failed");
        r.model_name = "gpt-4o"; /* names match whole: "gpt-4" is not it */
        expect_status(c, &r, GRPC_STATUS_OK, NULL);
        agent_client_destroy(c);
        agent_stop(&p);
    }

    /* Malformed history: INVALID_ARGUMENT, and no fall-back to Process. */
    struct agent_proc p;
    agent_spawn(&p, NULL);
    agent_client *c = agent_client_create(p.target, 10);
    struct agent_request r = make_request("x");
    r.chat_history = "{not json";
    expect_status(c, &r, GRPC_STATUS_INVALID_ARGUMENT, NULL);
    assert_int_equal(agent_client_supports_stream(c), 1);
    agent_client_destroy(c);
    agent_stop(&p);
}

/* Destroying the client with calls in flight completes each as CANCELLED,
 * also calls whose caller already released them. */
static void test_destroy_in_flight(void **state)
{
    (void)state;
    enum { N = 20 };
    struct agent_proc p;
    const char *env[] = {"AGENT_DELAY_MS=5000", NULL};
    agent_spawn(&p, env);
    agent_client *c = agent_client_create(p.target, 30);
    struct waiter w[N];
    struct agent_request r = make_request("bye");
    for (int i = 0; i < N; i++) {
        waiter_init(&w[i]);
        agent_call *call = agent_process(c, &r, i % 2, on_delta, on_done, &w[i]);
        assert_non_null(call);
        agent_call_release(call); /* fire and forget */
    }
    struct waiter sw;
    waiter_init(&sw);
    struct agent_summary_request sr = {.user_message = "x"};
    assert_int_equal(agent_summarize(c, &sr, on_summary, &sw), 0);
    usleep(200 * 1000);
    agent_client_destroy(c); /* returns: every call was cancelled, not waited for */
    for (int i = 0; i < N; i++) {
        assert_int_equal(w[i].n_done, 1);
        assert_int_equal(w[i].status, GRPC_STATUS_CANCELLED);
        waiter_free(&w[i]);
    }
    assert_int_equal(sw.n_done, 1); /* echo summaries are immediate */
    waiter_free(&sw);
    agent_stop(&p);
}

static int test_teardown(void **state)
{
    (void)state;
    if (live_agent > 0) {
        kill(live_agent, SIGKILL);
        waitpid(live_agent, NULL, 0);
        live_agent = 0;
    }
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    if (find_agent_bin() != 0) {
        fprintf(stderr, "chat-agent binary not found: set CHAT_AGENT_BIN\n");
        return -1;
    }
    fprintf(stderr, "[test] chat-agent: %s\n", agent_bin);
    grpc_init();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    grpc_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sse_parser, test_teardown),
        cmocka_unit_test_teardown(test_process_unary, test_teardown),
        cmocka_unit_test_teardown(test_process_stream, test_teardown),
        cmocka_unit_test_teardown(test_stream_fallback, test_teardown),
        cmocka_unit_test_teardown(test_summarize, test_teardown),
        cmocka_unit_test_teardown(test_summarize_unimplemented, test_teardown),
        cmocka_unit_test_teardown(test_title, test_teardown),
        cmocka_unit_test_teardown(test_title_unimplemented_and_deadline, test_teardown),
        cmocka_unit_test_teardown(test_costs_and_tokens, test_teardown),
        cmocka_unit_test_teardown(test_deadline, test_teardown),
        cmocka_unit_test_teardown(test_unavailable, test_teardown),
        cmocka_unit_test_teardown(test_cancel_mid_stream, test_teardown),
        cmocka_unit_test_teardown(test_concurrent, test_teardown),
        cmocka_unit_test_teardown(test_errors, test_teardown),
        cmocka_unit_test_teardown(test_destroy_in_flight, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
