/* The address a request really comes from: its peer, or, when the peer is a proxy the
 * configuration trusts (trusted_proxies), the client its X-Forwarded-For header names.
 * As nginx's realip module with real_ip_recursive on: the header is read from the right,
 * past every address that is itself a trusted proxy, and the first one that is not is
 * the client. An entry that is not an address stops the walk at the last trusted hop (so
 * a malformed header from the proxy counts as the proxy's own address); so does a chain
 * longer than REALIP_HOPS_MAX. Pure functions, no I/O: the server, the rate limits and
 * the audit log all read the client the same way. */
#ifndef NANNY_REALIP_H
#define NANNY_REALIP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "lib/cidr.h"

#define REALIP_HOPS_MAX  64 /* X-Forwarded-For entries read, at most */
#define REALIP_ENTRY_MAX 64 /* characters of one entry, past which it is not an address */

/* True when the address (a socket address of any family) is one of the trusted ranges. */
bool realip_is_trusted(const struct cidr *trusted, size_t n, const struct sockaddr_storage *addr);

/* The client of a request from peer whose X-Forwarded-For value (all its headers joined
 * with ", ", or NULL when there is none) is forwarded_for, given the n trusted ranges.
 * *ret gets the address with its port zeroed (an IPv4-mapped IPv6 address is IPv4).
 * Returns true when the client came from the header, false when it is the peer. */
bool realip_client(const struct sockaddr_storage *peer, const char *forwarded_for,
                   const struct cidr *trusted, size_t n, struct sockaddr_storage *ret);

/* The address as text, without its port ("203.0.113.7", "2001:db8::1"); "?" for another
 * family. buf should hold REALIP_NAME_MAX bytes. */
#define REALIP_NAME_MAX 46 /* INET6_ADDRSTRLEN */
const char *realip_name(const struct sockaddr_storage *addr, char *buf, size_t size);

#endif
