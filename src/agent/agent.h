/* agent.h - chatd's asynchronous gRPC client for AI agents (ai_service.proto).
 *
 * Design
 * ------
 * One agent_client owns one insecure channel to "host:port", one completion
 * queue and ONE thread that loops on grpc_completion_queue_next() and
 * dispatches on the event tag. Every call is a small state object whose
 * batches complete on that queue, so thousands of calls can be in flight
 * without a thread each.
 *
 * Callbacks (on_delta, on_done, summary and title on_done) always run on that CQ
 * thread, never on the caller's. They MUST NOT block: while a callback runs
 * no gRPC I/O of this client progresses. Copy what you need and hand it to
 * your own worker pool. A callback may call agent_call_release() and
 * agent_call_cancel() and may start new calls; it must not call
 * agent_client_destroy().
 *
 * Call lifetime: agent_process() returns a call holding two references, one
 * for the caller and one held by the client until every gRPC batch on the
 * call has completed and on_done has returned. The caller drops its own with
 * agent_call_release() whenever it likes (before, inside or after on_done);
 * memory is freed when both are gone. on_done is called exactly once for
 * every call that agent_process() returned.
 *
 * Fall-backs: when an agent answers UNIMPLEMENTED to ProcessStream before
 * sending any chunk, the call is transparently re-issued as unary Process and
 * its whole reply is reported as one delta; the client remembers this and
 * asks with Process directly from then on. When an agent answers
 * UNIMPLEMENTED to Summarize (or Title), that status is reported and
 * remembered: later calls complete at once with UNIMPLEMENTED without a
 * round trip.
 *
 * Errors are reported as gRPC status codes (grpc_status_code, 0 = OK) with
 * details: agent down → UNAVAILABLE, deadline (timeout_seconds per call) →
 * DEADLINE_EXCEEDED, agent_call_cancel() → CANCELLED. No mapping to chatd's
 * error codes happens here.
 *
 * gRPC initialisation: the caller calls grpc_init() before
 * agent_client_create() and grpc_shutdown() after agent_client_destroy(). */
#ifndef CHATD_AGENT_H
#define CHATD_AGENT_H

#include <stddef.h>

#include "lib/util.h"

/* The statuses a caller tells apart: gRPC's own numbers (grpc_status_code;
 * agent.c checks that they agree), so that no caller declares them again.
 * Any other non-zero status is a failure of the agent. */
enum agent_status {
    AGENT_OK = 0,
    AGENT_CANCELLED = 1,      /* agent_call_cancel() */
    AGENT_UNIMPLEMENTED = 12, /* the agent lacks the method */
};

typedef struct agent_client agent_client;
typedef struct agent_call agent_call;

/* Copied (serialized) by agent_process(): the caller may free it on return. */
struct agent_request {
    const char *user_id;
    const char *session_id;
    const char *chat_message;
    const char *model_name;
    const char *session_prompt;
    const char *chat_summary;
    const char *chat_history;   /* JSON array of {"role","content"} */
    const char *model_provider; /* "openai" or "ollama" */
    const char *const *file_names;
    size_t n_files;
    double balance; /* dollars */
};

/* Every pointer is valid only during the callback. */
struct agent_result {
    int status;                 /* enum agent_status, or another gRPC failure */
    const char *status_details; /* never NULL, "" when OK */
    const char *text;           /* whole reply so far, NUL-terminated */
    size_t text_len;
    /* Dollars as exact decimal text (util_money_text), "0" unless the
     * agent reported a cost; token counts 0 unless reported. */
    char cost[UTIL_MONEY_MAX];
    unsigned prompt_tokens, completion_tokens;
};

struct agent_summary_request {
    const char *user_id;
    const char *session_id;
    const char *model_name;
    const char *model_provider;
    const char *previous_summary;
    const char *user_message;
    const char *assistant_message;
};

struct agent_summary_result {
    int status;
    const char *status_details;
    const char *summary; /* NUL-terminated, "" unless status is OK */
    size_t summary_len;
    char cost[UTIL_MONEY_MAX];
};

struct agent_title_request {
    const char *user_id;
    const char *session_id;
    const char *model_name;
    const char *model_provider;
    const char *user_message; /* the session's first turn */
    const char *assistant_message;
};

struct agent_title_result {
    int status;
    const char *status_details;
    const char *title; /* as the agent sent it (uncleaned), "" unless OK */
    char cost[UTIL_MONEY_MAX];
};

typedef void (*agent_delta_fn)(void *ud, const char *text, size_t len);
typedef void (*agent_done_fn)(void *ud, const struct agent_result *res);
typedef void (*agent_summary_fn)(void *ud, const struct agent_summary_result *res);
typedef void (*agent_title_fn)(void *ud, const struct agent_title_result *res);

/* Returns NULL on error (logged). timeout_seconds is every call's deadline. */
agent_client *agent_client_create(const char *target, int timeout_seconds);

/* Cancels every outstanding call, waits until their on_done callbacks have
 * run, then tears down the CQ thread, the queue and the channel. Calls the
 * caller still holds stay valid for agent_call_release() only. Never call it
 * from a callback. */
void agent_client_destroy(agent_client *c);

/* stream = 0: unary Process, on_delta is never called. stream = 1:
 * ProcessStream, on_delta (may be NULL) gets each piece of text in order.
 * Returns NULL (and never calls on_done) when the call cannot be started:
 * client shutting down, out of memory. */
agent_call *agent_process(agent_client *c, const struct agent_request *req, int stream,
                          agent_delta_fn on_delta, agent_done_fn on_done, void *ud);

/* Thread-safe, at any time until agent_call_release(). If on_done has not
 * run yet, it will report CANCELLED with the text received so far. */
void agent_call_cancel(agent_call *call);

/* Drops the caller's reference. The call must not be used afterwards. */
void agent_call_release(agent_call *call);

/* Unary Summarize. Returns 0 when on_done will be called exactly once, -1
 * (on_done never called) when the call cannot be started. */
int agent_summarize(agent_client *c, const struct agent_summary_request *req,
                    agent_summary_fn on_done, void *ud);

/* Unary Title, with its own deadline (a title is worth less waiting than
 * a reply). Returns 0 when on_done will be called exactly once, -1 when
 * the call cannot be started. UNIMPLEMENTED is remembered like Summarize's. */
int agent_title(agent_client *c, const struct agent_title_request *req, int timeout_seconds,
                agent_title_fn on_done, void *ud);

/* 1 until the agent answered UNIMPLEMENTED to that method, then 0. */
int agent_client_supports_stream(agent_client *c);
int agent_client_supports_summary(agent_client *c);
int agent_client_supports_title(agent_client *c);

/* Synchronous, for health checks and tests (do not call from a callback):
 * asks the channel to connect and waits up to timeout_ms for READY.
 * Returns 0 when ready, -1 otherwise. */
int agent_ping(agent_client *c, int timeout_ms);

#endif
