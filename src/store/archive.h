/* archive.h - the JSON files inside a zip archive (an export taken by POST
 * /import: ChatGPT's export is a zip holding conversations.json), read as
 * streams straight from the archive, never extracted anywhere.
 *
 * What is read: the entries named conversations.json (in any folder);
 * when there is none, every .json and .jsonl entry. A zip bomb is refused
 * by the sizes the archive declares before a byte is inflated (their sum
 * over max), and a reader stops at an entry's declared size, so an entry
 * that inflates past what it declared cannot grow either. libzip
 * (Debian's libzip-dev) reads the archive. */
#ifndef CHATD_ARCHIVE_H
#define CHATD_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

enum archive_status {
    ARCHIVE_OK,
    ARCHIVE_NOT_ZIP,   /* not a zip archive, or a broken one */
    ARCHIVE_EMPTY,     /* no JSON in it */
    ARCHIVE_TOO_LARGE, /* what it holds inflates past max */
    ARCHIVE_ERROR,     /* reading failed (why says) */
};

struct archive;

/* Opens path and picks its entries; why says what was wrong. */
enum archive_status archive_open(const char *path, uint64_t max, struct archive **out, char *why,
                                 size_t whylen);
size_t archive_count(const struct archive *a);
const char *archive_name(const struct archive *a, size_t i);
/* Entry i's bytes, to fn a chunk at a time (nonzero from fn stops it). */
enum archive_status archive_read(struct archive *a, size_t i,
                                 int (*fn)(void *arg, const char *buf, size_t n), void *arg,
                                 char *why, size_t whylen);
void archive_close(struct archive *a);

#endif
