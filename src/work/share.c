/* share.c - share links (see share.h). */
#include "work/share.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/util.h"
#include "store/db.h"
#include "store/files.h"
#include "wire/proto.h"
#include "work/app.h"
#include "work/outbox.h"
#include "work/request.h"

/* Where web/share.html takes the snapshot. */
#define SHARE_MARK "<!--snapshot-->"
#define SHARE_NOT_FOUND "{\"message\":\"Not Found\",\"data\":null}"

/* A new link's id: 24 bytes of the kernel's CSPRNG (192 bits) as 32
 * characters of base64url. */
static int share_new_id(char out[PROTO_SHARE_ID_LEN + 1])
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char b[PROTO_SHARE_ID_LEN / 4 * 3];
    if (util_random(b, sizeof(b)) != 0)
        return -1;
    for (size_t i = 0, o = 0; i < sizeof(b); i += 3) {
        unsigned v = (unsigned)b[i] << 16 | (unsigned)b[i + 1] << 8 | b[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    out[PROTO_SHARE_ID_LEN] = '\0';
    return 0;
}

static void reply_error(struct work_request *r, int code, const char *text)
{
    outbox_reply_error(r->app->outbox, r->conn_id, r->req.type, code, text);
}

void share_create(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    const struct config *cfg = r->app->cfg;
    char id[PROTO_SHARE_ID_LEN + 1], *expires = NULL;
    int no_message = 0;
    enum db_status st = share_new_id(id) == 0
                            ? db_share_create(&w->pg, q->user_id, q->session_id, q->seq, id,
                                              q->expires_in, q->max_views, &no_message, &expires)
                            : DB_ERROR;
    if (st != DB_OK) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SESSION : PERR_INTERNAL, NULL);
        return;
    }
    if (no_message) {
        reply_error(r, PERR_INVALID_FIELD,
                    q->seq >= 0 ? "Invalid field 'seq': no such message in this session"
                                : "Invalid field 'session_id': the chat has no messages yet");
        return;
    }
    size_t n = strlen(cfg->public_base_url) + sizeof("/s/") + PROTO_SHARE_ID_LEN;
    char *url = malloc(n);
    if (url != NULL)
        snprintf(url, n, "%s/s/%s", cfg->public_base_url, id);
    log_info("event=share_created user=%s session=%s", q->user_id, q->session_id);
    json_t *data =
        url != NULL
            ? json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "user_id", q->user_id, "session_id",
                        q->session_id, "share_id", id, "url", url, "expires_at",
                        expires != NULL ? json_string(expires) : json_null(), "max_views",
                        q->max_views > 0 ? json_integer(q->max_views) : json_null())
            : NULL;
    free(url);
    free(expires);
    outbox_reply(r->app->outbox, r->conn_id, q->type, data);
}

void share_list(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    char *json = NULL;
    enum db_status st = db_shares_list(&w->pg, q->user_id, &json);
    json_t *list = st == DB_OK ? json_loads(json, 0, NULL) : NULL;
    free(json);
    if (list == NULL) {
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_USER : PERR_INTERNAL, NULL);
        return;
    }
    outbox_reply(r->app->outbox, r->conn_id, q->type,
                 json_pack("{s:s, s:o}", "user_id", q->user_id, "shares", list));
}

void share_revoke(struct worker *w, struct work_request *r)
{
    const struct proto_request *q = &r->req;
    enum db_status st = db_share_revoke(&w->pg, q->user_id, q->share_id);
    if (st != DB_OK) {
        /* someone else's link answers exactly like one never made */
        reply_error(r, st == DB_NOT_FOUND ? PERR_NO_SHARE : PERR_INTERNAL, NULL);
        return;
    }
    log_info("event=share_revoked user=%s", q->user_id);
    outbox_reply(
        r->app->outbox, r->conn_id, q->type,
        json_pack("{s:s, s:s, s:b}", "user_id", q->user_id, "share_id", q->share_id, "revoked", 1));
}

/* ------------------------------------------------------------ GET /s/... */

struct share_job {
    struct pool_job job; /* first: the pool runs it */
    struct app *app;
    uint64_t txn;
    enum share_view kind;
    char id[PROTO_SHARE_ID_LEN + 1];
    char file[FILES_NAME_MAX];
};

/* The whole of a file, at most max bytes: malloc'd, *len set; NULL when
 * it cannot be read. */
static char *read_all(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        (unsigned long long)st.st_size > max || (buf = malloc((size_t)st.st_size + 1)) == NULL)
        goto fail;
    *len = fread(buf, 1, (size_t)st.st_size, f);
    if (*len != (size_t)st.st_size)
        goto fail;
    buf[*len] = '\0';
    fclose(f);
    return buf;
fail:
    free(buf);
    if (f != NULL)
        fclose(f);
    return NULL;
}

/* web/share.html with the snapshot in it, as a data block the page's
 * script reads (never runs): "<" is written \u003c, so no text of the
 * chat can close the block or open a tag. NULL when out of memory or the
 * page is missing. */
static char *share_page(const struct config *cfg, const char *json, size_t *len)
{
    char path[FILES_PATH_MAX];
    size_t tlen, jlen = strlen(json), extra = 0;
    if (cfg->web_dir[0] == '\0' ||
        snprintf(path, sizeof(path), "%s/share.html", cfg->web_dir) >= (int)sizeof(path))
        return NULL;
    char *tpl = read_all(path, 1 << 20, &tlen);
    char *mark = tpl != NULL ? strstr(tpl, SHARE_MARK) : NULL;
    if (mark == NULL) {
        log_error("event=share_page_missing path=%s", path);
        free(tpl);
        return NULL;
    }
    for (const char *c = json; *c; c++)
        extra += *c == '<' || *c == '>' || *c == '&' ? 5 : 0;
    static const char open[] = "<script type=\"application/json\" id=\"snapshot\">",
                      close[] = "</script>";
    size_t head = (size_t)(mark - tpl), tail = tlen - head - strlen(SHARE_MARK);
    size_t n = head + strlen(open) + jlen + extra + strlen(close) + tail;
    char *out = malloc(n + 1), *o = out;
    if (out != NULL) {
        memcpy(o, tpl, head);
        o += head;
        memcpy(o, open, strlen(open));
        o += strlen(open);
        for (const char *c = json; *c; c++) {
            if (*c == '<' || *c == '>' || *c == '&') {
                o += sprintf(o, "\\u%04x", (unsigned)*c);
            } else {
                *o++ = *c;
            }
        }
        memcpy(o, close, strlen(close));
        o += strlen(close);
        memcpy(o, mark + strlen(SHARE_MARK), tail);
        o += tail;
        *o = '\0';
        *len = (size_t)(o - out);
    }
    free(tpl);
    return out;
}

static void share_view_run(struct worker *w, struct pool_job *job)
{
    struct share_job *j = (struct share_job *)job;
    const struct config *cfg = j->app->cfg;
    enum outbox_outcome out = OUTBOX_FAILED;
    char *body = NULL, *json = NULL, *ctype = NULL;
    size_t len = 0;
    enum db_status st;
    if (j->kind == SHARE_FILE) {
        char path[FILES_PATH_MAX];
        st = db_share_file(&w->pg, j->id, j->file, &ctype);
        if (st == DB_OK && files_path(cfg, j->file, path) == 0 &&
            (body = read_all(path, (size_t)cfg->max_file_size_mb * 1024 * 1024, &len)) == NULL)
            st = DB_NOT_FOUND; /* its row is there, the file is not: nothing to show */
    } else {
        st = db_share_view(&w->pg, j->id, &json);
        if (st == DB_OK) {
            body = j->kind == SHARE_PAGE ? share_page(cfg, json, &len) : json;
            if (j->kind == SHARE_JSON) {
                json = NULL;
                len = strlen(body);
            }
            if (body == NULL)
                st = DB_ERROR;
        }
    }
    switch (st) {
    case DB_OK:
        out = OUTBOX_DONE;
        break;
    case DB_NOT_FOUND:
        out = OUTBOX_NOT_FOUND;
        break;
    case DB_BUSY:
    case DB_REFUSED:
    case DB_ERROR:
        break;
    }
    if (out != OUTBOX_DONE) {
        free(body);
        body = strdup(out == OUTBOX_NOT_FOUND ? SHARE_NOT_FOUND
                                              : "{\"message\":\"Internal Server Error\","
                                                "\"data\":null}");
        len = body != NULL ? strlen(body) : 0;
    }
    free(json);
    free(ctype);
    outbox_http(j->app->outbox, j->txn, out, body, len);
    free(j);
}

int share_view_submit(struct app *app, uint64_t txn, enum share_view kind, const char *share_id,
                      const char *file)
{
    struct share_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -1;
    j->app = app;
    j->txn = txn;
    j->kind = kind;
    snprintf(j->id, sizeof(j->id), "%s", share_id);
    snprintf(j->file, sizeof(j->file), "%s", file != NULL ? file : "");
    j->job.run = share_view_run;
    pool_submit(app->pool, &j->job);
    return 0;
}
