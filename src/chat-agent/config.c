/* config.c - chat-agent's settings (docs/AGENT.md), and the helpers the
 * back ends share: method names, the cost formula. main.c and the back
 * ends use it; it uses neither. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_agent.h"
#include "lib/log.h"

struct ca_config ca_cfg;

static const char *const method_names[CA_N_METHODS] = {"Process", "ProcessStream", "Summarize",
                                                       "Title"};
static atomic_uint next_cost; /* AGENT_COSTS: the next one to charge */

const char *ca_method_name(enum ca_method m)
{
    return m < CA_N_METHODS ? method_names[m] : "unknown";
}

int ca_fails(enum ca_method m, const char *model)
{
    if (m == CA_SUMMARIZE)
        return 0;
    if (ca_cfg.fail_models == NULL)
        return *ca_cfg.fail_mode != '\0';
    if (m == CA_TITLE || model == NULL)
        return 0;
    /* A list of a few names, read once per call: no need to parse it at load. */
    size_t n = strlen(model);
    for (const char *p = ca_cfg.fail_models; *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, model, n) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

size_t ca_tokens(size_t bytes) { return (bytes + 2) / 3; }

double ca_cost(size_t in_bytes, size_t out_bytes)
{
    if (ca_cfg.n_costs > 0)
        return ca_cfg.costs[atomic_fetch_add(&next_cost, 1) % (unsigned)ca_cfg.n_costs];
    return in_bytes / 3.0 / 1000.0 * ca_cfg.price_in_per_1k +
           out_bytes / 3.0 / 1000.0 * ca_cfg.price_out_per_1k;
}

/* ---------------------------------------------------------------- config */

static const char *env_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static int env_long(const char *name, long def, long min, long max, long *out)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < min || n > max) {
        fprintf(stderr, "chat-agent: %s must be an integer in [%ld, %ld]\n", name, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

static int env_double(const char *name, double def, double *out)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || *end || d < 0) {
        fprintf(stderr, "chat-agent: %s must be a non-negative number\n", name);
        return -1;
    }
    *out = d;
    return 0;
}

static int ca_parse_disable(const char *list)
{
    char *copy = strdup(list), *save = NULL;
    int rc = 0;
    if (!copy)
        return -1;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int found = 0;
        for (int m = 0; m < CA_N_METHODS; m++) {
            if (strcmp(t, method_names[m]) == 0) {
                ca_cfg.disabled[m] = 1;
                found = 1;
            }
        }
        if (!found) {
            fprintf(stderr, "chat-agent: AGENT_DISABLE: unknown method \"%s\"\n", t);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

/* AGENT_COSTS: "0.000128,0.000218", charged in turn by the replies. */
static int ca_parse_costs(const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return -1;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char *end;
        errno = 0;
        double d = strtod(t, &end);
        double *p = realloc(ca_cfg.costs, sizeof(*p) * (size_t)(ca_cfg.n_costs + 1));
        if (errno || *end || !(d >= 0) || !p) {
            fprintf(stderr, "chat-agent: AGENT_COSTS: \"%s\" is not a number >= 0\n", t);
            if (p)
                ca_cfg.costs = p;
            free(copy);
            return -1;
        }
        ca_cfg.costs = p;
        ca_cfg.costs[ca_cfg.n_costs++] = d;
    }
    free(copy);
    return 0;
}

int ca_config_load(void)
{
    long port, delay, delta, stamp, timeout, workers;
    ca_cfg.host = env_str("AGENT_HOST", "127.0.0.1");
    ca_cfg.backend = env_str("AGENT_BACKEND", "echo");
    ca_cfg.record_file = env_str("AGENT_RECORD_FILE", NULL);
    ca_cfg.fail_mode = env_str("AGENT_FAIL_MODE", "");
    ca_cfg.fail_models = env_str("AGENT_FAIL_MODELS", NULL);
    ca_cfg.openai_base_url = env_str("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1");
    ca_cfg.openai_api_key = env_str("OPENAI_API_KEY", NULL);
    ca_cfg.openai_model = env_str("OPENAI_MODEL", "");
    if (env_long("AGENT_PORT", 50051, 0, 65535, &port) ||
        env_long("AGENT_DELAY_MS", 0, 0, 3600 * 1000, &delay) ||
        env_long("AGENT_DELTA_MS", 0, 0, 3600 * 1000, &delta) ||
        env_long("AGENT_STAMP_DELTAS", 0, 0, 1, &stamp) ||
        env_long("OPENAI_TIMEOUT_SECONDS", 120, 1, 24 * 3600, &timeout) ||
        env_long("AGENT_WORKERS", 16, 1, 1024, &workers) ||
        env_double("AGENT_PRICE_IN_PER_1K", 0.0015, &ca_cfg.price_in_per_1k) ||
        env_double("AGENT_PRICE_OUT_PER_1K", 0.002, &ca_cfg.price_out_per_1k) ||
        ca_parse_disable(env_str("AGENT_DISABLE", "")) ||
        ca_parse_costs(env_str("AGENT_COSTS", "")))
        return -1;
    const char *phase = env_str("AGENT_DELTA_PHASE", "aligned");
    if (strcmp(phase, "aligned") != 0 && strcmp(phase, "random") != 0) {
        fprintf(stderr, "chat-agent: AGENT_DELTA_PHASE must be aligned or random\n");
        return -1;
    }
    ca_cfg.delta_phase_random = strcmp(phase, "random") == 0;
    const char *fields = env_str("AGENT_COST_FIELDS", "both");
    if (strcmp(fields, "both") == 0) {
        ca_cfg.cost_fields = CA_COST_BOTH;
    } else if (strcmp(fields, "float") == 0) {
        ca_cfg.cost_fields = CA_COST_FLOAT;
    } else if (strcmp(fields, "double") == 0) {
        ca_cfg.cost_fields = CA_COST_DOUBLE;
    } else {
        fprintf(stderr, "chat-agent: AGENT_COST_FIELDS must be both, float or double\n");
        return -1;
    }
    ca_cfg.port = (int)port;
    ca_cfg.delay_ms = (int)delay;
    ca_cfg.delta_ms = (int)delta;
    ca_cfg.stamp_deltas = (int)stamp;
    ca_cfg.openai_timeout_seconds = (int)timeout;
    ca_cfg.workers = (int)workers;
    if (strcmp(ca_cfg.backend, "echo") != 0 && strcmp(ca_cfg.backend, "openai") != 0) {
        fprintf(stderr, "chat-agent: AGENT_BACKEND must be echo or openai\n");
        return -1;
    }
    if (*ca_cfg.fail_mode && strcmp(ca_cfg.fail_mode, "internal") != 0 &&
        strcmp(ca_cfg.fail_mode, "funds") != 0) {
        fprintf(stderr, "chat-agent: AGENT_FAIL_MODE must be internal or funds\n");
        return -1;
    }
    enum log_level lvl;
    if (log_parse_level(env_str("AGENT_LOG_LEVEL", "info"), &lvl) == 0)
        log_set_level(lvl);
    return 0;
}
