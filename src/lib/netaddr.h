/* Addresses to listen on. */
#ifndef NANNY_NETADDR_H
#define NANNY_NETADDR_H

#include <stdbool.h>
#include <sys/socket.h>

/* Parses "HOST:PORT" ("127.0.0.1:8080", "[::1]:8080", "localhost:8080") into a socket
 * address. Port 0 means any free port. Returns -EINVAL on a malformed address. */
int netaddr_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);

/* True when the address is a loopback address (127.0.0.0/8 or ::1). */
bool netaddr_is_loopback(const struct sockaddr_storage *addr);

#endif
