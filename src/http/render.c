/* What every surface shows of the core, as JSON. */
#include <string.h>

#include "http/render.h"
#include "lib/json.h"
#include "lib/log.h"

static json_t *json_text_or_null(const char *s)
{
    return s ? json_text(s) : json_null();
}

static json_t *health_json(const struct health_result *h)
{
    if (!h->checked)
        return json_pack("{s:n, s:n, s:n, s:n, s:n}", "ok", "status_code", "latency_ms",
                         "checked_at", "error");
    return json_pack("{s:b, s:o, s:I, s:o, s:o}", "ok", h->ok, "status_code",
                     h->status_code ? json_integer(h->status_code) : json_null(), "latency_ms",
                     (json_int_t)h->latency_ms, "checked_at", json_time_ms(h->checked_at_ms),
                     "error", json_text_or_null(h->error));
}

json_t *render_status(const struct service *svc, const struct service_status *st)
{
    json_t *manifest = manifest_to_json(svc->manifest);
    const struct manifest *m = svc->manifest;
    char why[512];
    /* A driver that cannot work now (no Docker engine) says so whatever happened before. */
    const char *unavailable = supervisor_unavailable(svc, why, sizeof(why));
    json_t *status = json_pack(
        "{s:s, s:o, s:s, s:b, s:O, s:o, s:s, s:b, s:o, s:I, s:o, s:o, s:o, s:O}", "name", svc->name,
        "description", json_text(m->description), "driver", manifest_driver_name(m), "gpu_required",
        m->gpu_required, "ports", json_object_get(manifest, "ports"), "port",
        m->port ? json_integer(m->port) : json_null(), "state", lifecycle_state_name(st->state),
        "is_healthy", st->is_healthy, "started_at", json_time_ms(st->started_at_ms), "restarts",
        (json_int_t)st->restarts, "last_error",
        json_text_or_null(unavailable ? unavailable : st->last_error), "health",
        health_json(&st->health), "folder", json_text(svc->folder), "warnings", svc->warnings);
    json_decref(manifest);
    if (!status)
        fatal("cannot render the status of %s", svc->name);
    json_object_set_new(status, "gpu_warning", json_text_or_null(st->gpu_warning));
    json_object_set(status, "manifest_error",
                    svc->manifest_error ? svc->manifest_error : json_null());
    /* What the manifest on disk would change: it applies at the next start or restart. */
    json_object_set_new(status, "pending_changes", registry_pending_changes(svc) ?: json_null());
    return status;
}

json_t *render_services(struct registry *reg, const struct supervisor *sup)
{
    size_t n = registry_count(reg);
    json_t *a = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            a, render_status(registry_at(reg, i), supervisor_status(sup, registry_at(reg, i))));
    return a;
}

json_t *render_rediscovered(struct registry *reg, const struct supervisor *sup, json_t *diff)
{
    return json_pack("{s:o, s:O, s:O, s:O, s:O}", "services", render_services(reg, sup), "added",
                     json_object_get(diff, "added"), "removed", json_object_get(diff, "removed"),
                     "changed", json_object_get(diff, "changed"), "errors", registry_errors(reg));
}

json_t *render_invalid_manifest(json_t *err)
{
    return json_pack("{s:s, s:s+, s:O}", "error", "invalid_manifest", "message",
                     "the manifest of this service is invalid: ",
                     json_string_value(json_object_get(err, "message")), "manifest_error", err);
}
