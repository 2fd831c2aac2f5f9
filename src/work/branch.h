/* branch.h - the conversation as a tree (migration 0010): codes 17 edit
 * and 18 regenerate, which run a turn that hangs its messages beside
 * others (work/turn.h), 19 switch, which moves the session's active leaf,
 * and 20 fork, which copies a path into a new session.
 *
 * The rules live in PostgreSQL: a message's parent, its alternatives (the
 * messages with the same parent) and the active leaf are rows, and every
 * reader (code 2, code 9, a turn's context) walks the active path up from
 * the leaf. Nothing of the tree is kept in a browser or in Redis. */
#ifndef CHATD_BRANCH_H
#define CHATD_BRANCH_H

#include "work/pool.h"

struct work_request;

/* Code 17: a new version of user message seq, answered on its path. */
void branch_edit(struct worker *w, struct work_request *r);
/* Code 18: a new answer to the question of assistant message seq. */
void branch_regenerate(struct worker *w, struct work_request *r);
/* Code 19: the active leaf becomes the newest message under seq. */
void branch_switch(struct worker *w, struct work_request *r);
/* Code 20: a new session holding the path to seq. */
void branch_fork(struct worker *w, struct work_request *r);

#endif
