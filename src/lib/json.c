/* Small helpers over jansson. */
#include <stdlib.h>

#include <jansson.h>

#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"

json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    char *copy;

    if (j)
        return j;
    /* Not UTF-8 (or cut inside a character): keep the ASCII, mark the rest. */
    copy = xstrdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    if (!j)
        fatal("out of memory (json_string)");
    return j;
}
