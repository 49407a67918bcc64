/* What the kernel says of a process: this one's figures for Prometheus' standard process_*
 * metrics (/proc/self), and of any, its state, an environment variable and whether it runs
 * in a container. */
#ifndef NANNY_PROCSTAT_H
#define NANNY_PROCSTAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct procstat {
    uint64_t cpu_us;         /* user and system CPU time */
    uint64_t resident_bytes; /* resident set size */
    uint64_t virtual_bytes;  /* virtual memory size */
    uint64_t start_time_s;   /* when the process began, Unix time */
    uint64_t open_fds;       /* file descriptors open now */
    uint64_t max_fds;        /* the soft limit on them */
};

/* Fills *ret; -errno when /proc cannot be read (the fields it could not read are 0). */
int procstat_read(struct procstat *ret);

/* Reads /proc/PID/stat into buf and points *ret past the command's name, at the state
 * field (proc(5)'s third): the name may hold anything, so it ends at the last ')'.
 * -ESRCH when there is no such process, -EIO for a line that is not one. */
int procstat_stat(pid_t pid, char *buf, size_t size, char **ret);

#define PROCSTAT_ENVIRON_MAX (1024 * 1024) /* what is read of /proc/PID/environ */

/* The value of the variable name in pid's environment as it began (/proc/PID/environ),
 * into buf (cut to size): 0; -ENOENT when it has none; -errno when it cannot be read
 * (-ESRCH: no such process; -EACCES: another user's, without privilege). */
int procstat_environ_get(pid_t pid, const char *name, char *buf, size_t size);

/* /proc/PID/cgroup's text, malloc'd (free() it); NULL when it cannot be read. A
 * container's processes name its id there (".../docker-<id>.scope", "/docker/<id>"). */
char *procstat_cgroups(pid_t pid);

/* A process whose cgroups name needle (a container's id): the lowest such pid, or -ESRCH
 * when none does; -errno when /proc cannot be read. Walks every process: for rare uses
 * (adopting a container found running), not for a request. */
pid_t procstat_cgroup_member(const char *needle);

/* True when pid runs in a container that the caller does not run in: a cgroup of it
 * (/proc/PID/cgroup) is one that Docker, containerd or Podman made, and its cgroups are
 * not the caller's own. False when it cannot be read. */
bool procstat_in_another_container(pid_t pid);

/* The rule above on the text of two cgroup files: cgroups (pid's; NULL: false) and own
 * (the caller's; NULL: unknown). */
bool procstat_cgroups_name_another_container(const char *cgroups, const char *own);

#endif
