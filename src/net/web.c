/* web.c - which file a page URL names, and how it is served (web.h). */
#include "net/web.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "lib/util.h"

static const char web_lib_prefix[] = "/lib/";

static const struct {
    const char *ext;
    const char *type;
} web_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"ico", "image/vnd.microsoft.icon"},
    {"webmanifest", "application/manifest+json"},
    {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"woff2", "font/woff2"},
};

const char *web_content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    const char *slash = strrchr(name, '/');
    if (dot == NULL || (slash != NULL && dot < slash))
        return NULL;
    for (size_t i = 0; i < sizeof(web_types) / sizeof(web_types[0]); i++)
        if (strcasecmp(dot + 1, web_types[i].ext) == 0)
            return web_types[i].type;
    return NULL;
}

/* A relative name of segments [A-Za-z0-9._-]+ separated by single
 * slashes, none starting with a dot or a dash: no "..", no hidden file,
 * no empty segment, no trailing slash. */
static int web_name_ok(const char *s)
{
    if (*s == '\0' || strlen(s) >= 256)
        return 0;
    int seg_start = 1;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '/') {
            if (seg_start)
                return 0;
            seg_start = 1;
            continue;
        }
        if (seg_start && (c == '.' || c == '-'))
            return 0;
        seg_start = 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return !seg_start;
}

struct web_libs_parse {
    struct web_site *site;
    char *err;
    size_t errlen;
};

static int web_lib_add(const char *s, size_t n, void *arg)
{
    struct web_libs_parse *p = arg;
    const char *eq = memchr(s, '=', n);
    size_t name_len = eq != NULL ? (size_t)(eq - s) : 0;
    size_t dir_len = eq != NULL ? n - name_len - 1 : 0;
    char name[sizeof(p->site->mount[0].name)];
    if (eq == NULL || name_len == 0 || name_len >= sizeof(name) || dir_len == 0 ||
        dir_len >= WEB_PATH_MAX) {
        snprintf(p->err, p->errlen, "WEB_LIBS: '%.*s' is not <name>=<directory>", (int)n, s);
        return -1;
    }
    memcpy(name, s, name_len);
    name[name_len] = '\0';
    if (!web_name_ok(name) || strchr(name, '/') != NULL) {
        snprintf(p->err, p->errlen, "WEB_LIBS: '%s' is not a plain name", name);
        return -1;
    }
    if (p->site->n_mounts == WEB_MOUNTS_MAX) {
        snprintf(p->err, p->errlen, "WEB_LIBS: more than %d mounts", WEB_MOUNTS_MAX);
        return -1;
    }
    struct web_mount *m = &p->site->mount[p->site->n_mounts++];
    memcpy(m->name, name, name_len + 1);
    memcpy(m->dir, eq + 1, dir_len);
    m->dir[dir_len] = '\0';
    return 0;
}

int web_site_init(struct web_site *site, const char *web_dir, const char *web_libs, char *err,
                  size_t errlen)
{
    memset(site, 0, sizeof(*site));
    if (web_dir == NULL || web_dir[0] == '\0')
        return 0;
    if (strlen(web_dir) >= sizeof(site->root)) {
        snprintf(err, errlen, "WEB_DIR: longer than %zu bytes", sizeof(site->root) - 1);
        return -1;
    }
    snprintf(site->root, sizeof(site->root), "%s", web_dir);
    struct web_libs_parse p = {site, err, errlen};
    if (web_libs != NULL && util_list_each(web_libs, web_lib_add, &p) != 0)
        return -1;
    site->on = 1;
    return 0;
}

/* The directory and the name inside it that uri names, or -1. */
static int web_split(const struct web_site *site, const char *uri, const char **dir,
                     const char **name)
{
    if (!site->on || uri[0] != '/')
        return -1;
    if (strcmp(uri, "/") == 0) {
        *dir = site->root;
        *name = "index.html";
        return 0;
    }
    if (strncmp(uri, web_lib_prefix, sizeof(web_lib_prefix) - 1) == 0) {
        const char *rest = uri + sizeof(web_lib_prefix) - 1;
        const char *slash = strchr(rest, '/');
        if (slash == NULL)
            return -1;
        size_t n = (size_t)(slash - rest);
        for (size_t i = 0; i < site->n_mounts; i++)
            if (strlen(site->mount[i].name) == n && memcmp(site->mount[i].name, rest, n) == 0) {
                *dir = site->mount[i].dir;
                *name = slash + 1;
                return web_name_ok(*name) ? 0 : -1;
            }
        return -1;
    }
    *dir = site->root;
    *name = uri + 1;
    return web_name_ok(*name) ? 0 : -1;
}

int web_claims(const struct web_site *site, const char *uri)
{
    const char *dir, *name;
    return web_split(site, uri, &dir, &name) == 0 && web_content_type(name) != NULL;
}

int web_resolve(const struct web_site *site, const char *uri, char path[WEB_PATH_MAX],
                const char **ctype, struct stat *st)
{
    const char *dir, *name;
    if (web_split(site, uri, &dir, &name) != 0 || (*ctype = web_content_type(name)) == NULL)
        return -1;
    int n = snprintf(path, WEB_PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= WEB_PATH_MAX)
        return -1;
    /* stat follows links: Debian's library directories are made of them,
     * and the name check above already keeps us inside the directory. */
    if (stat(path, st) != 0 || !S_ISREG(st->st_mode))
        return -1;
    return 0;
}

void web_etag(const struct stat *st, char out[WEB_ETAG_MAX])
{
    snprintf(out, WEB_ETAG_MAX, "\"%llx-%llx-%lx\"", (unsigned long long)st->st_size,
             (unsigned long long)st->st_mtim.tv_sec, (unsigned long)st->st_mtim.tv_nsec);
}

int web_etag_match(const char *inm, const char *etag)
{
    const char *e = etag;
    size_t elen = strlen(e);
    const char *s = inm;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (*s == '\0')
            break;
        if (*s == '*')
            return 1;
        /* If-None-Match compares weakly: W/"x" matches "x". */
        if (s[0] == 'W' && s[1] == '/')
            s += 2;
        const char *t = s;
        if (*t == '"') {
            t = strchr(t + 1, '"');
            if (t == NULL)
                return 0;
            t++;
        } else {
            while (*t && *t != ',' && *t != ' ' && *t != '\t')
                t++;
        }
        if ((size_t)(t - s) == elen && memcmp(s, e, elen) == 0)
            return 1;
        s = t;
        while (*s && *s != ',')
            s++;
    }
    return 0;
}

void web_csp(const char *host, char out[WEB_CSP_MAX])
{
    int host_ok = host != NULL && host[0] != '\0' && strlen(host) < 200;
    for (const char *c = host; host_ok && *c; c++)
        host_ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '.' || *c == '-' || *c == ':' || *c == '[' ||
                  *c == ']';
    char ws[448] = "";
    if (host_ok)
        snprintf(ws, sizeof(ws), " ws://%s wss://%s", host, host);
    /* No inline script or style anywhere, so a reply that slipped past the
     * sanitizer still could not run; images may be data: (an attachment
     * previewed before it is uploaded). */
    snprintf(out, WEB_CSP_MAX,
             "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' "
             "data:; connect-src 'self'%s; font-src 'self'; manifest-src 'self'; base-uri "
             "'none'; form-action 'none'; frame-ancestors 'none'",
             ws);
}
