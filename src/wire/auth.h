/* auth.h - who may connect, and as whom.
 *
 * AUTH_MODE=none trusts the user_id in every frame (local use). With
 * AUTH_MODE=jwt a WebSocket upgrade or an upload must carry an HS256 token
 * (JWT_SECRET) whose "sub" is the user's UUID; that connection may then act
 * only as that user. ALLOWED_ORIGINS limits which web pages may open the
 * WebSocket at all. docs/SECURITY.md has the threat model.
 *
 * Pure functions (unit-tested in tests/unit/test_auth.c, fuzzed by
 * fuzz/fuzz_proto.c); net/bearer.c finds the token in a request. */
#ifndef CHATD_AUTH_H
#define CHATD_AUTH_H

#include <stddef.h>
#include <time.h>

#include "lib/uuid.h"

struct config;

/* Longer tokens are refused unread: a header this size is never a token
 * we issued, and it bounds the work an anonymous peer can make us do. */
#define AUTH_TOKEN_MAX 4096

/* 1 when AUTH_MODE=jwt. */
int auth_required(const struct config *cfg);

/* Checks token (len bytes, not NUL-terminated) at time now: HS256
 * signature, "exp" in the future (required), "nbf" if present, and "iss" /
 * "aud" when JWT_ISSUER / JWT_AUDIENCE are set. On success writes the
 * lower-cased "sub" into sub and returns 0; otherwise returns -1 and points
 * *why at a short reason for the log (never sent to the client, which only
 * learns "401"). */
int auth_verify_token(const struct config *cfg, const char *token, size_t len, time_t now,
                      char sub[UUID_STR_LEN + 1], const char **why);

/* 1 when origin (NULL: no Origin header) may open the WebSocket:
 * ALLOWED_ORIGINS is empty or lists origin exactly (case-insensitive), or
 * there is no Origin at all. Browsers always send Origin on a WebSocket
 * upgrade, so the list stops other web pages from riding a user's browser
 * (cross-site WebSocket hijacking); a program that is not a browser can
 * claim any Origin anyway, so refusing a missing one would protect
 * nothing and only break command-line clients. */
int auth_origin_allowed(const struct config *cfg, const char *origin);

/* File references (GET /uploads/<name>). With AUTH_MODE=jwt a stored
 * file's name alone fetches nothing: chatd hands out
 * "<name>?exp=<unix time>&sig=<hex>", an HMAC-SHA256 over the name and the
 * expiry with a key derived from JWT_SECRET (so a file link can never be
 * replayed as a token, nor a token as a link), valid FILE_URL_TTL_SECONDS.
 * With AUTH_MODE=none the bare name is the reference, as the existing
 * client needs. */

/* The reference to hand out for a stored name at time now: malloc'd, or
 * NULL when out of memory. */
char *auth_file_ref(const struct config *cfg, const char *name, time_t now);

/* 1 when a request for name with query arguments exp and sig (NULL when
 * absent) may read the file at time now: always with AUTH_MODE=none,
 * else only with an unexpired signature we made. */
int auth_file_ref_ok(const struct config *cfg, const char *name, const char *exp, const char *sig,
                     time_t now);

/* The stored name inside a reference: ref up to a '?', copied into out.
 * -1 when it does not fit. */
int auth_file_ref_name(const char *ref, char *out, size_t cap);

/* 1 when host is a loopback address or name (127.0.0.0/8, ::1,
 * localhost): AUTH_MODE=none is then safe enough to run without a warning. */
int auth_host_is_loopback(const char *host);

#endif
