/* The HTTP API of SPEC section 3: routes requests to the core and renders its answers as
 * JSON. Holds no state of its own beyond caches of what it rendered. */
#ifndef NANNY_API_H
#define NANNY_API_H

#include <stdbool.h>

#include "core/audit.h"
#include "core/events.h"
#include "core/registry.h"
#include "core/supervisor.h"
#include "http/server.h"

struct api;

/* Every request passes gate (borrowed) before its endpoint; hub (may be NULL) tells which
 * services went, so that what was rendered of them goes too. */
struct gate;
struct api *api_new(struct registry *reg, struct gate *gate, struct events *hub);

/* The supervisor that runs services (without one, lifecycle endpoints answer 503). */
struct supervisor;
void api_set_supervisor(struct api *api, struct supervisor *supervisor);

/* The audit log GET /audit reads (borrowed; NULL: it answers 503). */
void api_set_audit(struct api *api, struct audit *audit);

void api_free(struct api *api);

/* Serves a route of another surface (its own file over the core and the gate): a request
 * for exactly path passes the gate with route, then a method other than method (several
 * separated by ", ": "POST, DELETE"; HEAD where GET is one) is answered 405 and the rest
 * go to fn(data, req). path, method and the strings of route are borrowed for the api's
 * life. */
struct gate_route;
void api_mount(struct api *api, const char *path, const char *method, server_handler_fn fn,
               void *data, const struct gate_route *route);

/* api_mount() for every path under prefix ("/s/"), any method: the handler reads the
 * rest of the path itself. */
void api_mount_prefix(struct api *api, const char *prefix, server_handler_fn fn, void *data,
                      const struct gate_route *route);

/* Requests under prefix (a mounted one) have their bodies handed to the handler as they
 * come, the handler called at their head (server_set_body_streaming): the proxy's. */
void api_mount_streams_body(struct api *api, const char *prefix);

/* Requests under prefix (a mounted one) have their errors in shape from the start, the
 * gate's refusals included (request_set_error_shape): OpenAI's on /v1/. */
void api_mount_error_shape(struct api *api, const char *prefix,
                           json_t *(*shape)(unsigned status, json_t *body));

/* For server_set_body_streaming(): true when req goes to a mount marked so. */
bool api_streams_body(void *data, struct request *req);

/* The server's request handler; data is the struct api. */
void api_handle(void *data, struct request *req);

/* Splits a request path into its route: returns the route's index in the route table and
 * fills *ret_name with the service name segment (pointing into path, length in
 * *ret_name_len), or -ENOENT. Exposed for the unit tests. */
int api_route_match(const char *path, const char **ret_name, size_t *ret_name_len);

#endif
