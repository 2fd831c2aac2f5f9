/* queue.h - the intrusive first-in first-out list that the worker pool,
 * the outbox, the live publisher, a connection's requests and a session's
 * waiting turns each keep: a head, a tail, and a link field in the item.
 *
 * Macros, because the items are of different types; each argument is
 * evaluated more than once, so pass plain lvalues. */
#ifndef CHATD_QUEUE_H
#define CHATD_QUEUE_H

/* Appends item (its link field named next) after tail. */
#define QUEUE_APPEND(head, tail, item, next)                                                       \
    do {                                                                                           \
        (item)->next = NULL;                                                                       \
        if ((tail) != NULL)                                                                        \
            (tail)->next = (item);                                                                 \
        else                                                                                       \
            (head) = (item);                                                                       \
        (tail) = (item);                                                                           \
    } while (0)

/* Takes the first item off into out (NULL when empty). */
#define QUEUE_POP(head, tail, out, next)                                                           \
    do {                                                                                           \
        (out) = (head);                                                                            \
        if ((out) != NULL) {                                                                       \
            (head) = (out)->next;                                                                  \
            if ((head) == NULL)                                                                    \
                (tail) = NULL;                                                                     \
            (out)->next = NULL;                                                                    \
        }                                                                                          \
    } while (0)

#endif
