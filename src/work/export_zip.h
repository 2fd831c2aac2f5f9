/* export_zip.h - GET /export?format=zip: everything of a user in one
 * archive, streamed like the other exports (export.h), one piece at a
 * time:
 *
 *   chats/<name>-<id>.json   every session with its whole tree, exactly
 *                            as GET /sessions/<id>/export?format=json
 *                            &branches=all gives it (import takes it back)
 *   files/<stored name>      every file the user uploaded, as stored
 *   usage.json               code 13 over all time (the ledger's sums)
 *   budget.json              code 26 (caps, what is spent and reserved)
 *
 * The archive is written as it goes (lib/zipout.h): a piece holds at most
 * one page of one session, or one slice of one file, compressed, so
 * memory stays flat whatever the user's history. Temporary chats are left
 * out, as from the jsonl export. */
#ifndef CHATD_EXPORT_ZIP_H
#define CHATD_EXPORT_ZIP_H

#include "work/export.h"

/* Starts the download for the HTTP transaction txn, as export_start. 0,
 * or -1 when out of memory. */
int export_zip_start(struct app *app, uint64_t txn, const char *user_id);

#endif
