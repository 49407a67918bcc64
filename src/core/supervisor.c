/* The supervisor's operations: starts, stops and restarts decided by the GPU arbiter, fed
 * to each service's run (run.c), and answered when what they wait for has happened. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crash_point.h"
#include "core/supervisor_impl.h"
#include "lib/alloc.h"
#include "lib/log.h"

static struct supervisor_op *op_new(struct supervisor *sup, struct service *svc, enum op_kind kind,
                                    supervisor_done_fn done, void *data)
{
    struct supervisor_op *op = xcalloc(1, sizeof(*op));

    op->sup = sup;
    op->svc = svc;
    op->kind = kind;
    op->phase = kind == OP_STOP ? OP_STOP_WAIT : OP_NEW;
    op->done = done;
    op->data = data;
    op->preempted = json_array();
    op->id = ++sup->op_ids;
    return op;
}

static void op_free(struct supervisor_op *op)
{
    json_decref(op->preempted);
    json_decref(op->holders);
    json_decref(op->detail);
    free(op);
}

static bool op_pending(const struct supervisor *sup, const struct supervisor_op *op)
{
    for (const struct supervisor_op *o = sup->ops; o; o = o->next)
        if (o == op)
            return true;
    return false;
}

/* --- writing ahead ------------------------------------------------------------------ */

/* What a write of an operation's intent carries to its end: the operation may have been
 * answered meanwhile, so it is found again by its id. */
struct op_token {
    struct supervisor *sup;
    uint64_t id;
};

static struct op_token *op_token(const struct supervisor_op *op)
{
    struct op_token *t = xcalloc(1, sizeof(*t));

    t->sup = op->sup;
    t->id = op->id;
    return t;
}

/* The operation of token t in list (unlinked with unlink), or NULL when it is no longer
 * there or the supervisor is gone (result -ECANCELED); frees t. */
static struct supervisor_op *op_from_token(void *t, int result, struct supervisor_op **list,
                                           bool unlink)
{
    struct op_token token = *(struct op_token *)t;

    free(t);
    if (result == -ECANCELED)
        return NULL;
    (void)token.sup;
    for (struct supervisor_op **p = list; *p; p = &(*p)->next) {
        if ((*p)->id == token.id) {
            struct supervisor_op *op = *p;
            if (unlink)
                *p = op->next;
            return op;
        }
    }
    return NULL;
}

/* A good state on disk ends a corrupt one's notice. */
static void state_written_ok(struct supervisor *sup)
{
    free(sup->state_problem);
    sup->state_problem = NULL;
}

/* True when another start of op's service waits for the GPU too (it joined op). */
static bool gpu_waiters_besides(const struct supervisor_op *op)
{
    for (const struct supervisor_op *o = op->sup->ops; o; o = o->next)
        if (o != op && o->svc == op->svc && o->phase == OP_GPU_WAIT)
            return true;
    return false;
}

/* True while the supervisor still needs svc: it is not at rest, an operation waits on it,
 * it holds a GPU reservation, or processes of it still go. */
static bool supervisor_needs(const struct supervisor *sup, const struct service *svc)
{
    const struct run *run = run_find(sup, svc);

    if (run && (run->reserved || run_lingers(run) ||
                (run->status.state != STATE_STOPPED && run->status.state != STATE_FAILED)))
        return true;
    for (const struct supervisor_op *op = sup->ops; op; op = op->next)
        if (op->svc == svc)
            return true;
    for (const struct supervisor_op *op = sup->answering; op; op = op->next)
        if (op->svc == svc)
            return true;
    return false;
}

void supervisor_hold_sync(struct supervisor *sup, struct service *svc)
{
    if (svc)
        registry_hold(sup->reg, svc, supervisor_needs(sup, svc));
}

/* A start answered OK: its answer goes once what it started is on disk. */
static void on_start_recorded(void *data, int result)
{
    struct op_token *t = data;
    struct supervisor *sup = t->sup;
    struct supervisor_op *op = op_from_token(t, result, &sup->answering, true);
    struct supervisor_result res = {SUPERVISOR_OK};

    if (!op)
        return;
    if (result == 0)
        state_written_ok(sup);
    CRASH_POINT("start-recorded"); /* on disk, not answered yet */
    res.preempted = op->preempted;
    res.status = supervisor_status(sup, op->svc);
    if (res.status->state != STATE_STARTING && res.status->state != STATE_RUNNING &&
        res.status->state != STATE_UNHEALTHY) {
        /* A stop came while the start was being recorded. */
        res.outcome = SUPERVISOR_CANCELLED;
        res.message = "a stop asked after this start stopped the service";
    }
    if (!op->cancelled)
        op->done(op->data, op->svc, &res);
    supervisor_hold_sync(sup, op->svc);
    op_free(op);
}

void op_finish(struct supervisor_op *op, enum supervisor_outcome outcome, const char *holder,
               const char *message)
{
    struct supervisor *sup = op->sup;
    struct supervisor_result res = {outcome,
                                    holder,
                                    message,
                                    op->preempted,
                                    op->holders,
                                    op->detail,
                                    supervisor_status(sup, op->svc)};
    struct run *run = run_find(sup, op->svc);

    for (struct supervisor_op **p = &sup->ops; *p; p = &(*p)->next) {
        if (*p == op) {
            *p = op->next;
            break;
        }
    }
    if (op->phase == OP_GPU_WAIT && run && !gpu_waiters_besides(op)) {
        run->reserved = false;
        supervisor_gpu_publish(sup);
    }
    if (op->kind == OP_START && outcome != SUPERVISOR_OK && outcome != SUPERVISOR_ALREADY &&
        strcmp(intent_of(sup, op->svc->name) ?: "", "starting") == 0) {
        /* The start it wrote ahead did not happen: the intent is what is. */
        intent_set(sup, op->svc->name, run && run->instance ? "running" : "stopped", false, NULL);
        runs_record(sup);
    }
    if (op->kind == OP_START && outcome == SUPERVISOR_OK && !op->cancelled) {
        /* Answered once its process is on disk, so that a restarted daemon finds it. */
        op->next = sup->answering;
        sup->answering = op;
        runs_record_then(sup, on_start_recorded, op_token(op));
        return;
    }
    supervisor_hold_sync(sup, op->svc);
    if (!op->cancelled)
        op->done(op->data, op->svc, &res);
    op_free(op);
}

void ops_finish_where(struct supervisor *sup, const struct service *svc, int kind,
                      bool gpu_waiters_only, enum supervisor_outcome outcome, const char *holder,
                      const char *message)
{
    for (struct supervisor_op *o = sup->ops, *next; o; o = next) {
        next = o->next;
        if ((!svc || o->svc == svc) && (kind < 0 || o->kind == (enum op_kind)kind) &&
            (!gpu_waiters_only || o->phase == OP_GPU_WAIT)) {
            op_finish(o, outcome, holder, message);
            next = sup->ops; /* the callback may have changed the list */
        }
    }
}

static void op_queue(struct supervisor_op *op)
{
    op->next = op->sup->ops;
    op->sup->ops = op;
    supervisor_hold_sync(op->sup, op->svc);
}

void ops_stops_superseded(struct supervisor *sup, struct service *svc)
{
    ops_finish_where(sup, svc, OP_STOP, false, SUPERVISOR_CANCELLED, NULL,
                     "it stopped, then a start asked meanwhile started it again");
    /* A restart waiting for its stop: the start asked meanwhile is its start. */
    for (struct supervisor_op *op = sup->ops; op; op = op->next)
        if (op->svc == svc && op->phase == OP_STOP_FIRST)
            op->phase = OP_STARTED;
}

/* --- the GPU -------------------------------------------------------------------------- */

struct placement_need supervisor_gpu_need(const struct manifest *m)
{
    struct placement_need need = {0};

    if (m->gpu_required)
        need =
            (struct placement_need){m->gpu.count ? m->gpu.count : 1, m->gpu.memory, m->gpu.devices};
    return need;
}

void supervisor_set_gpus(struct supervisor *sup, const struct placement_gpu *gpus, size_t n)
{
    static const struct placement_gpu unknown = {0, 0};

    if (n == 0 || n > PLACEMENT_GPUS_MAX) {
        gpus = &unknown;
        n = 1;
    }
    free(sup->gpus);
    sup->gpus = xcalloc(n, sizeof(*gpus));
    memcpy(sup->gpus, gpus, n * sizeof(*gpus));
    sup->n_gpus = n;
    supervisor_gpu_publish(sup);
    ops_settle(sup); /* starts waiting for room may fit now */
}

/* The candidates the GPU arbiter looks at, in registry order. */
static struct gpu_candidate *gpu_candidates(struct supervisor *sup, size_t *ret_n)
{
    size_t n = registry_count(sup->reg);
    struct gpu_candidate *c = xcalloc(n + 1, sizeof(*c));

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        const struct run *run = run_find(sup, svc);
        enum service_state state = run ? run->status.state : STATE_STOPPED;
        bool runs_gpu = run && ((run->instance && run->instance_gpu) ||
                                (run->n_retired > 0 && run->retired_gpu));

        c[i].name = svc->name;
        /* What runs or lingers of a run holds what it held (a restart took a new manifest). */
        c[i].gpu_required = svc->manifest->gpu_required || runs_gpu;
        /* A run whose processes still go holds what it held: show it as stopping. */
        c[i].state = run_lingers(run) && !lifecycle_holds_gpu(state) ? STATE_STOPPING : state;
        c[i].reserved = run && run->reserved;
        c[i].need =
            runs_gpu && run->gpu_need.count ? run->gpu_need : supervisor_gpu_need(svc->manifest);
        if (run)
            c[i].devices = run->gpu_devices | run->retired_devices |
                           (run->reserved ? run->reserved_devices : 0);
        c[i].priority = svc->manifest->priority;
        c[i].last_used = run ? run->last_used_ms : 0;
    }
    *ret_n = n;
    return c;
}

static size_t registry_index(struct supervisor *sup, const struct service *svc)
{
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++)
        if (registry_at(sup->reg, i) == svc)
            return i;
    return n;
}

/* Decides a start of target as things are now. */
static int gpu_decide_now(struct supervisor *sup, const struct gpu_candidate *c, size_t n,
                          size_t target, bool force, struct gpu_verdict *ret)
{
    struct gpu_box box = {sup->gpus, sup->n_gpus};

    return gpu_decide(&box, c, n, target, force, sup->config->gpu_conflict == GPU_CONFLICT_PREEMPT,
                      ret);
}

/* Writes the devices of a bit set as "0,2" into buf. */
static void devices_text(uint64_t devices, char *buf, size_t size)
{
    size_t at = 0;

    buf[0] = '\0';
    for (unsigned i = 0; i < PLACEMENT_GPUS_MAX && at < size; i++)
        if (devices & (UINT64_C(1) << i))
            at += (size_t)snprintf(buf + at, size - at, "%s%u", at ? "," : "", i);
}

bool supervisor_gpu_place(struct supervisor *sup, const struct service *target,
                          uint64_t *ret_devices, char *err, size_t err_size)
{
    size_t n, t = registry_index(sup, target);
    struct gpu_candidate *c = gpu_candidates(sup, &n);
    struct gpu_verdict v = {.kind = GPU_CONFLICT};
    bool placed;

    if (t < n) {
        /* Decided as a start of it at rest, in its reservation when it has one. */
        if (c[t].reserved)
            c[t].need.pinned = c[t].devices;
        c[t].reserved = false;
        c[t].state = STATE_STOPPED;
        if (gpu_decide_now(sup, c, n, t, false, &v) < 0)
            v.kind = GPU_CONFLICT;
    }
    placed = v.kind == GPU_GO;
    if (placed)
        *ret_devices = v.devices;
    else if (v.kind == GPU_IMPOSSIBLE)
        snprintf(err, err_size, "no GPU of this box can take what it needs");
    else
        snprintf(err, err_size, "%s holds the GPU it needs",
                 v.n_holders ? c[v.holder].name : "another service");
    gpu_verdict_done(&v);
    free(c);
    return placed;
}

bool supervisor_gpu_free_for(struct supervisor *sup, const struct service *target)
{
    uint64_t devices;
    char err[160];

    return supervisor_gpu_place(sup, target, &devices, err, sizeof(err));
}

static bool names_contain(const json_t *names, const char *name)
{
    size_t i;
    json_t *v;

    json_array_foreach(names, i, v)
    {
        if (strcmp(json_string_value(v), name) == 0)
            return true;
    }
    return false;
}

/* The services whose start waits for the GPU, in the order they asked. New reference. */
static json_t *gpu_queue(const struct supervisor *sup)
{
    json_t *queue = json_array();

    for (const struct supervisor_op *op = sup->ops; op; op = op->next)
        if (op->phase == OP_GPU_WAIT && !names_contain(queue, op->svc->name))
            json_array_append_new(queue, json_string(op->svc->name));
    /* Then the starts on demand that wait, in registry (name) order. */
    for (size_t i = 0, n = registry_count(sup->reg); i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        const struct run *run = run_find(sup, svc);

        if (run && run->status.waiting.since_ms && !names_contain(queue, svc->name))
            json_array_append_new(queue, json_string(svc->name));
    }
    return queue;
}

/* The devices of a bit set as a JSON array of indexes. New reference. */
static json_t *devices_json(uint64_t devices)
{
    json_t *a = json_array();

    for (unsigned i = 0; i < PLACEMENT_GPUS_MAX; i++)
        if (devices & (UINT64_C(1) << i))
            json_array_append_new(a, json_integer(i));
    return a;
}

/* {"holder","holders","queue","placed"}: the holder whose name sorts first (the seed's
 * one), every holder by name, the queue, and where each holder is. New reference. */
static json_t *gpu_json(struct supervisor *sup)
{
    size_t n, h;
    struct gpu_candidate *c = gpu_candidates(sup, &n);
    json_t *holders = json_array(), *placed = json_array();
    json_t *gpu;

    /* Registry order is name order. */
    for (size_t i = 0; i < n; i++) {
        if (!gpu_is_holder(&c[i]))
            continue;
        json_array_append_new(holders, json_string(c[i].name));
        json_array_append_new(
            placed,
            json_pack("{s:s, s:o, s:o, s:b}", "service", c[i].name, "devices",
                      devices_json(gpu_devices_of(&c[i])), "memory",
                      c[i].need.memory ? json_integer((json_int_t)c[i].need.memory) : json_null(),
                      "reserved", c[i].reserved));
    }
    h = gpu_holder(c, n, n);
    gpu = json_pack("{s:o, s:o, s:o, s:o}", "holder", h < n ? json_string(c[h].name) : json_null(),
                    "holders", holders, "queue", gpu_queue(sup), "placed", placed);
    free(c);
    return gpu;
}

json_t *supervisor_gpu(struct supervisor *sup)
{
    return gpu_json(sup);
}

const struct placement_gpu *supervisor_gpus(const struct supervisor *sup, size_t *ret_n)
{
    *ret_n = sup->n_gpus;
    return sup->gpus;
}

void supervisor_gpu_publish(struct supervisor *sup)
{
    json_t *gpu = gpu_json(sup);
    const char *holder = json_string_value(json_object_get(gpu, "holder"));
    char *text = json_dumps(gpu, JSON_COMPACT | JSON_SORT_KEYS);

    free(sup->gpu_holder);
    sup->gpu_holder = holder ? xstrdup(holder) : NULL;
    if (text && (!sup->gpu_published || strcmp(text, sup->gpu_published) != 0)) {
        free(sup->gpu_published);
        sup->gpu_published = text;
        events_publish(sup->hub, EVENT_GPU, NULL, json_incref(gpu));
    } else {
        free(text);
    }
    json_decref(gpu);
}

/* The names of a verdict's holders, in its order. New reference. */
static json_t *holder_names(struct supervisor *sup, const struct gpu_verdict *v)
{
    json_t *names = json_array();

    for (size_t i = 0; i < v->n_holders; i++)
        json_array_append_new(names, json_string(registry_at(sup->reg, v->holders[i])->name));
    return names;
}

/* The 409's sentence: the seed's "A is using the GPU" for one holder. */
static void conflict_message(const json_t *names, char *buf, size_t size)
{
    size_t n = json_array_size(names), at;

    if (n == 1) {
        snprintf(buf, size, "%s is using the GPU", json_string_value(json_array_get(names, 0)));
        return;
    }
    at = (size_t)snprintf(buf, size, "%s", json_string_value(json_array_get(names, 0)));
    for (size_t i = 1; i < n && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%s", i + 1 == n ? " and " : ", ",
                               json_string_value(json_array_get(names, i)));
    if (at < size)
        snprintf(buf + at, size - at, " are using the GPUs it needs");
}

/* gpu_impossible's numbers: what svc needs and what the box has. New reference. */
static json_t *impossible_detail(struct supervisor *sup, const struct service *svc, char *message,
                                 size_t size)
{
    const struct manifest_gpu *g = &svc->manifest->gpu;
    json_t *gpus = json_array();
    uint64_t biggest = 0;
    char pinned[256], each[64] = "";

    for (size_t i = 0; i < sup->n_gpus; i++) {
        json_array_append_new(gpus, json_pack("{s:i, s:o, s:I}", "index", (int)i, "memory",
                                              sup->gpus[i].memory
                                                  ? json_integer((json_int_t)sup->gpus[i].memory)
                                                  : json_null(),
                                              "foreign", (json_int_t)sup->gpus[i].foreign));
        if (sup->gpus[i].memory > biggest)
            biggest = sup->gpus[i].memory;
    }
    devices_text(g->devices, pinned, sizeof(pinned));
    if (g->memory)
        snprintf(each, sizeof(each), " with %" PRIu64 " MiB each", g->memory >> 20);
    snprintf(message, size,
             "%s needs %u GPU%s%s%s%s, more than this box can ever give: it has %zu GPU%s, "
             "the largest %" PRIu64 " MiB (memory that processes outside the daemon use "
             "counts)",
             svc->name, g->count, g->count == 1 ? "" : "s", each,
             g->devices ? " among devices " : "", g->devices ? pinned : "", sup->n_gpus,
             sup->n_gpus == 1 ? "" : "s", biggest >> 20);
    return json_pack("{s:o, s:o}", "need", manifest_gpu_to_json(svc->manifest), "gpus", gpus);
}

/* --- operations ------------------------------------------------------------------- */

/* Feeds the start to the lifecycle; a start without wait is answered once spawned. */
static void op_begin_start(struct supervisor_op *op)
{
    struct run *run = run_of(op->sup, op->svc);

    if (op->sup->shutting_down) {
        op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, "the daemon is stopping");
        return;
    }
    if (op->phase == OP_GPU_WAIT) {
        CRASH_POINT("force-holder-gone"); /* the GPU is free, the target not started */
        if (!gpu_waiters_besides(op))
            run->reserved = false;
    }
    op->phase = OP_STARTED;
    /* A stop still waiting (for what a stopped service's last run left) is overtaken. */
    ops_stops_superseded(op->sup, op->svc);
    /* The manifest may have changed since the run was made. */
    run->lc.health_enabled = op->svc->manifest->health_enabled;
    run->lc.restart = op->svc->manifest->restart;
    run_event(run, LIFECYCLE_START);
}

/* Stops a holder to free the GPU for target: whoever waited to start it loses the GPU. */
static void preempt(struct supervisor_op *op, struct service *holder)
{
    struct supervisor *sup = op->sup;
    struct run *hrun = run_find(sup, holder);
    char message[160];

    json_array_append_new(op->preempted, json_string(holder->name));
    events_publish(sup->hub, EVENT_PREEMPT, holder->name, json_pack("{s:s}", "for", op->svc->name));
    snprintf(message, sizeof(message), "%s is using the GPU", op->svc->name);
    if (hrun && hrun->reserved) {
        /* It waited for the GPU itself: it loses its turn. */
        ops_finish_where(sup, holder, OP_START, true, SUPERVISOR_CONFLICT, op->svc->name, message);
        hrun->reserved = false;
    } else if (hrun) {
        ops_finish_where(sup, holder, OP_START, false, SUPERVISOR_CONFLICT, op->svc->name, message);
        run_event(hrun, LIFECYCLE_STOP);
        CRASH_POINT("force-holder-stopping");
    }
}

/* A start of a service at rest takes the manifest on disk: what changed while it ran (kept
 * pending by the registry) applies now, a restart's once its stop is over. */
static void take_pending_manifest(struct supervisor *sup, struct service *svc)
{
    const struct run *run = run_find(sup, svc);
    enum service_state state = run ? run->status.state : STATE_STOPPED;

    if ((state == STATE_STOPPED || state == STATE_FAILED) && !(run && run->reserved))
        registry_apply_pending(sup->reg, svc);
}

/* Answers a start that the GPU rule refuses: a conflict naming the holders, or a need
 * the box can never meet. */
static void op_refuse(struct supervisor_op *op, const struct gpu_verdict *v)
{
    struct supervisor *sup = op->sup;
    char message[512];

    if (v->kind == GPU_IMPOSSIBLE) {
        op->detail = impossible_detail(sup, op->svc, message, sizeof(message));
        op_finish(op, SUPERVISOR_IMPOSSIBLE, NULL, message);
        return;
    }
    op->holders = holder_names(sup, v);
    conflict_message(op->holders, message, sizeof(message));
    op_finish(op, SUPERVISOR_CONFLICT, json_string_value(json_array_get(op->holders, 0)), message);
}

/* Decides a start by the GPU rule; answers or queues it. Returns false when answered. */
static bool op_arbitrate(struct supervisor_op *op)
{
    struct supervisor *sup = op->sup;
    struct gpu_verdict verdict;
    struct gpu_candidate *c;
    size_t n, target = registry_index(sup, op->svc);
    struct run *run = run_find(sup, op->svc);

    take_pending_manifest(sup, op->svc);
    c = gpu_candidates(sup, &n);
    if (gpu_decide_now(sup, c, n, target, op->force, &verdict) < 0) {
        free(c);
        op_finish(op, SUPERVISOR_DRIVER_FAILED, NULL, "the GPU arbiter refused the request");
        return false;
    }
    free(c);
    switch (verdict.kind) {
    case GPU_ALREADY:
        if (run && run->reserved) {
            op->phase = OP_GPU_WAIT; /* another start of it waits for the GPU: join it */
            return true;
        }
        if (op->wait_healthy && run && run->status.state == STATE_STARTING) {
            op->phase = OP_STARTED; /* wait with it */
            return true;
        }
        op_finish(op, SUPERVISOR_ALREADY, NULL, NULL);
        return false;
    case GPU_CONFLICT:
    case GPU_IMPOSSIBLE:
        op_refuse(op, &verdict);
        gpu_verdict_done(&verdict);
        return false;
    case GPU_GO:
        op_begin_start(op);
        return true;
    case GPU_PREEMPT:
        break;
    }
    /* Reserve the devices for the target, then see every holder there gone. */
    run = run_of(sup, op->svc);
    run->reserved = true;
    run->reserved_devices = verdict.devices;
    run->last_used_ms = (uint64_t)unix_ms();
    op->phase = OP_GPU_WAIT;
    supervisor_gpu_publish(sup);
    for (size_t i = 0; i < verdict.n_holders; i++)
        preempt(op, registry_at(sup->reg, verdict.holders[i]));
    gpu_verdict_done(&verdict);
    return true;
}

/* What op's service is doing, for op_next(). */
static struct op_view op_view(struct supervisor *sup, const struct supervisor_op *op)
{
    const struct run *run = run_find(sup, op->svc);
    struct op_view v = {
        .state = run ? run->status.state : STATE_STOPPED,
        .lingers = run_lingers(run),
        .driver_starting = run && run->driver_starting,
        .wait_healthy = op->wait_healthy,
        .failure = run ? run->failure : LIFECYCLE_CAUSE_NONE,
    };

    if (op->phase == OP_GPU_WAIT)
        v.gpu_free = supervisor_gpu_free_for(sup, op->svc);
    return v;
}

/* One pass over the pending operations; returns after the first that changed anything,
 * true then, as callbacks may have changed the list. */
static bool ops_settle_once(struct supervisor *sup)
{
    for (struct supervisor_op *op = sup->ops; op; op = op->next) {
        struct op_view v = op_view(sup, op);
        const struct run *run = run_find(sup, op->svc);
        const char *why = run && run->last_error ? run->last_error : "it failed";

        switch (op_next(op->phase, &v)) {
        case OP_WAIT:
            continue;
        case OP_ARBITRATE:
            CRASH_POINT("restart-old-stopped");
            op->phase = OP_NEW;
            op_arbitrate(op);
            break;
        case OP_BEGIN_START:
            op_begin_start(op);
            break;
        case OP_DONE_OK:
            op_finish(op, SUPERVISOR_OK, NULL, NULL);
            break;
        case OP_DONE_TIMED_OUT:
            op_finish(op, SUPERVISOR_TIMED_OUT, NULL, why);
            break;
        case OP_DONE_FAILED:
            op_finish(op, SUPERVISOR_DRIVER_FAILED, NULL, why);
            break;
        case OP_DONE_CANCELLED:
            op_finish(op, SUPERVISOR_CANCELLED, NULL,
                      "a stop asked after this start stopped the service");
            break;
        }
        return true;
    }
    return false;
}

/* Answers what the latest changes settled, and lets GPU waiters go when they can. It is
 * called again from inside what it triggers (a start that settles at once): the inner
 * call only asks the outer one for another pass, so no operation is used after it was
 * answered and freed. */
void ops_settle(struct supervisor *sup)
{
    if (sup->settling) {
        sup->settle_again = true;
        return;
    }
    sup->settling = true;
    do {
        sup->settle_again = false;
        while (ops_settle_once(sup))
            ;
    } while (sup->settle_again);
    sup->settling = false;
}

/* True when a restart of svc stops it first. */
static bool restart_stops_first(const struct supervisor *sup, const struct service *svc)
{
    const struct run *run = run_find(sup, svc);
    enum service_state state = run ? run->status.state : STATE_STOPPED;

    return state == STATE_STARTING || state == STATE_RUNNING || state == STATE_UNHEALTHY;
}

/* The GPU rule's verdict on op's start as things are now (GPU_CONFLICT on a refusal);
 * gpu_verdict_done() frees it. */
static struct gpu_verdict op_verdict(struct supervisor_op *op)
{
    struct supervisor *sup = op->sup;
    struct gpu_verdict verdict = {.kind = GPU_CONFLICT};
    size_t n;
    struct gpu_candidate *c = gpu_candidates(sup, &n);

    if (gpu_decide_now(sup, c, n, registry_index(sup, op->svc), op->force, &verdict) < 0)
        verdict.kind = GPU_CONFLICT;
    free(c);
    return verdict;
}

/* The start's intent is on disk (or could not be written): now it is carried out. */
static void on_start_intent(void *data, int result)
{
    struct op_token *t = data;
    struct supervisor *sup = t->sup;
    struct supervisor_op *op = op_from_token(t, result, &sup->ops, false);
    char message[512];

    if (!op)
        return; /* answered meanwhile (the daemon stops...) */
    if (result < 0) {
        snprintf(message, sizeof(message),
                 "the state folder %s cannot be written (%s): nothing is started that a "
                 "restarted daemon could not find",
                 sup->config->state_dir, strerror(-result));
        op_finish(op, SUPERVISOR_UNRECORDED, NULL, message);
        ops_settle(sup);
        return;
    }
    state_written_ok(sup);
    if (op->restart)
        CRASH_POINT("restart-intent-written");
    else if (op->force)
        CRASH_POINT("force-intent-written");
    else
        CRASH_POINT("start-intent-written");
    if (op->restart && restart_stops_first(sup, op->svc)) {
        op->phase = OP_STOP_FIRST;
        run_event(run_of(sup, op->svc), LIFECYCLE_STOP);
    } else if (!op_arbitrate(op)) {
        return;
    }
    ops_settle(sup);
}

/* Decides a start that nothing holds back any more: answered at once, or carried out
 * after its intent is on disk. Returns op while it is pending, else NULL. */
static struct supervisor_op *start_decide(struct supervisor_op *op)
{
    struct supervisor *sup = op->sup;
    struct service *svc = op->svc;
    struct gpu_verdict verdict;
    char message[512];

    take_pending_manifest(sup, svc);
    if (supervisor_unavailable(svc, message, sizeof(message))) {
        op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, message);
        return NULL;
    }
    verdict = op_verdict(op);
    if (!(op->restart && restart_stops_first(sup, svc)) && verdict.kind != GPU_GO &&
        verdict.kind != GPU_PREEMPT) {
        /* Nothing to do (it runs) or refused: decided and answered here, nothing written. */
        gpu_verdict_done(&verdict);
        if (!op_arbitrate(op))
            return NULL;
        ops_settle(sup);
        return op_pending(sup, op) ? op : NULL;
    }
    /* Write ahead: the start (and the stops it makes) on disk before anything is done. */
    intent_set(sup, svc->name, "starting", op->force, NULL);
    if (verdict.kind == GPU_PREEMPT)
        for (size_t i = 0; i < verdict.n_holders; i++)
            intent_set(sup, registry_at(sup->reg, verdict.holders[i])->name, "stopped", false,
                       svc->name);
    gpu_verdict_done(&verdict);
    runs_record_then(sup, on_start_intent, op_token(op));
    return op;
}

struct supervisor_op *supervisor_start(struct supervisor *sup, struct service *svc, bool force,
                                       bool wait_healthy, bool restart, supervisor_done_fn done,
                                       void *data)
{
    struct supervisor_op *op = op_new(sup, svc, OP_START, done, data);

    op->force = force;
    op->wait_healthy = wait_healthy;
    op->restart = restart;
    op_queue(op);
    if (sup->shutting_down) {
        op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, "the daemon is stopping");
        return NULL;
    }
    if (sup->adopting) {
        /* What runs is not known yet (a GPU holder may be among it): decided after. */
        op->phase = OP_ADOPT_WAIT;
        return op;
    }
    return start_decide(op);
}

/* A stop of a service that does not run still removes what its last run left (a compose
 * project's exited containers, as `docker compose down` does); the stop waits for it. */
static void stop_leftovers(struct supervisor *sup, struct service *svc)
{
    const struct driver *driver = driver_for(svc->manifest);
    struct run *run = run_find(sup, svc);
    enum service_state state = run ? run->status.state : STATE_STOPPED;

    if (!driver || !driver->leftovers || run_lingers(run) ||
        (state != STATE_STOPPED && state != STATE_FAILED))
        return;
    run = run_of(sup, svc);
    run->stop_timeout_ms = svc->manifest->stop_timeout_ms;
    if (driver->leftovers(svc->manifest, &run_driver_events, run, &run->instance) < 0)
        log_warning("%s: cannot remove what its last run left", svc->name);
    supervisor_hold_sync(sup, svc);
}

static void stop_carry_out(struct supervisor_op *op);

/* The stop's intent is on disk, or could not be written: a stop runs anyway. */
static void on_stop_intent(void *data, int result)
{
    struct op_token *t = data;
    struct supervisor *sup = t->sup;
    struct supervisor_op *op = op_from_token(t, result, &sup->ops, false);

    if (!op)
        return;
    if (result == 0)
        state_written_ok(sup);
    CRASH_POINT("stop-intent-written");
    stop_carry_out(op);
}

/* A stop whose intent is on disk, once what runs is known: carried out. */
static void stop_carry_out(struct supervisor_op *op)
{
    struct supervisor *sup = op->sup;
    struct service *svc;
    struct run *run;

    svc = op->svc;
    op->phase = OP_STOP_WAIT;
    /* A start that waits for the GPU gives up its turn. */
    ops_finish_where(sup, svc, OP_START, true, SUPERVISOR_CANCELLED, NULL,
                     "a stop came before it could start");
    stop_leftovers(sup, svc); /* before the event, whose NOTIFY may answer the stop */
    run = run_find(sup, svc);
    if (run)
        run_event(run, LIFECYCLE_STOP);
    CRASH_POINT("stop-signalled");
    ops_settle(sup);
}

/* Writes the stop's intent, then carries it out (on_stop_intent). */
static void stop_write_intent(struct supervisor_op *op)
{
    op->phase = OP_NEW; /* until its intent is on disk */
    intent_set(op->sup, op->svc->name, "stopped", false, NULL);
    runs_record_then(op->sup, on_stop_intent, op_token(op));
}

struct supervisor_op *supervisor_stop(struct supervisor *sup, struct service *svc,
                                      supervisor_done_fn done, void *data)
{
    struct supervisor_op *op = op_new(sup, svc, OP_STOP, done, data);

    op_queue(op);
    if (sup->adopting) {
        /* What it stops may be found running; its intent is written then, after the
         * adoption has read the state file's records. */
        op->phase = OP_ADOPT_WAIT;
        return op;
    }
    stop_write_intent(op);
    return op;
}

/* The operation asked first of those that wait for the adoption, or NULL. */
static struct supervisor_op *oldest_adopt_waiter(struct supervisor *sup)
{
    struct supervisor_op *found = NULL;

    for (struct supervisor_op *op = sup->ops; op; op = op->next)
        if (op->phase == OP_ADOPT_WAIT)
            found = op;
    return found;
}

void supervisor_adopted(struct supervisor *sup)
{
    struct supervisor_op *op;

    /* Oldest first (the list is newest first); each may answer and free others, so the
     * walk starts again after each. */
    while ((op = oldest_adopt_waiter(sup))) {
        if (op->kind == OP_STOP) {
            stop_write_intent(op);
        } else {
            op->phase = OP_NEW;
            start_decide(op);
        }
    }
    ops_settle(sup);
}

void supervisor_op_cancel(struct supervisor_op *op)
{
    if (!op)
        return;
    op->cancelled = true;
    if ((op->phase == OP_GPU_WAIT || (op->phase == OP_ADOPT_WAIT && op->kind == OP_START)) &&
        op_pending(op->sup, op)) {
        /* Nobody waits for it: it must not keep the GPU reserved. */
        struct supervisor *sup = op->sup;
        op_finish(op, SUPERVISOR_CANCELLED, NULL, NULL);
        ops_settle(sup);
    }
}

/* --- status ----------------------------------------------------------------------- */

const struct service_status *supervisor_status(const struct supervisor *sup,
                                               const struct service *svc)
{
    static const struct service_status never_run = {.state = STATE_STOPPED};
    const struct run *run = run_find(sup, svc);

    return run ? &run->status : &never_run;
}

void supervisor_set_idle_stop(struct supervisor *sup, struct service *svc, int64_t at_ms)
{
    struct run *run = run_find(sup, svc);

    if (!run || run->status.idle_stop_at_ms == at_ms)
        return;
    run->status.idle_stop_at_ms = at_ms;
    run_changed(run);
}

void supervisor_set_waiting(struct supervisor *sup, struct service *svc,
                            const struct service_wait *w)
{
    static const struct service_wait none;
    struct run *run = w ? run_of(sup, svc) : run_find(sup, svc);
    bool queue_changed;

    if (!w)
        w = &none;
    if (!run ||
        (run->status.waiting.since_ms == w->since_ms &&
         run->status.waiting.requests == w->requests &&
         run->status.waiting.priority == w->priority && run->status.waiting.swap == w->swap))
        return;
    queue_changed = !run->status.waiting.since_ms != !w->since_ms;
    run->status.waiting = *w;
    run_changed(run);
    if (queue_changed)
        supervisor_gpu_publish(sup);
}

enum supervisor_room supervisor_gpu_room(struct supervisor *sup, struct service *svc,
                                         json_t **ret_holders)
{
    struct gpu_verdict v = {.kind = GPU_CONFLICT};
    size_t n;
    struct gpu_candidate *c = gpu_candidates(sup, &n);
    struct gpu_box box = {sup->gpus, sup->n_gpus};
    enum supervisor_room room;

    *ret_holders = NULL;
    if (gpu_decide(&box, c, n, registry_index(sup, svc), false, false, &v) < 0)
        v.kind = GPU_CONFLICT;
    free(c);
    switch (v.kind) {
    case GPU_GO:
    case GPU_ALREADY:
        room = SUPERVISOR_ROOM;
        break;
    case GPU_IMPOSSIBLE:
        room = SUPERVISOR_NO_ROOM_EVER;
        break;
    case GPU_CONFLICT:
    default:
        room = SUPERVISOR_NO_ROOM;
        *ret_holders = holder_names(sup, &v);
        break;
    }
    gpu_verdict_done(&v);
    return room;
}

uint64_t supervisor_generation(const struct supervisor *sup)
{
    return sup ? sup->generation : 0;
}

const char *supervisor_unavailable(const struct service *svc, char *buf, size_t size)
{
    const struct driver *d = driver_for(svc->manifest);

    if (!d) {
        snprintf(buf, size, "this daemon has no driver %s", manifest_driver_name(svc->manifest));
        return buf;
    }
    return d->available(svc->manifest, buf, size) < 0 ? buf : NULL;
}

const char *supervisor_state_problem(const struct supervisor *sup, char *buf, size_t size)
{
    int r = sup ? state_writer_error(sup->state_writer) : 0;

    if (r < 0) {
        snprintf(buf, size, "the state folder %s cannot be written (%s): starts are refused",
                 sup->config->state_dir, strerror(-r));
        return buf;
    }
    if (sup && sup->state_problem) {
        snprintf(buf, size, "%s", sup->state_problem);
        return buf;
    }
    return NULL;
}

bool supervisor_writing(const struct supervisor *sup)
{
    return sup && state_writer_busy(sup->state_writer);
}

json_t *supervisor_drivers_info(void)
{
    json_t *info = json_object();

    for (const struct driver *const *d = drivers_all(); *d; d++)
        if ((*d)->info)
            json_object_set_new(info, (*d)->name, (*d)->info());
    return info;
}

/* --- what the hub says ------------------------------------------------------------- */

/* The log's line for a change of state or a preemption (relayd's host-check lines); runs
 * of services that left the registry go with them. */
static void on_event(void *data, const struct event *ev)
{
    struct supervisor *sup = data;
    json_t *removed, *name;
    size_t i;

    switch (ev->kind) {
    case EVENT_STATE: {
        const char *reason = json_string_value(json_object_get(ev->data, "reason"));
        const char *from = json_string_value(json_object_get(ev->data, "from"));
        const char *to = json_string_value(json_object_get(ev->data, "to"));
        if (reason)
            log_info("%s: %s -> %s (%s)", ev->service, from, to, reason);
        else
            log_info("%s: %s -> %s", ev->service, from, to);
        break;
    }
    case EVENT_PREEMPT:
        log_info("%s: stopping it to free the GPU for %s", ev->service,
                 json_string_value(json_object_get(ev->data, "for")));
        break;
    case EVENT_DISCOVERY:
        removed = json_object_get(ev->data, "removed");
        json_array_foreach(removed, i, name)
        {
            struct run *run = strmap_remove(sup->runs, json_string_value(name));
            follow_service_removed(sup, json_string_value(name));
            if (run)
                run_free(run);
        }
        break;
    case EVENT_HEALTH:
    case EVENT_GPU:
    case EVENT_GPU_OVERUSE: /* gpu_use.c logs it */
        break;
    }
}

/* --- the supervisor ---------------------------------------------------------------- */

struct supervisor *supervisor_new(uv_loop_t *loop, struct registry *reg, struct fetcher *fetcher,
                                  const struct config *config, struct events *hub)
{
    struct supervisor *sup = xcalloc(1, sizeof(*sup));
    struct driver_context ctx = {loop, fetcher, config, &supervisor_outside, sup};

    sup->loop = loop;
    sup->reg = reg;
    sup->fetcher = fetcher;
    sup->config = config;
    sup->hub = hub;
    sup->runs = strmap_new();
    sup->sub = events_subscribe(hub, on_event, sup);
    sup->state_writer = state_writer_new(loop, config->state_dir);
    sup->intents = json_object();
    sup->recorded = json_object();
    sup->boot_id = state_boot_id();
    sup->gpus = xcalloc(1, sizeof(*sup->gpus)); /* one GPU of unknown size until told */
    sup->n_gpus = 1;
    logs_rotation_start(sup);
    for (const struct driver *const *d = drivers_all(); *d; d++)
        if ((*d)->setup)
            (*d)->setup(&ctx);
    return sup;
}

void supervisor_shutdown(struct supervisor *sup, bool stop_services)
{
    size_t n = registry_count(sup->reg);

    sup->shutting_down = true;
    logs_rotation_stop(sup);
    /* Starts still waiting (for the GPU, or for health) are answered now, and so are
     * stops that waited for the adoption. */
    ops_finish_where(sup, NULL, OP_START, false, SUPERVISOR_UNAVAILABLE, NULL,
                     "the daemon is stopping");
    for (struct supervisor_op *op; (op = oldest_adopt_waiter(sup));)
        op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, "the daemon is stopping");
    if (stop_services)
        for (size_t i = 0; i < n; i++) {
            struct run *run = run_find(sup, registry_at(sup->reg, i));
            if (run)
                run_event(run, LIFECYCLE_STOP);
        }
    else if (!sup->adopting) /* else the state file still holds what it recorded */
        runs_record(sup);
}

bool supervisor_busy(struct supervisor *sup)
{
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        const struct run *run = run_find(sup, registry_at(sup->reg, i));
        if (run && run->instance)
            return true;
    }
    return false;
}

static void run_free_value(void *run)
{
    run_free(run);
}

void supervisor_free(struct supervisor *sup)
{
    if (!sup)
        return;
    while (sup->ops) {
        struct supervisor_op *op = sup->ops;
        sup->ops = op->next;
        op_free(op);
    }
    while (sup->answering) {
        struct supervisor_op *op = sup->answering;
        sup->answering = op->next;
        op_free(op);
    }
    follow_free_all(sup); /* before the drivers' teardown */
    strmap_free(sup->runs, run_free_value);
    json_decref(sup->adopt_doc);
    for (const struct driver *const *d = drivers_all(); *d; d++)
        if ((*d)->teardown)
            (*d)->teardown();
    events_unsubscribe(sup->hub, sup->sub);
    state_writer_free(sup->state_writer); /* what it still writes, it writes */
    json_decref(sup->intents);
    json_decref(sup->recorded);
    free(sup->boot_id);
    free(sup->state_problem);
    free(sup->gpu_holder);
    free(sup->gpu_published);
    free(sup->gpus);
    logs_rotation_free(sup); /* frees sup once its timer is closed */
}
