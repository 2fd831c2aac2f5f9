/* util.h - small helpers that several modules need, in one place. */
#ifndef CHATD_UTIL_H
#define CHATD_UTIL_H

#include <stdint.h>

/* FNV-1a of a NUL-terminated string: for hash tables of ids and
 * addresses (not for anything an attacker must not predict). */
uint32_t util_hash(const char *s);

/* A whole decimal unsigned 64-bit number (no sign, no space, no
 * trailing text). 0, or -1 when s is not one. */
int util_parse_u64(const char *s, uint64_t *out);

#endif
