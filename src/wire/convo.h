/* convo.h - one conversation of an export from another chat product (or
 * from chatd), as the tree chatd stores: messages with a parent, in an
 * order where every parent comes before its children, and the one the
 * conversation was showing (its active leaf).
 *
 * Formats, told apart by their fields:
 *   ChatGPT    conversations.json: {title, create_time, mapping: {id: {message,
 *              parent, children}}, current_node, conversation_id | id}
 *   Claude     conversations.json: {uuid, name, created_at, chat_messages:
 *              [{uuid, sender: human|assistant, text | content, created_at,
 *              parent_message_uuid?}]}
 *   Open WebUI chat export: {id, title, created_at, chat: {history: {messages:
 *              {id: {id, parentId, role, content, timestamp, model}}, currentId}}}
 *   chatd      json export: {session_id, session_name, created_at, messages:
 *              [{seq, parent_seq?, role, content, created_at}]}; jsonl export:
 *              {session_id, session_name, created_at, messages: [{role, content}]}
 * What chatd cannot hold is skipped with a reason: system and tool
 * messages, hidden nodes, parts that are not text (images, code
 * results), file entries (the files are not in an export). A message
 * skipped is bridged: its children hang under its parent. A conversation
 * whose parents form a cycle or name a message that is not there is
 * skipped whole, with its reason. Pure (tests/unit/test_convo.c). */
#ifndef CHATD_CONVO_H
#define CHATD_CONVO_H

#include <jansson.h>
#include <stddef.h>

enum convo_format {
    CONVO_UNKNOWN,
    CONVO_CHATGPT,
    CONVO_CLAUDE,
    CONVO_OPENWEBUI,
    CONVO_CHATD,
};

struct convo_msg {
    const char *role;     /* "user" or "assistant" */
    const char *content;  /* into the value */
    long long parent;     /* index into msgs of its parent, -1 for a first message */
    long long created_us; /* epoch microseconds, -1 when the export has none */
};

struct convo {
    enum convo_format format;
    const char *title;     /* "" when none */
    const char *source_id; /* the export's id of the conversation ("" when none) */
    long long created_us;  /* -1 when none */
    struct convo_msg *msgs;
    size_t n;
    long long leaf;     /* index of the active leaf, -1 when empty */
    size_t skipped;     /* messages left out */
    char skip_why[160]; /* the first reason a message was left out */
    void *owned;        /* the texts joined from parts (convo.c's) */
    size_t owned_n;
};

/* The format of one value of an export (an element of its array, a line
 * of JSON Lines, or a whole file). */
enum convo_format convo_detect(const json_t *v);
const char *convo_format_name(enum convo_format f);

/* Reads v (which must outlive c) as format f. 0, or -1 with why filled:
 * the conversation cannot be imported (a cycle, a dangling parent, not
 * the shape of its format). */
int convo_read(const json_t *v, enum convo_format f, struct convo *c, char *why, size_t whylen);
void convo_free(struct convo *c);

#endif
