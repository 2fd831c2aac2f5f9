/* fuzz_proto.c - libFuzzer target over the frame path: JSON envelope
 * decoding, field validation and the error/reply encoders, i.e. everything
 * the service thread does with a client frame before a worker would touch
 * a database. Each input is also given to the bearer-token verifier
 * (auth_verify_token), the other parser an anonymous peer reaches.
 *
 * Invariants checked beyond "no crash, no sanitizer report": a decoded
 * request names a known code and well-formed ids; an error always encodes
 * to a JSON object with an "error" string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/uuid.h"
#include "wire/auth.h"
#include "wire/proto.h"
#include "work/dispatch.h"

#define FUZZ_JWT_SECRET "fuzz-secret-fuzz-secret-fuzz-secret!"

/* A token can only pass with this secret; a pass must name a valid sub. */
static void fuzz_token(const uint8_t *data, size_t size)
{
    static char mode[] = "jwt", secret[] = FUZZ_JWT_SECRET, empty[] = "";
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.auth_mode = mode;
    cfg.jwt_secret = secret;
    cfg.jwt_issuer = empty;
    cfg.jwt_audience = empty;
    cfg.allowed_origins = empty;
    char sub[UUID_STR_LEN + 1];
    const char *why = NULL;
    if (auth_verify_token(&cfg, (const char *)data, size, 1800000000, sub, &why) == 0) {
        if (!uuid_valid(sub))
            abort();
    } else if (why == NULL) {
        abort(); /* every refusal has a reason for the log */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct proto_limits lim = {.max_chat_message_bytes = 4096};
    struct proto_request req;
    struct proto_error err;
    size_t len;

    fuzz_token(data, size);
    if (proto_decode((const char *)data, size, &lim, dispatch_decoder, &req, &err) == 0) {
        /* a code the dispatch table has, never one only the server sends */
        if (dispatch_decoder(req.type) == NULL || req.type == PROTO_CHAT_DELTA ||
            req.type == PROTO_EVENT)
            abort();
        if (req.type == PROTO_ORGANIZE &&
            (req.tags != NULL && json_array_size(req.tags) > PROTO_TAGS_MAX))
            abort();
        if ((req.type == PROTO_UNSHARE && !proto_share_id_valid(req.share_id)) ||
            (req.type == PROTO_FORK && req.share_id[0] != '\0' &&
             !proto_share_id_valid(req.share_id)))
            abort();
        if (req.type == PROTO_SHARE &&
            (req.max_views < 0 || req.max_views > PROTO_SHARE_VIEWS_MAX || req.expires_in < 0 ||
             (req.expires_in > 0 && req.expires_in < PROTO_SHARE_SECONDS_MIN)))
            abort();
        if (req.type == PROTO_RESUME && (req.after < -1 || !uuid_valid(req.session_id)))
            abort();
        if (req.type == PROTO_USAGE &&
            (req.since_us < -1 || req.until_us < -1 ||
             (req.since_us >= 0 && req.until_us >= 0 && req.until_us < req.since_us)))
            abort();
        if (req.type == PROTO_SEARCH &&
            (req.query == NULL || req.query[0] == '\0' || req.limit < 1 ||
             req.limit > PROTO_SEARCH_MAX || req.offset < 0 || req.offset > PROTO_OFFSET_MAX))
            abort();
        if (req.type == PROTO_HISTORY &&
            (req.limit < 1 || req.limit > PROTO_PAGE_MAX || req.before < -1))
            abort();
        if (req.type == PROTO_RENAME &&
            (req.session_name[0] == '\0' || req.session_name[0] == ' ' ||
             strpbrk(req.session_name, "\r\n\t") != NULL))
            abort();
        if (req.type == PROTO_FEEDBACK && (req.rating < -1 || req.rating > 1 || req.seq < 0))
            abort();
        if (!uuid_valid(req.user_id))
            abort();
        if (req.session_id[0] != '\0' && !uuid_valid(req.session_id))
            abort();
        if (req.type == PROTO_CHAT) {
            if (req.message == NULL || strlen(req.message) > lim.max_chat_message_bytes)
                abort();
            (void)proto_utf8_prefix(req.message, 20);
        }
        char *s = proto_encode_reply(req.type, json_pack("{s:s}", "user_id", req.user_id), &len);
        free(s);
        proto_request_free(&req);
    } else {
        char *s = proto_encode_error(&err, &len);
        json_t *back = s != NULL ? json_loads(s, 0, NULL) : NULL;
        if (back == NULL || !json_is_string(json_object_get(back, "error")))
            abort();
        /* "error" is exactly the code's documented text (17 names its
         * field in it); anything that varies is in "detail". */
        if (err.code != PERR_INVALID_FIELD &&
            strcmp(json_string_value(json_object_get(back, "error")), proto_err_text(err.code)) !=
                0)
            abort();
        json_decref(back);
        free(s);
    }
    return 0;
}
