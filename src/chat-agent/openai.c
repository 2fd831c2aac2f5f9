/* openai.c - the "openai" back end: any OpenAI-compatible
 * POST {OPENAI_BASE_URL}/chat/completions server (OpenAI, Ollama, vLLM,
 * llama.cpp) through libcurl.
 *
 * curl_easy_perform() blocks, so calls are queued to a small pool of worker
 * threads (AGENT_WORKERS), each with its own easy handle so connections to
 * the model server are kept alive between calls. Process and ProcessStream
 * both ask for "stream": true and feed the server-sent events through sse.c;
 * every delta is pushed to the call as it arrives (ProcessStream forwards
 * it, Process sends the whole text at the end). A progress callback aborts
 * the transfer when chatd cancels the call or the agent shuts down. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat_agent.h"
#include "lib/log.h"
#include "sse.h"

#define OA_MAX_BODY (16 * 1024 * 1024) /* of a reply, streamed or not */
#define OA_MAX_ERROR_DETAIL 300

struct oa_job {
    struct ca_call *k;
    struct oa_job *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct oa_job *head, *tail;
    pthread_t *threads;
    int n_threads;
    atomic_int stopping;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* One transfer. */
struct oa_ctx {
    struct ca_call *k;
    CURL *curl;
    int checked; /* response code and content type looked at */
    int is_sse;
    struct sse_parser sse;
    char *body; /* non-SSE body: a plain completion or an error */
    size_t body_len;
    size_t out_bytes;
    long prompt_tokens, completion_tokens;
    int have_usage;
    int done;        /* saw data: [DONE] */
    char error[256]; /* set by the event parser */
};

/* ---------------------------------------------------------------- requests */

static void oa_add_message(json_t *msgs, const char *role, const char *content, size_t *in_bytes)
{
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string(role));
    json_t *c = json_string(content);
    json_object_set_new(m, "content", c ? c : json_string(""));
    json_array_append_new(msgs, m);
    *in_bytes += strlen(content);
}

static const char *oa_model(const char *requested)
{
    return requested && *requested ? requested : ca_cfg.openai_model;
}

/* messages: system (prompt + summary), history, then the new message. */
static json_t *oa_chat_body(const AiService__Request *r, size_t *in_bytes, const char **err)
{
    const char *model = oa_model(r->model_name);
    if (!model || !*model) {
        *err = "no model_name in the request and no OPENAI_MODEL";
        return NULL;
    }
    json_t *hist = NULL;
    if (*r->chat_history) {
        json_error_t jerr;
        hist = json_loads(r->chat_history, 0, &jerr);
        if (!hist || !json_is_array(hist)) {
            json_decref(hist);
            *err = "chat_history is not a JSON array";
            return NULL;
        }
    }
    json_t *msgs = json_array();
    char *system = NULL;
    if (*r->chat_summary) {
        if (asprintf(&system, "%s%sSummary of earlier conversation: %s", r->session_prompt,
                     *r->session_prompt ? "\n\n" : "", r->chat_summary) < 0)
            system = NULL;
    } else if (*r->session_prompt) {
        system = strdup(r->session_prompt);
    }
    if (system)
        oa_add_message(msgs, "system", system, in_bytes);
    free(system);

    size_t i;
    json_t *e;
    json_array_foreach(hist, i, e)
    {
        const char *role = json_string_value(json_object_get(e, "role"));
        const char *content = json_string_value(json_object_get(e, "content"));
        if (!role || !content)
            continue; /* not {role, content}: nothing a model could use */
        if (strcmp(role, "file") == 0) {
            char *s = NULL;
            if (asprintf(&s, "[file] %s", content) >= 0) {
                oa_add_message(msgs, "user", s, in_bytes);
                free(s);
            }
        } else if (strcmp(role, "assistant") == 0 || strcmp(role, "system") == 0) {
            oa_add_message(msgs, role, content, in_bytes);
        } else {
            oa_add_message(msgs, "user", content, in_bytes);
        }
    }
    json_decref(hist);
    oa_add_message(msgs, "user", r->chat_message, in_bytes);

    json_t *body = json_object();
    json_object_set_new(body, "model", json_string(model));
    json_object_set_new(body, "messages", msgs);
    json_object_set_new(body, "stream", json_true());
    json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    return body;
}

/* A one-shot completion beside the conversation (Summarize, Title): a
 * system instruction and one user message, not streamed. Takes user. */
static json_t *oa_side_body(const char *model_name, const char *system, char *user, int max_tokens,
                            size_t *in_bytes, const char **err)
{
    const char *model = oa_model(model_name);
    if (!model || !*model) {
        free(user);
        *err = "no model_name in the request and no OPENAI_MODEL";
        return NULL;
    }
    json_t *msgs = json_array();
    oa_add_message(msgs, "system", system, in_bytes);
    oa_add_message(msgs, "user", user, in_bytes);
    free(user);
    json_t *body = json_object();
    json_object_set_new(body, "model", json_string(model));
    json_object_set_new(body, "messages", msgs);
    json_object_set_new(body, "stream", json_false());
    if (max_tokens > 0)
        json_object_set_new(body, "max_tokens", json_integer(max_tokens));
    return body;
}

static json_t *oa_summary_body(const AiService__SummaryRequest *r, size_t *in_bytes,
                               const char **err)
{
    char *user = NULL;
    if (asprintf(&user,
                 "Previous summary:\n%s\n\nNew turn:\nUser: %s\nAssistant: %s\n\n"
                 "Write the updated summary.",
                 *r->previous_summary ? r->previous_summary : "(none)", r->user_message,
                 r->assistant_message) < 0) {
        *err = "out of memory";
        return NULL;
    }
    return oa_side_body(r->model_name,
                        "You maintain a short running summary of a conversation between a user "
                        "and an assistant, keeping names, facts and decisions. Reply with the "
                        "updated summary only.",
                        user, 0, in_bytes, err);
}

static json_t *oa_title_body(const AiService__TitleRequest *r, size_t *in_bytes, const char **err)
{
    char *user = NULL;
    if (asprintf(&user, "User: %s\nAssistant: %s", r->user_message, r->assistant_message) < 0) {
        *err = "out of memory";
        return NULL;
    }
    return oa_side_body(r->model_name,
                        "Give the conversation below a title of at most six words, in the "
                        "language of the user. Reply with the title only: no quotes, no "
                        "punctuation at the end.",
                        user, 32, in_bytes, err);
}

/* ---------------------------------------------------------------- replies */

static void oa_take_usage(struct oa_ctx *x, json_t *usage)
{
    if (!json_is_object(usage))
        return;
    json_t *p = json_object_get(usage, "prompt_tokens");
    json_t *c = json_object_get(usage, "completion_tokens");
    if (json_is_integer(p) && json_is_integer(c)) {
        x->prompt_tokens = (long)json_integer_value(p);
        x->completion_tokens = (long)json_integer_value(c);
        x->have_usage = 1;
    }
}

static void oa_take_error(struct oa_ctx *x, json_t *o)
{
    json_t *e = json_object_get(o, "error");
    if (!e)
        return;
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!msg)
        msg = json_string_value(e);
    snprintf(x->error, sizeof(x->error), "openai: %s", msg ? msg : "error");
}

static void oa_push(struct oa_ctx *x, const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return;
    x->out_bytes += n;
    ca_call_push(x->k, s, n);
}

static int oa_on_event(void *ud, const char *data, size_t len)
{
    struct oa_ctx *x = ud;
    if (strcmp(data, "[DONE]") == 0) {
        x->done = 1;
        return 0;
    }
    json_error_t jerr;
    json_t *o = json_loadb(data, len, 0, &jerr);
    if (!o) {
        snprintf(x->error, sizeof(x->error), "openai: malformed event: %s", jerr.text);
        return 1;
    }
    oa_take_error(x, o);
    json_t *choice = json_array_get(json_object_get(o, "choices"), 0);
    const char *delta =
        json_string_value(json_object_get(json_object_get(choice, "delta"), "content"));
    if (delta)
        oa_push(x, delta);
    oa_take_usage(x, json_object_get(o, "usage"));
    json_decref(o);
    return x->error[0] ? 1 : 0;
}

static size_t oa_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct oa_ctx *x = ud;
    size_t n = size * nmemb;
    if (!x->checked) {
        long code = 0;
        char *ct = NULL;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(x->curl, CURLINFO_CONTENT_TYPE, &ct);
        x->checked = 1;
        x->is_sse = code < 300 && ct && strncasecmp(ct, "text/event-stream", 17) == 0;
    }
    if (x->is_sse)
        return sse_feed(&x->sse, ptr, n) == 0 ? n : 0;
    if (x->body_len + n > OA_MAX_BODY)
        return 0;
    char *b = realloc(x->body, x->body_len + n + 1);
    if (!b)
        return 0;
    x->body = b;
    memcpy(x->body + x->body_len, ptr, n);
    x->body_len += n;
    x->body[x->body_len] = '\0';
    return n;
}

static int oa_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct oa_ctx *x = ud;
    return atomic_load(&pool.stopping) || ca_call_is_dead(x->k);
}

/* A plain (non-streamed) completion: the Summarize answer, or a server that
 * ignored "stream": true. */
static void oa_take_plain(struct oa_ctx *x)
{
    json_error_t jerr;
    json_t *o = json_loadb(x->body ? x->body : "", x->body_len, 0, &jerr);
    if (!o) {
        snprintf(x->error, sizeof(x->error), "openai: malformed reply: %s", jerr.text);
        return;
    }
    oa_take_error(x, o);
    json_t *choice = json_array_get(json_object_get(o, "choices"), 0);
    const char *text =
        json_string_value(json_object_get(json_object_get(choice, "message"), "content"));
    if (text)
        oa_push(x, text);
    else if (!x->error[0])
        snprintf(x->error, sizeof(x->error), "openai: reply without choices[0].message.content");
    oa_take_usage(x, json_object_get(o, "usage"));
    json_decref(o);
}

static void oa_run(CURL *curl, struct ca_call *k)
{
    enum ca_method m = ca_call_method(k);
    size_t in_bytes = 0;
    const char *err = NULL;
    json_t *jbody = m == CA_SUMMARIZE ? oa_summary_body(ca_call_summary_request(k), &in_bytes, &err)
                    : m == CA_TITLE   ? oa_title_body(ca_call_title_request(k), &in_bytes, &err)
                                      : oa_chat_body(ca_call_request(k), &in_bytes, &err);
    if (!jbody) {
        ca_call_finish(k, GRPC_STATUS_INVALID_ARGUMENT, err, 0);
        return;
    }
    char *body = json_dumps(jbody, JSON_COMPACT);
    json_decref(jbody);
    char *url = NULL;
    size_t blen = strlen(ca_cfg.openai_base_url);
    int slash = blen > 0 && ca_cfg.openai_base_url[blen - 1] == '/';
    char *auth = NULL;
    struct curl_slist *hdrs = NULL;
    struct oa_ctx x;
    memset(&x, 0, sizeof(x));
    x.k = k;
    x.curl = curl;
    sse_init(&x.sse, oa_on_event, &x, OA_MAX_BODY);
    char errbuf[CURL_ERROR_SIZE] = "";

    if (!body ||
        asprintf(&url, "%s%schat/completions", ca_cfg.openai_base_url, slash ? "" : "/") < 0) {
        url = NULL;
        ca_call_finish(k, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", 0);
        goto out;
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: text/event-stream, application/json");
    if (ca_cfg.openai_api_key && *ca_cfg.openai_api_key &&
        asprintf(&auth, "Authorization: Bearer %s", ca_cfg.openai_api_key) >= 0)
        hdrs = curl_slist_append(hdrs, auth);

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, oa_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, oa_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)ca_cfg.openai_timeout_seconds);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);

    CURLcode rc = curl_easy_perform(curl);
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK && x.is_sse)
        sse_finish(&x.sse);

    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        ca_call_finish(k, GRPC_STATUS_CANCELLED, "cancelled", 0);
    } else if (x.error[0]) {
        ca_call_finish(k, GRPC_STATUS_INTERNAL, x.error, 0);
    } else if (rc != CURLE_OK) {
        char d[CURL_ERROR_SIZE + 64];
        snprintf(d, sizeof(d), "openai: %s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        ca_call_finish(k, GRPC_STATUS_INTERNAL, d, 0);
    } else if (code < 200 || code >= 300) {
        char d[OA_MAX_ERROR_DETAIL + 64];
        snprintf(d, sizeof(d), "openai: HTTP %ld: %.*s", code, OA_MAX_ERROR_DETAIL,
                 x.body ? x.body : "");
        ca_call_finish(k, GRPC_STATUS_INTERNAL, d, 0);
    } else {
        if (!x.is_sse)
            oa_take_plain(&x);
        if (x.error[0]) {
            ca_call_finish(k, GRPC_STATUS_INTERNAL, x.error, 0);
        } else {
            double cost = x.have_usage ? x.prompt_tokens / 1000.0 * ca_cfg.price_in_per_1k +
                                             x.completion_tokens / 1000.0 * ca_cfg.price_out_per_1k
                                       : ca_cost(in_bytes, x.out_bytes);
            if (x.have_usage && x.prompt_tokens >= 0 && x.completion_tokens >= 0)
                ca_call_set_tokens(k, (uint32_t)x.prompt_tokens, (uint32_t)x.completion_tokens);
            ca_call_finish(k, GRPC_STATUS_OK, NULL, cost);
        }
    }
out:
    curl_slist_free_all(hdrs);
    free(auth);
    free(url);
    free(body);
    free(x.body);
    sse_free(&x.sse);
}

/* ---------------------------------------------------------------- pool */

static void *oa_worker(void *arg)
{
    (void)arg;
    CURL *curl = curl_easy_init();
    for (;;) {
        pthread_mutex_lock(&pool.lock);
        while (!pool.head && !atomic_load(&pool.stopping))
            pthread_cond_wait(&pool.cond, &pool.lock);
        struct oa_job *j = pool.head;
        if (!j) { /* stopping and nothing left */
            pthread_mutex_unlock(&pool.lock);
            break;
        }
        pool.head = j->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.lock);

        if (!curl || atomic_load(&pool.stopping))
            ca_call_finish(j->k, GRPC_STATUS_UNAVAILABLE,
                           curl ? "agent shutting down" : "curl_easy_init failed", 0);
        else if (!ca_call_is_dead(j->k))
            oa_run(curl, j->k);
        ca_call_unref(j->k);
        free(j);
    }
    if (curl)
        curl_easy_cleanup(curl);
    return NULL;
}

int openai_start(int workers)
{
    pool.threads = calloc((size_t)workers, sizeof(*pool.threads));
    if (!pool.threads)
        return -1;
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&pool.threads[i], NULL, oa_worker, NULL) != 0)
            return -1;
        pthread_setname_np(pool.threads[i], "agent-openai");
        pool.n_threads++;
    }
    return 0;
}

void openai_handle(struct ca_call *k)
{
    struct oa_job *j = atomic_load(&pool.stopping) ? NULL : malloc(sizeof(*j));
    if (!j) {
        ca_call_finish(k, GRPC_STATUS_UNAVAILABLE, "agent shutting down or out of memory", 0);
        ca_call_unref(k);
        return;
    }
    j->k = k;
    j->next = NULL;
    pthread_mutex_lock(&pool.lock);
    if (pool.tail)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
}

/* Running transfers abort (progress callback), queued calls are answered
 * UNAVAILABLE, then the workers are joined. */
void openai_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    atomic_store(&pool.stopping, 1);
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.n_threads; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.n_threads = 0;
}
