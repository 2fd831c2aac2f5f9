/* txn.h - the HTTP transactions that wait for a worker (/readyz,
 * /upload, the exports), each named by a 64-bit id that is never reused: a
 * worker posts its answer to the outbox by id, and an answer for a
 * connection that has closed finds nothing and is dropped, never written
 * to freed memory. Service thread only. */
#ifndef CHATD_TXN_H
#define CHATD_TXN_H

#include <libwebsockets.h>
#include <stdint.h>

#include "net/answer.h"
#include "work/outbox.h"

/* How much of a refused body is read and dropped before closing. */
#define TXN_LINGER_BYTES (1024 * 1024)

struct export_job;
struct multipart;

/* A server's transactions. Few wait at once, so a list is enough for the
 * lookup by id. */
struct txn_list {
    struct http_txn *head;
    uint64_t next_id;
};

struct http_txn {
    struct txn_list *list;
    struct http_txn *prev, *next; /* list */
    uint64_t id;
    struct lws *wsi;
    char origin[ANSWER_ORIGIN_MAX];             /* Access-Control-Allow-Origin, "" for none */
    struct multipart *upload;                   /* while its body arrives */
    int importing;                              /* the body is an export (POST /import) */
    unsigned long long body_declared, body_got; /* Content-Length, and what came */
    int refused;                                /* answered early: drop the rest, then close */
    size_t dropped;
    lws_sorted_usec_list_t linger; /* closes a refused one after a while (txn.c) */
    int ready;                     /* a worker's answer is here */
    unsigned status;
    char *body;
    size_t body_len;
    /* exports: the job while the transport holds it (a piece waits to be
     * written), the headers once sent, and how it ends */
    /* GET /s/...: what the worker's body is (work/share.h), and for a file
     * its name (its type) */
    int share;
    int share_kind;
    char share_file[64];
    int exporting;
    struct export_job *export;
    int export_sent_headers, export_last, export_over;
};

/* The transaction of wsi's current request, or NULL. */
struct http_txn *txn_of(struct lws *wsi);
/* A new one for wsi's request, answered with CORS for origin. */
struct http_txn *txn_new(struct txn_list *l, struct lws *wsi, const char *origin);
/* NULL is fine. Frees its upload (no file stays) and export job. */
void txn_free(struct http_txn *t);
/* Frees what is left at shutdown. */
void txn_clear_all(struct txn_list *l);

/* The answer to transaction txn_id, posted by a worker: written when the
 * socket is writable, or dropped (body freed) when the transaction has
 * gone. Steals body. */
void txn_deliver(struct txn_list *l, uint64_t txn_id, enum outbox_outcome outcome, char *body,
                 size_t len);
/* A piece of export download txn_id (work/export.h), posted by a worker
 * with its job: written when the socket is writable, after which the job
 * goes back to a worker for the next piece; or dropped with the job when
 * the transaction has gone. Steals piece and job. */
void txn_deliver_export(struct txn_list *l, uint64_t txn_id, enum outbox_outcome outcome,
                        char *piece, size_t len, int last, struct export_job *job);

/* A refusal before the body was read: answers now, then drops what the
 * client still sends for a little while and closes. 0, or -1 to close at
 * once. */
int txn_refuse(struct lws *wsi, struct http_txn *t, unsigned status, const char *message);

#endif
