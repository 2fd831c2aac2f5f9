/* web.h - chatd's own chat page: the files under WEB_DIR served at "/",
 * and the page's third-party libraries (Markdown, sanitizing,
 * highlighting) served from where Debian installed them, through the
 * mounts of WEB_LIBS ("<name>=<dir>,..." served at /lib/<name>/).
 *
 * This part decides, without I/O on the request path beyond one stat(),
 * which file a URL names, its content type, its validator, and the
 * security headers of the page; net/http.c writes the answer. Names are
 * refused unless every segment is made of [A-Za-z0-9._-] and starts
 * with neither a dot nor a dash, so "..", hidden files and any encoding
 * trick never reach the file system; directories are never listed. */
#ifndef CHATD_WEB_H
#define CHATD_WEB_H

#include <stddef.h>
#include <sys/stat.h>

#define WEB_PATH_MAX 1024
#define WEB_ETAG_MAX 64
#define WEB_MOUNTS_MAX 16
#define WEB_CSP_MAX 768
/* The policy of a shared chat's page (GET /s/<id>): the page's own
 * scripts, styles and images (the snapshot's files are under /s/ too),
 * and nothing else: no connection anywhere, no inline script, no frame. */
#define WEB_SHARE_CSP                                                                              \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; font-src "           \
    "'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

struct web_mount {
    char name[64]; /* served at /lib/<name>/ */
    char dir[WEB_PATH_MAX];
};

struct web_site {
    int on;                  /* WEB_DIR set: the page is served */
    char root[WEB_PATH_MAX]; /* WEB_DIR */
    struct web_mount mount[WEB_MOUNTS_MAX];
    size_t n_mounts;
};

/* Fills site from WEB_DIR and WEB_LIBS. An empty web_dir turns the page
 * off. Returns -1 with a message in err for a malformed WEB_LIBS. A
 * directory that does not exist is not an error here: its files are then
 * 404, and chatd logs it once at start. */
int web_site_init(struct web_site *site, const char *web_dir, const char *web_libs, char *err,
                  size_t errlen);

/* The file that uri (decoded, without its query) names: "/" is
 * index.html, "/lib/<name>/<file>" a mount's file, anything else a file
 * under root. Returns 0 with its path, its content type and its stat when
 * it is a regular file of a type we serve; -1 otherwise (answer 404). */
int web_resolve(const struct web_site *site, const char *uri, char path[WEB_PATH_MAX],
                const char **ctype, struct stat *st);

/* Whether uri is one web_resolve would look at: "/", or a name of the
 * allowed shape with a served extension. Says nothing of existence. */
int web_claims(const struct web_site *site, const char *uri);

/* The content type for a file name by its extension, NULL for one we do
 * not serve. */
const char *web_content_type(const char *name);

/* A strong validator from the file's size and modification time. */
void web_etag(const struct stat *st, char out[WEB_ETAG_MAX]);

/* RFC 9110 13.1.2: whether an If-None-Match value ("*" or a list of
 * entity tags, weak ones compared weakly) matches etag. */
int web_etag_match(const char *if_none_match, const char *etag);

/* The page's Content-Security-Policy: its own scripts, styles and images
 * only, and WebSockets to the host it was loaded from (named explicitly
 * for browsers whose 'self' does not cover ws:). host is the request's
 * Host header; one with characters outside a host name's is left out. */
void web_csp(const char *host, char out[WEB_CSP_MAX]);

#endif
