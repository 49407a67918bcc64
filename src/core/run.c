/* One service's run: its lifecycle fed with the driver's events, the health probes and
 * the timers, and the status it shows (supervisor.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/crash_point.h"
#include "core/health.h"
#include "core/supervisor_impl.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/portcheck.h"

#define PORT_CHECK_MS 50 /* the longest a start waits to learn a port is taken */
/* The most manifest text one state file keeps (escaped, at most twice as much): far
 * under STATE_SIZE_MAX, whatever runs. A run past it is recorded without its manifest. */
#define RUN_SOURCES_MAX (4 * 1024 * 1024)

void run_set_error(struct run *run, const char *fmt, ...)
{
    va_list ap;
    char *text;

    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        fatal("out of memory (vasprintf)");
    va_end(ap);
    free(run->last_error);
    run->last_error = text;
    run->status.last_error = text;
}

static void run_clear_error(struct run *run)
{
    free(run->last_error);
    run->last_error = NULL;
    run->status.last_error = NULL;
}

/* True while a run still has processes (an exit's group still empties): it counts as
 * holding what it held, and a stop of it is not over. */
bool run_lingers(const struct run *run)
{
    return run && (run->instance || run->n_retired > 0);
}

struct run *run_find(const struct supervisor *sup, const struct service *svc)
{
    return sup ? strmap_get(sup->runs, svc->name) : NULL;
}

struct run *run_of(struct supervisor *sup, struct service *svc)
{
    struct run *run = run_find(sup, svc);

    if (run)
        return run;
    run = xcalloc(1, sizeof(*run));
    run->sup = sup;
    run->svc = svc;
    lifecycle_init(&run->lc, svc->manifest->health_enabled, svc->manifest->restart);
    run->status.state = run->lc.state;
    uv_timer_init(sup->loop, &run->start_timer);
    uv_timer_init(sup->loop, &run->restart_timer);
    run->start_timer.data = run;
    run->restart_timer.data = run;
    run->handles_open = 2;
    run->log_path = state_log_path(sup->config->state_dir, svc->name);
    strmap_put(sup->runs, svc->name, run);
    return run;
}

static void on_run_closed(uv_handle_t *h)
{
    struct run *run = h->data;

    if (--run->handles_open == 0) {
        free(run->log_path);
        free(run->last_error);
        free(run->health_error);
        free(run->gpu_warning);
        free(run);
    }
}

void run_free(struct run *run)
{
    if (run->portcheck)
        portcheck_cancel(run->portcheck);
    run->portcheck = NULL;
    health_probe_free(run->probe);
    run->probe = NULL;
    driver_run_release(run->instance); /* left running: a later daemon adopts it */
    run->instance = NULL;
    for (size_t i = 0; i < run->n_retired; i++)
        driver_run_release(run->retired[i]);
    run->n_retired = 0;
    run->svc = NULL;
    uv_close((uv_handle_t *)&run->start_timer, on_run_closed);
    uv_close((uv_handle_t *)&run->restart_timer, on_run_closed);
}

/* The status's health result and is_healthy, computed in one place. */
static bool run_is_healthy(const struct run *run)
{
    return run->status.state == STATE_RUNNING && run->status.health.checked &&
           run->status.health.ok;
}

void run_changed(struct run *run)
{
    struct supervisor *sup = run->sup;
    struct service_status *st = &run->status;
    bool was_healthy = st->is_healthy;

    st->state = run->lc.state;
    st->restarts = run->lc.restarts;
    st->restarts_total = run->lc.restarts_total;
    st->is_healthy = run_is_healthy(run);
    st->generation = ++sup->generation;
    if (st->is_healthy != was_healthy) {
        const struct health_result *h = &st->health;
        json_t *data = json_pack(
            "{s:b, s:b, s:o, s:o, s:o}", "healthy", st->is_healthy, "ok", st->is_healthy,
            "status_code",
            h->checked && h->status_code ? json_integer(h->status_code) : json_null(), "latency_ms",
            h->checked ? json_integer((json_int_t)h->latency_ms) : json_null(), "error",
            h->error ? json_string(h->error) : json_null());
        events_publish(sup->hub, EVENT_HEALTH, run->svc->name, data);
    }
    supervisor_hold_sync(sup, run->svc);
}

const char *intent_of(const struct supervisor *sup, const char *name)
{
    return json_string_value(json_object_get(json_object_get(sup->intents, name), "intent"));
}

void intent_set(struct supervisor *sup, const char *name, const char *intent, bool force,
                const char *for_name)
{
    json_t *entry = json_pack("{s:s}", "intent", intent);

    json_object_del(sup->recorded, name); /* this daemon's word supersedes the last one's */

    if (force)
        json_object_set_new(entry, "force", json_true());
    if (for_name)
        json_object_set_new(entry, "for", json_string(for_name));
    json_object_set_new(sup->intents, name, entry);
}

/* A start went through: no longer in flight, the service runs (a stop asked meanwhile
 * keeps its own intent). */
static void run_started_intent(struct run *run)
{
    if (strcmp(intent_of(run->sup, run->svc->name) ?: "", "starting") == 0)
        intent_set(run->sup, run->svc->name, "running", false, NULL);
}

/* Writes down every run that has a process, for the next daemon to adopt. */
void runs_record(struct supervisor *sup)
{
    runs_record_then(sup, NULL, NULL);
}

void runs_record_then(struct supervisor *sup, state_written_fn done, void *data)
{
    json_t *services = json_object();
    size_t n = registry_count(sup->reg), budget = RUN_SOURCES_MAX;

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        struct run *run = run_find(sup, svc);
        json_t *record, *manifest;

        if (!run || !run->instance) {
            /* Recorded by the last daemon, not found by its driver yet: kept as it was. */
            record = json_object_get(sup->recorded, svc->name);
            if (record)
                json_object_set(services, svc->name, record);
            continue;
        }
        record = driver_run_record(run->instance);
        /* No record the driver adopts by (compose: the engine's labels say what runs): it
         * finds the run itself, and the record keeps what it cannot say. */
        if (!record && run->instance->driver->adopt)
            record = json_pack("{s:s, s:b}", "driver", run->instance->driver->name,
                               "found_by_driver", true);
        if (!record)
            continue;
        json_object_set_new(record, "started_at_ms", json_integer(run->status.started_at_ms));
        json_object_set_new(record, "log", json_string(run->log_path));
        json_object_set_new(record, "gpu_required", json_boolean(run->instance_gpu));
        if (run->instance_gpu)
            json_object_set_new(record, "gpu_devices", json_integer((json_int_t)run->gpu_devices));
        /* A held service's manifest is the one its run was started with (registry.h). */
        manifest = recorded_manifest_new(svc->manifest, &budget);
        if (manifest)
            json_object_set_new(record, "manifest", manifest);
        json_object_set_new(services, svc->name, record);
    }
    json_t *doc = json_pack("{s:i, s:o, s:O, s:s, s:o}", "version", 1, "services", services,
                            "intents", sup->intents, "boot_id", sup->boot_id ?: "", "gpu_holder",
                            sup->gpu_holder ? json_string(sup->gpu_holder) : json_null());

    /* On a worker: the loop never waits for fsync. */
    if (done)
        state_writer_save_then(sup->state_writer, doc, done, data);
    else
        state_writer_save(sup->state_writer, doc);
    json_decref(doc);
}

/* --- the driver's events ------------------------------------------------------------ */

static void retired_unlink(struct run *run, struct driver_run *p)
{
    for (size_t i = 0; i < run->n_retired; i++) {
        if (run->retired[i] == p) {
            run->retired[i] = run->retired[--run->n_retired];
            return;
        }
    }
}

/* A new process replaces one whose group is not empty yet (it exited, its children or
 * zombie linger): keep the old one until it is gone. */
static void retire_run(struct run *run)
{
    if (!run->instance)
        return;
    if (run->n_retired == RUN_RETIRED_MAX) {
        driver_run_release(run->retired[0]); /* let the oldest be: it no longer reports */
        run->retired[0] = run->retired[--run->n_retired];
    }
    run->retired[run->n_retired++] = run->instance;
    run->retired_gpu = run->retired_gpu || run->instance_gpu;
    run->retired_devices |= run->gpu_devices;
    run->gpu_devices = 0;
    run->instance = NULL;
    run_gpu_usage_clear(run);
}

static void on_run_exited(void *data, struct driver_run *p, int exit_status, int term_signal)
{
    struct run *run = data;

    if (p != run->instance)
        return; /* an earlier process of this service, started again since */
    if (term_signal)
        run_set_error(run, "killed by signal %d (%s)", term_signal, strsignal(term_signal));
    else if (exit_status < 0)
        run_set_error(run, "exited (status unknown: it was not started by this daemon)");
    else
        run_set_error(run, "exited with status %d", exit_status);
    log_info("%s: %s", run->svc->name, run->last_error);
    run_event(run,
              exit_status == 0 && term_signal == 0 ? LIFECYCLE_EXITED_OK : LIFECYCLE_EXITED_FAILED);
}

static void on_run_gone(void *data, struct driver_run *p)
{
    struct run *run = data;

    if (p != run->instance) {
        /* The last of an earlier process of this service, started again since. */
        retired_unlink(run, p);
        run->retired_gpu = run->retired_gpu && run->n_retired > 0;
        if (run->n_retired == 0)
            run->retired_devices = 0;
        driver_run_release(p);
        supervisor_hold_sync(run->sup, run->svc);
        supervisor_gpu_publish(run->sup); /* what lingered held what it held */
        ops_settle(run->sup);
        return;
    }
    run->instance = NULL;
    run->gpu_devices = 0;
    run_gpu_usage_clear(run);
    run->driver_starting = false;
    driver_run_release(p);
    /* After a stop this is the end of the stop; after an exit the state moved already. */
    if (run->lc.state == STATE_STOPPING)
        run_event(run, LIFECYCLE_EXITED_OK);
    supervisor_hold_sync(run->sup, run->svc);
    supervisor_gpu_publish(run->sup);
    runs_record(run->sup);
    ops_settle(run->sup);
}

/* The end of a start that went on after the driver's start returned (compose up). */
static void on_run_started(void *data, struct driver_run *p, const char *error)
{
    struct run *run = data;

    if (p != run->instance)
        return;
    run->driver_starting = false;
    if (error) {
        run_set_error(run, "%s", error);
        run_event(run, LIFECYCLE_DRIVER_FAILED);
    } else {
        log_info("%s: started", run->svc->name);
        CRASH_POINT("start-spawned"); /* up, before it is recorded */
        run_started_intent(run);
        runs_record(run->sup);
        run_event(run, LIFECYCLE_DRIVER_STARTED);
    }
    ops_settle(run->sup);
}

const struct driver_events run_driver_events = {
    .started = on_run_started, .exited = on_run_exited, .gone = on_run_gone};

/* --- health ----------------------------------------------------------------------- */

static void on_health(void *data, const struct health_check *check)
{
    struct run *run = data;
    struct health_result *h = &run->status.health;
    bool was_ok = h->ok;

    h->checked = true;
    h->ok = check->ok;
    h->status_code = check->status_code;
    h->latency_ms = check->latency_ms;
    h->checked_at_ms = unix_ms();
    free(run->health_error);
    run->health_error = check->error ? xstrdup(check->error) : NULL;
    h->error = run->health_error;
    if (!check->ok && was_ok)
        log_debug("%s: health check failed: %s", run->svc->name, check->error);
    run_event(run, check->ok ? LIFECYCLE_PROBE_OK : LIFECYCLE_PROBE_FAILED);
    run_changed(run); /* a passing check in an unchanged state still changes the status */
}

static void probe_begin(struct run *run)
{
    const struct manifest *m = run->svc->manifest;
    char *url;

    if (!m->health_enabled || run->probe)
        return;
    url = xasprintf("http://127.0.0.1:%u%s", m->health_port, m->health_path);
    run->probe =
        health_probe_new(run->sup->loop, run->sup->fetcher, url, m->health_interval_ms,
                         m->health_timeout_ms, run->lc.state == STATE_STARTING, on_health, run);
    free(url);
}

static void on_start_timer(uv_timer_t *t)
{
    run_event(t->data, LIFECYCLE_START_TIMEOUT);
}

static void on_restart_timer(uv_timer_t *t)
{
    struct run *run = t->data;
    struct supervisor *sup = run->sup;
    struct service *svc = run->svc;

    if (sup->shutting_down)
        return;
    /* An automatic restart obeys the GPU rule like any start, without force. */
    if (svc->manifest->gpu_required && !supervisor_gpu_free_for(sup, svc)) {
        run_set_error(run, "not restarted: another service holds the GPU");
        log_info("%s: %s", svc->name, run->last_error);
        run_changed(run);
        return;
    }
    run_event(run, LIFECYCLE_RESTART_DUE);
}

/* --- driving the driver --------------------------------------------------------------- */

#define GPU_ENV_MAX 256 /* "NVIDIA_VISIBLE_DEVICES=" and up to 64 indexes */

/* The variables that tell a service its GPUs (SPEC section 7): CUDA_VISIBLE_DEVICES and
 * NVIDIA_VISIBLE_DEVICES for a process, NANNY_GPU_DEVICES for a compose file's device_ids;
 * each service gets all three, "0,2", and CUDA_DEVICE_ORDER=PCI_BUS_ID, so that CUDA
 * numbers the GPUs as NVML and nvidia-smi do (its own default puts the fastest first).
 * env gets them NULL-terminated, written in text. */
static void gpu_env(uint64_t devices, char *env[5], char text[3][GPU_ENV_MAX])
{
    static const char *const names[] = {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                                        "NANNY_GPU_DEVICES"};
    static char order[] = "CUDA_DEVICE_ORDER=PCI_BUS_ID"; /* CUDA's numbers: NVML's */
    char list[GPU_ENV_MAX - 32] = "";
    size_t at = 0;

    for (unsigned i = 0; i < 64 && at < sizeof(list); i++)
        if (devices & (UINT64_C(1) << i))
            at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%u", at ? "," : "", i);
    for (size_t i = 0; i < 3; i++) {
        snprintf(text[i], GPU_ENV_MAX, "%s=%s", names[i], list);
        env[i] = text[i];
    }
    env[3] = order;
    env[4] = NULL;
}

/* Starts the service through its driver, its ports found free; feeds DRIVER_STARTED or
 * DRIVER_FAILED. */
static void driver_start_now(struct run *run)
{
    struct supervisor *sup = run->sup;
    const struct manifest *m = run->svc->manifest;
    char err[512], env_text[3][GPU_ENV_MAX];
    char *env[5];
    uint64_t devices = 0;
    int r;

    r = state_prepare(sup->config->state_dir);
    if (r < 0) {
        run_set_error(run, "cannot make the state folder %s: %s", sup->config->state_dir,
                      strerror(-r));
        run_event(run, LIFECYCLE_DRIVER_FAILED);
        return;
    }
    if (m->gpu_required && !supervisor_gpu_place(sup, run->svc, &devices, err, sizeof(err))) {
        run_set_error(run, "not started: %s", err);
        run_event(run, LIFECYCLE_DRIVER_FAILED);
        return;
    }
    run->stop_timeout_ms = m->stop_timeout_ms;
    retire_run(run);
    run->instance_gpu = m->gpu_required;
    run->gpu_devices = devices;
    run->gpu_need = supervisor_gpu_need(m);
    run->gpu_enforce = m->gpu.enforce;
    run->last_used_ms = (uint64_t)unix_ms();
    gpu_env(devices, env, env_text);
    r = driver_for(m)->start(sup->loop, m, m->gpu_required ? env : NULL, run->log_path,
                             &run_driver_events, run, &run->instance, err, sizeof(err));
    if (r < 0) {
        run_set_error(run, "%s", err);
        run_event(run, LIFECYCLE_DRIVER_FAILED);
        return;
    }
    run_clear_error(run);
    run->status.started_at_ms = unix_ms();
    run_changed(run);
    if (r > 0) {
        run->driver_starting = true; /* on_run_started() tells the end */
        return;
    }
    log_info("%s: started", run->svc->name);
    CRASH_POINT("start-spawned"); /* before its pid is recorded */
    run_started_intent(run);
    runs_record(sup);
    run_event(run, LIFECYCLE_DRIVER_STARTED);
}

static void on_ports_checked(void *data, unsigned taken)
{
    struct run *run = data;

    run->portcheck = NULL;
    run->driver_starting = false;
    if (taken) {
        run_set_error(run, "port %u is already in use by another program", taken);
        run_event(run, LIFECYCLE_DRIVER_FAILED);
    } else {
        driver_start_now(run);
    }
    ops_settle(run->sup);
}

/* A start first sees its host ports free (another program's would make it fail in ways
 * hard to tell), with connects on the loop: until then the start goes on, as a driver's
 * that answers later does. */
static void driver_start(struct run *run)
{
    const struct manifest *m = run->svc->manifest;
    unsigned ports[MANIFEST_PORTS_MAX];
    size_t n = 0;

    for (size_t i = 0; i < m->n_ports && n < MANIFEST_PORTS_MAX; i++)
        ports[n++] = m->ports[i].host;
    run->driver_starting = true;
    run->portcheck =
        portcheck_start(run->sup->loop, ports, n, PORT_CHECK_MS, on_ports_checked, run);
}

void run_apply(struct run *run, const struct lifecycle_step *step)
{
    const struct manifest *m = run->svc->manifest;
    bool stopped_before_start = false;

    if (step->actions & LIFECYCLE_RESTART_CANCEL)
        uv_timer_stop(&run->restart_timer);
    if (step->actions & LIFECYCLE_PROBE_END) {
        health_probe_free(run->probe);
        run->probe = NULL;
        uv_timer_stop(&run->start_timer);
    }
    if (step->actions & LIFECYCLE_DRIVER_STOP && run->instance) {
        driver_run_stop(run->instance, run->stop_timeout_ms);
    } else if (step->actions & LIFECYCLE_DRIVER_STOP && run->portcheck) {
        /* Stopped while its ports were being checked: nothing ran, the stop is over. */
        portcheck_cancel(run->portcheck);
        run->portcheck = NULL;
        run->driver_starting = false;
        stopped_before_start = true;
    }
    if (step->actions & LIFECYCLE_PROBE_BEGIN) {
        probe_begin(run);
        if (run->lc.state == STATE_STARTING)
            uv_timer_start(&run->start_timer, on_start_timer, m->health_start_period_ms, 0);
    }
    if (step->actions & LIFECYCLE_RESTART_LATER)
        uv_timer_start(&run->restart_timer, on_restart_timer, step->restart_delay_ms, 0);
    if (step->to == STATE_RUNNING) {
        uv_timer_stop(&run->start_timer);
        if (run->probe)
            health_probe_set_fast(run->probe, false);
    }
    if (step->actions & LIFECYCLE_DRIVER_START)
        driver_start(run);
    if (stopped_before_start)
        run_event(run, LIFECYCLE_EXITED_OK);
}

/* Publishes a change of state (the supervisor's subscriber logs it), and the GPU holder
 * when that changed with it. */
static void publish_state(struct run *run, const struct lifecycle_step *step, const char *reason)
{
    json_t *data = json_pack("{s:s, s:s}", "from", lifecycle_state_name(step->from), "to",
                             lifecycle_state_name(step->to));

    if (reason)
        json_object_set_new(data, "reason", json_string(reason));
    events_publish(run->sup->hub, EVENT_STATE, run->svc->name, data);
    supervisor_gpu_publish(run->sup);
}

/* Feeds one event to the run's lifecycle, publishes what changed and does what it says. */
void run_event(struct run *run, enum lifecycle_event ev)
{
    struct supervisor *sup = run->sup;
    struct service *svc = run->svc;
    struct lifecycle_step step = lifecycle_handle(&run->lc, ev, uv_now(sup->loop));

    if (step.no_op)
        return;
    if (step.to == STATE_FAILED && step.cause != LIFECYCLE_CAUSE_NONE) {
        run->failure = step.cause;
        if (!run->last_error || ev == LIFECYCLE_START_TIMEOUT ||
            step.cause == LIFECYCLE_CAUSE_START_LIMIT)
            run_set_error(run, "%s", step.reason);
    }
    run_changed(run);
    if (step.from != step.to)
        publish_state(run, &step, step.reason);
    if (step.from == STATE_STOPPING && step.to == STATE_STARTING)
        ops_stops_superseded(sup, svc);
    run_apply(run, &step);
    if (step.actions & LIFECYCLE_NOTIFY)
        ops_settle(sup);
}

void run_adopted(struct run *run, int64_t started_at_ms)
{
    const struct manifest *m = run->svc->manifest;
    struct lifecycle_step step;

    run->stop_timeout_ms = m->stop_timeout_ms;
    run->status.started_at_ms = started_at_ms;
    run_clear_error(run);
    run->lc.health_enabled = m->health_enabled;
    run->lc.restart = m->restart;
    step = lifecycle_adopt(&run->lc, uv_now(run->sup->loop));
    run_changed(run);
    if (step.from != step.to)
        publish_state(run, &step, "adopted");
    run_apply(run, &step);
}
