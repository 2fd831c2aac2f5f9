/* util.c - see util.h. */
#include "lib/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

char *util_memdup(const void *p, size_t len)
{
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, p, len);
    out[len] = '\0';
    return out;
}

uint32_t util_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

int util_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int util_random(void *buf, size_t n)
{
    unsigned char *b = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom(b + got, n - got, 0);
        if (k < 0 && errno != EINTR)
            return -1;
        if (k > 0)
            got += (size_t)k;
    }
    return 0;
}

int util_utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n || (k == 2 && c < 0xc2))
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

int util_list_each(const char *list, int (*fn)(const char *item, size_t len, void *arg), void *arg)
{
    for (const char *p = list; *p != '\0';) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p > start) {
            int rc = fn(start, (size_t)(p - start), arg);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

int util_money_text(char out[UTIL_MONEY_MAX], float f, double d)
{
    strcpy(out, "0");
    if (d != 0) {
        if (!isfinite(d) || d < 0)
            return -1;
        /* %.17g always reads back; fewer digits usually do, and then say
         * what the agent meant (0.000346, not 0.00034599999999999995). */
        for (int p = 1; p <= 17; p++) {
            snprintf(out, UTIL_MONEY_MAX, "%.*g", p, d);
            if (strtod(out, NULL) == d)
                break;
        }
        return 0;
    }
    if (!isfinite(f) || f < 0)
        return -1;
    if (f == 0)
        return 0; /* also -0 */
    snprintf(out, UTIL_MONEY_MAX, "%.7g", (double)f);
    return 0;
}
