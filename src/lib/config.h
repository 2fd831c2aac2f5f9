/* config.h - chatd's settings, read once at start-up from the environment
 * (optionally seeded from a .env file). See config.c for the table of every
 * variable, its default and its bounds; .env.sample documents them. */
#ifndef CHATD_CONFIG_H
#define CHATD_CONFIG_H

#include <stddef.h>

#include "lib/log.h"

/* A comma-separated setting, split once at load. */
struct config_list {
    char **item;
    size_t n;
};

enum config_auth { CONFIG_AUTH_NONE, CONFIG_AUTH_JWT };

struct config {
    char *server_host;
    int server_port;

    char *database_url;           /* "" = built from db_host..db_name */
    char *database_read_url;      /* "" = reads on the primary */
    int database_read_max_lag_ms; /* a standby further behind is skipped */
    char *db_host;
    int db_port;
    char *db_user;
    char *db_password;
    char *db_name;

    char *redis_host;
    int redis_port;
    char *redis_password;
    int redis_db;
    char *redis_sentinels; /* "" = redis_host:redis_port, no Sentinel */
    char *redis_master_name;
    struct config_list sentinel_list; /* redis_sentinels split */

    char *ai_server_host;
    int ai_server_port;
    int ai_timeout_seconds;
    int ai_title_timeout_seconds;   /* a Title call's deadline */
    int turn_lease_seconds;         /* a session's turn lease (store/lease.h) */
    int temporary_chat_hours;       /* a temporary chat's life after its last turn */
    int retention_days;             /* sessions idle longer are deleted; 0: kept */
    int sweep_seconds;              /* between two sweeps (work/sweep.c) */
    int sweep_clock_offset_seconds; /* tests: the sweeper's clock runs this far ahead */
    int stream_retain_seconds;      /* a turn's frames kept for code 16 after it ends */
    int resumable_streams;          /* 0: no turn streams in Redis, code 16 answers error 30 */

    int max_file_size_mb;
    int import_max_bytes; /* POST /import's file */
    int max_chat_history_context;
    char *public_dir;
    char *public_base_url;
    char *upload_allowed_types; /* comma-separated file extensions */
    char *cors_origins;         /* "*" or comma-separated origins */

    int max_message_bytes;      /* largest WebSocket frame (assembled message) */
    int max_chat_message_bytes; /* largest chat text / session prompt */
    int max_inflight_per_conn;  /* requests queued or running per connection */
    int worker_threads;
    int ws_ping_seconds; /* idle seconds before a keep-alive ping */
    int shutdown_grace_seconds;
    char *log_level;
    char *migrations_dir;

    char *auth_mode;          /* "none" or "jwt" */
    char *detached_turns;     /* "finish" or "cancel" */
    char *jwt_secret;         /* HS256 key, >= 32 bytes when auth_mode is jwt */
    char *jwt_issuer;         /* "" = iss not checked */
    char *jwt_audience;       /* "" = aud not checked */
    char *allowed_origins;    /* "" = any Origin; else comma-separated list */
    char *trusted_proxies;    /* "" = none; else addresses of proxies in front */
    int file_url_ttl_seconds; /* life of a signed file reference (jwt) */
    char *search_language;    /* text-search configuration, at migration */
    char *web_dir;            /* the page's files, "" = no page */
    char *web_libs;           /* <name>=<dir>,... served at /lib/<name>/ */
    char *web_default_user;   /* user id the page offers with AUTH_MODE=none */

    int rate_limit_per_minute; /* chat turns per user per minute, 0 = off */
    int daily_message_limit;   /* chat turns per user per UTC day, 0 = off */
    int max_connections;       /* WebSocket connections in all */
    int max_connections_per_ip;
    int max_output_bytes_per_conn; /* unsent bytes before chatd stops reading */
    int slow_reader_close_seconds; /* ...and closes if it stays over that long */

    /* Parsed once at load from the strings above, for the hot paths. */
    enum config_auth auth;           /* AUTH_MODE */
    int detached_finish;             /* DETACHED_TURNS=finish */
    enum log_level log_lvl;          /* LOG_LEVEL */
    int cors_any;                    /* CORS_ORIGINS is "*" */
    struct config_list cors_list;    /* CORS_ORIGINS otherwise */
    struct config_list origin_list;  /* ALLOWED_ORIGINS; empty: any */
    struct config_list proxy_list;   /* TRUSTED_PROXIES: addresses whose X-Forwarded-For counts */
    struct config_list upload_types; /* UPLOAD_ALLOWED_TYPES, lower case, no dots */
};

/* 1 when list holds s (len bytes) exactly; ci: ignoring ASCII case. */
int config_list_has(const struct config_list *list, const char *s, size_t len, int ci);

/* Loads .env (path from CHATD_ENV_FILE, else ./.env when present) into the
 * environment without overriding variables already set, then parses every
 * variable. On error writes one line naming the variable to errbuf and
 * returns -1. */
int config_load(struct config *cfg, char *errbuf, size_t errlen);

/* Parses only the environment (no .env). Used by config_load and tests. */
int config_from_env(struct config *cfg, char *errbuf, size_t errlen);

/* Reads KEY=VALUE lines; does not override variables already set. */
int config_load_dotenv(const char *path, char *errbuf, size_t errlen);

void config_free(struct config *cfg);

#endif
