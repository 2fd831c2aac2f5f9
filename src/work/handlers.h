/* handlers.h - codes 0, 1, 2, 4, 5, 6: read through the cache or from
 * PostgreSQL and answer in the exact shapes the existing client reads.
 * Rows of the dispatch table (work/dispatch.c). */
#ifndef CHATD_HANDLERS_H
#define CHATD_HANDLERS_H

#include "work/request.h"

void handlers_user_details(struct worker *w, struct work_request *r);   /* 0 */
void handlers_list_sessions(struct worker *w, struct work_request *r);  /* 1 */
void handlers_chats(struct worker *w, struct work_request *r);          /* 2 */
void handlers_delete_session(struct worker *w, struct work_request *r); /* 4 */
void handlers_list_models(struct worker *w, struct work_request *r);    /* 5 */
void handlers_balance(struct worker *w, struct work_request *r);        /* 6 */
void handlers_usage(struct worker *w, struct work_request *r);          /* 13 */

/* Codes 0, 1 (the whole list) and 5 (the catalogue) answered on the
 * calling thread, without a worker, when this process holds a fresh copy
 * (store/local.h): the reply frame (malloc'd, *len set), or NULL when a
 * worker must answer. The caller must only ask when nothing else of the
 * connection is queued, so that replies keep their order and a connection
 * always sees its own earlier writes. */
struct app;
struct proto_request;
char *handlers_inline(struct app *app, const struct proto_request *q, size_t *len);

#endif
