/* reads.c - reads on a standby that has caught up (see reads.h). */
#include "work/reads.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "store/dbrow.h"
#include "work/app.h"
#include "work/pool.h"

/* Between two looks at the standby's replay position: short at first
 * (replay is usually a millisecond behind), then up to this. */
#define READS_PAUSE_MAX_US 20000

struct pg *reads_pg(struct worker *w)
{
    const struct config *cfg = w->app->cfg;
    if (cfg->database_read_url[0] == '\0')
        return &w->pg;
    char *lsn = NULL;
    if (dbrow_text_row(&w->pg, PG_WAL_LSN, 0, NULL, &lsn) != DB_OK)
        return &w->pg; /* the read itself will say what is wrong */
    const char *p[1] = {lsn};
    uint64_t until = metrics_now_us() + (uint64_t)cfg->database_read_max_lag_ms * 1000;
    long pause_us = 500;
    struct pg *out = &w->pg;
    for (;;) {
        char *caught_up = NULL;
        if (dbrow_text_row(&w->rd, PG_REPLAYED, 1, p, &caught_up) != DB_OK)
            break; /* down: the primary reads */
        int yes = strcmp(caught_up, "true") == 0;
        free(caught_up);
        if (yes) {
            out = &w->rd;
            break;
        }
        if (metrics_now_us() + (uint64_t)pause_us > until) {
            log_debug("event=standby_behind lsn=%s", lsn);
            break;
        }
        struct timespec ts = {0, pause_us * 1000L};
        nanosleep(&ts, NULL);
        pause_us = pause_us * 2 > READS_PAUSE_MAX_US ? READS_PAUSE_MAX_US : pause_us * 2;
    }
    free(lsn);
    metrics_read_on(out == &w->rd);
    return out;
}
