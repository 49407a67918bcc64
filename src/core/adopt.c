/* Services that run though this daemon did not start them: what an earlier daemon started
 * and recorded in the state folder, and what a driver sees started outside the daemon (a
 * compose project brought up by hand). Either runs, and holds the GPU if it needs one,
 * like any other. */
#include <errno.h>
#include <stdio.h>
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
}

/* A driver's backend (the Docker engine) went or came back: its services' status, which
 * says so (supervisor_unavailable), changed. */
static void on_backend(void *data, const struct driver *d, const char *error)
{
    struct supervisor *sup = data;
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        if (driver_for(svc->manifest) == d)
            run_changed(run_of(sup, svc));
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

void supervisor_adopt(struct supervisor *sup)
{
    json_t *doc = NULL, *services, *entry;
    const char *name;
    char err[512];
    int r;

    supervisor_services_changed(sup);
    r = state_load(sup->config->state_dir, &doc, err, sizeof(err));
    if (r < 0) {
        log_error("%s; starting with no services adopted", err);
        return;
    }
    services = json_object_get(doc, "services");
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
    json_decref(doc);
    runs_record(sup);
}
