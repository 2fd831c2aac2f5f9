/* organize.h - code 24: a session pinned, archived and tagged. The state
 * is three columns of the session (migration 0011); code 1 with a filter,
 * code 9 and code 11's qualifiers read it, and other tabs and instances
 * hear of a change as a session_changed event. */
#ifndef CHATD_ORGANIZE_H
#define CHATD_ORGANIZE_H

#include "work/pool.h"

struct work_request;

/* Code 24. */
void organize_session(struct worker *w, struct work_request *r);

#endif
