/* Services that run though this daemon did not start them: what an earlier daemon started
 * and recorded in the state folder, and what a driver sees started outside the daemon (a
 * compose project brought up by hand). Either runs, and holds the GPU if it needs one,
 * like any other. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/supervisor_impl.h"
#include "lib/alloc.h"
#include "lib/log.h"

/* The service of driver d that its backend knows as key, or NULL. */
static struct service *service_by_key(struct supervisor *sup, const struct driver *d,
                                      const char *key)
{
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        char *k;
        bool same;

        if (driver_for(svc->manifest) != d)
            continue;
        k = driver_instance_key(d, svc->name);
        same = strcmp(k, key) == 0;
        free(k);
        if (same)
            return svc;
    }
    return NULL;
}

json_t *recorded_manifest_new(const struct manifest *m, size_t *budget)
{
    json_t *source;

    if (!m->source || m->source_len > *budget / 2)
        return NULL;
    source = json_stringn(m->source, m->source_len);
    if (!source)
        return NULL; /* not UTF-8 (a UTF-16 file): the next daemon reads the disk's */
    *budget -= m->source_len * 2;
    return json_pack("{s:o, s:s}", "source", source, "dir", m->dir);
}

/* The manifest service name was started with, from record's "manifest" (runs_record):
 * parsed as it was then, or NULL when the record has none (an older daemon's) or it does
 * not parse any more (logged): then the manifest on disk stands for what runs. */
static struct manifest *recorded_manifest(const char *name, json_t *record)
{
    json_t *recorded = json_object_get(record, "manifest");
    json_t *source = json_object_get(recorded, "source");
    const char *dir = json_string_value(json_object_get(recorded, "dir"));
    struct diags errors = {0}, warnings = {0};
    struct manifest *m = NULL;

    if (!recorded)
        return NULL;
    if (!json_is_string(source) || !dir || *dir != '/') {
        log_warning("%s: the state file's record of the manifest it was started with is not "
                    "readable: shown with the manifest on disk",
                    name);
        return NULL;
    }
    if (manifest_parse(json_string_value(source), json_string_length(source), dir, &m, NULL,
                       &errors, &warnings) < 0) {
        log_warning("%s: the manifest it was started with (recorded in the state file) no "
                    "longer parses (line %d: %s): shown with the manifest on disk",
                    name, errors.n ? errors.items[0].line : 0,
                    errors.n ? errors.items[0].message : "?");
    } else if (strcmp(m->name, name) != 0) {
        log_warning("%s: the manifest recorded for it in the state file is named %s: shown "
                    "with the manifest on disk",
                    name, m->name);
        manifest_free(m);
        m = NULL;
    }
    diags_clear(&errors);
    diags_clear(&warnings); /* a newer daemon's fields: what this one knows is enough */
    return m;
}

/* Where an adopted GPU service runs: what runs says (its CUDA_VISIBLE_DEVICES), else the
 * state file's record, else GPU 0 (a run found by the driver alone, or recorded by a
 * daemon that knew one GPU); checked against the box the inventory read. */
static void adopt_placement(struct supervisor *sup, const struct service *svc,
                            const struct driver *d, struct run *run, json_t *record)
{
    uint64_t recorded = (uint64_t)json_integer_value(json_object_get(record, "gpu_devices"));
    uint64_t seen = 0, box = sup->n_gpus >= 64 ? UINT64_MAX : (UINT64_C(1) << sup->n_gpus) - 1;
    char a[256], b[256];

    run->gpu_devices = recorded;
    if (d->gpu_devices && d->gpu_devices(run->instance, &seen) == 0) {
        if (recorded && seen != recorded) {
            gpu_devices_format(seen, a, sizeof(a));
            gpu_devices_format(recorded, b, sizeof(b));
            log_warning("%s: runs on GPUs %s by its environment, not %s as recorded: its "
                        "environment wins",
                        svc->name, a, b);
        }
        run->gpu_devices = seen;
    }
    if (run->gpu_devices & ~box) {
        gpu_devices_format(run->gpu_devices, a, sizeof(a));
        log_warning("%s: runs on GPUs %s, and this box has %zu: placement counts it on those "
                    "it has",
                    svc->name, a, sup->n_gpus);
    }
}

/* Takes over a run of svc through driver d: with the manifest it was started with when
 * record keeps it (the one on disk, when it differs, waits as pending). */
static int adopt_run(struct supervisor *sup, struct service *svc, const struct driver *d,
                     json_t *record, json_t *driver_record, struct manifest *started)
{
    struct run *run = run_of(sup, svc);
    int r = d->adopt(sup->loop, started ? started : svc->manifest, driver_record,
                     &run_driver_events, run, &run->instance);

    if (r < 0) {
        manifest_free(started);
        return r;
    }
    if (started)
        registry_set_running(sup->reg, svc, started);
    /* It holds the GPU if it was started needing it, whatever the manifest says now. */
    run->instance_gpu =
        svc->manifest->gpu_required || json_is_true(json_object_get(record, "gpu_required"));
    run->gpu_need = supervisor_gpu_need(started ? started : svc->manifest);
    run->gpu_enforce = (started ? started : svc->manifest)->gpu.enforce;
    if (run->instance_gpu)
        adopt_placement(sup, svc, d, run, record);
    run->last_used_ms = (uint64_t)unix_ms();
    return 0;
}

/* The record an earlier daemon kept of svc for its driver to find (sup->recorded):
 * borrowed, NULL when none. */
static json_t *recorded_for(struct supervisor *sup, const struct service *svc)
{
    return json_object_get(sup->recorded, svc->name);
}

/* What a resumed or finished operation did: logged (nobody waits for it). */
static void on_resumed(void *data, struct service *svc, const struct supervisor_result *res)
{
    (void)data;
    if (res->outcome == SUPERVISOR_OK || res->outcome == SUPERVISOR_ALREADY)
        log_info("%s: the interrupted operation is finished: %s", svc->name,
                 lifecycle_state_name(res->status->state));
    else
        log_warning("%s: not resumed: %s", svc->name, res->message ?: "refused");
}

/* A service found running whose last intent was a stop (a stop or preemption cut short by
 * the daemon's end): the stop is finished. */
static void finish_stop(struct supervisor *sup, struct service *svc)
{
    const struct run *run = run_find(sup, svc);

    if (!run || !run->instance || strcmp(intent_of(sup, svc->name) ?: "", "stopped") != 0)
        return;
    log_info("%s: it runs, but its last intent was a stop: stopping it", svc->name);
    supervisor_stop(sup, svc, on_resumed, NULL);
}

/* When a recorded run started (its record's), else now. */
static int64_t recorded_started_at(json_t *record)
{
    json_int_t at = json_integer_value(json_object_get(record, "started_at_ms"));

    return at > 0 ? at : unix_ms();
}

static void on_appeared(void *data, const struct driver *d, const char *key)
{
    struct supervisor *sup = data;
    struct service *svc = service_by_key(sup, d, key);
    struct run *run;
    json_t *record;

    if (!svc || sup->shutting_down || !d->adopt)
        return;
    if (sup->adopting)
        return; /* the records first: the drivers are asked again after (adopt_now()) */
    run = run_find(sup, svc);
    if (run && (run_lingers(run) || run->reserved ||
                (run->status.state != STATE_STOPPED && run->status.state != STATE_FAILED)))
        return; /* a start of it that waits for the GPU will find it running */
    record = json_incref(recorded_for(sup, svc));
    if (adopt_run(sup, svc, d, record, NULL, recorded_manifest(svc->name, record)) < 0) {
        json_decref(record);
        return;
    }
    json_object_del(sup->recorded, svc->name);
    run = run_of(sup, svc);
    if (record)
        log_info("%s: it runs, started by an earlier daemon: adopted", svc->name);
    else
        log_info("%s: it runs, started outside the daemon: adopted", svc->name);
    if (run->instance_gpu) {
        char message[160];
        if (!record && !supervisor_gpu_free_for(sup, svc))
            log_warning("%s: started outside the daemon while another service holds the GPU",
                        svc->name);
        /* Starts waiting for the GPU lost it to this one. */
        snprintf(message, sizeof(message), "%s is using the GPU", svc->name);
        for (struct supervisor_op *o = sup->ops, *next; o; o = next) {
            next = o->next;
            if (o->phase == OP_GPU_WAIT && o->svc != svc) {
                op_finish(o, SUPERVISOR_CONFLICT, svc->name, message);
                next = sup->ops;
            }
        }
    }
    run_adopted(run, recorded_started_at(record));
    json_decref(record);
    ops_settle(sup);
    finish_stop(sup, svc);
}

static void adopt_now(struct supervisor *sup, json_t *doc);

/* True when every driver can say what runs (driver.h: settled). */
static bool drivers_settled(void)
{
    for (const struct driver *const *d = drivers_all(); *d; d++)
        if ((*d)->settled && !(*d)->settled())
            return false;
    return true;
}

/* A driver's backend (the Docker engine) went or came back: its services' status, which
 * says so (supervisor_unavailable), changed; the adoption that waited for it goes on. */
static void on_backend(void *data, const struct driver *d, const char *error)
{
    struct supervisor *sup = data;
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        if (driver_for(svc->manifest) == d)
            run_changed(run_of(sup, svc));
    }
    if (sup->adopting && !sup->shutting_down && drivers_settled()) {
        json_t *doc = sup->adopt_doc;

        sup->adopting = false;
        sup->adopt_doc = NULL;
        adopt_now(sup, doc);
        /* What a driver saw running meanwhile (appeared) was left for now: asked again. */
        supervisor_services_changed(sup);
        supervisor_adopted(sup);
    }
}

const struct driver_outside supervisor_outside = {.appeared = on_appeared, .backend = on_backend};

void supervisor_services_changed(struct supervisor *sup)
{
    size_t n = registry_count(sup->reg);

    for (const struct driver *const *d = drivers_all(); *d; d++) {
        if (!(*d)->in_use)
            continue;
        for (size_t i = 0; i < n; i++) {
            if (driver_for(registry_at(sup->reg, i)->manifest) == *d) {
                (*d)->in_use(); /* what it runs may run already */
                break;
            }
        }
    }
}

/* A service that its intent says runs, found through its driver though the state file has
 * no record of its process (a start cut short before it was recorded): adopted. True when
 * it runs now. */
static bool adopt_unrecorded(struct supervisor *sup, struct service *svc)
{
    const struct driver *d = driver_for(svc->manifest);
    struct run *run = run_find(sup, svc);
    json_t *record = recorded_for(sup, svc);

    if (run && run->instance)
        return true;
    if (!d || !d->adopt)
        return false;
    if (adopt_run(sup, svc, d, record, NULL, recorded_manifest(svc->name, record)) < 0)
        return false;
    log_info("%s: found running through its driver: adopted", svc->name);
    run_adopted(run_find(sup, svc), recorded_started_at(record));
    json_object_del(sup->recorded, svc->name);
    return true;
}

/* A start to resume, in the order they go: higher priority first, then the last GPU
 * holder, then by name. */
struct resume {
    struct service *svc;
    bool force;
    bool holder;
};

static int resume_order(const void *a, const void *b)
{
    const struct resume *x = a, *y = b;

    if (x->svc->manifest->priority != y->svc->manifest->priority)
        return x->svc->manifest->priority > y->svc->manifest->priority ? -1 : 1;
    if (x->holder != y->holder)
        return x->holder ? -1 : 1;
    return strcmp(x->svc->name, y->svc->name);
}

/* Finishes what the last intents say was under way: a stop of what still runs, a start
 * whose process was not recorded; after a host reboot (rebooted) also starts what was
 * running, unless no_resume. */
static void resume_intents(struct supervisor *sup, json_t *intents, bool rebooted,
                           const char *last_holder)
{
    size_t n = json_object_size(intents), k = 0;
    struct resume *starts = xcalloc(n + 1, sizeof(*starts));
    const char *name;
    json_t *entry;

    json_object_foreach(intents, name, entry)
    {
        struct service *svc = registry_find(sup->reg, name);
        const char *intent = json_string_value(json_object_get(entry, "intent")) ?: "";
        bool starting = strcmp(intent, "starting") == 0, running = strcmp(intent, "running") == 0;

        if (!svc || (!starting && !running))
            continue;
        if (adopt_unrecorded(sup, svc)) {
            if (starting) /* what runs is what the start was for (a restart's old run) */
                intent_set(sup, name, "running", false, NULL);
            continue;
        }
        if (rebooted && sup->config->no_resume) {
            log_info("%s: it ran before the host rebooted: not started again (no_resume)", name);
            continue;
        }
        if (starting)
            log_info("%s: its start was cut short: finishing it", name);
        else if (rebooted)
            log_info("%s: it ran before the host rebooted: starting it again", name);
        else
            continue; /* it ended while no daemon watched: stopped */
        starts[k].svc = svc;
        starts[k].force = json_is_true(json_object_get(entry, "force"));
        starts[k].holder = last_holder && strcmp(last_holder, name) == 0;
        k++;
    }
    qsort(starts, k, sizeof(*starts), resume_order);
    for (size_t i = 0; i < k; i++)
        supervisor_start(sup, starts[i].svc, starts[i].force, false, false, on_resumed, NULL);
    free(starts);
}

/* The state file, or NULL when there is none or it cannot be used (said in /health: a
 * corrupt one is set aside for a person to read; what runs is found through the drivers). */
static json_t *state_read(struct supervisor *sup)
{
    json_t *doc = NULL;
    char err[512], aside[1024];
    int r = state_load(sup->config->state_dir, &doc, err, sizeof(err));

    if (r == -EINVAL || r == -EFBIG) {
        if (state_set_aside(sup->config->state_dir, aside, sizeof(aside)) < 0)
            snprintf(aside, sizeof(aside), "(cannot be moved: %s)", strerror(errno));
        free(sup->state_problem);
        sup->state_problem = xasprintf("the state file was corrupt (%s); it is kept as %s, and "
                                       "what it recorded was not adopted",
                                       err, aside);
        log_error("%s", sup->state_problem);
        return NULL;
    }
    if (r < 0) {
        free(sup->state_problem);
        sup->state_problem = xasprintf("the state file cannot be read: %s", err);
        log_error("%s; starting with no services adopted", err);
        return NULL;
    }
    return doc;
}

void supervisor_adopt(struct supervisor *sup)
{
    json_t *doc;

    supervisor_services_changed(sup);
    doc = state_read(sup); /* now: nothing written meanwhile may hide what it recorded */
    if (!drivers_settled()) {
        /* A compose project recorded as running, or a GPU holder, may be among what the
         * engine's first list shows: adopting before it would start a second copy or
         * grant the GPU twice. The engine answers, or is known unreachable, within
         * DOCKER_LIST_MS; operations asked meanwhile wait (OP_ADOPT_WAIT). */
        log_info("adopting once the Docker engine has said what runs");
        sup->adopting = true;
        sup->adopt_doc = doc;
        return;
    }
    adopt_now(sup, doc);
}

/* Takes over what the state file doc (NULL: none) recorded, then finishes the intents.
 * Takes doc. */
static void adopt_now(struct supervisor *sup, json_t *doc)
{
    json_t *services, *entry, *intents;
    const char *name, *boot_id, *last_holder;
    bool rebooted;
    int r;

    if (!doc)
        return;
    intents = json_object_get(doc, "intents");
    if (json_is_object(intents))
        json_object_update(sup->intents, intents);
    boot_id = json_string_value(json_object_get(doc, "boot_id"));
    last_holder = json_string_value(json_object_get(doc, "gpu_holder"));
    rebooted = boot_id && *boot_id && *sup->boot_id && strcmp(boot_id, sup->boot_id) != 0;
    if (rebooted)
        log_info("the host rebooted since the state was written: nothing of it runs%s",
                 sup->config->no_resume ? " (no_resume: nothing is started again)" : "");
    services = rebooted ? NULL : json_object_get(doc, "services");
    json_object_foreach(services, name, entry)
    {
        struct service *svc = registry_find(sup->reg, name);
        const struct driver *d = svc ? driver_for(svc->manifest) : NULL;
        json_int_t pid = json_integer_value(json_object_get(entry, "pid"));
        struct manifest *started;
        bool added = false;
        struct run *run;

        if (d && json_is_true(json_object_get(entry, "found_by_driver"))) {
            json_object_set(sup->recorded, name, entry); /* on_appeared() takes it */
            continue;
        }
        /* The manifest it was started with names its driver (the disk's may name another). */
        started = recorded_manifest(name, entry);
        if (started)
            d = driver_for(started);
        if (!d || strcmp(json_string_value(json_object_get(entry, "driver")) ?: "", d->name) != 0) {
            log_warning("%s (pid %d) was started by an earlier daemon but is no longer a "
                        "service here: left alone",
                        name, (int)pid);
            manifest_free(started);
            continue;
        }
        if (!svc) {
            /* Its manifest broke, or its folder went, while no daemon watched: it runs on
             * the one it was started with, and holds what it holds, until it is stopped. */
            svc = registry_add_running(sup->reg, started);
            if (!svc) {
                manifest_free(started);
                continue;
            }
            started = NULL; /* the service's now */
            added = true;
        }
        run = run_find(sup, svc);
        if (run && run->instance) {
            manifest_free(started); /* held already (cannot be, but never twice) */
            continue;
        }
        r = d->adopt ? adopt_run(sup, svc, d, entry, entry, started) : -ESRCH;
        if (r < 0) {
            if (!d->adopt)
                manifest_free(started);
            if (added)
                registry_hold(sup->reg, svc, false); /* a rescan drops it */
            log_info("%s: no longer running (pid %d): stopped", name, (int)pid);
            continue;
        }
        run = run_find(sup, svc);
        run_adopted(run, json_integer_value(json_object_get(entry, "started_at_ms")));
        log_info("%s: adopted, pid %d, %s", name, (int)pid,
                 lifecycle_state_name(run->status.state));
    }
    resume_intents(sup, sup->intents, rebooted, last_holder);
    runs_record(sup);
    /* A stop cut short: what still runs is stopped (the list changes under the stops). */
    intents = json_copy(sup->intents);
    json_object_foreach(intents, name, entry)
    {
        struct service *svc = registry_find(sup->reg, name);
        if (svc)
            finish_stop(sup, svc);
    }
    json_decref(intents);
    json_decref(doc);
}
