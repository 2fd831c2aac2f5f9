/* multipart.h - POST /upload, the service thread's half: the
 * multipart/form-data body parsed by lws_spa as it arrives, the file part
 * checked and streamed to a temporary file (never whole in memory), the
 * fields checked at the end. What comes out is a work/upload.h job.
 *
 * The fields are the existing client's: file, user_id, session_id (a
 * session id or "NEW"), model_name, session_prompt. Refusals are HTTP
 * statuses (this is the HTTP edge) with a message that never quotes the
 * client's text: 400, 403, 411, 413 (at the first byte past
 * MAX_FILE_SIZE, or at once from Content-Length), 415, 500, 507. */
#ifndef CHATD_MULTIPART_H
#define CHATD_MULTIPART_H

#include <libwebsockets.h>
#include <stddef.h>

struct config;
struct multipart;
struct upload_job;

/* What the body carries: an upload (the existing client's fields), or an
 * export to import (POST /import: user_id and a .json, .jsonl or .zip
 * file up to IMPORT_MAX_BYTES). */
enum multipart_kind { MULTIPART_UPLOAD, MULTIPART_IMPORT };

/* Begins once the request's headers are in. NULL with *status and msg set
 * when the request is refused before its body (415 not multipart, 411 no
 * Content-Length, 413 too large, 500). */
struct multipart *multipart_start(struct lws *wsi, const struct config *cfg,
                                  enum multipart_kind kind, unsigned *status, char *msg,
                                  size_t msglen);

/* With AUTH_MODE=jwt: the user_id field must be user_id (the token's
 * sub), else 403 and nothing is stored. */
void multipart_require_user(struct multipart *m, const char *user_id);

/* A piece of the body. 0, or the status to refuse the upload with at once;
 * the text is multipart_message(). */
unsigned multipart_body(struct multipart *m, const void *in, size_t len);

/* The body is complete: ends the parser and checks the fields. 0, or the
 * status to refuse with. */
unsigned multipart_end(struct multipart *m);

const char *multipart_message(const struct multipart *m);

/* After multipart_end() returned 0: the job, which takes the file with
 * it (frees m). NULL when out of memory (m is freed all the same). */
struct upload_job *multipart_job(struct multipart *m);

/* Frees m and removes its temporary file (a refused or cut-off upload). */
void multipart_free(struct multipart *m);

#endif
