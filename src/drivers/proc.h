/* The process driver's engine: one service run in a cgroup v2 of its own (or, where no
 * writable cgroup2 is found, a process group of its own plus a marker in its environment),
 * its stdout and stderr written straight into a log file, stopped with SIGTERM to every
 * process of it, then SIGKILL (cgroup.kill) after a timeout, and counted as gone only
 * when nothing of it is left (cgroup.events says "populated 0"). */
#ifndef NANNY_PROC_H
#define NANNY_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "core/manifest.h"
#include "lib/alloc.h"

#define PROC_GONE_CHECK_MS 10   /* how often an emptying group is looked at */
#define PROC_SCAN_CHECK_MS 100  /* fallback: how often /proc is scanned for the marker */
#define PROC_KILL_GRACE_MS 5000 /* after SIGKILL, how long a group may take to go */
#define PROC_MARKER        "NANNY_INSTANCE" /* <id>/<service>, in each service's environment */

struct proc;

/* A clean environment: the daemon's variables named in keep (a name, or a prefix ending
 * in '*', such as "DOCKER_*") or in pass, then extra's "KEY=VALUE" strings added or
 * replacing, later ones winning. The array is the caller's (free() it), its strings are
 * borrowed. */
char **proc_env_build(const char *const *keep, char *const *pass, char *const *extra);

/* Chooses, once, how runs are held: a cgroup each under <the daemon's cgroup>/nanny/<id>
 * (<id> from state_dir's real path), or where that cannot be had (or NANNY_CGROUP=off is
 * in the environment) process groups and the marker NANNY_INSTANCE=<id>/<service>. Logs
 * the choice. Returns 1 for cgroups, 0 for the fallback. */
int proc_setup(const char *state_dir);
/* Removes the daemon's subtree where no service runs in it any more. */
void proc_teardown(void);
/* {"mode": "cgroup" | "process-group", "instance": id, "cgroup": folder | "why": reason},
 * a new reference, for GET /health. */
json_t *proc_info(void);
/* The services that run in this daemon's subtree (a populated cgroup, or processes with
 * its marker) but that no run holds: started by an earlier daemon whose record was lost.
 * A NULL-terminated array (strv_free()). */
int proc_outside(char ***ret);

/* Makes the daemon the reaper of its services' orphans (PR_SET_CHILD_SUBREAPER), so that
 * a stopped group is seen empty at once rather than when init gets round to it. */
int proc_become_subreaper(void);

/* The daemon's reaper: it becomes the reaper of its services' orphans
 * (proc_become_subreaper()) and, after each SIGCHLD, reaps every ended child that no
 * active uv_process_t of loop owns (libuv reaps those and reports their exit status), such
 * as a process that left its service's process group (setsid) and was orphaned. loop must
 * be the only loop of the process that spawns. The reaper keeps no loop alive; free it
 * before closing the loop. */
struct proc_reaper;
int proc_reaper_new(uv_loop_t *loop, struct proc_reaper **ret);
void proc_reaper_free(struct proc_reaper *r);

/* What a run tells its owner, on the loop. */
struct proc_events {
    /* The leader ended by itself (not after proc_stop): exit status, or the signal that
     * killed it (0 when it exited). What is left of its group is killed. */
    void (*exited)(void *data, struct proc *p, int exit_status, int term_signal);
    /* After proc_stop() or an exit: the group is empty, nothing of the run is left. The
     * run may be freed from here. */
    void (*gone)(void *data, struct proc *p);
};

/* Starts m's command (NULL-terminated argv in m->command) in m->workdir with a clean
 * environment (PATH, LANG, HOME, m->env_pass's variables, m->env, the marker), in its
 * cgroup (made empty; -EBUSY when processes of an earlier run are still in it) and a new
 * session and process group, stdin from /dev/null and stdout and stderr appended to
 * log_path (created 0644), env (NULL-terminated "KEY=VALUE", or NULL) over m's env, through the
 * logger when there is one (proc_set_logger()). On failure returns a negative errno and writes a
 * sentence for last_error into err (no such command, no workdir, log not writable). */
int proc_start(uv_loop_t *loop, const struct manifest *m, char *const *env, const char *log_path,
               const struct proc_events *events, void *data, struct proc **ret, char *err,
               size_t err_size);

/* The start time of pid in clock ticks since boot (/proc/PID/stat, field 22): with the
 * pid, it names a process for good, as a pid alone may be reused. -ESRCH when pid is not
 * running. */
int proc_start_time(pid_t pid, uint64_t *ret);

/* Takes over a run of service name started by an earlier daemon: pid (in the service's
 * cgroup, or the leader of its own process group) must still run and have started at
 * start_time, else -ESRCH. pid 0: no record, the oldest process of the service's cgroup
 * (or with its marker) leads it. The leader's end is seen through a pidfd on the loop;
 * its exit status cannot be known (exited() gets -1). */
int proc_adopt(uv_loop_t *loop, const char *name, pid_t pid, uint64_t start_time,
               const struct proc_events *events, void *data, struct proc **ret);

/* Stops the run: SIGTERM to every process of it, SIGKILL (cgroup.kill) after timeout_ms;
 * gone() is called once nothing of it is left, and its cgroup is removed. Calling it again, or
 * after the exit, is harmless. */
void proc_stop(struct proc *p, uint64_t timeout_ms);

pid_t proc_pid(const struct proc *p);
/* Whether pid is one of the run's processes: it carries the run's marker (which every
 * process of the run inherits), and is not its logger. */
bool proc_owns(const struct proc *p, pid_t pid);
bool proc_running(const struct proc *p);       /* the leader has not ended yet */
const char *proc_cgroup(const struct proc *p); /* its cgroup folder, NULL in the fallback */

/* Frees the run. Call it only after gone(); before, it kills the group first. */
void proc_free(struct proc *p);

/* Makes proc_start() write each service's output through a logger of the daemon's own
 * binary (`EXE log-writer PATH MAX_BYTES KEEP`, lib/logfile.h) in the service's cgroup
 * or, in the fallback, carrying its marker: a pipe the logger reads, so that log_max_size
 * holds at any write speed and the log goes on while no daemon runs. exe NULL (the
 * default, for the unit tests): the service writes its log file itself. */
void proc_set_logger(const char *exe, uint64_t max_bytes, unsigned keep);

#endif
