/* Address ranges: parsed by inet_pton() after a split on '/', matched bit by bit. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "lib/cidr.h"

static unsigned family_bits(int family)
{
    return family == AF_INET ? 32 : 128;
}

/* Reads a prefix length: 1 to 3 decimal digits, nothing else. */
static int parse_prefix(const char *s, unsigned *ret)
{
    unsigned n = 0;
    size_t len = strlen(s);

    if (len == 0 || len > 3 || strspn(s, "0123456789") != len)
        return -EINVAL;
    for (size_t i = 0; i < len; i++)
        n = n * 10 + (unsigned)(s[i] - '0');
    *ret = n;
    return 0;
}

/* True when the address has no bit set past the first prefix bits. */
static bool host_bits_clear(const unsigned char *addr, unsigned bytes, unsigned prefix)
{
    for (unsigned i = 0; i < bytes; i++) {
        unsigned first = i * 8;
        unsigned char keep;

        if (first + 8 <= prefix)
            continue;
        keep = first >= prefix ? 0 : (unsigned char)(0xff << (8 - (prefix - first)));
        if (addr[i] & (unsigned char)~keep)
            return false;
    }
    return true;
}

int cidr_parse(const char *s, struct cidr *ret)
{
    char text[CIDR_TEXT_MAX];
    struct cidr c = {0};
    char *slash;
    size_t len = strlen(s);

    if (len == 0 || len >= sizeof(text))
        return -EINVAL;
    memcpy(text, s, len + 1);
    slash = strchr(text, '/');
    if (slash)
        *slash = '\0';
    if (inet_pton(AF_INET, text, c.addr) == 1)
        c.family = AF_INET;
    else if (inet_pton(AF_INET6, text, c.addr) == 1)
        c.family = AF_INET6;
    else
        return -EINVAL;
    c.prefix = family_bits(c.family);
    if (slash) {
        if (parse_prefix(slash + 1, &c.prefix) < 0)
            return -EINVAL;
        if (c.prefix > family_bits(c.family))
            return -ERANGE;
        if (!host_bits_clear(c.addr, family_bits(c.family) / 8, c.prefix))
            return -EDOM;
    }
    *ret = c;
    return 0;
}

const char *cidr_format(const struct cidr *c, char *buf, size_t size)
{
    char addr[INET6_ADDRSTRLEN];

    if (!inet_ntop(c->family, c->addr, addr, sizeof(addr)))
        snprintf(addr, sizeof(addr), "?");
    snprintf(buf, size, "%s/%u", addr, c->prefix);
    return buf;
}

bool cidr_contains(const struct cidr *c, int family, const void *addr)
{
    const unsigned char *a = addr;
    unsigned whole = c->prefix / 8, rest = c->prefix % 8;

    if (family != c->family)
        return false;
    if (memcmp(a, c->addr, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((a[whole] ^ c->addr[whole]) & (unsigned char)(0xff << (8 - rest))) == 0;
}

bool cidr_any_contains(const struct cidr *list, size_t n, int family, const void *addr)
{
    for (size_t i = 0; i < n; i++)
        if (cidr_contains(&list[i], family, addr))
            return true;
    return false;
}

void cidr_unmap(struct sockaddr_storage *addr)
{
    struct sockaddr_in6 in6;
    struct sockaddr_in *in4 = (struct sockaddr_in *)addr;

    if (addr->ss_family != AF_INET6)
        return;
    memcpy(&in6, addr, sizeof(in6));
    if (!IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr))
        return;
    memset(addr, 0, sizeof(*addr));
    in4->sin_family = AF_INET;
    in4->sin_port = in6.sin6_port;
    memcpy(&in4->sin_addr, &in6.sin6_addr.s6_addr[12], 4);
}
