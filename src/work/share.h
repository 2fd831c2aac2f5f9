/* share.h - share links: codes 21 (make one), 22 (list them), 23 (revoke
 * one), and the worker's half of GET /s/<id> (the read-only page),
 * /s/<id>.json (the same as data) and /s/<id>/files/<name>.
 *
 * A link is a row naming the message its snapshot ends at (migration
 * 0011): messages never change once stored, so the path up from that
 * message is the chat as it was. Every view is counted by the statement
 * that reads the snapshot, so instances never count one request twice. A
 * link that cannot be viewed (unknown, revoked, expired, used up, its
 * session deleted) is one 404, whichever it is. */
#ifndef CHATD_SHARE_H
#define CHATD_SHARE_H

#include <stdint.h>

#include "work/pool.h"

struct app;
struct work_request;

void share_create(struct worker *w, struct work_request *r); /* code 21 */
void share_list(struct worker *w, struct work_request *r);   /* code 22 */
void share_revoke(struct worker *w, struct work_request *r); /* code 23 */

enum share_view {
    SHARE_PAGE, /* the page (HTML), the snapshot inside it */
    SHARE_JSON, /* the snapshot */
    SHARE_FILE, /* a file of the snapshot */
};

/* The answer to HTTP transaction txn, posted to the outbox: for a page
 * the HTML (web/share.html with the snapshot), for JSON the snapshot, for
 * a file its bytes; or not found. share_id and file (SHARE_FILE only) are
 * checked by the caller. 0, or -1 when out of memory (nothing posted). */
int share_view_submit(struct app *app, uint64_t txn, enum share_view kind, const char *share_id,
                      const char *file);

#endif
