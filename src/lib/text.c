/* Text a person will read in an error: checked for printable UTF-8, quoted and cut. */
#include <stdio.h>
#include <string.h>

#include "lib/text.h"

/* Returns the length of the valid UTF-8 sequence at s (at most len bytes), or 0. */
size_t text_utf8_length(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char low = 0x80, high = 0xbf; /* bounds of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0)
        low = 0xa0; /* overlong */
    else if (c == 0xed)
        high = 0x9f; /* surrogates */
    else if (c == 0xf0)
        low = 0x90; /* overlong */
    else if (c == 0xf4)
        high = 0x8f; /* above U+10FFFF */
    if (len < n || s[1] < low || s[1] > high)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return n;
}

bool text_printable(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < len;) {
        size_t n = text_utf8_length(p + i, len - i);

        if (n == 0 || (n == 1 && (p[i] < 0x20 || p[i] == 0x7f)))
            return false;
        i += n;
    }
    return true;
}
