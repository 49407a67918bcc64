/* The box's GPUs: see inventory.h. One read at a time runs on a worker thread into a
 * snapshot of its own; the loop swaps it in when it is done, so what the getters return
 * never changes under a caller. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/inventory.h"
#include "lib/alloc.h"
#include "lib/gpuinfo.h"
#include "lib/log.h"
#include "lib/procstat.h"

#define MARKER_VARIABLE "NANNY_INSTANCE" /* in every process service's environment */

struct snapshot {
    const char *source; /* static */
    struct inventory_gpu *gpus;
    size_t n_gpus;
    struct inventory_proc *procs;
    size_t n_procs;
};

struct inventory {
    uv_loop_t *loop;
    const struct config *config;
    char *nvml, *smi; /* the worker's copies of the config's (NULL: off): it may outlive it */
    inventory_changed_fn changed;
    void *data;
    inventory_procs_fn procs_fn;
    void *procs_data;
    uv_timer_t timer;
    uv_work_t work;
    struct snapshot now, next; /* next: the worker's, while reading */
    char err[512];             /* the worker's, when a probe answered wrongly */
    int result;                /* the worker's gpuinfo_read() result */
    bool reading, again, known, closing, freed, failing;
    struct placement_gpu box[PLACEMENT_GPUS_MAX];
    size_t n_box;
};

static void snapshot_clear(struct snapshot *s)
{
    for (size_t i = 0; i < s->n_gpus; i++) {
        free(s->gpus[i].name);
        free(s->gpus[i].uuid);
    }
    free(s->gpus);
    free(s->procs);
    memset(s, 0, sizeof(*s));
}

/* The config file's gpus:, or one GPU of unknown size. */
static void snapshot_from_config(struct snapshot *s, const struct config *c)
{
    size_t n = c->n_gpus ? c->n_gpus : 1;

    s->source = c->n_gpus ? "config" : "none";
    s->gpus = xcalloc(n, sizeof(*s->gpus));
    s->n_gpus = n;
    for (size_t i = 0; i < n; i++) {
        s->gpus[i].index = c->n_gpus ? c->gpus[i].index : 0;
        s->gpus[i].name = xstrdup(c->n_gpus ? c->gpus[i].name : "GPU");
        s->gpus[i].memory = c->n_gpus ? c->gpus[i].memory : 0;
        s->gpus[i].utilization = -1;
    }
}

/* A process is a service's when it carries the marker every process service has, or
 * runs in a container other than the daemon's own (compose services' containers, as far
 * as can be told without asking the engine whose each one is). */
static bool proc_owned(int pid)
{
    char value[256];

    return procstat_environ_get(pid, MARKER_VARIABLE, value, sizeof(value)) == 0 ||
           procstat_in_another_container(pid);
}

/* What the library read, into s (which takes its strings). */
static void snapshot_from_gpuinfo(struct snapshot *s, struct gpuinfo *g)
{
    s->source = g->source;
    s->gpus = xcalloc(g->n_gpus ? g->n_gpus : 1, sizeof(*s->gpus));
    s->n_gpus = g->n_gpus;
    for (size_t i = 0; i < g->n_gpus; i++) {
        struct gpuinfo_gpu *from = &g->gpus[i];

        s->gpus[i] =
            (struct inventory_gpu){from->index,        from->name,        from->uuid,
                                   from->memory_total, from->memory_used, from->memory_used_known,
                                   from->utilization};
        from->name = from->uuid = NULL;
    }
    s->procs = xcalloc(g->n_procs ? g->n_procs : 1, sizeof(*s->procs));
    s->n_procs = g->n_procs;
    for (size_t i = 0; i < g->n_procs; i++)
        s->procs[i] = (struct inventory_proc){g->procs[i].gpu, g->procs[i].pid, g->procs[i].memory,
                                              proc_owned(g->procs[i].pid)};
}

/* On a worker thread: NVML, else nvidia-smi; the loop falls back to the config. */
static void on_read_work(uv_work_t *w)
{
    struct inventory *inv = w->data;
    struct gpuinfo g = {0};

    inv->err[0] = '\0';
    inv->result = gpuinfo_read(inv->nvml, inv->smi, &g, inv->err, sizeof(inv->err));
    if (inv->result == 0 && g.n_gpus == 0)
        inv->result = -ENODEV; /* a driver with no GPU: as good as none */
    if (inv->result == 0)
        snapshot_from_gpuinfo(&inv->next, &g);
    gpuinfo_free(&g);
}

/* Placement's view of s: memory, and what foreign processes use. */
static size_t box_of(const struct snapshot *s, struct placement_gpu *out, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n_gpus && n < max; i++) {
        out[n] = (struct placement_gpu){s->gpus[i].memory, 0};
        for (size_t j = 0; j < s->n_procs; j++)
            if (s->procs[j].gpu == s->gpus[i].index && !s->procs[j].owned)
                out[n].foreign += s->procs[j].memory;
        n++;
    }
    if (n == 0) {
        out[0] = (struct placement_gpu){0, 0};
        n = 1;
    }
    return n;
}

/* True when the GPUs of s are numbered 0..N-1, as placement (and CUDA) count them. */
static bool numbered_in_order(const struct snapshot *s)
{
    for (size_t i = 0; i < s->n_gpus; i++)
        if (s->gpus[i].index != i)
            return false;
    return s->n_gpus <= PLACEMENT_GPUS_MAX;
}

static void read_start(struct inventory *inv);
static void on_timer(uv_timer_t *t);

static void on_read_done(uv_work_t *w, int status)
{
    struct inventory *inv = w->data;
    struct placement_gpu box[PLACEMENT_GPUS_MAX];
    size_t n;
    bool first = !inv->known;

    inv->reading = false;
    if (inv->closing) {
        snapshot_clear(&inv->next);
        if (inv->freed) { /* its timer is closed: the last one out frees it */
            snapshot_clear(&inv->now);
            free(inv->nvml);
            free(inv->smi);
            free(inv);
        }
        return;
    }
    if (status == 0 && inv->result == 0 && !numbered_in_order(&inv->next)) {
        snprintf(inv->err, sizeof(inv->err), "its GPUs are not numbered 0 to N-1");
        inv->result = -EBADMSG;
        snapshot_clear(&inv->next);
    }
    if (status == 0 && inv->result == 0) {
        if (inv->failing || first)
            log_info("GPUs: %zu, read from %s", inv->next.n_gpus, inv->next.source);
        inv->failing = false;
        snapshot_clear(&inv->now);
        inv->now = inv->next;
        memset(&inv->next, 0, sizeof(inv->next));
    } else if (first) {
        if (inv->result != -ENODEV)
            log_warning("GPUs: %s", inv->err);
        snapshot_from_config(&inv->now, inv->config);
        if (inv->config->n_gpus)
            log_info("GPUs: %zu, as the config file describes them", inv->now.n_gpus);
    } else if (!inv->failing) {
        /* It answered before: what it said last stands until it answers again. */
        log_warning("GPUs: cannot read them again (%s): the last reading stands",
                    inv->err[0] ? inv->err : strerror(-inv->result));
        inv->failing = true;
    }
    inv->known = true;
    n = box_of(&inv->now, box, PLACEMENT_GPUS_MAX);
    if (n != inv->n_box || memcmp(box, inv->box, n * sizeof(*box)) != 0) {
        memcpy(inv->box, box, n * sizeof(*box));
        inv->n_box = n;
        if (!first && inv->changed)
            inv->changed(inv->data);
    }
    if (strcmp(inv->now.source, "nvml") == 0 || strcmp(inv->now.source, "nvidia-smi") == 0) {
        if (inv->procs_fn && !inv->failing)
            inv->procs_fn(inv->procs_data, inv->now.procs, inv->now.n_procs);
        uv_timer_start(&inv->timer, on_timer, INVENTORY_REFRESH_MS, 0);
    }
    if (inv->again) {
        inv->again = false;
        read_start(inv);
    }
}

static void read_start(struct inventory *inv)
{
    if (inv->closing)
        return;
    if (inv->reading) {
        inv->again = true;
        return;
    }
    inv->reading = true;
    inv->work.data = inv;
    if (uv_queue_work(inv->loop, &inv->work, on_read_work, on_read_done) < 0)
        fatal("uv_queue_work failed"); /* only for a NULL callback: a broken invariant */
}

static void on_timer(uv_timer_t *t)
{
    read_start(t->data);
}

struct inventory *inventory_new(uv_loop_t *loop, const struct config *config,
                                inventory_changed_fn changed, void *data)
{
    struct inventory *inv = xcalloc(1, sizeof(*inv));

    inv->loop = loop;
    inv->config = config;
    if (config->nvml_library && *config->nvml_library)
        inv->nvml = xstrdup(config->nvml_library);
    if (config->nvidia_smi && *config->nvidia_smi)
        inv->smi = xstrdup(config->nvidia_smi);
    inv->changed = changed;
    inv->data = data;
    inv->n_box = 1; /* until the first read: one GPU of unknown size */
    uv_timer_init(loop, &inv->timer);
    uv_unref((uv_handle_t *)&inv->timer); /* a daemon stopping does not wait for it */
    inv->timer.data = inv;
    read_start(inv);
    return inv;
}

void inventory_on_procs(struct inventory *inv, inventory_procs_fn fn, void *data)
{
    inv->procs_fn = fn;
    inv->procs_data = data;
}

bool inventory_known(const struct inventory *inv)
{
    return inv->known;
}

const char *inventory_source(const struct inventory *inv)
{
    return inv->known ? inv->now.source : "none";
}

const struct inventory_gpu *inventory_gpus(const struct inventory *inv, size_t *ret_n)
{
    *ret_n = inv->now.n_gpus;
    return inv->now.gpus;
}

const struct inventory_proc *inventory_procs(const struct inventory *inv, size_t *ret_n)
{
    *ret_n = inv->now.n_procs;
    return inv->now.procs;
}

size_t inventory_box(const struct inventory *inv, struct placement_gpu *out, size_t max)
{
    size_t n = inv->n_box < max ? inv->n_box : max;

    if (n == 0)
        return 0;
    memcpy(out, inv->box, n * sizeof(*out));
    return n;
}

void inventory_refresh(struct inventory *inv)
{
    read_start(inv);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct inventory *inv = h->data;

    if (inv->reading) {
        inv->freed = true; /* on_read_done() frees it */
        return;
    }
    snapshot_clear(&inv->now);
    free(inv->nvml);
    free(inv->smi);
    free(inv);
}

void inventory_free(struct inventory *inv)
{
    if (!inv)
        return;
    inv->closing = true;
    uv_close((uv_handle_t *)&inv->timer, on_timer_closed);
}
