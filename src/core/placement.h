/* Where a GPU service goes on a box of several GPUs (issue 15, SPEC section 7 "GPUs"), as
 * a pure function from (the box, the services placed, a request) to a verdict: placed on
 * these devices; a conflict with the holders whose stop makes room; or impossible on this
 * box. No I/O, no clock: the caller gives what it knows.
 *
 * Not wired into the supervisor yet: today's one-of rule (core/gpu.c) still decides. A box
 * of one GPU of unknown size with gpu_required services only (exclusive, one GPU each)
 * gives the same answers as that rule. */
#ifndef NANNY_PLACEMENT_H
#define NANNY_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLACEMENT_GPUS_MAX 64 /* devices are a bit set */

/* One GPU of the box. */
struct placement_gpu {
    uint64_t memory;  /* bytes in all; 0: unknown (every shared request fits) */
    uint64_t foreign; /* bytes that processes no service owns are using */
};

/* What a service asks for. */
struct placement_need {
    unsigned count;  /* how many GPUs (at least 1) */
    uint64_t memory; /* bytes on each; 0: whole GPUs, exclusive (gpu_required) */
    uint64_t pinned; /* the devices it may use (bit i: GPU i); 0: any */
};

/* A service that holds GPUs now. */
struct placement_holder {
    struct placement_need need;
    uint64_t devices;   /* where it is: need.count bits */
    int priority;       /* the manifest's: the lowest is stopped first */
    uint64_t last_used; /* when it last served (any unit, larger is later): the least
                         * recently used is stopped first among equals */
};

enum placement_kind {
    PLACEMENT_PLACED,     /* devices holds where */
    PLACEMENT_CONFLICT,   /* holders[] lists whose stop makes room */
    PLACEMENT_IMPOSSIBLE, /* not even on an empty box (foreign use counted) */
};

struct placement_verdict {
    enum placement_kind kind;
    uint64_t devices; /* PLACED: need.count bits */
    size_t *holders;  /* CONFLICT: indexes into the holders given, in stop order;
                       * malloc'd, the caller frees it */
    size_t n_holders;
};

/* Decides where need goes on the n_gpus GPUs of gpus, with the n holders placed as given
 * (their devices within the box; a holder on a device outside it is ignored). Placed: the
 * GPUs that fit whose free memory after it would be least (best fit), the lowest indexes
 * on a tie. Conflict: holders on the GPUs need may use are taken, lowest priority first,
 * then least recently used, then lowest index, until need fits; then any taken holder
 * whose stop turns out not to be needed is given back, latest taken first, so that
 * holders[] is a set none of which could stay. Returns -EINVAL for a need of no GPU, or
 * more GPUs than PLACEMENT_GPUS_MAX. */
int placement_decide(const struct placement_gpu *gpus, size_t n_gpus,
                     const struct placement_holder *holders, size_t n,
                     const struct placement_need *need, struct placement_verdict *ret);

#endif
