/* What the kernel says of this process (/proc/self): the figures of Prometheus' standard
 * process_* metrics. */
#ifndef NANNY_PROCSTAT_H
#define NANNY_PROCSTAT_H

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

#endif
