/* uuid.h - textual UUID checks and generation.
 *
 * Every user_id and session_id is checked here before it can reach
 * PostgreSQL, so a malformed id is a clear protocol error, never a database
 * error. */
#ifndef CHATD_UUID_H
#define CHATD_UUID_H

#include <stddef.h>

#define UUID_STR_LEN 36 /* without the terminating NUL */

/* 1 when s is exactly 8-4-4-4-12 hex digits (either case), else 0. */
int uuid_valid(const char *s);

/* Writes a lower-case version-4 UUID and a NUL into out[UUID_STR_LEN + 1].
 * Returns 0, or -1 when the kernel's random source fails. */
int uuid_generate(char out[UUID_STR_LEN + 1]);

/* Copies s in lower case into out (s must be valid). */
void uuid_normalize(const char *s, char out[UUID_STR_LEN + 1]);

#endif
