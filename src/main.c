/* main.c - chatd's entry point.
 *
 *   chatd            migrate, then serve (the normal start)
 *   chatd migrate    apply migrations and exit
 *   chatd check      load and validate the configuration, then exit
 *
 * Configuration comes from the environment (and .env); a bad value stops
 * start-up with one line naming the variable. */
#include <grpc/grpc.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "log.h"
#include "migrate.h"
#include "server.h"

/* Each WebSocket is a descriptor: take every one the hard limit allows,
 * since the default soft limit (1024) would cap chatd at about a thousand
 * clients. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("event=rlimit_nofile_failed");
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: chatd [serve|migrate|check]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (argc > 2 || (strcmp(cmd, "serve") && strcmp(cmd, "migrate") && strcmp(cmd, "check")))
        return usage();

    struct config cfg;
    char err[512];
    if (config_load(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "chatd: %s\n", err);
        return 1;
    }
    enum log_level lvl = LOG_INFO;
    log_parse_level(cfg.log_level, &lvl);
    log_set_level(lvl);

    int rc = 0;
    if (strcmp(cmd, "check") == 0) {
        printf("configuration ok\n");
        goto out;
    }
    if (migrate_run(&cfg) < 0) {
        fprintf(stderr, "chatd: migrations failed (see the log line above)\n");
        rc = 1;
        goto out;
    }
    if (strcmp(cmd, "migrate") == 0)
        goto out;

    raise_fd_limit();
    grpc_init();
    rc = server_run(&cfg);
    grpc_shutdown();
out:
    config_free(&cfg);
    return rc;
}
