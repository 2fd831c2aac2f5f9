/* multipart.c - the upload body on the service thread (see multipart.h).
 *
 * lws_spa parses; what is ours is what it is fed and what is checked as
 * the bytes come: the file part's extension when it opens, each chunk's
 * size (413 at the first byte too many) and content (magic bytes of known
 * types, no NUL in text types), and at the end the fields. */
#include "net/multipart.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/uuid.h"
#include "store/files.h"
#include "work/upload.h"

#define MULTIPART_NAME_MAX 255 /* bytes of the original name kept */
/* Multipart framing and the small fields around the file: what a
 * Content-Length may carry beyond the file and the prompt. */
#define MULTIPART_FORM_SLACK (16 * 1024)
/* lws_spa (4.1) overruns its storage when the fields it keeps come within
 * a boundary's length of filling it: a field flushed while a partial
 * boundary match is pending leaves it with no room, and every later byte
 * lands past its end (found by fuzz/fuzz_multipart.c). So chatd counts
 * what it hands lws_spa outside the file part, by windows of the body: a
 * window counts whole unless the file part was open at both its ends. The
 * body is refused once that passes max_chat_message_bytes +
 * MULTIPART_FORM_SLACK, and the storage is a window and a margin larger,
 * so the fields can never come near filling it. */
#define MULTIPART_WINDOW 4096
#define MULTIPART_STORAGE_MARGIN 1024
#define MULTIPART_NO_SPACE_MSG "Insufficient storage: no space left for the file"

enum { F_FILE, F_USER, F_SESSION, F_MODEL, F_PROMPT, F_COUNT };
static const char *const multipart_fields[F_COUNT] = {"file", "user_id", "session_id", "model_name",
                                                      "session_prompt"};

struct multipart {
    const struct config *cfg;
    enum multipart_kind kind;
    struct lws_spa *spa;
    struct upload_job *job;        /* the file and, at the end, the fields */
    const struct files_type *type; /* NULL: an unchecked extension */
    uint64_t max_size;
    int file_done;
    uint64_t fed, outside; /* body bytes given to lws_spa; of them outside the file */
    /* NUL bytes in the whole body, and in the file's content: lws_spa keeps
     * fields as C strings and would cut one at a NUL without a word, so
     * any NUL outside the file (in a field, a part's headers, around a
     * boundary) refuses the body. */
    uint64_t nul_body, nul_file;
    int window_in_file; /* the file part was open when this window began */
    unsigned char head[FILES_HEAD];
    size_t head_len;
    unsigned status; /* the first refusal, 0 while all is well */
    char message[256];
    /* AUTH_MODE=jwt: the token's sub, which user_id must name; "" = any */
    char required_user[UUID_STR_LEN + 1];
};

/* ---------------------------------------------------------------- helpers */

/* Records the first refusal (later ones are only its consequences).
 * Messages never quote the client's text, so they can go to logs and into
 * JSON as they are. */
static void vfail(struct multipart *m, unsigned status, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void vfail(struct multipart *m, unsigned status, const char *fmt, va_list ap)
{
    if (m->status == 0) {
        m->status = status;
        vsnprintf(m->message, sizeof(m->message), fmt, ap);
    }
}

static unsigned fail(struct multipart *m, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static unsigned fail(struct multipart *m, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(m, status, fmt, ap);
    va_end(ap);
    return m->status;
}

/* fail() for lws_spa's callback, where -1 stops the parser. */
static int refuse(struct multipart *m, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct multipart *m, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(m, status, fmt, ap);
    va_end(ap);
    return -1;
}

/* A failed open/write: 507 when the disk (or the quota) is full, so the
 * client sees the cause, else 500. */
static int refuse_io(struct multipart *m, int err)
{
    if (err == ENOSPC || err == EDQUOT)
        return refuse(m, 507, MULTIPART_NO_SPACE_MSG);
    return refuse(m, 500, "Unable to store the file");
}

/* The client's file name as harmless metadata: at most MULTIPART_NAME_MAX
 * bytes, no control characters or path separators, valid UTF-8. */
static char *clean_name(const char *name)
{
    size_t n = strnlen(name, MULTIPART_NAME_MAX);
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
    if (!util_utf8_valid((unsigned char *)out, n))
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)out[i] >= 0x80)
                out[i] = '_';
    return out;
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

/* ------------------------------------------------------ the file part */

/* The file part begins: check its extension, open the temporary file. */
/* What POST /import takes: an export as JSON (text), JSON Lines, or a zip
 * of them. */
static const struct files_type import_types[] = {
    {"json", "application/json", NULL, 0},
    {"jsonl", "application/jsonl", NULL, 0},
    {"zip", "application/zip", "PK\x03\x04", 4},
};

static int too_large(struct multipart *m)
{
    if (m->kind == MULTIPART_IMPORT)
        return refuse(m, 413, "File too large: the limit is %d bytes", m->cfg->import_max_bytes);
    return refuse(m, 413, "File too large: the limit is %d MB", m->cfg->max_file_size_mb);
}

static int file_open(struct multipart *m, const char *name, const char *filename)
{
    const struct config *cfg = m->cfg;
    struct upload_job *j = m->job;
    if (strcmp(name, "file") != 0)
        return refuse(m, 400, "Invalid field: the file goes in field 'file'");
    if (j->fd >= 0 || m->file_done)
        return refuse(m, 400, "Invalid field 'file': send exactly one file");

    const char *dot = strrchr(filename, '.');
    char ext[FILES_EXT_MAX + 1];
    size_t el = dot != NULL ? strlen(dot + 1) : 0;
    int ok = el >= 1 && el <= FILES_EXT_MAX;
    for (size_t i = 0; ok && i < el; i++) {
        unsigned char c = (unsigned char)dot[1 + i];
        ok = isascii(c) && isalnum(c);
        ext[i] = (char)tolower(c);
    }
    if (!ok)
        return refuse(m, 415,
                      "File type not allowed: the name has no usable extension;"
                      " allowed: %s",
                      cfg->upload_allowed_types);
    ext[el] = '\0';
    if (m->kind == MULTIPART_IMPORT) {
        m->type = NULL;
        for (size_t i = 0; i < sizeof(import_types) / sizeof(import_types[0]); i++)
            if (strcmp(import_types[i].ext, ext) == 0)
                m->type = &import_types[i];
        if (m->type == NULL)
            return refuse(m, 415, "Unsupported Media Type: import takes .json, .jsonl or .zip");
    } else if (!config_list_has(&cfg->upload_types, ext, el, 0)) {
        return refuse(m, 415, "File type '.%s' is not allowed; allowed: %s", ext,
                      cfg->upload_allowed_types);
    } else {
        m->type = files_type_by_ext(ext);
    }
    j->content_type = m->type != NULL ? m->type->mime : "application/octet-stream";

    j->fd = files_create_temp(cfg, ext, j->name, j->tmp_path);
    if (j->fd < 0) {
        int err = errno;
        log_error("event=upload_open_failed dir=%s error=\"%s\"", cfg->public_dir, strerror(err));
        return refuse_io(m, err);
    }
    if ((j->original_name = clean_name(filename)) == NULL)
        return refuse(m, 500, "Unable to store the file");
    return 0;
}

static int file_write(struct multipart *m, const char *buf, size_t len)
{
    struct upload_job *j = m->job;
    if (j->fd < 0)
        return refuse(m, 400, "Malformed multipart body");
    if (len > m->max_size - j->size) /* refuse before writing a byte too many */
        return too_large(m);
    if (m->type != NULL && m->type->magic == NULL && memchr(buf, '\0', len) != NULL)
        return refuse(m, 415, "File content does not match its type '.%s'", m->type->ext);
    if (m->head_len < FILES_HEAD) {
        size_t take = FILES_HEAD - m->head_len < len ? FILES_HEAD - m->head_len : len;
        memcpy(m->head + m->head_len, buf, take);
        m->head_len += take;
        /* Checked as soon as enough bytes are in, so a mislabelled file is
         * refused at its first chunk. */
        if (m->head_len == FILES_HEAD && !files_sniff_ok(m->type, m->head, m->head_len))
            return refuse(m, 415, "File content does not match its type '.%s'", m->type->ext);
    }
    int err = files_write(j->fd, buf, len);
    if (err != 0) {
        log_error("event=upload_write_failed path=%s error=\"%s\"", j->tmp_path, strerror(err));
        return refuse_io(m, err);
    }
    j->size += len;
    return 0;
}

static int spa_file_cb(void *data, const char *name, const char *filename, char *buf, int len,
                       enum lws_spa_fileupload_states state)
{
    struct multipart *m = data;
    /* CLOSE comes from lws_spa_destroy/finalize: answering -1 to it makes
     * lws skip freeing its parser state. */
    if (state == LWS_UFS_CLOSE)
        return 0;
    if (m->status != 0)
        return -1;
    switch (state) {
    case LWS_UFS_OPEN:
        return file_open(m, name, filename);
    case LWS_UFS_CONTENT:
    case LWS_UFS_FINAL_CONTENT:
        if (len > 0 && file_write(m, buf, (size_t)len) != 0)
            return -1;
        m->nul_file += count_nul(buf, (size_t)len);
        if (state == LWS_UFS_FINAL_CONTENT) {
            if (m->job->size == 0)
                return refuse(m, 400, "Invalid field 'file': the file is empty");
            if (!files_sniff_ok(m->type, m->head, m->head_len))
                return refuse(m, 415, "File content does not match its type '.%s'", m->type->ext);
            m->file_done = 1;
        }
        return 0;
    case LWS_UFS_CLOSE:
        return 0;
    }
    return 0;
}

/* ------------------------------------------------------------------ API */

struct multipart *multipart_start(struct lws *wsi, const struct config *cfg,
                                  enum multipart_kind kind, unsigned *status, char *msg,
                                  size_t msglen)
{
    uint64_t max = kind == MULTIPART_IMPORT ? (uint64_t)cfg->import_max_bytes
                                            : (uint64_t)cfg->max_file_size_mb * 1024 * 1024;

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
    if (declared > max + (uint64_t)cfg->max_chat_message_bytes + MULTIPART_FORM_SLACK) {
        /* The file cannot fit: refuse before reading a byte of it. */
        *status = 413;
        if (kind == MULTIPART_IMPORT)
            snprintf(msg, msglen, "File too large: the limit is %d bytes", cfg->import_max_bytes);
        else
            snprintf(msg, msglen, "File too large: the limit is %d MB", cfg->max_file_size_mb);
        return NULL;
    }

    struct multipart *m = calloc(1, sizeof(*m));
    if (m == NULL || (m->job = upload_job_new()) == NULL)
        goto oom;
    m->cfg = cfg;
    m->kind = kind;
    m->max_size = max;
    lws_spa_create_info_t si;
    memset(&si, 0, sizeof(si));
    si.param_names = multipart_fields;
    si.count_params = F_COUNT;
    /* Every small field and the prompt live here; the file passes through
     * it in chunks of what is left. See MULTIPART_WINDOW for its size. */
    si.max_storage = cfg->max_chat_message_bytes + MULTIPART_FORM_SLACK + MULTIPART_WINDOW +
                     MULTIPART_STORAGE_MARGIN;
    si.opt_cb = spa_file_cb;
    si.opt_data = m;
    if ((m->spa = lws_spa_create_via_info(wsi, &si)) == NULL)
        goto oom;
    return m;
oom:
    multipart_free(m);
    *status = 500;
    snprintf(msg, msglen, "Out of memory");
    return NULL;
}

void multipart_require_user(struct multipart *m, const char *user_id)
{
    snprintf(m->required_user, sizeof(m->required_user), "%s", user_id);
}

const char *multipart_message(const struct multipart *m) { return m->message; }

static int in_file_part(const struct multipart *m) { return m->job->fd >= 0 && !m->file_done; }

unsigned multipart_body(struct multipart *m, const void *in, size_t len)
{
    const char *p = in;
    /* Window by window (see MULTIPART_WINDOW), at the same offsets however
     * the body arrives. */
    while (m->status == 0 && len > 0) {
        size_t off = (size_t)(m->fed % MULTIPART_WINDOW);
        size_t n = MULTIPART_WINDOW - off < len ? MULTIPART_WINDOW - off : len;
        if (off == 0)
            m->window_in_file = in_file_part(m);
        m->nul_body += count_nul(p, n);
        if (lws_spa_process(m->spa, p, (int)n) != 0)
            return fail(m, 400, "Malformed multipart body, or fields over %d bytes",
                        m->cfg->max_chat_message_bytes);
        m->fed += n;
        p += n;
        len -= n;
        if (m->fed % MULTIPART_WINDOW == 0 && !(m->window_in_file && in_file_part(m)) &&
            (m->outside += MULTIPART_WINDOW) >
                (uint64_t)m->cfg->max_chat_message_bytes + MULTIPART_FORM_SLACK)
            fail(m, 400, "Malformed multipart body, or fields over %d bytes",
                 m->cfg->max_chat_message_bytes);
    }
    return m->status;
}

/* A text field: NULL when absent. */
static const char *field(struct multipart *m, int i)
{
    const char *s = lws_spa_get_string(m->spa, i);
    return s != NULL && lws_spa_get_length(m->spa, i) > 0 ? s : NULL;
}

/* The text fields, in the order the client's errors should name them. */
static unsigned check_fields(struct multipart *m)
{
    struct upload_job *j = m->job;
    const char *user = field(m, F_USER), *session = field(m, F_SESSION);
    const char *model = field(m, F_MODEL), *prompt = field(m, F_PROMPT);
    if (user == NULL)
        return fail(m, 400, "Invalid field 'user_id': missing");
    if (!uuid_valid(user))
        return fail(m, 400, "Invalid field 'user_id': not a UUID");
    if (m->kind == MULTIPART_IMPORT) { /* the file and whose it is */
        if (!m->file_done)
            return fail(m, 400, "Invalid field 'file': missing or incomplete");
        uuid_normalize(user, j->user_id);
        if (m->required_user[0] != '\0' && strcmp(j->user_id, m->required_user) != 0)
            return fail(m, 403, "Not Allowed To Act As This User");
        return 0;
    }
    if (session == NULL)
        return fail(m, 400, "Invalid field 'session_id': missing");
    j->session_new = strcmp(session, "NEW") == 0;
    if (!j->session_new && !uuid_valid(session))
        return fail(m, 400, "Invalid field 'session_id': not a UUID or \"NEW\"");
    if (j->session_new && model == NULL)
        return fail(m, 400, "Invalid field 'model_name': missing (needed for a NEW session)");
    if (prompt != NULL && strlen(prompt) > (size_t)m->cfg->max_chat_message_bytes)
        return fail(m, 400, "Invalid field 'session_prompt': longer than %d bytes",
                    m->cfg->max_chat_message_bytes);
    if ((model != NULL && !util_utf8_valid((const unsigned char *)model, strlen(model))) ||
        (prompt != NULL && !util_utf8_valid((const unsigned char *)prompt, strlen(prompt))))
        return fail(m, 400, "Invalid field: text fields must be UTF-8");
    if (!m->file_done)
        return fail(m, 400, "Invalid field 'file': missing or incomplete");

    uuid_normalize(user, j->user_id);
    if (m->required_user[0] != '\0' && strcmp(j->user_id, m->required_user) != 0)
        return fail(m, 403, "Not Allowed To Act As This User");
    if (!j->session_new)
        uuid_normalize(session, j->session_id);
    j->model_name = strdup(model != NULL ? model : "");
    j->prompt = strdup(prompt != NULL ? prompt : "");
    if (j->model_name == NULL || j->prompt == NULL)
        return fail(m, 500, "Out of memory");
    return 0;
}

unsigned multipart_end(struct multipart *m)
{
    lws_spa_finalize(m->spa);
    /* Only once the whole file went through the callback does nul_file
     * count all of its NULs; an unfinished file is refused below anyway. */
    if (m->status == 0 && m->file_done && m->nul_body != m->nul_file)
        fail(m, 400, "Malformed multipart body: a NUL byte outside the file");
    if (m->status == 0)
        check_fields(m);
    return m->status;
}

struct upload_job *multipart_job(struct multipart *m)
{
    struct upload_job *j = m->job;
    m->job = NULL;
    multipart_free(m);
    return j;
}

void multipart_free(struct multipart *m)
{
    if (m == NULL)
        return;
    if (m->spa != NULL)
        lws_spa_destroy(m->spa);
    if (m->job != NULL && m->status == 0 && m->job->tmp_path[0] != '\0')
        log_info("event=upload_cut_off file=%s bytes=%llu", m->job->name,
                 (unsigned long long)m->job->size);
    upload_job_free(m->job);
    free(m);
}
