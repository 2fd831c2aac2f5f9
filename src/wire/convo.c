/* convo.c - one conversation of an export as chatd's tree (see convo.h). */
#include "wire/convo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A message as the export has it, before the tree is checked. */
struct node {
    const char *key;    /* the export's id ("" for none) */
    const char *parent; /* the parent's id, NULL for none */
    const char *role;   /* NULL: left out (why in skip) */
    const char *skip;
    char *text; /* owned when the text was joined from parts */
    const char *content;
    long long created_us;
    size_t order; /* the export's order, to keep siblings in it */
    /* the tree */
    long long up;    /* index of the parent node, -1 for none */
    int color;       /* 0 unseen, 1 on the walk, 2 done */
    long long depth; /* its rank in the time order */
    long long out;   /* index in c->msgs, -1 for left out */
};

struct nodes {
    struct node *v;
    size_t n, cap;
};

static struct node *push(struct nodes *ns)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 16;
        struct node *v = realloc(ns->v, cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        ns->v = v;
        ns->cap = cap;
    }
    struct node *x = &ns->v[ns->n];
    memset(x, 0, sizeof(*x));
    x->key = "";
    x->created_us = -1;
    x->order = ns->n++;
    return x;
}

static void nodes_free(struct nodes *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i].text);
    free(ns->v);
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "";
}

/* RFC 3339 ("2024-05-01T10:00:00.123456Z", "+02:00") as epoch
 * microseconds; -1 when it is not one. */
static long long iso_us(const char *s)
{
    struct tm tm = {0};
    int frac_digits = 0;
    long long frac = 0;
    const char *p = s;
    if (s == NULL ||
        sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6 ||
        strlen(s) < 19)
        return -1;
    p = s + 19;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (frac_digits < 6) {
                frac = frac * 10 + (*p - '0');
                frac_digits++;
            }
    while (frac_digits < 6) {
        frac *= 10;
        frac_digits++;
    }
    long off = 0;
    if (*p == '+' || *p == '-') {
        int h, m;
        if (sscanf(p + 1, "%2d:%2d", &h, &m) != 2)
            return -1;
        off = (*p == '+' ? 1 : -1) * (h * 3600L + m * 60L);
    } else if (*p != 'Z' && *p != 'z' && *p != '\0') {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return ((long long)t - off) * 1000000 + frac;
}

/* Seconds since the epoch (an integer or a fraction) as microseconds. */
static long long secs_us(const json_t *v)
{
    if (!json_is_number(v))
        return -1;
    double d = json_number_value(v);
    if (!(d > 0) || d > 4e11) /* also NaN */
        return -1;
    /* Some exports write milliseconds. */
    if (d > 1e11)
        d /= 1000;
    return (long long)llround(d * 1e6);
}

static long long when(const json_t *v)
{
    return json_is_string(v) ? iso_us(json_string_value(v)) : secs_us(v);
}

/* -------------------------------------------------------------- formats */

enum convo_format convo_detect(const json_t *v)
{
    if (!json_is_object(v))
        return CONVO_UNKNOWN;
    if (json_is_object(json_object_get(v, "mapping")))
        return CONVO_CHATGPT;
    if (json_is_array(json_object_get(v, "chat_messages")))
        return CONVO_CLAUDE;
    const json_t *chat = json_object_get(v, "chat");
    if (json_is_object(chat) && (json_is_object(json_object_get(chat, "history")) ||
                                 json_is_array(json_object_get(chat, "messages"))))
        return CONVO_OPENWEBUI;
    if (json_is_array(json_object_get(v, "messages")) && json_object_get(v, "session_id") != NULL)
        return CONVO_CHATD;
    return CONVO_UNKNOWN;
}

const char *convo_format_name(enum convo_format f)
{
    switch (f) {
    case CONVO_CHATGPT:
        return "chatgpt";
    case CONVO_CLAUDE:
        return "claude";
    case CONVO_OPENWEBUI:
        return "openwebui";
    case CONVO_CHATD:
        return "chatd";
    case CONVO_UNKNOWN:
        break;
    }
    return "unknown";
}

/* A role chatd keeps, or NULL with *why. */
static const char *role_of(const char *r, const char **why)
{
    if (strcmp(r, "user") == 0 || strcmp(r, "human") == 0)
        return "user";
    if (strcmp(r, "assistant") == 0)
        return "assistant";
    *why = strcmp(r, "system") == 0 ? "a system message"
           : strcmp(r, "tool") == 0 ? "a tool's message"
           : strcmp(r, "file") == 0 ? "a file (files are not in an export)"
                                    : "a message of an unknown role";
    return NULL;
}

/* The text parts of parts (strings, or {type: text, text}) joined by
 * blank lines: malloc'd, NULL when there is none. */
static char *join_parts(const json_t *parts)
{
    size_t i, len = 0;
    const json_t *p;
    json_array_foreach(parts, i, p)
    {
        const char *s = json_is_string(p) ? json_string_value(p)
                        : json_is_object(p) && strcmp(str(p, "type"), "text") == 0
                            ? json_string_value(json_object_get(p, "text"))
                            : NULL;
        if (s != NULL && s[0] != '\0')
            len += strlen(s) + 2;
    }
    if (len == 0)
        return NULL;
    char *out = malloc(len + 1), *o = out;
    if (out == NULL)
        return NULL;
    json_array_foreach(parts, i, p)
    {
        const char *s = json_is_string(p) ? json_string_value(p)
                        : json_is_object(p) && strcmp(str(p, "type"), "text") == 0
                            ? json_string_value(json_object_get(p, "text"))
                            : NULL;
        if (s == NULL || s[0] == '\0')
            continue;
        if (o != out) {
            memcpy(o, "\n\n", 2);
            o += 2;
        }
        size_t n = strlen(s);
        memcpy(o, s, n);
        o += n;
    }
    *o = '\0';
    return out;
}

static int read_chatgpt(const json_t *v, struct convo *c, struct nodes *ns, const char **leaf)
{
    c->title = str(v, "title");
    c->source_id = json_is_string(json_object_get(v, "conversation_id")) ? str(v, "conversation_id")
                                                                         : str(v, "id");
    c->created_us = secs_us(json_object_get(v, "create_time"));
    *leaf = json_string_value(json_object_get(v, "current_node"));
    const char *key;
    const json_t *node;
    json_object_foreach((json_t *)json_object_get(v, "mapping"), key, node)
    {
        struct node *x = push(ns);
        if (x == NULL)
            return -1;
        x->key = key;
        x->parent = json_string_value(json_object_get(node, "parent"));
        const json_t *m = json_object_get(node, "message");
        if (!json_is_object(m)) {
            x->skip = "the conversation's root";
            continue;
        }
        const json_t *meta = json_object_get(m, "metadata");
        x->created_us = secs_us(json_object_get(m, "create_time"));
        x->role = role_of(str(json_object_get(m, "author"), "role"), &x->skip);
        if (x->role == NULL)
            continue;
        if (json_is_true(json_object_get(meta, "is_visually_hidden_from_conversation"))) {
            x->role = NULL;
            x->skip = "a hidden message";
            continue;
        }
        const json_t *content = json_object_get(m, "content");
        const char *type = str(content, "content_type");
        if (strcmp(type, "text") != 0 && strcmp(type, "multimodal_text") != 0) {
            x->role = NULL;
            x->skip = "not text (an image, code or a tool's output)";
            continue;
        }
        x->text = join_parts(json_object_get(content, "parts"));
        if (x->text == NULL) {
            x->role = NULL;
            x->skip = "no text in it";
            continue;
        }
        x->content = x->text;
    }
    return 0;
}

/* Claude's root message names this parent, which no message has. */
#define CLAUDE_ROOT "00000000-0000-4000-8000-000000000000"

static int read_claude(const json_t *v, struct convo *c, struct nodes *ns, const char **leaf)
{
    c->title = str(v, "name");
    c->source_id = str(v, "uuid");
    c->created_us = when(json_object_get(v, "created_at"));
    *leaf = NULL; /* the last one */
    size_t i;
    const json_t *m;
    const char *prev = NULL;
    json_array_foreach(json_object_get(v, "chat_messages"), i, m)
    {
        struct node *x = push(ns);
        if (x == NULL)
            return -1;
        x->key = str(m, "uuid");
        const json_t *pu = json_object_get(m, "parent_message_uuid");
        /* Older exports are a list: each message answers the one before. */
        x->parent =
            json_is_string(pu)
                ? (strcmp(json_string_value(pu), CLAUDE_ROOT) == 0 ? NULL : json_string_value(pu))
                : prev;
        prev = x->key;
        x->created_us = when(json_object_get(m, "created_at"));
        x->role = role_of(str(m, "sender"), &x->skip);
        if (x->role == NULL)
            continue;
        const json_t *content = json_object_get(m, "content");
        x->text = json_is_array(content) ? join_parts(content) : NULL;
        x->content = x->text != NULL ? x->text : str(m, "text");
        if (x->content[0] == '\0') {
            x->role = NULL;
            x->skip = "no text in it";
        }
    }
    return 0;
}

static int read_openwebui(const json_t *v, struct convo *c, struct nodes *ns, const char **leaf)
{
    const json_t *chat = json_object_get(v, "chat");
    c->title = str(v, "title")[0] != '\0' ? str(v, "title") : str(chat, "title");
    c->source_id = str(v, "id");
    c->created_us = when(json_object_get(v, "created_at"));
    const json_t *history = json_object_get(chat, "history");
    *leaf = json_string_value(json_object_get(history, "currentId"));
    const json_t *msgs = json_object_get(history, "messages");
    if (json_is_object(msgs)) {
        const char *key;
        const json_t *m;
        json_object_foreach((json_t *)msgs, key, m)
        {
            struct node *x = push(ns);
            if (x == NULL)
                return -1;
            x->key = key;
            x->parent = json_string_value(json_object_get(m, "parentId"));
            x->created_us = when(json_object_get(m, "timestamp"));
            x->role = role_of(str(m, "role"), &x->skip);
            x->content = str(m, "content");
            if (x->role != NULL && x->content[0] == '\0') {
                x->role = NULL;
                x->skip = "no text in it";
            }
        }
        return 0;
    }
    /* an older export: a list */
    size_t i;
    const json_t *m;
    const char *prev = NULL;
    json_array_foreach(json_object_get(chat, "messages"), i, m)
    {
        struct node *x = push(ns);
        if (x == NULL)
            return -1;
        x->key = str(m, "id");
        x->parent = prev;
        prev = x->key;
        x->created_us = when(json_object_get(m, "timestamp"));
        x->role = role_of(str(m, "role"), &x->skip);
        x->content = str(m, "content");
    }
    return 0;
}

static int read_chatd(const json_t *v, struct convo *c, struct nodes *ns, const char **leaf)
{
    c->title = str(v, "session_name");
    c->source_id = str(v, "session_id");
    c->created_us = when(json_object_get(v, "created_at"));
    *leaf = NULL;
    size_t i;
    const json_t *m;
    const char *prev = NULL;
    json_array_foreach(json_object_get(v, "messages"), i, m)
    {
        struct node *x = push(ns);
        if (x == NULL)
            return -1;
        /* The key is the seq (a json export), or the place (jsonl); the
         * parent is parent_seq when the message has the field (null: a
         * first message), else the message before (one path). Both are
         * written into the node's own buffer, "key\0parent". */
        const json_t *seq = json_object_get(m, "seq"), *ps = json_object_get(m, "parent_seq");
        long long k = json_is_integer(seq) ? (long long)json_integer_value(seq) : (long long)i;
        char buf[64];
        int kl = snprintf(buf, sizeof(buf), "%lld", k);
        if (json_is_integer(ps))
            snprintf(buf + kl + 1, sizeof(buf) - (size_t)kl - 1, "%lld",
                     (long long)json_integer_value(ps));
        else
            buf[kl + 1] = '\0';
        x->text = malloc(sizeof(buf));
        if (x->text == NULL)
            return -1;
        memcpy(x->text, buf, sizeof(buf));
        x->key = x->text;
        x->parent = json_is_integer(ps) ? x->text + kl + 1 : ps != NULL ? NULL : prev;
        prev = x->key;
        x->created_us = when(json_object_get(m, "created_at"));
        x->role = role_of(str(m, "role"), &x->skip);
        x->content = str(m, "content");
    }
    return 0;
}

/* ------------------------------------------------------------- the tree */

static int by_key(const void *a, const void *b)
{
    const struct node *x = *(struct node *const *)a, *y = *(struct node *const *)b;
    return strcmp(x->key, y->key);
}

static long long find(struct node **sorted, size_t n, const char *key)
{
    struct node probe = {.key = key}, *pp = &probe;
    struct node **hit = bsearch(&pp, sorted, n, sizeof(*sorted), by_key);
    return hit != NULL ? (long long)(hit - sorted) : -1;
}

/* The order messages are stored in: oldest first where the export says
 * when (and in its own order where it does not), every parent before its
 * children. A chatd export comes back in its seq order. */
static int by_time(const void *a, const void *b)
{
    const struct node *x = *(struct node *const *)a, *y = *(struct node *const *)b;
    if (x->created_us != y->created_us && x->created_us >= 0 && y->created_us >= 0)
        return x->created_us < y->created_us ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* A min-heap of ranks (into the time order). */
struct heap {
    size_t *v, n;
};

static void heap_push(struct heap *h, size_t r)
{
    size_t i = h->n++;
    h->v[i] = r;
    while (i > 0 && h->v[(i - 1) / 2] > h->v[i]) {
        size_t p = (i - 1) / 2, t = h->v[p];
        h->v[p] = h->v[i];
        h->v[i] = t;
        i = p;
    }
}

static size_t heap_pop(struct heap *h)
{
    size_t top = h->v[0];
    h->v[0] = h->v[--h->n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->v[l] < h->v[m])
            m = l;
        if (r < h->n && h->v[r] < h->v[m])
            m = r;
        if (m == i)
            break;
        size_t t = h->v[m];
        h->v[m] = h->v[i];
        h->v[i] = t;
        i = m;
    }
    return top;
}

static int build(struct convo *c, struct nodes *ns, const char *leaf_key, char *why, size_t whylen)
{
    size_t n = ns->n;
    struct node **sorted = NULL, **order = NULL;
    int rc = -1;
    c->leaf = -1;
    if (n == 0)
        return 0;
    sorted = malloc(n * sizeof(*sorted));
    order = malloc(n * sizeof(*order));
    if (sorted == NULL || order == NULL) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        sorted[i] = &ns->v[i];
    qsort(sorted, n, sizeof(*sorted), by_key);
    for (size_t i = 1; i < n; i++)
        if (sorted[i]->key[0] != '\0' && strcmp(sorted[i]->key, sorted[i - 1]->key) == 0) {
            snprintf(why, whylen, "two messages with one id");
            goto out;
        }
    /* each node's parent */
    for (size_t i = 0; i < n; i++) {
        struct node *x = &ns->v[i];
        x->up = -1;
        if (x->parent == NULL || x->parent[0] == '\0')
            continue;
        long long k = find(sorted, n, x->parent);
        if (k < 0) {
            snprintf(why, whylen, "a message's parent is not in the conversation");
            goto out;
        }
        x->up = sorted[k] - ns->v;
    }
    /* no cycle: walk up from each node, marking the walk */
    for (size_t i = 0; i < n; i++) {
        long long k = (long long)i;
        while (k >= 0 && ns->v[k].color == 0) {
            ns->v[k].color = 1;
            k = ns->v[k].up;
        }
        if (k >= 0 && ns->v[k].color == 1) {
            snprintf(why, whylen, "its messages' parents form a cycle");
            goto out;
        }
        for (k = (long long)i; k >= 0 && ns->v[k].color == 1; k = ns->v[k].up)
            ns->v[k].color = 2;
    }
    /* a left-out message is bridged: its children hang under the nearest
     * kept ancestor; depth counts kept ancestors */
    for (size_t i = 0; i < n; i++) {
        struct node *x = &ns->v[i];
        long long k = x->up;
        while (k >= 0 && ns->v[k].role == NULL)
            k = ns->v[k].up;
        x->up = k;
    }
    /* time order, then parents first (Kahn's, the earliest ready first) */
    for (size_t i = 0; i < n; i++)
        sorted[i] = &ns->v[i];
    qsort(sorted, n, sizeof(*sorted), by_time);
    for (size_t i = 0; i < n; i++)
        sorted[i]->depth = (long long)i; /* its rank */
    {
        size_t *kids = malloc(n * sizeof(*kids)), *first = malloc((n + 1) * sizeof(*first));
        struct heap h = {.v = malloc(n * sizeof(size_t)), .n = 0};
        if (kids == NULL || first == NULL || h.v == NULL) {
            free(kids);
            free(first);
            free(h.v);
            snprintf(why, whylen, "out of memory");
            goto out;
        }
        /* children of each rank, as ranks: counting sort by parent rank */
        memset(first, 0, (n + 1) * sizeof(*first));
        for (size_t i = 0; i < n; i++)
            if (sorted[i]->up >= 0)
                first[ns->v[sorted[i]->up].depth + 1]++;
        for (size_t i = 0; i < n; i++)
            first[i + 1] += first[i];
        size_t *fill = malloc(n * sizeof(*fill)); /* where each one's next child goes */
        if (fill == NULL) {
            free(kids);
            free(first);
            free(h.v);
            snprintf(why, whylen, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            fill[i] = first[i];
        for (size_t i = 0; i < n; i++)
            if (sorted[i]->up >= 0)
                kids[fill[ns->v[sorted[i]->up].depth]++] = i;
        free(fill);
        for (size_t i = 0; i < n; i++)
            if (sorted[i]->up < 0)
                heap_push(&h, i);
        size_t k = 0;
        struct node **out_order = malloc(n * sizeof(*out_order));
        if (out_order == NULL) {
            free(kids);
            free(first);
            free(h.v);
            snprintf(why, whylen, "out of memory");
            goto out;
        }
        while (h.n > 0) {
            size_t r = heap_pop(&h);
            out_order[k++] = sorted[r];
            for (size_t c2 = first[r]; c2 < first[r + 1]; c2++)
                heap_push(&h, kids[c2]);
        }
        free(kids);
        free(first);
        free(h.v);
        memcpy(order, out_order, n * sizeof(*order));
        free(out_order);
        /* the keys' order is needed again below */
        for (size_t i = 0; i < n; i++)
            sorted[i] = &ns->v[i];
        qsort(sorted, n, sizeof(*sorted), by_key);
    }
    c->msgs = calloc(n, sizeof(*c->msgs));
    if (c->msgs == NULL) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct node *x = order[i];
        x->out = -1;
        if (x->role == NULL) {
            if (c->skipped++ == 0)
                snprintf(c->skip_why, sizeof(c->skip_why), "%s", x->skip ? x->skip : "left out");
            continue;
        }
        struct convo_msg *m = &c->msgs[c->n];
        m->role = x->role;
        m->content = x->content;
        m->created_us = x->created_us;
        m->parent = x->up >= 0 ? ns->v[x->up].out : -1;
        x->out = (long long)c->n++;
    }
    /* the active leaf: the export's, or its nearest kept ancestor; else
     * the last message of the deepest path the export put last */
    long long lk = leaf_key != NULL ? find(sorted, n, leaf_key) : -1;
    if (lk >= 0) {
        long long k = sorted[lk] - ns->v;
        while (k >= 0 && ns->v[k].out < 0)
            k = ns->v[k].up;
        c->leaf = k >= 0 ? ns->v[k].out : -1;
    }
    if (c->leaf < 0 && c->n > 0) {
        /* the newest message in the export's order */
        size_t best = n;
        for (size_t i = 0; i < n; i++)
            if (ns->v[i].out >= 0 && (best == n || ns->v[i].order > ns->v[best].order))
                best = i;
        c->leaf = ns->v[best].out;
    }
    rc = 0;
out:
    free(sorted);
    free(order);
    return rc;
}

int convo_read(const json_t *v, enum convo_format f, struct convo *c, char *why, size_t whylen)
{
    memset(c, 0, sizeof(*c));
    c->format = f;
    c->leaf = -1;
    c->created_us = -1;
    c->title = c->source_id = "";
    struct nodes ns = {0};
    const char *leaf = NULL;
    int rc;
    switch (f) {
    case CONVO_CHATGPT:
        rc = read_chatgpt(v, c, &ns, &leaf);
        break;
    case CONVO_CLAUDE:
        rc = read_claude(v, c, &ns, &leaf);
        break;
    case CONVO_OPENWEBUI:
        rc = read_openwebui(v, c, &ns, &leaf);
        break;
    case CONVO_CHATD:
        rc = read_chatd(v, c, &ns, &leaf);
        break;
    case CONVO_UNKNOWN:
    default:
        snprintf(why, whylen, "not a conversation of a known format");
        return -1;
    }
    if (rc != 0)
        snprintf(why, whylen, "out of memory");
    else
        rc = build(c, &ns, leaf, why, whylen);
    if (rc != 0) {
        nodes_free(&ns);
        free(c->msgs);
        c->msgs = NULL;
        c->n = 0;
        return -1;
    }
    /* the joined texts live on in c->msgs: hand the nodes' buffers over */
    c->owned = ns.v;
    c->owned_n = ns.n;
    return 0;
}

void convo_free(struct convo *c)
{
    struct nodes ns = {.v = c->owned, .n = c->owned_n};
    nodes_free(&ns);
    free(c->msgs);
    memset(c, 0, sizeof(*c));
}
