/* chat.h - code 3, the chat turn: its checks, in the documented order,
 * after which the turn runs in work/turn.c. */
#ifndef CHATD_CHAT_H
#define CHATD_CHAT_H

#include "work/pool.h"

struct work_request;

/* Runs code 3 for r on worker w. */
void chat_handle(struct worker *w, struct work_request *r);

#endif
