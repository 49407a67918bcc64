/* The GPU arbiter: a pure function from the services and a start request to a verdict. */
#include <errno.h>
#include <string.h>

#include "core/gpu.h"

bool gpu_is_holder(const struct gpu_candidate *c)
{
    return c->reserved || (c->gpu_required && lifecycle_holds_gpu(c->state));
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

/* Applies the GPU one-of rule to one start request; the rules are in gpu.h. */
int gpu_decide(const struct gpu_candidate *services, size_t n, size_t target, bool force,
               bool preempt_always, struct gpu_verdict *ret)
{
    const struct gpu_candidate *t;
    struct gpu_verdict v = {.kind = GPU_GO};
    size_t n_holders = 0;

    if (!services || !ret || target >= n)
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
    for (size_t i = 0; i < n; i++)
        if (i != target && gpu_is_holder(&services[i]))
            n_holders++;
    v.holder = gpu_holder(services, n, target);
    if (n_holders == 0) {
        v.holder = 0;
        *ret = v;
        return 0;
    }
    if (!force && !preempt_always) {
        v.kind = GPU_CONFLICT;
        *ret = v;
        return 0;
    }
    if (n_holders > GPU_PREEMPT_MAX)
        return -E2BIG;
    v.kind = GPU_PREEMPT;
    for (size_t i = 0; i < n; i++)
        if (i != target && gpu_is_holder(&services[i]))
            v.preempt[v.n_preempt++] = i;
    *ret = v;
    return 0;
}
