/* peers.c - a count of open connections per client address.
 *
 * A chained hash table keyed by the address text. An entry lives only while
 * its address has connections, so the table's size follows the number of
 * distinct connected addresses, never the number ever seen. */
#include "net/peers.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/util.h"

#define PEERS_BUCKETS 1024

struct peer {
    struct peer *next;
    int count;
    char addr[PEERS_ADDR_MAX];
};

struct peers {
    struct peer *buckets[PEERS_BUCKETS];
};

/* FNV-1a: addresses are short and not chosen to collide (a peer controls
 * only its own address, and a bucket chain costs only a little time). */
static unsigned peers_hash(const char *s) { return util_hash(s) % PEERS_BUCKETS; }

struct peers *peers_create(void) { return calloc(1, sizeof(struct peers)); }

void peers_destroy(struct peers *p)
{
    if (p == NULL)
        return;
    for (int b = 0; b < PEERS_BUCKETS; b++) {
        while (p->buckets[b] != NULL) {
            struct peer *e = p->buckets[b];
            p->buckets[b] = e->next;
            free(e);
        }
    }
    free(p);
}

static struct peer **peers_find(struct peers *p, const char *addr)
{
    struct peer **pp = &p->buckets[peers_hash(addr)];
    while (*pp != NULL && strcmp((*pp)->addr, addr) != 0)
        pp = &(*pp)->next;
    return pp;
}

int peers_count(const struct peers *p, const char *addr)
{
    struct peer *const *pp = peers_find((struct peers *)p, addr);
    return *pp != NULL ? (*pp)->count : 0;
}

int peers_add(struct peers *p, const char *addr)
{
    struct peer **pp = peers_find(p, addr);
    if (*pp == NULL) {
        struct peer *e = calloc(1, sizeof(*e));
        if (e == NULL)
            return -1;
        strncpy(e->addr, addr, sizeof(e->addr) - 1);
        *pp = e;
    }
    (*pp)->count++;
    return 0;
}

void peers_remove(struct peers *p, const char *addr)
{
    struct peer **pp = peers_find(p, addr);
    if (*pp == NULL)
        return;
    if (--(*pp)->count <= 0) {
        struct peer *dead = *pp;
        *pp = dead->next;
        free(dead);
    }
}

void peers_client_addr(const struct config *cfg, struct lws *wsi, char out[PEERS_ADDR_MAX])
{
    lws_get_peer_simple(wsi, out, PEERS_ADDR_MAX);
    if (cfg->proxy_list.n == 0 || !config_list_has(&cfg->proxy_list, out, strlen(out), 0))
        return;
    char xff[512];
    if (lws_hdr_copy(wsi, xff, sizeof(xff), WSI_TOKEN_X_FORWARDED_FOR) <= 0)
        return;
    const char *last = strrchr(xff, ',');
    last = last != NULL ? last + 1 : xff;
    last += strspn(last, " \t");
    size_t n = strcspn(last, " \t");
    /* An IPv4 or IPv6 address, nothing else. */
    if (n == 0 || n >= PEERS_ADDR_MAX || strspn(last, "0123456789abcdefABCDEF.:") < n)
        return;
    memcpy(out, last, n);
    out[n] = '\0';
}
