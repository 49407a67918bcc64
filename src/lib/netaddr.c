/* Addresses to listen on: "HOST:PORT" and "[V6]:PORT" parsed, loopback told. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "lib/netaddr.h"

int netaddr_parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len)
{
    struct sockaddr_storage addr = {0};
    const char *colon = strrchr(s, ':');
    char host[INET6_ADDRSTRLEN + 2];
    char *end;
    size_t host_len;
    long port;

    if (!colon || colon[1] == '\0')
        return -EINVAL;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || port < 0 || port > 65535 || !(colon[1] >= '0' && colon[1] <= '9'))
        return -EINVAL;
    host_len = (size_t)(colon - s);
    if (host_len == 0 || host_len >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, host_len);
    host[host_len] = '\0';

    if (host[0] == '[') {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        if (host_len < 3 || host[host_len - 1] != ']')
            return -EINVAL;
        host[host_len - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1)
            return -EINVAL;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *ret_len = sizeof(*in6);
    } else {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&addr;
        if (strcmp(host, "localhost") == 0)
            strcpy(host, "127.0.0.1");
        if (inet_pton(AF_INET, host, &in4->sin_addr) != 1)
            return -EINVAL;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *ret_len = sizeof(*in4);
    }
    *ret = addr;
    return 0;
}

bool netaddr_is_loopback(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)addr;
        return (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
    }
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

/* Creates the listening socket ourselves, so that port 0 works and errors are ours. */
