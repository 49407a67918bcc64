/* What the kernel says of this process (/proc/self): the figures of Prometheus' standard
 * process_* metrics. */
#ifndef NANNY_PROCSTAT_H
#define NANNY_PROCSTAT_H

#include <stdint.h>

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

#endif
