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

static void on_appeared(void *data, const struct driver *d, const char *key)
{
    struct supervisor *sup = data;
    struct service *svc = service_by_key(sup, d, key);
    struct run *run;

    if (!svc || sup->shutting_down || !d->adopt)
        return;
    run = run_find(sup, svc);
    if (run && (run_lingers(run) || run->reserved ||
                (run->status.state != STATE_STOPPED && run->status.state != STATE_FAILED)))
        return; /* a start of it that waits for the GPU will find it running */
    run = run_of(sup, svc);
    if (d->adopt(sup->loop, svc->manifest, NULL, &run_driver_events, run, &run->instance) < 0)
        return;
    log_info("%s: it runs, started outside the daemon: adopted", svc->name);
    run->instance_gpu = svc->manifest->gpu_required;
    if (svc->manifest->gpu_required) {
        char message[160];
        if (!supervisor_gpu_free_for(sup, svc))
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
    run_adopted(run, unix_ms());
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

    if (run && run->instance)
        return true;
    if (!d || !d->adopt)
        return false;
    run = run_of(sup, svc);
    if (d->adopt(sup->loop, svc->manifest, NULL, &run_driver_events, run, &run->instance) < 0)
        return false;
    log_info("%s: found running through its driver: adopted", svc->name);
    run_adopted(run, unix_ms());
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
        struct run *run;

        if (!d || strcmp(json_string_value(json_object_get(entry, "driver")) ?: "", d->name) != 0) {
            log_warning("%s (pid %d) was started by an earlier daemon but is no longer a "
                        "service here: left alone",
                        name, (int)pid);
            continue;
        }
        run = run_of(sup, svc);
        if (run->instance) {
            /* Already found running by its driver (appeared): the record adds its GPU. */
            run->instance_gpu =
                run->instance_gpu || json_is_true(json_object_get(entry, "gpu_required"));
            continue;
        }
        r = d->adopt
                ? d->adopt(sup->loop, svc->manifest, entry, &run_driver_events, run, &run->instance)
                : -ESRCH;
        if (r < 0) {
            log_info("%s: no longer running (pid %d): stopped", name, (int)pid);
            continue;
        }
        /* It holds the GPU if it was started needing it, whatever the manifest says now. */
        run->instance_gpu =
            svc->manifest->gpu_required || json_is_true(json_object_get(entry, "gpu_required"));
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
