/* organize.h - code 24: a session pinned, archived and tagged. The state
 * is three columns of the session (migration 0011); code 1 with a filter,
 * code 9 and code 11's qualifiers read it, and other tabs and instances
 * hear of a change as a session_changed event. Code 25: a temporary chat
 * (migration 0013) kept, an ordinary session from then on. */
#ifndef CHATD_ORGANIZE_H
#define CHATD_ORGANIZE_H

#include "work/pool.h"

struct work_request;

/* Code 24. */
void organize_session(struct worker *w, struct work_request *r);
/* Code 25. */
void organize_keep(struct worker *w, struct work_request *r);

#endif
