/* A service's output: its last lines through its driver, and the rotation of the log
 * files beside them, on a worker thread. */
#include <string.h>

#include "core/supervisor_impl.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define LOG_CHECK_MS 5000 /* how often the log files are checked for rotation */

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
    struct driver_logs *request = NULL;
    char *path;

    if (!driver || !driver->logs) {
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

/* Every LOG_CHECK_MS: rotates the logs of the running services whose driver keeps a log
 * file, off the loop. */
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
        const struct run *run = run_find(sup, registry_at(sup->reg, i));
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

void logs_rotation_start(struct supervisor *sup)
{
    uv_timer_init(sup->loop, &sup->log_timer);
    sup->log_timer.data = sup;
    uv_timer_start(&sup->log_timer, on_log_timer, LOG_CHECK_MS, LOG_CHECK_MS);
}

void logs_rotation_stop(struct supervisor *sup)
{
    uv_timer_stop(&sup->log_timer);
}

static void on_log_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void logs_rotation_free(struct supervisor *sup)
{
    if (sup->rotating)
        sup->rotating->sup = NULL; /* it ends by itself */
    uv_close((uv_handle_t *)&sup->log_timer, on_log_timer_closed);
}
