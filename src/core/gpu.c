/* The GPU arbiter: a pure function from the box, the services and a start request to a
 * verdict, over placement_decide(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gpu.h"
#include "lib/alloc.h"

void gpu_verdict_done(struct gpu_verdict *v)
{
    free(v->holders);
    v->holders = NULL;
    v->n_holders = 0;
}

bool gpu_is_holder(const struct gpu_candidate *c)
{
    return c->reserved || (c->gpu_required && lifecycle_holds_gpu(c->state));
}

uint64_t gpu_devices_of(const struct gpu_candidate *c)
{
    return c->devices ? c->devices : 1;
}

int gpu_devices_parse(const char *text, uint64_t *ret)
{
    uint64_t set = 0;
    const char *p = text;

    if (!text || !*text)
        return -ENOENT;
    for (;;) {
        unsigned index = 0;
        const char *begun = p;

        while (*p >= '0' && *p <= '9' && p - begun < 3)
            index = index * 10 + (unsigned)(*p++ - '0');
        if (p == begun || index > 63 || (*p >= '0' && *p <= '9') ||
            (p - begun > 1 && *begun == '0') || (set & UINT64_C(1) << index))
            return -EINVAL;
        set |= UINT64_C(1) << index;
        if (*p == '\0')
            break;
        if (*p++ != ',')
            return -EINVAL;
    }
    *ret = set;
    return 0;
}

void gpu_devices_format(uint64_t set, char *buf, size_t size)
{
    size_t at = 0;

    if (size == 0)
        return;
    buf[0] = '\0';
    for (unsigned i = 0; i < 64 && at < size; i++)
        if (set & (UINT64_C(1) << i))
            at += (size_t)snprintf(buf + at, size - at, "%s%u", at ? "," : "", i);
}

/* Orders names for the 409, a missing name first. */
static int compare_names(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "");
}

size_t gpu_holder(const struct gpu_candidate *services, size_t n, size_t except)
{
    size_t holder = n;

    for (size_t i = 0; i < n; i++) {
        if (i == except || !gpu_is_holder(&services[i]))
            continue;
        if (holder == n || compare_names(services[i].name, services[holder].name) < 0)
            holder = i;
    }
    return holder;
}

/* What c asks for: one whole GPU when it says nothing (the seed's gpu_required). */
static struct placement_need need_of(const struct gpu_candidate *c)
{
    struct placement_need need = c->need;

    if (need.count == 0)
        need.count = 1;
    return need;
}

/* The holders but the target as placement sees them; index[k] is the candidate of the
 * k-th. Both malloc'd. */
static size_t placed_holders(const struct gpu_candidate *services, size_t n, size_t target,
                             struct placement_holder **ret, size_t **ret_index)
{
    struct placement_holder *h = xcalloc(n + 1, sizeof(*h));
    size_t *index = xcalloc(n + 1, sizeof(*index));
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        if (i == target || !gpu_is_holder(&services[i]))
            continue;
        h[k] = (struct placement_holder){need_of(&services[i]), gpu_devices_of(&services[i]),
                                         services[i].priority, services[i].last_used};
        index[k++] = i;
    }
    *ret = h;
    *ret_index = index;
    return k;
}

/* Where need goes once the holders listed in stop[] (indexes into h) are gone: a
 * conflict's set always makes room, so anything else is a broken invariant (-EPROTO). */
static int place_after(const struct gpu_box *box, const struct placement_holder *h, size_t k,
                       const size_t *stop, size_t n_stop, const struct placement_need *need,
                       uint64_t *ret)
{
    struct placement_holder *left = xcalloc(k + 1, sizeof(*left));
    struct placement_verdict pv;
    size_t n_left = 0;
    int r;

    for (size_t i = 0; i < k; i++) {
        bool stopped = false;

        for (size_t j = 0; j < n_stop && !stopped; j++)
            stopped = stop[j] == i;
        if (!stopped)
            left[n_left++] = h[i];
    }
    r = placement_decide(box->gpus, box->n, left, n_left, need, &pv);
    free(left);
    if (r < 0)
        return r;
    free(pv.holders);
    if (pv.kind != PLACEMENT_PLACED)
        return -EPROTO;
    *ret = pv.devices;
    return 0;
}

/* Applies the GPU rule to one start request; the rules are in gpu.h. */
int gpu_decide(const struct gpu_box *box, const struct gpu_candidate *services, size_t n,
               size_t target, bool force, bool preempt_always, struct gpu_verdict *ret)
{
    const struct gpu_candidate *t;
    struct gpu_verdict v = {.kind = GPU_GO};
    struct placement_holder *h;
    struct placement_verdict pv;
    struct placement_need need;
    size_t *index, k;
    int r;

    if (!box || !box->gpus || box->n == 0 || !services || !ret || target >= n)
        return -EINVAL;
    t = &services[target];
    if (t->reserved || t->state == STATE_STARTING || t->state == STATE_RUNNING ||
        t->state == STATE_UNHEALTHY) {
        v.kind = GPU_ALREADY;
        *ret = v;
        return 0;
    }
    if (!t->gpu_required) {
        *ret = v;
        return 0;
    }
    need = need_of(t);
    k = placed_holders(services, n, target, &h, &index);
    r = placement_decide(box->gpus, box->n, h, k, &need, &pv);
    if (r < 0)
        goto out;
    switch (pv.kind) {
    case PLACEMENT_PLACED:
        v.devices = pv.devices;
        break;
    case PLACEMENT_IMPOSSIBLE:
        v.kind = GPU_IMPOSSIBLE;
        break;
    case PLACEMENT_CONFLICT:
        if (pv.n_holders == 0) {
            r = -EPROTO; /* a conflict names whose stop makes room */
            break;
        }
        v.kind = force || preempt_always ? GPU_PREEMPT : GPU_CONFLICT;
        if (v.kind == GPU_PREEMPT) {
            r = place_after(box, h, k, pv.holders, pv.n_holders, &need, &v.devices);
            if (r < 0)
                break;
        }
        v.holders = xcalloc(pv.n_holders, sizeof(*v.holders));
        v.n_holders = pv.n_holders;
        for (size_t i = 0; i < pv.n_holders; i++)
            v.holders[i] = index[pv.holders[i]];
        v.holder = v.holders[0];
        break;
    }
    free(pv.holders);
out:
    free(h);
    free(index);
    if (r == 0)
        *ret = v;
    return r;
}
