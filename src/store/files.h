/* files.h - the file store: PUBLIC_DIR, the names of what is in it, its
 * temporary files, and the types it accepts.
 *
 * A stored file is named by 32 random hex digits and its checked
 * extension ([0-9a-f]{32}\.[a-z0-9]{1,8}); nothing of a client's file name
 * ever reaches the file system, and nothing but names of that shape is
 * ever looked up. An upload is written to ".upload-<hex>.part" and renamed
 * to its name only after its row committed. */
#ifndef CHATD_FILES_H
#define CHATD_FILES_H

#include <stddef.h>
#include <stdint.h>

struct config;

#define FILES_HEX_LEN 32
#define FILES_EXT_MAX 8
#define FILES_NAME_MAX (FILES_HEX_LEN + 1 + FILES_EXT_MAX + 1)
#define FILES_PATH_MAX 4096
/* The first bytes of a file that files_sniff_ok looks at. */
#define FILES_HEAD 16

/* A type chatd knows how to check. A type listed in UPLOAD_ALLOWED_TYPES
 * but not known here is accepted unchecked and served as
 * application/octet-stream. */
struct files_type {
    const char *ext;
    const char *mime;
    const char *magic; /* NULL: text, i.e. no NUL byte anywhere */
    size_t magic_len;
};

/* The known type of an extension (lower case), or NULL. */
const struct files_type *files_type_by_ext(const char *ext);
/* Whether the first bytes (head, len of them) look like t says; an unknown
 * type (NULL) or a text type always does. */
int files_sniff_ok(const struct files_type *t, const unsigned char *head, size_t len);

/* 1 when name has the stored shape. */
int files_name_valid(const char *name);
/* The Content-Type a stored file is served with, from its extension. */
const char *files_content_type(const char *name);
/* PUBLIC_DIR/name into out. 0, or -1 when it does not fit. */
int files_path(const struct config *cfg, const char *name, char out[FILES_PATH_MAX]);
/* PUBLIC_BASE_URL/uploads/<ref>: malloc'd, NULL when out of memory. */
char *files_url(const struct config *cfg, const char *ref);

/* A new temporary file for a file of extension ext: its final name in
 * name, its path in tmp_path. Returns the open descriptor, or -1 with
 * errno set (ENOSPC, EDQUOT: no room; anything else: our failure). */
int files_create_temp(const struct config *cfg, const char *ext, char name[FILES_NAME_MAX],
                      char tmp_path[FILES_PATH_MAX]);
/* Writes all of buf. 0, or the errno of the failure (ENOSPC when the disk
 * took no byte). */
int files_write(int fd, const void *buf, size_t len);
/* fsync and close (fd is closed either way). 0, or the errno. */
int files_sync_close(int fd);
/* Gives the temporary file its name and makes that durable. 0, or -1. */
int files_commit(const struct config *cfg, const char *tmp_path, const char *name);
/* A second name for the stored file name, made in out (the same
 * extension): a copy that stays when name is removed, and costs no space
 * (a hard link; the files are never written after they are stored). 0,
 * or -1 (logged). */
int files_link(const struct config *cfg, const char *name, char out[FILES_NAME_MAX]);
/* Removes a temporary file (logged when that fails). */
void files_remove_temp(const char *tmp_path);
/* Removes a stored file; names not of the stored shape are ignored. */
void files_remove(const struct config *cfg, const char *name);

/* At start-up: creates PUBLIC_DIR if missing and removes temporary files
 * that a crash left behind (older than an hour, so that another chatd
 * sharing the directory keeps its uploads in progress). */
void files_prepare_dir(const struct config *cfg);

#endif
