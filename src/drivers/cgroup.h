/* The daemon's cgroup v2 subtree: where it is (the cgroup2 mount of /proc/self/mountinfo
 * and the daemon's own cgroup of /proc/self/cgroup), one cgroup per process service under
 * <daemon's cgroup>/nanny/<id>, and the kernel files that say what runs in one
 * (cgroup.procs, cgroup.events) and end it (cgroup.kill). Plain file work, no loop. */
#ifndef NANNY_CGROUP_H
#define NANNY_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CGROUP_ID_LEN 12 /* hex digits of the daemon's instance id */
/* Set to "off" in the daemon's environment, it runs without cgroups (the process group
 * and environment marker fallback), as in a container without a writable cgroup2. */
#define CGROUP_ENV_SWITCH "NANNY_CGROUP"

/* The id that keeps two daemons of one host apart: the first CGROUP_ID_LEN hex digits of
 * a hash of the state folder's real path (path itself when it has none). */
void cgroup_instance_id(const char *state_dir, char ret[CGROUP_ID_LEN + 1]);

/* From one line of /proc/self/mountinfo: the mount point of a cgroup2 file system whose
 * root is "/" (newly allocated), or NULL. */
char *cgroup_parse_mountinfo_line(const char *line);

/* From the text of /proc/self/cgroup: the cgroup v2 path ("0::/a/b"), newly allocated,
 * or NULL. */
char *cgroup_parse_self(const char *text);

/* Finds the daemon's subtree, <mount><own cgroup>/nanny/<id>, makes it, and checks that
 * it can be used (cgroup.procs writable, cgroup.kill there). On success *ret_home gets the
 * daemon's own cgroup folder and *ret_base the subtree (both newly allocated); on failure
 * a negative errno and a sentence in why. */
int cgroup_subtree_open(const char *id, char **ret_home, char **ret_base, char *why,
                        size_t why_size);

/* The folder of a service's cgroup under base (newly allocated). */
char *cgroup_service_path(const char *base, const char *name);
/* The service name of a cgroup folder name made by cgroup_service_path, or NULL. */
char *cgroup_service_name(const char *dir_name);

/* Makes the cgroup folder (0 when it is there already). */
int cgroup_create(const char *path);
/* Moves the calling process (all its threads) into the cgroup at path. */
int cgroup_enter(const char *path);
/* 1 when a process is in the cgroup or below, 0 when none, or a negative errno. */
int cgroup_populated(const char *path);
/* The pids of cgroup.procs (NULL-free array the caller frees, *ret_n of them). */
int cgroup_pids(const char *path, pid_t **ret, size_t *ret_n);
/* Sends signum to every process of the cgroup; the number signalled, or a negative errno. */
int cgroup_signal(const char *path, int signum);
/* Kills every process of the cgroup and below at once (cgroup.kill). */
int cgroup_kill(const char *path);
/* Removes the (empty) cgroup. */
int cgroup_remove(const char *path);
/* The cgroups under base that have a process, as service names (NULL-terminated, the
 * caller frees them with strv_free). */
int cgroup_list_populated(const char *base, char ***ret);
/* True when pid is in the cgroup at path (relative to mount, from /proc/PID/cgroup). */
bool cgroup_has_pid(const char *path, pid_t pid);

#endif
