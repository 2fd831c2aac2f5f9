/* auth.c - HS256 token checks, the Origin allow-list, and finding a
 * request's token.
 *
 * The crypto is OpenSSL's: HMAC-SHA256 over "header.payload", base64
 * decoding, and CRYPTO_memcmp so that comparing signatures takes the same
 * time wherever they differ (a plain memcmp leaks how many leading bytes of
 * a forged signature are right). JSON is jansson's. What is ours is the
 * policy, written to refuse by default (pure functions: finding a token in
 * a request is net/bearer.c's):
 *   - only "alg":"HS256": never "none", never another algorithm picked by
 *     the token itself, and a "crit" header we cannot honour is refused;
 *   - the signature is checked before anything in the payload is trusted;
 *   - "exp" is required; "nbf", and "iss"/"aud" when configured, are checked;
 *   - "sub" must be a UUID, as every user_id is. */
#include "wire/auth.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/config.h"

#define AUTH_HS256_LEN 32

int auth_required(const struct config *cfg) { return cfg->auth == CONFIG_AUTH_JWT; }

/* Decodes unpadded base64url (RFC 7515 section 2) into a malloc'd buffer
 * with a NUL after the data (*out_len set). NULL on bad input. */
static unsigned char *b64url_decode(const char *in, size_t n, size_t *out_len)
{
    if (n % 4 == 1)
        return NULL;
    size_t padded = (n + 3) / 4 * 4;
    char *std = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    if (std == NULL || out == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '-')
            ch = '+';
        else if (ch == '_')
            ch = '/';
        else if (!isalnum((unsigned char)ch))
            goto fail; /* '+', '/', '=' and anything else are not base64url */
        std[i] = ch;
    }
    for (size_t i = n; i < padded; i++)
        std[i] = '=';
    std[padded] = '\0';
    /* EVP_DecodeBlock counts the padding as zero bytes; the real length
     * follows from the unpadded input. */
    if (padded > 0 && EVP_DecodeBlock(out, (const unsigned char *)std, (int)padded) < 0)
        goto fail;
    *out_len = n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
    out[*out_len] = '\0';
    free(std);
    return out;
fail:
    free(std);
    free(out);
    return NULL;
}

static json_t *b64url_json(const char *in, size_t n)
{
    size_t len;
    unsigned char *raw = b64url_decode(in, n, &len);
    if (raw == NULL)
        return NULL;
    json_t *j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A NumericDate: a JSON number of seconds (RFC 7519 allows fractions). */
static int numeric_date(json_t *claims, const char *name, double *out)
{
    json_t *v = json_object_get(claims, name);
    if (v == NULL)
        return 0;
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return 1;
}

static int audience_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return 1;
    }
    return 0;
}

int auth_verify_token(const struct config *cfg, const char *token, size_t len, time_t now,
                      char sub[UUID_STR_LEN + 1], const char **why)
{
    json_t *header = NULL, *claims = NULL;
    unsigned char *sig = NULL;
    int rc = -1;

    if (len == 0 || len > AUTH_TOKEN_MAX) {
        *why = "bad length";
        goto out;
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 =
        dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        *why = "not three parts";
        goto out;
    }

    header = b64url_json(token, (size_t)(dot1 - token));
    if (header == NULL) {
        *why = "bad header";
        goto out;
    }
    const char *alg = json_string_value(json_object_get(header, "alg"));
    if (alg == NULL || strcmp(alg, "HS256") != 0) {
        *why = "alg is not HS256";
        goto out;
    }
    if (json_object_get(header, "crit") != NULL) {
        *why = "crit header";
        goto out;
    }

    size_t sig_len;
    sig = b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig_len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (HMAC(EVP_sha256(), cfg->jwt_secret, (int)strlen(cfg->jwt_secret),
             (const unsigned char *)token, (size_t)(dot2 - token), mac, &mac_len) == NULL) {
        *why = "hmac failed";
        goto out;
    }
    if (sig == NULL || sig_len != AUTH_HS256_LEN || mac_len != AUTH_HS256_LEN ||
        CRYPTO_memcmp(sig, mac, AUTH_HS256_LEN) != 0) {
        *why = "bad signature";
        goto out;
    }

    /* Signed by us: only now are the claims worth reading. */
    claims = b64url_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (claims == NULL) {
        *why = "bad payload";
        goto out;
    }
    double exp, nbf;
    int has = numeric_date(claims, "exp", &exp);
    if (has <= 0) {
        *why = has == 0 ? "no exp" : "bad exp";
        goto out;
    }
    if ((double)now >= exp) {
        *why = "expired";
        goto out;
    }
    has = numeric_date(claims, "nbf", &nbf);
    if (has < 0 || (has > 0 && (double)now < nbf)) {
        *why = "not yet valid";
        goto out;
    }
    if (cfg->jwt_issuer[0] != '\0') {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || strcmp(iss, cfg->jwt_issuer) != 0) {
            *why = "wrong iss";
            goto out;
        }
    }
    if (cfg->jwt_audience[0] != '\0' &&
        !audience_matches(json_object_get(claims, "aud"), cfg->jwt_audience)) {
        *why = "wrong aud";
        goto out;
    }
    const char *s = json_string_value(json_object_get(claims, "sub"));
    if (s == NULL || !uuid_valid(s)) {
        *why = "sub is not a user id";
        goto out;
    }
    uuid_normalize(s, sub);
    rc = 0;
out:
    json_decref(header);
    json_decref(claims);
    free(sig);
    return rc;
}

int auth_origin_allowed(const struct config *cfg, const char *origin)
{
    if (cfg->origin_list.n == 0 || origin == NULL)
        return 1;
    return config_list_has(&cfg->origin_list, origin, strlen(origin), 1);
}

int auth_host_is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcasecmp(host, "localhost") == 0;
}

/* ------------------------------------------------------- file references */

#define AUTH_FILE_KEY_LABEL "chatd file url v1"

/* hex(HMAC(HMAC(JWT_SECRET, label), name "\n" exp)) into out[65]. */
static int file_sig(const struct config *cfg, const char *name, long long exp, char out[65])
{
    unsigned char key[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
    unsigned key_len = 0, mac_len = 0;
    if (HMAC(EVP_sha256(), cfg->jwt_secret, (int)strlen(cfg->jwt_secret),
             (const unsigned char *)AUTH_FILE_KEY_LABEL, sizeof(AUTH_FILE_KEY_LABEL) - 1, key,
             &key_len) == NULL)
        return -1;
    char msg[512];
    int n = snprintf(msg, sizeof(msg), "%s\n%lld", name, exp);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -1;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, (size_t)n, mac,
             &mac_len) == NULL ||
        mac_len != AUTH_HS256_LEN)
        return -1;
    for (unsigned i = 0; i < mac_len; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    return 0;
}

char *auth_file_ref(const struct config *cfg, const char *name, time_t now)
{
    if (!auth_required(cfg))
        return strdup(name);
    long long exp = (long long)now + cfg->file_url_ttl_seconds;
    char sig[65];
    if (file_sig(cfg, name, exp, sig) != 0)
        return NULL;
    size_t cap = strlen(name) + 96;
    char *out = malloc(cap);
    if (out != NULL)
        snprintf(out, cap, "%s?exp=%lld&sig=%s", name, exp, sig);
    return out;
}

int auth_file_ref_ok(const struct config *cfg, const char *name, const char *exp, const char *sig,
                     time_t now)
{
    if (!auth_required(cfg))
        return 1;
    /* One spelling of a link only, the one auth_file_ref writes: exp in
     * decimal without leading zeros, sig in lower-case hex. Another
     * spelling of the same values is another URL, which a cache in front
     * would keep apart and a log would not match. */
    if (exp == NULL || sig == NULL || strlen(sig) != 64 || strlen(exp) > 18 ||
        strspn(exp, "0123456789") != strlen(exp) || exp[0] == '0' ||
        strspn(sig, "0123456789abcdef") != 64)
        return 0;
    long long e = strtoll(exp, NULL, 10);
    if (e <= (long long)now)
        return 0;
    char want[65];
    if (file_sig(cfg, name, e, want) != 0)
        return 0;
    return CRYPTO_memcmp(want, sig, 64) == 0;
}

int auth_file_ref_name(const char *ref, char *out, size_t cap)
{
    size_t n = strcspn(ref, "?");
    if (n >= cap)
        return -1;
    memcpy(out, ref, n);
    out[n] = '\0';
    return 0;
}
