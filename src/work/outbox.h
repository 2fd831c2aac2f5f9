/* outbox.h - what the workers, the agent thread and the listener hand to
 * the service thread: replies, stream frames, turns detached from a
 * connection's request order, HTTP answers.
 *
 * Any thread posts; the service thread takes the whole list at once
 * (outbox_take) when woken and applies it in order. Waking is a function
 * the transport registers (lws_cancel_service() in net/server.c), called
 * under the lock so that it cannot race the transport going away
 * (outbox_stop_waking). Posts name a connection or HTTP transaction by a
 * 64-bit id that is never reused: one for something that has gone is
 * dropped by the transport, never written to freed memory. */
#ifndef CHATD_OUTBOX_H
#define CHATD_OUTBOX_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct outbox;

/* How the work of an HTTP transaction ended. The transport chooses the
 * HTTP status from it (net/http.c): work/ knows no HTTP. */
enum outbox_outcome {
    OUTBOX_DONE,        /* the answer (200) */
    OUTBOX_ACCEPTED,    /* stored: an upload (202) */
    OUTBOX_REFUSED,     /* the request names what is missing or not allowed (400) */
    OUTBOX_NOT_FOUND,   /* what it names is not there, or not the user's (404) */
    OUTBOX_UNAVAILABLE, /* a part chatd needs is down (503) */
    OUTBOX_FAILED,      /* chatd failed (500) */
    OUTBOX_NO_SPACE,    /* no room for the file (507) */
    OUTBOX_TOO_LARGE,   /* more than chatd takes (413) */
    OUTBOX_UNSUPPORTED, /* a kind of content chatd does not take (415) */
};

/* What a post may hold besides its frame: a turn (a reference) or an
 * export job, freed with the post unless the transport takes it. The
 * outbox knows neither: it only calls release. */
typedef void (*outbox_release_fn)(void *held);

enum outbox_kind {
    OUTBOX_REPLY,     /* the answer to the request the connection has with a worker */
    OUTBOX_DETACH,    /* that request became a turn: the connection may go on */
    OUTBOX_PUSH,      /* a frame outside the request order (deltas, a turn's end) */
    OUTBOX_TURN_DONE, /* the turn ended: the connection lets go of it */
    OUTBOX_HTTP,      /* the answer to an HTTP transaction */
    OUTBOX_EXPORT,    /* a piece of an export download, with its job */
    OUTBOX_LIVE,      /* from any chatd: an event, or a running turn's frame (work/events.h) */
    OUTBOX_SUBSCRIBE, /* the answer to code 14: the connection gets the user's events */
    OUTBOX_RESUME,    /* the answer to code 16: then the turn's frames from where it is */
};

struct outbox_post {
    struct outbox_post *next;
    enum outbox_kind kind;
    uint64_t id; /* the connection's; OUTBOX_HTTP: the transaction's */
    char *frame; /* malloc'd; OUTBOX_HTTP: the body */
    size_t len;
    /* DETACH, TURN_DONE: a reference to the turn (struct turn,
     * work/turn.h); EXPORT: the job (struct export_job, work/export.h).
     * The post owns it: a taker sets held NULL. */
    void *held;
    outbox_release_fn release;
    int failed;                  /* REPLY: an error frame (for metrics) */
    enum outbox_outcome outcome; /* HTTP, EXPORT */
    int last; /* EXPORT: the download ends with this piece; RESUME: the turn has ended */

    /* LIVE, SUBSCRIBE, RESUME */
    char user[37];    /* the user the event or the subscription is for */
    char session[37]; /* LIVE frames, RESUME: the session */
    char turn_id[37]; /* LIVE frames, RESUME: the turn they belong to ("" for none) */
    char tag;         /* LIVE: 'E' event, 'D' delta, 'F' a turn's last frame */
    long long index;  /* LIVE 'D': the delta's index; 'F': the last delta's (-1: none, or
                         not known: the reply holds the whole text); RESUME: the last
                         index replayed */
    int refill;       /* RESUME: frames a resuming connection missed (events_refill), not
                         the answer to a request */
    char **frames;    /* RESUME: the frames to replay, in order (owned) */
    size_t *lens;
    size_t nframes;
};

struct outbox *outbox_create(void);
/* Frees the posts nobody took (releasing their turn references). */
void outbox_destroy(struct outbox *ob);
/* From now on wake(arg) is called, under the outbox's lock, after each
 * post; wake NULL: posts are only kept (the transport has gone). */
void outbox_set_wake(struct outbox *ob, void (*wake)(void *arg), void *arg);

/* Every post so far, oldest first; the caller frees each with
 * outbox_post_free after applying it (it may steal frame and held, setting
 * them NULL). */
struct outbox_post *outbox_take(struct outbox *ob);
void outbox_post_free(struct outbox_post *p);

/* {"type": type, "data": data} as the reply to conn's current request;
 * steals data (NULL, or data that cannot be encoded: error 2). */
void outbox_reply(struct outbox *ob, uint64_t conn, int type, json_t *data);
/* The same with data as JSON text from a trusted writer
 * (proto_encode_reply_text); NULL data: error 2. */
void outbox_reply_text(struct outbox *ob, uint64_t conn, int type, const char *data_json);
/* An error frame as that reply; text NULL: the code's standard text. */
void outbox_reply_error(struct outbox *ob, uint64_t conn, int type, int code, const char *text);
/* Hands the connection a reference to its turn, which the caller took
 * (release lets go of it if nobody takes it). */
void outbox_detach(struct outbox *ob, uint64_t conn, void *turn, outbox_release_fn release);
/* Steals frame. */
void outbox_push(struct outbox *ob, uint64_t conn, char *frame, size_t len);
/* The turn ended: the connection lets go of it. Steals a reference, as
 * outbox_detach. */
void outbox_turn_done(struct outbox *ob, uint64_t conn, void *turn, outbox_release_fn release);
/* Steals body. */
void outbox_http(struct outbox *ob, uint64_t txn, enum outbox_outcome outcome, char *body,
                 size_t len);
/* A message from the live bus for the connections of user (steals frame);
 * session and turn NULL for an event. */
void outbox_live(struct outbox *ob, const char *user, char tag, const char *session,
                 const char *turn, long long index, char *frame, size_t len);
/* Code 14's answer; ok: the connection now gets user's events. */
void outbox_subscribed(struct outbox *ob, uint64_t conn, const char *user, int ok, char *frame,
                       size_t len);
/* Code 16's answer (frame), then frames[0..n) (stolen with the arrays) of
 * turn (NULL: none); active: the turn is running, and its live frames
 * after last_index follow; ended: frames end with its last frame. refill:
 * no answer, only the frames a resuming connection missed. */
void outbox_resumed(struct outbox *ob, uint64_t conn, const char *user, const char *session,
                    const char *turn, char *frame, size_t len, char **frames, size_t *lens,
                    size_t n, long long last_index, int active, int refill);
/* Steals piece and job (work/export.h), which release frees. */
void outbox_export(struct outbox *ob, uint64_t txn, enum outbox_outcome outcome, char *piece,
                   size_t len, int last, void *job, outbox_release_fn release);

#endif
