/* proto.h - the WebSocket protocol: message codes, error codes, decoding and
 * validation of client frames, and encoding of replies.
 *
 * Client frame: {"type": N, "data": {...}}. Reply: {"type": N, "data": {...}}.
 * Error: {"error": "<text>", "code": E, "type": N}. The client shows "error"
 * to the user, so texts are short and human. Codes 0..16 are inherited from
 * the system chatd replaces and must keep their texts; new ones start at 17.
 *
 * Pure functions of their input: no I/O, no globals, so the fuzz target and
 * the unit tests drive the exact code the server runs. */
#ifndef CHATD_PROTO_H
#define CHATD_PROTO_H

#include <jansson.h>
#include <stddef.h>

#include "lib/uuid.h"

enum proto_type {
    PROTO_USER_DETAILS = 0,
    PROTO_LIST_SESSIONS = 1,
    PROTO_CHATS = 2,
    PROTO_CHAT = 3,
    PROTO_DELETE_SESSION = 4,
    PROTO_LIST_MODELS = 5,
    PROTO_BALANCE = 6,
    PROTO_CHAT_DELTA = 7, /* server -> client only: a streamed piece of a reply */
    PROTO_STOP = 8,
    PROTO_HISTORY = 9,     /* a page of a session's messages */
    PROTO_RENAME = 10,     /* a session's name */
    PROTO_SEARCH = 11,     /* full-text search of the user's history */
    PROTO_FEEDBACK = 12,   /* a rating of an assistant message */
    PROTO_USAGE = 13,      /* balance and spending from the ledger */
    PROTO_SUBSCRIBE = 14,  /* the user's events to this connection */
    PROTO_EVENT = 15,      /* server -> client only: an event of a subscribed user */
    PROTO_RESUME = 16,     /* a running turn's frames, from where the client is */
    PROTO_EDIT = 17,       /* a new version of a user message, answered */
    PROTO_REGENERATE = 18, /* a new answer to a question (or one per model) */
    PROTO_SWITCH = 19,     /* the active path goes through another message */
    PROTO_FORK = 20,       /* a new session from a path (or a share link) */
    PROTO_SHARE = 21,      /* a read-only link to a snapshot of a path */
    PROTO_SHARES = 22,     /* the user's links */
    PROTO_UNSHARE = 23,    /* a link revoked */
    PROTO_ORGANIZE = 24,   /* a session pinned, archived, tagged */
    PROTO_KEEP = 25,       /* a temporary chat made an ordinary one */
    PROTO_BUDGET = 26,     /* the user's caps, and a personal one set */
};

/* Codes that run a chat turn (the in-flight limit, draining). */
#define PROTO_IS_TURN(type)                                                                        \
    ((type) == PROTO_CHAT || (type) == PROTO_EDIT || (type) == PROTO_REGENERATE)

#define PROTO_COMPARE_MIN 2
#define PROTO_COMPARE_MAX 4

#define PROTO_PAGE_DEFAULT 50
#define PROTO_PAGE_MAX 200
#define PROTO_NAME_MAX_CHARS 100
#define PROTO_COMMENT_MAX_CHARS 1024
#define PROTO_QUERY_MAX_CHARS 500
#define PROTO_SEARCH_DEFAULT 20
#define PROTO_SEARCH_MAX 50
#define PROTO_OFFSET_MAX 10000
#define PROTO_TAGS_MAX 20
#define PROTO_TAG_MAX_CHARS 40
#define PROTO_SHARE_ID_LEN 32                        /* base64url of 24 random bytes */
#define PROTO_SHARE_SECONDS_MIN 60                   /* expires_in_seconds */
#define PROTO_SHARE_SECONDS_MAX (10LL * 366 * 86400) /* ten years */
#define PROTO_SHARE_VIEWS_MAX 1000000

enum proto_err {
    PERR_JSON_PARSE = 0,
    PERR_UNKNOWN_MESSAGE = 1,
    PERR_JSON_MARSHAL = 2,
    PERR_NO_USER = 3,
    PERR_CREATE_SESSION = 4,
    PERR_LOAD_SESSION = 5,
    PERR_AGENT = 6,
    PERR_NO_MODEL_ACCESS = 7,
    PERR_LOAD_CHATS = 9,
    PERR_DELETE_SESSION = 10,
    PERR_MODEL_LIST = 11,
    PERR_INTERNAL = 14,
    PERR_NO_BALANCE = 15,
    PERR_BALANCE = 16,
    /* chatd's own, after the inherited ones */
    PERR_INVALID_FIELD = 17,
    PERR_NO_SESSION = 18,
    PERR_FRAME_TOO_LARGE = 19,
    PERR_MESSAGE_TOO_LONG = 20,
    PERR_TOO_MANY_REQUESTS = 21,
    PERR_BINARY_FRAME = 22,
    PERR_NO_TURN = 23,
    PERR_UNKNOWN_MODEL = 24,
    PERR_SHUTTING_DOWN = 25,
    PERR_FORBIDDEN_USER = 26,
    PERR_RATE_LIMITED = 27,
    PERR_DAILY_LIMIT = 28,
    PERR_TURN_INTERRUPTED = 29,
    PERR_LIVE_UNAVAILABLE = 30,
    PERR_NO_SHARE = 31,
    PERR_SPENDING_LIMIT = 32,
};

/* The fixed text of an error code ("Unknown error" for an unknown code). */
const char *proto_err_text(int code);

struct proto_limits {
    size_t max_chat_message_bytes; /* message and session_prompt */
};

/* A decoded, validated request. String pointers point into root, which the
 * request owns: release with proto_request_free. */
#define PROTO_CLIENT_TURN_ID_MAX 64

struct proto_request {
    int type;
    char user_id[UUID_STR_LEN + 1];                    /* lower-case */
    char session_id[UUID_STR_LEN + 1];                 /* lower-case; "" when session_new */
    int session_new;                                   /* code 3 with session_id "NEW" */
    const char *model_name;                            /* code 3: NULL when model_id given;
                                                          17, 18: NULL for the session's */
    int model_id;                                      /* code 3: -1 when model_name given */
    const char *message;                               /* codes 3, 17 */
    const char *session_prompt;                        /* code 3, "" by default */
    const char *file_name;                             /* code 3, "" when none */
    int stream;                                        /* codes 3, 17, 18: "stream": true */
    char client_turn_id[PROTO_CLIENT_TURN_ID_MAX + 1]; /* codes 3, 17, 18; "" none */
    int mine;                                          /* code 5: "mine": true */
    long long before;                                  /* code 9: seq cursor, -1 when absent */
    int limit;                                         /* code 9: 1..PROTO_PAGE_MAX */
    char session_name[PROTO_NAME_MAX_CHARS * 4 + 1];   /* codes 10, 20 ("" none), trimmed */
    long long seq;                                     /* codes 12, 17..20 */
    const char *model_names[PROTO_COMPARE_MAX];        /* code 18: side by side */
    int n_models;                                      /* code 18: 0, or 2..4 of them */
    int rating;                                        /* code 12: 1, -1, or 0 to clear */
    const char *comment;                               /* code 12, "" when none */
    const char *query;                                 /* code 11 */
    int paged;                                         /* code 1: "limit" or "before" given */
    const char *cursor;                                /* code 1: "before", NULL from the newest */
    int offset;                                        /* code 11 */
    long long since_us, until_us; /* code 13: epoch microseconds, -1 when absent */
    long long after;              /* code 16: the last delta index seen, -1 when absent */
    /* code 1's "filter" (filtered: given; archived 0/1, pinned -1 either),
     * code 11's qualifiers (pinned, archived -1: either; tag "": any) */
    int filtered, archived, pinned;
    char tag[PROTO_TAG_MAX_CHARS * 4 + 1];
    char words[PROTO_QUERY_MAX_CHARS * 4 + 1]; /* code 11: the query without qualifiers */
    /* code 24: pinned, archived (-1: unchanged) as above; tags, a JSON
     * array of checked tags (NULL: unchanged), owned */
    json_t *tags;
    /* codes 20 (instead of session_id), 23; code 21's limits (0: none) */
    char share_id[PROTO_SHARE_ID_LEN + 1];
    long long expires_in, max_views;
    /* code 3: a NEW temporary chat; code 1's filter: the temporary
     * chats instead of the others */
    int temporary;
    /* code 26: monthly_cap given, as decimal text ("" for null, which
     * clears the personal cap) */
    int cap_given;
    char cap[40];
    json_t *root;
};

/* "error" is the code's documented text, which clients match on (the
 * inherited ones exactly); what varies (a parser's position, a limit) goes
 * into "detail", sent only when not empty. */
struct proto_error {
    int code; /* enum proto_err */
    int type; /* the request's type, -1 when unknown */
    char text[256];
    char detail[256];
};

/* Decodes and validates the "data" of one code beyond its user_id, which
 * every request has: 0, or -1 with err filled. */
typedef int (*proto_data_fn)(json_t *data, const struct proto_limits *lim,
                             struct proto_request *req, struct proto_error *err);

/* The decoder of a code a client may send, or NULL for any other: the
 * dispatch table (work/dispatch.c) answers it, so that the codes decoded
 * are exactly the codes handled. */
typedef proto_data_fn (*proto_find_fn)(int type);

/* Decodes and validates one text frame: the envelope, its type (known to
 * find), user_id, then the code's own fields. Returns 0 and fills req, or
 * -1 and fills err (req then owns nothing). */
int proto_decode(const char *buf, size_t len, const struct proto_limits *lim, proto_find_fn find,
                 struct proto_request *req, struct proto_error *err);

/* The codes' decoders, for the rows of the dispatch table. */
int proto_data_user(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err); /* nothing but user_id: 0, 6, 14 */
int proto_data_session(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                       struct proto_error *err); /* and session_id: 2, 4, 8 */
int proto_data_list_sessions(json_t *data, const struct proto_limits *lim,
                             struct proto_request *req, struct proto_error *err); /* 1 */
int proto_data_chat(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err); /* 3 */
int proto_data_list_models(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                           struct proto_error *err); /* 5 */
int proto_data_history(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                       struct proto_error *err); /* 9 */
int proto_data_rename(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err); /* 10 */
int proto_data_search(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err); /* 11 */
int proto_data_feedback(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                        struct proto_error *err); /* 12 */
int proto_data_usage(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                     struct proto_error *err); /* 13 */
int proto_data_resume(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err); /* 16 */
int proto_data_edit(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err); /* 17 */
int proto_data_regenerate(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                          struct proto_error *err); /* 18 */
int proto_data_seq(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                   struct proto_error *err); /* session_id and seq: 19 */
int proto_data_fork(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                    struct proto_error *err); /* 20 */
int proto_data_share(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                     struct proto_error *err); /* 21 */
int proto_data_unshare(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                       struct proto_error *err); /* 23 */
/* Code 26's optional "monthly_cap": a number 0..1e12, or null. */
int proto_data_budget(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                      struct proto_error *err);
int proto_data_organize(json_t *data, const struct proto_limits *lim, struct proto_request *req,
                        struct proto_error *err); /* 24 */

/* A share link's id as chatd makes them: PROTO_SHARE_ID_LEN characters of
 * the base64url alphabet. */
int proto_share_id_valid(const char *s);

void proto_request_free(struct proto_request *req);

/* Sets err to code with its standard text. */
void proto_error_set(struct proto_error *err, int type, int code);

/* {"type": type, "data": data}; steals data. Returns a malloc'd string
 * (*len set) or NULL on allocation failure. */
char *proto_encode_reply(int type, json_t *data, size_t *len);
/* A stream's delta frame, {"type": 7, "data": {"session_id", "delta",
 * "index"}} and "answer" when answer >= 0: malloc'd, *len set; NULL when
 * text is not UTF-8 or on allocation failure. session_id must need no
 * escaping (a UUID). */
char *proto_encode_delta(const char *session_id, const char *text, size_t text_len, long long index,
                         int answer, size_t *len);
/* A delta frame as proto_encode_delta (or proto_delta_join) wrote it,
 * read in place: the frames a connection's socket has not taken yet can
 * be joined into one, so a connection that fell behind catches up in one
 * write instead of one per piece. */
struct proto_delta_view {
    const char *session; /* UUID_STR_LEN bytes */
    const char *text;    /* the delta, escaped as it is in the frame */
    size_t text_len;
    long long first, last; /* the pieces it holds: "first" (when more than
                              one) .. "index" */
    int answer;            /* -1: none */
};
/* 0 when frame (n bytes) is a delta frame of that shape, v set; else -1. */
int proto_delta_view(const char *frame, size_t n, struct proto_delta_view *v);
/* 1 when b's pieces come right after a's, of the same session and answer:
 * the two can be one frame. */
int proto_delta_follows(const struct proto_delta_view *a, const struct proto_delta_view *b);
/* The one frame holding views v[0..n-1] (each following the one before):
 * {"type": 7, "data": {"session_id", "delta": the texts joined, "index":
 * the last piece's, "first": the first piece's[, "answer"]}}, "first"
 * only when it holds more than one piece. Written to out (cap bytes);
 * returns its length, which proto_delta_join_len(v, n) gives before,
 * or 0 when cap is too small. */
size_t proto_delta_join_len(const struct proto_delta_view *v, size_t n);
size_t proto_delta_join(const struct proto_delta_view *v, size_t n, char *out, size_t cap);
/* v as it would appear inside a reply (the same dump flags): malloc'd,
 * *len set, NULL on allocation failure. A copy kept in this form can be
 * spliced into a reply frame byte for byte. */
char *proto_encode_value(const json_t *v, size_t *len);

/* {"type": type, "data": <data_json>}, data_json a JSON object as text
 * that chatd did not build with jansson (PostgreSQL's json functions,
 * whose numbers keep every digit of a numeric): copied as it is, so it
 * must come from a trusted writer. NULL on allocation failure. */
char *proto_encode_reply_text(int type, const char *data_json, size_t *len);

/* {"error": text, "code": code, "type": type, "detail": detail}; "type"
 * omitted when < 0, "detail" when empty. */
char *proto_encode_error(const struct proto_error *err, size_t *len);

/* The same for code, with text (NULL: the code's standard text) and
 * detail (NULL: none). */
char *proto_encode_error_code(int type, int code, const char *text, const char *detail,
                              size_t *len);

/* The error of one of several answers side by side (code 18 with
 * model_names), the others going on: code's error frame (detail NULL:
 * none) plus "answer", "answers" and "model_name", as that answer's reply
 * would have said them. */
char *proto_encode_answer_error(int type, int code, const char *detail, int answer, int answers,
                                const char *model_name, size_t *len);

/* The body of every JSON answer of the HTTP endpoints that are not
 * probes: {"message": message, "data": data | null}, the shape the
 * existing client reads from /upload. Steals data. Never NULL (a fixed
 * "Internal Server Error" body when out of memory); *len set. */
char *proto_encode_http(const char *message, json_t *data, size_t *len);

/* An RFC 3339 time ("2026-11-30T08:00:00Z", "...T08:00:00.5+01:00") or a
 * date ("2026-11-30", its midnight UTC) as microseconds since the epoch
 * (1970..9999). 0, or -1 when s is not one. */
int proto_parse_time(const char *s, long long *us);

/* Number of bytes of s (at most max) that end on a UTF-8 character
 * boundary, and hold at most max_chars characters. */
size_t proto_utf8_prefix(const char *s, size_t max_chars);

#endif
