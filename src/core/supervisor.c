/* The supervisor: runs services through the lifecycle machine, the GPU arbiter, their
 * driver (driver.h) and the health probes, and answers the operations that wait on them. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/driver.h"
#include "core/gpu.h"
#include "core/health.h"
#include "core/state.h"
#include "core/supervisor.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define LOG_CHECK_MS    5000
#define RUN_RETIRED_MAX 8
#define PORT_CHECK_MS   50 /* the longest a start waits to learn a port is taken */

/* One service's run: everything the supervisor keeps for it, alive while the service is. */
struct run {
    struct supervisor *sup;
    struct service *svc;
    struct lifecycle lc;
    struct driver_run *instance; /* the running instance, NULL when none */
    struct health_probe *probe;
    uv_timer_t start_timer;   /* start_period */
    uv_timer_t restart_timer; /* the backoff of an automatic restart */
    int handles_open;
    bool reserved;            /* waits for preempted holders to go: holds the GPU already */
    bool driver_starting;     /* the driver's start goes on (compose up): not answered yet */
    uint64_t stop_timeout_ms; /* from the manifest the run started with */
    char *log_path;
    int last_exit_status, last_term_signal;
    struct driver_run *retired[RUN_RETIRED_MAX]; /* earlier runs whose end still comes */
    size_t n_retired;
};

enum op_kind { OP_START, OP_STOP };

struct supervisor_op {
    struct supervisor *sup;
    struct service *svc;
    enum op_kind kind;
    bool force;
    bool wait_healthy;
    bool restart;     /* a restart: stop first, then start */
    bool waiting_gpu; /* waits for preempted holders to be gone */
    bool cancelled;   /* nobody waits for the answer any more */
    bool started;     /* the start was fed to the lifecycle */
    supervisor_done_fn done;
    void *data;
    json_t *preempted;
    struct supervisor_op *next;
};

struct supervisor {
    uv_loop_t *loop;
    struct registry *reg;
    struct fetcher *fetcher;
    const struct config *config;
    struct supervisor_op *ops; /* pending operations */
    uv_timer_t log_timer;
    struct state_writer *state_writer;
    struct log_rotation *rotating; /* a pass of rotation on a worker thread */
    bool shutting_down;
    bool settling;     /* ops_settle() is on the stack */
    bool settle_again; /* ...and was asked again meanwhile */
};

static void run_event(struct run *run, enum lifecycle_event ev);
static void ops_settle(struct supervisor *sup);

static int64_t unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_last_error(struct service *svc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_last_error(struct service *svc, const char *fmt, ...)
{
    va_list ap;
    char *text;

    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        fatal("out of memory (vasprintf)");
    va_end(ap);
    free(svc->last_error);
    svc->last_error = text;
}

/* True while a run still has processes (an exit's group still empties): it counts as
 * holding what it held, and a stop of it is not over. */
static bool run_lingers(const struct run *run)
{
    return run && (run->instance || run->n_retired > 0);
}

/* The run of svc, made on first use. */
static struct run *run_of(struct supervisor *sup, struct service *svc)
{
    struct run *run = svc->run;

    if (run)
        return run;
    run = xcalloc(1, sizeof(*run));
    run->sup = sup;
    run->svc = svc;
    lifecycle_init(&run->lc, svc->manifest->health_enabled, svc->manifest->restart);
    uv_timer_init(sup->loop, &run->start_timer);
    uv_timer_init(sup->loop, &run->restart_timer);
    run->start_timer.data = run;
    run->restart_timer.data = run;
    run->handles_open = 2;
    run->log_path = state_log_path(sup->config->state_dir, svc->name);
    svc->run = run;
    return run;
}

static void on_run_closed(uv_handle_t *h)
{
    struct run *run = h->data;

    if (--run->handles_open == 0) {
        free(run->log_path);
        free(run);
    }
}

void supervisor_run_free(void *data)
{
    struct run *run = data;

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

/* Writes down every run that has a process, for the next daemon to adopt. */
static void state_record(struct supervisor *sup)
{
    json_t *services = json_object();
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        struct run *run = svc->run;
        json_t *record;

        if (!run || !run->instance || !(record = driver_run_record(run->instance)))
            continue;
        json_object_set_new(record, "started_at_ms", json_integer(svc->started_at_ms));
        json_object_set_new(record, "log", json_string(run->log_path));
        json_object_set_new(services, svc->name, record);
    }
    json_t *doc = json_pack("{s:i, s:o}", "version", 1, "services", services);

    state_writer_save(sup->state_writer, doc); /* on a worker: the loop never waits for fsync */
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
    run->instance = NULL;
}

static void on_run_exited(void *data, struct driver_run *p, int exit_status, int term_signal)
{
    struct run *run = data;
    struct service *svc = run->svc;

    if (p != run->instance)
        return; /* an earlier process of this service, started again since */

    run->last_exit_status = exit_status;
    run->last_term_signal = term_signal;
    if (term_signal)
        set_last_error(svc, "killed by signal %d (%s)", term_signal, strsignal(term_signal));
    else if (exit_status < 0)
        set_last_error(svc, "exited (status unknown: it was not started by this daemon)");
    else
        set_last_error(svc, "exited with status %d", exit_status);
    log_info("%s: %s", svc->name, svc->last_error);
    run_event(run,
              exit_status == 0 && term_signal == 0 ? LIFECYCLE_EXITED_OK : LIFECYCLE_EXITED_FAILED);
}

static void on_run_gone(void *data, struct driver_run *p)
{
    struct run *run = data;

    if (p != run->instance) {
        /* The last of an earlier process of this service, started again since. */
        retired_unlink(run, p);
        driver_run_release(p);
        return;
    }
    run->instance = NULL;
    run->driver_starting = false;
    driver_run_release(p);
    /* After a stop this is the end of the stop; after an exit the state moved already. */
    if (run->lc.state == STATE_STOPPING)
        run_event(run, LIFECYCLE_EXITED_OK);
    state_record(run->sup);
    ops_settle(run->sup);
}

/* The end of a start that went on after driver->start returned (compose up). */
static void on_run_started(void *data, struct driver_run *p, const char *error)
{
    struct run *run = data;
    struct service *svc = run->svc;

    if (p != run->instance)
        return;
    run->driver_starting = false;
    if (error) {
        set_last_error(svc, "%s", error);
        run_event(run, LIFECYCLE_DRIVER_FAILED);
    } else {
        log_info("%s: started", svc->name);
        state_record(run->sup);
        run_event(run, LIFECYCLE_DRIVER_STARTED);
    }
    ops_settle(run->sup);
}

static const struct driver_events driver_events = {
    .started = on_run_started, .exited = on_run_exited, .gone = on_run_gone};

/* --- health ----------------------------------------------------------------------- */

static void on_health(void *data, const struct health_check *check)
{
    struct run *run = data;
    struct service *svc = run->svc;
    bool was_ok = svc->health.ok;

    svc->health.checked = true;
    svc->health.ok = check->ok;
    svc->health.status_code = check->status_code;
    svc->health.latency_ms = check->latency_ms;
    svc->health.checked_at_ms = unix_ms();
    free(svc->health.error);
    svc->health.error = check->error ? xstrdup(check->error) : NULL;
    if (!check->ok && was_ok)
        log_debug("%s: health check failed: %s", svc->name, check->error);
    run_event(run, check->ok ? LIFECYCLE_PROBE_OK : LIFECYCLE_PROBE_FAILED);
    /* A passing check in an unchanged state still changes is_healthy. */
    if (run->svc)
        svc->is_healthy = svc->state == STATE_RUNNING && svc->health.ok;
    registry_touch(run->sup->reg, svc);
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

static void on_restart_timer(uv_timer_t *t);

/* --- driving the driver --------------------------------------------------------------- */

/* True when something already answers on 127.0.0.1:port: another program has it. */
static bool port_taken(uint16_t port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    bool taken;

    if (fd < 0)
        return false;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* On loopback an answer (accept or refusal) comes at once; a listener whose queue is
     * full answers nothing, so the wait is bounded and that counts as taken. */
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
        taken = true;
    } else if (errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int error = 0;
        socklen_t len = sizeof(error);
        if (poll(&pfd, 1, PORT_CHECK_MS) == 0)
            taken = true;
        else
            taken = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
    } else {
        taken = false;
    }
    close(fd);
    return taken;
}

/* Starts the service's process; feeds DRIVER_STARTED or DRIVER_FAILED. */
static void driver_start(struct run *run)
{
    struct supervisor *sup = run->sup;
    struct service *svc = run->svc;
    const struct manifest *m = svc->manifest;
    char err[512];
    int r;

    for (size_t i = 0; i < m->n_ports; i++) {
        if (port_taken(m->ports[i].host)) {
            set_last_error(svc, "port %u is already in use by another program", m->ports[i].host);
            run_event(run, LIFECYCLE_DRIVER_FAILED);
            return;
        }
    }
    r = state_prepare(sup->config->state_dir);
    if (r < 0) {
        set_last_error(svc, "cannot make the state folder %s: %s", sup->config->state_dir,
                       strerror(-r));
        run_event(run, LIFECYCLE_DRIVER_FAILED);
        return;
    }
    run->stop_timeout_ms = m->stop_timeout_ms;
    retire_run(run);
    run->driver_starting = false;
    r = driver_for(m)->start(sup->loop, m, run->log_path, &driver_events, run, &run->instance, err,
                             sizeof(err));
    if (r < 0) {
        set_last_error(svc, "%s", err);
        run_event(run, LIFECYCLE_DRIVER_FAILED);
        return;
    }
    free(svc->last_error);
    svc->last_error = NULL;
    svc->started_at_ms = unix_ms();
    if (r > 0) {
        run->driver_starting = true; /* on_run_started() tells the end */
        return;
    }
    log_info("%s: started", svc->name);
    state_record(sup);
    run_event(run, LIFECYCLE_DRIVER_STARTED);
}

/* Carries out a step's actions. */
static void run_apply(struct run *run, const struct lifecycle_step *step)
{
    const struct manifest *m = run->svc->manifest;

    if (step->actions & LIFECYCLE_RESTART_CANCEL)
        uv_timer_stop(&run->restart_timer);
    if (step->actions & LIFECYCLE_PROBE_END) {
        health_probe_free(run->probe);
        run->probe = NULL;
        uv_timer_stop(&run->start_timer);
    }
    if (step->actions & LIFECYCLE_DRIVER_STOP && run->instance)
        driver_run_stop(run->instance, run->stop_timeout_ms);
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
}

static void op_finish(struct supervisor_op *op, enum supervisor_outcome outcome, const char *holder,
                      const char *message);

/* A stop ended straight into a start asked meanwhile: the stops waiting for it are done,
 * but the service does not stay stopped. */
static void stops_superseded(struct supervisor *sup, struct service *svc)
{
    struct supervisor_op *op, *next;

    for (op = sup->ops; op; op = next) {
        next = op->next;
        if (op->kind == OP_STOP && op->svc == svc) {
            op_finish(op, SUPERVISOR_CANCELLED, NULL,
                      "it stopped, then a start asked meanwhile started it again");
            next = sup->ops;
        } else if (op->kind == OP_START && op->svc == svc && op->restart && !op->started) {
            /* A restart waiting for its stop: the start asked meanwhile is its start. */
            op->restart = false;
            op->started = true;
        }
    }
}

/* Feeds one event to the run's lifecycle and does what it says. */
static void run_event(struct run *run, enum lifecycle_event ev)
{
    struct service *svc = run->svc;
    struct lifecycle_step step = lifecycle_handle(&run->lc, ev, uv_now(run->sup->loop));

    if (step.no_op)
        return;
    svc->state = run->lc.state;
    svc->restarts = run->lc.restarts;
    svc->is_healthy = svc->state == STATE_RUNNING && svc->health.checked && svc->health.ok;
    if (step.to == STATE_FAILED && step.reason &&
        (!svc->last_error || ev == LIFECYCLE_START_TIMEOUT ||
         strcmp(step.reason, LIFECYCLE_REASON_START_LIMIT) == 0))
        set_last_error(svc, "%s", step.reason);
    if (step.from != step.to) {
        if (step.reason)
            log_info("%s: %s -> %s (%s)", svc->name, lifecycle_state_name(step.from),
                     lifecycle_state_name(step.to), step.reason);
        else
            log_info("%s: %s -> %s", svc->name, lifecycle_state_name(step.from),
                     lifecycle_state_name(step.to));
    }
    registry_touch(run->sup->reg, svc);
    if (step.from == STATE_STOPPING && step.to == STATE_STARTING)
        stops_superseded(run->sup, svc);
    run_apply(run, &step);
    if (step.actions & LIFECYCLE_NOTIFY)
        ops_settle(run->sup);
}

/* --- operations ------------------------------------------------------------------- */

static struct supervisor_op *op_new(struct supervisor *sup, struct service *svc, enum op_kind kind,
                                    supervisor_done_fn done, void *data)
{
    struct supervisor_op *op = xcalloc(1, sizeof(*op));

    op->sup = sup;
    op->svc = svc;
    op->kind = kind;
    op->done = done;
    op->data = data;
    op->preempted = json_array();
    return op;
}

static void op_free(struct supervisor_op *op)
{
    json_decref(op->preempted);
    free(op);
}

/* True when another start of op's service waits for the GPU too (it joined op). */
static bool gpu_waiters_besides(const struct supervisor_op *op)
{
    for (const struct supervisor_op *o = op->sup->ops; o; o = o->next)
        if (o != op && o->svc == op->svc && o->waiting_gpu)
            return true;
    return false;
}

/* Answers op (unless cancelled) and drops it from the pending list. */
static void op_finish(struct supervisor_op *op, enum supervisor_outcome outcome, const char *holder,
                      const char *message)
{
    struct supervisor *sup = op->sup;
    struct supervisor_result res = {outcome, holder, message, op->preempted};

    for (struct supervisor_op **p = &sup->ops; *p; p = &(*p)->next) {
        if (*p == op) {
            *p = op->next;
            break;
        }
    }
    if (op->waiting_gpu && op->svc->run && !gpu_waiters_besides(op))
        ((struct run *)op->svc->run)->reserved = false;
    if (!op->cancelled)
        op->done(op->data, op->svc, &res);
    op_free(op);
}

static void op_queue(struct supervisor_op *op)
{
    op->next = op->sup->ops;
    op->sup->ops = op;
}

/* The candidates the GPU arbiter looks at, in registry order. */
static struct gpu_candidate *gpu_candidates(struct supervisor *sup, size_t *ret_n)
{
    size_t n = registry_count(sup->reg);
    struct gpu_candidate *c = xcalloc(n + 1, sizeof(*c));

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        struct run *run = svc->run;
        c[i].name = svc->name;
        c[i].gpu_required = svc->manifest->gpu_required;
        /* A run whose processes still go holds what it held: show it as stopping. */
        c[i].state =
            run_lingers(run) && !lifecycle_holds_gpu(svc->state) ? STATE_STOPPING : svc->state;
        c[i].reserved = run && run->reserved;
    }
    *ret_n = n;
    return c;
}

static size_t registry_index(struct supervisor *sup, struct service *svc)
{
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++)
        if (registry_at(sup->reg, i) == svc)
            return i;
    return n;
}

/* Feeds the start to the lifecycle; a start without wait is answered once spawned. */
static void op_begin_start(struct supervisor_op *op)
{
    struct run *run = run_of(op->sup, op->svc);

    if (op->sup->shutting_down) {
        op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, "the daemon is stopping");
        return;
    }
    op->waiting_gpu = false;
    run->reserved = false;
    op->started = true;
    /* A stop still waiting (for what a stopped service's last run left) is overtaken. */
    stops_superseded(op->sup, op->svc);
    /* The manifest may have changed since the run was made. */
    run->lc.health_enabled = op->svc->manifest->health_enabled;
    run->lc.restart = op->svc->manifest->restart;
    run_event(run, LIFECYCLE_START);
}

/* Decides a start by the GPU rule; answers or queues it. Returns false when answered. */
static bool op_arbitrate(struct supervisor_op *op)
{
    struct supervisor *sup = op->sup;
    struct gpu_verdict verdict;
    struct gpu_candidate *c;
    size_t n, target = registry_index(sup, op->svc);
    bool preempt_always = sup->config->gpu_conflict == GPU_CONFLICT_PREEMPT;
    char message[160];
    int r;

    c = gpu_candidates(sup, &n);
    r = gpu_decide(c, n, target, op->force, preempt_always, &verdict);
    if (r < 0) {
        free(c);
        op_finish(op, SUPERVISOR_DRIVER_FAILED, NULL, "the GPU arbiter refused the request");
        return false;
    }
    switch (verdict.kind) {
    case GPU_ALREADY:
        free(c);
        if (op->svc->run && ((struct run *)op->svc->run)->reserved) {
            op->waiting_gpu = true; /* another start of it waits for the GPU: join it */
            return true;
        }
        if (op->wait_healthy && op->svc->state == STATE_STARTING) {
            op->started = true; /* wait with it */
            return true;
        }
        op_finish(op, SUPERVISOR_ALREADY, NULL, NULL);
        return false;
    case GPU_CONFLICT:
        snprintf(message, sizeof(message), "%s is using the GPU", c[verdict.holder].name);
        op_finish(op, SUPERVISOR_CONFLICT, c[verdict.holder].name, message);
        free(c);
        return false;
    case GPU_GO:
        free(c);
        op_begin_start(op);
        return true;
    case GPU_PREEMPT:
        break;
    }
    /* Reserve the GPU for the target, then see every holder gone. */
    run_of(sup, op->svc)->reserved = true;
    op->waiting_gpu = true;
    for (size_t i = 0; i < verdict.n_preempt; i++) {
        struct service *holder = registry_at(sup->reg, verdict.preempt[i]);
        struct run *hrun = holder->run;

        json_array_append_new(op->preempted, json_string(holder->name));
        log_info("%s: stopping it to free the GPU for %s", holder->name, op->svc->name);
        if (hrun && hrun->reserved) {
            /* It waited for the GPU itself: it loses its turn. */
            for (struct supervisor_op *o = sup->ops, *onext; o; o = onext) {
                onext = o->next;
                if (o->svc == holder && o->waiting_gpu) {
                    snprintf(message, sizeof(message), "%s is using the GPU", op->svc->name);
                    op_finish(o, SUPERVISOR_CONFLICT, op->svc->name, message);
                    onext = sup->ops;
                }
            }
            hrun->reserved = false;
        } else if (hrun) {
            /* Whoever waits for the holder's start learns it lost the GPU. */
            for (struct supervisor_op *o = sup->ops, *onext; o; o = onext) {
                onext = o->next;
                if (o->svc == holder && o->kind == OP_START) {
                    snprintf(message, sizeof(message), "%s is using the GPU", op->svc->name);
                    op_finish(o, SUPERVISOR_CONFLICT, op->svc->name, message);
                    onext = sup->ops;
                }
            }
            run_event(hrun, LIFECYCLE_STOP);
        }
    }
    free(c);
    return true;
}

/* True when no service but op's target holds the GPU. */
static bool gpu_free_for(struct supervisor *sup, struct service *target)
{
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        struct run *run = svc->run;
        if (svc == target || !svc->manifest->gpu_required)
            continue;
        if (lifecycle_holds_gpu(svc->state) || (run && run->reserved) || run_lingers(run))
            return false;
    }
    return true;
}

/* Answers what the latest changes settled, and lets GPU waiters go when they can. */
/* One pass over the pending operations; returns after the first that changed anything,
 * true then, as callbacks may have changed the list. */
static bool ops_settle_once(struct supervisor *sup)
{
    struct supervisor_op *op;

    for (op = sup->ops; op; op = op->next) {
        struct service *svc = op->svc;

        if (op->kind == OP_STOP) {
            if ((svc->state == STATE_STOPPED || svc->state == STATE_FAILED) &&
                !run_lingers(svc->run)) {
                op_finish(op, SUPERVISOR_OK, NULL, NULL);
                return true;
            }
            continue;
        }
        if (op->restart && !op->started && !op->waiting_gpu) {
            if (svc->state != STATE_STOPPED && svc->state != STATE_FAILED)
                continue; /* the stop half is still going */
            op->restart = false;
            op_arbitrate(op);
            return true;
        }
        if (op->waiting_gpu) {
            if (!gpu_free_for(sup, svc))
                continue;
            op_begin_start(op);
            return true;
        }
        if (!op->started)
            continue;
        if (svc->state == STATE_RUNNING || svc->state == STATE_UNHEALTHY) {
            op_finish(op, SUPERVISOR_OK, NULL, NULL);
        } else if (svc->state == STATE_STARTING && !op->wait_healthy &&
                   !(svc->run && ((struct run *)svc->run)->driver_starting)) {
            op_finish(op, SUPERVISOR_OK, NULL, NULL);
        } else if (svc->state == STATE_FAILED) {
            const char *why = svc->last_error ? svc->last_error : "it failed";
            op_finish(op,
                      strstr(why, LIFECYCLE_REASON_START_TIMEOUT) ? SUPERVISOR_TIMED_OUT
                                                                  : SUPERVISOR_DRIVER_FAILED,
                      NULL, why);
        } else if (svc->state == STATE_STOPPED) {
            op_finish(op, SUPERVISOR_CANCELLED, NULL,
                      "a stop asked after this start stopped the service");
        } else {
            continue;
        }
        return true;
    }
    return false;
}

/* Answers what the latest changes settled, and lets GPU waiters go when they can. It is
 * called again from inside what it triggers (a start that settles at once): the inner
 * call only asks the outer one for another pass, so no operation is used after it was
 * answered and freed. */
static void ops_settle(struct supervisor *sup)
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

struct supervisor_op *supervisor_start(struct supervisor *sup, struct service *svc, bool force,
                                       bool wait_healthy, bool restart, supervisor_done_fn done,
                                       void *data)
{
    struct supervisor_op *op = op_new(sup, svc, OP_START, done, data);
    char message[512];

    op->force = force;
    op->wait_healthy = wait_healthy;
    op_queue(op);
    if (sup->shutting_down) {
        op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, "the daemon is stopping");
        return NULL;
    }
    if (supervisor_unavailable(svc, message, sizeof(message))) {
        op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, message);
        return NULL;
    }
    if (restart && (svc->state == STATE_STARTING || svc->state == STATE_RUNNING ||
                    svc->state == STATE_UNHEALTHY)) {
        op->restart = true;
        run_event(run_of(sup, svc), LIFECYCLE_STOP);
        ops_settle(sup);
    } else if (!op_arbitrate(op)) {
        return NULL;
    } else {
        ops_settle(sup);
    }
    /* Still pending unless settling answered it. */
    for (struct supervisor_op *o = sup->ops; o; o = o->next)
        if (o == op)
            return op;
    return NULL;
}

/* A stop of a service that does not run still removes what its last run left (a compose
 * project's exited containers, as `docker compose down` does); the stop waits for it. */
static void stop_leftovers(struct supervisor *sup, struct service *svc)
{
    const struct driver *driver = driver_for(svc->manifest);
    struct run *run;

    if (!driver->leftovers || run_lingers(svc->run) ||
        (svc->state != STATE_STOPPED && svc->state != STATE_FAILED))
        return;
    run = run_of(sup, svc);
    run->stop_timeout_ms = svc->manifest->stop_timeout_ms;
    if (driver->leftovers(svc->manifest, &driver_events, run, &run->instance) < 0)
        log_warning("%s: cannot remove what its last run left", svc->name);
}

struct supervisor_op *supervisor_stop(struct supervisor *sup, struct service *svc,
                                      supervisor_done_fn done, void *data)
{
    struct supervisor_op *op = op_new(sup, svc, OP_STOP, done, data);
    struct run *run = svc->run;

    op_queue(op);
    /* A start that waits for the GPU gives up its turn. */
    for (struct supervisor_op *o = sup->ops, *onext; o; o = onext) {
        onext = o->next;
        if (o != op && o->svc == svc && o->waiting_gpu) {
            op_finish(o, SUPERVISOR_CANCELLED, NULL, "a stop came before it could start");
            onext = sup->ops;
        }
    }
    stop_leftovers(sup, svc); /* before the event, whose NOTIFY may answer the stop */
    if (run)
        run_event(run, LIFECYCLE_STOP);
    ops_settle(sup);
    for (struct supervisor_op *o = sup->ops; o; o = o->next)
        if (o == op)
            return op;
    return NULL;
}

void supervisor_op_cancel(struct supervisor_op *op)
{
    if (!op)
        return;
    op->cancelled = true;
    if (op->waiting_gpu) {
        /* Nobody waits for it: it must not keep the GPU reserved. */
        struct supervisor *sup = op->sup;
        op_finish(op, SUPERVISOR_CANCELLED, NULL, NULL);
        ops_settle(sup);
    }
}

static void on_restart_timer(uv_timer_t *t)
{
    struct run *run = t->data;
    struct supervisor *sup = run->sup;
    struct service *svc = run->svc;

    if (sup->shutting_down)
        return;
    /* An automatic restart obeys the GPU rule like any start, without force. */
    if (svc->manifest->gpu_required && !gpu_free_for(sup, svc)) {
        set_last_error(svc, "not restarted: another service holds the GPU");
        log_info("%s: %s", svc->name, svc->last_error);
        return;
    }
    run_event(run, LIFECYCLE_RESTART_DUE);
}

/* A logs request that the driver answers later. */
struct supervisor_logs {
    struct driver_logs *request;
    driver_logs_fn done;
    void *data;
    bool answered;
};

static void on_logs(void *data, char **lines, const char *error)
{
    struct supervisor_logs *l = data;

    l->answered = true;
    l->done(l->data, lines, error);
    if (l->request)
        free(l); /* else supervisor_logs() is still on the stack and frees it */
}

struct supervisor_logs *supervisor_logs(struct supervisor *sup, struct service *svc, unsigned tail,
                                        driver_logs_fn done, void *data)
{
    const struct driver *driver = driver_for(svc->manifest);
    struct supervisor_logs *l;
    char *path;
    struct driver_logs *request = NULL;

    if (!driver->logs) {
        done(data, NULL, "its driver keeps no output");
        return NULL;
    }
    l = xcalloc(1, sizeof(*l));
    path = state_log_path(sup->config->state_dir, svc->name);
    l->done = done;
    l->data = data;
    driver->logs(svc->manifest, path, tail, on_logs, l, &request);
    free(path);
    if (l->answered) {
        free(l);
        return NULL;
    }
    l->request = request;
    return l;
}

void supervisor_logs_cancel(struct supervisor_logs *l)
{
    if (!l)
        return;
    driver_logs_cancel(l->request);
    free(l);
}

/* One pass of log rotation, on a worker thread: rotation copies up to log_max_size. */
struct log_rotation {
    uv_work_t work;
    struct supervisor *sup; /* NULL once the supervisor is gone */
    struct rotate_item {
        int (*rotate)(const char *path, uint64_t max_bytes, unsigned keep);
        char *path;
        int result;
    } * items;
    size_t n;
    uint64_t max_bytes;
    unsigned keep;
};

static void on_rotate(uv_work_t *req)
{
    struct log_rotation *job = req->data;

    for (size_t i = 0; i < job->n; i++)
        job->items[i].result = job->items[i].rotate(job->items[i].path, job->max_bytes, job->keep);
}

static void on_rotated(uv_work_t *req, int status)
{
    struct log_rotation *job = req->data;

    for (size_t i = 0; i < job->n; i++) {
        if (status == 0 && job->items[i].result < 0)
            log_warning("cannot rotate %s: %s", job->items[i].path,
                        strerror(-job->items[i].result));
        free(job->items[i].path);
    }
    if (job->sup)
        job->sup->rotating = NULL;
    free(job->items);
    free(job);
}

/* Every LOG_CHECK_MS: rotates the logs of the running process services, off the loop. */
static void on_log_timer(uv_timer_t *t)
{
    struct supervisor *sup = t->data;
    size_t n = registry_count(sup->reg);
    struct log_rotation *job;

    if (sup->rotating)
        return; /* the last pass is still at it */
    job = xcalloc(1, sizeof(*job));
    job->sup = sup;
    job->max_bytes = sup->config->log_max_bytes;
    job->keep = sup->config->log_max_files;
    job->items = xcalloc(n + 1, sizeof(*job->items));
    for (size_t i = 0; i < n; i++) {
        struct run *run = registry_at(sup->reg, i)->run;
        if (run && run->instance && run->instance->driver->rotate) {
            job->items[job->n].rotate = run->instance->driver->rotate;
            job->items[job->n++].path = xstrdup(run->log_path);
        }
    }
    job->work.data = job;
    if (job->n == 0 || uv_queue_work(sup->loop, &job->work, on_rotate, on_rotated) < 0) {
        on_rotated(&job->work, -1);
        return;
    }
    sup->rotating = job;
}

/* --- what the compose driver sees outside the daemon ------------------------------------ */

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

/* Something of a service runs that the daemon did not start (a compose project started by
 * hand): it runs, and holds the GPU if it needs one, like any other. */
static void on_appeared(void *data, const struct driver *d, const char *key)
{
    struct supervisor *sup = data;
    struct service *svc = service_by_key(sup, d, key);
    struct lifecycle_step step;
    struct run *run;

    if (!svc || sup->shutting_down || (svc->run && run_lingers(svc->run)) ||
        (svc->state != STATE_STOPPED && svc->state != STATE_FAILED))
        return;
    run = run_of(sup, svc);
    if (run->reserved)
        return; /* a start of it waits for the GPU: that start will find it running */
    if (!d->adopt ||
        d->adopt(sup->loop, svc->manifest, NULL, &driver_events, run, &run->instance) < 0)
        return;
    run->stop_timeout_ms = svc->manifest->stop_timeout_ms;
    svc->started_at_ms = unix_ms();
    free(svc->last_error);
    svc->last_error = NULL;
    run->lc.health_enabled = svc->manifest->health_enabled;
    run->lc.restart = svc->manifest->restart;
    step = lifecycle_adopt(&run->lc, uv_now(sup->loop));
    svc->state = run->lc.state;
    registry_touch(sup->reg, svc);
    log_info("%s: it runs, started outside the daemon: adopted", svc->name);
    if (svc->manifest->gpu_required) {
        char message[160];
        if (!gpu_free_for(sup, svc))
            log_warning("%s: started outside the daemon while another service holds the GPU",
                        svc->name);
        /* Starts waiting for the GPU lost it to this one. */
        snprintf(message, sizeof(message), "%s is using the GPU", svc->name);
        for (struct supervisor_op *o = sup->ops, *onext; o; o = onext) {
            onext = o->next;
            if (o->waiting_gpu && o->svc != svc) {
                op_finish(o, SUPERVISOR_CONFLICT, svc->name, message);
                onext = sup->ops;
            }
        }
    }
    run_apply(run, &step);
    ops_settle(sup);
}

/* A driver's backend (the Docker engine) went or came back: its services' status shows it. */
static void on_backend(void *data, const struct driver *d, const char *error)
{
    struct supervisor *sup = data;
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(sup->reg, i);
        if (driver_for(svc->manifest) == d)
            registry_touch(sup->reg, svc);
    }
}

static const struct driver_outside outside = {.appeared = on_appeared, .backend = on_backend};

const char *supervisor_unavailable(const struct service *svc, char *buf, size_t size)
{
    const struct driver *d = driver_for(svc->manifest);

    if (!d) {
        snprintf(buf, size, "this daemon has no driver %s",
                 manifest_driver_name(svc->manifest->driver));
        return buf;
    }
    return d->available(svc->manifest, buf, size) < 0 ? buf : NULL;
}

json_t *supervisor_drivers_info(void)
{
    json_t *info = json_object();

    for (const struct driver *const *d = drivers_all(); *d; d++)
        if ((*d)->info)
            json_object_set_new(info, (*d)->name, (*d)->info());
    return info;
}

struct supervisor *supervisor_new(uv_loop_t *loop, struct registry *reg, struct fetcher *fetcher,
                                  const struct config *config)
{
    struct supervisor *sup = xcalloc(1, sizeof(*sup));

    sup->loop = loop;
    sup->reg = reg;
    sup->fetcher = fetcher;
    sup->config = config;
    uv_timer_init(loop, &sup->log_timer);
    sup->log_timer.data = sup;
    sup->state_writer = state_writer_new(loop, config->state_dir);
    uv_timer_start(&sup->log_timer, on_log_timer, LOG_CHECK_MS, LOG_CHECK_MS);
    struct driver_context ctx = {loop, fetcher, config, &outside, sup};
    for (const struct driver *const *d = drivers_all(); *d; d++)
        if ((*d)->setup)
            (*d)->setup(&ctx);
    return sup;
}

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
    supervisor_services_changed(sup);
    json_t *doc = NULL, *services, *entry;
    const char *name;
    char err[512];
    int r = state_load(sup->config->state_dir, &doc, err, sizeof(err));

    if (r < 0) {
        log_error("%s; starting with no services adopted", err);
        return;
    }
    services = json_object_get(doc, "services");
    json_object_foreach(services, name, entry)
    {
        struct service *svc = registry_find(sup->reg, name);
        json_int_t pid = json_integer_value(json_object_get(entry, "pid"));
        struct run *run;
        struct lifecycle_step step;

        if (!svc || strcmp(json_string_value(json_object_get(entry, "driver")) ?: "",
                           driver_for(svc->manifest)->name) != 0) {
            log_warning("%s (pid %d) was started by an earlier daemon but is no longer a "
                        "service here: left alone",
                        name, (int)pid);
            continue;
        }
        run = run_of(sup, svc);
        r = driver_for(svc->manifest)->adopt
                ? driver_for(svc->manifest)
                      ->adopt(sup->loop, svc->manifest, entry, &driver_events, run, &run->instance)
                : -ESRCH;
        if (r < 0) {
            log_info("%s: no longer running (pid %d): stopped", name, (int)pid);
            continue;
        }
        run->stop_timeout_ms = svc->manifest->stop_timeout_ms;
        svc->started_at_ms = json_integer_value(json_object_get(entry, "started_at_ms"));
        step = lifecycle_adopt(&run->lc, uv_now(sup->loop));
        svc->state = run->lc.state;
        registry_touch(sup->reg, svc);
        run_apply(run, &step);
        log_info("%s: adopted, pid %d, %s", name, (int)pid, lifecycle_state_name(svc->state));
    }
    json_decref(doc);
    state_record(sup);
}

void supervisor_shutdown(struct supervisor *sup, bool stop_services)
{
    size_t n = registry_count(sup->reg);

    sup->shutting_down = true;
    uv_timer_stop(&sup->log_timer);
    /* Starts still waiting (for the GPU, or for health) are answered now. */
    for (struct supervisor_op *op = sup->ops, *next; op; op = next) {
        next = op->next;
        if (op->kind == OP_START) {
            op_finish(op, SUPERVISOR_UNAVAILABLE, NULL, "the daemon is stopping");
            next = sup->ops;
        }
    }
    if (stop_services)
        for (size_t i = 0; i < n; i++) {
            struct run *run = registry_at(sup->reg, i)->run;
            if (run)
                run_event(run, LIFECYCLE_STOP);
        }
    else
        state_record(sup);
}

bool supervisor_keeps(void *data, const struct service *svc)
{
    struct supervisor *sup = data;
    const struct run *run = svc->run;

    if (run && (run->reserved || run_lingers(run)))
        return true;
    for (const struct supervisor_op *op = sup->ops; op; op = op->next)
        if (op->svc == svc)
            return true;
    return false;
}

bool supervisor_busy(struct supervisor *sup)
{
    size_t n = registry_count(sup->reg);

    for (size_t i = 0; i < n; i++) {
        struct run *run = registry_at(sup->reg, i)->run;
        if (run && run->instance)
            return true;
    }
    return false;
}

static void on_log_timer_closed(uv_handle_t *h)
{
    free(h->data);
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
    for (size_t i = 0; i < registry_count(sup->reg); i++) {
        struct service *svc = registry_at(sup->reg, i);
        if (svc->run)
            supervisor_run_free(svc->run);
        svc->run = NULL;
    }
    for (const struct driver *const *d = drivers_all(); *d; d++)
        if ((*d)->teardown)
            (*d)->teardown();
    state_writer_free(sup->state_writer); /* what it still writes, it writes */
    if (sup->rotating)
        sup->rotating->sup = NULL; /* it ends by itself */
    uv_close((uv_handle_t *)&sup->log_timer, on_log_timer_closed);
}
