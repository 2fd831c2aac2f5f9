/* chat_agent.h - the reference AI agent's shared declarations.
 *
 * chat-agent is a gRPC C core server for ai_service.AIService. Threads:
 *  - main: the completion-queue loop (accepts calls, completes batches);
 *    it never sleeps nor does blocking work;
 *  - timer: a min-heap of due callbacks; the echo back end uses it to play
 *    a slow model without a thread per call;
 *  - openai workers: a small pool that blocks in libcurl;
 *  - signals: sigwait() for SIGTERM/SIGINT, then starts the shutdown.
 *
 * A server call (ca_call) is produced by one back end at a time: it pushes
 * text with ca_call_push() and ends with ca_call_finish(), from any thread.
 * call.c turns that into gRPC batches, one SEND_MESSAGE in flight at a time,
 * coalescing text pushed while a send is out. */
#ifndef CHAT_AGENT_H
#define CHAT_AGENT_H

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <stdint.h>

#include "ai_service.pb-c.h"

enum ca_method { CA_PROCESS = 0, CA_STREAM, CA_SUMMARIZE, CA_TITLE, CA_N_METHODS };

/* Which cost fields a reply fills: an older agent knows only the float. */
enum ca_cost_fields { CA_COST_BOTH = 0, CA_COST_FLOAT, CA_COST_DOUBLE };

struct ca_config {
    const char *host;
    int port;
    const char *backend; /* "echo" or "openai" */
    int delay_ms;
    int delta_ms;           /* AGENT_DELTA_MS: > 0, one streamed piece every delta_ms instead */
    int stamp_deltas;       /* AGENT_STAMP_DELTAS=1: each piece ends "@<unix us> " (benchmarks) */
    int delta_phase_random; /* AGENT_DELTA_PHASE=random: each stream offset within delta_ms */
    const char *record_file;
    int disabled[CA_N_METHODS];
    const char *fail_mode;   /* "", "internal" or "funds" */
    const char *fail_models; /* AGENT_FAIL_MODELS: comma list, or NULL */
    const char *openai_base_url;
    const char *openai_api_key;
    const char *openai_model; /* used when a request names no model */
    int openai_timeout_seconds;
    int workers; /* openai worker threads */
    double price_in_per_1k;
    double price_out_per_1k;
    enum ca_cost_fields cost_fields; /* AGENT_COST_FIELDS */
    double *costs;                   /* AGENT_COSTS: replies cost these in turn */
    int n_costs;
};

/* ---- config.c: read once by ca_config_load() (0, or -1 after saying
 * why on stderr), then read-only. */
extern struct ca_config ca_cfg;
int ca_config_load(void);

const char *ca_method_name(enum ca_method m);
/* 1 when a call of method m for model (NULL: none named) is to fail:
 * AGENT_FAIL_MODE fails every reply and title, AGENT_FAIL_MODELS only the
 * replies of the models it names; summaries never fail. */
int ca_fails(enum ca_method m, const char *model);
uint64_t ca_now_ms(void); /* CLOCK_MONOTONIC */

/* Token estimate of a text: bytes / 3. */
size_t ca_tokens(size_t bytes);
/* The cost of a reply: the next of AGENT_COSTS when set, else the token
 * estimates at AGENT_PRICE_*. */
double ca_cost(size_t in_bytes, size_t out_bytes);

/* ---- call.c */
struct ca_call;

/* Decodes the request (ca_call_request() is NULL when it is malformed) and
 * returns the back end's reference. */
struct ca_call *ca_call_accept(grpc_call *grpc, enum ca_method m, grpc_byte_buffer *payload);
enum ca_method ca_call_method(const struct ca_call *k);
const AiService__Request *ca_call_request(const struct ca_call *k);
const AiService__SummaryRequest *ca_call_summary_request(const struct ca_call *k);
const AiService__TitleRequest *ca_call_title_request(const struct ca_call *k);
/* Token counts reported with the reply (Process, ProcessStream). */
void ca_call_set_tokens(struct ca_call *k, uint32_t prompt, uint32_t completion);
int ca_call_is_dead(struct ca_call *k);
void ca_call_push(struct ca_call *k, const char *text, size_t len);
void ca_call_finish(struct ca_call *k, grpc_status_code status, const char *details, double cost);
/* The last text and the end in one go: one final chunk instead of two. */
void ca_call_finish_text(struct ca_call *k, const char *text, size_t len, grpc_status_code status,
                         const char *details, double cost);
void ca_call_ref(struct ca_call *k);
void ca_call_unref(struct ca_call *k);
void ca_call_on_sent(struct ca_call *k, int success);
void ca_call_on_closed(struct ca_call *k);
/* Answers a call to a method we do not know with UNIMPLEMENTED. */
void ca_call_reject_unknown(grpc_call *grpc);
void ca_reject_done(void *ptr); /* CA_TAG_UNKNOWN_DONE */

/* Tags on the CQ start with their kind. */
enum ca_tag_kind {
    CA_TAG_REQUEST,
    CA_TAG_SEND,
    CA_TAG_CLOSED,
    CA_TAG_UNKNOWN_DONE,
    CA_TAG_SHUTDOWN
};
struct ca_tag {
    enum ca_tag_kind kind;
    void *ptr;
};

/* ---- timer.c: fn(arg, 1) when due, fn(arg, 0) when dropped at shutdown. */
typedef void (*ca_timer_fn)(void *arg, int fire);
int ca_timer_start(void);
void ca_timer_add(uint64_t due_ms, ca_timer_fn fn, void *arg);
void ca_timer_stop(void);

/* ---- record.c */
int ca_record_open(const char *path);
void ca_record_request(enum ca_method m, const AiService__Request *r);
void ca_record_summary(const AiService__SummaryRequest *r);
void ca_record_title(const AiService__TitleRequest *r);
void ca_record_close(void);

/* ---- echo.c: takes over the caller's reference to k. */
void echo_handle(struct ca_call *k);

/* ---- openai.c: takes over the caller's reference to k. */
int openai_start(int workers);
void openai_handle(struct ca_call *k);
void openai_stop(void);

#endif
