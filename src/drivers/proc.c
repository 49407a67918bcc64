/* The process driver's engine: uv_spawn into the service's cgroup (or, in the fallback, a
 * process group of its own), in a session of its own, the log file as stdout and stderr,
 * and a stop that ends only when nothing of the service is left. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drivers/cgroup.h"
#include "drivers/proc.h"
#include "drivers/proc_internal.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/procstat.h"

struct proc {
    uv_loop_t *loop;
    char *name;                 /* the service's, NULL for a run without one (unit tests) */
    char *cgroup;               /* its cgroup's folder; NULL: a process group (fallback) */
    char *marker;               /* "NANNY_INSTANCE=<id>/<name>", in its environment */
    uv_fs_event_t events_watch; /* cgroup.events: "populated 0" means nothing is left */
    bool watching;
    bool scanning; /* fallback: its group is empty, processes with its marker are not */
    struct seen {
        pid_t pid;
        uint64_t start_time;
    } * seen; /* fallback: every process the marker scans found, until it has ended */
    size_t n_seen;
    struct proc *next, *prev; /* every run not yet freed (procs) */
    uv_process_t process;     /* a run we spawned */
    uv_process_t logger;      /* its logger, let go at once: the reaper reaps it */
    uv_poll_t pidfd_poll;     /* a run we adopted: its pidfd turns readable when it ends */
    int pidfd;
    bool adopted;
    uv_timer_t timer; /* the SIGKILL deadline and the checks for an empty group */
    int handles_open;
    pid_t pid;
    const struct proc_events *events;
    void *data;
    bool leader_alive;
    bool stopping;       /* proc_stop() was called */
    bool cleaning;       /* the leader ended: waiting for its group to be empty */
    bool killed;         /* SIGKILL went to the group */
    bool killed_all;     /* cgroup.kill went to the cgroup, logger included */
    bool gone;           /* gone() was called */
    uint64_t kill_at;    /* loop time for SIGKILL, while stopping */
    uint64_t give_up_at; /* loop time after which a group that will not go is let be */
};

static struct proc *procs; /* every run not yet freed */

/* The logger of every run started from now on (proc_set_logger()). */
static struct {
    char *exe; /* NULL: none, services write their log files themselves */
    uint64_t max_bytes;
    unsigned keep;
} logger;

void proc_set_logger(const char *exe, uint64_t max_bytes, unsigned keep)
{
    free(logger.exe);
    logger.exe = exe ? xstrdup(exe) : NULL;
    logger.max_bytes = max_bytes;
    logger.keep = keep;
}

/* Says the run is gone, once, and removes its cgroup. */
/* True when the processes of cgroup are all loggers (or none). */
static bool only_loggers(const char *cgroup)
{
    pid_t *pids = NULL;
    size_t n = 0;
    bool only = true;

    if (cgroup_pids(cgroup, &pids, &n) < 0)
        return false;
    for (size_t i = 0; i < n && only; i++)
        only = proc_is_logger(pids[i]);
    free(pids);
    return only;
}

static void proc_report_gone(struct proc *p)
{
    if (p->gone)
        return;
    p->gone = true;
    uv_timer_stop(&p->timer);
    if (p->watching) {
        uv_fs_event_stop(&p->events_watch);
        p->watching = false;
    }
    if (p->cgroup) {
        int r = cgroup_remove(p->cgroup);
        /* EBUSY with its logger still writing: the next start, or proc_teardown(), does. */
        if (r < 0 && !(r == -EBUSY && only_loggers(p->cgroup)))
            log_warning("cannot remove the cgroup %s: %s", p->cgroup, strerror(-r));
    }
    if (p->events->gone)
        p->events->gone(p->data, p);
}

/* True when no process of the process group is left (the leader reaped, no child behind).
 * The daemon is a child subreaper, so the group's orphans are its children: once the
 * leader is reaped (libuv did that) they are reaped here, as zombies count as members
 * until then. */
static bool group_empty(const struct proc *p)
{
    siginfo_t info;

    if (!p->leader_alive)
        while (waitid(P_PGID, (id_t)p->pid, &info, WEXITED | WNOHANG) == 0 && info.si_pid != 0)
            ;
    return kill(-p->pid, 0) < 0 && errno == ESRCH;
}

struct marker_count {
    struct proc *p;
    bool loggers;
    int signum; /* marker_kill(): sent to each but loggers */
    int n;
};

/* A process with the run's marker: counted, and remembered with its start time. */
static void marker_found(void *data, pid_t pid, const char *rest)
{
    struct marker_count *mc = data;
    struct proc *p = mc->p;
    uint64_t start;

    if (!mc->loggers && proc_is_logger(pid))
        return;
    mc->n++;
    for (size_t i = 0; i < p->n_seen; i++)
        if (p->seen[i].pid == pid)
            return;
    if (proc_start_time(pid, &start) < 0)
        return;
    p->seen = xrealloc(p->seen, (p->n_seen + 1) * sizeof(*p->seen));
    p->seen[p->n_seen++] = (struct seen){pid, start};
}

/* A process with the run's marker: remembered, and signalled unless it is a logger. */
static void marker_kill(void *data, pid_t pid, const char *rest)
{
    struct marker_count *mc = data;

    if (proc_is_logger(pid))
        return;
    marker_found(data, pid, rest);
    kill(pid, mc->signum);
}

/* How many processes of the run are left, as the fallback sees them: those carrying the
 * marker, and those once seen with it that have not ended yet (a process well into its
 * exit no longer shows its environment, though it may still hold files, a GPU's among
 * them, until it is a zombie). */
static int marker_count(struct proc *p, bool loggers)
{
    struct marker_count mc = {.p = p, .loggers = loggers};

    proc_marker_scan(p->marker, true, marker_found, &mc);
    for (size_t i = 0; i < p->n_seen;) {
        char buf[1024], *state = NULL;
        uint64_t start;

        if (procstat_stat(p->seen[i].pid, buf, sizeof(buf), &state) == 0 && *state != 'Z' &&
            *state != 'X' && proc_start_time(p->seen[i].pid, &start) == 0 &&
            start == p->seen[i].start_time) {
            mc.n++; /* counted twice when it still shows the marker: only > 0 matters */
            i++;
        } else {
            p->seen[i] = p->seen[--p->n_seen]; /* ended (or its pid reused) */
        }
    }
    return mc.n;
}

/* True when nothing of the run is left: its cgroup is not populated, or (fallback) its
 * process group is empty and no process carries its marker. A run that ended by itself
 * (not stopping) is over once only its logger is left: the logger writes the last lines
 * and goes by itself, holding no GPU and no port meanwhile, so the GPU is free and the
 * service can start again as soon as its last worker has gone. A stop waits for the
 * logger too, so that the log holds every line once the stop has answered. */
static bool run_empty(struct proc *p)
{
    bool loggers_count = p->stopping;

    if (p->cgroup)
        return cgroup_populated(p->cgroup) != 1 || (!loggers_count && only_loggers(p->cgroup));
    if (!group_empty(p))
        return false;
    /* Only processes that left the group are left: a scan of /proc finds them. */
    p->scanning = p->marker && marker_count(p, loggers_count) > 0;
    return !p->scanning;
}

/* Sends signum to every process of the run but its logger, which ends by itself once
 * every writer of its pipe has gone, after writing the last lines (a crash's last words
 * are what a person reads first). A signal would race with its start: until it has set
 * its own dispositions, SIGTERM kills it. */
static void run_signal(struct proc *p, int signum)
{
    if (p->cgroup) {
        pid_t *pids = NULL;
        size_t n = 0;

        if (cgroup_pids(p->cgroup, &pids, &n) < 0)
            return;
        for (size_t i = 0; i < n; i++)
            if (!proc_is_logger(pids[i]))
                kill(pids[i], signum);
        free(pids);
        return;
    }
    kill(-p->pid, signum); /* the logger has a session of its own */
    if (p->marker) {
        struct marker_count mc = {.p = p, .signum = signum};
        proc_marker_scan(p->marker, true, marker_kill, &mc);
    }
}

static void on_check(uv_timer_t *t);

/* Looks at the run: gone, or due for SIGKILL, or given up on; then waits for the next
 * thing to look at (cgroup mode: the next deadline, as cgroup.events tells the rest). */
static void run_check(struct proc *p)
{
    uint64_t now = uv_now(p->loop), next = 0;

    if (p->gone)
        return;
    if (!p->leader_alive && run_empty(p)) {
        proc_report_gone(p);
        return;
    }
    if (p->stopping && !p->killed && now >= p->kill_at) {
        log_info("pid %d: still running after its stop timeout: SIGKILL to all of it", (int)p->pid);
        run_signal(p, SIGKILL);
        p->killed = true;
        p->give_up_at = now + PROC_KILL_GRACE_MS;
    }
    if (p->killed && now >= p->give_up_at && p->cgroup && !p->killed_all) {
        /* Still there (forks faster than the kills, or a logger that cannot finish):
         * everything goes at once, logger included. */
        log_warning("pid %d: processes left after SIGKILL: cgroup.kill", (int)p->pid);
        cgroup_kill(p->cgroup);
        p->killed_all = true;
        p->give_up_at = now + PROC_KILL_GRACE_MS;
    }
    if (p->killed && now >= p->give_up_at) {
        log_warning("pid %d: its processes do not go even after SIGKILL; letting them be",
                    (int)p->pid);
        proc_report_gone(p);
        return;
    }
    if (!p->cgroup && p->scanning)
        next = PROC_SCAN_CHECK_MS; /* a scan of /proc costs more than a kill(-pgid, 0) */
    else if (!p->cgroup || !p->watching)
        next = PROC_GONE_CHECK_MS;
    else if (p->stopping && !p->killed)
        next = p->kill_at - now;
    else if (p->killed)
        next = p->give_up_at - now;
    else
        return; /* cgroup.events says when it empties */
    uv_timer_start(&p->timer, on_check, next, 0);
}

static void on_check(uv_timer_t *t)
{
    run_check(t->data);
}

/* cgroup.events changed: perhaps "populated 0". */
static void on_events_changed(uv_fs_event_t *h, const char *file, int events, int status)
{
    run_check(h->data);
}

/* The leader ended (a child reaped by libuv, or an adopted process whose pidfd said so;
 * exit_status -1 when unknown). */
static void leader_ended(struct proc *p, int exit_status, int term_signal)
{
    p->leader_alive = false;
    if (!p->stopping) {
        /* It ended by itself: whatever it left goes with it, as systemd does with the rest
         * of a unit's control group. */
        run_signal(p, SIGKILL);
        p->killed = true;
        p->give_up_at = uv_now(p->loop) + PROC_KILL_GRACE_MS;
        if (p->events->exited)
            p->events->exited(p->data, p, exit_status, term_signal);
    }
    if (!p->gone)
        uv_timer_start(&p->timer, on_check, 0, 0);
}

static void on_leader_exit(uv_process_t *process, int64_t exit_status, int term_signal)
{
    leader_ended(process->data, (int)exit_status, term_signal);
}

static void on_closed(uv_handle_t *h)
{
    struct proc *p = h->data;

    if (--p->handles_open == 0) {
        free(p->name);
        free(p->cgroup);
        free(p->marker);
        free(p->seen);
        free(p);
    }
}

/* A sentence for a spawn that failed. */
static void spawn_error(const struct manifest *m, int r, char *err, size_t err_size)
{
    const char *what = m->command_is_shell ? "/bin/sh" : m->command[0];

    if (r == UV_ENOENT)
        snprintf(err, err_size, "cannot start %s: no such command (PATH is searched)", what);
    else if (r == UV_EACCES)
        snprintf(err, err_size, "cannot start %s: permission denied (not executable?)", what);
    else
        snprintf(err, err_size, "cannot start %s: %s", what, uv_strerror(r));
}

/* A new run of service name (NULL: none), on the list of runs. */
static struct proc *proc_new(uv_loop_t *loop, const char *name, const struct proc_events *events,
                             void *data)
{
    struct proc *p = xcalloc(1, sizeof(*p));

    p->loop = loop;
    p->events = events;
    p->data = data;
    p->name = name ? xstrdup(name) : NULL;
    p->marker = proc_marker_for(name);
    p->next = procs;
    if (procs)
        procs->prev = p;
    procs = p;
    return p;
}

static void proc_unlink(struct proc *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else if (procs == p)
        procs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

/* Starts watching the run's cgroup.events, and the timer; the handles are open then. */
static void run_watch(struct proc *p)
{
    uv_timer_init(p->loop, &p->timer);
    p->timer.data = p;
    uv_fs_event_init(p->loop, &p->events_watch);
    p->events_watch.data = p;
    p->handles_open += 2;
    if (p->cgroup) {
        char *file = xasprintf("%s/cgroup.events", p->cgroup);
        int r = uv_fs_event_start(&p->events_watch, on_events_changed, file, 0);
        if (r < 0)
            log_warning("cannot watch %s (%s): looking at it every %d ms", file, uv_strerror(r),
                        PROC_GONE_CHECK_MS);
        p->watching = r == 0;
        free(file);
    }
}

/* Makes the service's cgroup, empty; a sentence in err when it cannot be had. */
static int cgroup_prepare(const char *path, const char *name, char *err, size_t err_size)
{
    int r = cgroup_create(path);

    if (r < 0) {
        snprintf(err, err_size, "cannot make the cgroup %s: %s", path, strerror(-r));
        return r;
    }
    if (cgroup_populated(path) == 1 && !only_loggers(path)) {
        /* (An earlier run's logger writing its last lines is no obstacle.) */
        snprintf(err, err_size,
                 "processes of an earlier run of %s still run in the cgroup %s: stop it first",
                 name, path);
        return -EBUSY;
    }
    return 0;
}

/* Where the service's output goes: a new pipe to the logger (*ret_read its end, for the
 * logger) or, without a logger, the log file itself; *ret_write is the service's. The
 * log file is opened either way, so that one that cannot be written is said at start. */
static int output_open(const char *log_path, int *ret_write, int *ret_read, char *err,
                       size_t err_size)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644), fds[2];

    if (fd < 0) {
        snprintf(err, err_size, "cannot open the log file %s: %s", log_path, strerror(errno));
        return -errno;
    }
    if (!logger.exe) {
        *ret_write = fd;
        *ret_read = -1;
        return 0;
    }
    close(fd);
    if (pipe2(fds, O_CLOEXEC) < 0) {
        snprintf(err, err_size, "cannot make the pipe for the log: %s", strerror(errno));
        return -errno;
    }
    *ret_read = fds[0];
    *ret_write = fds[1];
    return 0;
}

/* Spawns the logger of p (a service just spawned), reading in_fd, in the cgroup the
 * daemon is in now (the service's) and with the service's marker: both count it as part
 * of the service, which ends only once the logger has written the last lines. */
static int logger_spawn(struct proc *p, const char *log_path, int in_fd, char *err, size_t err_size)
{
    char max_bytes[24], keep[16];
    char *args[] = {"nanny", "log-writer", (char *)log_path, max_bytes, keep, NULL};
    char *env[] = {p->marker, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = in_fd}, {.flags = UV_IGNORE}, {.flags = UV_IGNORE}};
    uv_process_options_t options = {0};
    int r;

    snprintf(max_bytes, sizeof(max_bytes), "%llu", (unsigned long long)logger.max_bytes);
    snprintf(keep, sizeof(keep), "%u", logger.keep);
    options.file = logger.exe;
    options.args = args;
    options.env = env;
    options.flags = UV_PROCESS_DETACHED; /* no terminal's signal reaches it */
    options.stdio = stdio;
    options.stdio_count = 3;
    p->logger.data = p;
    r = uv_spawn(p->loop, &p->logger, &options);
    if (r < 0)
        snprintf(err, err_size, "cannot start the logger %s: %s", logger.exe, uv_strerror(r));
    return r;
}

int proc_start(uv_loop_t *loop, const struct manifest *m, char *const *extra_env,
               const char *log_path, const struct proc_events *events, void *data,
               struct proc **ret, char *err, size_t err_size)
{
    uv_process_options_t options = {0};
    uv_stdio_container_t stdio[3];
    char *cgroup = NULL;
    bool spawned = false, logger_tried = false;
    struct stat st;
    struct proc *p;
    char **env;
    int fd = -1, log_fd = -1, r;

    if (!m->command || !m->command[0]) {
        snprintf(err, err_size, "the manifest has no command to run");
        return -EINVAL;
    }
    if (stat(m->workdir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "workdir %s is not a folder: %s", m->workdir,
                 errno ? strerror(errno) : "not a directory");
        return -ENOTDIR;
    }
    if (proc_mode_base() && m->name) {
        cgroup = cgroup_service_path(proc_mode_base(), m->name);
        r = cgroup_prepare(cgroup, m->name, err, err_size);
        if (r < 0) {
            free(cgroup);
            return r;
        }
    }
    r = output_open(log_path, &fd, &log_fd, err, err_size);
    if (r < 0) {
        free(cgroup);
        return r;
    }

    p = proc_new(loop, m->name, events, data);
    p->cgroup = cgroup;
    env = proc_service_env(m, extra_env, p->marker);
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = fd;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = fd;
    options.file = m->command[0];
    options.args = m->command;
    options.env = env;
    options.cwd = m->workdir;
    options.flags = UV_PROCESS_DETACHED; /* setsid(): its own session and process group */
    options.stdio = stdio;
    options.stdio_count = 3;
    options.exit_cb = on_leader_exit;
    p->process.data = p;
    /* The child is born in the cgroup of the process that forks it: the daemon steps into
     * the service's cgroup for the fork and back out, so the service is inside before it
     * execs and nothing it forks can escape. The logger is spawned second, so that the
     * service is the oldest process of its cgroup (the one adopt() takes as the leader). */
    r = cgroup ? cgroup_enter(cgroup) : 0;
    if (r < 0) {
        snprintf(err, err_size, "cannot enter the cgroup %s: %s", cgroup, strerror(-r));
    } else {
        spawned = true;
        r = uv_spawn(loop, &p->process, &options);
        if (r < 0) {
            spawn_error(m, r, err, err_size);
        } else if (log_fd >= 0) {
            logger_tried = true;
            r = logger_spawn(p, log_path, log_fd, err, err_size);
            if (r < 0) {
                /* Its output would go nowhere: the service goes at once. */
                kill(-p->process.pid, SIGKILL);
                if (cgroup)
                    cgroup_kill(cgroup);
            }
        }
        if (cgroup && cgroup_enter(proc_mode_home()) < 0)
            fatal("cannot leave the cgroup %s for %s: %s", cgroup, proc_mode_home(),
                  strerror(errno));
    }
    free(env);
    close(fd);
    if (log_fd >= 0)
        close(log_fd);
    if (r < 0) {
        proc_unlink(p);
        if (cgroup)
            cgroup_remove(
                cgroup); /* EBUSY while a killed service lingers: the next start says so */
        p->gone = true;
        if (spawned) {
            /* libuv wants the handle closed even when the spawn failed; p goes with it. */
            p->handles_open = logger_tried ? 2 : 1;
            uv_close((uv_handle_t *)&p->process, on_closed);
            if (logger_tried)
                uv_close((uv_handle_t *)&p->logger, on_closed);
        } else {
            free(p->name);
            free(p->cgroup);
            free(p->marker);
            free(p);
        }
        return r;
    }
    p->pid = p->process.pid;
    p->leader_alive = true;
    p->handles_open = 1;
    if (logger_tried) {
        /* Let go at once: the reaper reaps it; its cgroup or marker keeps it counted. */
        p->handles_open++;
        uv_close((uv_handle_t *)&p->logger, on_closed);
    }
    run_watch(p);
    *ret = p;
    return 0;
}

int proc_start_time(pid_t pid, uint64_t *ret)
{
    char buf[1024], *field = NULL;
    unsigned long long start;
    int r;

    r = procstat_stat(pid, buf, sizeof(buf), &field);
    if (r < 0)
        return r;
    /* The start time is the 20th field after the state (field 22 of proc(5)). */
    for (int i = 0; i < 19; i++) {
        field = strchr(field, ' ');
        if (!field)
            return -EIO;
        field++;
    }
    if (sscanf(field, "%llu", &start) != 1)
        return -EIO;
    *ret = start;
    return 0;
}

/* An adopted run's pidfd turned readable: the process ended. */
static void on_pidfd(uv_poll_t *poll, int status, int events)
{
    struct proc *p = poll->data;

    uv_poll_stop(&p->pidfd_poll);
    if (p->leader_alive)
        leader_ended(p, -1, 0); /* not our child: its status is not ours to read */
}

struct oldest {
    pid_t pid;
    uint64_t start_time;
};

/* Keeps the process that started first. */
static void keep_oldest(struct oldest *o, pid_t pid)
{
    uint64_t start;

    if (!proc_may_lead(pid))
        return; /* a logger (started just after its service, perhaps in the same clock
                 * tick), or a process on its way out */
    if (proc_start_time(pid, &start) == 0 && (!o->pid || start < o->start_time)) {
        o->pid = pid;
        o->start_time = start;
    }
}

static void oldest_found(void *data, pid_t pid, const char *rest)
{
    keep_oldest(data, pid);
}

int proc_adopt(uv_loop_t *loop, const char *name, pid_t pid, uint64_t start_time,
               const struct proc_events *events, void *data, struct proc **ret)
{
    char *cgroup = proc_mode_base() && name ? cgroup_service_path(proc_mode_base(), name) : NULL;
    char *marker = proc_marker_for(name);
    uint64_t now_start;
    struct proc *p;
    int fd, r;

    if (pid <= 0) {
        /* No record: the oldest process of its cgroup, or with its marker, leads it. */
        struct oldest o = {0};
        pid_t *pids = NULL;
        size_t n = 0;

        if (cgroup && cgroup_pids(cgroup, &pids, &n) == 0)
            for (size_t i = 0; i < n; i++)
                keep_oldest(&o, pids[i]);
        free(pids);
        if (!o.pid && marker) {
            proc_marker_scan(marker, true, oldest_found, &o);
            free(cgroup); /* not in a cgroup: a run of the fallback */
            cgroup = NULL;
        }
        pid = o.pid;
        start_time = o.start_time;
        if (!pid) {
            free(cgroup);
            free(marker);
            return -ESRCH;
        }
    }
    r = proc_start_time(pid, &now_start);
    if (r == 0 && now_start != start_time)
        r = -ESRCH; /* the pid was reused by another process */
    if (r == 0 && cgroup && !cgroup_has_pid(cgroup, pid)) {
        /* Started outside a cgroup (by a daemon in the fallback mode, or before cgroups):
         * held by its process group, as it was started. */
        free(cgroup);
        cgroup = NULL;
    }
    if (r == 0 && !cgroup && getpgid(pid) != pid && !marker)
        r = -ESRCH;
    fd = r == 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (r == 0 && fd < 0)
        r = -errno;
    if (r < 0) {
        free(cgroup);
        free(marker);
        return r;
    }
    p = proc_new(loop, name, events, data);
    p->cgroup = cgroup;
    free(marker);
    p->pid = pid;
    p->pidfd = fd;
    p->adopted = true;
    p->leader_alive = true;
    uv_poll_init(loop, &p->pidfd_poll, fd);
    p->pidfd_poll.data = p;
    uv_poll_start(&p->pidfd_poll, UV_READABLE, on_pidfd);
    p->handles_open = 1;
    run_watch(p);
    *ret = p;
    return 0;
}

void proc_stop(struct proc *p, uint64_t timeout_ms)
{
    if (p->stopping || p->gone)
        return;
    p->stopping = true;
    if (p->leader_alive || !run_empty(p))
        run_signal(p, SIGTERM);
    p->kill_at = uv_now(p->loop) + timeout_ms;
    uv_timer_start(&p->timer, on_check, 0, 0);
}

/* Says whether a run of this daemon holds service name. */
bool proc_held(const char *name)
{
    for (struct proc *p = procs; p; p = p->next)
        if (p->name && strcmp(p->name, name) == 0 && !p->gone)
            return true;
    return false;
}

const char *proc_cgroup(const struct proc *p)
{
    return p->cgroup;
}

int proc_become_subreaper(void)
{
    return prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 ? -errno : 0;
}

/* The reaper of the daemon's other children. */
struct proc_reaper {
    uv_loop_t *loop;
    uv_signal_t sigchld;
    uv_timer_t pass; /* one pass a loop iteration, after libuv's handler had its turn */
    int handles_open;
};

struct pid_search {
    pid_t pid;
    bool found;
};

static void find_process(uv_handle_t *h, void *arg)
{
    struct pid_search *search = arg;

    if (h->type == UV_PROCESS && uv_is_active(h) &&
        uv_process_get_pid((uv_process_t *)h) == search->pid)
        search->found = true;
}

/* True when libuv waits for pid: an active uv_process_t of the loop is its own, and
 * libuv reaps it to report its exit status (a pid reaped under it is an abort()). */
static bool libuv_owns(uv_loop_t *loop, pid_t pid)
{
    struct pid_search search = {.pid = pid};

    uv_walk(loop, find_process, &search);
    return search.found;
}

static void reap(pid_t pid)
{
    int status;

    if (waitpid(pid, &status, WNOHANG) == pid)
        log_debug("reaped pid %d, an orphan handed to the daemon", (int)pid);
}

/* Reaps the ended children that libuv does not own, found in /proc: waitid() shows only
 * the first ended child, and one of libuv's may stand in front of the others. */
static void reap_by_scan(struct proc_reaper *r)
{
    pid_t self = getpid();
    struct dirent *entry;
    DIR *dir;

    dir = opendir("/proc");
    if (!dir)
        return;
    while ((entry = readdir(dir))) {
        char buf[1024], *state = NULL, *end;
        long pid = strtol(entry->d_name, &end, 10);
        int ppid;

        if (*end != '\0' || pid <= 0 || procstat_stat((pid_t)pid, buf, sizeof(buf), &state) < 0)
            continue;
        if (state[0] == 'Z' && sscanf(state + 1, " %d", &ppid) == 1 && ppid == self &&
            !libuv_owns(r->loop, (pid_t)pid))
            reap((pid_t)pid);
    }
    closedir(dir);
}

/* Reaps every ended child that libuv does not own. */
static void on_reaper_pass(uv_timer_t *t)
{
    struct proc_reaper *r = t->data;
    siginfo_t info;

    for (;;) {
        memset(&info, 0, sizeof(info));
        if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid == 0)
            return; /* no ended child left */
        if (libuv_owns(r->loop, info.si_pid))
            break;
        reap(info.si_pid);
    }
    reap_by_scan(r);
}

/* Runs beside libuv's own SIGCHLD handler, in an order libuv does not tell: the pass
 * waits for the next loop iteration, when libuv has reaped what it owns. */
static void on_sigchld(uv_signal_t *s, int signum)
{
    struct proc_reaper *r = s->data;

    uv_timer_start(&r->pass, on_reaper_pass, 0, 0);
}

int proc_reaper_new(uv_loop_t *loop, struct proc_reaper **ret)
{
    struct proc_reaper *r;
    int rc;

    rc = proc_become_subreaper();
    if (rc < 0)
        return rc;
    r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    uv_signal_init(loop, &r->sigchld);
    r->sigchld.data = r;
    uv_timer_init(loop, &r->pass);
    r->pass.data = r;
    r->handles_open = 2;
    rc = uv_signal_start(&r->sigchld, on_sigchld, SIGCHLD);
    if (rc < 0) {
        proc_reaper_free(r);
        return rc;
    }
    /* Neither keeps the loop alive: they serve whatever else runs on it. */
    uv_unref((uv_handle_t *)&r->sigchld);
    uv_unref((uv_handle_t *)&r->pass);
    /* Children that ended before the signal was watched. */
    uv_timer_start(&r->pass, on_reaper_pass, 0, 0);
    *ret = r;
    return 0;
}

static void on_reaper_closed(uv_handle_t *h)
{
    struct proc_reaper *r = h->data;

    if (--r->handles_open == 0)
        free(r);
}

void proc_reaper_free(struct proc_reaper *r)
{
    if (!r)
        return;
    uv_close((uv_handle_t *)&r->sigchld, on_reaper_closed);
    uv_close((uv_handle_t *)&r->pass, on_reaper_closed);
}

pid_t proc_pid(const struct proc *p)
{
    return p->pid;
}

bool proc_owns(const struct proc *p, pid_t pid)
{
    size_t key = strlen(PROC_MARKER) + 1; /* "NANNY_INSTANCE=" */
    char value[512];

    return p->marker && !proc_is_logger(pid) &&
           procstat_environ_get(pid, PROC_MARKER, value, sizeof(value)) == 0 &&
           strcmp(value, p->marker + key) == 0;
}

bool proc_running(const struct proc *p)
{
    return p->leader_alive;
}

void proc_free(struct proc *p)
{
    if (!p)
        return;
    /* A run freed before it is gone is left running: the daemon stops without stopping
     * its services, and adopts them when it comes back. */
    proc_unlink(p);
    uv_timer_stop(&p->timer);
    if (p->adopted) {
        uv_close((uv_handle_t *)&p->pidfd_poll, on_closed);
        close(p->pidfd);
    } else {
        uv_close((uv_handle_t *)&p->process, on_closed);
    }
    uv_close((uv_handle_t *)&p->timer, on_closed);
    uv_close((uv_handle_t *)&p->events_watch, on_closed);
}
