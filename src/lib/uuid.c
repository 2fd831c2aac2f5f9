/* uuid.c - UUID validation and random (v4) generation. */
#include "lib/uuid.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/util.h"

int uuid_valid(const char *s)
{
    for (int i = 0; i < UUID_STR_LEN; i++) {
        if (s[i] == '\0')
            return 0;
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return s[UUID_STR_LEN] == '\0';
}

int uuid_generate(char out[UUID_STR_LEN + 1])
{
    uint8_t b[16];
    if (util_random(b, sizeof(b)) != 0)
        return -1;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, UUID_STR_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

void uuid_normalize(const char *s, char out[UUID_STR_LEN + 1])
{
    for (int i = 0; i < UUID_STR_LEN; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[UUID_STR_LEN] = '\0';
}
