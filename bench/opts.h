/* opts.h - the command line of every bench program, as a table: each
 * option's name, what kind of value it takes and where that goes.
 * Header-only, like wsclient.h and measure.h. */
#ifndef CHATD_BENCH_OPTS_H
#define CHATD_BENCH_OPTS_H

#include <stdlib.h>
#include <string.h>

enum opt_kind {
    OPT_STR,    /* const char **: the argument itself */
    OPT_INT,    /* int * */
    OPT_LLONG,  /* long long * */
    OPT_DOUBLE, /* double * */
    OPT_FLAG,   /* int *, set to 1; takes no value */
    OPT_CALL,   /* call(value): options whose value does more than set a field */
};

struct opt {
    const char *name; /* "--url"; a row with NULL ends the table */
    enum opt_kind kind;
    void *dst;
    void (*call)(const char *v);
};

/* Sets what argv names; anything unknown, or an option without its value,
 * is usage()'s (which does not return). */
static inline void opts_parse(int argc, char **argv, const struct opt *opts, void (*usage)(void))
{
    for (int i = 1; i < argc; i++) {
        const struct opt *o = opts;
        while (o->name != NULL && strcmp(o->name, argv[i]) != 0)
            o++;
        if (o->name == NULL)
            usage();
        if (o->kind == OPT_FLAG) {
            *(int *)o->dst = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        switch (o->kind) {
        case OPT_STR:
            *(const char **)o->dst = v;
            break;
        case OPT_INT:
            *(int *)o->dst = atoi(v);
            break;
        case OPT_LLONG:
            *(long long *)o->dst = atoll(v);
            break;
        case OPT_DOUBLE:
            *(double *)o->dst = atof(v);
            break;
        case OPT_CALL:
            o->call(v);
            break;
        case OPT_FLAG:
            break;
        }
    }
}

#endif
