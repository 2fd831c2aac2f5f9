/* upload.c - POST /upload: multipart parsing with lws_spa, the file
 * streamed to disk, the checks and the row on a worker.
 *
 *   service thread: lws_spa parses the body as it arrives; the file part
 *                   goes chunk by chunk to PUBLIC_DIR/.upload-<hex>.part
 *                   (never whole in memory). Size, extension and content
 *                   are checked as the bytes come, so a file too large is
 *                   refused at the first byte past MAX_FILE_SIZE.
 *   worker:         fsync; user exists; one transaction: the session row
 *                   for "NEW" (model known and allowed) or a lock on the
 *                   user's own session, then the file row; commit; rename
 *                   to <hex>.<ext>; answer 202.
 *
 * The final name exists only once its row committed, and every failure
 * path (and a connection cut mid-body, through upload_abort) unlinks the
 * temporary file: a refused, failed or cut-off upload leaves neither a
 * file nor a row. No byte of a client's file name reaches the file system:
 * stored names are 32 random hex digits plus the checked extension; the
 * original name is kept as metadata only. */
#include "upload.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "cache.h"
#include "chat.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "pool.h"
#include "server.h"
#include "uuid.h"

#define UPLOAD_TMP_PREFIX ".upload-"
#define UPLOAD_TMP_SUFFIX ".part"
#define UPLOAD_HEX_LEN 32
#define UPLOAD_EXT_MAX 8
#define UPLOAD_NAME_MAX 255 /* bytes of the original name kept */
#define UPLOAD_SESSION_NAME "New Chat"
/* Multipart framing and the small fields around the file: what a
 * Content-Length may carry beyond the file and the prompt. */
#define UPLOAD_FORM_SLACK (16 * 1024)
#define UPLOAD_STALE_SECONDS 3600
/* lws_spa (4.1) overruns its storage when the fields it keeps come within
 * a boundary's length of filling it: a field flushed while a partial
 * boundary match is pending leaves it with no room, and every later byte
 * lands past its end (found by fuzz/fuzz_multipart.c). So chatd counts
 * what it hands lws_spa outside the file part, by windows of the body: a
 * window counts whole unless the file part was open at both its ends. The
 * body is refused once that passes max_chat_message_bytes +
 * UPLOAD_FORM_SLACK, and the storage is a window and a margin larger, so
 * the fields can never come near filling it. */
#define UPLOAD_WINDOW 4096
#define UPLOAD_STORAGE_MARGIN 1024

enum { F_FILE, F_USER, F_SESSION, F_MODEL, F_PROMPT, F_COUNT };
static const char *const upload_fields[F_COUNT] = {"file", "user_id", "session_id", "model_name",
                                                   "session_prompt"};

/* Known types: what they are served as, and how their first bytes look.
 * A type listed in UPLOAD_ALLOWED_TYPES but not here is accepted unchecked
 * and served as application/octet-stream. */
struct upload_type {
    const char *ext;
    const char *mime;
    const char *magic; /* NULL: text, i.e. no NUL byte anywhere */
    size_t magic_len;
};

static const struct upload_type upload_types[] = {
    {"png", "image/png", "\x89PNG\r\n\x1a\n", 8},
    {"jpg", "image/jpeg", "\xff\xd8\xff", 3},
    {"jpeg", "image/jpeg", "\xff\xd8\xff", 3},
    {"gif", "image/gif", "GIF8", 4},
    {"webp", "image/webp", "RIFF", 4}, /* and "WEBP" at offset 8, see sniff_ok */
    {"pdf", "application/pdf", "%PDF-", 5},
    {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     "PK\x03\x04", 4},
    {"txt", "text/plain; charset=utf-8", NULL, 0},
    {"md", "text/markdown; charset=utf-8", NULL, 0},
    {"csv", "text/csv; charset=utf-8", NULL, 0},
    {"json", "application/json", NULL, 0},
};

#define UPLOAD_HEAD 16 /* first bytes kept for the content check */

struct upload {
    struct pool_job job; /* first: the pool runs it */
    struct server *srv;
    const struct config *cfg;
    uint64_t txn_id;
    struct lws_spa *spa;

    int fd;                  /* the temporary file, -1 before the file part */
    char tmp_path[PATH_MAX]; /* "" once renamed or removed */
    char stored_name[UPLOAD_HEX_LEN + 1 + UPLOAD_EXT_MAX + 1];
    const struct upload_type *type; /* NULL: an unchecked extension */
    char *original_name;
    uint64_t size, max_size;
    int file_done;
    uint64_t fed, outside; /* body bytes given to lws_spa; of them outside the file */
    /* NUL bytes in the whole body, and in the file's content: lws_spa keeps
     * fields as C strings and would cut one at a NUL without a word, so
     * any NUL outside the file (in a field, a part's headers, around a
     * boundary) refuses the body. */
    uint64_t nul_body, nul_file;
    int window_in_file;    /* the file part was open when this window began */
    unsigned char head[UPLOAD_HEAD];
    size_t head_len;

    unsigned status; /* the first refusal, 0 while all is well */
    char message[256];

    /* the fields, copied out of the parser for the worker */
    char user_id[UUID_STR_LEN + 1];
    char session_id[UUID_STR_LEN + 1];
    int session_new;
    char *model_name, *prompt;
    /* AUTH_MODE=jwt: the token's sub, which user_id must name; "" = any */
    char required_user[UUID_STR_LEN + 1];
};

/* ---------------------------------------------------------------- helpers */

static const struct upload_type *type_by_ext(const char *ext)
{
    for (size_t i = 0; i < sizeof(upload_types) / sizeof(upload_types[0]); i++)
        if (strcmp(upload_types[i].ext, ext) == 0)
            return &upload_types[i];
    return NULL;
}

/* 1 when ext (lower case) is one of the comma-separated list, compared
 * without case and with an optional leading dot. */
static int ext_allowed(const char *list, const char *ext)
{
    size_t el = strlen(ext);
    for (const char *p = list; *p != '\0';) {
        while (*p == ',' || *p == ' ' || *p == '.')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',' && *p != ' ')
            p++;
        if ((size_t)(p - start) == el && strncasecmp(start, ext, el) == 0)
            return 1;
    }
    return 0;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n || (k == 2 && c < 0xc2))
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

/* The client's file name as harmless metadata: at most UPLOAD_NAME_MAX
 * bytes, no control characters or path separators, valid UTF-8. */
static char *clean_name(const char *name)
{
    size_t n = strnlen(name, UPLOAD_NAME_MAX);
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        out[i] = (c < 0x20 || c == 0x7f || c == '/' || c == '\\') ? '_' : (char)c;
    }
    out[n] = '\0';
    /* A cut in the middle of a character, or bytes that never were UTF-8:
     * keep the ASCII part readable. */
    if (!utf8_valid((unsigned char *)out, n))
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)out[i] >= 0x80)
                out[i] = '_';
    return out;
}

/* Records the first refusal (later ones are only its consequences) and
 * returns its status. Messages never quote the client's text, so they can
 * go to logs and into JSON as they are. */
static void vfail(struct upload *u, unsigned status, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void vfail(struct upload *u, unsigned status, const char *fmt, va_list ap)
{
    if (u->status == 0) {
        u->status = status;
        vsnprintf(u->message, sizeof(u->message), fmt, ap);
    }
}

static unsigned fail(struct upload *u, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static unsigned fail(struct upload *u, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(u, status, fmt, ap);
    va_end(ap);
    return u->status;
}

/* fail() for lws_spa's callback, where -1 stops the parser. */
static int refuse(struct upload *u, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct upload *u, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(u, status, fmt, ap);
    va_end(ap);
    return -1;
}

static int random_hex(char out[UPLOAD_HEX_LEN + 1])
{
    unsigned char b[UPLOAD_HEX_LEN / 2];
    size_t got = 0;
    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
        if (n < 0 && errno != EINTR)
            return -1;
        if (n > 0)
            got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(b); i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    return 0;
}

/* The status for a failed open/write/fsync: 507 when the disk (or the
 * quota) is full, so the client sees the cause, else 500. */
static unsigned store_error_status(int err)
{
    return err == ENOSPC || err == EDQUOT ? 507 : 500;
}

#define UPLOAD_NO_SPACE_MSG "Insufficient storage: no space left for the file"

static void remove_tmp(struct upload *u)
{
    if (u->fd >= 0) {
        close(u->fd);
        u->fd = -1;
    }
    if (u->tmp_path[0] != '\0') {
        if (unlink(u->tmp_path) != 0 && errno != ENOENT)
            log_warn("event=upload_tmp_remove_failed path=%s error=\"%s\"", u->tmp_path,
                     strerror(errno));
        u->tmp_path[0] = '\0';
    }
}

static void upload_free(struct upload *u)
{
    if (u == NULL)
        return;
    if (u->spa != NULL)
        lws_spa_destroy(u->spa);
    remove_tmp(u);
    free(u->original_name);
    free(u->model_name);
    free(u->prompt);
    free(u);
}

/* ------------------------------------------------------ the file part */

/* The file part begins: check its extension, open the temporary file. */
static int file_open(struct upload *u, const char *name, const char *filename)
{
    if (strcmp(name, "file") != 0)
        return refuse(u, 400, "Invalid field: the file goes in field 'file'");
    if (u->fd >= 0 || u->file_done)
        return refuse(u, 400, "Invalid field 'file': send exactly one file");

    const char *dot = strrchr(filename, '.');
    char ext[UPLOAD_EXT_MAX + 1];
    size_t el = dot != NULL ? strlen(dot + 1) : 0;
    int ok = el >= 1 && el <= UPLOAD_EXT_MAX;
    for (size_t i = 0; ok && i < el; i++) {
        unsigned char c = (unsigned char)dot[1 + i];
        ok = isascii(c) && isalnum(c);
        ext[i] = (char)tolower(c);
    }
    if (!ok)
        return refuse(u, 415, "File type not allowed: the name has no usable extension;"
                              " allowed: %s", u->cfg->upload_allowed_types);
    ext[el] = '\0';
    if (!ext_allowed(u->cfg->upload_allowed_types, ext))
        return refuse(u, 415, "File type '.%s' is not allowed; allowed: %s", ext,
                      u->cfg->upload_allowed_types);
    u->type = type_by_ext(ext);

    char hex[UPLOAD_HEX_LEN + 1];
    if (random_hex(hex) != 0) {
        log_error("event=upload_random_failed error=\"%s\"", strerror(errno));
        return refuse(u, 500, "Unable to store the file");
    }
    snprintf(u->stored_name, sizeof(u->stored_name), "%s.%s", hex, ext);
    int n = snprintf(u->tmp_path, sizeof(u->tmp_path), "%s/" UPLOAD_TMP_PREFIX "%s" UPLOAD_TMP_SUFFIX,
                     u->cfg->public_dir, hex);
    if (n < 0 || (size_t)n >= sizeof(u->tmp_path)) {
        u->tmp_path[0] = '\0';
        log_error("event=upload_path_too_long dir=%s", u->cfg->public_dir);
        return refuse(u, 500, "Unable to store the file");
    }
    u->fd = open(u->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (u->fd < 0) {
        int err = errno;
        log_error("event=upload_open_failed path=%s error=\"%s\"", u->tmp_path, strerror(err));
        u->tmp_path[0] = '\0'; /* not ours to remove */
        if (store_error_status(err) == 507)
            return refuse(u, 507, UPLOAD_NO_SPACE_MSG);
        return refuse(u, 500, "Unable to store the file");
    }
    if ((u->original_name = clean_name(filename)) == NULL)
        return refuse(u, 500, "Unable to store the file");
    return 0;
}

/* Whether the first bytes look like the extension says. */
static int sniff_ok(const struct upload *u)
{
    const struct upload_type *t = u->type;
    if (t == NULL || t->magic == NULL)
        return 1;
    if (u->head_len < t->magic_len || memcmp(u->head, t->magic, t->magic_len) != 0)
        return 0;
    if (strcmp(t->ext, "webp") == 0)
        return u->head_len >= 12 && memcmp(u->head + 8, "WEBP", 4) == 0;
    return 1;
}

static int file_write(struct upload *u, const char *buf, size_t len)
{
    if (u->fd < 0)
        return refuse(u, 400, "Malformed multipart body");
    if (len > u->max_size - u->size) /* refuse before writing a byte too many */
        return refuse(u, 413, "File too large: the limit is %d MB", u->cfg->max_file_size_mb);
    if (u->type != NULL && u->type->magic == NULL && memchr(buf, '\0', len) != NULL)
        return refuse(u, 415, "File content does not match its type '.%s'", u->type->ext);
    if (u->head_len < UPLOAD_HEAD) {
        size_t take = UPLOAD_HEAD - u->head_len < len ? UPLOAD_HEAD - u->head_len : len;
        memcpy(u->head + u->head_len, buf, take);
        u->head_len += take;
        /* Checked as soon as enough bytes are in, so a mislabelled file is
         * refused at its first chunk. */
        if (u->head_len == UPLOAD_HEAD && !sniff_ok(u))
            return refuse(u, 415, "File content does not match its type '.%s'", u->type->ext);
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = write(u->fd, buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : ENOSPC; /* 0 bytes written: no room */
            log_error("event=upload_write_failed path=%s error=\"%s\"", u->tmp_path,
                      strerror(err));
            if (store_error_status(err) == 507)
                return refuse(u, 507, UPLOAD_NO_SPACE_MSG);
            return refuse(u, 500, "Unable to store the file");
        }
        off += (size_t)n;
    }
    u->size += len;
    return 0;
}

static uint64_t count_nul(const char *p, size_t n)
{
    uint64_t k = 0;
    const char *end = p + n;
    while ((p = memchr(p, '\0', (size_t)(end - p))) != NULL) {
        k++;
        p++;
    }
    return k;
}

static int spa_file_cb(void *data, const char *name, const char *filename, char *buf, int len,
                       enum lws_spa_fileupload_states state)
{
    struct upload *u = data;
    /* CLOSE comes from lws_spa_destroy/finalize: answering -1 to it makes
     * lws skip freeing its parser state. */
    if (state == LWS_UFS_CLOSE)
        return 0;
    if (u->status != 0)
        return -1;
    switch (state) {
    case LWS_UFS_OPEN:
        return file_open(u, name, filename);
    case LWS_UFS_CONTENT:
    case LWS_UFS_FINAL_CONTENT:
        if (len > 0 && file_write(u, buf, (size_t)len) != 0)
            return -1;
        u->nul_file += count_nul(buf, (size_t)len);
        if (state == LWS_UFS_FINAL_CONTENT) {
            if (u->size == 0)
                return refuse(u, 400, "Invalid field 'file': the file is empty");
            if (!sniff_ok(u))
                return refuse(u, 415, "File content does not match its type '.%s'",
                              u->type->ext);
            u->file_done = 1;
        }
        return 0;
    case LWS_UFS_CLOSE:
        return 0;
    }
    return 0;
}

/* ------------------------------------------------------ service thread */

struct upload *upload_start(struct lws *wsi, struct server *srv, unsigned *status, char *msg,
                            size_t msglen)
{
    return upload_start_config(wsi, server_config(srv), srv, status, msg, msglen);
}

struct upload *upload_start_config(struct lws *wsi, const struct config *cfg, struct server *srv,
                                   unsigned *status, char *msg, size_t msglen)
{
    uint64_t max = (uint64_t)cfg->max_file_size_mb * 1024 * 1024;

    /* lws_spa reads the boundary itself, from this same header, and knows
     * only this exact spelling. It reads at most 204 bytes of it and parses
     * a longer one's body as urlencoded: such a header is refused here. */
    char ctype[205];
    if (lws_hdr_copy(wsi, ctype, sizeof(ctype), WSI_TOKEN_HTTP_CONTENT_TYPE) <= 0 ||
        strncmp(ctype, "multipart/form-data", 19) != 0) {
        *status = 415;
        snprintf(msg, msglen, "Expected a multipart/form-data body");
        return NULL;
    }
    /* lws 4.1 hands a chunked request body over with its chunk framing
     * still in it, which would corrupt the file; browsers always send a
     * length with a form. */
    char clen[32];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 ||
        lws_hdr_copy(wsi, clen, sizeof(clen), WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
        *status = 411;
        snprintf(msg, msglen, "Length Required: send the upload with a Content-Length");
        return NULL;
    }
    unsigned long long declared = strtoull(clen, NULL, 10);
    if (declared > max + (uint64_t)cfg->max_chat_message_bytes + UPLOAD_FORM_SLACK) {
        /* The file cannot fit: refuse before reading a byte of it. */
        *status = 413;
        snprintf(msg, msglen, "File too large: the limit is %d MB", cfg->max_file_size_mb);
        return NULL;
    }

    struct upload *u = calloc(1, sizeof(*u));
    if (u == NULL)
        goto oom;
    u->srv = srv;
    u->cfg = cfg;
    u->fd = -1;
    u->max_size = max;
    lws_spa_create_info_t si;
    memset(&si, 0, sizeof(si));
    si.param_names = upload_fields;
    si.count_params = F_COUNT;
    /* Every small field and the prompt live here; the file passes through
     * it in chunks of what is left. See UPLOAD_WINDOW for its size. */
    si.max_storage = cfg->max_chat_message_bytes + UPLOAD_FORM_SLACK + UPLOAD_WINDOW +
                     UPLOAD_STORAGE_MARGIN;
    si.opt_cb = spa_file_cb;
    si.opt_data = u;
    if ((u->spa = lws_spa_create_via_info(wsi, &si)) == NULL)
        goto oom;
    return u;
oom:
    upload_free(u);
    *status = 500;
    snprintf(msg, msglen, "Out of memory");
    return NULL;
}

static int in_file_part(const struct upload *u) { return u->fd >= 0 && !u->file_done; }

unsigned upload_body(struct upload *u, const void *in, size_t len)
{
    const char *p = in;
    /* Window by window (see UPLOAD_WINDOW), at the same offsets however
     * the body arrives. */
    while (u->status == 0 && len > 0) {
        size_t off = (size_t)(u->fed % UPLOAD_WINDOW);
        size_t n = UPLOAD_WINDOW - off < len ? UPLOAD_WINDOW - off : len;
        if (off == 0)
            u->window_in_file = in_file_part(u);
        u->nul_body += count_nul(p, n);
        if (lws_spa_process(u->spa, p, (int)n) != 0)
            return fail(u, 400, "Malformed multipart body, or fields over %d bytes",
                        u->cfg->max_chat_message_bytes);
        u->fed += n;
        p += n;
        len -= n;
        if (u->fed % UPLOAD_WINDOW == 0 && !(u->window_in_file && in_file_part(u)) &&
            (u->outside += UPLOAD_WINDOW) >
                (uint64_t)u->cfg->max_chat_message_bytes + UPLOAD_FORM_SLACK)
            fail(u, 400, "Malformed multipart body, or fields over %d bytes",
                 u->cfg->max_chat_message_bytes);
    }
    return u->status;
}

void upload_require_user(struct upload *u, const char *user_id)
{
    snprintf(u->required_user, sizeof(u->required_user), "%s", user_id);
}

const char *upload_message(const struct upload *u) { return u->message; }

void upload_abort(struct upload *u)
{
    if (u->status == 0 && u->tmp_path[0] != '\0')
        log_info("event=upload_cut_off file=%s bytes=%llu", u->stored_name,
                 (unsigned long long)u->size);
    upload_free(u);
}

/* A text field: NULL when absent. */
static const char *field(struct upload *u, int i)
{
    const char *s = lws_spa_get_string(u->spa, i);
    return s != NULL && lws_spa_get_length(u->spa, i) > 0 ? s : NULL;
}

static void upload_run(struct worker *w, struct pool_job *job);

/* The text fields, in the order the client's errors should name them. */
static unsigned check_fields(struct upload *u)
{
    const char *user = field(u, F_USER), *session = field(u, F_SESSION);
    const char *model = field(u, F_MODEL), *prompt = field(u, F_PROMPT);
    if (user == NULL)
        return fail(u, 400, "Invalid field 'user_id': missing");
    if (!uuid_valid(user))
        return fail(u, 400, "Invalid field 'user_id': not a UUID");
    if (session == NULL)
        return fail(u, 400, "Invalid field 'session_id': missing");
    u->session_new = strcmp(session, "NEW") == 0;
    if (!u->session_new && !uuid_valid(session))
        return fail(u, 400, "Invalid field 'session_id': not a UUID or \"NEW\"");
    if (u->session_new && model == NULL)
        return fail(u, 400, "Invalid field 'model_name': missing (needed for a NEW session)");
    if (prompt != NULL && strlen(prompt) > (size_t)u->cfg->max_chat_message_bytes)
        return fail(u, 400, "Invalid field 'session_prompt': longer than %d bytes",
                    u->cfg->max_chat_message_bytes);
    if ((model != NULL && !utf8_valid((const unsigned char *)model, strlen(model))) ||
        (prompt != NULL && !utf8_valid((const unsigned char *)prompt, strlen(prompt))))
        return fail(u, 400, "Invalid field: text fields must be UTF-8");
    if (!u->file_done)
        return fail(u, 400, "Invalid field 'file': missing or incomplete");

    uuid_normalize(user, u->user_id);
    if (u->required_user[0] != '\0' && strcmp(u->user_id, u->required_user) != 0)
        return fail(u, 403, "Not Allowed To Act As This User");
    if (!u->session_new)
        uuid_normalize(session, u->session_id);
    u->model_name = strdup(model != NULL ? model : "");
    u->prompt = strdup(prompt != NULL ? prompt : "");
    if (u->model_name == NULL || u->prompt == NULL)
        return fail(u, 500, "Out of memory");
    return 0;
}

unsigned upload_parse_end(struct upload *u)
{
    lws_spa_finalize(u->spa);
    if (u->status == 0 && u->nul_body != u->nul_file)
        fail(u, 400, "Malformed multipart body: a NUL byte outside the file");
    if (u->status == 0)
        check_fields(u);
    return u->status;
}

unsigned upload_finish(struct upload *u, uint64_t txn_id)
{
    if (upload_parse_end(u) != 0)
        return u->status;
    lws_spa_destroy(u->spa); /* on this thread, before the worker owns u */
    u->spa = NULL;

    u->txn_id = txn_id;
    u->job.run = upload_run;
    pool_submit(server_pool(u->srv), &u->job);
    return 0;
}

/* --------------------------------------------------------------- worker */

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        log_warn("event=upload_dir_fsync_failed dir=%s error=\"%s\"", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* The row (and the session for NEW) in one transaction. Returns the HTTP
 * status; 202 when committed. */
static unsigned store_rows(struct worker *w, struct upload *u)
{
    struct pg *pg = &w->pg;
    const char *up[1] = {u->user_id};
    PGresult *r = pg_exec(pg, PG_USER_GET, 1, up);
    if (r == NULL)
        return fail(u, 500, "Database error, try again");
    if (PQntuples(r) == 0) {
        PQclear(r);
        return fail(u, 400, "User Does Not Exists");
    }
    char *models = strdup(PQgetvalue(r, 0, 1));
    PQclear(r);
    if (models == NULL)
        return fail(u, 500, "Out of memory");

    char model_id[16] = "";
    if (u->session_new) {
        const char *mp[1] = {u->model_name};
        r = pg_exec(pg, PG_MODEL_BY_NAME, 1, mp);
        if (r == NULL) {
            free(models);
            return fail(u, 500, "Database error, try again");
        }
        int found = PQntuples(r) > 0;
        int id = found ? atoi(PQgetvalue(r, 0, 0)) : -1;
        PQclear(r);
        int allowed = found && chat_model_allowed(models, id);
        free(models);
        if (!found)
            return fail(u, 400, "Unknown Model");
        if (!allowed)
            return fail(u, 400, "User Does Not Have Model Access");
        snprintf(model_id, sizeof(model_id), "%d", id);
        if (uuid_generate(u->session_id) != 0)
            return fail(u, 500, "Unable to Create Session");
    } else {
        free(models);
    }

    if (pg_command(pg, "begin") != 0)
        return fail(u, 500, "Database error, try again");
    if (u->session_new) {
        const char *sp[5] = {u->session_id, u->user_id, UPLOAD_SESSION_NAME, model_id, u->prompt};
        if ((r = pg_exec(pg, PG_SESSION_INSERT, 5, sp)) == NULL) {
            fail(u, 500, "Unable to Create Session");
            goto rollback;
        }
        PQclear(r);
    } else {
        /* Owned by this user, and kept from being deleted until commit. */
        const char *lp[2] = {u->user_id, u->session_id};
        if ((r = pg_exec(pg, PG_SESSION_LOCK, 2, lp)) == NULL) {
            fail(u, 500, "Unable to Load Session");
            goto rollback;
        }
        int found = PQntuples(r) > 0;
        PQclear(r);
        if (!found) {
            /* Someone else's session answers like a missing one. */
            fail(u, 400, "Session Not Found");
            goto rollback;
        }
    }
    char size[24];
    snprintf(size, sizeof(size), "%llu", (unsigned long long)u->size);
    const char *fp[6] = {u->session_id, u->user_id, u->stored_name,
                         u->original_name, u->type ? u->type->mime : "application/octet-stream",
                         size};
    if ((r = pg_exec(pg, PG_FILE_INSERT, 6, fp)) == NULL) {
        fail(u, 500, "Unable to record the file");
        goto rollback;
    }
    char xid[24];
    snprintf(xid, sizeof(xid), "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    if (pg_command(pg, "commit") != 0)
        return fail(u, 500, "Unable to record the file");
    /* A new session is in the user's list from now on, here at once. */
    if (u->session_new)
        cache_saw_write(&w->cache, u->user_id, xid);
    return 202;
rollback:
    pg_command(pg, "rollback");
    return u->status;
}

/* After the rename failed: take back what committed. */
static void unstore_rows(struct worker *w, struct upload *u)
{
    const char *p[3] = {u->user_id, u->session_id, u->stored_name};
    /* A NEW session holds only this file: delete it (the row cascades). */
    PGresult *r = u->session_new ? pg_exec(&w->pg, PG_SESSION_DELETE, 2, p)
                                 : pg_exec(&w->pg, PG_FILE_DELETE, 3, p);
    if (r == NULL)
        log_error("event=upload_unstore_failed file=%s", u->stored_name);
    PQclear(r);
}

static unsigned upload_store(struct worker *w, struct upload *u)
{
    /* Durable before the row says it exists. */
    int err = fsync(u->fd) != 0 ? errno : 0;
    if (close(u->fd) != 0 && err == 0) /* closed either way: no fd leak */
        err = errno;
    if (err != 0) {
        u->fd = -1;
        log_error("event=upload_fsync_failed path=%s error=\"%s\"", u->tmp_path, strerror(err));
        if (store_error_status(err) == 507)
            return fail(u, 507, UPLOAD_NO_SPACE_MSG);
        return fail(u, 500, "Unable to store the file");
    }
    u->fd = -1;
    unsigned status = store_rows(w, u);
    if (status != 202)
        return status;

    char final_path[PATH_MAX];
    int n = snprintf(final_path, sizeof(final_path), "%s/%s", u->cfg->public_dir, u->stored_name);
    if (n < 0 || (size_t)n >= sizeof(final_path) || rename(u->tmp_path, final_path) != 0) {
        log_error("event=upload_rename_failed path=%s error=\"%s\"", u->tmp_path, strerror(errno));
        unstore_rows(w, u);
        return fail(u, 500, "Unable to store the file");
    }
    u->tmp_path[0] = '\0'; /* renamed: nothing to clean up */
    fsync_dir(u->cfg->public_dir);

    metrics_upload_bytes(u->size);
    log_info("event=upload_stored user=%s session=%s%s file=%s bytes=%llu", u->user_id,
             u->session_id, u->session_new ? " new_session=1" : "", u->stored_name,
             (unsigned long long)u->size);
    return 202;
}

static void upload_run(struct worker *w, struct pool_job *job)
{
    struct upload *u = (struct upload *)job;
    unsigned status = upload_store(w, u);
    json_t *data = NULL;
    if (status == 202) {
        /* The reference (signed with AUTH_MODE=jwt) is what the client
         * sends back as file_name and links to under .../uploads/. */
        const char *base = u->cfg->public_base_url;
        char *ref = auth_file_ref(u->cfg, u->stored_name, time(NULL));
        size_t ul = strlen(base) + sizeof("/uploads/") + (ref != NULL ? strlen(ref) : 0);
        char *url = ref != NULL ? malloc(ul) : NULL;
        if (url != NULL) {
            snprintf(url, ul, "%s/uploads/%s", base, ref);
            data = json_pack("{s:s, s:s, s:s, s:I}", "fileName", ref, "sessionId",
                             u->session_id, "imageUrl", url, "size", (json_int_t)u->size);
        }
        free(url);
        free(ref);
        if (data == NULL) /* out of memory; the stored file stays */
            status = fail(u, 500, "Out of memory");
    } else if (status != 500) {
        log_info("event=upload_refused status=%u user=%s reason=\"%s\"", status, u->user_id,
                 u->message);
    }
    size_t len = 0;
    char *body = http_json_message(status == 202 ? "File uploaded successfully" : u->message,
                                   data, &len);
    server_http_reply(u->srv, u->txn_id, status, body, len);
    upload_free(u);
}

/* -------------------------------------------------------- the directory */

void upload_prepare_dir(const struct config *cfg)
{
    if (mkdir(cfg->public_dir, 0755) != 0 && errno != EEXIST)
        log_warn("event=public_dir_create_failed dir=%s error=\"%s\"", cfg->public_dir,
                 strerror(errno));
    DIR *d = opendir(cfg->public_dir);
    if (d == NULL)
        return;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, UPLOAD_TMP_PREFIX, sizeof(UPLOAD_TMP_PREFIX) - 1) != 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            now - st.st_mtime > UPLOAD_STALE_SECONDS && unlinkat(dirfd(d), e->d_name, 0) == 0)
            log_info("event=upload_stale_removed file=%s", e->d_name);
    }
    closedir(d);
}

int upload_name_valid(const char *name)
{
    size_t i = 0;
    for (; i < UPLOAD_HEX_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    if (name[i++] != '.')
        return 0;
    size_t el = 0;
    for (; name[i] != '\0'; i++, el++)
        if (el == UPLOAD_EXT_MAX ||
            !((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z')))
            return 0;
    return el >= 1;
}

const char *upload_content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    const struct upload_type *t = dot != NULL ? type_by_ext(dot + 1) : NULL;
    return t != NULL ? t->mime : "application/octet-stream";
}
