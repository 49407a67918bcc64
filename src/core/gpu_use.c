/* What services use of their GPUs (SPEC section 7 "GPUs"): each process NVML lists on a
 * GPU is told to the service whose run owns it (the driver says: a process service's
 * marker); a service that uses more memory on a GPU than its gpu.memory declares is
 * reported (its status's gpu_warning, a gpu_overuse event, the log) and, with
 * gpu.enforce: true, stopped. Whole-GPU services are not judged: the GPU is theirs. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/inventory.h"
#include "core/supervisor_impl.h"
#include "lib/alloc.h"
#include "lib/log.h"

/* What run's processes use of each GPU, summed into used (bytes, by index). */
static void run_usage(const struct run *run, const struct inventory_proc *procs, size_t n,
                      uint64_t used[PLACEMENT_GPUS_MAX])
{
    const struct driver *d = run->instance->driver;

    for (size_t i = 0; i < n; i++)
        if (procs[i].gpu < PLACEMENT_GPUS_MAX && procs[i].memory &&
            d->owns_pid(run->instance, procs[i].pid))
            used[procs[i].gpu] += procs[i].memory;
}

/* The GPU where run uses the most beyond what it declares, and what it uses there:
 * false when it keeps within its gpu.memory everywhere. */
static bool run_overuse(const struct run *run, const uint64_t used[PLACEMENT_GPUS_MAX],
                        unsigned *ret_gpu, uint64_t *ret_used)
{
    bool over = false;

    for (unsigned g = 0; g < PLACEMENT_GPUS_MAX; g++)
        if (used[g] > run->gpu_need.memory && (!over || used[g] > *ret_used)) {
            over = true;
            *ret_gpu = g;
            *ret_used = used[g];
        }
    return over;
}

static void enforced_stop_done(void *data, struct service *svc, const struct supervisor_result *res)
{
}

/* run crossed its gpu.memory (over) or came back within it. */
static void overuse_changed(struct run *run, bool over, unsigned gpu, uint64_t used)
{
    struct supervisor *sup = run->sup;
    const char *name = run->svc->name;
    bool enforce = over && run->gpu_enforce;
    char text[256];

    free(run->gpu_warning);
    run->gpu_warning = NULL;
    if (over) {
        snprintf(text, sizeof(text),
                 "uses %" PRIu64 " MiB of GPU %u, more than the %" PRIu64
                 " MiB its gpu.memory declares%s",
                 used >> 20, gpu, run->gpu_need.memory >> 20,
                 enforce ? ": stopped (gpu.enforce)" : "");
        run->gpu_warning = xstrdup(text);
        log_warning("%s: %s", name, text);
    } else {
        log_info("%s: back within the GPU memory it declares", name);
    }
    run->gpu_over = over;
    run->gpu_over_index = gpu;
    run->status.gpu_warning = run->gpu_warning;
    run_changed(run);
    events_publish(sup->hub, EVENT_GPU_OVERUSE, name,
                   json_pack("{s:b, s:i, s:I, s:I, s:b}", "over", over, "gpu", (int)gpu, "used",
                             (json_int_t)used, "declared", (json_int_t)run->gpu_need.memory,
                             "enforced", enforce));
    if (enforce) {
        run_set_error(run, "stopped: %s", text);
        supervisor_stop(sup, run->svc, enforced_stop_done, NULL);
    }
}

void supervisor_gpu_usage(struct supervisor *sup, const struct inventory_proc *procs, size_t n)
{
    size_t count = registry_count(sup->reg);

    for (size_t i = 0; i < count; i++) {
        struct run *run = run_find(sup, registry_at(sup->reg, i));
        uint64_t used[PLACEMENT_GPUS_MAX] = {0}, over_used = 0;
        unsigned gpu = 0;
        bool over;

        /* Only a run that shares its GPUs by a declared memory, while it runs. */
        if (!run || !run->instance || !run->instance_gpu || !run->gpu_need.memory ||
            !run->instance->driver->owns_pid || !lifecycle_holds_gpu(run->status.state) ||
            run->status.state == STATE_STOPPING)
            continue;
        run_usage(run, procs, n, used);
        over = run_overuse(run, used, &gpu, &over_used);
        if (over != run->gpu_over)
            overuse_changed(run, over, over ? gpu : run->gpu_over_index,
                            over ? over_used : used[run->gpu_over_index]);
    }
}

void run_gpu_usage_clear(struct run *run)
{
    free(run->gpu_warning);
    run->gpu_warning = NULL;
    run->status.gpu_warning = NULL;
    run->gpu_over = false;
}
