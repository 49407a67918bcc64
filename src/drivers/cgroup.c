/* The daemon's cgroup v2 subtree and the kernel files of one service's cgroup
 * (Documentation/admin-guide/cgroup-v2.rst). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drivers/cgroup.h"
#include "lib/alloc.h"
#include "lib/io.h"

#define CGROUP_FILE_MAX (1024 * 1024) /* cgroup.procs of a service: a pid a line */
#define SERVICE_SUFFIX  ".service"    /* keeps a name off the kernel's cgroup.* files */
#define CGROUP_PIDS_MAX 65536

void cgroup_instance_id(const char *state_dir, char ret[CGROUP_ID_LEN + 1])
{
    char real[PATH_MAX];
    const char *s = realpath(state_dir, real) ? real : state_dir;
    uint64_t hash = 0xcbf29ce484222325ULL; /* FNV-1a */

    for (; *s; s++) {
        hash ^= (unsigned char)*s;
        hash *= 0x100000001b3ULL;
    }
    snprintf(ret, CGROUP_ID_LEN + 1, "%012llx", (unsigned long long)(hash & 0xffffffffffffULL));
}

char *cgroup_parse_mountinfo_line(const char *line)
{
    char root[4096], point[4096], type[64];
    const char *dash = strstr(line, " - ");

    /* ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - TYPE SOURCE OPTIONS */
    if (!dash || sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) != 2 ||
        sscanf(dash + 3, "%63s", type) != 1)
        return NULL;
    /* A root other than "/" is a part of the hierarchy bound elsewhere; a '\' is an
     * escaped space or tab, which no path we make needs. */
    if (strcmp(type, "cgroup2") != 0 || strcmp(root, "/") != 0 || strchr(point, '\\'))
        return NULL;
    return xstrdup(point);
}

char *cgroup_parse_self(const char *text)
{
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);

        if (len > 3 && strncmp(line, "0::", 3) == 0)
            return xstrndup(line + 3, len - 3);
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Reads a small file whole into a new string. */
static int read_text(const char *path, char **ret)
{
    size_t len = 0, cap = 4096;
    char *buf;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    buf = xmalloc(cap + 1);
    while ((n = read(fd, buf + len, cap - len)) > 0) {
        len += (size_t)n;
        if (len == cap) {
            if (cap >= CGROUP_FILE_MAX)
                break;
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
    }
    close(fd);
    if (n < 0) {
        free(buf);
        return -EIO;
    }
    buf[len] = '\0';
    *ret = buf;
    return 0;
}

/* Writes text into the kernel file at dir/file. */
static int write_file(const char *dir, const char *file, const char *text)
{
    char *path = xasprintf("%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC), r;

    free(path);
    if (fd < 0)
        return -errno;
    r = write_all(fd, text, strlen(text));
    if (close(fd) < 0 && r == 0)
        r = -errno;
    return r;
}

/* The cgroup2 mount point, newly allocated, or NULL. */
static char *find_mount(void)
{
    char *line = NULL, *found = NULL;
    size_t size = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");

    if (!f)
        return NULL;
    while (!found && getline(&line, &size, f) > 0)
        found = cgroup_parse_mountinfo_line(line);
    free(line);
    fclose(f);
    return found;
}

/* Makes path and the folders above it down from start (a prefix of path that exists). */
static int make_folders(char *path, size_t start)
{
    for (char *slash = strchr(path + start + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash)
            *slash = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            int r = -errno;
            if (slash)
                *slash = '/';
            return r;
        }
        if (!slash)
            return 0;
        *slash = '/';
    }
}

int cgroup_subtree_open(const char *id, char **ret_home, char **ret_base, char *why,
                        size_t why_size)
{
    char *mount, *text = NULL, *self, *home, *base, *probe;
    int r;

    mount = find_mount();
    if (!mount) {
        snprintf(why, why_size, "no cgroup2 file system is mounted");
        return -ENOENT;
    }
    r = read_text("/proc/self/cgroup", &text);
    self = r == 0 ? cgroup_parse_self(text) : NULL;
    free(text);
    if (!self) {
        snprintf(why, why_size, "/proc/self/cgroup names no cgroup v2 of the daemon");
        free(mount);
        return -ENOENT;
    }
    home = xasprintf("%s%s", mount, strcmp(self, "/") == 0 ? "" : self);
    base = xasprintf("%s/nanny/%s", home, id);
    /* Another daemon that ends removes nanny/ when it is empty: a mkdir that raced with
     * that rmdir is tried again. */
    for (int tries = 0; (r = make_folders(base, strlen(home))) == -ENOENT && tries < 3; tries++)
        ;
    probe = xasprintf("%s/cgroup.kill", base);
    if (r == 0 && access(probe, W_OK) < 0)
        r = -errno;
    free(probe);
    if (r == 0) {
        probe = xasprintf("%s/cgroup.procs", home);
        if (access(probe, W_OK) < 0)
            r = -errno;
        free(probe);
    }
    if (r < 0) {
        snprintf(why, why_size, "cgroup %s cannot be used: %s", base, strerror(-r));
        free(home);
        free(base);
    } else {
        *ret_home = home;
        *ret_base = base;
    }
    free(mount);
    free(self);
    return r;
}

char *cgroup_service_path(const char *base, const char *name)
{
    return xasprintf("%s/%s%s", base, name, SERVICE_SUFFIX);
}

char *cgroup_service_name(const char *dir_name)
{
    size_t len = strlen(dir_name), suffix = strlen(SERVICE_SUFFIX);

    if (len <= suffix || strcmp(dir_name + len - suffix, SERVICE_SUFFIX) != 0)
        return NULL;
    return xstrndup(dir_name, len - suffix);
}

int cgroup_create(const char *path)
{
    return mkdir(path, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

int cgroup_enter(const char *path)
{
    char pid[32];

    snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    return write_file(path, "cgroup.procs", pid);
}

int cgroup_populated(const char *path)
{
    char *file = xasprintf("%s/cgroup.events", path), *text = NULL, *line;
    int r = read_text(file, &text);

    free(file);
    if (r < 0)
        return r;
    line = strstr(text, "populated ");
    r = line ? line[strlen("populated ")] == '1' : -EIO;
    free(text);
    return r;
}

int cgroup_pids(const char *path, pid_t **ret, size_t *ret_n)
{
    char *file = xasprintf("%s/cgroup.procs", path), *text = NULL, *s, *end;
    pid_t *pids = NULL;
    size_t n = 0;
    int r = read_text(file, &text);

    free(file);
    if (r < 0)
        return r;
    for (s = text; n < CGROUP_PIDS_MAX; s = end) {
        long pid = strtol(s, &end, 10);
        if (end == s)
            break;
        if (pid > 0) {
            pids = xrealloc(pids, (n + 1) * sizeof(*pids));
            pids[n++] = (pid_t)pid;
        }
    }
    free(text);
    *ret = pids;
    *ret_n = n;
    return 0;
}

int cgroup_signal(const char *path, int signum)
{
    pid_t *pids = NULL;
    size_t n = 0;
    int r = cgroup_pids(path, &pids, &n), sent = 0;

    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        if (kill(pids[i], signum) == 0)
            sent++;
    free(pids);
    return sent;
}

int cgroup_kill(const char *path)
{
    return write_file(path, "cgroup.kill", "1");
}

int cgroup_remove(const char *path)
{
    return rmdir(path) < 0 && errno != ENOENT ? -errno : 0;
}

int cgroup_list_populated(const char *base, char ***ret)
{
    struct dirent *entry;
    char **names = xcalloc(1, sizeof(*names));
    size_t n = 0;
    DIR *dir = opendir(base);

    if (!dir) {
        free(names);
        return -errno;
    }
    while ((entry = readdir(dir))) {
        char *name = cgroup_service_name(entry->d_name), *path;

        if (!name || entry->d_type != DT_DIR) {
            free(name);
            continue;
        }
        path = xasprintf("%s/%s", base, entry->d_name);
        if (cgroup_populated(path) == 1) {
            names = xrealloc(names, (n + 2) * sizeof(*names));
            names[n++] = name;
            names[n] = NULL;
        } else {
            free(name);
        }
        free(path);
    }
    closedir(dir);
    *ret = names;
    return 0;
}

bool cgroup_has_pid(const char *path, pid_t pid)
{
    pid_t *pids = NULL;
    size_t n = 0;
    bool found = false;

    if (cgroup_pids(path, &pids, &n) < 0)
        return false;
    for (size_t i = 0; i < n && !found; i++)
        found = pids[i] == pid;
    free(pids);
    return found;
}
