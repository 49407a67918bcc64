/* Query arguments (SPEC section 3): the API's numbers, read from the already unescaped
 * values. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http/query.h"

int query_count(const char *s, unsigned dflt, unsigned max, unsigned *ret)
{
    char *end;
    unsigned long long v;

    if (!s) {
        *ret = dflt;
        return 0;
    }
    if (!(*s >= '0' && *s <= '9') || strlen(s) > 20)
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end != '\0')
        return -EINVAL;
    *ret = (errno == ERANGE || v > max) ? max : (unsigned)v;
    return 0;
}
