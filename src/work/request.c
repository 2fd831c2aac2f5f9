/* request.c - a request's lifetime (see request.h). */
#include "work/request.h"

#include <stdlib.h>

void work_request_free(struct work_request *r)
{
    if (r == NULL)
        return;
    proto_request_free(&r->req);
    free(r->ready);
    free(r);
}
