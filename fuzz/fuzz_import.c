/* fuzz_import.c - libFuzzer target over what POST /import does with an
 * export's bytes: wire/jsonsplit.c finds its values (fed in pieces whose
 * size the input's first byte picks), and wire/convo.c reads each as
 * every format in turn.
 *
 * Invariants beyond "no crash, no sanitizer report": a conversation read
 * has every parent before its child (what PostgreSQL's check wants), an
 * active leaf among its messages, and only the roles chatd stores. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire/convo.h"
#include "wire/jsonsplit.h"

static void check(const struct convo *c)
{
    if (c->n > 0 && (c->leaf < 0 || (size_t)c->leaf >= c->n))
        abort();
    for (size_t i = 0; i < c->n; i++) {
        const struct convo_msg *m = &c->msgs[i];
        if (m->parent >= (long long)i || m->parent < -1)
            abort();
        if (strcmp(m->role, "user") != 0 && strcmp(m->role, "assistant") != 0)
            abort();
        if (m->content == NULL)
            abort();
    }
}

static int on_value(void *arg, json_t *v)
{
    (void)arg;
    static const enum convo_format all[] = {CONVO_CHATGPT, CONVO_CLAUDE, CONVO_OPENWEBUI,
                                            CONVO_CHATD};
    char why[160];
    (void)convo_detect(v);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        struct convo c;
        if (convo_read(v, all[i], &c, why, sizeof(why)) == 0) {
            check(&c);
            convo_free(&c);
        }
    }
    json_decref(v);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t step = 1 + data[0] % 64;
    data++;
    size--;
    struct jsonsplit s;
    jsonsplit_init(&s, 1 << 16, on_value, NULL);
    enum jsonsplit_status st = JSONSPLIT_OK;
    for (size_t i = 0; i < size && st == JSONSPLIT_OK; i += step)
        st = jsonsplit_feed(&s, (const char *)data + i, i + step <= size ? step : size - i);
    if (st == JSONSPLIT_OK)
        (void)jsonsplit_end(&s);
    jsonsplit_free(&s);
    return 0;
}
