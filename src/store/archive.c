/* archive.c - JSON files inside a zip (see archive.h). */
#include "store/archive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#define ARCHIVE_CHUNK 65536

struct archive {
    zip_t *zip;
    zip_uint64_t *entries;
    size_t n;
};

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* conversations.json, alone or in a folder */
static int is_conversations(const char *name)
{
    return strcmp(name, "conversations.json") == 0 || ends_with(name, "/conversations.json");
}

enum archive_status archive_open(const char *path, uint64_t max, struct archive **out, char *why,
                                 size_t whylen)
{
    int err = 0;
    struct archive *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(why, whylen, "out of memory");
        return ARCHIVE_ERROR;
    }
    a->zip = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &err);
    if (a->zip == NULL) {
        free(a);
        snprintf(why, whylen, "not a zip archive, or a broken one");
        return ARCHIVE_NOT_ZIP;
    }
    zip_int64_t count = zip_get_num_entries(a->zip, 0);
    a->entries = calloc(count > 0 ? (size_t)count : 1, sizeof(*a->entries));
    if (a->entries == NULL) {
        archive_close(a);
        snprintf(why, whylen, "out of memory");
        return ARCHIVE_ERROR;
    }
    /* two looks: conversations.json if there is one, else any JSON */
    for (int any = 0; any < 2 && a->n == 0; any++) {
        uint64_t total = 0;
        for (zip_int64_t i = 0; i < count; i++) {
            zip_stat_t st;
            if (zip_stat_index(a->zip, (zip_uint64_t)i, 0, &st) != 0 ||
                !(st.valid & ZIP_STAT_NAME) || !(st.valid & ZIP_STAT_SIZE))
                continue;
            int pick = any ? ends_with(st.name, ".json") || ends_with(st.name, ".jsonl")
                           : is_conversations(st.name);
            if (!pick)
                continue;
            total += st.size;
            if (total > max || st.size > max) {
                archive_close(a);
                snprintf(why, whylen, "the archive inflates to more than %llu bytes",
                         (unsigned long long)max);
                return ARCHIVE_TOO_LARGE;
            }
            a->entries[a->n++] = (zip_uint64_t)i;
        }
    }
    if (a->n == 0) {
        archive_close(a);
        snprintf(why, whylen, "no .json or .jsonl file in the archive");
        return ARCHIVE_EMPTY;
    }
    *out = a;
    return ARCHIVE_OK;
}

size_t archive_count(const struct archive *a) { return a->n; }

const char *archive_name(const struct archive *a, size_t i)
{
    const char *n = zip_get_name(a->zip, a->entries[i], 0);
    return n != NULL ? n : "";
}

enum archive_status archive_read(struct archive *a, size_t i,
                                 int (*fn)(void *arg, const char *buf, size_t n), void *arg,
                                 char *why, size_t whylen)
{
    zip_stat_t st;
    if (zip_stat_index(a->zip, a->entries[i], 0, &st) != 0) {
        snprintf(why, whylen, "an entry of the archive cannot be read");
        return ARCHIVE_ERROR;
    }
    zip_file_t *f = zip_fopen_index(a->zip, a->entries[i], 0);
    if (f == NULL) {
        snprintf(why, whylen, "an entry of the archive cannot be read (encrypted?)");
        return ARCHIVE_ERROR;
    }
    static __thread char buf[ARCHIVE_CHUNK];
    uint64_t got = 0;
    enum archive_status rc = ARCHIVE_OK;
    for (;;) {
        zip_int64_t n = zip_fread(f, buf, sizeof(buf));
        if (n < 0) {
            snprintf(why, whylen, "an entry of the archive is broken");
            rc = ARCHIVE_ERROR;
            break;
        }
        if (n == 0)
            break;
        got += (uint64_t)n;
        if (got > st.size) { /* more than it declared: a bomb in disguise */
            snprintf(why, whylen, "an entry inflates past its declared size");
            rc = ARCHIVE_TOO_LARGE;
            break;
        }
        if (fn(arg, buf, (size_t)n) != 0)
            break;
    }
    zip_fclose(f);
    return rc;
}

void archive_close(struct archive *a)
{
    if (a == NULL)
        return;
    if (a->zip != NULL)
        zip_discard(a->zip);
    free(a->entries);
    free(a);
}
