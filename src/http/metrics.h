/* GET /metrics (SPEC section 7): the services, the GPU, the HTTP requests and the
 * daemon's own process in Prometheus' text format, or in OpenMetrics when the client's
 * Accept lists application/openmetrics-text. Every service has every one of its series
 * from the start; requests are counted by their route's pattern, never by the raw path,
 * so the number of series stays bounded. */
#ifndef NANNY_METRICS_H
#define NANNY_METRICS_H

#include <uv.h>

#include "core/events.h"
#include "core/registry.h"
#include "core/supervisor.h"
#include "http/server.h"

struct metrics;

/* Reads the services of reg and sup, and learns start durations from hub (all borrowed;
 * they outlive the metrics). */
struct metrics *metrics_new(uv_loop_t *loop, struct registry *reg, struct supervisor *sup,
                            struct events *hub);

/* Frees the metrics (NULL is fine), with the loop still running (it closes a handle):
 * after the server, whose end aborted the scrapes and counted the last requests. */
void metrics_free(struct metrics *m);

/* The handler of GET /metrics (data: the struct metrics), behind the gate (api_mount).
 * Pages take turns: at most SCRAPES_MAX rendered or waiting, more are answered 503 with
 * Retry-After. */
void metrics_handle(void *data, struct request *req);

/* Counts a request that ended with status (0: the client went first), by its route
 * (request_route(); "other" when no route took it) and duration: called from the
 * server's done function. */
void metrics_request_done(struct metrics *m, struct request *req, unsigned status);

#endif
