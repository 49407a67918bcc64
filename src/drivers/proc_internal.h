/* What proc.c (the runs) and proc_mode.c (how runs are held, the environment they get and
 * the fallback's /proc scan) share. Private to the two. */
#ifndef NANNY_PROC_INTERNAL_H
#define NANNY_PROC_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "core/manifest.h"

/* The daemon's own cgroup folder and its subtree <home>/nanny/<id>; NULL in the fallback
 * (and before proc_setup()). */
const char *proc_mode_home(void);
const char *proc_mode_base(void);

/* "NANNY_INSTANCE=<id>/<name>", newly allocated; NULL before proc_setup() or for a NULL
 * name. */
char *proc_marker_for(const char *name);
/* Calls found for every live process (not this one) whose environment holds an entry
 * that starts with prefix (is prefix, when exact), with the rest of the entry. */
void proc_marker_scan(const char *prefix, bool exact,
                      void (*found)(void *data, pid_t pid, const char *rest), void *data);

/* True when pid is a process service's logger (`... log-writer ...`, lib/logfile.h). */
bool proc_is_logger(pid_t pid);
/* Whether pid could lead an adopted run: it has a command line (it is not exiting) and
 * is not a logger. */
bool proc_may_lead(pid_t pid);

/* The environment of a process service: PATH, LANG and HOME of the daemon, the variables
 * m passes (env_pass), m's env, then extra (NULL-terminated, or NULL: the daemon's for
 * this run), then marker (when not NULL). Free the array only. */
char **proc_service_env(const struct manifest *m, char *const *extra, char *marker);

/* True when a run not yet gone holds service name (proc.c). */
bool proc_held(const char *name);

#endif
