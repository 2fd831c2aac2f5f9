/* inval.h - what this process has heard of PostgreSQL changes, so that a
 * Redis copy that PostgreSQL contradicts is never used.
 *
 * Migration 0003 makes every change a cached copy depends on (a user's
 * username or models, the user's sessions being created, renamed or
 * deleted, the model catalogue) send NOTIFY chatd_cache at commit with the
 * writing transaction's id (xid8). One thread per process LISTENs and keeps,
 * per user (hashed into buckets) and for the catalogue, the newest writing
 * transaction it has heard of. A copy records the snapshot it was read in
 * (pg_snapshot_xmin and pg_snapshot_xmax of that statement); it is fresh
 * when
 *   - it was read after this process started listening (xmax > floor, the
 *     id of a transaction begun after LISTEN): every write it may have
 *     missed commits later and is announced to us, and
 *   - every write announced for its user (or the catalogue) is older than
 *     its snapshot's xmin, so the snapshot saw it.
 * A write of this process bumps its bucket itself, before the answer goes
 * out (inval_saw_user), so a client is never told "done" and then shown
 * the older copy by the same chatd. While the listening connection is
 * down, nothing is fresh: every read goes to PostgreSQL.
 *
 * This does not depend on any Redis write or delete succeeding. */
#ifndef CHATD_INVAL_H
#define CHATD_INVAL_H

#include <stdint.h>

struct config;
struct inval;

/* What an admin's SQL changed of a user's (migration 0008, NOTIFY
 * chatd_admin): payload is JSON with "user_id" and "kind". Called on the
 * listening thread; must not block. */
typedef void (*inval_admin_fn)(void *arg, const char *payload);

/* Starts the listening thread (admin may be NULL). NULL on allocation
 * failure (logged). A PostgreSQL that is down is retried every second;
 * until it answers, nothing is fresh. */
struct inval *inval_start(const struct config *cfg, inval_admin_fn admin, void *admin_arg);
void inval_stop(struct inval *iv);

int inval_user_fresh(const struct inval *iv, const char *user_id, uint64_t xmin, uint64_t xmax);
int inval_models_fresh(const struct inval *iv, uint64_t xmin, uint64_t xmax);

/* This process committed a change to user_id's copies in transaction xid. */
void inval_saw_user(struct inval *iv, const char *user_id, uint64_t xid);

/* 1 while the listening connection is up (for /readyz and tests). */
int inval_listening(const struct inval *iv);

/* Parses one NOTIFY payload ("u:<uuid>:<xid>" or "m:<xid>") and applies it.
 * Returns 0, or -1 for a payload of another shape (ignored). */
int inval_apply(struct inval *iv, const char *payload);

/* An inval with no thread, floor 0 (for unit tests of inval_apply). */
struct inval *inval_new_detached(void);

#endif
