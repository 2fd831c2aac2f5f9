/* import.h - POST /import, the worker's half, and GET /import/<id>.
 *
 * net/multipart.c streams the export to a temporary file (never whole in
 * memory); a worker then
 *   1. reads it once through wire/jsonsplit.h, value by value, to check
 *      that it is JSON of a known shape and to count its conversations
 *      (a file that is not JSON: 400; of no format chatd knows: 415);
 *   2. records the import (imports row) and answers 202 {import_id};
 *   3. reads it again, each conversation through wire/convo.h into one
 *      statement (PG_IMPORT_CONVO): a conversation is stored whole or not
 *      at all, and one imported before (the same source id) is not stored
 *      again; a conversation that cannot be imported (a cycle, a dangling
 *      parent, nothing chatd can hold) is skipped with its reason;
 *   4. says how far it is in the imports row and as type 15 events to the
 *      user's connections: import_progress {import_id, done, total}, then
 *      import_finished {import_id, sessions, messages, skipped}.
 * Steps 1 and 2 run on a worker of the pool; step 3 on the one worker of
 * app->import_pool, so a long import never holds a worker that requests
 * need, and imports store one after another. Memory stays flat: one
 * conversation at a time. A chatd that stops ends a running import at its
 * next conversation ("failed", what was stored stays): importing the same
 * file again stores the rest, since what is there is not stored twice. */
#ifndef CHATD_IMPORT_H
#define CHATD_IMPORT_H

#include <stdint.h>

struct app;
struct upload_job;

/* Takes the file of j (POST /import's body) and answers txn. */
void import_submit(struct app *app, struct upload_job *j, uint64_t txn);

/* chatd is stopping: a running import ends at its next conversation.
 * Thread-safe. */
void import_stop(void);

/* GET /import/<id>: the user's import's state, or 404. 0, or -1 when out
 * of memory (nothing posted). */
int import_state_submit(struct app *app, uint64_t txn, const char *user_id, const char *import_id);

#endif
