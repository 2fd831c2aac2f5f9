/* migrate.h - applies migrations/NNNN_name.sql in order, once each.
 *
 * Run by `chatd migrate` and at every start-up. A PostgreSQL advisory lock
 * makes two chatd instances starting together take turns; each file runs in
 * its own transaction together with its row in schema_migrations, so a
 * failed file leaves no trace and is retried on the next start. */
#ifndef CHATD_MIGRATE_H
#define CHATD_MIGRATE_H

struct config;

/* Returns the number of files applied (0 when up to date), or -1 (logged). */
int migrate_run(const struct config *cfg);

#endif
