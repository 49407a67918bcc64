/* The reverse proxy (SPEC section 7 "Proxy and on demand"), a surface over the core and
 * the gate: /s/NAME/PATH?QUERY is forwarded, as the client sent it, to the running
 * service's port on the loopback; the answer comes back as it arrives (server-sent
 * events unbuffered, long bodies streamed with backpressure). Hop-by-hop headers are
 * dropped both ways (RFC 9110 7.6.1), X-Forwarded-For/-Proto/-Host are set, and with
 * keys the client's Authorization and X-API-Key (the daemon's key) are not passed on.
 *
 * A request for a service that is not running (or that a pending swap no longer lets
 * requests in) is held by the core (core/demand.h) until it runs: one start for all such
 * requests, a swap or a place in the GPU queue when the GPU is taken; it then goes on to
 * the service, or is answered as the start went (a refusal as the API answers it, 503
 * with Retry-After when held too long, 429 when the queue is full). Each forwarded
 * request is counted in flight (demand_begin/demand_end): swaps wait for them, and the
 * manifest's idle_timeout counts from the last one's end.
 *
 * Request bodies stream both ways: /s/ hands the client's body to the service as it comes
 * (PROXY_UPLOAD_BUFFER at most held; the client waits while it is full); /v1/ first reads
 * what it needs to route (a JSON body whole, a form up to its "model" field), then the
 * same. A WebSocket (Upgrade: websocket, a GET under /s/) is passed through as a tunnel
 * (http/tunnel.h), counted in flight while open; other upgrades, and any on /v1/, answer
 * 501. */
#ifndef NANNY_PROXY_H
#define NANNY_PROXY_H

#include "core/demand.h"
#include "core/registry.h"
#include "core/supervisor.h"
#include "http/gate.h"
#include "http/server.h"

#define PROXY_BUFFER        (256 * 1024)       /* answer bytes waiting for a slow client */
#define PROXY_SMALL_ANSWER  (64 * 1024)        /* an answer this long at most is sent once whole */
#define PROXY_HOLD_SLACK_MS 30000              /* a held request's suspend beyond its hold */
#define PROXY_UPLOAD_BUFFER (256 * 1024)       /* body bytes waiting for a slow upstream */
#define PROXY_V1_BODY_MAX   (16 * 1024 * 1024) /* a /v1/ JSON body, read whole to route it */
#define PROXY_V1_FORM_PEEK  (1024 * 1024)      /* a /v1/ form's "model" must come this soon */

struct proxy;

/* sup and demand may be NULL (a daemon that runs no services: 503). All are borrowed. */
struct proxy *proxy_new(uv_loop_t *loop, const struct config *config, struct registry *reg,
                        struct supervisor *sup, struct demand *demand, struct gate *gate);
void proxy_free(struct proxy *p);

/* Ends every WebSocket (the daemon stops): before the server is freed. */
void proxy_close_tunnels(struct proxy *p);

/* The handler of every path under /s/ (api_mount_prefix), after the gate. */
void proxy_handle(void *data, struct request *req);

/* The handler of every path under /v1/: GET /v1/models (and /v1/models/ID) answered from
 * the manifests' models: and model_aliases:, starting nothing; any other request routed
 * by its body's "model" (JSON, or a form's field) to the service that lists it, its path
 * unchanged. POST /v1/models/ID/load starts the service that
 * lists ID (answered once healthy), /unload stops it (an operator's key). Errors in
 * OpenAI's shape: its own, and the server's and the gate's with the mount's error shape
 * set to proxy_openai_shape (api_mount_error_shape). */
void proxy_handle_v1(void *data, struct request *req);

/* SPEC's error {"error": code, "message", ...} in OpenAI's shape, which its clients parse:
 * {"error": {"message", "type", "code", ...}}, type by status (authentication_error,
 * permission_error, rate_limit_error, invalid_request_error, server_error). Takes body. */
json_t *proxy_openai_shape(unsigned status, json_t *body);

#endif
