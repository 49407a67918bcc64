/* The real client of a request behind trusted proxies (see realip.h). The header is a
 * comma-separated list (RFC 9110 section 5.6.1: empty elements are ignored); each entry
 * is read by inet_pton(), after the brackets and port that some proxies add
 * ("[2001:db8::1]:443", "203.0.113.7:51234") are split off, as nginx does. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "http/realip.h"

/* The IP address of a socket address: the in_addr or in6_addr inside it. */
static const void *address_bytes(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_INET6)
        return &((const struct sockaddr_in6 *)addr)->sin6_addr;
    return &((const struct sockaddr_in *)addr)->sin_addr;
}

/* A copy of addr with its port zeroed and an IPv4-mapped address made IPv4. */
static void address_key(const struct sockaddr_storage *addr, struct sockaddr_storage *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->ss_family = addr->ss_family;
    if (addr->ss_family == AF_INET)
        ((struct sockaddr_in *)ret)->sin_addr = ((const struct sockaddr_in *)addr)->sin_addr;
    else if (addr->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ret)->sin6_addr = ((const struct sockaddr_in6 *)addr)->sin6_addr;
    cidr_unmap(ret);
}

bool realip_is_trusted(const struct cidr *trusted, size_t n, const struct sockaddr_storage *addr)
{
    struct sockaddr_storage key;

    if (n == 0 || (addr->ss_family != AF_INET && addr->ss_family != AF_INET6))
        return false;
    address_key(addr, &key);
    return cidr_any_contains(trusted, n, key.ss_family, address_bytes(&key));
}

/* True for a port: 1 to 5 decimal digits. */
static bool is_port(const char *s)
{
    size_t len = strlen(s);

    return len >= 1 && len <= 5 && strspn(s, "0123456789") == len;
}

/* Reads one entry (len bytes, trimmed): "ADDRESS", "V4:PORT", "[V6]" or "[V6]:PORT". */
static bool parse_entry(const char *s, size_t len, struct sockaddr_storage *ret)
{
    char text[REALIP_ENTRY_MAX + 1];
    struct sockaddr_storage addr = {0};
    struct in_addr *in4 = &((struct sockaddr_in *)&addr)->sin_addr;
    struct in6_addr *in6 = &((struct sockaddr_in6 *)&addr)->sin6_addr;
    char *host = text, *colon;

    if (len == 0 || len > REALIP_ENTRY_MAX || memchr(s, '\0', len))
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    if (text[0] == '[') {
        char *close = strchr(text, ']');
        if (!close || (close[1] != '\0' && (close[1] != ':' || !is_port(close + 2))))
            return false;
        *close = '\0';
        host = text + 1;
        if (inet_pton(AF_INET6, host, in6) != 1)
            return false;
        addr.ss_family = AF_INET6;
    } else if (inet_pton(AF_INET, text, in4) == 1) {
        addr.ss_family = AF_INET;
    } else if (inet_pton(AF_INET6, text, in6) == 1) {
        addr.ss_family = AF_INET6;
    } else {
        /* "V4:PORT": one colon, an IPv4 address before it. */
        colon = strchr(text, ':');
        if (!colon || strchr(colon + 1, ':') || !is_port(colon + 1))
            return false;
        *colon = '\0';
        if (inet_pton(AF_INET, text, in4) != 1)
            return false;
        addr.ss_family = AF_INET;
    }
    address_key(&addr, ret);
    return true;
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

bool realip_client(const struct sockaddr_storage *peer, const char *forwarded_for,
                   const struct cidr *trusted, size_t n, struct sockaddr_storage *ret)
{
    struct sockaddr_storage current;
    size_t end;
    bool from_header = false;

    address_key(peer, &current);
    if (!forwarded_for || !realip_is_trusted(trusted, n, &current)) {
        *ret = current;
        return false;
    }
    end = strlen(forwarded_for);
    for (unsigned hops = 0; hops < REALIP_HOPS_MAX && end > 0;) {
        size_t start = end, first, last;
        struct sockaddr_storage next;

        while (start > 0 && forwarded_for[start - 1] != ',')
            start--;
        first = start;
        last = end;
        while (first < last && is_space(forwarded_for[first]))
            first++;
        while (last > first && is_space(forwarded_for[last - 1]))
            last--;
        end = start > 0 ? start - 1 : 0;
        if (first == last)
            continue; /* an empty element */
        hops++;
        if (!parse_entry(forwarded_for + first, last - first, &next))
            break;
        current = next;
        from_header = true;
        if (!realip_is_trusted(trusted, n, &current))
            break;
    }
    *ret = current;
    return from_header;
}

const char *realip_name(const struct sockaddr_storage *addr, char *buf, size_t size)
{
    if ((addr->ss_family != AF_INET && addr->ss_family != AF_INET6) ||
        !inet_ntop(addr->ss_family, address_bytes(addr), buf, (socklen_t)size))
        snprintf(buf, size, "?");
    return buf;
}
