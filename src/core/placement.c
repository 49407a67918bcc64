/* Placement of GPU services on a box of several GPUs: see placement.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/placement.h"
#include "lib/alloc.h"

/* What the holders still there use of one GPU. */
struct gpu_use {
    uint64_t shared;    /* bytes the shared holders declared */
    unsigned exclusive; /* whole-GPU holders on it */
    unsigned on;        /* holders on it */
};

/* The box's devices as a bit set. */
static uint64_t box_mask(size_t n_gpus)
{
    return n_gpus >= 64 ? UINT64_MAX : (UINT64_C(1) << n_gpus) - 1;
}

/* Counts holder h in (sign 1) or out (sign -1) of what the GPUs hold. */
static void count_holder(struct gpu_use *use, size_t n_gpus, const struct placement_holder *h,
                         int sign)
{
    uint64_t devices = h->devices & box_mask(n_gpus);

    for (size_t d = 0; devices; d++, devices >>= 1) {
        if (!(devices & 1))
            continue;
        use[d].on += (unsigned)sign;
        if (h->need.memory == 0)
            use[d].exclusive += (unsigned)sign;
        else if (sign > 0)
            use[d].shared += h->need.memory;
        else
            use[d].shared -= h->need.memory;
    }
}

/* What every holder uses of each GPU. */
static void tally(struct gpu_use *use, size_t n_gpus, const struct placement_holder *holders,
                  size_t n)
{
    memset(use, 0, n_gpus * sizeof(*use));
    for (size_t i = 0; i < n; i++)
        count_holder(use, n_gpus, &holders[i], 1);
}

/* True when need fits on GPU g as used; *ret_left is what would be free after it
 * (UINT64_MAX when the GPU's size is unknown). */
static bool fits(const struct placement_gpu *g, const struct gpu_use *u,
                 const struct placement_need *need, uint64_t *ret_left)
{
    uint64_t used = g->foreign + u->shared;

    if (u->exclusive > 0 || (need->memory == 0 && u->on > 0))
        return false;
    if (g->memory == 0) {
        *ret_left = UINT64_MAX;
        return true;
    }
    if (used > g->memory || g->memory - used < need->memory)
        return false;
    *ret_left = g->memory - used - need->memory;
    return true;
}

/* The need->count GPUs, among those need may use, that fit and would have the least left
 * (the lowest index on a tie); 0 when fewer fit. */
static uint64_t choose(const struct placement_gpu *gpus, size_t n_gpus, const struct gpu_use *use,
                       const struct placement_need *need)
{
    uint64_t allowed = need->pinned ? need->pinned & box_mask(n_gpus) : box_mask(n_gpus);
    uint64_t left[PLACEMENT_GPUS_MAX], chosen = 0, fit = 0;

    for (size_t d = 0; d < n_gpus; d++)
        if ((allowed >> d & 1) && fits(&gpus[d], &use[d], need, &left[d]))
            fit |= UINT64_C(1) << d;
    if ((unsigned)__builtin_popcountll(fit) < need->count)
        return 0;
    for (unsigned k = 0; k < need->count; k++) {
        size_t best = n_gpus;
        for (size_t d = 0; d < n_gpus; d++)
            if ((fit >> d & 1) && !(chosen >> d & 1) && (best == n_gpus || left[d] < left[best]))
                best = d;
        chosen |= UINT64_C(1) << best;
    }
    return chosen;
}

/* True when holder a is stopped for room before holder b: the lower priority, then the
 * least recently used, then the lower index. */
static bool stops_before(const struct placement_holder *holders, size_t a, size_t b)
{
    if (holders[a].priority != holders[b].priority)
        return holders[a].priority < holders[b].priority;
    if (holders[a].last_used != holders[b].last_used)
        return holders[a].last_used < holders[b].last_used;
    return a < b;
}

/* Takes holders on the devices need may use out of use, in stop order, until need fits;
 * then gives back, latest taken first, those whose stop is not needed. Fills the verdict. */
static void make_room(const struct placement_gpu *gpus, size_t n_gpus,
                      const struct placement_holder *holders, size_t n, struct gpu_use *use,
                      const struct placement_need *need, struct placement_verdict *v)
{
    bool *gone = xcalloc(n ? n : 1, sizeof(*gone));
    uint64_t allowed = need->pinned ? need->pinned & box_mask(n_gpus) : box_mask(n_gpus);
    size_t *order = xcalloc(n ? n : 1, sizeof(*order)), n_order = 0, n_taken = 0;

    for (size_t i = 0; i < n; i++) { /* in stop order, by insertion: a few holders */
        size_t k;
        if (!(holders[i].devices & allowed))
            continue;
        for (k = n_order++; k > 0 && stops_before(holders, i, order[k - 1]); k--)
            order[k] = order[k - 1];
        order[k] = i;
    }
    while (n_taken < n_order) {
        size_t i = order[n_taken++];
        gone[i] = true;
        count_holder(use, n_gpus, &holders[i], -1);
        if (choose(gpus, n_gpus, use, need))
            break;
    }
    for (size_t k = n_taken; k-- > 0;) {
        size_t i = order[k];
        count_holder(use, n_gpus, &holders[i], 1);
        if (choose(gpus, n_gpus, use, need))
            gone[i] = false;
        else
            count_holder(use, n_gpus, &holders[i], -1);
    }
    v->holders = xcalloc(n_taken ? n_taken : 1, sizeof(*v->holders));
    for (size_t k = 0; k < n_taken; k++)
        if (gone[order[k]])
            v->holders[v->n_holders++] = order[k];
    free(order);
    free(gone);
}

int placement_decide(const struct placement_gpu *gpus, size_t n_gpus,
                     const struct placement_holder *holders, size_t n,
                     const struct placement_need *need, struct placement_verdict *ret)
{
    struct placement_verdict v = {.kind = PLACEMENT_PLACED};
    struct gpu_use use[PLACEMENT_GPUS_MAX];

    if (need->count == 0 || n_gpus > PLACEMENT_GPUS_MAX)
        return -EINVAL;
    tally(use, n_gpus, holders, n);
    v.devices = choose(gpus, n_gpus, use, need);
    if (!v.devices) {
        struct gpu_use empty[PLACEMENT_GPUS_MAX];
        memset(empty, 0, sizeof(empty));
        if (!choose(gpus, n_gpus, empty, need)) {
            v.kind = PLACEMENT_IMPOSSIBLE;
        } else {
            v.kind = PLACEMENT_CONFLICT;
            make_room(gpus, n_gpus, holders, n, use, need, &v);
        }
    }
    *ret = v;
    return 0;
}
