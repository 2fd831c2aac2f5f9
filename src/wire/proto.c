/* proto.c - decoding, validation and encoding of WebSocket frames.
 *
 * jansson does the parsing: it rejects invalid UTF-8, NUL characters inside
 * strings and nesting deeper than its compile-time limit, so what reaches
 * the checks below is well-formed JSON. The checks then name the offending
 * field in the error text, because the client shows that text to a person.
 *
 * Longer than most files on purpose: every rule a client frame must pass,
 * with the field helpers they share, is here, so that the fuzz target and
 * the unit tests drive all of them through one entry (proto_decode). */
#include "wire/proto.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    int code;
    const char *text;
} err_texts[] = {
    {PERR_JSON_PARSE, "JSON Parsing Error"},
    {PERR_UNKNOWN_MESSAGE, "Unknown Message"},
    {PERR_JSON_MARSHAL, "JSON Marshal Error"},
    {PERR_NO_USER, "User Does Not Exists"},
    {PERR_CREATE_SESSION, "Unable to Create Session"},
    {PERR_LOAD_SESSION, "Unable to Load Session"},
    {PERR_AGENT, "Unable to Receive Response To Query"},
    {PERR_NO_MODEL_ACCESS, "User Does Not Have Model Access"},
    {PERR_LOAD_CHATS, "Unable to Load Chats"},
    {PERR_DELETE_SESSION, "Unable to Delete Session"},
    {PERR_MODEL_LIST, "Unable to Generate AI Model List"},
    {PERR_INTERNAL, "Internal Server Error"},
    {PERR_NO_BALANCE, "Insufficient balance"},
    {PERR_BALANCE, "Unable to get balance details"},
    {PERR_INVALID_FIELD, "Invalid Request Field"},
    {PERR_NO_SESSION, "Session Not Found"},
    {PERR_FRAME_TOO_LARGE, "Frame Too Large"},
    {PERR_MESSAGE_TOO_LONG, "Message Too Long"},
    {PERR_TOO_MANY_REQUESTS, "Too Many Requests In Flight"},
    {PERR_BINARY_FRAME, "Binary Frames Are Not Supported"},
    {PERR_NO_TURN, "No Chat In Progress"},
    {PERR_UNKNOWN_MODEL, "Unknown Model"},
    {PERR_SHUTTING_DOWN, "Server Shutting Down"},
    {PERR_FORBIDDEN_USER, "Not Allowed To Act As This User"},
    {PERR_RATE_LIMITED, "Too Many Messages"},
    {PERR_DAILY_LIMIT, "Daily Message Limit Reached"},
    {PERR_TURN_INTERRUPTED, "Turn Interrupted"},
    {PERR_LIVE_UNAVAILABLE, "Live Updates Unavailable"},
    {PERR_NO_SHARE, "Share Link Not Found"},
    {PERR_SPENDING_LIMIT, "Spending Limit Reached"},
};

const char *proto_err_text(int code)
{
    for (size_t i = 0; i < sizeof(err_texts) / sizeof(err_texts[0]); i++)
        if (err_texts[i].code == code)
            return err_texts[i].text;
    return "Unknown error";
}

void proto_error_set(struct proto_error *err, int type, int code)
{
    err->code = code;
    err->type = type;
    snprintf(err->text, sizeof(err->text), "%s", proto_err_text(code));
    err->detail[0] = '\0';
}

static int field_error(struct proto_error *err, int type, const char *field, const char *why)
{
    proto_error_set(err, type, PERR_INVALID_FIELD);
    snprintf(err->text, sizeof(err->text), "Invalid field '%s': %s", field, why);
    return -1;
}

/* A required string field. */
static int get_string(json_t *data, const char *field, int type, const char **out,
                      struct proto_error *err)
{
    json_t *v = json_object_get(data, field);
    if (v == NULL)
        return field_error(err, type, field, "missing");
    if (!json_is_string(v))
        return field_error(err, type, field, "expected a string");
    *out = json_string_value(v);
    return 0;
}

/* An optional string field: absent or null mean def. */
static int get_opt_string(json_t *data, const char *field, int type, const char *def,
                          const char **out, struct proto_error *err)
{
    json_t *v = json_object_get(data, field);
    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_string(v))
        return field_error(err, type, field, "expected a string");
    *out = json_string_value(v);
    return 0;
}

static int get_uuid(json_t *data, const char *field, int type, char out[UUID_STR_LEN + 1],
                    struct proto_error *err)
{
    const char *s;
    if (get_string(data, field, type, &s, err) != 0)
        return -1;
    if (!uuid_valid(s))
        return field_error(err, type, field, "not a valid UUID");
    uuid_normalize(s, out);
    return 0;
}

static int check_length(const char *field, const char *s, int type, const struct proto_limits *lim,
                        struct proto_error *err)
{
    if (strlen(s) <= lim->max_chat_message_bytes)
        return 0;
    proto_error_set(err, type, PERR_MESSAGE_TOO_LONG);
    snprintf(err->detail, sizeof(err->detail), "'%s' exceeds %zu bytes", field,
             lim->max_chat_message_bytes);
    return -1;
}

/* An optional integer in [min, max]; def when absent or null. */
static int get_opt_int(json_t *data, const char *field, int type, long long def, long long min,
                       long long max, long long *out, struct proto_error *err)
{
    json_t *v = json_object_get(data, field);
    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return field_error(err, type, field, "expected an integer");
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        char why[96];
        snprintf(why, sizeof(why), "out of range [%lld, %lld]", min, max);
        return field_error(err, type, field, why);
    }
    *out = (long long)n;
    return 0;
}

/* Number of UTF-8 characters of s (valid UTF-8, as jansson hands over). */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            n++;
    return n;
}

/* 1 when s holds a control character: C0, DEL, C1 (U+0080..U+009F) or a
 * line or paragraph separator (U+2028, U+2029). */
static int has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 1;
        if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            return 1;
        if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
            return 1;
    }
    return 0;
}

/* The code point at *p (valid UTF-8, as jansson hands over), *p moved
 * past it. */
static unsigned utf8_next(const unsigned char **p)
{
    const unsigned char *s = *p;
    unsigned c = s[0];
    int n = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    if (n > 0)
        c &= 0x3fu >> n;
    for (int i = 1; i <= n; i++)
        c = (c << 6) | (s[i] & 0x3fu);
    *p = s + n + 1;
    return c;
}

/* Unicode's spaces (category Zs), which a name is trimmed of at both ends. */
static int is_space(unsigned c)
{
    return c == 0x20 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* Format characters (category Cf): invisible, and the bidirectional ones
 * reorder what is shown ("abc\u202efdp.exe" shows as "abcexe.pdf").
 * The two joiners are apart: emoji sequences and Persian need them. */
static int is_format(unsigned c)
{
    return c == 0xad || (c >= 0x600 && c <= 0x605) || c == 0x61c || c == 0x6dd || c == 0x70f ||
           c == 0x8e2 || c == 0x180e || c == 0x200b || (c >= 0x200e && c <= 0x200f) ||
           (c >= 0x202a && c <= 0x202e) || (c >= 0x2060 && c <= 0x2064) ||
           (c >= 0x2066 && c <= 0x206f) || c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb) ||
           c == 0x110bd || c == 0x110cd || (c >= 0x13430 && c <= 0x1343f) ||
           (c >= 0x1bca0 && c <= 0x1bca3) || (c >= 0x1d173 && c <= 0x1d17a) || c == 0xe0001 ||
           (c >= 0xe0020 && c <= 0xe007f);
}

static int is_joiner(unsigned c) { return c == 0x200c || c == 0x200d; }

static int check_name(const char *name, struct proto_request *req, struct proto_error *err);
static int check_line(const char *s, const char *field, size_t max_chars, char *out, size_t cap,
                      int t, struct proto_error *err);

/* Code 10: the name trimmed of Unicode spaces, 1..PROTO_NAME_MAX_CHARS
 * characters, one line, no control or format characters (a joiner only
 * between two characters that show). */
static int decode_name(json_t *data, struct proto_request *req, struct proto_error *err)
{
    const int t = req->type;
    const char *name;
    if (get_string(data, "session_name", t, &name, err) != 0)
        return -1;
    return check_name(name, req, err);
}

/* The checks of decode_name, on name. */
static int check_name(const char *name, struct proto_request *req, struct proto_error *err)
{
    return check_line(name, "session_name", PROTO_NAME_MAX_CHARS, req->session_name,
                      sizeof(req->session_name), req->type, err);
}

/* s trimmed of Unicode spaces into out (cap bytes), 1..max_chars
 * characters, one line, no control or format characters (a joiner only
 * between two characters that show): names and tags. */
static int check_line(const char *s, const char *field, size_t max_chars, char *out, size_t cap,
                      int t, struct proto_error *err)
{
    char too_long[64];
    snprintf(too_long, sizeof(too_long), "longer than %zu characters", max_chars);
    if (has_control(s))
        return field_error(err, t, field, "must be one line without control characters");
    const unsigned char *p = (const unsigned char *)s, *start = NULL, *stop = NULL;
    unsigned prev = 0x20;
    while (*p != '\0') {
        const unsigned char *at = p;
        unsigned c = utf8_next(&p);
        if (is_format(c) || (is_joiner(c) && (is_space(prev) || is_joiner(prev))))
            return field_error(err, t, field,
                               "must not contain invisible or direction-changing characters");
        if (is_joiner(prev) && is_space(c))
            return field_error(err, t, field,
                               "must not contain invisible or direction-changing characters");
        if (!is_space(c)) {
            if (start == NULL)
                start = at;
            stop = p;
        }
        prev = c;
    }
    if (is_joiner(prev))
        return field_error(err, t, field,
                           "must not contain invisible or direction-changing characters");
    size_t n = start != NULL ? (size_t)(stop - start) : 0;
    if (n == 0)
        return field_error(err, t, field, "must not be empty");
    if (n >= cap)
        return field_error(err, t, field, too_long);
    memcpy(out, start, n);
    out[n] = '\0';
    if (utf8_chars(out) > max_chars)
        return field_error(err, t, field, too_long);
    return 0;
}

/* A message's seq: required, 0..2^53. */
static int decode_seq(json_t *data, struct proto_request *req, struct proto_error *err)
{
    json_t *seq = json_object_get(data, "seq");
    if (seq == NULL || json_is_null(seq))
        return field_error(err, req->type, "seq", "missing");
    return get_opt_int(data, "seq", req->type, 0, 0, (long long)1 << 53, &req->seq, err);
}

/* An optional, non-empty model_name; NULL when absent (the session's). */
static int decode_opt_model(json_t *data, struct proto_request *req, struct proto_error *err)
{
    req->model_id = -1;
    if (get_opt_string(data, "model_name", req->type, NULL, &req->model_name, err) != 0)
        return -1;
    if (req->model_name != NULL && req->model_name[0] == '\0')
        return field_error(err, req->type, "model_name", "must not be empty");
    return 0;
}

/* A required, non-empty message within the limit (codes 3, 17). */
static int decode_message(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                          struct proto_error *err)
{
    const int t = req->type;
    if (get_string(data, "message", t, &req->message, err) != 0)
        return -1;
    if (req->message[0] == '\0')
        return field_error(err, t, "message", "must not be empty");
    return check_length("message", req->message, t, lim, err);
}

/* What every turn takes (codes 3, 17, 18): an optional "stream": true or
 * false, and an optional "client_turn_id", the client's name for the
 * turn, so that sending it again never stores it twice (work/resend.h). */
static int decode_stream(json_t *data, struct proto_request *req, struct proto_error *err)
{
    json_t *stream = json_object_get(data, "stream");
    if (stream != NULL && !json_is_null(stream)) {
        if (!json_is_boolean(stream))
            return field_error(err, req->type, "stream", "expected true or false");
        req->stream = json_is_true(stream);
    }
    json_t *ct = json_object_get(data, "client_turn_id");
    if (ct != NULL && !json_is_null(ct)) {
        const char *v = json_is_string(ct) ? json_string_value(ct) : NULL;
        size_t n = v != NULL ? strlen(v) : 0;
        if (n == 0 || n > PROTO_CLIENT_TURN_ID_MAX || n != json_string_length(ct) ||
            strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:") != n)
            return field_error(err, req->type, "client_turn_id",
                               "expected 1 to 64 letters, digits or -_.:");
        memcpy(req->client_turn_id, v, n + 1);
    }
    return 0;
}

/* Code 12. */
static int decode_feedback(json_t *data, struct proto_request *req, struct proto_error *err)
{
    const int t = req->type;
    long long v;
    if (decode_seq(data, req, err) != 0)
        return -1;
    json_t *r = json_object_get(data, "rating");
    if (r == NULL || json_is_null(r))
        return field_error(err, t, "rating", "missing");
    if (get_opt_int(data, "rating", t, 0, -1, 1, &v, err) != 0)
        return -1;
    req->rating = (int)v;
    if (get_opt_string(data, "comment", t, "", &req->comment, err) != 0)
        return -1;
    if (utf8_chars(req->comment) > PROTO_COMMENT_MAX_CHARS)
        return field_error(err, t, "comment", "longer than 1024 characters");
    return 0;
}

int proto_parse_time(const char *s, long long *us)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    const char *p = s + 10;
    long long frac_us = 0, offset_s = 0;
    if (*p != '\0') {
        if (*p != 'T' && *p != 't' && *p != ' ')
            return -1;
        if (sscanf(p + 1, "%2d:%2d:%2d%n", &h, &mi, &sec, &n) != 3 || n != 8)
            return -1;
        p += 9;
        if (*p == '.') {
            int digits = 0;
            for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                if (digits < 6)
                    frac_us = frac_us * 10 + (*p - '0');
            if (digits == 0)
                return -1;
            for (; digits < 6; digits++)
                frac_us *= 10;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om;
            if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5 || oh > 23 || om > 59)
                return -1;
            offset_s = (oh * 3600LL + om * 60LL) * (*p == '-' ? -1 : 1);
            p += 6;
        } else {
            return -1;
        }
        if (*p != '\0')
            return -1;
    }
    /* The digits were read with %d, which also takes signs and spaces:
     * check the shape, then the ranges. */
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
            return -1;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 || sec > 60 || h < 0 || mi < 0 ||
        sec < 0)
        return -1;
    /* Days from the civil date (H. Hinnant's algorithm): no timegm, no TZ. */
    int yy = mo <= 2 ? y - 1 : y;
    int era = yy / 400;
    int yoe = yy - era * 400;
    int doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long long days = (long long)era * 146097 + doe - 719468;
    long long t = days * 86400 + h * 3600LL + mi * 60LL + (sec == 60 ? 59 : sec) - offset_s;
    if (t < 0)
        return -1;
    *us = t * 1000000 + frac_us;
    return 0;
}

/* Code 13's optional times: absent or null are -1. */
static int decode_time(json_t *data, const char *field, int type, long long *out,
                       struct proto_error *err)
{
    const char *s = NULL;
    if (get_opt_string(data, field, type, NULL, &s, err) != 0)
        return -1;
    if (s == NULL) {
        *out = -1;
        return 0;
    }
    if (proto_parse_time(s, out) != 0)
        return field_error(err, type, field, "not an RFC 3339 time or date");
    return 0;
}

static int get_opt_bool(json_t *data, const char *field, int type, int *out,
                        struct proto_error *err)
{
    json_t *v = json_object_get(data, field);
    *out = -1;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return field_error(err, type, field, "expected true or false");
    *out = json_is_true(v);
    return 0;
}

static int decode_chat(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                       struct proto_error *err)
{
    const int t = PROTO_CHAT;
    const char *sid;
    if (get_string(data, "session_id", t, &sid, err) != 0)
        return -1;
    if (strcmp(sid, "NEW") == 0) {
        req->session_new = 1;
    } else if (uuid_valid(sid)) {
        uuid_normalize(sid, req->session_id);
    } else {
        return field_error(err, t, "session_id", "not a valid UUID or \"NEW\"");
    }

    /* model_name is what the client sends; model_id is accepted too. */
    json_t *mname = json_object_get(data, "model_name");
    json_t *mid = json_object_get(data, "model_id");
    req->model_id = -1;
    if (mname != NULL && !json_is_null(mname)) {
        if (!json_is_string(mname))
            return field_error(err, t, "model_name", "expected a string");
        req->model_name = json_string_value(mname);
        if (req->model_name[0] == '\0')
            return field_error(err, t, "model_name", "must not be empty");
    } else if (mid != NULL && !json_is_null(mid)) {
        if (!json_is_integer(mid))
            return field_error(err, t, "model_id", "expected an integer");
        json_int_t v = json_integer_value(mid);
        if (v < 0 || v > 1000000)
            return field_error(err, t, "model_id", "out of range");
        req->model_id = (int)v;
    } else {
        return field_error(err, t, "model_name", "missing");
    }

    if (decode_message(data, lim, req, err) != 0)
        return -1;
    if (get_opt_string(data, "session_prompt", t, "", &req->session_prompt, err) != 0)
        return -1;
    if (check_length("session_prompt", req->session_prompt, t, lim, err) != 0)
        return -1;
    if (get_opt_string(data, "file_name", t, "", &req->file_name, err) != 0)
        return -1;
    if (strlen(req->file_name) > 255)
        return field_error(err, t, "file_name", "longer than 255 bytes");
    int temporary;
    if (get_opt_bool(data, "temporary", t, &temporary, err) != 0)
        return -1;
    req->temporary = temporary == 1;
    if (req->temporary && !req->session_new)
        return field_error(err, t, "temporary", "only a NEW session can be temporary");

    return decode_stream(data, req, err);
}

/* The key whose value is the number that ends before pos in buf (what
 * jansson's overflow error points past), printable ASCII; "frame" when
 * the number is not an object's value. */
static void overflow_field(const char *buf, int pos, char *out, size_t cap)
{
    snprintf(out, cap, "frame");
    int i = pos - 1;
    while (i >= 0 && strchr("0123456789+-.eE", buf[i]) != NULL)
        i--;
    while (i >= 0 && strchr(" \t\r\n", buf[i]) != NULL)
        i--;
    if (i < 0 || buf[i] != ':')
        return;
    i--;
    while (i >= 0 && strchr(" \t\r\n", buf[i]) != NULL)
        i--;
    if (i < 0 || buf[i] != '"')
        return;
    int end = i--;
    while (i >= 0 && !(buf[i] == '"' && (i == 0 || buf[i - 1] != '\\')))
        i--;
    if (i < 0)
        return;
    size_t n = 0;
    for (int k = i + 1; k < end && n + 1 < cap; k++)
        out[n++] = (unsigned char)buf[k] >= 0x20 && (unsigned char)buf[k] <= 0x7e ? buf[k] : '?';
    out[n] = '\0';
}

/* ------------------------------------------------ the codes' data */

int proto_data_user(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err)
{
    (void)data, (void)lim, (void)req, (void)err;
    return 0; /* user_id is all, and the envelope has read it */
}

int proto_data_session(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                       struct proto_error *err)
{
    (void)lim;
    return get_uuid(data, "session_id", req->type, req->session_id, err);
}

/* An optional true/false field: -1 when absent or null. */
/* Code 1's {"archived"?, "pinned"?, "tag"?}: not archived unless asked. */
static int decode_filter(json_t *f, struct proto_request *req, struct proto_error *err)
{
    const int t = req->type;
    if (!json_is_object(f))
        return field_error(err, t, "filter", "expected an object");
    int archived;
    if (get_opt_bool(f, "archived", t, &archived, err) != 0 ||
        get_opt_bool(f, "pinned", t, &req->pinned, err) != 0)
        return -1;
    req->archived = archived == 1;
    int temporary;
    if (get_opt_bool(f, "temporary", t, &temporary, err) != 0)
        return -1;
    req->temporary = temporary == 1;
    json_t *tag = json_object_get(f, "tag");
    if (tag == NULL || json_is_null(tag))
        return 0;
    if (!json_is_string(tag))
        return field_error(err, t, "tag", "expected a string");
    return check_line(json_string_value(tag), "tag", PROTO_TAG_MAX_CHARS, req->tag,
                      sizeof(req->tag), t, err);
}

int proto_data_list_sessions(json_t *data, const struct proto_limits *lim,
                             struct proto_request *req, struct proto_error *err)
{
    (void)lim;
    long long v;
    /* Opt-in paging: without "limit", "before" and "filter", the whole
     * list, as the existing client knows it. */
    json_t *jl = json_object_get(data, "limit"), *jb = json_object_get(data, "before");
    json_t *jf = json_object_get(data, "filter");
    req->filtered = jf != NULL && !json_is_null(jf);
    req->paged =
        (jl != NULL && !json_is_null(jl)) || (jb != NULL && !json_is_null(jb)) || req->filtered;
    if (!req->paged)
        return 0;
    if (req->filtered && decode_filter(jf, req, err) != 0)
        return -1;
    if (get_opt_int(data, "limit", req->type, PROTO_PAGE_DEFAULT, 1, PROTO_PAGE_MAX, &v, err) != 0)
        return -1;
    req->limit = (int)v;
    if (get_opt_string(data, "before", req->type, "", &req->cursor, err) != 0)
        return -1;
    if (req->cursor[0] == '\0') {
        req->cursor = NULL;
        return 0;
    }
    /* The "next_before" of an earlier page: "<epoch us>:<uuid>", with a
     * filter "<0|1>:<epoch us>:<uuid>" (pinned ones come first). */
    const char *c = req->cursor;
    if (req->filtered) {
        if ((c[0] != '0' && c[0] != '1') || c[1] != ':')
            return field_error(err, req->type, "before", "not a cursor from an earlier page");
        c += 2;
    }
    size_t n = strspn(c, "0123456789");
    if (n == 0 || n > 18 || c[n] != ':' || !uuid_valid(c + n + 1))
        return field_error(err, req->type, "before", "not a cursor from an earlier page");
    return 0;
}

int proto_data_chat(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err)
{
    return decode_chat(data, lim, req, err);
}

int proto_data_list_models(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                           struct proto_error *err)
{
    (void)lim;
    /* Opt-in: "mine": true lists only the models the user may use. */
    json_t *mine = json_object_get(data, "mine");
    if (mine != NULL && !json_is_null(mine)) {
        if (!json_is_boolean(mine))
            return field_error(err, req->type, "mine", "expected true or false");
        req->mine = json_is_true(mine);
    }
    return 0;
}

int proto_data_history(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                       struct proto_error *err)
{
    long long v;
    if (proto_data_session(data, lim, req, err) != 0 ||
        get_opt_int(data, "before", req->type, -1, 0, (long long)1 << 53, &v, err) != 0)
        return -1;
    req->before = v;
    if (get_opt_int(data, "limit", req->type, PROTO_PAGE_DEFAULT, 1, PROTO_PAGE_MAX, &v, err) != 0)
        return -1;
    req->limit = (int)v;
    return 0;
}

int proto_data_rename(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err)
{
    if (proto_data_session(data, lim, req, err) != 0)
        return -1;
    return decode_name(data, req, err);
}

/* Code 11's query split into words (req->words, for the text search) and
 * the qualifiers "tag:<name>" (tag:"two words" for a tag with spaces),
 * "is:pinned" and "is:archived", which narrow the sessions searched. Only
 * qualifiers: the sessions themselves. */
static int decode_qualifiers(struct proto_request *req, struct proto_error *err)
{
    const int t = req->type;
    const char *p = req->query;
    size_t wn = 0;
    req->pinned = req->archived = -1;
    while (*p != '\0') {
        p += strspn(p, " \t\r\n");
        if (*p == '\0')
            break;
        const char *end = p + strcspn(p, " \t\r\n");
        if (strncasecmp(p, "tag:", 4) == 0 && end > p + 4) {
            const char *v = p + 4, *stop = end;
            if (*v == '"') { /* to the closing quote, spaces included */
                const char *q = strchr(v + 1, '"');
                if (q == NULL)
                    return field_error(err, t, "query", "a tag:\" without its closing quote");
                stop = q;
                end = q + 1;
                v++;
            }
            char tag[sizeof(req->tag)];
            size_t n = (size_t)(stop - v);
            if (req->tag[0] != '\0')
                return field_error(err, t, "query", "only one tag: at a time");
            if (n >= sizeof(tag))
                return field_error(err, t, "tag", "longer than 40 characters");
            memcpy(tag, v, n);
            tag[n] = '\0';
            if (check_line(tag, "tag", PROTO_TAG_MAX_CHARS, req->tag, sizeof(req->tag), t, err) !=
                0)
                return -1;
        } else if ((size_t)(end - p) == 9 && strncasecmp(p, "is:pinned", 9) == 0) {
            req->pinned = 1;
        } else if ((size_t)(end - p) == 11 && strncasecmp(p, "is:archived", 11) == 0) {
            req->archived = 1;
        } else { /* a word (or a piece of websearch syntax): kept as it was */
            size_t n = (size_t)(end - p);
            if (wn + n + 2 > sizeof(req->words))
                return field_error(err, t, "query", "longer than 500 characters");
            if (wn > 0)
                req->words[wn++] = ' ';
            memcpy(req->words + wn, p, n);
            wn += n;
            req->words[wn] = '\0';
        }
        p = end;
    }
    return 0;
}

int proto_data_search(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err)
{
    (void)lim;
    long long v;
    if (get_string(data, "query", req->type, &req->query, err) != 0)
        return -1;
    if (req->query[strspn(req->query, " \t\r\n")] == '\0')
        return field_error(err, req->type, "query", "must not be empty");
    if (utf8_chars(req->query) > PROTO_QUERY_MAX_CHARS)
        return field_error(err, req->type, "query", "longer than 500 characters");
    if (get_opt_int(data, "limit", req->type, PROTO_SEARCH_DEFAULT, 1, PROTO_SEARCH_MAX, &v, err) !=
        0)
        return -1;
    req->limit = (int)v;
    if (get_opt_int(data, "offset", req->type, 0, 0, PROTO_OFFSET_MAX, &v, err) != 0)
        return -1;
    req->offset = (int)v;
    return decode_qualifiers(req, err);
}

int proto_data_feedback(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                        struct proto_error *err)
{
    if (proto_data_session(data, lim, req, err) != 0)
        return -1;
    return decode_feedback(data, req, err);
}

int proto_data_usage(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                     struct proto_error *err)
{
    (void)lim;
    if (decode_time(data, "since", req->type, &req->since_us, err) != 0 ||
        decode_time(data, "until", req->type, &req->until_us, err) != 0)
        return -1;
    if (req->since_us >= 0 && req->until_us >= 0 && req->until_us < req->since_us)
        return field_error(err, req->type, "until", "before 'since'");
    return 0;
}

int proto_data_resume(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err)
{
    long long v;
    if (proto_data_session(data, lim, req, err) != 0 ||
        get_opt_int(data, "after", req->type, -1, -1, (long long)1 << 53, &v, err) != 0)
        return -1;
    req->after = v;
    return 0;
}

int proto_data_seq(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                   struct proto_error *err)
{
    if (proto_data_session(data, lim, req, err) != 0)
        return -1;
    return decode_seq(data, req, err);
}

int proto_data_edit(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err)
{
    if (proto_data_seq(data, lim, req, err) != 0 || decode_opt_model(data, req, err) != 0 ||
        decode_message(data, lim, req, err) != 0)
        return -1;
    return decode_stream(data, req, err);
}

int proto_data_regenerate(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                          struct proto_error *err)
{
    const int t = req->type;
    if (proto_data_seq(data, lim, req, err) != 0 || decode_opt_model(data, req, err) != 0)
        return -1;
    json_t *names = json_object_get(data, "model_names");
    if (names != NULL && !json_is_null(names)) {
        if (req->model_name != NULL)
            return field_error(err, t, "model_names", "give either model_name or model_names");
        if (!json_is_array(names) || json_array_size(names) < PROTO_COMPARE_MIN ||
            json_array_size(names) > PROTO_COMPARE_MAX)
            return field_error(err, t, "model_names", "expected 2 to 4 model names");
        size_t i;
        json_t *v;
        json_array_foreach(names, i, v)
        {
            if (!json_is_string(v) || json_string_length(v) == 0)
                return field_error(err, t, "model_names", "expected non-empty strings");
            for (size_t k = 0; k < i; k++)
                if (strcmp(req->model_names[k], json_string_value(v)) == 0)
                    return field_error(err, t, "model_names", "names a model twice");
            req->model_names[i] = json_string_value(v);
        }
        req->n_models = (int)json_array_size(names);
    }
    return decode_stream(data, req, err);
}

int proto_share_id_valid(const char *s)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    return s != NULL && strlen(s) == PROTO_SHARE_ID_LEN &&
           strspn(s, alphabet) == PROTO_SHARE_ID_LEN;
}

/* A required share_id (codes 20, 23). */
static int decode_share_id(json_t *data, struct proto_request *req, struct proto_error *err)
{
    const char *id;
    if (get_string(data, "share_id", req->type, &id, err) != 0)
        return -1;
    if (!proto_share_id_valid(id))
        return field_error(err, req->type, "share_id", "not a share link's id");
    memcpy(req->share_id, id, PROTO_SHARE_ID_LEN + 1);
    return 0;
}

int proto_data_fork(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err)
{
    json_t *share = json_object_get(data, "share_id");
    if (share != NULL && !json_is_null(share)) {
        /* a copy of what a link shows, instead of one's own session */
        if (json_object_get(data, "session_id") != NULL)
            return field_error(err, req->type, "share_id", "give share_id or session_id, not both");
        if (decode_share_id(data, req, err) != 0)
            return -1;
    } else if (proto_data_seq(data, lim, req, err) != 0) {
        return -1;
    }
    json_t *name = json_object_get(data, "session_name");
    if (name == NULL || json_is_null(name))
        return 0; /* "" : the original's name with " (fork)" */
    if (!json_is_string(name))
        return field_error(err, req->type, "session_name", "expected a string");
    return check_name(json_string_value(name), req, err);
}

int proto_data_share(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                     struct proto_error *err)
{
    const int t = req->type;
    if (proto_data_session(data, lim, req, err) != 0 ||
        get_opt_int(data, "seq", t, -1, 0, (long long)1 << 53, &req->seq, err) != 0 ||
        get_opt_int(data, "expires_in_seconds", t, 0, PROTO_SHARE_SECONDS_MIN,
                    PROTO_SHARE_SECONDS_MAX, &req->expires_in, err) != 0 ||
        get_opt_int(data, "max_views", t, 0, 1, PROTO_SHARE_VIEWS_MAX, &req->max_views, err) != 0)
        return -1;
    return 0;
}

int proto_data_unshare(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                       struct proto_error *err)
{
    (void)lim;
    return decode_share_id(data, req, err);
}

int proto_data_budget(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err)
{
    (void)lim;
    json_t *v = json_object_get(data, "monthly_cap");
    if (v == NULL)
        return 0; /* read the caps */
    req->cap_given = 1;
    if (json_is_null(v))
        return 0; /* the personal cap cleared */
    if (!json_is_number(v))
        return field_error(err, req->type, "monthly_cap", "expected a number or null");
    double d = json_number_value(v);
    if (!(d >= 0 && d <= 1e12))
        return field_error(err, req->type, "monthly_cap", "out of range (0 to 1e12)");
    /* 15 significant digits: the decimal the client wrote, not the
     * binary double's expansion of it. */
    snprintf(req->cap, sizeof(req->cap), "%.15g", d);
    return 0;
}

int proto_data_organize(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                        struct proto_error *err)
{
    const int t = req->type;
    if (proto_data_session(data, lim, req, err) != 0 ||
        get_opt_bool(data, "pinned", t, &req->pinned, err) != 0 ||
        get_opt_bool(data, "archived", t, &req->archived, err) != 0)
        return -1;
    json_t *tags = json_object_get(data, "tags");
    if (tags == NULL || json_is_null(tags))
        return 0;
    if (!json_is_array(tags))
        return field_error(err, t, "tags", "expected an array of strings");
    if (json_array_size(tags) > PROTO_TAGS_MAX)
        return field_error(err, t, "tags", "more than 20 tags");
    if ((req->tags = json_array()) == NULL)
        return field_error(err, t, "tags", "out of memory");
    size_t i;
    json_t *v;
    json_array_foreach(tags, i, v)
    {
        char tag[sizeof(req->tag)];
        if (!json_is_string(v))
            return field_error(err, t, "tags", "expected an array of strings");
        if (check_line(json_string_value(v), "tags", PROTO_TAG_MAX_CHARS, tag, sizeof(tag), t,
                       err) != 0)
            return -1;
        if (json_array_append_new(req->tags, json_string(tag)) != 0)
            return field_error(err, t, "tags", "out of memory");
    }
    return 0;
}

int proto_decode(const char *buf, size_t len, const struct proto_limits *lim, proto_find_fn find,
                 struct proto_request *req, struct proto_error *err)
{
    memset(req, 0, sizeof(*req));
    req->model_id = -1;
    err->type = -1;

    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && json_error_code(&jerr) == json_error_numeric_overflow) {
        /* Well-formed JSON with a number no field takes: a bad field, not
         * bad JSON. */
        char field[48];
        overflow_field(buf, jerr.position, field, sizeof(field));
        return field_error(err, -1, field,
                           strstr(jerr.text, "integer") != NULL ? "integer out of range"
                                                                : "number out of range");
    }
    if (root == NULL) {
        proto_error_set(err, -1, PERR_JSON_PARSE);
        snprintf(err->detail, sizeof(err->detail), "%s at position %d", jerr.text, jerr.position);
        /* jansson quotes the offending input, which may be invalid UTF-8
         * that no JSON reply can carry: keep printable ASCII only. */
        for (char *p = err->detail; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                *p = '?';
        return -1;
    }
    if (!json_is_object(root)) {
        field_error(err, -1, "frame", "expected a JSON object");
        goto fail;
    }

    json_t *type = json_object_get(root, "type");
    if (type == NULL) {
        field_error(err, -1, "type", "missing");
        goto fail;
    }
    if (!json_is_integer(type)) {
        field_error(err, -1, "type", "expected an integer");
        goto fail;
    }
    json_int_t t = json_integer_value(type);
    proto_data_fn decode = t >= 0 && t <= 1000 ? find((int)t) : NULL;
    if (decode == NULL) {
        /* Echo the type only when it fits an int; anything else is noise. */
        proto_error_set(err, (t >= -1000000 && t <= 1000000) ? (int)t : -1, PERR_UNKNOWN_MESSAGE);
        goto fail;
    }
    req->type = (int)t;

    json_t *data = json_object_get(root, "data");
    if (data == NULL || !json_is_object(data)) {
        field_error(err, req->type, "data", data == NULL ? "missing" : "expected an object");
        goto fail;
    }
    /* Every request names its user first. */
    if (get_uuid(data, "user_id", req->type, req->user_id, err) != 0 ||
        decode(data, lim, req, err) != 0)
        goto fail;
    req->root = root;
    return 0;

fail:
    json_decref(root);
    json_decref(req->tags);
    memset(req, 0, sizeof(*req));
    return -1;
}

void proto_request_free(struct proto_request *req)
{
    json_decref(req->root);
    json_decref(req->tags);
    req->root = req->tags = NULL;
}

/* 15 significant digits: balances and costs print as 9.9985, not
 * 9.9984999999999999. */
#define PROTO_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

char *proto_encode_reply(int type, json_t *data, size_t *len)
{
    json_t *root = json_pack("{s:i, s:o}", "type", type, "data", data);
    if (root == NULL)
        return NULL;
    char *s = json_dumps(root, PROTO_DUMP_FLAGS);
    json_decref(root);
    if (s != NULL)
        *len = strlen(s);
    return s;
}

char *proto_encode_delta(const char *session_id, const char *text, size_t text_len, long long index,
                         int answer, size_t *len)
{
    /* The same bytes as proto_encode_reply(PROTO_CHAT_DELTA, {"session_id",
     * "delta", "index"[, "answer"]}) (tests/unit/test_proto.c compares
     * them), without building and freeing a tree of five values for every
     * delta: jansson escapes the one string (and refuses what is not
     * UTF-8), into a buffer on the stack when it fits. */
    char small[1024], *esc = small;
    char *frame = NULL;
    json_t *str = json_stringn(text, text_len);
    if (str == NULL)
        return NULL;
    size_t need = json_dumpb(str, small, sizeof(small), PROTO_DUMP_FLAGS | JSON_ENCODE_ANY);
    if (need == 0)
        goto out;
    if (need > sizeof(small)) {
        if ((esc = malloc(need)) == NULL)
            goto out;
        json_dumpb(str, esc, need, PROTO_DUMP_FLAGS | JSON_ENCODE_ANY);
    }
    char tail[48] = "";
    if (answer >= 0)
        snprintf(tail, sizeof(tail), ",\"answer\":%d", answer);
    int n = asprintf(
        &frame, "{\"type\":%d,\"data\":{\"session_id\":\"%s\",\"delta\":%.*s,\"index\":%lld%s}}",
        PROTO_CHAT_DELTA, session_id, (int)need, esc, index, tail);
    if (n < 0)
        frame = NULL;
    else
        *len = (size_t)n;
out:
    if (esc != small)
        free(esc);
    json_decref(str);
    return frame;
}

#define DELTA_HEAD "{\"type\":7,\"data\":{\"session_id\":\""
#define DELTA_TEXT "\",\"delta\":\""
#define DELTA_INDEX "\",\"index\":"
#define DELTA_FIRST ",\"first\":"
#define DELTA_ANSWER ",\"answer\":"
#define DELTA_END "}}"

/* A number of at most 18 digits at *p (advanced past it) into *out. */
static int delta_number(const char **p, const char *end, long long *out)
{
    const char *q = *p;
    long long v = 0;
    while (q < end && *q >= '0' && *q <= '9' && q - *p < 18)
        v = v * 10 + (*q++ - '0');
    if (q == *p || (q < end && *q >= '0' && *q <= '9'))
        return -1;
    *p = q;
    *out = v;
    return 0;
}

static int delta_literal(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return -1;
    *p += n;
    return 0;
}

int proto_delta_view(const char *frame, size_t n, struct proto_delta_view *v)
{
    const char *p = frame, *end = frame + n;
    if (delta_literal(&p, end, DELTA_HEAD) != 0 || end - p < UUID_STR_LEN)
        return -1;
    v->session = p;
    p += UUID_STR_LEN;
    if (delta_literal(&p, end, DELTA_TEXT) != 0)
        return -1;
    /* The escaped text ends at the first quote that no backslash escapes. */
    v->text = p;
    while (p < end && *p != '"') {
        if (*p == '\\' && end - p < 2)
            return -1;
        p += *p == '\\' ? 2 : 1;
    }
    if (p == end)
        return -1;
    v->text_len = (size_t)(p - v->text);
    long long first = -1, answer = -1;
    if (delta_literal(&p, end, DELTA_INDEX) != 0 || delta_number(&p, end, &v->last) != 0)
        return -1;
    if (delta_literal(&p, end, DELTA_FIRST) == 0 &&
        (delta_number(&p, end, &first) != 0 || first > v->last))
        return -1;
    if (delta_literal(&p, end, DELTA_ANSWER) == 0 &&
        (delta_number(&p, end, &answer) != 0 || answer > INT_MAX))
        return -1;
    if (delta_literal(&p, end, DELTA_END) != 0 || p != end)
        return -1;
    v->first = first >= 0 ? first : v->last;
    v->answer = (int)answer;
    return 0;
}

int proto_delta_follows(const struct proto_delta_view *a, const struct proto_delta_view *b)
{
    return memcmp(a->session, b->session, UUID_STR_LEN) == 0 && a->answer == b->answer &&
           b->first == a->last + 1;
}

size_t proto_delta_join_len(const struct proto_delta_view *v, size_t n)
{
    if (n == 0)
        return 0;
    char nums[96];
    size_t len = strlen(DELTA_HEAD) + UUID_STR_LEN + strlen(DELTA_TEXT) + strlen(DELTA_INDEX) +
                 strlen(DELTA_END);
    for (size_t i = 0; i < n; i++)
        len += v[i].text_len;
    len += (size_t)snprintf(nums, sizeof(nums), "%lld", v[n - 1].last);
    if (v[0].first != v[n - 1].last)
        len += strlen(DELTA_FIRST) + (size_t)snprintf(nums, sizeof(nums), "%lld", v[0].first);
    if (v[0].answer >= 0)
        len += strlen(DELTA_ANSWER) + (size_t)snprintf(nums, sizeof(nums), "%d", v[0].answer);
    return len;
}

size_t proto_delta_join(const struct proto_delta_view *v, size_t n, char *out, size_t cap)
{
    size_t len = proto_delta_join_len(v, n);
    if (len == 0 || len + 1 > cap)
        return 0;
    char *p = out;
    p += sprintf(p, "%s%.*s%s", DELTA_HEAD, UUID_STR_LEN, v[0].session, DELTA_TEXT);
    for (size_t i = 0; i < n; i++) {
        memcpy(p, v[i].text, v[i].text_len);
        p += v[i].text_len;
    }
    p += sprintf(p, "%s%lld", DELTA_INDEX, v[n - 1].last);
    if (v[0].first != v[n - 1].last)
        p += sprintf(p, "%s%lld", DELTA_FIRST, v[0].first);
    if (v[0].answer >= 0)
        p += sprintf(p, "%s%d", DELTA_ANSWER, v[0].answer);
    p += sprintf(p, "%s", DELTA_END);
    return (size_t)(p - out);
}

char *proto_encode_value(const json_t *v, size_t *len)
{
    char *s = json_dumps(v, PROTO_DUMP_FLAGS | JSON_ENCODE_ANY);
    if (s != NULL)
        *len = strlen(s);
    return s;
}

char *proto_encode_reply_text(int type, const char *data_json, size_t *len)
{
    char *s = NULL;
    int n = asprintf(&s, "{\"type\":%d,\"data\":%s}", type, data_json);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return s;
}

static json_t *error_object(const struct proto_error *err)
{
    json_t *root = json_pack("{s:s, s:i}", "error", err->text, "code", err->code);
    if (root == NULL) /* a text that is not UTF-8: the code's own text is */
        root = json_pack("{s:s, s:i}", "error", proto_err_text(err->code), "code", err->code);
    if (root == NULL)
        return NULL;
    if (err->type >= 0)
        json_object_set_new(root, "type", json_integer(err->type));
    if (err->detail[0] != '\0')
        json_object_set_new(root, "detail", json_string(err->detail));
    return root;
}

/* Dumps and frees root (NULL: allocation failed). */
static char *error_dump(json_t *root, size_t *len)
{
    char *s = root != NULL ? json_dumps(root, PROTO_DUMP_FLAGS) : NULL;
    json_decref(root);
    if (s != NULL)
        *len = strlen(s);
    return s;
}

char *proto_encode_error(const struct proto_error *err, size_t *len)
{
    return error_dump(error_object(err), len);
}

char *proto_encode_answer_error(int type, int code, const char *detail, int answer, int answers,
                                const char *model_name, size_t *len)
{
    struct proto_error err;
    proto_error_set(&err, type, code);
    if (detail != NULL)
        snprintf(err.detail, sizeof(err.detail), "%s", detail);
    json_t *root = error_object(&err);
    if (root != NULL &&
        (json_object_set_new(root, "answer", json_integer(answer)) != 0 ||
         json_object_set_new(root, "answers", json_integer(answers)) != 0 ||
         json_object_set_new(root, "model_name",
                             json_string(model_name != NULL ? model_name : "")) != 0)) {
        json_decref(root);
        root = NULL;
    }
    return error_dump(root, len);
}

char *proto_encode_error_code(int type, int code, const char *text, const char *detail, size_t *len)
{
    struct proto_error err;
    proto_error_set(&err, type, code);
    if (text != NULL)
        snprintf(err.text, sizeof(err.text), "%s", text);
    if (detail != NULL)
        snprintf(err.detail, sizeof(err.detail), "%s", detail);
    return proto_encode_error(&err, len);
}

size_t proto_utf8_prefix(const char *s, size_t max_chars)
{
    size_t i = 0, chars = 0;
    while (s[i] != '\0' && chars < max_chars) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80           ? 1
                   : (c >> 5) == 0x6  ? 2
                   : (c >> 4) == 0xe  ? 3
                   : (c >> 3) == 0x1e ? 4
                                      : 1;
        /* Never step over a NUL inside a truncated sequence. */
        size_t k = 1;
        while (k < n && s[i + k] != '\0')
            k++;
        if (k < n)
            break;
        i += n;
        chars++;
    }
    return i;
}

char *proto_encode_http(const char *message, json_t *data, size_t *len)
{
    json_t *o = json_pack("{s:s, s:o}", "message", message, "data", data ? data : json_null());
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (s == NULL)
        s = strdup("{\"message\":\"Internal Server Error\",\"data\":null}");
    if (s == NULL)
        abort(); /* cannot even say so */
    *len = strlen(s);
    return s;
}
