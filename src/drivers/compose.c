/* The Docker Compose driver: start is `COMPOSE -p NAME -f FILE up -d`, stop is `down -t N`,
 * both child processes on the loop with their stderr read back through a pipe; what runs
 * is what the Docker engine says (docker.c), not what the commands meant to do. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/drivers.h"
#include "core/config.h"
#include "core/gpu.h"
#include "drivers/compose_command.h"
#include "drivers/docker.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/procstat.h"

#define COMPOSE_DOWN_TRIES    3     /* downs after which containers still running are let be */
#define COMPOSE_DOWN_GRACE_MS 60000 /* a down taking this much past stop_timeout hangs */

enum phase {
    PHASE_WAIT,    /* an earlier run of the project is still going down: up waits */
    PHASE_UP,      /* `up -d` runs */
    PHASE_RUNNING, /* up; the engine's lists tell when its containers end */
    PHASE_DOWN,    /* `down` runs */
    PHASE_SETTLE,  /* down returned; waits for a list that shows no container running (a
                    * stop is over only then: a GPU holder holds until its containers end) */
    PHASE_ENDED,   /* gone() was said */
};

struct compose_run {
    struct driver_run base; /* first: the handle the supervisor holds */
    char *name;             /* the service's */
    char *project;          /* compose's normal form of it */
    char *dir, *file;
    char **env; /* the manifest's "KEY=VALUE" plus DOCKER_HOST */
    const struct driver_events *events;
    void *data;
    enum phase phase;
    bool stop_wanted;
    bool released;
    uint64_t stop_timeout_ms;
    uint64_t list_from;          /* lists older than this one say nothing about this run */
    unsigned downs;              /* downs run, for COMPOSE_DOWN_TRIES */
    struct compose_child *child; /* the command it runs, NULL when none */
    struct compose_run *next, *prev;
};

struct compose {
    uv_loop_t *loop;
    struct compose_command command;
    struct docker *docker; /* NULL until a compose service exists (libcurl costs ~2 MiB) */
    struct fetcher *fetcher;
    char *socket;
    const struct driver_outside *outside;
    void *data;
    struct compose_run *runs; /* every run not yet released */
    bool listed;              /* the engine's first list is in, and was looked at */
    uv_timer_t wake;          /* lets waiting runs go, outside the callers' stacks */
};

static struct compose *compose; /* one per daemon, made by driver_compose_setup() */

static void on_engine(void *data, const char *error);
static void on_listed(void *data);
static const struct docker_watch watch = {.engine = on_engine, .listed = on_listed};

/* Starts watching the engine (first used by a compose service): a daemon without compose
 * services does not load libcurl for it. */
static void compose_in_use(void)
{
    if (compose && !compose->docker)
        compose->docker =
            docker_new(compose->loop, compose->fetcher, compose->socket, &watch, compose);
}

/* --- the compose command ---------------------------------------------------------------- */

/* --- runs ------------------------------------------------------------------------------ */

static void on_wake(uv_timer_t *t);

static void run_free(struct compose_run *r)
{
    if (r->env)
        for (char **e = r->env; *e; e++)
            free(*e);
    free(r->env);
    free(r->name);
    free(r->project);
    free(r->dir);
    free(r->file);
    free(r);
}

/* Something changed in the runs: waiting ones may go (or end) now. */
static void wake_soon(void)
{
    if (compose)
        uv_timer_start(&compose->wake, on_wake, 0, 0);
}

static void run_unlink(struct compose_run *r)
{
    wake_soon();
    if (r->prev)
        r->prev->next = r->next;
    else if (compose && compose->runs == r)
        compose->runs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

static struct compose_run *run_new(const struct manifest *m, char *const *run_env,
                                   const struct driver_events *events, void *data)
{
    struct compose_run *r = xcalloc(1, sizeof(*r));
    size_t n = 0, n_run = 0;

    r->base.driver = &driver_compose;
    r->name = xstrdup(m->name);
    r->project = docker_project_name(m->name);
    r->dir = xstrdup(m->dir);
    r->file = m->compose_file ? xstrdup(m->compose_file) : NULL;
    while (m->env && m->env[n])
        n++;
    while (run_env && run_env[n_run])
        n_run++;
    r->env = xcalloc(n + n_run + 2, sizeof(*r->env));
    for (size_t i = 0; i < n; i++)
        r->env[i] = xstrdup(m->env[i]);
    for (size_t i = 0; i < n_run; i++)
        r->env[n + i] = xstrdup(run_env[i]);
    r->env[n + n_run] = xasprintf("DOCKER_HOST=unix://%s", docker_socket(compose->docker));
    r->events = events;
    r->data = data;
    r->stop_timeout_ms = m->stop_timeout_ms;
    r->next = compose->runs;
    if (r->next)
        r->next->prev = r;
    compose->runs = r;
    return r;
}

/* The run ends: gone() once, then it waits for release(). */
static void run_end(struct compose_run *r)
{
    if (r->phase == PHASE_ENDED)
        return;
    r->phase = PHASE_ENDED;
    run_unlink(r);
    if (!r->released && r->events->gone)
        r->events->gone(r->data, &r->base);
}

/* --- compose commands as children -------------------------------------------------------- */

/* --- compose commands --------------------------------------------------------------------- */

/* Runs `COMPOSE -p PROJECT [-f FILE] ARGS...` for r in its service folder; done follows
 * unless r was released meanwhile. */
static int run_spawn(struct compose_run *r, const char *what, const char *const *args,
                     uint64_t timeout_ms, compose_child_fn done, char *err, size_t err_size)
{
    struct compose_child_args a = {
        .command = &compose->command,
        .name = r->name,
        .project = r->project,
        .file = r->file,
        .dir = r->dir,
        .env = r->env,
        .what = what,
        .args = args,
        .timeout_ms = timeout_ms,
    };

    return compose_child_spawn(compose->loop, &a, done, r, &r->child, err, err_size);
}

/* A command of r ended: false when r was released meanwhile (and is freed now). */
static bool run_child_ended(struct compose_run *r)
{
    r->child = NULL;
    if (!r->released)
        return true;
    if (r->phase != PHASE_ENDED)
        run_unlink(r);
    run_free(r);
    return false;
}

/* --- stop ------------------------------------------------------------------------------ */

static void down_begin(struct compose_run *r);

static void on_down_done(void *data, const char *error)
{
    struct compose_run *r = data;

    if (!run_child_ended(r))
        return;
    if (error)
        log_warning("%s: %s", r->name, error);
    /* Asked while still PHASE_DOWN: an engine found gone right now ends settling runs. */
    r->list_from = docker_refresh(compose->docker);
    if (docker_gone(compose->docker)) {
        run_end(r); /* no dockerd: its containers ended with it */
        return;
    }
    r->phase = PHASE_SETTLE; /* the next list, now or after reconnecting, tells */
}

/* What `down` could not do: the engine stops the containers by id, and the run waits
 * for a list that shows them ended. */
static void stop_through_engine(struct compose_run *r)
{
    if (docker_gone(compose->docker)) {
        run_end(r);
        return;
    }
    docker_stop_project(compose->docker, r->project, (unsigned)((r->stop_timeout_ms + 999) / 1000));
    r->phase = PHASE_SETTLE;
    r->list_from = docker_generation(compose->docker) + 1;
}

static void down_begin(struct compose_run *r)
{
    char seconds[32], err[256];
    /* --remove-orphans: containers of services since renamed or dropped from the file go
     * too, or they would keep the stop (and the GPU) forever. */
    const char *args[] = {"down", "--remove-orphans", "-t", seconds, NULL};

    snprintf(seconds, sizeof(seconds), "%llu",
             (unsigned long long)((r->stop_timeout_ms + 999) / 1000));
    r->phase = PHASE_DOWN;
    r->downs++;
    if (run_spawn(r, "down", args, r->stop_timeout_ms + COMPOSE_DOWN_GRACE_MS, on_down_done, err,
                  sizeof(err)) < 0) {
        log_warning("%s: %s", r->name, err);
        stop_through_engine(r);
    }
}

/* --- start ----------------------------------------------------------------------------- */

static void on_up_done(void *data, const char *error)
{
    struct compose_run *r = data;

    if (!run_child_ended(r))
        return;
    if (error && !r->stop_wanted) {
        /* A failed up may have made some containers: take them down too. */
        log_info("%s: %s", r->name, error);
        r->events->started(r->data, &r->base, error);
        if (!r->released)
            down_begin(r);
        return;
    }
    if (r->stop_wanted) {
        down_begin(r);
        return;
    }
    r->phase = PHASE_RUNNING;
    r->list_from = docker_refresh(compose->docker);
    r->events->started(r->data, &r->base, NULL);
}

static void up_begin(struct compose_run *r)
{
    static const char *const args[] = {"up", "-d", NULL};
    char err[256];

    r->phase = PHASE_UP;
    docker_forget_exit(compose->docker, r->project);
    /* No limit: up -d may build an image, which takes what it takes. */
    if (run_spawn(r, "up -d", args, 0, on_up_done, err, sizeof(err)) < 0) {
        r->events->started(r->data, &r->base, err);
        run_end(r);
    }
}

/* True while another run of r's project is still going down. */
static bool project_busy(const struct compose_run *r)
{
    for (const struct compose_run *o = compose->runs; o; o = o->next)
        if (o != r && (o->phase == PHASE_DOWN || o->phase == PHASE_SETTLE) &&
            strcmp(o->project, r->project) == 0)
            return true;
    return false;
}

/* Waiting runs: a stop ends them, the end of the earlier run's down lets them up. Each
 * step may change the runs, so the walk starts again after it. */
static void on_wake(uv_timer_t *t)
{
    struct compose_run *r;

    (void)t;
    for (;;) {
        for (r = compose->runs; r; r = r->next)
            if (r->phase == PHASE_WAIT && !r->released && (r->stop_wanted || !project_busy(r)))
                break;
        if (!r)
            return;
        if (r->stop_wanted)
            run_end(r);
        else
            up_begin(r);
    }
}

static int compose_available(const struct manifest *m, char *err, size_t err_size)
{
    const char *error;

    compose_in_use();
    if (!compose || !compose->command.argv[0]) {
        snprintf(err, err_size,
                 "no Docker Compose command: neither `docker compose` nor docker-compose was "
                 "found (install one, or set compose_command)");
        return -ENOENT;
    }
    error = docker_error(compose->docker);
    if (error) {
        snprintf(err, err_size, "the Docker engine is not reachable at %s: %s",
                 docker_socket(compose->docker), error);
        return -EHOSTDOWN;
    }
    return 0;
}

static int compose_start(uv_loop_t *loop, const struct manifest *m, char *const *env,
                         const char *log_path, const struct driver_events *events, void *data,
                         struct driver_run **ret, char *err, size_t err_size)
{
    static const char *const args[] = {"up", "-d", NULL};
    struct compose_run *r;
    int rc = compose_available(m, err, err_size);

    (void)loop;
    (void)log_path;
    if (rc < 0)
        return rc;
    r = run_new(m, env, events, data);
    if (project_busy(r)) {
        r->phase = PHASE_WAIT; /* up after the earlier run's down, not during it */
        *ret = &r->base;
        return 1;
    }
    r->phase = PHASE_UP;
    docker_forget_exit(compose->docker, r->project);
    rc = run_spawn(r, "up -d", args, 0, on_up_done, err, err_size);
    if (rc < 0) {
        run_unlink(r);
        run_free(r);
        return rc;
    }
    *ret = &r->base;
    return 1;
}

/* The compose run behind a handle of this driver. */
static struct compose_run *compose_run(const struct driver_run *r)
{
    return (struct compose_run *)r;
}

static void compose_stop(struct driver_run *handle, uint64_t timeout_ms)
{
    struct compose_run *r = compose_run(handle);

    r->stop_timeout_ms = timeout_ms;
    if (r->stop_wanted || r->phase == PHASE_ENDED)
        return;
    r->stop_wanted = true;
    if (r->phase == PHASE_RUNNING)
        down_begin(r);
    else if (r->phase == PHASE_WAIT)
        wake_soon(); /* it ends there, not on the caller's stack */
    /* PHASE_UP: down follows when up returns; DOWN and SETTLE: under way. */
}

/* The engine's containers are the truth: nothing to record, adoption comes from them. */
static json_t *compose_record(const struct driver_run *r)
{
    (void)r;
    return NULL;
}

/* Takes over the running containers of m's project. */
static int compose_adopt(uv_loop_t *loop, const struct manifest *m, json_t *record,
                         const struct driver_events *events, void *data, struct driver_run **ret)
{
    struct docker_project p;
    struct compose_run *r;
    char *project;

    (void)loop;
    (void)record;
    if (!compose)
        return -ESRCH;
    compose_in_use();
    project = docker_project_name(m->name);
    docker_project_get(compose->docker, project, &p);
    free(project);
    if (p.n_running == 0)
        return -ESRCH;
    r = run_new(m, NULL, events, data);
    r->phase = PHASE_RUNNING;
    r->list_from = docker_generation(compose->docker);
    *ret = &r->base;
    return 0;
}

/* pid is one of the run's when its cgroups name a container of the project (the engine's
 * latest list): a container's processes all live in its cgroup. */
static bool compose_owns_pid(const struct driver_run *handle, int pid)
{
    const struct compose_run *r = compose_run(handle);
    char *cgroups;
    bool found = false;

    if (!compose || !(cgroups = procstat_cgroups(pid)))
        return false;
    for (size_t i = 0; i < docker_count(compose->docker) && !found; i++) {
        const struct docker_container *dc = docker_at(compose->docker, i);
        found = strcmp(dc->project, r->project) == 0 && *dc->id && strstr(cgroups, dc->id);
    }
    free(cgroups);
    return found;
}

/* The GPUs a running container of the project was given, from the environment of one of
 * its processes: NVIDIA_VISIBLE_DEVICES, which Docker sets from a device request's
 * device_ids (and which compose files for the nvidia runtime set themselves). */
static int compose_gpu_devices(const struct driver_run *handle, uint64_t *ret)
{
    const struct compose_run *r = compose_run(handle);
    char value[512];
    int rc = -ESRCH;

    for (size_t i = 0; compose && i < docker_count(compose->docker) && rc < 0; i++) {
        const struct docker_container *dc = docker_at(compose->docker, i);
        pid_t pid;

        if (!dc->running || strcmp(dc->project, r->project) != 0 || !*dc->id ||
            (pid = procstat_cgroup_member(dc->id)) <= 0)
            continue;
        rc = procstat_environ_get(pid, "NVIDIA_VISIBLE_DEVICES", value, sizeof(value));
        if (rc == 0)
            rc = gpu_devices_parse(value, ret);
    }
    return rc;
}

/* `down` for a project whose containers all ended but are still there. */
static int compose_leftovers(const struct manifest *m, const struct driver_events *events,
                             void *data, struct driver_run **ret)
{
    struct docker_project p;
    struct compose_run *r;
    char *project;

    *ret = NULL;
    compose_in_use();
    if (!compose || !compose->command.argv[0] || docker_error(compose->docker))
        return 0;
    project = docker_project_name(m->name);
    docker_project_get(compose->docker, project, &p);
    free(project);
    if (p.n_containers == 0)
        return 0;
    r = run_new(m, NULL, events, data);
    r->stop_wanted = true;
    r->released = true; /* quiet until the caller has it */
    down_begin(r);
    if (r->phase == PHASE_ENDED) {
        run_free(r); /* down could not even start */
        return -EIO;
    }
    r->released = false;
    *ret = &r->base;
    return 0;
}

static void compose_release(struct driver_run *handle)
{
    struct compose_run *r = compose_run(handle);

    r->released = true;
    if (r->child)
        return; /* freed when its command ends */
    if (r->phase != PHASE_ENDED)
        run_unlink(r);
    run_free(r);
}

/* --- the engine's view ------------------------------------------------------------------- */

/* The first run that a list from gen on says something about: its containers all ended,
 * or its down is over. */
static struct compose_run *run_concluded(struct compose *c, uint64_t gen,
                                         struct docker_project *ret)
{
    for (struct compose_run *r = c->runs; r; r = r->next) {
        if (r->released || gen < r->list_from)
            continue;
        docker_project_get(c->docker, r->project, ret);
        if (r->phase == PHASE_SETTLE || (r->phase == PHASE_RUNNING && ret->n_running == 0))
            return r;
    }
    return NULL;
}

/* After a new list: runs whose containers all ended, and projects nobody runs. The events
 * may change the list of runs, so it is walked again after each. */
static void on_listed(void *data)
{
    struct compose *c = data;
    uint64_t gen = docker_generation(c->docker);
    struct docker_project p;
    struct compose_run *r;

    if (!c->listed) {
        /* Now the driver can say what runs (compose_settled): the daemon adopts what its
         * state file recorded, before what nobody runs is told through appeared. */
        c->listed = true;
        c->outside->backend(c->data, &driver_compose, NULL);
    }
    while ((r = run_concluded(c, gen, &p))) {
        if (r->phase == PHASE_RUNNING) {
            /* Docker's exit codes above 128 are 128 + the signal that killed it. */
            int code = p.exit_code, sig = code > 128 && code < 128 + 65 ? code - 128 : 0;
            r->phase = PHASE_ENDED;
            run_unlink(r);
            r->events->exited(r->data, &r->base, sig ? 0 : code, sig);
            if (!r->released && r->events->gone)
                r->events->gone(r->data, &r->base);
        } else if (p.n_running == 0) {
            run_end(r);
        } else if (r->downs < COMPOSE_DOWN_TRIES) {
            log_warning("%s: %u of its containers still run after down: down again", r->name,
                        p.n_running);
            down_begin(r);
        } else if (r->downs++ == COMPOSE_DOWN_TRIES) {
            log_error("%s: its containers still run after %u downs: stopping them through "
                      "the engine",
                      r->name, COMPOSE_DOWN_TRIES);
            stop_through_engine(r);
        } else {
            /* Still not: it stays stopping, and holds what it holds, until they end. */
            r->list_from = gen + 1;
        }
    }
    for (size_t i = 0; i < docker_count(c->docker); i++) {
        const struct docker_container *dc = docker_at(c->docker, i);
        bool ours = false;

        if (!dc->running)
            continue;
        for (r = c->runs; r && !ours; r = r->next)
            ours = strcmp(r->project, dc->project) == 0;
        for (size_t j = 0; j < i && !ours; j++) /* once per project */
            ours = docker_at(c->docker, j)->running &&
                   strcmp(docker_at(c->docker, j)->project, dc->project) == 0;
        if (!ours)
            c->outside->appeared(c->data, &driver_compose, dc->project);
    }
}

/* True once the engine's first list was looked at, or the engine is known unreachable
 * (what runs there is not known, and no waiting makes it known), or no compose service
 * made the driver watch it. */
static bool compose_settled(void)
{
    return !compose || !compose->docker || compose->listed || docker_error(compose->docker);
}

static void on_engine(void *data, const char *error)
{
    struct compose *c = data;
    struct compose_run *r;

    /* With dockerd gone, containers ended with it (unless live-restore keeps them, which
     * the lists say when it is back): stops waiting for a list are over. A stream that
     * broke or a list that took too long says nothing: they wait for the next list. */
    while (error && docker_gone(c->docker)) {
        for (r = c->runs; r && r->phase != PHASE_SETTLE; r = r->next)
            ;
        if (!r)
            break;
        run_end(r); /* unlinks it: the walk starts again */
    }
    c->outside->backend(c->data, &driver_compose, error);
}

/* Finds the compose command (the config's, when set, overrides) and notes where the
 * engine is; it is watched only once a compose service exists (compose_in_use). */
static void compose_setup(const struct driver_context *ctx)
{
    struct compose *c = xcalloc(1, sizeof(*c));

    c->loop = ctx->loop;
    c->outside = ctx->outside;
    c->data = ctx->data;
    compose_command_find(&c->command, ctx->config->compose_command);
    if (c->command.argv[0])
        log_info("compose command: %s", c->command.text);
    else
        log_warning("no Docker Compose command found (docker compose or docker-compose): "
                    "compose services cannot start");
    uv_timer_init(ctx->loop, &c->wake);
    c->wake.data = c;
    compose = c;
    c->fetcher = ctx->fetcher;
    c->socket = xstrdup(ctx->config->docker_host);
}

static void on_wake_closed(uv_handle_t *h)
{
    free(h->data);
}

static void compose_teardown(void)
{
    struct compose *c = compose;

    if (!c)
        return;
    while (c->runs) {
        struct compose_run *r = c->runs;
        run_unlink(r);
        if (r->child)
            compose_child_abandon(r->child);
        run_free(r);
    }
    docker_free(c->docker);
    free(c->socket);
    compose_command_clear(&c->command);
    compose = NULL;
    uv_close((uv_handle_t *)&c->wake, on_wake_closed);
}

/* {"command": "docker-compose" | null, "docker_host": path,
 *  "engine": "reachable" | "unreachable" | "unwatched", "error": ...} */
static json_t *compose_info(void)
{
    if (!compose)
        return json_null();
    if (!compose->docker)
        return json_pack("{s:o, s:s, s:s, s:n}", "command",
                         compose->command.text ? json_string(compose->command.text) : json_null(),
                         "docker_host", compose->socket, "engine", "unwatched", "error");
    return json_pack("{s:o, s:s, s:s, s:o}", "command",
                     compose->command.text ? json_string(compose->command.text) : json_null(),
                     "docker_host", docker_socket(compose->docker), "engine",
                     docker_reachable(compose->docker) ? "reachable" : "unreachable", "error",
                     docker_error(compose->docker) ? json_string(docker_error(compose->docker))
                                                   : json_null());
}

/* --- logs ------------------------------------------------------------------------------ */

struct compose_logs {
    struct driver_logs base; /* first: the handle the supervisor holds */
    struct docker_logs *request;
    driver_logs_fn done;
    void *data;
};

static void on_docker_logs(void *data, char **lines, const char *error)
{
    struct compose_logs *l = data;

    l->done(l->data, lines, error);
    strv_free(lines);
    free(l);
}

static void compose_logs(const struct manifest *m, const char *log_path, unsigned tail,
                         driver_logs_fn done, void *data, struct driver_logs **ret)
{
    struct compose_logs *l = xcalloc(1, sizeof(*l));
    char *project = docker_project_name(m->name);
    struct docker_logs *request;

    (void)log_path;
    *ret = NULL;
    l->base.driver = &driver_compose;
    l->done = done;
    l->data = data;
    compose_in_use();
    if (!compose || docker_error(compose->docker)) {
        char err[512];
        compose_available(m, err, sizeof(err));
        free(project);
        free(l);
        done(data, NULL, err);
        return;
    }
    /* done may come at once (no containers): l is freed then. */
    docker_logs(compose->docker, project, tail, on_docker_logs, l, &request);
    free(project);
    if (request) {
        l->request = request;
        *ret = &l->base;
    }
}

static void compose_logs_cancel(struct driver_logs *handle)
{
    struct compose_logs *l = (struct compose_logs *)handle;

    docker_logs_cancel(l->request);
    free(l);
}

/* --- follow ----------------------------------------------------------------------------- */

#define COMPOSE_RING_LINES 10000             /* the lines kept for followers that join */
#define COMPOSE_RING_BYTES (4 * 1024 * 1024) /* ...and their bytes */

/* A follow of a project's logs: the engine's streams (docker_follow) and the last lines
 * they gave, kept in a ring: a follower that joins gets its tail from there, on a later
 * loop pass, ending with the last line given out (at most what the ring holds). */
struct compose_follow {
    struct driver_follow base; /* first: the handle the supervisor holds */
    struct docker_follow *streams;
    const struct driver_follow_events *events;
    void *data;
    char **ring; /* COMPOSE_RING_LINES, oldest at ring_first */
    size_t ring_first, ring_n, ring_bytes;
    struct compose_follow_tail *tails; /* asked, answered on the next pass */
    uv_timer_t answer;
};

struct compose_follow_tail {
    struct driver_follow_tail base;
    struct compose_follow *cf;
    unsigned tail;
    driver_logs_fn done;
    void *data;
    struct compose_follow_tail *next;
};

static void ring_push(struct compose_follow *cf, const char *line, size_t len)
{
    char *copy;

    while (cf->ring_n > 0 &&
           (cf->ring_n == COMPOSE_RING_LINES || cf->ring_bytes + len > COMPOSE_RING_BYTES)) {
        cf->ring_bytes -= strlen(cf->ring[cf->ring_first]);
        free(cf->ring[cf->ring_first]);
        cf->ring_first = (cf->ring_first + 1) % COMPOSE_RING_LINES;
        cf->ring_n--;
    }
    /* A NUL byte ends the copy (the tails are C strings): its bytes are the copy's. */
    copy = xstrndup(line, len);
    cf->ring[(cf->ring_first + cf->ring_n) % COMPOSE_RING_LINES] = copy;
    cf->ring_bytes += strlen(copy);
    cf->ring_n++;
}

static void on_stream_line(void *data, const char *line, size_t len)
{
    struct compose_follow *cf = data;

    ring_push(cf, line, len);
    cf->events->line(cf->data, line, len); /* may stop cf */
}

static void on_follow_closed(uv_handle_t *h)
{
    struct compose_follow *cf = h->data;

    for (size_t i = 0; i < cf->ring_n; i++)
        free(cf->ring[(cf->ring_first + i) % COMPOSE_RING_LINES]);
    free(cf->ring);
    free(cf);
}

static void on_stream_end(void *data, const char *error)
{
    struct compose_follow *cf = data;

    cf->streams = NULL; /* it frees itself */
    cf->events->ended(cf->data, error);
    uv_close((uv_handle_t *)&cf->answer, on_follow_closed);
}

/* The tails asked, from the ring as it is now; one at a time, as an answer may cancel
 * the others. */
static void on_answer(uv_timer_t *timer)
{
    struct compose_follow *cf = timer->data;
    struct compose_follow_tail *t;

    while ((t = cf->tails)) {
        size_t n = t->tail < cf->ring_n ? t->tail : cf->ring_n;
        char **lines = xcalloc(n + 1, sizeof(*lines));

        for (size_t i = 0; i < n; i++)
            lines[i] = cf->ring[(cf->ring_first + cf->ring_n - n + i) % COMPOSE_RING_LINES];
        cf->tails = t->next;
        t->done(t->data, lines, NULL);
        free(lines); /* the lines are the ring's */
        free(t);
    }
}

static int compose_follow(uv_loop_t *loop, const struct manifest *m, const char *log_path,
                          unsigned tail, const struct driver_follow_events *events, void *data,
                          struct driver_follow **ret, char *err, size_t err_size)
{
    struct compose_follow *cf;
    char *project;
    int r;

    compose_in_use();
    if (!compose || docker_error(compose->docker)) {
        compose_available(m, err, err_size); /* its sentence, as compose_logs() */
        return -EHOSTDOWN;
    }
    cf = xcalloc(1, sizeof(*cf));
    cf->base.driver = &driver_compose;
    cf->events = events;
    cf->data = data;
    project = docker_project_name(m->name);
    r = docker_follow(compose->docker, loop, project, tail, on_stream_line, on_stream_end, cf,
                      &cf->streams);
    free(project);
    if (r < 0) {
        if (r == -ENOENT)
            snprintf(err, err_size, "it has no containers: start it first");
        else
            snprintf(err, err_size, "cannot start a request to the engine");
        free(cf);
        return r;
    }
    cf->ring = xcalloc(COMPOSE_RING_LINES, sizeof(*cf->ring));
    uv_timer_init(loop, &cf->answer);
    cf->answer.data = cf;
    *ret = &cf->base;
    return 0;
}

static void compose_follow_tail(struct driver_follow *f, unsigned tail, driver_logs_fn done,
                                void *data, struct driver_follow_tail **ret)
{
    struct compose_follow *cf = (struct compose_follow *)f;
    struct compose_follow_tail *t = xcalloc(1, sizeof(*t)), **at;

    t->base.driver = &driver_compose;
    t->cf = cf;
    t->tail = tail;
    t->done = done;
    t->data = data;
    for (at = &cf->tails; *at; at = &(*at)->next)
        ; /* in the order asked */
    *at = t;
    uv_timer_start(&cf->answer, on_answer, 0, 0);
    *ret = &t->base;
}

static void compose_follow_tail_cancel(struct driver_follow_tail *handle)
{
    struct compose_follow_tail *t = (struct compose_follow_tail *)handle, **at;

    for (at = &t->cf->tails; *at && *at != t; at = &(*at)->next)
        ;
    if (*at)
        *at = t->next;
    free(t);
}

static void compose_follow_stop(struct driver_follow *f)
{
    struct compose_follow *cf = (struct compose_follow *)f;

    docker_follow_free(cf->streams);
    cf->streams = NULL;
    uv_close((uv_handle_t *)&cf->answer, on_follow_closed);
}

/* Compose drops what is not [a-z0-9_-] from a project name: `a.b` and `ab` would be one
 * project, each service starting and stopping the other's containers. */
static void compose_instance_clash(const char *key, const char *other, char *buf, size_t size)
{
    snprintf(buf, size,
             "its compose project name %s (compose drops '.') is already the project of service "
             "%s: give this one another name",
             key, other);
}

const struct driver driver_compose = {
    .name = "compose",
    .setup = compose_setup,
    .teardown = compose_teardown,
    .in_use = compose_in_use,
    .settled = compose_settled,
    .info = compose_info,
    .instance_key = docker_project_name,
    .instance_clash = compose_instance_clash,
    .available = compose_available,
    .start = compose_start,
    .stop = compose_stop,
    .record = compose_record,
    .adopt = compose_adopt,
    .leftovers = compose_leftovers,
    .gpu_devices = compose_gpu_devices,
    .owns_pid = compose_owns_pid,
    .release = compose_release,
    .logs = compose_logs,
    .logs_cancel = compose_logs_cancel,
    .follow = compose_follow,
    .follow_tail = compose_follow_tail,
    .follow_tail_cancel = compose_follow_tail_cancel,
    .follow_stop = compose_follow_stop,
    .rotate = NULL,
};
