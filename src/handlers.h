/* handlers.h - the request handlers of codes 0..6, run on worker threads. */
#ifndef CHATD_HANDLERS_H
#define CHATD_HANDLERS_H

#include "pool.h"

/* The pool_job run function of a struct server_request: answers it with
 * server_reply / server_reply_error (or hands code 3 to chat.c) and frees
 * it. */
void handlers_run(struct worker *w, struct pool_job *job);

#endif
