/* The process driver: the driver interface over proc.c. */
#include <errno.h>
#include <string.h>

#include "core/config.h"
#include "core/gpu.h"
#include "drivers/drivers.h"
#include "drivers/proc.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/logfile.h"
#include "lib/logfollow.h"
#include "lib/procstat.h"

#define PROCESS_TAIL_BYTES_MAX (16 * 1024 * 1024)

struct process_run {
    struct driver_run base; /* first: the handle the supervisor holds */
    struct proc *proc;
    const struct driver_events *events;
    void *data;
};

static void on_exited(void *data, struct proc *p, int exit_status, int term_signal)
{
    struct process_run *r = data;

    if (r->events->exited)
        r->events->exited(r->data, &r->base, exit_status, term_signal);
}

static void on_gone(void *data, struct proc *p)
{
    struct process_run *r = data;

    if (r->events->gone)
        r->events->gone(r->data, &r->base);
}

static const struct proc_events forward = {.exited = on_exited, .gone = on_gone};

/* The process run behind a handle of this driver. */
static struct process_run *process_run(const struct driver_run *r)
{
    return (struct process_run *)r;
}

static struct process_run *run_new(const struct driver_events *events, void *data)
{
    struct process_run *r = xcalloc(1, sizeof(*r));

    r->base.driver = &driver_process;
    r->events = events;
    r->data = data;
    return r;
}

static int process_start(uv_loop_t *loop, const struct manifest *m, char *const *env,
                         const char *log_path, const struct driver_events *events, void *data,
                         struct driver_run **ret, char *err, size_t err_size)
{
    struct process_run *r = run_new(events, data);
    int rc = proc_start(loop, m, env, log_path, &forward, r, &r->proc, err, err_size);

    if (rc < 0) {
        free(r);
        return rc;
    }
    *ret = &r->base;
    return 0;
}

static void process_stop(struct driver_run *r, uint64_t timeout_ms)
{
    proc_stop(process_run(r)->proc, timeout_ms);
}

/* The pid and its start time: together they name the process for good. */
static json_t *process_record(const struct driver_run *handle)
{
    const struct process_run *r = process_run(handle);
    uint64_t start_time;

    if (!proc_running(r->proc) || proc_start_time(proc_pid(r->proc), &start_time) < 0)
        return NULL;
    return json_pack("{s:s, s:i, s:I}", "driver", "process", "pid", (int)proc_pid(r->proc),
                     "start_time", (json_int_t)start_time);
}

/* record NULL: no record, what runs in the service's cgroup (or carries its marker). */
static int process_adopt(uv_loop_t *loop, const struct manifest *m, json_t *record,
                         const struct driver_events *events, void *data, struct driver_run **ret)
{
    json_t *pid = json_object_get(record, "pid"), *start = json_object_get(record, "start_time");
    struct process_run *r;
    int rc;

    if (record &&
        (!json_is_integer(pid) || !json_is_integer(start) || json_integer_value(pid) <= 0))
        return -EINVAL;
    r = run_new(events, data);
    rc = proc_adopt(loop, m->name, record ? (pid_t)json_integer_value(pid) : 0,
                    record ? (uint64_t)json_integer_value(start) : 0, &forward, r, &r->proc);
    if (rc < 0) {
        free(r);
        return rc;
    }
    *ret = &r->base;
    return 0;
}

/* Its CUDA_VISIBLE_DEVICES, as the daemon that started it gave it. */
static int process_gpu_devices(const struct driver_run *handle, uint64_t *ret)
{
    const struct process_run *r = process_run(handle);
    char value[512];
    int rc;

    if (!proc_running(r->proc) || proc_pid(r->proc) <= 0)
        return -ESRCH;
    rc = procstat_environ_get(proc_pid(r->proc), "CUDA_VISIBLE_DEVICES", value, sizeof(value));
    return rc < 0 ? rc : gpu_devices_parse(value, ret);
}

static bool process_owns_pid(const struct driver_run *handle, int pid)
{
    return proc_owns(process_run(handle)->proc, pid);
}

static void process_release(struct driver_run *handle)
{
    struct process_run *r = process_run(handle);

    proc_free(r->proc); /* no more callbacks: r can go at once */
    free(r);
}

static int process_available(const struct manifest *m, char *err, size_t err_size)
{
    return 0;
}

static uv_loop_t *process_loop; /* on whose worker threads logs() reads */

/* What the driver sees run outside its runs, told on a loop pass of its own. */
struct process_outside {
    uv_timer_t scan;
    const struct driver_outside *outside;
    void *data;
};
static struct process_outside *outside;

/* Tells the supervisor of every service that runs in this daemon's subtree (a cgroup, or
 * the fallback's marker) though no run holds it: an earlier daemon started it and its
 * record is lost or broken. */
static void on_scan(uv_timer_t *t)
{
    char **names = NULL;

    if (proc_outside(&names) < 0)
        return;
    for (char **name = names; *name; name++)
        outside->outside->appeared(outside->data, &driver_process, *name);
    strv_free(names);
}

/* Picks cgroups or the fallback (proc_setup()) for the daemon's state folder. */
static void process_setup(const struct driver_context *ctx)
{
    process_loop = ctx->loop;
    if (ctx->config)
        proc_setup(ctx->config->state_dir);
    if (ctx->config && drivers_self())
        proc_set_logger(drivers_self(), ctx->config->log_max_bytes, ctx->config->log_max_files);
    if (!ctx->outside)
        return; /* a test of the driver alone */
    outside = xcalloc(1, sizeof(*outside));
    outside->outside = ctx->outside;
    outside->data = ctx->data;
    uv_timer_init(ctx->loop, &outside->scan);
    outside->scan.data = outside;
}

static void on_outside_closed(uv_handle_t *h)
{
    free(h->data);
}

static void process_teardown(void)
{
    if (outside)
        uv_close((uv_handle_t *)&outside->scan, on_outside_closed);
    outside = NULL;
    proc_set_logger(NULL, 0, 0);
    proc_teardown();
}

/* A process service exists (again after each rescan): the scan runs on the next loop
 * pass, after the records of the state file were adopted, so that it finds only what they
 * did not name. */
static void process_in_use(void)
{
    if (outside && outside->outside && outside->outside->appeared)
        uv_timer_start(&outside->scan, on_scan, 0, 0);
}

/* A logs request: the tail is read on a worker thread and answered on the loop. A
 * cancelled one frees itself when its work ends, without an answer. */
struct process_logs {
    struct driver_logs base; /* first: the handle the supervisor holds */
    uv_work_t work;
    char *path;
    unsigned tail;
    size_t max_bytes;
    driver_logs_fn done; /* NULL once cancelled */
    void *data;
    char **lines; /* the worker's result */
    int result;
};

/* The bytes a tail of n lines reads at most. */
static size_t tail_bytes(unsigned tail)
{
    size_t bytes = (size_t)tail * 1024 + 65536;

    return bytes < PROCESS_TAIL_BYTES_MAX ? bytes : PROCESS_TAIL_BYTES_MAX;
}

static void on_tail_work(uv_work_t *work)
{
    struct process_logs *l = work->data;

    l->result = logfile_tail(l->path, l->tail, l->max_bytes, &l->lines);
}

static void on_tail_read(uv_work_t *work, int status)
{
    struct process_logs *l = work->data;
    int r = status < 0 ? status : l->result;

    if (l->done && r < 0) {
        char *error = xasprintf("cannot read %s: %s", l->path, strerror(-r));
        l->done(l->data, NULL, error);
        free(error);
    } else if (l->done) {
        l->done(l->data, l->lines, NULL);
    }
    strv_free(l->lines);
    free(l->path);
    free(l);
}

/* The log file is read on a worker thread: done is called on a later loop pass. */
static void process_logs(const struct manifest *m, const char *log_path, unsigned tail,
                         driver_logs_fn done, void *data, struct driver_logs **ret)
{
    struct process_logs *l;
    int r;

    *ret = NULL;
    if (!process_loop) {
        done(data, NULL, "the process driver was not set up to read logs");
        return;
    }
    l = xcalloc(1, sizeof(*l));
    l->base.driver = &driver_process;
    l->path = xstrdup(log_path);
    l->tail = tail;
    l->max_bytes = tail_bytes(tail);
    l->done = done;
    l->data = data;
    l->work.data = l;
    r = uv_queue_work(process_loop, &l->work, on_tail_work, on_tail_read);
    if (r < 0) {
        char *error = xasprintf("cannot read %s: %s", log_path, uv_strerror(r));
        done(data, NULL, error);
        free(error);
        free(l->path);
        free(l);
        return;
    }
    *ret = &l->base;
}

/* done will not be called; the request frees itself once its work has ended (at once
 * when it had not begun). */
static void process_logs_cancel(struct driver_logs *handle)
{
    struct process_logs *l = (struct process_logs *)handle;

    l->done = NULL;
    uv_cancel((uv_req_t *)&l->work);
}

/* --- follow ----------------------------------------------------------------------------- */

/* A follow of the log file: one watch (lib/logfollow.h). Its first tail goes out through
 * line(); tails asked meanwhile wait for it, so that none ends before those lines. */
struct process_follow {
    struct driver_follow base; /* first: the handle the supervisor holds */
    struct logfollow *lf;
    struct logfollow_tail *first; /* the first tail, until it went out */
    struct process_follow_tail *waiting;
    const struct driver_follow_events *events;
    void *data;
    bool delivering, stopped;
};

struct process_follow_tail {
    struct driver_follow_tail base;
    struct process_follow *pf;
    struct logfollow_tail *request; /* NULL while it waits for the first tail */
    unsigned tail;
    driver_logs_fn done;
    void *data;
    struct process_follow_tail *next; /* among the waiting */
};

static void on_follow_line(void *data, const char *line, size_t len)
{
    struct process_follow *pf = data;

    pf->events->line(pf->data, line, len); /* may free pf */
}

static void on_later_tail(void *data, char **lines, int error)
{
    struct process_follow_tail *t = data;

    if (error < 0) {
        char *sentence = xasprintf("cannot read its log file: %s", strerror(-error));
        t->done(t->data, NULL, sentence);
        free(sentence);
    } else {
        t->done(t->data, lines, NULL);
    }
    free(t);
}

static void on_first_tail(void *data, char **lines, int error)
{
    struct process_follow *pf = data;
    struct process_follow_tail *t;
    char *sentence = NULL;

    pf->first = NULL;
    pf->delivering = true;
    for (char **line = lines; line && *line && !pf->stopped; line++)
        pf->events->line(pf->data, *line, strlen(*line));
    if (error < 0 && !pf->stopped) {
        /* The tails asked meanwhile are answered before it ends. */
        sentence = xasprintf("cannot read its log file: %s", strerror(-error));
        logfollow_free(pf->lf);
        pf->lf = NULL;
    }
    /* Taken one at a time: an answer may cancel the others. */
    while (!pf->stopped && (t = pf->waiting)) {
        pf->waiting = t->next;
        if (sentence) {
            t->done(t->data, NULL, sentence);
            free(t);
        } else {
            logfollow_tail(pf->lf, t->tail, tail_bytes(t->tail), on_later_tail, t, &t->request);
        }
    }
    pf->delivering = false;
    if (sentence && !pf->stopped)
        pf->events->ended(pf->data, sentence);
    free(sentence);
    if (pf->stopped || sentence)
        free(pf);
}

static int process_follow(uv_loop_t *loop, const struct manifest *m, const char *log_path,
                          unsigned tail, const struct driver_follow_events *events, void *data,
                          struct driver_follow **ret, char *err, size_t err_size)
{
    struct process_follow *pf = xcalloc(1, sizeof(*pf));
    int r;

    pf->base.driver = &driver_process;
    pf->events = events;
    pf->data = data;
    r = logfollow_new(loop, log_path, on_follow_line, pf, &pf->lf);
    if (r == 0 && tail > 0)
        logfollow_tail(pf->lf, tail, tail_bytes(tail), on_first_tail, pf, &pf->first);
    if (r < 0) {
        snprintf(err, err_size, "cannot watch %s: %s", log_path, strerror(-r));
        free(pf);
        return r;
    }
    *ret = &pf->base;
    return 0;
}

static void process_follow_tail(struct driver_follow *f, unsigned tail, driver_logs_fn done,
                                void *data, struct driver_follow_tail **ret)
{
    struct process_follow *pf = (struct process_follow *)f;
    struct process_follow_tail *t = xcalloc(1, sizeof(*t));

    t->base.driver = &driver_process;
    t->pf = pf;
    t->tail = tail;
    t->done = done;
    t->data = data;
    *ret = &t->base;
    if (pf->first) {
        t->next = pf->waiting;
        pf->waiting = t;
        return;
    }
    logfollow_tail(pf->lf, tail, tail_bytes(tail), on_later_tail, t, &t->request);
}

static void process_follow_tail_cancel(struct driver_follow_tail *handle)
{
    struct process_follow_tail *t = (struct process_follow_tail *)handle;
    struct process_follow_tail **at;

    for (at = &t->pf->waiting; *at && *at != t; at = &(*at)->next)
        ;
    if (*at)
        *at = t->next;
    logfollow_tail_cancel(t->request);
    free(t);
}

static void process_follow_stop(struct driver_follow *f)
{
    struct process_follow *pf = (struct process_follow *)f;

    logfollow_tail_cancel(pf->first);
    pf->first = NULL;
    logfollow_free(pf->lf);
    pf->stopped = true;
    if (!pf->delivering)
        free(pf);
}

const struct driver driver_process = {
    .name = "process",
    .setup = process_setup,
    .teardown = process_teardown,
    .in_use = process_in_use,
    .info = proc_info,
    .available = process_available,
    .start = process_start,
    .stop = process_stop,
    .record = process_record,
    .adopt = process_adopt,
    .gpu_devices = process_gpu_devices,
    .owns_pid = process_owns_pid,
    .release = process_release,
    .logs = process_logs,
    .logs_cancel = process_logs_cancel,
    .follow = process_follow,
    .follow_tail = process_follow_tail,
    .follow_tail_cancel = process_follow_tail_cancel,
    .follow_stop = process_follow_stop,
    .rotate = NULL, /* the logger rotates (lib/logfile.h) */
};
