/* links.h - how a stored file is named outside: the signed reference a
 * client is given, and the URL the agent (or a download) fetches.
 *
 * PostgreSQL and the context copy keep a file as its bare stored name;
 * these turn it into a link only on the way out (code 2, code 9, exports,
 * the agent's request). */
#ifndef CHATD_LINKS_H
#define CHATD_LINKS_H

#include <jansson.h>

struct config;

/* PUBLIC_BASE_URL/uploads/<reference> (auth_file_ref). malloc'd. */
char *links_file_url(const struct config *cfg, const char *name);

/* The reference alone (auth_file_ref, signed now). malloc'd. */
char *links_file_ref(const struct config *cfg, const char *name);

/* Sets key of every file entry of msgs (a JSON array of {role, content},
 * content a stored name) to link(cfg, name): links_file_ref or
 * links_file_url. 0, or -1 when out of memory. */
int links_apply(const struct config *cfg, json_t *msgs, const char *key,
                char *(*link)(const struct config *, const char *));

/* A code 2 "chat" array (JSON text) whose file entries hold signed
 * references instead of bare names (AUTH_MODE=jwt). malloc'd; NULL on
 * error. */
char *links_sign_chat(const struct config *cfg, const char *chat_json);

#endif
