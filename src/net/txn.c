/* txn.c - HTTP transactions that wait for a worker (see txn.h). */
#include "net/txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "net/answer.h"
#include "net/multipart.h"
#include "work/export.h"

/* After an early refusal (413 at the first byte too many) the client may
 * still be sending. Closing at once, with its bytes unread, would make the
 * kernel answer with a reset that can destroy our reply on its way, so we
 * read and drop a bounded amount (TXN_LINGER_BYTES), for a bounded time,
 * before closing. */
#define TXN_LINGER_SECONDS 2

struct http_txn *txn_of(struct lws *wsi) { return lws_get_opaque_user_data(wsi); }

struct http_txn *txn_new(struct txn_list *l, struct lws *wsi, const char *origin)
{
    struct http_txn *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->list = l;
    t->id = ++l->next_id;
    t->wsi = wsi;
    snprintf(t->origin, sizeof(t->origin), "%s", origin);
    t->next = l->head;
    if (l->head != NULL)
        l->head->prev = t;
    l->head = t;
    lws_set_opaque_user_data(wsi, t);
    return t;
}

void txn_free(struct http_txn *t)
{
    if (t == NULL)
        return;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        t->list->head = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    lws_set_opaque_user_data(t->wsi, NULL);
    lws_sul_schedule(lws_get_context(t->wsi), 0, &t->linger, NULL, LWS_SET_TIMER_USEC_CANCEL);
    if (t->upload != NULL)
        multipart_free(t->upload); /* cut off mid-body: no file stays */
    export_free(t->export);
    free(t->body);
    free(t);
}

void txn_clear_all(struct txn_list *l)
{
    /* lws has closed every connection by now, and each close freed its
     * transaction (LWS_CALLBACK_CLOSED_HTTP); this is a backstop. */
    while (l->head != NULL) {
        struct http_txn *t = l->head;
        l->head = t->next;
        if (t->upload != NULL)
            multipart_free(t->upload);
        export_free(t->export);
        free(t->body);
        free(t);
    }
}

/* The HTTP status of how a worker's part of a transaction ended. */
static unsigned status_of(enum outbox_outcome o)
{
    switch (o) {
    case OUTBOX_DONE:
        return HTTP_STATUS_OK;
    case OUTBOX_ACCEPTED:
        return 202; /* Accepted: not among lws 4.1's names */
    case OUTBOX_REFUSED:
        return HTTP_STATUS_BAD_REQUEST;
    case OUTBOX_NOT_FOUND:
        return HTTP_STATUS_NOT_FOUND;
    case OUTBOX_UNAVAILABLE:
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    case OUTBOX_TOO_LARGE:
        return 413; /* not among lws 4.1's names */
    case OUTBOX_UNSUPPORTED:
        return HTTP_STATUS_UNSUPPORTED_MEDIA_TYPE;
    case OUTBOX_NO_SPACE:
        return 507; /* Insufficient Storage: not among lws 4.1's names */
    case OUTBOX_FAILED:
        break;
    }
    return HTTP_STATUS_INTERNAL_SERVER_ERROR;
}

void txn_deliver(struct txn_list *l, uint64_t txn_id, enum outbox_outcome outcome, char *body,
                 size_t len)
{
    struct http_txn *t = l->head;
    while (t != NULL && t->id != txn_id)
        t = t->next;
    if (t == NULL || t->ready) {
        free(body);
        return;
    }
    t->ready = 1;
    t->status = status_of(outcome);
    t->body = body;
    t->body_len = len;
    lws_callback_on_writable(t->wsi);
}

void txn_deliver_export(struct txn_list *l, uint64_t txn_id, enum outbox_outcome outcome,
                        char *piece, size_t len, int last, struct export_job *job)
{
    struct http_txn *t = l->head;
    while (t != NULL && t->id != txn_id)
        t = t->next;
    if (t == NULL || !t->exporting || t->export != NULL) {
        free(piece);
        export_free(job); /* the client has gone */
        return;
    }
    t->export = job;
    t->status = status_of(outcome);
    t->body = piece;
    t->body_len = len;
    t->export_last = last;
    lws_callback_on_writable(t->wsi);
}

static void txn_linger_over(lws_sorted_usec_list_t *sul)
{
    struct http_txn *t = lws_container_of(sul, struct http_txn, linger);
    lws_set_timeout(t->wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_ASYNC);
}

/* A refusal before the body was read: answer now, then drop what the
 * client still sends for a little while and close (see HTTP_LINGER_*). */
int txn_refuse(struct lws *wsi, struct http_txn *t, unsigned status, const char *message)
{
    log_info("event=upload_refused status=%u reason=\"%s\"", status, message);
    /* The temp file goes before the client hears: whoever reads the answer
     * and looks at the upload directory finds nothing left. The message
     * may be the upload's, so it is copied first. */
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", message);
    if (t->upload != NULL) {
        multipart_free(t->upload);
        t->upload = NULL;
    }
    int rc = answer_message(wsi, status, copy, t->origin, 1);
    if (rc != 0)
        return -1;
    t->refused = 1;
    char clen[32] = "";
    lws_hdr_copy(wsi, clen, sizeof(clen), WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) <= 0 &&
        strtoull(clen, NULL, 10) == 0)
        return -1; /* no body follows: close now */
    /* Our own timer: lws re-arms its body timeout with every read. */
    lws_sul_schedule(lws_get_context(wsi), 0, &t->linger, txn_linger_over,
                     TXN_LINGER_SECONDS * LWS_US_PER_SEC);
    return 0;
}
