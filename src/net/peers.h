/* peers.h - open WebSocket connections per client address, for
 * MAX_CONNECTIONS_PER_IP. Owned and used by the service thread only. */
#ifndef CHATD_PEERS_H
#define CHATD_PEERS_H

#define PEERS_ADDR_MAX 64 /* an address as text, NUL included */

struct peers;

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
