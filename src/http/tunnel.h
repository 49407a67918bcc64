/* A protocol upgrade (a WebSocket) passed through to a service: the request head goes to
 * the service over a TCP connection of the loop; the service's answer head is read with
 * http-parser; a 101 is answered to the client (request_reply_upgrade), and from then on
 * the bytes go both ways as they come, each side read only while the other has taken what
 * it was sent (64 KiB at most held each way), until either side closes. Any other answer,
 * or none, is told to the caller, which answers the client. */
#ifndef NANNY_TUNNEL_H
#define NANNY_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "http/server.h"
#include "lib/upstream.h"

#define TUNNEL_BUFFER (64 * 1024) /* bytes read from one side before the other took them */

struct tunnel;

struct tunnel_events {
    /* No upgrade (called at most once, before any upgraded): status is the service's
     * answer, with failure UPSTREAM_OK; or 0, with failure saying why there is no usable
     * answer, as for a proxied call: it could not be reached (UPSTREAM_REFUSED), did not
     * answer in time (UPSTREAM_TIMED_OUT), or answered with no HTTP, closed before its
     * head, or sent a 101 too large to pass (UPSTREAM_BROKEN). message says what happened.
     * The caller answers the request. */
    void (*refused)(void *data, unsigned status, enum upstream_failure failure,
                    const char *message);
    /* The service said 101: so is the client told now (the request is answered). */
    void (*answered)(void *data);
    /* The tunnel is over (after refused, or once either side closed): called once, last.
     * The tunnel is freed after it returns. */
    void (*closed)(void *data);
};

/* Opens a tunnel for req (suspended) to ip:port (an IPv4 or IPv6 address), sending head
 * (the request line and headers, ending with an empty line). Returns 0, or a negative
 * errno when it cannot even begin (then no callback comes). */
int tunnel_open(uv_loop_t *loop, struct request *req, const char *ip, unsigned port,
                const char *head, size_t head_len, uint64_t connect_timeout_ms,
                uint64_t head_timeout_ms, const struct tunnel_events *ev, void *data,
                struct tunnel **ret);

/* Ends t now (the client went before the answer, the daemon stops): no callback comes
 * any more; the tunnel lets go of its connections by itself. */
void tunnel_close(struct tunnel *t);

#endif
