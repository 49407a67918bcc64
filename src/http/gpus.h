/* GET /gpus (SPEC section 7 "GPUs"): every GPU of the box with its memory (total, used,
 * free), utilisation when known, the services placed on it and the processes on it that
 * no service owns (foreign), each placed service's proxied requests in flight, and the
 * starts waiting for room (the queue: starts on demand in the order they are served, then
 * forced starts waiting for the holders they stop). */
#ifndef NANNY_GPUS_H
#define NANNY_GPUS_H

#include "core/demand.h"
#include "core/inventory.h"
#include "core/supervisor.h"
#include "http/server.h"

struct gpus_surface {
    struct supervisor *sup; /* borrowed: where services are placed */
    struct inventory *inv;  /* borrowed: what the box has and who uses it */
    struct demand *demand;  /* borrowed: starts on demand waiting, requests in flight */
    struct registry *reg;   /* borrowed: the services */
};

/* The handler of GET /gpus (data: a struct gpus_surface), behind the gate (api_mount). */
void gpus_handle(void *data, struct request *req);

/* The page, for the handler and the tests. New reference. */
json_t *gpus_render(const struct gpus_surface *s);

#endif
