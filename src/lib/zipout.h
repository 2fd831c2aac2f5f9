/* zipout.h - a ZIP archive written as a stream (libarchive): each entry's
 * size and checksum follow its data, so nothing needs to be known, kept or
 * sought back to before the next byte goes out. What GET /export?format=zip
 * (work/export_zip.c) sends while it reads the database. */
#ifndef CHATD_ZIPOUT_H
#define CHATD_ZIPOUT_H

#include <stddef.h>
#include <time.h>

struct zipout;

/* Where the archive's bytes go as they are made: 0, or -1 to fail. */
typedef int (*zipout_sink)(void *arg, const void *p, size_t n);

/* NULL when out of memory. */
struct zipout *zipout_open(zipout_sink sink, void *arg);
/* An entry named name (a relative path with '/'), then its data in any
 * number of pieces, then its end. 0, or -1 (the archive is then broken:
 * only zipout_free is left). */
int zipout_begin(struct zipout *z, const char *name, time_t mtime);
int zipout_write(struct zipout *z, const void *p, size_t n);
int zipout_end(struct zipout *z);
/* The central directory, written to the sink; frees z. 0, or -1. */
int zipout_close(struct zipout *z);
/* Abandons z (NULL is fine). */
void zipout_free(struct zipout *z);

#endif
