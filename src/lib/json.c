/* Small helpers over jansson. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

/* Unix milliseconds as an ISO 8601 UTC string, or null for 0. */
json_t *json_time_ms(int64_t ms)
{
    char buf[64];
    struct tm tm;
    time_t t = (time_t)(ms / 1000);

    if (ms <= 0)
        return json_null();
    gmtime_r(&t, &tm);
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(buf);
}
