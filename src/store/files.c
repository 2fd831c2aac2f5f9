/* files.c - the file store (see files.h). */
#include "store/files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/util.h"

#define FILES_TMP_PREFIX ".upload-"
#define FILES_TMP_SUFFIX ".part"
#define FILES_STALE_SECONDS 3600

static const struct files_type files_types[] = {
    {"png", "image/png", "\x89PNG\r\n\x1a\n", 8},
    {"jpg", "image/jpeg", "\xff\xd8\xff", 3},
    {"jpeg", "image/jpeg", "\xff\xd8\xff", 3},
    {"gif", "image/gif", "GIF8", 4},
    {"webp", "image/webp", "RIFF", 4}, /* and "WEBP" at offset 8, see files_sniff_ok */
    {"pdf", "application/pdf", "%PDF-", 5},
    {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     "PK\x03\x04", 4},
    {"txt", "text/plain; charset=utf-8", NULL, 0},
    {"md", "text/markdown; charset=utf-8", NULL, 0},
    {"csv", "text/csv; charset=utf-8", NULL, 0},
    {"json", "application/json", NULL, 0},
};

const struct files_type *files_type_by_ext(const char *ext)
{
    for (size_t i = 0; i < sizeof(files_types) / sizeof(files_types[0]); i++)
        if (strcmp(files_types[i].ext, ext) == 0)
            return &files_types[i];
    return NULL;
}

int files_sniff_ok(const struct files_type *t, const unsigned char *head, size_t len)
{
    if (t == NULL || t->magic == NULL)
        return 1;
    if (len < t->magic_len || memcmp(head, t->magic, t->magic_len) != 0)
        return 0;
    if (strcmp(t->ext, "webp") == 0)
        return len >= 12 && memcmp(head + 8, "WEBP", 4) == 0;
    return 1;
}

int files_name_valid(const char *name)
{
    size_t i = 0;
    for (; i < FILES_HEX_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    if (name[i++] != '.')
        return 0;
    size_t el = 0;
    for (; name[i] != '\0'; i++, el++)
        if (el == FILES_EXT_MAX ||
            !((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z')))
            return 0;
    return el >= 1;
}

const char *files_content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    const struct files_type *t = dot != NULL ? files_type_by_ext(dot + 1) : NULL;
    return t != NULL ? t->mime : "application/octet-stream";
}

int files_path(const struct config *cfg, const char *name, char out[FILES_PATH_MAX])
{
    int n = snprintf(out, FILES_PATH_MAX, "%s/%s", cfg->public_dir, name);
    return n >= 0 && n < FILES_PATH_MAX ? 0 : -1;
}

char *files_url(const struct config *cfg, const char *ref)
{
    size_t n = strlen(cfg->public_base_url) + strlen(ref) + sizeof("/uploads/");
    char *url = malloc(n);
    if (url != NULL)
        snprintf(url, n, "%s/uploads/%s", cfg->public_base_url, ref);
    return url;
}

int files_create_temp(const struct config *cfg, const char *ext, char name[FILES_NAME_MAX],
                      char tmp_path[FILES_PATH_MAX])
{
    unsigned char b[FILES_HEX_LEN / 2];
    char hex[FILES_HEX_LEN + 1];
    if (util_random(b, sizeof(b)) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(hex + 2 * i, 3, "%02x", b[i]);
    snprintf(name, FILES_NAME_MAX, "%s.%.*s", hex, FILES_EXT_MAX, ext);
    int n = snprintf(tmp_path, FILES_PATH_MAX, "%s/" FILES_TMP_PREFIX "%s" FILES_TMP_SUFFIX,
                     cfg->public_dir, hex);
    if (n < 0 || n >= FILES_PATH_MAX) {
        tmp_path[0] = '\0';
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        tmp_path[0] = '\0'; /* not ours to remove */
    return fd;
}

int files_write(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, p + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : ENOSPC; /* 0 bytes written: no room */
        off += (size_t)n;
    }
    return 0;
}

int files_sync_close(int fd)
{
    int err = fsync(fd) != 0 ? errno : 0;
    if (close(fd) != 0 && err == 0)
        err = errno;
    return err;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        log_warn("event=upload_dir_fsync_failed dir=%s error=\"%s\"", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
}

int files_commit(const struct config *cfg, const char *tmp_path, const char *name)
{
    char path[FILES_PATH_MAX];
    if (files_path(cfg, name, path) != 0 || rename(tmp_path, path) != 0) {
        log_error("event=upload_rename_failed path=%s error=\"%s\"", tmp_path, strerror(errno));
        return -1;
    }
    fsync_dir(cfg->public_dir);
    return 0;
}

int files_link(const struct config *cfg, const char *name, char out[FILES_NAME_MAX])
{
    char from[FILES_PATH_MAX], to[FILES_PATH_MAX];
    unsigned char b[FILES_HEX_LEN / 2];
    const char *dot = strrchr(name, '.');
    if (!files_name_valid(name) || dot == NULL || util_random(b, sizeof(b)) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    snprintf(out + FILES_HEX_LEN, FILES_NAME_MAX - FILES_HEX_LEN, "%s", dot);
    if (files_path(cfg, name, from) != 0 || files_path(cfg, out, to) != 0)
        return -1;
    if (link(from, to) != 0) {
        log_warn("event=file_link_failed file=%s error=\"%s\"", name, strerror(errno));
        return -1;
    }
    fsync_dir(cfg->public_dir);
    return 0;
}

void files_remove_temp(const char *tmp_path)
{
    if (tmp_path[0] != '\0' && unlink(tmp_path) != 0 && errno != ENOENT)
        log_warn("event=upload_tmp_remove_failed path=%s error=\"%s\"", tmp_path, strerror(errno));
}

void files_remove(const struct config *cfg, const char *name)
{
    char path[FILES_PATH_MAX];
    if (!files_name_valid(name) || files_path(cfg, name, path) != 0)
        return;
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("event=file_remove_failed file=%s error=\"%s\"", name, strerror(errno));
}

void files_prepare_dir(const struct config *cfg)
{
    if (mkdir(cfg->public_dir, 0755) != 0 && errno != EEXIST)
        log_warn("event=public_dir_create_failed dir=%s error=\"%s\"", cfg->public_dir,
                 strerror(errno));
    DIR *d = opendir(cfg->public_dir);
    if (d == NULL)
        return;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, FILES_TMP_PREFIX, sizeof(FILES_TMP_PREFIX) - 1) != 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            now - st.st_mtime > FILES_STALE_SECONDS && unlinkat(dirfd(d), e->d_name, 0) == 0)
            log_info("event=upload_stale_removed file=%s", e->d_name);
    }
    closedir(d);
}
