/* zipout.c - see zipout.h. */
#include "lib/zipout.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>

#include "lib/log.h"

struct zipout {
    struct archive *a;
    zipout_sink sink;
    void *arg;
};

static la_ssize_t zipout_cb(struct archive *a, void *arg, const void *p, size_t n)
{
    (void)a;
    struct zipout *z = arg;
    if (z->sink == NULL) /* abandoned: what libarchive still writes goes nowhere */
        return (la_ssize_t)n;
    return z->sink(z->arg, p, n) == 0 ? (la_ssize_t)n : -1;
}

static int zipout_fail(struct zipout *z, const char *op)
{
    log_warn("event=zip_write_failed op=%s error=\"%s\"", op, archive_error_string(z->a));
    return -1;
}

struct zipout *zipout_open(zipout_sink sink, void *arg)
{
    struct zipout *z = calloc(1, sizeof(*z));
    if (z == NULL || (z->a = archive_write_new()) == NULL)
        goto fail;
    z->sink = sink;
    z->arg = arg;
    /* No blocking: every byte reaches the sink as soon as it is made. */
    if (archive_write_set_format_zip(z->a) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(z->a, 0) != ARCHIVE_OK ||
        archive_write_open2(z->a, z, NULL, zipout_cb, NULL, NULL) != ARCHIVE_OK)
        goto fail;
    return z;
fail:
    zipout_free(z);
    return NULL;
}

int zipout_begin(struct zipout *z, const char *name, time_t mtime)
{
    struct archive_entry *e = archive_entry_new();
    if (e == NULL)
        return -1;
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, mtime, 0);
    /* No size: the entry's length comes after its data. */
    int rc = archive_write_header(z->a, e);
    archive_entry_free(e);
    return rc == ARCHIVE_OK ? 0 : zipout_fail(z, "header");
}

int zipout_write(struct zipout *z, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    return archive_write_data(z->a, p, n) == (la_ssize_t)n ? 0 : zipout_fail(z, "data");
}

int zipout_end(struct zipout *z)
{
    return archive_write_finish_entry(z->a) == ARCHIVE_OK ? 0 : zipout_fail(z, "finish");
}

int zipout_close(struct zipout *z)
{
    int rc = archive_write_close(z->a) == ARCHIVE_OK ? 0 : zipout_fail(z, "close");
    zipout_free(z);
    return rc;
}

void zipout_free(struct zipout *z)
{
    if (z == NULL)
        return;
    z->sink = NULL;
    if (z->a != NULL)
        archive_write_free(z->a);
    free(z);
}
