/* history.h - what people do with their history: a page of a session's
 * messages (code 9), a session's name (code 10), a rating of a reply
 * (code 12). Rows of the dispatch table (work/dispatch.c). */
#ifndef CHATD_HISTORY_H
#define CHATD_HISTORY_H

#include "work/request.h"

void history_page(struct worker *w, struct work_request *r);     /* 9 */
void history_rename(struct worker *w, struct work_request *r);   /* 10 */
void history_search(struct worker *w, struct work_request *r);   /* 11 */
void history_feedback(struct worker *w, struct work_request *r); /* 12 */

#endif
