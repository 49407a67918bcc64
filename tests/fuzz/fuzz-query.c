/* libFuzzer target for the query string: the input is what follows '?' in a request line.
 * It is split at '&' and '=' and unescaped by libmicrohttpd's own MHD_http_unescape(), as
 * the server does, and each value is read the way the API reads ?tail= (query_count()),
 * against a plain oracle: any value gives a count within the cap or an error, never a
 * crash, and 1 to 20 digits always give min(value, cap). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "http/query.h"

#define TAIL_DEFAULT 100
#define TAIL_MAX     10000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a count made of digits only should read as. */
static bool digits_value(const char *s, unsigned long long *ret)
{
    size_t len = strlen(s);
    unsigned long long v = 0;

    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v <= TAIL_MAX)
            v = v * 10 + (unsigned)(s[i] - '0');
    }
    *ret = v;
    return true;
}

static void check_count(const char *value)
{
    unsigned long long expected;
    unsigned n = 0xdeadbeef;
    int r = query_count(value, TAIL_DEFAULT, TAIL_MAX, &n);

    if (!value) {
        if (r != 0 || n != TAIL_DEFAULT)
            abort();
        return;
    }
    if (digits_value(value, &expected)) {
        if (r != 0 || n != (expected > TAIL_MAX ? TAIL_MAX : expected))
            abort();
    } else if (r == 0) {
        abort(); /* anything but digits is refused */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *query, *arg, *save = NULL;

    if (size > 8192) /* the server's request line is capped far below this */
        return 0;
    query = malloc(size + 1);
    if (!query)
        abort();
    memcpy(query, data, size);
    query[size] = '\0'; /* the server sees a C string */
    check_count(NULL);
    for (arg = strtok_r(query, "&", &save); arg; arg = strtok_r(NULL, "&", &save)) {
        char *value = strchr(arg, '=');

        if (value)
            *value++ = '\0';
        MHD_http_unescape(arg);
        if (value)
            MHD_http_unescape(value);
        /* A key given without a value reads as "" (request_query()). */
        check_count(value ? value : "");
        if (strcmp(arg, "wait") == 0 && value && strcmp(value, "healthy") == 0)
            check_count(arg); /* "wait" is not a count */
    }
    free(query);
    return 0;
}
