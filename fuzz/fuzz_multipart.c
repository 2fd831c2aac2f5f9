/* fuzz_multipart.c - libFuzzer target over POST /upload's body parsing:
 * chatd's lws_spa configuration (field names, storage size, the file
 * callback) and everything upload.c does with what lws_spa hands it
 * (extension and content checks, the size limit, the temporary file,
 * the field checks), fed a fuzzed Content-Type (so the boundary) and a
 * fuzzed body in fuzzed chunks.
 *
 * Design. lws_spa takes the boundary from the request itself:
 * lws_spa_create_via_info(wsi, ...) calls lws_hdr_copy(wsi, buf, 205,
 * WSI_TOKEN_HTTP_CONTENT_TYPE), and at the closing "--boundary--" it
 * writes wsi->http.rx_content_remain = 0; nothing else of the wsi is
 * touched. So rather than a live lws context and a loopback connection per
 * input (hundreds of inputs a second at best, and mostly lws's HTTP parser
 * being fuzzed), this file
 *   - defines lws_hdr_copy() and lws_hdr_total_length() itself: Debian's
 *     libwebsockets.so calls them through its PLT, so these definitions in
 *     the executable take their place for lws_spa as well as for
 *     upload.c, and answer from the fuzzed headers, with lws 4.1's
 *     semantics (0 when absent, -1 when the value does not fit);
 *   - passes a zeroed static block as the wsi, big enough for lws's one
 *     store into it, which a probe at start-up checks lands inside it;
 *   - #includes upload.c, so that the checks below can look at the parsed
 *     state (struct upload is private). The upload runs through the same
 *     entry points http.c uses: upload_start_config() (upload_start()
 *     without a server), upload_body() per chunk, upload_parse_end() (the
 *     first half of upload_finish(); the second half is the worker's
 *     PostgreSQL part, not fuzzed here) and upload_abort(). Temporary
 *     files go to a private directory under /tmp.
 * This runs at about 10,000 inputs a second on one core.
 *
 * Input: one knob byte, the Content-Type value up to the first '\n', the
 * body. Knob bits 0-2: chunk size (1, 2, 3, 7, 64, 509, 4096, whole);
 * bits 3-4: file size limit (MAX_FILE_SIZE's 1 MiB, or 1, 17, 1000 bytes,
 * set on the upload after upload_start so that 413 is reachable);
 * bits 5-6: UPLOAD_ALLOWED_TYPES (the default, "txt", ".PNG, jpg,bin,md",
 * "webp"); bit 7: MAX_CHAT_MESSAGE_BYTES 16 (the minimum, so lws_spa's
 * storage is 4112 bytes and overflows within an input) or the default.
 *
 * Checked beyond "no crash, no sanitizer report":
 *   - the status is 0, 400, 413 or 415 (500 is a local I/O failure, which
 *     cannot happen here), with a message of printable ASCII;
 *   - the temporary file never holds more than the size limit;
 *   - on 0: exactly one temporary file, of u->size (> 0) bytes, whose
 *     extension is allowed, stored name has the served shape, first bytes
 *     match a known type's magic (no NUL for text types); user_id and
 *     session_id are UUIDs (or "NEW"); the original name is clean UTF-8;
 *   - after upload_abort() no file is left in the directory;
 *   - the outcome (status, message, fields, file bytes) is the same when
 *     the body comes in chunks as when it comes whole.
 * libwebsockets itself is not instrumented: its plain stores out of bounds
 * go unseen, its memcpy()s (ASan's interceptor) do not.
 *
 * Found so far: lws_spa overran its field storage when a field filled it
 * while a boundary was half matched (heap-buffer-overflow in
 * lws_spa_process, attacker-controlled length); upload.c now bounds what
 * reaches that storage (UPLOAD_WINDOW). Seeds regress-* in
 * fuzz/corpus/multipart replay it; tests/integration/test_abuse.py
 * (UploadAbuse) sends it to a running chatd. */
#include "../src/upload.c"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------- the fake request */

static unsigned char fake_wsi[64 * 1024] __attribute__((aligned(64)));
static char hdr_ctype[4096];
static char hdr_clen[32];

static const char *fake_header(struct lws *wsi, enum lws_token_indexes h)
{
    if (wsi != (struct lws *)fake_wsi)
        abort(); /* no real connection exists in this process */
    if (h == WSI_TOKEN_HTTP_CONTENT_TYPE)
        return hdr_ctype;
    if (h == WSI_TOKEN_HTTP_CONTENT_LENGTH)
        return hdr_clen;
    return "";
}

int lws_hdr_total_length(struct lws *wsi, enum lws_token_indexes h)
{
    return (int)strlen(fake_header(wsi, h));
}

int lws_hdr_copy(struct lws *wsi, char *dst, int len, enum lws_token_indexes h)
{
    const char *v = fake_header(wsi, h);
    int n = (int)strlen(v);
    *dst = '\0';
    if (n == 0)
        return 0;
    if (n >= len)
        return -1;
    memcpy(dst, v, (size_t)n + 1);
    return n;
}

/* ----------------------------------------------------------- set-up */

static struct config cfg;
static char dir[] = "/tmp/fuzz_multipart.XXXXXX";
static char *default_types;
static int verbose; /* FUZZ_MULTIPART_VERBOSE=1: each input's outcome on stderr */

static size_t dir_count(void)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        abort();
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

static struct upload *start(const char *ctype, size_t body_len, unsigned *status, char *msg,
                            size_t msglen)
{
    snprintf(hdr_ctype, sizeof(hdr_ctype), "%s", ctype);
    snprintf(hdr_clen, sizeof(hdr_clen), "%zu", body_len);
    return upload_start_config((struct lws *)fake_wsi, &cfg, NULL, status, msg, msglen);
}

/* lws_spa's store into the wsi must land inside fake_wsi. */
static void probe_fake_wsi(void)
{
    static const char body[] = "--b\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nx"
                               "\r\n--b--\r\n";
    memset(fake_wsi, 0xa5, sizeof(fake_wsi));
    unsigned status = 0;
    char msg[256];
    struct upload *u =
        start("multipart/form-data; boundary=b", sizeof(body) - 1, &status, msg, sizeof(msg));
    if (u == NULL)
        abort();
    upload_body(u, body, sizeof(body) - 1);
    upload_abort(u);
    size_t changed = 0;
    for (size_t i = 0; i < sizeof(fake_wsi); i++)
        changed += fake_wsi[i] != 0xa5;
    if (changed == 0) {
        fprintf(stderr, "fuzz_multipart: lws_spa no longer writes where expected into the wsi;"
                        " revisit the design notes at the top of fuzz_multipart.c\n");
        abort();
    }
    memset(fake_wsi, 0, sizeof(fake_wsi));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    lws_set_log_level(LLL_ERR, NULL);
    verbose = getenv("FUZZ_MULTIPART_VERBOSE") != NULL;
    log_set_level(LOG_ERROR);
    static const char *const mine[] = {"MAX_FILE_SIZE", "MAX_CHAT_MESSAGE_BYTES",
                                       "UPLOAD_ALLOWED_TYPES", "PUBLIC_DIR"};
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
        unsetenv(mine[i]);
    char err[256];
    if (config_from_env(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_multipart: %s\n", err);
        abort();
    }
    if (mkdtemp(dir) == NULL)
        abort();
    atexit(remove_dir);
    free(cfg.public_dir);
    cfg.public_dir = strdup(dir);
    default_types = cfg.upload_allowed_types;
    probe_fake_wsi();
    return 0;
}

/* ------------------------------------------------------ the outcome */

struct outcome {
    unsigned status;
    char message[256];
    uint64_t size;
    char user_id[UUID_STR_LEN + 1], session_id[UUID_STR_LEN + 1];
    int session_new;
    char *model, *prompt, *original;
    unsigned char *file;
    size_t file_len;
};

static void outcome_free(struct outcome *o)
{
    free(o->model);
    free(o->prompt);
    free(o->original);
    free(o->file);
}

static int same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static char *dup_or_null(const char *s) { return s != NULL ? strdup(s) : NULL; }

static void check_accepted(struct upload *u, struct outcome *o)
{
    if (!u->file_done || u->fd < 0 || u->size == 0 || dir_count() != 1)
        abort();
    if (!upload_name_valid(u->stored_name))
        abort();
    const char *ext = strchr(u->stored_name, '.') + 1;
    if (!ext_allowed(u->cfg->upload_allowed_types, ext) || u->type != type_by_ext(ext))
        abort();
    /* The file on disk, read back. */
    struct stat st;
    if (fstat(u->fd, &st) != 0 || (uint64_t)st.st_size != u->size)
        abort();
    o->file_len = (size_t)st.st_size;
    o->file = malloc(o->file_len);
    int rfd = open(u->tmp_path, O_RDONLY | O_CLOEXEC);
    if (o->file == NULL || rfd < 0 || pread(rfd, o->file, o->file_len, 0) != (ssize_t)o->file_len)
        abort();
    close(rfd);
    const struct upload_type *t = u->type;
    if (t != NULL && t->magic != NULL &&
        (o->file_len < t->magic_len || memcmp(o->file, t->magic, t->magic_len) != 0))
        abort();
    if (t != NULL && strcmp(t->ext, "webp") == 0 &&
        (o->file_len < 12 || memcmp(o->file + 8, "WEBP", 4) != 0))
        abort();
    if (t != NULL && t->magic == NULL && memchr(o->file, '\0', o->file_len) != NULL)
        abort();
    if (!uuid_valid(u->user_id) || (!u->session_new && !uuid_valid(u->session_id)))
        abort();
    if (u->model_name == NULL || u->prompt == NULL || u->original_name == NULL)
        abort();
    if (strlen(u->prompt) > (size_t)u->cfg->max_chat_message_bytes)
        abort();
    size_t nl = strlen(u->original_name);
    if (nl > UPLOAD_NAME_MAX || !utf8_valid((unsigned char *)u->original_name, nl))
        abort();
    for (size_t i = 0; i < nl; i++) {
        unsigned char c = (unsigned char)u->original_name[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            abort();
    }
    memcpy(o->user_id, u->user_id, sizeof(o->user_id));
    memcpy(o->session_id, u->session_id, sizeof(o->session_id));
    o->session_new = u->session_new;
    o->model = dup_or_null(u->model_name);
    o->prompt = dup_or_null(u->prompt);
    o->original = dup_or_null(u->original_name);
}

static void run(const char *ctype, const uint8_t *body, size_t len, size_t chunk,
                uint64_t max_size, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    struct upload *u = start(ctype, len, &o->status, o->message, sizeof(o->message));
    if (u == NULL) {
        /* Refused on the headers alone. */
        if ((o->status != 415 && o->status != 413) || o->message[0] == '\0')
            abort();
        return;
    }
    if (max_size != 0)
        u->max_size = max_size;
    unsigned st = 0;
    for (size_t off = 0; off < len && st == 0; off += chunk)
        st = upload_body(u, body + off, len - off < chunk ? len - off : chunk);
    if (st == 0)
        st = upload_parse_end(u);
    if (st != u->status)
        abort();
    o->status = st;
    o->size = u->size;
    if (u->size > u->max_size)
        abort();
    if (u->fd >= 0) {
        struct stat fs;
        if (fstat(u->fd, &fs) != 0 || (uint64_t)fs.st_size != u->size)
            abort();
    }
    if (st == 0) {
        check_accepted(u, o);
    } else {
        if (st == 500 || st == 507)
            fprintf(stderr, "fuzz_multipart: %u %s: is %s full or unwritable?\n", st, u->message, dir);
        if (st != 400 && st != 413 && st != 415)
            abort();
        if (u->message[0] == '\0')
            abort();
        for (const char *p = u->message; *p != '\0'; p++)
            if (*p < 0x20 || *p > 0x7e)
                abort();
        snprintf(o->message, sizeof(o->message), "%s", u->message);
        if (dir_count() > 1)
            abort();
    }
    upload_abort(u);
    if (dir_count() != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[8] = {1, 2, 3, 7, 64, 509, 4096, SIZE_MAX};
    static const uint64_t limits[4] = {0, 1, 17, 1000};
    static char types[4][40] = {"", "txt", ".PNG, jpg,bin,md", "webp"};

    if (size < 1)
        return 0;
    unsigned knob = data[0];
    data++, size--;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t clen = nl != NULL ? (size_t)(nl - data) : size;
    if (clen >= sizeof(hdr_ctype))
        return 0;
    char ctype[sizeof(hdr_ctype)];
    memcpy(ctype, data, clen);
    ctype[clen] = '\0';
    /* What lws's header parser could hand over: a value ends at CR, LF or NUL. */
    ctype[strcspn(ctype, "\r")] = '\0';
    const uint8_t *body = nl != NULL ? nl + 1 : data + size;
    size_t len = (size_t)(data + size - body);

    cfg.max_file_size_mb = 1;
    cfg.max_chat_message_bytes = (knob & 0x80) ? 16 : 65536;
    cfg.upload_allowed_types = ((knob >> 5) & 3) == 0 ? default_types : types[(knob >> 5) & 3];
    uint64_t max_size = limits[(knob >> 3) & 3];
    size_t chunk = chunks[knob & 7];

    struct outcome whole, pieces;
    run(ctype, body, len, SIZE_MAX, max_size, &whole);
    if (chunk != SIZE_MAX) {
        run(ctype, body, len, chunk, max_size, &pieces);
        if (whole.status != pieces.status || strcmp(whole.message, pieces.message) != 0 ||
            whole.size != pieces.size || whole.file_len != pieces.file_len ||
            (whole.file_len > 0 && memcmp(whole.file, pieces.file, whole.file_len) != 0) ||
            strcmp(whole.user_id, pieces.user_id) != 0 ||
            strcmp(whole.session_id, pieces.session_id) != 0 ||
            whole.session_new != pieces.session_new || !same(whole.model, pieces.model) ||
            !same(whole.prompt, pieces.prompt) || !same(whole.original, pieces.original)) {
            fprintf(stderr, "fuzz_multipart: chunked (%zu) and whole bodies differ: %u '%s' vs %u '%s'\n",
                    chunk, pieces.status, pieces.message, whole.status, whole.message);
            abort();
        }
        outcome_free(&pieces);
    }
    if (verbose)
        fprintf(stderr, "fuzz_multipart: %u %s%s(%llu file bytes)\n", whole.status, whole.message,
                whole.message[0] != '\0' ? " " : "", (unsigned long long)whole.size);
    outcome_free(&whole);
    return 0;
}
