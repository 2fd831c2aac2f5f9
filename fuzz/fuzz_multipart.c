/* fuzz_multipart.c - libFuzzer target over POST /upload's body parsing,
 * through net/multipart.h, the interface net/http.c uses, over a real
 * libwebsockets HTTP connection: no copy of chatd's code, no symbol of
 * lws replaced.
 *
 * Each input becomes an HTTP request ("POST /upload" with the fuzzed
 * Content-Type and a Content-Length) written into one end of a socketpair
 * whose other end an lws context in this process has adopted as an HTTP
 * connection (lws_adopt_descriptor_vhost). The harness's own protocol
 * callback does what net/http.c does with the request: multipart_start()
 * at the headers, multipart_body() per piece of body lws hands over,
 * multipart_end() and multipart_job() at its end. lws's real header
 * parser and lws_spa run on the way. Temporary files go to a private
 * directory under /tmp.
 *
 * Input: one knob byte, the Content-Type value up to the first '\n', the
 * body. Knob bits 0-2: the size of the writes into the socket (1, 2, 3, 7,
 * 64, 509, 4096, whole), each followed by a turn of lws's loop, so lws
 * hands the body over in pieces of that size; bits 5-6:
 * UPLOAD_ALLOWED_TYPES (the default, "txt", ".PNG, jpg,bin,md", "webp");
 * bit 7: MAX_CHAT_MESSAGE_BYTES 16 (the minimum, so lws_spa's storage is
 * 4112 bytes and an input can reach its end) or the default. Bits 3-4 are
 * unused (an earlier harness varied the file size limit, which is whole
 * MB here; the seeds keep working).
 *
 * Checked beyond "no crash, no sanitizer report":
 *   - the status is 0, 400, 403, 411, 413 or 415 (500 and 507 are local
 *     I/O failures, which cannot happen here), with a message of printable
 *     ASCII;
 *   - on 0: the job's temporary file exists with job->size (> 0) bytes,
 *     its stored name has the served shape and an allowed extension, its
 *     first bytes match a known type's magic (no NUL for a text type);
 *     user_id is a UUID, session_id one (or "" for NEW);
 *   - after the job or the parser is freed no file is left in the
 *     directory;
 *   - the outcome (status, message, fields, file bytes) is the same when
 *     the body comes in pieces as when it comes whole.
 * libwebsockets itself is not instrumented: its plain stores out of bounds
 * go unseen, its memcpy()s (ASan's interceptor) do not.
 *
 * Found so far: lws_spa overran its field storage when a field filled it
 * while a boundary was half matched (heap-buffer-overflow in
 * lws_spa_process, attacker-controlled length); net/multipart.c bounds
 * what reaches that storage (MULTIPART_WINDOW). Seeds regress-* in
 * fuzz/corpus/multipart replay it; tests/integration/test_abuse.py
 * (UploadAbuse) sends it to a running chatd. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "net/multipart.h"
#include "store/files.h"
#include "work/upload.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_TYPES 4
static struct config cfgs[2][N_TYPES]; /* [small fields][types] */
static const struct config *cfg;       /* this run's */
static struct lws_context *ctx;
static char dir[] = "/tmp/fuzz-multipart-XXXXXX";
static int verbose;

/* ------------------------------------------------------ the outcome */

struct outcome {
    int done;
    unsigned status;
    char message[256];
    uint64_t size;
    char user_id[UUID_STR_LEN + 1], session_id[UUID_STR_LEN + 1];
    int session_new;
    char *model, *prompt, *original;
    unsigned char *file;
    size_t file_len;
};

static struct outcome *cur;     /* filled by the callback */
static size_t body_seen;        /* body bytes lws handed over */
static struct multipart *parse; /* the request's parser */

static void outcome_free(struct outcome *o)
{
    free(o->model);
    free(o->prompt);
    free(o->original);
    free(o->file);
    memset(o, 0, sizeof(*o));
}

static int same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_multipart: %s\n", what);
        abort();
    }
}

static int files_in_dir(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    if (d != NULL)
        closedir(d);
    return n;
}

static void refused(unsigned status, const char *message)
{
    cur->done = 1;
    cur->status = status;
    snprintf(cur->message, sizeof(cur->message), "%s", message);
    for (const char *p = cur->message; *p; p++)
        check(*p >= 0x20 && *p < 0x7f, "a message that is not printable ASCII");
    check(status == 400 || status == 403 || status == 411 || status == 413 || status == 415,
          "an unexpected status");
}

/* multipart_end() said yes: check the job the worker would get. */
static void accepted(struct upload_job *j)
{
    cur->done = 1;
    cur->size = j->size;
    check(j->size > 0, "an accepted upload of no bytes");
    check(files_name_valid(j->name), "a stored name of the wrong shape");
    const char *ext = strrchr(j->name, '.') + 1;
    check(config_list_has(&cfg->upload_types, ext, strlen(ext), 0), "an extension not allowed");
    struct stat st;
    check(stat(j->tmp_path, &st) == 0 && (uint64_t)st.st_size == j->size,
          "the temporary file does not hold size bytes");
    cur->file = malloc(j->size);
    int fd = open(j->tmp_path, O_RDONLY);
    check(cur->file != NULL && fd >= 0 && read(fd, cur->file, j->size) == (ssize_t)j->size,
          "the temporary file cannot be read back");
    close(fd);
    cur->file_len = j->size;
    const struct files_type *t = files_type_by_ext(ext);
    check(files_sniff_ok(t, cur->file, j->size < FILES_HEAD ? j->size : FILES_HEAD),
          "content that does not match its type");
    check(t == NULL || t->magic != NULL || memchr(cur->file, '\0', j->size) == NULL,
          "a NUL in a text file");
    check(uuid_valid(j->user_id), "user_id is not a UUID");
    check(j->session_new ? j->session_id[0] == '\0' : uuid_valid(j->session_id),
          "session_id is not a UUID");
    memcpy(cur->user_id, j->user_id, sizeof(cur->user_id));
    memcpy(cur->session_id, j->session_id, sizeof(cur->session_id));
    cur->session_new = j->session_new;
    cur->model = strdup(j->model_name);
    cur->prompt = strdup(j->prompt);
    cur->original = strdup(j->original_name);
    upload_job_free(j);
}

/* ------------------------------------------- the harness's protocol */

static int fuzz_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    unsigned status = 0;
    char msg[256];
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        parse = multipart_start(wsi, cfg, MULTIPART_UPLOAD, &status, msg, sizeof(msg));
        if (parse == NULL) {
            refused(status, msg);
            return -1;
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY:
        body_seen += len;
        if (parse == NULL)
            return -1;
        if ((status = multipart_body(parse, in, len)) != 0) {
            refused(status, multipart_message(parse));
            multipart_free(parse);
            parse = NULL;
            return -1;
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (parse == NULL)
            return -1;
        if ((status = multipart_end(parse)) != 0) {
            refused(status, multipart_message(parse));
            multipart_free(parse);
        } else {
            struct upload_job *j = multipart_job(parse);
            check(j != NULL, "out of memory");
            accepted(j);
        }
        parse = NULL;
        return -1; /* this connection is done */
    case LWS_CALLBACK_CLOSED_HTTP:
        multipart_free(parse); /* cut off mid-body */
        parse = NULL;
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {"fuzz", fuzz_callback, 0, 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* --------------------------------------------------------------- a run */

/* Returns 1 when lws handed over the whole body. lws 4.1 stops a body
 * where lws_spa saw the closing delimiter, so bytes after it are read (and
 * counted) only when they came in the same read as the delimiter. */
static int run(const char *ctype, const uint8_t *body, size_t len, size_t piece,
               struct outcome *out)
{
    memset(out, 0, sizeof(*out));
    cur = out;
    body_seen = 0;
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
          "socketpair");
    lws_sock_file_fd_type fd;
    fd.sockfd = sv[0];
    struct lws *wsi = lws_adopt_descriptor_vhost(
        lws_get_vhost_by_name(ctx, "default"), LWS_ADOPT_HTTP | LWS_ADOPT_SOCKET, fd, "fuzz", NULL);
    check(wsi != NULL, "lws did not adopt the socket");

    char head[4200];
    int hl = snprintf(head, sizeof(head),
                      "POST /upload HTTP/1.1\r\nHost: fuzz\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      ctype, len);
    /* The request whole, then written in pieces with lws's loop between. */
    size_t total = (size_t)hl + len;
    unsigned char *req = malloc(total);
    check(req != NULL, "out of memory");
    memcpy(req, head, (size_t)hl);
    if (len > 0)
        memcpy(req + hl, body, len);
    /* Until the callback has an outcome, or 200 turns of the loop in a row
     * made no progress: all was written and lws has nothing more to say,
     * or lws stopped reading (the socket is full) without an answer. */
    size_t off = 0;
    int stalled = 0;
    while (!out->done && stalled < 200) {
        int progressed = 0;
        if (off < total) {
            size_t n = total - off < piece ? total - off : piece;
            ssize_t w = write(sv[1], req + off, n);
            if (w > 0) {
                off += (size_t)w;
                progressed = 1;
            }
        }
        lws_service(ctx, -1); /* no wait: what is readable now */
        stalled = progressed ? 0 : stalled + 1;
    }
    free(req);
    /* Closing our end ends the connection; lws frees what it holds. */
    close(sv[1]);
    for (int i = 0; i < 50 && parse != NULL; i++)
        lws_service(ctx, -1);
    multipart_free(parse);
    parse = NULL;
    for (int i = 0; i < 5; i++)
        lws_service(ctx, -1);
    check(files_in_dir() == 0, "a file was left behind");
    cur = NULL;
    return body_seen == len;
}

/* -------------------------------------------------------------- setup */

static void remove_dir(void)
{
    if (ctx != NULL)
        lws_context_destroy(ctx);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lws_set_log_level(LLL_ERR, NULL);
    verbose = getenv("FUZZ_MULTIPART_VERBOSE") != NULL;
    log_set_level(LOG_ERROR);
    if (mkdtemp(dir) == NULL)
        abort();
    static const char *types[N_TYPES] = {NULL, "txt", ".PNG, jpg,bin,md", "webp"};
    for (int small = 0; small < 2; small++) {
        for (int t = 0; t < N_TYPES; t++) {
            setenv("MAX_FILE_SIZE", "1", 1);
            setenv("MAX_CHAT_MESSAGE_BYTES", small ? "16" : "65536", 1);
            setenv("PUBLIC_DIR", dir, 1);
            if (types[t] != NULL)
                setenv("UPLOAD_ALLOWED_TYPES", types[t], 1);
            else
                unsetenv("UPLOAD_ALLOWED_TYPES");
            char err[256];
            if (config_from_env(&cfgs[small][t], err, sizeof(err)) != 0) {
                fprintf(stderr, "fuzz_multipart: %s\n", err);
                abort();
            }
        }
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if ((ctx = lws_create_context(&info)) == NULL)
        abort();
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t pieces[8] = {1, 2, 3, 7, 64, 509, 4096, SIZE_MAX};
    if (size < 1)
        return 0;
    unsigned knob = data[0];
    data++, size--;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t clen = nl != NULL ? (size_t)(nl - data) : size;
    if (clen >= 4096)
        return 0;
    char ctype[4096];
    memcpy(ctype, data, clen);
    ctype[clen] = '\0';
    /* What an HTTP header can carry: a value ends at CR, LF or NUL. */
    ctype[strcspn(ctype, "\r")] = '\0';
    const uint8_t *body = nl != NULL ? nl + 1 : data + size;
    size_t len = (size_t)(data + size - body);

    cfg = &cfgs[(knob & 0x80) != 0][(knob >> 5) & 3];
    size_t piece = pieces[knob & 7];

    struct outcome whole, parts;
    int whole_all = run(ctype, body, len, SIZE_MAX, &whole);
    if (piece != SIZE_MAX) {
        int parts_all = run(ctype, body, len, piece, &parts);
        /* Compared when both runs read the whole body; when lws stopped at
         * the closing delimiter, what followed it was read in one run and
         * not the other (see run()). */
        if (whole_all && parts_all &&
            (whole.done != parts.done || whole.status != parts.status ||
             strcmp(whole.message, parts.message) != 0 || whole.size != parts.size ||
             whole.file_len != parts.file_len ||
             (whole.file_len > 0 && memcmp(whole.file, parts.file, whole.file_len) != 0) ||
             strcmp(whole.user_id, parts.user_id) != 0 ||
             strcmp(whole.session_id, parts.session_id) != 0 ||
             whole.session_new != parts.session_new || !same(whole.model, parts.model) ||
             !same(whole.prompt, parts.prompt) || !same(whole.original, parts.original))) {
            fprintf(
                stderr,
                "fuzz_multipart: in pieces (%zu) and whole, bodies differ: %u '%s' vs %u '%s'\n",
                piece, parts.status, parts.message, whole.status, whole.message);
            abort();
        }
        outcome_free(&parts);
    }
    if (verbose)
        fprintf(stderr, "fuzz_multipart: %s %u %s (%llu file bytes)\n",
                whole.done ? "done" : "unanswered", whole.status, whole.message,
                (unsigned long long)whole.size);
    outcome_free(&whole);
    return 0;
}
