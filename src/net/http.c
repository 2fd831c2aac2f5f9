/* http.c - HTTP requests that are not WebSocket upgrades.
 *
 *   GET  /healthz          200 while the process serves
 *   GET  /readyz           200 when PostgreSQL, Redis and the agent answer,
 *                          else 503 naming the part that is down
 *   GET  /metrics          Prometheus text (lib/metrics.c)
 *   POST /upload           a file, multipart (net/multipart.c, then
 *                          work/upload.c on a worker)
 *   GET  /uploads/<name>   a stored file; only names of the stored shape
 *   GET  /sessions/<id>/export, GET /export
 *                          a download of the user's history, streamed
 *                          from PostgreSQL page by page (work/export.c)
 *   OPTIONS on any of them CORS preflight (CORS_ORIGINS)
 *   GET  /client-config    what the chat page needs to sign in
 *   GET  /, /<file>, /lib/<name>/<file>
 *                          the chat page (net/web.c), when WEB_DIR is set
 *
 * Answers known at once are written from LWS_CALLBACK_HTTP. /readyz and
 * /upload need blocking work, which the service thread never does: they
 * become a transaction (struct http_txn) named by a 64-bit id that is never
 * reused; a worker does the work and posts the answer to the outbox
 * (outbox_http); txn_deliver() (net/txn.c) looks the id up (an answer for a
 * closed connection finds nothing and is dropped, never written to freed
 * memory) and the answer is written from LWS_CALLBACK_HTTP_WRITEABLE.
 *
 * An export is a transaction whose answer comes in pieces: each is written
 * as one HTTP/1.1 chunk, and only then is the job handed back for the next
 * one (export_next), so a slow reader holds one piece, not the history. A
 * failure after the headers ends the connection without the last chunk,
 * which clients report as an incomplete transfer. */
#include "net/http.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "net/answer.h"
#include "net/bearer.h"
#include "net/conn.h"
#include "net/multipart.h"
#include "net/route.h"
#include "net/txn.h"
#include "net/urlarg.h"
#include "net/web.h"
#include "store/files.h"
#include "wire/auth.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/export.h"
#include "work/export_zip.h"
#include "work/import.h"
#include "work/ready.h"
#include "work/share.h"
#include "work/turn.h"
#include "work/upload.h"

/* How long a transaction may wait for its worker (PostgreSQL connects
 * time out after 5 s, the agent probe after 1 s). */
#define HTTP_WORKER_SECONDS 60

/* ----------------------------------------------------------------- CORS */

/* The Access-Control-Allow-Origin to send: "*" when CORS_ORIGINS is "*",
 * the request's own Origin when it is listed, else "" (no header, and the
 * browser keeps the answer from the page). */
static void cors_origin(struct lws *wsi, const struct config *cfg, char out[ANSWER_ORIGIN_MAX])
{
    out[0] = '\0';
    if (cfg->cors_any) {
        strcpy(out, "*");
        return;
    }
    char origin[ANSWER_ORIGIN_MAX];
    if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
        return;
    if (config_list_has(&cfg->cors_list, origin, strlen(origin), 0))
        memcpy(out, origin, strlen(origin) + 1);
}

static int respond_preflight(struct lws *wsi, const char *origin)
{
    /* Echo the headers the browser asks for, when they are plain tokens;
     * the client sends none beyond the simple ones, so this is generous. */
    char want[256] = "content-type";
    char asked[256];
    if (lws_hdr_custom_copy(wsi, asked, sizeof(asked), "access-control-request-headers:", 31) > 0) {
        int ok = 1;
        for (const char *c = asked; *c != '\0'; c++)
            if (!(isalnum((unsigned char)*c) || strchr("-_, ", *c) != NULL))
                ok = 0;
        if (ok)
            snprintf(want, sizeof(want), "%s", asked);
    }
    unsigned char hdr[LWS_PRE + 2048];
    unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
    if (lws_add_http_common_headers(wsi, HTTP_STATUS_NO_CONTENT, NULL, 0, &p, end) ||
        answer_add_cors(wsi, origin, &p, end) ||
        answer_add_header(wsi, "access-control-allow-methods:", "GET, POST, OPTIONS", &p, end) ||
        answer_add_header(wsi, "access-control-allow-headers:", want, &p, end) ||
        answer_add_header(wsi, "access-control-max-age:", "600", &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    metrics_http_response(HTTP_STATUS_NO_CONTENT);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* --------------------------------------------------------------- /readyz */

static int serve_readyz(struct http_state *hs, struct lws *wsi, const char *origin)
{
    if (hs->conns->draining)
        return answer_json(wsi, 503, "{\"status\":\"unavailable\",\"draining\":true}", origin);
    struct http_txn *t = txn_new(&hs->txns, wsi, origin);
    if (t == NULL || ready_probe(hs->app, t->id) != 0) {
        txn_free(t);
        return answer_message(wsi, 500, "Out of memory", origin, 0);
    }
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_WORKER_SECONDS);
    return 0;
}

/* -------------------------------------------------------- other routes */

static int serve_metrics(struct http_state *hs, struct lws *wsi, const char *origin)
{
    size_t len = 0;
    char *text = metrics_render(hs->conns->n, turn_active(), &len);
    if (text == NULL)
        return answer_message(wsi, 500, "Out of memory", origin, 0);
    int rc = answer(wsi, HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
                    origin, 0);
    free(text);
    return rc;
}

/* A 200 with the file at path, sent from the event loop piece by piece
 * (lws_serve_http_file), with the extra headers [extra, end). */
static int serve_file(struct lws *wsi, const char *path, const char *ctype,
                      const unsigned char *extra, const unsigned char *end)
{
    metrics_http_response(HTTP_STATUS_OK);
    int n = lws_serve_http_file(wsi, path, ctype, (const char *)extra, (int)(end - extra));
    if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
        return -1;
    return 0;
}

static int serve_upload_file(struct http_state *hs, struct lws *wsi, const char *name,
                             const char *origin)
{
    /* Only names of the shape we store: "..", "%2f" (lws decodes it to a
     * slash), backslashes and anything else never reach the file system. */
    if (!files_name_valid(name))
        return answer_message(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", origin, 0);
    /* With AUTH_MODE=jwt the name alone is not enough: a link we signed,
     * unexpired. A refused one looks exactly like a missing file. */
    char exp[32], sig[80];
    const char *e = urlarg_get(wsi, "exp", exp, sizeof(exp)) == URLARG_FOUND ? exp : NULL;
    const char *g = urlarg_get(wsi, "sig", sig, sizeof(sig)) == URLARG_FOUND ? sig : NULL;
    if (!auth_file_ref_ok(hs->app->cfg, name, e, g, time(NULL)))
        return answer_message(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", origin, 0);
    char path[FILES_PATH_MAX];
    struct stat st;
    if (files_path(hs->app->cfg, name, path) != 0 || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return answer_message(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", origin, 0);

    unsigned char extra[512], *p = extra, *end = extra + sizeof(extra);
    /* Stored names are random and never reused: the content never
     * changes. */
    if (answer_add_cors(wsi, origin, &p, end) ||
        answer_add_header(wsi, "cache-control:", "public, max-age=31536000, immutable", &p, end))
        return -1;
    return serve_file(wsi, path, files_content_type(name), extra, p);
}

static int serve_upload(struct http_state *hs, struct lws *wsi, const char *origin,
                        unsigned long long body_length, enum multipart_kind kind)
{
    struct http_txn *t = txn_new(&hs->txns, wsi, origin);
    if (t == NULL)
        return -1;
    t->body_declared = body_length;
    const struct config *cfg = hs->app->cfg;
    char user[UUID_STR_LEN + 1] = "";
    const char *why = "";
    /* Before the body: an anonymous client gets no disk written for it. */
    if (auth_required(cfg) && bearer_check(cfg, wsi, 0, user, &why) != 0) {
        log_info("event=auth_failed path=%s reason=\"%s\"",
                 kind == MULTIPART_IMPORT ? "/import" : "/upload", why);
        return txn_refuse(wsi, t, HTTP_STATUS_UNAUTHORIZED, "Unauthorized");
    }
    unsigned status = 0;
    char message[256];
    t->importing = kind == MULTIPART_IMPORT;
    t->upload = multipart_start(wsi, cfg, kind, &status, message, sizeof(message));
    if (t->upload == NULL)
        return txn_refuse(wsi, t, status, message);
    if (user[0] != '\0')
        multipart_require_user(t->upload, user);
    return 0; /* the body comes with LWS_CALLBACK_HTTP_BODY */
}

/* ------------------------------------------------------------ the page */

/* What the page cannot know by itself: how to sign in and what an upload
 * may be; nothing secret. With AUTH_MODE=jwt, a request carrying a token
 * learns whether it is accepted (401 if not, else "user_id" is its sub):
 * a browser cannot read why a WebSocket upgrade was refused, so the page
 * asks here before connecting, and again when reconnecting keeps failing
 * (an expired token must send the person to sign in, not retry forever). */
static int serve_client_config(struct http_state *hs, struct lws *wsi, const char *origin)
{
    const struct config *cfg = hs->app->cfg;
    char user[UUID_STR_LEN + 1] = "";
    char probe[AUTH_TOKEN_MAX + 1];
    if (auth_required(cfg) && bearer_token(wsi, 0, probe, sizeof(probe)) != 0) {
        const char *why = "";
        if (bearer_check(cfg, wsi, 0, user, &why) != 0)
            return answer_message(wsi, HTTP_STATUS_UNAUTHORIZED, "Unauthorized", origin, 0);
    }
    json_t *types = json_array();
    for (size_t i = 0; types != NULL && i < cfg->upload_types.n; i++)
        json_array_append_new(types, json_string(cfg->upload_types.item[i]));
    json_t *o = json_pack("{s:s, s:s, s:I, s:o?}", "auth_mode", cfg->auth_mode, "default_user",
                          auth_required(cfg) ? "" : cfg->web_default_user, "max_file_bytes",
                          (json_int_t)cfg->max_file_size_mb * 1024 * 1024, "upload_types", types);
    if (o != NULL && user[0] != '\0')
        json_object_set_new(o, "user_id", json_string(user));
    char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL)
        return answer_message(wsi, 500, "Out of memory", origin, 0);
    int rc = answer(wsi, HTTP_STATUS_OK, ANSWER_JSON, body, strlen(body), origin, 0);
    free(body);
    return rc;
}

/* Headers every page answer carries, 200 or 304. The page and its
 * libraries change only with a deployment, but a deployment must be seen
 * at the next load: "no-cache" (revalidate each time) with a validator
 * that makes the revalidation a 304 without a body. */
static int add_page_headers(struct lws *wsi, const char *etag, const char *ctype, unsigned char **p,
                            unsigned char *end)
{
    char host[256] = "", csp[WEB_CSP_MAX];
    if (lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) <= 0)
        host[0] = '\0';
    web_csp(host, csp);
    /* lws (LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE)
     * already puts nosniff, DENY framing, no-referrer and a generic policy
     * on every answer; a browser enforces every policy it is given, so
     * ours narrows that one to the page's own host. */
    return answer_add_header(wsi, "etag:", etag, p, end) ||
           answer_add_header(wsi, "cache-control:", "no-cache", p, end) ||
           (strncmp(ctype, "text/html", 9) == 0 &&
            answer_add_header(wsi, "content-security-policy:", csp, p, end));
}

static int serve_page(struct http_state *hs, struct lws *wsi, const char *uri, const char *origin)
{
    char path[WEB_PATH_MAX], etag[WEB_ETAG_MAX];
    const char *ctype;
    struct stat st;
    if (web_resolve(&hs->web, uri, path, &ctype, &st) != 0)
        return answer_message(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", origin, 0);
    web_etag(&st, etag);

    char inm[256];
    if (lws_hdr_copy(wsi, inm, sizeof(inm), WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
        web_etag_match(inm, etag)) {
        unsigned char hdr[LWS_PRE + 2048];
        unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
        if (lws_add_http_header_status(wsi, HTTP_STATUS_NOT_MODIFIED, &p, end) ||
            add_page_headers(wsi, etag, ctype, &p, end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        metrics_http_response(HTTP_STATUS_NOT_MODIFIED);
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }

    unsigned char extra[2048], *p = extra, *end = extra + sizeof(extra);
    if (add_page_headers(wsi, etag, ctype, &p, end))
        return -1;
    return serve_file(wsi, path, ctype, extra, p);
}

/* Whose a GET of one's own data is (an export, an import's state): the
 * token's sub with AUTH_MODE=jwt (as a header, or ?token= for a plain
 * link, which cannot carry a header), else ?user_id=. 0, or 1 when it was
 * refused (*rc is the answer's). */
static int http_user(struct http_state *hs, struct lws *wsi, const char *origin, const char *path,
                     char user[UUID_STR_LEN + 1], int *rc)
{
    const struct config *cfg = hs->app->cfg;
    const char *why = "";
    if (auth_required(cfg)) {
        if (bearer_check(cfg, wsi, 1, user, &why) != 0) {
            log_info("event=auth_failed path=%s reason=\"%s\"", path, why);
            *rc = answer_message(wsi, HTTP_STATUS_UNAUTHORIZED, "Unauthorized", origin, 0);
            return 1;
        }
        return 0;
    }
    char u[UUID_STR_LEN + 1];
    if (urlarg_get(wsi, "user_id", u, sizeof(u)) != URLARG_FOUND || !uuid_valid(u)) {
        *rc = answer_message(wsi, HTTP_STATUS_BAD_REQUEST, "Missing or invalid user_id", origin, 0);
        return 1;
    }
    uuid_normalize(u, user);
    return 0;
}

/* GET /import/<id>: the state of one of the user's imports. */
static int serve_import_state(struct http_state *hs, struct lws *wsi, const char *id,
                              const char *origin)
{
    char user[UUID_STR_LEN + 1] = "", iid[UUID_STR_LEN + 1];
    int rc;
    if (http_user(hs, wsi, origin, "import", user, &rc))
        return rc;
    if (!uuid_valid(id)) /* names no import, like someone else's */
        return answer_message(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", origin, 0);
    uuid_normalize(id, iid);
    struct http_txn *t = txn_new(&hs->txns, wsi, origin);
    if (t == NULL)
        return -1;
    if (import_state_submit(hs->app, t->id, user, iid) != 0) {
        txn_free(t);
        return answer_message(wsi, 500, "Out of memory", origin, 0);
    }
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_WORKER_SECONDS);
    return 0;
}

/* GET /export and GET /sessions/<id>/export. */
static int serve_export(struct http_state *hs, struct lws *wsi, const char *session_id,
                        const char *origin)
{
    char user[UUID_STR_LEN + 1] = "";
    int rc;
    if (http_user(hs, wsi, origin, "export", user, &rc))
        return rc;
    char sid[UUID_STR_LEN + 1] = "";
    if (session_id != NULL) {
        /* Not a session id: it names no session, like someone else's. */
        if (!uuid_valid(session_id))
            return answer_message(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", origin, 0);
        uuid_normalize(session_id, sid);
    }
    char fbuf[32];
    enum urlarg_result fr = urlarg_get(wsi, "format", fbuf, sizeof(fbuf));
    const char *f = fr == URLARG_FOUND ? fbuf : session_id != NULL ? "json" : "jsonl";
    enum export_format format;
    if (fr == URLARG_INVALID || export_format_parse(f, session_id == NULL, &format) != 0)
        return answer_message(wsi, HTTP_STATUS_BAD_REQUEST,
                              session_id != NULL ? "Unknown format: use json, md, txt or csv"
                                                 : "Unknown format: use jsonl or zip",
                              origin, 0);
    /* A session's whole tree, in the one format that can say where each
     * message hangs. */
    char bbuf[16];
    enum urlarg_result br = urlarg_get(wsi, "branches", bbuf, sizeof(bbuf));
    int all = br == URLARG_FOUND && strcmp(bbuf, "all") == 0;
    if (br == URLARG_INVALID || (br == URLARG_FOUND && !all && strcmp(bbuf, "active") != 0) ||
        (all && format != EXPORT_JSON))
        return answer_message(wsi, HTTP_STATUS_BAD_REQUEST,
                              "Unknown branches: use active, or all with format=json", origin, 0);
    struct http_txn *t = txn_new(&hs->txns, wsi, origin);
    if (t == NULL)
        return -1;
    t->exporting = 1;
    if ((format == EXPORT_ZIP ? export_zip_start(hs->app, t->id, user)
                              : export_start(hs->app, t->id, user, session_id != NULL ? sid : NULL,
                                             format, all)) != 0) {
        txn_free(t);
        return answer_message(wsi, 500, "Out of memory", origin, 0);
    }
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_WORKER_SECONDS);
    return 0;
}

/* GET /s/<id> (the page), /s/<id>.json, /s/<id>/files/<name>: no sign-in;
 * a worker reads the link (work/share.h). Anything else under /s/ is the
 * same 404 as a link that cannot be viewed. */
static int serve_share(struct http_state *hs, struct lws *wsi, const char *arg, const char *origin)
{
    char id[PROTO_SHARE_ID_LEN + 1];
    const char *rest = arg + strcspn(arg, "./");
    size_t n = (size_t)(rest - arg);
    enum share_view kind = SHARE_PAGE;
    const char *file = NULL;
    if (n != PROTO_SHARE_ID_LEN)
        goto not_found;
    memcpy(id, arg, n);
    id[n] = '\0';
    if (!proto_share_id_valid(id))
        goto not_found;
    if (strcmp(rest, ".json") == 0) {
        kind = SHARE_JSON;
    } else if (strncmp(rest, "/files/", 7) == 0 && files_name_valid(rest + 7) &&
               strlen(rest + 7) < sizeof(((struct http_txn *)0)->share_file)) {
        kind = SHARE_FILE;
        file = rest + 7;
    } else if (rest[0] != '\0') {
        goto not_found;
    }
    struct http_txn *t = txn_new(&hs->txns, wsi, origin);
    if (t == NULL)
        return -1;
    t->share = 1;
    t->share_kind = kind;
    if (file != NULL)
        snprintf(t->share_file, sizeof(t->share_file), "%s", file);
    if (share_view_submit(hs->app, t->id, kind, id, file) != 0) {
        txn_free(t);
        return answer_message(wsi, 500, "Out of memory", origin, 0);
    }
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_WORKER_SECONDS);
    return 0;
not_found:
    return answer_message(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", origin, 0);
}

/* The answer to GET /s/...: the page with its own policy (no WebSocket,
 * nothing from elsewhere), the snapshot as JSON, or a file with its type;
 * none kept by a cache, since a revoked link must stop showing at once. */
static int share_write(struct lws *wsi, unsigned status, int kind, const char *file,
                       const char *body, size_t len, const char *origin)
{
    const char *ctype = status != HTTP_STATUS_OK ? ANSWER_JSON
                        : kind == SHARE_PAGE     ? "text/html; charset=utf-8"
                        : kind == SHARE_FILE     ? files_content_type(file)
                                                 : ANSWER_JSON;
    const char *policy = status != HTTP_STATUS_OK ? NULL
                         : kind == SHARE_PAGE     ? WEB_SHARE_CSP
                         : kind == SHARE_FILE     ? "default-src 'none'; sandbox"
                                                  : NULL;
    const char *extra[] = {"cache-control:", "no-store", "content-security-policy:", policy, NULL};
    if (policy == NULL)
        extra[2] = NULL;
    return answer_headers(wsi, status, ctype, body, len, origin, 0, extra);
}

/* Writes the piece the transaction holds: the headers first, then the
 * piece as one chunk; then hands the job back for the next piece. -1 to
 * close the connection. */
static int export_write(struct lws *wsi, struct http_txn *t)
{
    if (t->export_over)
        return -1; /* the last chunk has left: "connection: close" */
    if (t->export == NULL)
        return 0;
    char *piece = t->body;
    size_t len = t->body_len;
    t->body = NULL;
    int rc = -1;
    if (!t->export_sent_headers && t->status != HTTP_STATUS_OK) {
        /* 404 (missing, or someone else's) or 500: a plain answer */
        char origin[ANSWER_ORIGIN_MAX];
        unsigned status = t->status;
        memcpy(origin, t->origin, sizeof(origin));
        txn_free(t);
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        if (piece == NULL)
            return answer_message(wsi, status, "Internal Server Error", origin, 0);
        rc = answer(wsi, status, ANSWER_JSON, piece, len, origin, 0);
        free(piece);
        return rc;
    }
    if (t->export_sent_headers && t->status != HTTP_STATUS_OK)
        goto out; /* failed midway: close without the last chunk */
    if (!t->export_sent_headers) {
        char disp[160];
        snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", export_filename(t->export));
        unsigned char hdr[LWS_PRE + 2048];
        unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
        if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, export_content_type(t->export),
                                        LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
            answer_add_cors(wsi, t->origin, &p, end) ||
            answer_add_header(wsi, "transfer-encoding:", "chunked", &p, end) ||
            answer_add_header(wsi, "connection:", "close", &p, end) ||
            answer_add_header(wsi, "content-disposition:", disp, &p, end) ||
            answer_add_header(wsi, "cache-control:", "no-store", &p, end) ||
            answer_add_header(wsi, "x-content-type-options:", "nosniff", &p, end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            goto out;
        metrics_http_response(HTTP_STATUS_OK);
        t->export_sent_headers = 1;
    }
    /* One chunk: "<hex size>\r\n<piece>\r\n", and after the last piece
     * the zero-size chunk that ends the body. */
    size_t cap = LWS_PRE + 16 + len + 2 + 5;
    unsigned char *buf = malloc(cap);
    if (buf == NULL)
        goto out;
    unsigned char *w = buf + LWS_PRE;
    size_t n = 0;
    if (len > 0) {
        n += (size_t)sprintf((char *)w, "%zx\r\n", len);
        memcpy(w + n, piece, len);
        n += len;
        memcpy(w + n, "\r\n", 2);
        n += 2;
    }
    if (t->export_last) {
        memcpy(w + n, "0\r\n\r\n", 5);
        n += 5;
    }
    int wrote = n > 0 ? lws_write(wsi, w, n, LWS_WRITE_HTTP) : 0;
    free(buf);
    if (wrote < (int)n)
        goto out;
    if (t->export_last) {
        /* Close once lws has sent it all: the next WRITEABLE. */
        t->export_over = 1;
        lws_callback_on_writable(wsi);
    } else {
        struct export_job *job = t->export;
        t->export = NULL;
        export_next(job); /* the worker's now */
    }
    /* A client that stops reading is given up on like a stalled worker. */
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_WORKER_SECONDS);
    rc = 0;
out:
    free(piece);
    return rc;
}

static enum route_method http_method(struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0)
        return ROUTE_GET;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0)
        return ROUTE_POST;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI) > 0)
        return ROUTE_OPTIONS;
    return ROUTE_OTHER;
}

static int page_claims(const void *web, const char *uri) { return web_claims(web, uri); }

/* RFC 9112 6.3: a request's body is framed by one Content-Length of
 * digits, or by Transfer-Encoding alone. Anything else ("abc", "0x2f",
 * "0, 47", two of them, both headers) means this server and a proxy in
 * front may disagree where the request ends, and what follows must not be
 * read as a request of its own: 0 when it is framed, -1 when not. The
 * length is set to what Content-Length says (0 without one). */
static int http_framing(struct lws *wsi, unsigned long long *length)
{
    *length = 0;
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (n <= 0)
        return 0; /* none, or chunked (lws reads that framing itself) */
    char clen[24];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 ||
        lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, 1) > 0 || n > 19 ||
        lws_hdr_copy(wsi, clen, sizeof(clen), WSI_TOKEN_HTTP_CONTENT_LENGTH) != n ||
        strspn(clen, "0123456789") != (size_t)n)
        return -1;
    *length = strtoull(clen, NULL, 10);
    return 0;
}

static int http_route(struct http_state *hs, struct lws *wsi, const char *uri)
{
    char origin[ANSWER_ORIGIN_MAX];
    cors_origin(wsi, hs->app->cfg, origin);
    unsigned long long body_length;
    if (http_framing(wsi, &body_length) != 0) {
        log_info("event=http_refused status=400 reason=\"invalid Content-Length\"");
        answer_message(wsi, HTTP_STATUS_BAD_REQUEST,
                       "Bad Request: invalid or conflicting Content-Length", origin, 1);
        return -1; /* closed: nothing after it is read as a request */
    }
    enum route_method m = http_method(wsi);
    struct route r;
    route_find(uri, m, page_claims, &hs->web, &r);
    int known = r.id != ROUTE_NONE;
    /* Any method but GET and OPTIONS may carry a body we will not read:
     * such answers close the connection rather than parse it as a request. */
    int unread_body = m != ROUTE_GET && m != ROUTE_OPTIONS;
    if (!known || !r.allowed) {
        size_t len;
        char *body = proto_encode_http(known ? "Method Not Allowed" : "Not Found", NULL, &len);
        /* RFC 9110 15.5.6: a 405 lists the methods the resource has. */
        int rc = answer_with(wsi, known ? HTTP_STATUS_METHOD_NOT_ALLOWED : HTTP_STATUS_NOT_FOUND,
                             ANSWER_JSON, body, len, origin, unread_body, known ? "allow:" : NULL,
                             r.allow);
        free(body);
        return rc != 0 || unread_body ? -1 : 0;
    }
    if (m == ROUTE_OPTIONS)
        return respond_preflight(wsi, origin);
    switch (r.id) {
    case ROUTE_UPLOAD:
        return serve_upload(hs, wsi, origin, body_length, MULTIPART_UPLOAD);
    case ROUTE_FILE:
        return serve_upload_file(hs, wsi, r.arg, origin);
    case ROUTE_EXPORT:
        return serve_export(hs, wsi, r.arg, origin);
    case ROUTE_CLIENT_CONFIG:
        return serve_client_config(hs, wsi, origin);
    case ROUTE_PAGE:
        return serve_page(hs, wsi, uri, origin);
    case ROUTE_HEALTHZ:
        return answer_json(wsi, HTTP_STATUS_OK, "{\"status\":\"ok\"}", origin);
    case ROUTE_READYZ:
        return serve_readyz(hs, wsi, origin);
    case ROUTE_METRICS:
        return serve_metrics(hs, wsi, origin);
    case ROUTE_SHARE:
        return serve_share(hs, wsi, r.arg, origin);
    case ROUTE_IMPORT:
        return serve_upload(hs, wsi, origin, body_length, MULTIPART_IMPORT);
    case ROUTE_IMPORT_STATE:
        return serve_import_state(hs, wsi, r.arg, origin);
    case ROUTE_NONE:
        break;
    }
    return -1; /* not reached: ROUTE_NONE is answered above */
}

/* ------------------------------------------------------------- callback */

int http_configure(struct lws_context_creation_info *info, struct http_state *hs)
{
    (void)info;
    const struct config *cfg = hs->app->cfg;
    files_prepare_dir(cfg);
    char err[256];
    struct web_site *web = &hs->web;
    if (web_site_init(web, cfg->web_dir, cfg->web_libs, err, sizeof(err)) != 0) {
        log_error("event=config_invalid reason=\"%s\"", err);
        return -1;
    }
    struct stat st;
    if (web->on && (stat(web->root, &st) != 0 || !S_ISDIR(st.st_mode)))
        log_warn("event=web_dir_missing dir=\"%s\" reason=\"the page at / answers 404\"",
                 web->root);
    for (size_t i = 0; web->on && i < web->n_mounts; i++)
        if (stat(web->mount[i].dir, &st) != 0 || !S_ISDIR(st.st_mode))
            log_warn("event=web_lib_missing name=%s dir=\"%s\"", web->mount[i].name,
                     web->mount[i].dir);
    return 0;
}

int http_callback(struct http_state *hs, struct lws *wsi, enum lws_callback_reasons reason,
                  void *user, void *in, size_t len)
{
    struct http_txn *t = wsi != NULL ? txn_of(wsi) : NULL;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        txn_free(t); /* a keep-alive connection's previous request, if left */
        return http_route(hs, wsi, in);

    case LWS_CALLBACK_HTTP_BODY:
        if (t == NULL)
            return -1;
        if (t->refused) {
            t->dropped += len;
            return t->dropped > TXN_LINGER_BYTES ? -1 : 0;
        }
        t->body_got += len;
        if (t->upload != NULL) {
            unsigned status = multipart_body(t->upload, in, len);
            if (status != 0)
                return txn_refuse(wsi, t, status, multipart_message(t->upload));
        }
        return 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (t == NULL || t->refused)
            return -1; /* answered already, with "connection: close" */
        if (t->upload != NULL && t->body_got != t->body_declared) {
            /* lws ends a body whose sender hung up early like a whole
             * one: a cut-off upload leaves no file and no row. */
            log_info("event=upload_cut_off declared=%llu received=%llu", t->body_declared,
                     t->body_got);
            return txn_refuse(wsi, t, HTTP_STATUS_BAD_REQUEST,
                              "Bad Request: the body is shorter than its Content-Length");
        }
        if (t->upload != NULL) {
            unsigned status = multipart_end(t->upload);
            if (status == 0) {
                struct upload_job *job = multipart_job(t->upload);
                t->upload = NULL;
                if (job == NULL)
                    return answer_message(wsi, 500, "Out of memory", t->origin, 0);
                if (t->importing)
                    import_submit(hs->app, job, t->id); /* the worker's now */
                else
                    upload_submit(hs->app, job, t->id);
                lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_WORKER_SECONDS);
                return 0;
            }
            char message[256], origin[ANSWER_ORIGIN_MAX];
            snprintf(message, sizeof(message), "%s", multipart_message(t->upload));
            memcpy(origin, t->origin, sizeof(origin));
            /* Gone before the answer completes the transaction, so a next
             * request on this connection never meets it. */
            txn_free(t);
            log_info("event=upload_refused status=%u reason=\"%s\"", status, message);
            return answer_message(wsi, status, message, origin, 0);
        }
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE: {
        if (t != NULL && t->exporting)
            return export_write(wsi, t);
        if (t == NULL || !t->ready)
            return 0;
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        char origin[ANSWER_ORIGIN_MAX], *body = t->body;
        size_t body_len = t->body_len;
        unsigned status = t->status;
        memcpy(origin, t->origin, sizeof(origin));
        t->body = NULL;
        int share = t->share, kind = t->share_kind;
        char file[sizeof(t->share_file)];
        memcpy(file, t->share_file, sizeof(file));
        txn_free(t); /* as above */
        int rc = share ? share_write(wsi, status, kind, file, body, body_len, origin)
                       : answer(wsi, status, ANSWER_JSON, body, body_len, origin, 0);
        free(body);
        return rc;
    }

    case LWS_CALLBACK_CLOSED_HTTP:
        txn_free(t);
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
