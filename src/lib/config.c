/* config.c - table-driven configuration from environment variables.
 *
 * Every setting is one row of config_table: its variable name, where it goes
 * in struct config, its default and, for numbers, its bounds. A malformed
 * value is an error naming the variable; it never silently becomes the
 * default. */
#include "lib/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "lib/util.h"

enum cfg_type { CFG_STR, CFG_INT, CFG_LOGLEVEL };

struct cfg_row {
    const char *name;
    enum cfg_type type;
    size_t offset;
    const char *def; /* NULL: required */
    long min, max;   /* CFG_INT only */
};

#define S(name, field, def)                                                                        \
    {                                                                                              \
        name, CFG_STR, offsetof(struct config, field), def, 0, 0                                   \
    }
#define I(name, field, def, lo, hi)                                                                \
    {                                                                                              \
        name, CFG_INT, offsetof(struct config, field), def, lo, hi                                 \
    }

static const struct cfg_row config_table[] = {
    S("SERVER_HOST", server_host, "127.0.0.1"),
    I("SERVER_PORT", server_port, "8000", 0, 65535),
    /* a libpq connection string or URI (multi-host too); wins over DB_* */
    S("DATABASE_URL", database_url, ""),
    /* standbys for reads that may lag (store/readpg.c); "" = the primary */
    S("DATABASE_READ_URL", database_read_url, ""),
    I("DATABASE_READ_MAX_LAG_MS", database_read_max_lag_ms, "1000", 0, 3600000),
    S("DB_HOST", db_host, "127.0.0.1"),
    I("DB_PORT", db_port, "5433", 1, 65535),
    S("DB_USER", db_user, "chatd"),
    S("DB_PASSWORD", db_password, "chatd"),
    S("DB_NAME", db_name, "chatd"),
    S("REDIS_HOST", redis_host, "127.0.0.1"),
    I("REDIS_PORT", redis_port, "6380", 1, 65535),
    S("REDIS_PASSWORD", redis_password, ""),
    I("REDIS_DB", redis_db, "0", 0, 15),
    /* host:port,... : the master is asked of these Sentinels (store/cache.c) */
    S("REDIS_SENTINELS", redis_sentinels, ""),
    S("REDIS_MASTER_NAME", redis_master_name, "mymaster"),
    S("AI_SERVER_HOST", ai_server_host, "127.0.0.1"),
    I("AI_SERVER_PORT", ai_server_port, "50051", 1, 65535),
    I("AI_TIMEOUT_SECONDS", ai_timeout_seconds, "600", 1, 86400),
    I("AI_TITLE_TIMEOUT_SECONDS", ai_title_timeout_seconds, "20", 1, 3600),
    I("MAX_FILE_SIZE", max_file_size_mb, "10", 1, 4096),
    /* POST /import: the largest export file taken, in bytes */
    I("IMPORT_MAX_BYTES", import_max_bytes, "268435456", 1024, 2147483647),
    I("MAX_CHAT_HISTORY_CONTEXT", max_chat_history_context, "20", 0, 10000),
    S("PUBLIC_DIR", public_dir, "./public"),
    S("PUBLIC_BASE_URL", public_base_url, "http://localhost:8000"),
    S("UPLOAD_ALLOWED_TYPES", upload_allowed_types,
      "pdf,txt,md,docx,png,jpg,jpeg,gif,webp,csv,json"),
    S("CORS_ORIGINS", cors_origins, "*"),
    I("MAX_MESSAGE_BYTES", max_message_bytes, "1048576", 1024, 64 * 1024 * 1024),
    I("MAX_CHAT_MESSAGE_BYTES", max_chat_message_bytes, "65536", 16, 16 * 1024 * 1024),
    I("MAX_INFLIGHT_PER_CONN", max_inflight_per_conn, "64", 1, 100000),
    I("TURN_LEASE_SECONDS", turn_lease_seconds, "10", 2, 3600),
    /* data lifecycle (work/sweep.c) */
    I("TEMPORARY_CHAT_HOURS", temporary_chat_hours, "24", 1, 876000),
    I("RETENTION_DAYS", retention_days, "0", 0, 36500),
    I("SWEEP_SECONDS", sweep_seconds, "60", 1, 86400),
    I("SWEEP_CLOCK_OFFSET_SECONDS", sweep_clock_offset_seconds, "0", 0, 2000000000),
    I("STREAM_RETAIN_SECONDS", stream_retain_seconds, "300", 1, 86400),
    I("RESUMABLE_STREAMS", resumable_streams, "1", 0, 1),
    I("WORKER_THREADS", worker_threads, "4", 1, 256),
    I("WS_PING_SECONDS", ws_ping_seconds, "30", 1, 3600),
    I("SHUTDOWN_GRACE_SECONDS", shutdown_grace_seconds, "30", 0, 3600),
    {"LOG_LEVEL", CFG_LOGLEVEL, offsetof(struct config, log_level), "info", 0, 0},
    S("MIGRATIONS_DIR", migrations_dir, "./migrations"),
    /* who may connect, and as whom (docs/SECURITY.md) */
    S("AUTH_MODE", auth_mode, "none"),
    S("DETACHED_TURNS", detached_turns, "finish"),
    S("JWT_SECRET", jwt_secret, ""),
    S("JWT_ISSUER", jwt_issuer, ""),
    S("JWT_AUDIENCE", jwt_audience, ""),
    S("ALLOWED_ORIGINS", allowed_origins, ""),
    S("TRUSTED_PROXIES", trusted_proxies, ""),
    I("FILE_URL_TTL_SECONDS", file_url_ttl_seconds, "3600", 10, 30 * 86400),
    S("SEARCH_LANGUAGE", search_language, "simple"),
    /* chatd's own chat page (web/, net/web.c); an empty WEB_DIR turns it off */
    S("WEB_DIR", web_dir, "./web"),
    S("WEB_LIBS", web_libs,
      "marked=/usr/share/javascript/marked,dompurify=/usr/share/nodejs/dompurify/dist,"
      "highlight=/usr/share/javascript/highlight.js"),
    S("WEB_DEFAULT_USER", web_default_user, ""),
    /* limits that keep one client from hurting others; 0 turns a limit off */
    I("RATE_LIMIT_PER_MINUTE", rate_limit_per_minute, "30", 0, 1000000),
    I("DAILY_MESSAGE_LIMIT", daily_message_limit, "1000", 0, 100000000),
    I("MAX_CONNECTIONS", max_connections, "10000", 1, 1000000),
    I("MAX_CONNECTIONS_PER_IP", max_connections_per_ip, "100", 1, 1000000),
    I("MAX_OUTPUT_BYTES_PER_CONN", max_output_bytes_per_conn, "4194304", 65536, 1024 * 1024 * 1024),
    I("SLOW_READER_CLOSE_SECONDS", slow_reader_close_seconds, "30", 1, 3600),
};

#undef S
#undef I

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int list_add(const char *s, size_t n, void *arg)
{
    struct config_list *l = arg;
    char **grown = realloc(l->item, (l->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return -1;
    l->item = grown;
    if ((l->item[l->n] = strndup(s, n)) == NULL)
        return -1;
    l->n++;
    return 0;
}

/* Splits a comma list; with ext, items are file extensions: a leading dot
 * goes and they are lower-cased, as the upload check compares them. */
static int split_list(const char *s, struct config_list *l, int ext)
{
    if (util_list_each(s, list_add, l) != 0)
        return -1;
    for (size_t i = 0; ext && i < l->n; i++) {
        char *e = l->item[i];
        while (*e == '.')
            memmove(e, e + 1, strlen(e));
        for (char *c = e; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    }
    return 0;
}

static void free_list(struct config_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->item[i]);
    free(l->item);
    l->item = NULL;
    l->n = 0;
}

int config_list_has(const struct config_list *list, const char *s, size_t len, int ci)
{
    for (size_t i = 0; i < list->n; i++) {
        const char *it = list->item[i];
        if (strlen(it) == len && (ci ? strncasecmp(it, s, len) : strncmp(it, s, len)) == 0)
            return 1;
    }
    return 0;
}

int config_from_env(struct config *cfg, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < sizeof(config_table) / sizeof(config_table[0]); i++) {
        const struct cfg_row *row = &config_table[i];
        const char *val = getenv(row->name);
        if (val == NULL)
            val = row->def;
        if (val == NULL) {
            snprintf(errbuf, errlen, "config: %s is required but not set", row->name);
            goto fail;
        }
        void *field = (char *)cfg + row->offset;
        switch (row->type) {
        case CFG_INT: {
            long v;
            if (parse_long(val, &v) != 0) {
                snprintf(errbuf, errlen, "config: %s=\"%s\" is not an integer", row->name, val);
                goto fail;
            }
            if (v < row->min || v > row->max) {
                snprintf(errbuf, errlen, "config: %s=%ld is out of range [%ld, %ld]", row->name, v,
                         row->min, row->max);
                goto fail;
            }
            *(int *)field = (int)v;
            break;
        }
        case CFG_LOGLEVEL: {
            enum log_level lvl;
            if (log_parse_level(val, &lvl) != 0) {
                snprintf(errbuf, errlen, "config: %s=\"%s\" is not one of debug, info, warn, error",
                         row->name, val);
                goto fail;
            }
        }
            __attribute__((fallthrough)); /* stored as a string too */
        case CFG_STR:
            if ((*(char **)field = strdup(val)) == NULL) {
                snprintf(errbuf, errlen, "config: out of memory");
                goto fail;
            }
            break;
        }
    }
    if (cfg->server_host[0] == '\0') {
        snprintf(errbuf, errlen, "config: SERVER_HOST must not be empty");
        goto fail;
    }
    if (strcmp(cfg->auth_mode, "none") != 0 && strcmp(cfg->auth_mode, "jwt") != 0) {
        snprintf(errbuf, errlen, "config: AUTH_MODE=\"%s\" is not one of none, jwt",
                 cfg->auth_mode);
        goto fail;
    }
    cfg->auth = strcmp(cfg->auth_mode, "jwt") == 0 ? CONFIG_AUTH_JWT : CONFIG_AUTH_NONE;
    if (strcmp(cfg->detached_turns, "finish") != 0 && strcmp(cfg->detached_turns, "cancel") != 0) {
        snprintf(errbuf, errlen, "config: DETACHED_TURNS=\"%s\" must be finish or cancel",
                 cfg->detached_turns);
        goto fail;
    }
    cfg->detached_finish = strcmp(cfg->detached_turns, "finish") == 0;
    /* A PostgreSQL text-search configuration name: simple, english, ... */
    if (cfg->search_language[0] == '\0' ||
        strspn(cfg->search_language, "abcdefghijklmnopqrstuvwxyz_") !=
            strlen(cfg->search_language)) {
        snprintf(errbuf, errlen,
                 "config: SEARCH_LANGUAGE=\"%s\" is not a text-search configuration name",
                 cfg->search_language);
        goto fail;
    }
    log_parse_level(cfg->log_level, &cfg->log_lvl);
    cfg->cors_any = strcmp(cfg->cors_origins, "*") == 0;
    if (split_list(cfg->cors_origins, &cfg->cors_list, 0) != 0 ||
        split_list(cfg->allowed_origins, &cfg->origin_list, 0) != 0 ||
        split_list(cfg->trusted_proxies, &cfg->proxy_list, 0) != 0 ||
        split_list(cfg->upload_allowed_types, &cfg->upload_types, 1) != 0 ||
        split_list(cfg->redis_sentinels, &cfg->sentinel_list, 0) != 0) {
        snprintf(errbuf, errlen, "config: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->sentinel_list.n; i++) {
        const char *it = cfg->sentinel_list.item[i], *colon = strrchr(it, ':');
        long port;
        if (colon == NULL || colon == it || parse_long(colon + 1, &port) != 0 || port < 1 ||
            port > 65535) {
            snprintf(errbuf, errlen, "config: REDIS_SENTINELS item \"%s\" is not host:port", it);
            goto fail;
        }
    }
    if (cfg->sentinel_list.n > 0 && cfg->redis_master_name[0] == '\0') {
        snprintf(errbuf, errlen, "config: REDIS_SENTINELS needs REDIS_MASTER_NAME");
        goto fail;
    }
    /* A short HS256 key can be brute-forced offline from any one token. */
    if (cfg->auth == CONFIG_AUTH_JWT && strlen(cfg->jwt_secret) < 32) {
        snprintf(errbuf, errlen, "config: AUTH_MODE=jwt needs JWT_SECRET of at least 32 bytes");
        goto fail;
    }
    return 0;
fail:
    config_free(cfg);
    return -1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int config_load_dotenv(const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(errbuf, errlen, "config: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        if (strncmp(s, "export ", 7) == 0)
            s = trim(s + 7);
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(errbuf, errlen, "config: %s:%d: expected KEY=VALUE", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = '\0';
            val++;
        }
        if (setenv(key, val, 0) != 0) {
            snprintf(errbuf, errlen, "config: %s:%d: bad variable name \"%s\"", path, lineno, key);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

int config_load(struct config *cfg, char *errbuf, size_t errlen)
{
    const char *path = getenv("CHATD_ENV_FILE");
    if (path != NULL && path[0] != '\0') {
        if (config_load_dotenv(path, errbuf, errlen) != 0)
            return -1;
    } else {
        FILE *f = fopen(".env", "r");
        if (f != NULL) {
            fclose(f);
            if (config_load_dotenv(".env", errbuf, errlen) != 0)
                return -1;
        }
    }
    return config_from_env(cfg, errbuf, errlen);
}

void config_free(struct config *cfg)
{
    free_list(&cfg->cors_list);
    free_list(&cfg->origin_list);
    free_list(&cfg->proxy_list);
    free_list(&cfg->sentinel_list);
    free_list(&cfg->upload_types);
    for (size_t i = 0; i < sizeof(config_table) / sizeof(config_table[0]); i++) {
        if (config_table[i].type != CFG_INT) {
            char **field = (char **)((char *)cfg + config_table[i].offset);
            free(*field);
            *field = NULL;
        }
    }
}
