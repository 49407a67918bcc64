/* The GPU one-of rule as a pure function (SPEC section 3): given the services and a start
 * request, go, conflict with the holder, or preempt the holders then go. No I/O. */
#ifndef NANNY_GPU_H
#define NANNY_GPU_H

#include <stdbool.h>
#include <stddef.h>

#include "core/lifecycle.h"

/* What the arbiter needs to know of one service. */
struct gpu_candidate {
    const char *name;
    bool gpu_required;
    enum service_state state;
    bool reserved; /* waits for preempted holders to go: it holds the GPU already */
};

enum gpu_verdict_kind {
    GPU_GO,       /* start it */
    GPU_ALREADY,  /* it is starting, running or unhealthy: a 200 no-op */
    GPU_CONFLICT, /* another holds the GPU: 409 naming holder */
    GPU_PREEMPT,  /* stop (or wait for) the holders listed, then start it */
};

#define GPU_PREEMPT_MAX 8

struct gpu_verdict {
    enum gpu_verdict_kind kind;
    size_t holder;                   /* GPU_CONFLICT: index of the holder named in the 409 */
    size_t preempt[GPU_PREEMPT_MAX]; /* GPU_PREEMPT: indexes of every holder to see gone */
    size_t n_preempt;
};

/* True when c keeps the GPU from anyone else: a gpu_required service in a holding state
 * (lifecycle_holds_gpu), or a reservation. The one holder test: every caller uses it. */
bool gpu_is_holder(const struct gpu_candidate *c);

/* The index of the holder whose name sorts first (strcmp; a NULL name as ""; on a tie the
 * lower index), leaving out services[except] (pass n to leave out none); n when there is
 * no holder. */
size_t gpu_holder(const struct gpu_candidate *services, size_t n, size_t except);

/* Decides a start of services[target] among n services. force comes from the request's
 * {"force":true}, preempt_always from the config's gpu_conflict: preempt. A holder is a
 * gpu_required service in a holding state (lifecycle_holds_gpu) or reserved; when there
 * are several (a preemption under way) the conflict names the first by name. Returns
 * -EINVAL for a target out of range. *ret is written only on success.
 *
 * In order: a reserved target, or one starting, running or unhealthy (GPU or not), is
 * GPU_ALREADY. A target that is not gpu_required is GPU_GO. The target never counts as its
 * own holder; a reserved service counts as a holder whatever its gpu_required and state.
 * No holder: GPU_GO (force or not). Holders without force or preempt_always: GPU_CONFLICT
 * naming the holder whose name sorts first (strcmp; a NULL name sorts as ""; on a tie the
 * lower index). Holders with force or preempt_always: GPU_PREEMPT listing every holder in
 * index order, those already stopping and the reserved ones included (the caller stops
 * those not yet stopping, drops the reservations and waits for all to be gone), with
 * holder set as for a conflict, for messages; more than GPU_PREEMPT_MAX holders is a
 * broken invariant and returns -E2BIG. A target that is itself stopping is not "already":
 * it is decided like a stopped one, and on GPU_GO the lifecycle queues its start after the
 * stop (start_after_stop), so the GPU stays held. */
int gpu_decide(const struct gpu_candidate *services, size_t n, size_t target, bool force,
               bool preempt_always, struct gpu_verdict *ret);

#endif
