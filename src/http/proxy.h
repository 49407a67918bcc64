/* The reverse proxy (SPEC section 7 "Proxy and on demand"), a surface over the core and
 * the gate: /s/NAME/PATH?QUERY is forwarded, as the client sent it, to the running
 * service's port on the loopback; the answer comes back as it arrives (server-sent
 * events unbuffered, long bodies streamed with backpressure). Hop-by-hop headers are
 * dropped both ways (RFC 9110 7.6.1), X-Forwarded-For/-Proto/-Host are set, and with
 * keys the client's Authorization and X-API-Key (the daemon's key) are not passed on.
 *
 * A service that is not running is started by the first request (manifest on_demand:
 * start, the default; reject answers 503): every request for it waits for that one
 * start, each at most the service's start_period (then 503 with Retry-After), and goes
 * on to the service once it is healthy; a start refused (a GPU conflict...) is answered
 * as the API answers it.
 *
 * Each service's requests in flight are counted; when the last one ends, its manifest's
 * idle_timeout (if any) starts, and stops it unless another request comes first (the
 * time shows in its status as idle_stop_at).
 *
 * Not yet (issue 14's next steps): a request body is read whole first (the server's
 * 64 KiB cap), protocol upgrades (WebSocket) answer 501, and there is no GPU queue (a
 * conflict is answered 409) nor swap that waits for the holder's requests in flight. */
#ifndef NANNY_PROXY_H
#define NANNY_PROXY_H

#include "core/registry.h"
#include "core/supervisor.h"
#include "http/gate.h"
#include "http/server.h"
#include "lib/fetch.h"

#define PROXY_BUFFER             (256 * 1024)     /* answer bytes waiting for a slow client */
#define PROXY_CONNECT_TIMEOUT_MS 5000             /* to connect to the service's port */
#define PROXY_HEAD_TIMEOUT_MS    (10 * 60 * 1000) /* to its answer's head (then 504) */
#define PROXY_COLD_SLACK_MS      30000            /* a waiter's suspend beyond its start_period */

struct proxy;

/* sup may be NULL (a daemon that runs no services: 503). All are borrowed. */
struct proxy *proxy_new(uv_loop_t *loop, struct registry *reg, struct supervisor *sup,
                        struct fetcher *fetcher, struct gate *gate);
void proxy_free(struct proxy *p);

/* Proxied requests to service name in flight now (sent on, and not yet answered whole). */
unsigned proxy_in_flight(const struct proxy *p, const char *name);

/* The handler of every path under /s/ (api_mount_prefix), after the gate. */
void proxy_handle(void *data, struct request *req);

/* The handler of every path under /v1/: GET /v1/models (and /v1/models/ID) answered from
 * the manifests' models: and model_aliases:, starting nothing; any other request routed
 * by its JSON body's "model" to the service that lists it, its path unchanged (a body
 * read whole: the server's 64 KiB cap). POST /v1/models/ID/load starts the service that
 * lists ID (answered once healthy), /unload stops it (an operator's key). Errors in
 * OpenAI's shape. */
void proxy_handle_v1(void *data, struct request *req);

#endif
