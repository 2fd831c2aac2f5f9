/* budget.h - code 26: the caps that bind a user (the admin's monthly cap,
 * per model, per group; migration 0013), with what is spent this month,
 * reserved by calls running and left, and the user's own personal cap,
 * which binds only when lower than the admin's. The reservations
 * themselves are taken with a turn's lease (work/turn.c). */
#ifndef CHATD_BUDGET_H
#define CHATD_BUDGET_H

#include "work/pool.h"

struct work_request;

/* Code 26: {user_id, monthly_cap?} (a number, or null to clear). */
void budget_handle(struct worker *w, struct work_request *r);

#endif
