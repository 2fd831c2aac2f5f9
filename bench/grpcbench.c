/* grpcbench.c - direct gRPC calls to an AI agent (chat-agent), no chatd.
 *
 * The baseline for chatd's chat overhead: the same agent, the same client
 * code chatd uses (src/agent.c), C calls kept in flight in a closed loop
 * (each completion starts the next call from the completion callback). One
 * result line:
 *
 *   direct_grpc conc=C calls=R errors=E rps=X p50_us=Y p99_us=Z mode=M ...
 *
 *   grpcbench --target 127.0.0.1:50051 --conc 32 --seconds 5 [--warmup 1]
 *   grpcbench ... --summarize    Process, then Summarize: what one chatd turn
 *                                asks of the agent when it supports Summarize
 *   grpcbench ... --stream WORDS  streamed Process calls of a WORDS-word
 *                                message, each delta counted and dropped: the
 *                                least a process spends reading deltas with
 *                                gRPC C core and chatd's agent code (the
 *                                anchor of bench.sh's section j; the result
 *                                line adds deltas= and cpu_ms_per_1k=, the
 *                                process's CPU over every delta it read)
 *
 * Latency runs from agent_process() to the last completion (Summarize's,
 * with --summarize), CLOCK_MONOTONIC. Figures are printed, never asserted. */
#include <grpc/grpc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "measure.h"
#include "opts.h"

struct slot {
    uint64_t t_start; /* ns */
    int in_window;    /* started while measuring */
    char reply[256];  /* Process's reply, for Summarize */
};

enum phase { PH_WARMUP, PH_MEASURE, PH_STOP };

static struct {
    agent_client *client;
    int conc, summarize, stream_words;
    const char *message, *model;
    atomic_llong deltas; /* every delta read, warm-up included (the CPU is the run's) */
    _Atomic int phase;
    atomic_int inflight;
    uint64_t t_measure, t_measure_end;
    /* Touched only on the client's one CQ thread (every callback runs
     * there), so no lock. */
    long long done, errors;
    int errors_shown;
    struct latency lat;
    struct slot *slots;
} G;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void record(uint64_t ns) { latency_add(&G.lat, ns); }

static void start_call(struct slot *s);

/* One logical call (Process, or Process + Summarize) of slot s ended. */
static void finish(struct slot *s, int status, const char *details)
{
    if (s->in_window && atomic_load(&G.phase) == PH_MEASURE) {
        G.done++;
        if (status != 0) {
            G.errors++;
            if (G.errors_shown++ < 3)
                fprintf(stderr, "grpcbench: call failed: status %d %s\n", status, details);
        }
        record(now_ns() - s->t_start);
    }
    atomic_fetch_sub(&G.inflight, 1);
    if (atomic_load(&G.phase) != PH_STOP)
        start_call(s);
}

static void on_summary(void *ud, const struct agent_summary_result *res)
{
    finish(ud, res->status, res->status_details);
}

static void on_done(void *ud, const struct agent_result *res)
{
    struct slot *s = ud;
    if (G.summarize && res->status == 0) {
        snprintf(s->reply, sizeof(s->reply), "%.*s", (int)res->text_len, res->text);
        struct agent_summary_request sr = {
            .user_id = "00000000-0000-0000-0000-000000000000",
            .session_id = "00000000-0000-0000-0000-000000000001",
            .model_name = G.model,
            .model_provider = "ollama",
            .previous_summary = "",
            .user_message = G.message,
            .assistant_message = s->reply,
        };
        if (agent_summarize(G.client, &sr, on_summary, s) == 0)
            return;
        finish(s, -1, "agent_summarize could not start");
        return;
    }
    finish(s, res->status, res->status_details);
}

static void on_delta(void *ud, const char *text, size_t len)
{
    (void)ud;
    (void)text;
    (void)len;
    atomic_fetch_add(&G.deltas, 1);
}

static void start_call(struct slot *s)
{
    /* What chatd sends for a first turn on a NEW session (no history). */
    struct agent_request req = {
        .user_id = "00000000-0000-0000-0000-000000000000",
        .session_id = "00000000-0000-0000-0000-000000000001",
        .chat_message = G.message,
        .model_name = G.model,
        .session_prompt = "",
        .chat_summary = "",
        .chat_history = "[]",
        .model_provider = "ollama",
        .balance = 1000000,
    };
    s->in_window = atomic_load(&G.phase) == PH_MEASURE;
    s->t_start = now_ns();
    atomic_fetch_add(&G.inflight, 1);
    agent_call *call = G.stream_words > 0 ? agent_process(G.client, &req, 1, on_delta, on_done, s)
                                          : agent_process(G.client, &req, 0, NULL, on_done, s);
    if (call == NULL) {
        atomic_fetch_sub(&G.inflight, 1);
        fprintf(stderr, "grpcbench: agent_process could not start a call\n");
        return;
    }
    /* on_done may already have run; we need nothing more from the call. */
    agent_call_release(call);
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr,
            "usage: grpcbench --target HOST:PORT [--conc C] [--seconds S] [--warmup S]\n"
            "                 [--summarize] [--stream WORDS] [--message TEXT] [--model NAME]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *target = NULL;
    double seconds = 5, warmup = 1;
    G.conc = 1;
    G.message = "hello from grpcbench";
    G.model = "llama3.1:8b";
    const struct opt opts[] = {
        {"--target", OPT_STR, &target, NULL},
        {"--conc", OPT_INT, &G.conc, NULL},
        {"--seconds", OPT_DOUBLE, &seconds, NULL},
        {"--warmup", OPT_DOUBLE, &warmup, NULL},
        {"--message", OPT_STR, &G.message, NULL},
        {"--model", OPT_STR, &G.model, NULL},
        {"--summarize", OPT_FLAG, &G.summarize, NULL},
        {"--stream", OPT_INT, &G.stream_words, NULL},
        {NULL, OPT_FLAG, NULL, NULL},
    };
    opts_parse(argc, argv, opts, usage);
    if (target == NULL || G.conc < 1 || seconds <= 0 || G.stream_words < 0 ||
        G.stream_words > 10000)
        usage();
    char *words = NULL;
    if (G.stream_words > 0) {
        /* "w1 w2 ...": the echo agent streams it back a word at a time. */
        words = malloc((size_t)G.stream_words * 7 + 1);
        if (words == NULL)
            return 1;
        size_t n = 0;
        for (int i = 1; i <= G.stream_words; i++)
            n += (size_t)sprintf(words + n, "%sw%d", i > 1 ? " " : "", i);
        G.message = words;
    }

    grpc_init();
    G.client = agent_client_create(target, 60);
    if (G.client == NULL || agent_ping(G.client, 5000) != 0) {
        fprintf(stderr, "grpcbench: cannot reach the agent at %s\n", target);
        if (G.client != NULL)
            agent_client_destroy(G.client);
        grpc_shutdown();
        return 1;
    }
    G.slots = calloc((size_t)G.conc, sizeof(*G.slots));
    if (G.slots == NULL)
        return 1;

    atomic_store(&G.phase, warmup > 0 ? PH_WARMUP : PH_MEASURE);
    G.t_measure = now_ns();
    for (int i = 0; i < G.conc; i++)
        start_call(&G.slots[i]);
    if (warmup > 0) {
        sleep_s(warmup);
        G.t_measure = now_ns();
        atomic_store(&G.phase, PH_MEASURE);
    }
    sleep_s(seconds);
    /* Stop before reading the tallies: completions after this point are not
     * counted, so the window is exact. */
    atomic_store(&G.phase, PH_STOP);
    G.t_measure_end = now_ns();
    for (int i = 0; i < 600 && atomic_load(&G.inflight) > 0; i++)
        usleep(10 * 1000);
    /* destroy cancels whatever is left and waits for its callbacks, after
     * which the tallies are ours to read. */
    agent_client_destroy(G.client);
    grpc_shutdown();

    latency_sort(&G.lat);
    double window = (double)(G.t_measure_end - G.t_measure) / 1e9;
    double cpu = measure_cpu_seconds();
    long long deltas = atomic_load(&G.deltas);
    printf("direct_grpc conc=%d calls=%lld errors=%lld rps=%.1f p50_us=%u p99_us=%u max_us=%u"
           " mode=%s cpu_s=%.2f",
           G.conc, G.done, G.errors, window > 0 ? (double)G.done / window : 0,
           latency_pct(&G.lat, 50), latency_pct(&G.lat, 99), latency_pct(&G.lat, 100),
           G.stream_words > 0 ? "stream"
           : G.summarize      ? "process+summarize"
                              : "process",
           cpu);
    if (G.stream_words > 0)
        printf(" deltas=%lld cpu_ms_per_1k=%.2f", deltas,
               deltas > 0 ? cpu * 1e6 / (double)deltas : 0);
    printf("\n");
    free(words);
    latency_free(&G.lat);
    free(G.slots);
    return 0;
}
