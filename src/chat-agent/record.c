/* record.c - AGENT_RECORD_FILE: one JSON line per received request with
 * every field of it, so integration tests can check what chatd sent.
 *
 * Each line is written with one write(2) on an O_APPEND descriptor, under a
 * lock, so lines from concurrent calls never interleave. A reader meanwhile
 * may still see the last line cut short (a read of a regular file can see
 * part of a concurrent write): tests read up to the last newline. */
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_agent.h"
#include "lib/log.h"

static int rec_fd = -1;
static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;

int ca_record_open(const char *path)
{
    rec_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return rec_fd < 0 ? -1 : 0;
}

void ca_record_close(void)
{
    if (rec_fd >= 0)
        close(rec_fd);
    rec_fd = -1;
}

/* protobuf-c does not check UTF-8 and jansson refuses invalid strings. */
static json_t *rec_str(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : json_string("<invalid UTF-8>");
}

static void ca_record_write(json_t *o)
{
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!line)
        return;
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps' NUL becomes the newline */
    pthread_mutex_lock(&rec_lock);
    const char *p = line;
    size_t left = n + 1;
    while (left > 0) {
        ssize_t w = write(rec_fd, p, left);
        if (w <= 0) {
            log_warn("chat-agent: cannot write AGENT_RECORD_FILE");
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    pthread_mutex_unlock(&rec_lock);
    free(line);
}

void ca_record_request(enum ca_method m, const AiService__Request *r)
{
    if (rec_fd < 0)
        return;
    json_t *files = json_array();
    for (size_t i = 0; i < r->n_file_name; i++)
        json_array_append_new(files, rec_str(r->file_name[i]));
    json_t *o = json_object();
    json_object_set_new(o, "method", json_string(ca_method_name(m)));
    json_object_set_new(o, "user_id", rec_str(r->user_id));
    json_object_set_new(o, "session_id", rec_str(r->session_id));
    json_object_set_new(o, "chat_message", rec_str(r->chat_message));
    json_object_set_new(o, "model_name", rec_str(r->model_name));
    json_object_set_new(o, "session_prompt", rec_str(r->session_prompt));
    json_object_set_new(o, "file_name", files);
    json_object_set_new(o, "chat_summary", rec_str(r->chat_summary));
    json_object_set_new(o, "chat_history", rec_str(r->chat_history));
    json_object_set_new(o, "balance", json_real(r->balance));
    json_object_set_new(o, "model_provider", rec_str(r->model_provider));
    json_object_set_new(o, "timestamp",
                        json_integer(r->timestamp ? (json_int_t)r->timestamp->seconds : 0));
    ca_record_write(o);
}

void ca_record_summary(const AiService__SummaryRequest *r)
{
    if (rec_fd < 0)
        return;
    json_t *o = json_object();
    json_object_set_new(o, "method", json_string("Summarize"));
    json_object_set_new(o, "user_id", rec_str(r->user_id));
    json_object_set_new(o, "session_id", rec_str(r->session_id));
    json_object_set_new(o, "model_name", rec_str(r->model_name));
    json_object_set_new(o, "model_provider", rec_str(r->model_provider));
    json_object_set_new(o, "previous_summary", rec_str(r->previous_summary));
    json_object_set_new(o, "user_message", rec_str(r->user_message));
    json_object_set_new(o, "assistant_message", rec_str(r->assistant_message));
    ca_record_write(o);
}

void ca_record_title(const AiService__TitleRequest *r)
{
    if (rec_fd < 0)
        return;
    json_t *o = json_object();
    json_object_set_new(o, "method", json_string("Title"));
    json_object_set_new(o, "user_id", rec_str(r->user_id));
    json_object_set_new(o, "session_id", rec_str(r->session_id));
    json_object_set_new(o, "model_name", rec_str(r->model_name));
    json_object_set_new(o, "model_provider", rec_str(r->model_provider));
    json_object_set_new(o, "user_message", rec_str(r->user_message));
    json_object_set_new(o, "assistant_message", rec_str(r->assistant_message));
    ca_record_write(o);
}
