/* peers.h - open WebSocket connections per client address, for
 * MAX_CONNECTIONS_PER_IP. Owned and used by the service thread only. */
#ifndef CHATD_PEERS_H
#define CHATD_PEERS_H

#include <libwebsockets.h>
#include <stddef.h>

#define PEERS_ADDR_MAX 64 /* an address as text, NUL included */

struct config;
struct peers;

/* The client's address: the TCP peer's, or, when the peer is one of
 * TRUSTED_PROXIES, the last address of its X-Forwarded-For (the one that
 * proxy appended: the entries before it are whatever the client sent).
 * A header that is missing or not an address leaves the peer's. */
void peers_client_addr(const struct config *cfg, struct lws *wsi, char out[PEERS_ADDR_MAX]);

struct peers *peers_create(void);
void peers_destroy(struct peers *p);

/* Connections open from addr. */
int peers_count(const struct peers *p, const char *addr);
/* Counts one more from addr. Returns 0, or -1 when out of memory (the
 * caller then refuses the connection rather than lose count of it). */
int peers_add(struct peers *p, const char *addr);
/* Counts one fewer; forgets addr at zero, so the table holds only
 * addresses with open connections. */
void peers_remove(struct peers *p, const char *addr);

#endif
