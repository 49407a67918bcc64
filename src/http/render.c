/* What every surface shows of the core, as JSON. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <microhttpd.h>

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
    /* When idle_timeout stops it, while that is pending (it runs, no proxied request). */
    json_object_set_new(status, "idle_stop_at",
                        st->idle_stop_at_ms &&
                                (st->state == STATE_RUNNING || st->state == STATE_UNHEALTHY)
                            ? json_time_ms(st->idle_stop_at_ms)
                            : json_null());
    /* Its start on demand waits for the GPU: in the queue, or for a swap. */
    json_object_set_new(status, "waiting",
                        st->waiting.since_ms
                            ? json_pack("{s:o, s:I, s:i, s:b}", "since",
                                        json_time_ms(st->waiting.since_ms), "requests",
                                        (json_int_t)st->waiting.requests, "priority",
                                        st->waiting.priority, "swap", st->waiting.swap)
                            : json_null());
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

/* The services a conflict names (new reference): a start that lost its turn to a forced
 * one names that one. */
static json_t *conflict_holders(const struct supervisor_result *res)
{
    if (res->holders)
        return json_incref(res->holders);
    return res->holder ? json_pack("[s]", res->holder) : json_array();
}

static json_t *error_body(const char *code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *error_body(const char *code, const char *fmt, ...)
{
    char message[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    return json_pack("{s:s, s:o}", "error", code, "message", json_text(message));
}

unsigned render_outcome(const struct service *svc, const struct supervisor_result *res,
                        json_t **ret)
{
    switch (res->outcome) {
    case SUPERVISOR_OK:
    case SUPERVISOR_ALREADY:
        *ret = render_status(svc, res->status);
        json_object_set(*ret, "preempted", res->preempted);
        return MHD_HTTP_OK;
    case SUPERVISOR_CONFLICT:
        *ret = json_pack("{s:s, s:o, s:o, s:o}", "error", "gpu_conflict", "message",
                         json_text(res->message), "holder", json_text(res->holder), "holders",
                         conflict_holders(res));
        return MHD_HTTP_CONFLICT;
    case SUPERVISOR_IMPOSSIBLE:
        *ret =
            json_pack("{s:s, s:o}", "error", "gpu_impossible", "message", json_text(res->message));
        if (res->detail)
            json_object_update(*ret, res->detail);
        return MHD_HTTP_UNPROCESSABLE_CONTENT;
    case SUPERVISOR_DRIVER_FAILED:
        *ret = error_body("driver_failed", "%s", res->message);
        return MHD_HTTP_BAD_GATEWAY;
    case SUPERVISOR_TIMED_OUT:
        *ret =
            error_body("timed_out", "%s: %s is not healthy within its start_period and was stopped",
                       res->message, svc->name);
        return MHD_HTTP_GATEWAY_TIMEOUT;
    case SUPERVISOR_UNAVAILABLE:
        *ret = error_body("backend_unavailable", "%s", res->message);
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    case SUPERVISOR_UNRECORDED:
        *ret = error_body("state_unwritable", "%s", res->message);
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    case SUPERVISOR_CANCELLED:
        break;
    }
    *ret = error_body("cancelled", "%s: %s is now %s", res->message, svc->name,
                      lifecycle_state_name(res->status->state));
    return MHD_HTTP_CONFLICT;
}

json_t *render_invalid_manifest(json_t *err)
{
    return json_pack("{s:s, s:s+, s:O}", "error", "invalid_manifest", "message",
                     "the manifest of this service is invalid: ",
                     json_string_value(json_object_get(err, "message")), "manifest_error", err);
}
