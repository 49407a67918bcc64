/* Starts on demand, the GPU queue and swaps (SPEC section 7 "Proxy and on demand"): what a
 * surface that forwards requests to services (the proxy) asks of the core.
 *
 * It counts each service's requests in flight; when the last one ends, the manifest's
 * idle_timeout (if any) starts and stops the service unless another request comes first.
 *
 * It holds requests for a service that does not run: one start serves them all. When the
 * GPU it needs is taken, the start either swaps or queues. It swaps when the config says
 * gpu_conflict: preempt or its manifest priority is above every holder's (and each holder
 * has run its min_resident): each holder is stopped once its requests in flight have
 * ended, or once swap_grace went by (those requests are then cut, and the log says so);
 * meanwhile new requests for a holder are still let in, until swap_max_wait went by (or
 * at once with swap_drain), after which they are held like requests for a stopped
 * service. Else it waits in the GPU queue, served by priority, then first come, whenever
 * the GPU frees (a start that fits now goes past an earlier one that does not). The queue
 * holds at most gpu_queue_max requests (more: DEMAND_FULL, 429); a request whose client goes
 * leaves it, and a start nobody waits for any more leaves it too. A held request is
 * answered DEMAND_TIMED_OUT after its service's start_period, plus the swap_grace while it
 * waits for the GPU. Everything happens on the loop. */
#ifndef NANNY_DEMAND_H
#define NANNY_DEMAND_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

#include "core/config.h"
#include "core/events.h"
#include "core/registry.h"
#include "core/supervisor.h"

struct demand;
struct demand_hold; /* a request held until its service runs */

enum demand_outcome {
    DEMAND_READY,     /* it runs: send the request on */
    DEMAND_REFUSED,   /* its start failed or was refused: res says how */
    DEMAND_TIMED_OUT, /* held as long as it may be: answer 503 with Retry-After */
    DEMAND_FULL,      /* the GPU queue is full: answer 429 */
    DEMAND_GONE,      /* the service was removed, or the daemon stops */
};

struct demand_answer {
    enum demand_outcome outcome;
    const struct supervisor_result *res; /* DEMAND_REFUSED */
    const char *message;                 /* a sentence (every outcome but READY) */
};

/* Called once per hold, on the loop, never from inside demand_hold(); svc is NULL for
 * DEMAND_GONE. */
typedef void (*demand_fn)(void *data, struct service *svc, const struct demand_answer *a);

struct demand *demand_new(uv_loop_t *loop, struct registry *reg, struct supervisor *sup,
                          const struct config *config, struct events *hub);

/* Answers nothing: the holds must have been cancelled (the server ends every request
 * before). */
void demand_free(struct demand *d);

/* True when a new request may go to svc now: it runs, and no swap that stops it holds new
 * requests back. */
bool demand_admits(struct demand *d, const struct service *svc);

/* Holds a request for svc until it runs (starting it: its manifest must allow it), then
 * calls done once. Returns the hold, for demand_hold_cancel() until done is called. */
struct demand_hold *demand_hold(struct demand *d, struct service *svc, demand_fn done, void *data);

/* The request went away: done will not be called; it leaves the queue. */
void demand_hold_cancel(struct demand_hold *h);

/* Requests held now for name's start. */
unsigned demand_held(const struct demand *d, const char *name);

/* The longest a request for svc may be held (its start_period plus the longest swap_grace
 * it may wait for): the server's own deadline for it goes beyond. */
uint64_t demand_hold_max_ms(const struct demand *d, const struct service *svc);

/* A request sent to the service name begins, and ends. */
void demand_begin(struct demand *d, const char *name);
void demand_end(struct demand *d, const char *name);
unsigned demand_in_flight(const struct demand *d, const char *name);

/* The starts that wait for the GPU, in the order they are served: [{"service",
 * "priority", "since" (time), "age_ms", "requests" (held), "swap" (true: waits for its
 * holders' requests in flight to end; false: in the queue), "holders" [names]}]. New
 * reference. */
json_t *demand_queue(const struct demand *d);

#endif
