/* util.h - small helpers that several modules need, in one place. */
#ifndef CHATD_UTIL_H
#define CHATD_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a of a NUL-terminated string: for hash tables of ids and
 * addresses (not for anything an attacker must not predict). */
uint32_t util_hash(const char *s);

/* A malloc'd copy of len bytes with a NUL after them (frames and copies
 * are handed on as C strings), or NULL when out of memory. */
char *util_memdup(const void *p, size_t len);

/* A whole decimal unsigned 64-bit number (no sign, no space, no
 * trailing text). 0, or -1 when s is not one. */
int util_parse_u64(const char *s, uint64_t *out);

/* n bytes from the kernel's CSPRNG (getrandom). 0, or -1. */
int util_random(void *buf, size_t n);

/* 1 when the n bytes at s are valid UTF-8 (no overlong 2-byte forms). */
int util_utf8_valid(const unsigned char *s, size_t n);

/* Calls fn(item, len, arg) for each item of a comma-separated list
 * (spaces around items are skipped, empty items ignored) until fn returns
 * non-zero, and returns that (0 when none did). config.c splits its list
 * settings with it once, at load. */
int util_list_each(const char *list, int (*fn)(const char *item, size_t len, void *arg), void *arg);

/* The longest text util_money_text writes, with its NUL. */
#define UTIL_MONEY_MAX 32

/* A dollar amount an agent reported, as the decimal text PostgreSQL
 * stores in a numeric: the double field when it is non-zero (the shortest
 * text that reads back as the same double), else the float field at float
 * precision (7 significant digits: 0.000128f is "0.000128", not
 * "0.00012799999967683107"). 0, or -1 (and "0") for a cost that is not a
 * finite number >= 0, which no agent may charge. */
int util_money_text(char out[UTIL_MONEY_MAX], float f, double d);

#endif
