/* /proc/self/stat, /proc/stat's btime, /proc/self/fd, RLIMIT_NOFILE, and /proc/PID/environ and
 * /proc/PID/cgroup of any process: see procstat.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "lib/alloc.h"
#include "lib/procstat.h"

/* The boot time, Unix seconds, from /proc/stat's "btime" line (0: unknown). */
static uint64_t boot_time_s(void)
{
    FILE *f = fopen("/proc/stat", "re");
    char line[256];
    unsigned long long btime = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    return btime;
}

int procstat_stat(pid_t pid, char *buf, size_t size, char **ret)
{
    char path[64], *after;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return -ESRCH;
    buf[n] = '\0';
    after = strrchr(buf, ')');
    if (!after || after[1] != ' ')
        return -EIO;
    *ret = after + 2;
    return 0;
}

/* Times, sizes and start of this process's stat line (proc(5)). */
static int read_stat(struct procstat *st)
{
    char buf[1024], *fields;
    unsigned long long utime, stime, start, vsize;
    long long rss;
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    int r = procstat_stat(getpid(), buf, sizeof(buf), &fields);

    if (r < 0)
        return r;
    /* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
     * cutime cstime priority nice num_threads itrealvalue starttime vsize rss */
    if (ticks <= 0 || page <= 0 ||
        sscanf(fields,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %llu %lld",
               &utime, &stime, &start, &vsize, &rss) != 5)
        return -EIO;
    st->cpu_us = (utime + stime) * 1000000ULL / (unsigned long long)ticks;
    st->start_time_s = boot_time_s() + start / (unsigned long long)ticks;
    st->virtual_bytes = vsize;
    st->resident_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)page : 0;
    return 0;
}

/* The entries of /proc/self/fd, less the one that reads it. */
static int count_fds(uint64_t *ret)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    uint64_t n = 0;

    if (!d)
        return -errno;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    *ret = n > 0 ? n - 1 : 0;
    return 0;
}

int procstat_read(struct procstat *ret)
{
    struct rlimit lim;
    int r, r2;

    *ret = (struct procstat){0};
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0)
        ret->max_fds = lim.rlim_cur == RLIM_INFINITY ? UINT64_MAX : lim.rlim_cur;
    r = read_stat(ret);
    r2 = count_fds(&ret->open_fds);
    return r < 0 ? r : r2;
}

/* Reads at most max bytes of path into a new buffer; *ret_len gets how many. */
static int read_small(const char *path, size_t max, char **ret, size_t *ret_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0, cap = 4096;
    char *buf;
    ssize_t n;

    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    buf = xmalloc(cap);
    while (len < max) {
        if (len == cap) {
            cap = cap * 2 < max ? cap * 2 : max;
            buf = xrealloc(buf, cap);
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = -errno;
            close(fd);
            free(buf);
            return r;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    *ret = buf;
    *ret_len = len;
    return 0;
}

int procstat_environ_get(pid_t pid, const char *name, char *buf, size_t size)
{
    char path[64], *env;
    size_t len, name_len = strlen(name);
    int r;

    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    r = read_small(path, PROCSTAT_ENVIRON_MAX, &env, &len);
    if (r < 0)
        return r;
    r = -ENOENT;
    for (size_t at = 0; at < len;) {
        const char *entry = env + at;
        const char *end = memchr(entry, '\0', len - at);
        size_t entry_len = end ? (size_t)(end - entry) : len - at;

        if (entry_len > name_len && memcmp(entry, name, name_len) == 0 && entry[name_len] == '=') {
            snprintf(buf, size, "%.*s", (int)(entry_len - name_len - 1), entry + name_len + 1);
            r = 0;
            break;
        }
        at += entry_len + 1;
    }
    free(env);
    return r;
}

bool procstat_cgroups_name_another_container(const char *cgroups, const char *own)
{
    static const char *const runtimes[] = {"docker", "containerd", "libpod", "crio"};
    bool found = false;

    if (!cgroups || (own && strcmp(cgroups, own) == 0))
        return false;
    for (size_t i = 0; i < sizeof(runtimes) / sizeof(runtimes[0]) && !found; i++)
        found = strstr(cgroups, runtimes[i]) != NULL;
    return found;
}

/* /proc/PID/cgroup's text (pid 0: the caller's), malloc'd; NULL when it cannot be read. */
static char *cgroups_of(pid_t pid)
{
    char path[64], *text;
    size_t len;

    if (pid == 0)
        snprintf(path, sizeof(path), "/proc/self/cgroup");
    else
        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    if (read_small(path, 64 * 1024, &text, &len) < 0)
        return NULL;
    text = xrealloc(text, len + 1);
    text[len] = '\0';
    if (memchr(text, '\0', len)) { /* not text: names nothing */
        free(text);
        return NULL;
    }
    return text;
}

char *procstat_cgroups(pid_t pid)
{
    return pid > 0 ? cgroups_of(pid) : NULL;
}

pid_t procstat_cgroup_member(const char *needle)
{
    DIR *dir = opendir("/proc");
    struct dirent *e;
    pid_t found = -ESRCH;

    if (!dir)
        return -errno;
    while ((e = readdir(dir))) {
        char *end, *cgroups;
        long pid = strtol(e->d_name, &end, 10);

        if (*end || pid <= 0 || (found > 0 && pid >= found))
            continue;
        cgroups = cgroups_of((pid_t)pid);
        if (cgroups && strstr(cgroups, needle))
            found = (pid_t)pid;
        free(cgroups);
    }
    closedir(dir);
    return found;
}

bool procstat_in_another_container(pid_t pid)
{
    char *theirs = pid > 0 ? procstat_cgroups(pid) : NULL, *own = theirs ? cgroups_of(0) : NULL;
    bool r = procstat_cgroups_name_another_container(theirs, own);

    free(theirs);
    free(own);
    return r;
}
