/* main.c - chat-agent: the reference AI agent for chatd, a gRPC C core server
 * for ai_service.AIService (Process, ProcessStream, Summarize, Title) with an
 * "echo" back end for tests and benchmarks and an "openai" one for any
 * OpenAI-compatible server (Ollama included). docs/AGENT.md lists the
 * environment variables.
 *
 * This file: configuration, the server, the completion-queue loop and the
 * shutdown. The CQ thread only accepts calls and completes batches; back ends
 * work on the timer thread (echo) or on worker threads (openai). */
#include <curl/curl.h>
#include <errno.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_agent.h"
#include "lib/log.h"

#define CA_SLOTS_PER_METHOD 256 /* calls requested from gRPC ahead of time */
#define CA_SLOTS_UNKNOWN 4
#define CA_SHUTDOWN_GRACE_MS 2000 /* in-flight calls may finish, then cancel */
#define CA_MAX_MESSAGE (64 * 1024 * 1024)

static const char *const method_paths[CA_N_METHODS] = {
    "/ai_service.AIService/Process", "/ai_service.AIService/ProcessStream",
    "/ai_service.AIService/Summarize", "/ai_service.AIService/Title"};

/* One outstanding grpc_server_request_(registered_)call; re-posted after
 * each call it delivers. method == CA_N_METHODS: any unregistered method. */
struct ca_slot {
    struct ca_tag tag;
    enum ca_method method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
};

static grpc_server *server;
static grpc_completion_queue *cq;
static void *registered[CA_N_METHODS];
static atomic_int stop_requests; /* signals received */

/* ---------------------------------------------------------------- calls */

static int ca_post(struct ca_slot *s)
{
    grpc_call_error err;
    s->call = NULL;
    s->payload = NULL;
    grpc_metadata_array_init(&s->md);
    if (s->method == CA_N_METHODS) {
        grpc_call_details_init(&s->details);
        err = grpc_server_request_call(server, &s->call, &s->details, &s->md, cq, cq, &s->tag);
    } else {
        err =
            grpc_server_request_registered_call(server, registered[s->method], &s->call,
                                                &s->deadline, &s->md, &s->payload, cq, cq, &s->tag);
    }
    if (err != GRPC_CALL_OK) {
        log_error("chat-agent: request call: %s", grpc_call_error_to_string(err));
        return -1;
    }
    return 0;
}

static void ca_slot_clear(struct ca_slot *s)
{
    grpc_metadata_array_destroy(&s->md);
    if (s->method == CA_N_METHODS)
        grpc_call_details_destroy(&s->details);
}

static void ca_dispatch(enum ca_method m, grpc_call *call, grpc_byte_buffer *payload)
{
    struct ca_call *k = ca_call_accept(call, m, payload);
    if (payload)
        grpc_byte_buffer_destroy(payload);
    if (!k) {
        grpc_call_cancel(call, NULL);
        grpc_call_unref(call);
        return;
    }
    const AiService__Request *r = ca_call_request(k);
    const AiService__SummaryRequest *sr = ca_call_summary_request(k);
    const AiService__TitleRequest *tr = ca_call_title_request(k);
    if (m == CA_SUMMARIZE ? !sr : m == CA_TITLE ? !tr : !r) {
        ca_call_finish(k, GRPC_STATUS_INVALID_ARGUMENT, "malformed request", 0);
        ca_call_unref(k);
        return;
    }
    if (m == CA_SUMMARIZE)
        ca_record_summary(sr);
    else if (m == CA_TITLE)
        ca_record_title(tr);
    else
        ca_record_request(m, r);
    log_debug("chat-agent: %s session=%s", ca_method_name(m),
              m == CA_SUMMARIZE ? sr->session_id
              : m == CA_TITLE   ? tr->session_id
                                : r->session_id);
    if (ca_cfg.disabled[m]) {
        ca_call_finish(k, GRPC_STATUS_UNIMPLEMENTED, "disabled by AGENT_DISABLE", 0);
        ca_call_unref(k);
    } else if (ca_fails(m, r != NULL ? r->model_name : NULL)) {
        if (strcmp(ca_cfg.fail_mode, "funds") == 0)
            ca_call_finish(k, GRPC_STATUS_UNAVAILABLE, "Insufficient funds", 0);
        else /* "internal", or AGENT_FAIL_MODELS alone */
            ca_call_finish(k, GRPC_STATUS_INTERNAL, "model call failed", 0);
        ca_call_unref(k);
    } else if (strcmp(ca_cfg.backend, "openai") == 0) {
        openai_handle(k);
    } else {
        echo_handle(k);
    }
}

static void ca_on_request(struct ca_slot *s, int success, int shutting_down)
{
    if (!success) { /* the server is shutting down */
        ca_slot_clear(s);
        free(s);
        return;
    }
    grpc_call *call = s->call;
    grpc_byte_buffer *payload = s->payload;
    enum ca_method m = s->method;
    ca_slot_clear(s);
    if (shutting_down || ca_post(s) != 0)
        free(s);
    if (m == CA_N_METHODS)
        ca_call_reject_unknown(call);
    else
        ca_dispatch(m, call, payload);
}

/* ---------------------------------------------------------------- signals */

static void *ca_signal_main(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) == 0)
            atomic_fetch_add(&stop_requests, 1);
    }
    return NULL;
}

/* ---------------------------------------------------------------- main */

/* The server and its completion queue, listening on HOST:PORT: the port,
 * or 0 (logged; everything undone). */
static int ca_listen(void)
{
    grpc_arg args[1];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = CA_MAX_MESSAGE;
    grpc_channel_args chargs = {1, args};
    server = grpc_server_create(&chargs, NULL);
    for (int m = 0; m < CA_N_METHODS; m++)
        registered[m] = grpc_server_register_method(server, method_paths[m], NULL,
                                                    GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);

    char addr[300];
    int v6 = strchr(ca_cfg.host, ':') != NULL;
    snprintf(addr, sizeof(addr), "%s%s%s:%d", v6 ? "[" : "", ca_cfg.host, v6 ? "]" : "",
             ca_cfg.port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        fprintf(stderr, "chat-agent: cannot listen on %s\n", addr);
        grpc_server_destroy(server);
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(cq);
        return 0;
    }
    grpc_server_start(server);
    return port;
}

/* Requests waiting for calls: CA_SLOTS_PER_METHOD per method, and some
 * for unknown methods. 0, or -1 when out of memory. */
static int ca_post_slots(void)
{
    for (int m = 0; m <= CA_N_METHODS; m++) {
        int n = m == CA_N_METHODS ? CA_SLOTS_UNKNOWN : CA_SLOTS_PER_METHOD;
        for (int i = 0; i < n; i++) {
            struct ca_slot *s = calloc(1, sizeof(*s));
            if (!s)
                return -1;
            s->tag.kind = CA_TAG_REQUEST;
            s->tag.ptr = s;
            s->method = (enum ca_method)m;
            if (ca_post(s) != 0)
                return -1;
        }
    }
    return 0;
}

/* Stops the back ends' work (the echo timers, the OpenAI workers). */
static void ca_stop_backends(int openai)
{
    ca_timer_stop();
    if (openai)
        openai_stop();
}

/* The completion queue until the server has shut down: calls, then on
 * SIGTERM a graceful shutdown, cut short after CA_SHUTDOWN_GRACE_MS or at
 * a second signal. */
static void ca_serve(int openai)
{
    struct ca_tag shutdown_tag = {CA_TAG_SHUTDOWN, NULL};
    int shutting_down = 0, cancelled_all = 0, server_gone = 0;
    uint64_t shutdown_at = 0;
    for (;;) {
        gpr_timespec dl =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(cq, dl, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            struct ca_tag *t = ev.tag;
            switch (t->kind) {
            case CA_TAG_REQUEST:
                ca_on_request(t->ptr, ev.success, shutting_down);
                break;
            case CA_TAG_SEND:
                ca_call_on_sent(t->ptr, ev.success);
                break;
            case CA_TAG_CLOSED:
                ca_call_on_closed(t->ptr);
                break;
            case CA_TAG_UNKNOWN_DONE:
                ca_reject_done(t->ptr);
                break;
            case CA_TAG_SHUTDOWN:
                server_gone = 1;
                break;
            }
        }
        int stops = atomic_load(&stop_requests);
        if (stops > 0 && !shutting_down) {
            log_info("chat-agent: shutting down");
            grpc_server_shutdown_and_notify(server, cq, &shutdown_tag);
            shutting_down = 1;
            shutdown_at = ca_now_ms();
        }
        /* After the grace period (or a second signal) stop waiting for
         * in-flight calls: cancel them and drop the back ends' work. */
        if (shutting_down && !cancelled_all && !server_gone &&
            (stops > 1 || ca_now_ms() - shutdown_at > CA_SHUTDOWN_GRACE_MS)) {
            grpc_server_cancel_all_calls(server);
            ca_stop_backends(openai);
            cancelled_all = 1;
        }
        if (server_gone) {
            ca_stop_backends(openai);
            grpc_server_destroy(server);
            server = NULL;
            grpc_completion_queue_shutdown(cq);
            server_gone = 0;
            cancelled_all = 1;
        }
    }
}

int main(void)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    /* Blocked before any thread exists, so only ca_signal_main sees them. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (ca_config_load() != 0)
        return 2;
    if (ca_cfg.record_file && ca_record_open(ca_cfg.record_file) != 0) {
        fprintf(stderr, "chat-agent: cannot open AGENT_RECORD_FILE %s\n", ca_cfg.record_file);
        return 2;
    }
    int openai = strcmp(ca_cfg.backend, "openai") == 0;
    if (openai && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "chat-agent: curl_global_init failed\n");
        return 1;
    }

    grpc_init();
    int port = ca_listen();
    if (port == 0) {
        grpc_shutdown();
        return 1;
    }
    if (ca_timer_start() != 0 || (openai && openai_start(ca_cfg.workers) != 0)) {
        fprintf(stderr, "chat-agent: cannot start threads\n");
        return 1;
    }
    if (ca_post_slots() != 0)
        return 1;
    pthread_t sig_thread;
    pthread_create(&sig_thread, NULL, ca_signal_main, &set);
    pthread_detach(sig_thread);

    fprintf(stderr, "chat-agent listening on %s:%d backend=%s\n", ca_cfg.host, port,
            ca_cfg.backend);
    fflush(stderr);

    ca_serve(openai);
    grpc_completion_queue_destroy(cq);
    ca_record_close();
    grpc_shutdown();
    if (openai)
        curl_global_cleanup();
    fprintf(stderr, "chat-agent stopped\n");
    return 0;
}
