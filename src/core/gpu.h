/* The GPU rule as a pure function (SPEC sections 3 and 7 "GPUs"): given the box, the
 * services and a start request: go (on these devices), conflict with the holders whose
 * stop makes room, preempt them then go, or impossible on this box. Where each service
 * goes is placement_decide()'s answer; this adds the states, reservations and force. On a
 * box of one GPU of unknown size with gpu_required services only, it is the seed's one-of
 * rule. No I/O. */
#ifndef NANNY_GPU_H
#define NANNY_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/lifecycle.h"
#include "core/placement.h"

/* What the arbiter needs to know of one service. */
struct gpu_candidate {
    const char *name;
    bool gpu_required; /* it needs a GPU, or what runs or lingers of it holds one */
    enum service_state state;
    bool reserved;              /* waits for preempted holders to go: holds devices already */
    struct placement_need need; /* what it needs (count 0 is taken as one whole GPU) */
    uint64_t devices;           /* where a holder holds (0: GPU 0, the seed's one GPU) */
    int priority;               /* the lowest is stopped first... */
    uint64_t last_used;         /* ...then the least recently used */
};

/* The box: its GPUs (n at least 1). */
struct gpu_box {
    const struct placement_gpu *gpus;
    size_t n;
};

enum gpu_verdict_kind {
    GPU_GO,         /* start it (on devices, for a GPU service) */
    GPU_ALREADY,    /* it is starting, running or unhealthy: a 200 no-op */
    GPU_CONFLICT,   /* holders[] keep it out: 409 naming them */
    GPU_PREEMPT,    /* stop (or wait for) holders[], then start it on devices */
    GPU_IMPOSSIBLE, /* no GPU of the box can ever take it: 422 */
};

struct gpu_verdict {
    enum gpu_verdict_kind kind;
    uint64_t devices; /* GO and PREEMPT of a GPU service: where it goes */
    size_t holder;    /* CONFLICT and PREEMPT: holders[0], named by the seed's 409 */
    size_t *holders;  /* CONFLICT and PREEMPT: candidate indexes in stop order (malloc'd) */
    size_t n_holders;
};

/* Frees what a verdict holds (harmless on a verdict without holders). */
void gpu_verdict_done(struct gpu_verdict *v);

/* True when c holds GPUs: a gpu_required service in a holding state (lifecycle_holds_gpu),
 * or a reservation. The one holder test: every caller uses it. */
bool gpu_is_holder(const struct gpu_candidate *c);

/* The devices c holds: its devices, GPU 0 when it says none. */
uint64_t gpu_devices_of(const struct gpu_candidate *c);

/* Reads a list of GPU indexes as CUDA_VISIBLE_DEVICES gives them, "0,2", into a bit set:
 * 0; -ENOENT for an empty list; -EINVAL for anything else (a UUID, an index past 63, a
 * repeated one, blanks). */
int gpu_devices_parse(const char *text, uint64_t *ret);

/* The bit set as that list, "0,2" ("" for none), cut to size. */
void gpu_devices_format(uint64_t set, char *buf, size_t size);

/* The index of the holder whose name sorts first (strcmp; a NULL name as ""; on a tie the
 * lower index), leaving out services[except] (pass n to leave out none); n when there is
 * no holder. */
size_t gpu_holder(const struct gpu_candidate *services, size_t n, size_t except);

/* Decides a start of services[target] among n services on box. force comes from the
 * request's {"force":true}, preempt_always from the config's gpu_conflict: preempt.
 * Returns -EINVAL for a target out of range or an empty box; *ret is written only on
 * success, and gpu_verdict_done() frees it.
 *
 * In order: a reserved target, or one starting, running or unhealthy (GPU or not), is
 * GPU_ALREADY. A target that is not gpu_required is GPU_GO. Else the holders but the
 * target (gpu_is_holder: those stopping and the reserved ones included, on the devices
 * they hold) and the target's need go to placement_decide(): placed is GPU_GO on its
 * devices; impossible is GPU_IMPOSSIBLE (force or not: nothing is stopped); a conflict
 * is GPU_CONFLICT with placement's set in its stop order (lowest priority, then least
 * recently used, then index), or with force or preempt_always GPU_PREEMPT with that set
 * and the devices the target takes once they are gone. A target that is itself stopping
 * is not "already": it is decided like a stopped one, and on GPU_GO the lifecycle queues
 * its start after the stop (start_after_stop), so the GPU stays held. */
int gpu_decide(const struct gpu_box *box, const struct gpu_candidate *services, size_t n,
               size_t target, bool force, bool preempt_always, struct gpu_verdict *ret);

#endif
