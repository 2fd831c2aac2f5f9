/* links.c - stored file names as references and URLs (see links.h). */
#include "work/links.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/files.h"
#include "wire/auth.h"

char *links_file_ref(const struct config *cfg, const char *name)
{
    return auth_file_ref(cfg, name, time(NULL));
}

char *links_file_url(const struct config *cfg, const char *name)
{
    char *ref = links_file_ref(cfg, name);
    char *url = ref != NULL ? files_url(cfg, ref) : NULL;
    free(ref);
    return url;
}

int links_apply(const struct config *cfg, json_t *msgs, const char *key,
                char *(*link)(const struct config *, const char *))
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *name = json_string_value(json_object_get(m, "content"));
        if (role == NULL || strcmp(role, "file") != 0 || name == NULL)
            continue;
        char *s = link(cfg, name);
        int failed = s == NULL || json_object_set_new(m, key, json_string(s)) != 0;
        free(s);
        if (failed)
            return -1;
    }
    return 0;
}

char *links_sign_chat(const struct config *cfg, const char *chat_json)
{
    json_t *msgs = json_loads(chat_json, 0, NULL);
    char *out = json_is_array(msgs) && links_apply(cfg, msgs, "content", links_file_ref) == 0
                    ? json_dumps(msgs, JSON_COMPACT)
                    : NULL;
    json_decref(msgs);
    return out;
}
