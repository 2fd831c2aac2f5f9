/* upload.h - POST /upload: a multipart/form-data body streamed to disk on
 * the service thread, then checked and recorded on a worker.
 *
 * The fields are the existing client's: file, user_id, session_id (a
 * session id or "NEW"), model_name, session_prompt. The file is written
 * chunk by chunk to a temporary name in PUBLIC_DIR and only renamed to its
 * final, random name after its row committed, so a refused, failed or
 * cut-off upload leaves neither a file nor a row.
 *
 * Lifetime: http.c owns a struct upload from upload_start() until either
 * upload_abort() or a successful upload_finish(), after which the worker
 * owns it and answers the HTTP transaction through server_http_reply(). */
#ifndef CHATD_UPLOAD_H
#define CHATD_UPLOAD_H

#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct config;
struct upload;

/* Begins an upload once the request's headers are in (content type,
 * content length). Returns NULL with *status and msg set when the request
 * is refused before its body: 413 when Content-Length already says the
 * file is too large, 415 when the body is not multipart/form-data, 411
 * without a Content-Length (lws 4.1 leaves chunk framing in bodies), 500. */
struct upload *upload_start(struct lws *wsi, struct server *srv, unsigned *status, char *msg,
                            size_t msglen);

/* upload_start() with the settings given rather than srv's. With srv NULL
 * (fuzz/fuzz_multipart.c) the upload can be parsed (upload_body,
 * upload_parse_end) and aborted, never finished. */
struct upload *upload_start_config(struct lws *wsi, const struct config *cfg, struct server *srv,
                                   unsigned *status, char *msg, size_t msglen);

/* A piece of the body. Returns 0, or the status to refuse the upload with
 * at once (413 at the first byte past MAX_FILE_SIZE, 415, 400, 500); the
 * text is upload_message(). */
unsigned upload_body(struct upload *u, const void *in, size_t len);

/* The body is complete. Returns 0 when the checks went to a worker, which
 * now owns u and will answer txn_id; else the status to refuse with (u is
 * still the caller's, to abort). */
unsigned upload_finish(struct upload *u, uint64_t txn_id);

/* upload_finish()'s first half, on the service thread: ends the parser and
 * checks the fields. Returns 0 or the status to refuse with; u stays the
 * caller's either way. */
unsigned upload_parse_end(struct upload *u);

const char *upload_message(const struct upload *u);

/* With AUTH_MODE=jwt: the upload's user_id field must be user_id (the
 * token's sub), else it is refused with 403 and nothing is stored. */
void upload_require_user(struct upload *u, const char *user_id);

/* The upload will not finish: removes its temporary file, frees u. */
void upload_abort(struct upload *u);

/* At start-up: creates PUBLIC_DIR if missing and removes temporary files
 * that a crash left behind (older than an hour, so that another chatd
 * sharing the directory keeps its uploads in progress). */
void upload_prepare_dir(const struct config *cfg);

/* 1 when name has the shape of a stored name: [0-9a-f]{32}\.[a-z0-9]{1,8}.
 * Nothing else is ever looked up on disk. */
int upload_name_valid(const char *name);

/* The Content-Type a stored file is served with, from its extension. */
const char *upload_content_type(const char *name);

#endif
