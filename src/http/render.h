/* What every surface shows of the core, as JSON: a service's status, the list of every
 * service, the diff of a rediscovery. One renderer, so the REST API and the MCP tools
 * answer the same documents. */
#ifndef NANNY_RENDER_H
#define NANNY_RENDER_H

#include <jansson.h>

#include "core/registry.h"
#include "core/supervisor.h"

/* The JSON status of one service, as GET /services/NAME/status shows it. New reference. */
json_t *render_status(const struct service *svc, const struct service_status *status);

/* Every service's status, in registry order (sup may be NULL: every service stopped).
 * New reference. */
json_t *render_services(struct registry *reg, const struct supervisor *sup);

/* What POST /rediscover answers for a rescan's diff ({"added","removed","changed"}):
 * {"services","added","removed","changed","errors"}. New reference. */
json_t *render_rediscovered(struct registry *reg, const struct supervisor *sup, json_t *diff);

/* What a start, restart or stop came to (supervisor_done_fn's res), as an HTTP status and
 * its body in *ret (new reference): the status with "preempted", or an error
 * ({"error","message"}, with "holder" and "holders" for a GPU conflict). */
unsigned render_outcome(const struct service *svc, const struct supervisor_result *res,
                        json_t **ret);

/* {"error":"invalid_manifest","message","manifest_error"} for a service whose manifest is
 * broken; err is its manifest error ({"message",...}). New reference. */
json_t *render_invalid_manifest(json_t *err);

#endif
