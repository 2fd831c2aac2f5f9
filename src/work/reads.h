/* reads.h - where a read that need not run on the primary runs.
 *
 * With DATABASE_READ_URL set, the pages of code 9, search (11), usage
 * (13), a session's messages (2) and exports read a standby, once it has
 * replayed everything the primary had committed when the read began: one
 * cheap round trip to the primary for its WAL position, then the standby's
 * replay position, asked again until it is there or DATABASE_READ_MAX_LAG_MS
 * has gone by. So a read never sees an older state than one the primary
 * had when it began: whoever wrote (this user on any chatd, an admin's
 * SQL) reads their write. A standby that is down, behind by more, or not
 * configured leaves the read on the primary. */
#ifndef CHATD_READS_H
#define CHATD_READS_H

#include "store/pg.h"

struct worker;

/* The connection w's next read runs on: a standby's (w->rd) or the
 * primary's (w->pg). */
struct pg *reads_pg(struct worker *w);

#endif
