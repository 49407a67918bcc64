/* Address ranges: "10.0.0.0/8", "fd00::/8", or one address ("127.0.0.1", "::1"), as a
 * configuration names the proxies it trusts. Addresses are read by inet_pton(). */
#ifndef NANNY_CIDR_H
#define NANNY_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define CIDR_TEXT_MAX 64 /* longer text is not a range */

/* One range: the first prefix bits of addr (4 bytes for AF_INET, 16 for AF_INET6). */
struct cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned prefix;
    unsigned char addr[16];
};

/* Parses "ADDRESS" or "ADDRESS/PREFIX" (IPv4 or IPv6, no brackets). Returns -EINVAL when
 * the text is not one, -ERANGE when the prefix is past the address's length, -EDOM when
 * the address has bits set past the prefix ("10.0.0.1/8": a typo, or a range meant as
 * 10.0.0.0/8). *ret is written only on success. */
int cidr_parse(const char *s, struct cidr *ret);

/* Writes the range as text ("10.0.0.0/8", "::1/128") into buf. */
const char *cidr_format(const struct cidr *c, char *buf, size_t size);

/* True when the address (a struct in_addr or in6_addr of the family) is in the range. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is not in an IPv4 range: callers turn it to
 * IPv4 first (see cidr_unmap). */
bool cidr_contains(const struct cidr *c, int family, const void *addr);

/* True when the address is in one of the n ranges. */
bool cidr_any_contains(const struct cidr *list, size_t n, int family, const void *addr);

/* Turns an IPv4-mapped IPv6 socket address (::ffff:a.b.c.d) into the IPv4 one, in place;
 * others are left as they are. */
void cidr_unmap(struct sockaddr_storage *addr);

#endif
