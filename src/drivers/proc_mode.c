/* How the process driver holds its runs (a cgroup each, or the fallback's process group
 * and marker), chosen once at setup; the clean environment a service gets; and the
 * fallback's /proc scan for the marker. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drivers/cgroup.h"
#include "drivers/proc.h"
#include "drivers/proc_internal.h"
#include "lib/alloc.h"
#include "lib/log.h"

extern char **environ;

/* How the runs are held together, chosen once by proc_setup(). */
static struct {
    bool set_up;
    char id[CGROUP_ID_LEN + 1];
    char *home; /* the daemon's own cgroup folder, cgroup mode only */
    char *base; /* <home>/nanny/<id>, cgroup mode only */
    char *why;  /* why there is no cgroup mode */
} mode;

/* True when the variable entry (KEY=VALUE) is named by pattern: a name, or a prefix
 * ending in '*'. */
static bool env_named(const char *entry, const char *pattern)
{
    size_t key_len = strcspn(entry, "="), len = strlen(pattern);

    if (len > 0 && pattern[len - 1] == '*')
        return key_len >= len - 1 && strncmp(entry, pattern, len - 1) == 0;
    return key_len == len && strncmp(entry, pattern, len) == 0;
}

/* Puts entry into env (n of them), replacing one of the same name. */
static void env_put(char **env, size_t *n, char *entry)
{
    size_t key_len = strcspn(entry, "=");

    for (size_t i = 0; i < *n; i++) {
        if (strncmp(env[i], entry, key_len + 1) == 0) {
            env[i] = entry;
            return;
        }
    }
    env[(*n)++] = entry;
}

char **proc_env_build(const char *const *keep, char *const *pass, char *const *extra)
{
    size_t n_env = 0, n_extra = 0, n = 0;
    char **env;

    while (environ && environ[n_env])
        n_env++;
    while (extra && extra[n_extra])
        n_extra++;
    env = xcalloc(n_env + n_extra + 1, sizeof(*env));
    for (size_t i = 0; i < n_env; i++) {
        bool wanted = false;
        for (const char *const *k = keep; k && *k && !wanted; k++)
            wanted = env_named(environ[i], *k);
        for (char *const *k = pass; k && *k && !wanted; k++)
            wanted = env_named(environ[i], *k);
        if (wanted)
            env_put(env, &n, environ[i]);
    }
    for (size_t j = 0; j < n_extra; j++)
        env_put(env, &n, extra[j]);
    return env;
}

/* The environment of a process service: PATH, LANG and HOME of the daemon, the variables
 * the manifest passes (env_pass), its env, then the marker. */
char **proc_service_env(const struct manifest *m, char *const *run_env, char *marker)
{
    static const char *const keep[] = {"PATH", "LANG", "HOME", NULL};
    static char default_path[] =
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    size_t n_env = 0, n_run = 0, n = 0;
    char **extra, **env;

    while (m->env && m->env[n_env])
        n_env++;
    while (run_env && run_env[n_run])
        n_run++;
    extra = xcalloc(n_env + n_run + 3, sizeof(*extra));
    if (!getenv("PATH"))
        extra[n++] = default_path;
    for (size_t i = 0; i < n_env; i++)
        extra[n++] = m->env[i];
    for (size_t i = 0; i < n_run; i++)
        extra[n++] = run_env[i];
    if (marker)
        extra[n++] = marker;
    env = proc_env_build(keep, m->env_pass, extra);
    free(extra);
    return env;
}

int proc_setup(const char *state_dir)
{
    const char *sw = getenv(CGROUP_ENV_SWITCH);
    char why[512];

    proc_teardown();
    mode.set_up = true;
    cgroup_instance_id(state_dir ? state_dir : ".", mode.id);
    if (sw && strcmp(sw, "off") == 0) {
        mode.why = xasprintf("%s=off in the daemon's environment", CGROUP_ENV_SWITCH);
    } else if (cgroup_subtree_open(mode.id, &mode.home, &mode.base, why, sizeof(why)) < 0) {
        mode.why = xstrdup(why);
    }
    if (mode.base)
        log_info("process services run in cgroups under %s", mode.base);
    else
        log_warning("process services run in process groups, found by the marker "
                    "NANNY_INSTANCE=%s/<service> (no cgroup: %s)",
                    mode.id, mode.why);
    return mode.base ? 1 : 0;
}

void proc_teardown(void)
{
    if (mode.base) {
        char *nanny = xasprintf("%s/nanny", mode.home);
        DIR *dir = opendir(mode.base);
        struct dirent *e;

        /* Service cgroups left empty (a run that ended while no daemon watched); every
         * one of them, and both folders above, stays while a service runs in it (EBUSY). */
        while (dir && (e = readdir(dir))) {
            if (e->d_type == DT_DIR && e->d_name[0] != '.') {
                char *sub = xasprintf("%s/%s", mode.base, e->d_name);
                cgroup_remove(sub);
                free(sub);
            }
        }
        if (dir)
            closedir(dir);
        cgroup_remove(mode.base);
        rmdir(nanny);
        free(nanny);
    }
    free(mode.home);
    free(mode.base);
    free(mode.why);
    memset(&mode, 0, sizeof(mode));
}

json_t *proc_info(void)
{
    if (mode.base)
        return json_pack("{s:s, s:s, s:s}", "mode", "cgroup", "instance", mode.id, "cgroup",
                         mode.base);
    return json_pack("{s:s, s:s, s:s?}", "mode", "process-group", "instance", mode.id, "why",
                     mode.why);
}

/* The marker of a service of this daemon, newly allocated (NULL before setup). */
char *proc_marker_for(const char *name)
{
    return mode.set_up && name ? xasprintf("%s=%s/%s", PROC_MARKER, mode.id, name) : NULL;
}

/* Reads /proc/PID/environ (at most 1 MiB): the length read, or a negative errno. */
static ssize_t read_environ(pid_t pid, char *buf, size_t size)
{
    char path[64];
    size_t len = 0;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    while (len < size && (n = read(fd, buf + len, size - len)) > 0)
        len += (size_t)n;
    close(fd);
    return (ssize_t)len;
}

#define ENVIRON_MAX (1024 * 1024)

/* Calls found for every live process (not this one) whose environment holds an entry
 * that starts with prefix (the whole entry when exact): the fallback's /proc scan. */
void proc_marker_scan(const char *prefix, bool exact, void (*found)(void *, pid_t, const char *),
                      void *data)
{
    size_t prefix_len = strlen(prefix);
    pid_t self = getpid();
    struct dirent *entry;
    char *buf;
    DIR *dir = opendir("/proc");

    if (!dir)
        return;
    buf = xmalloc(ENVIRON_MAX + 1);
    while ((entry = readdir(dir))) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        ssize_t len;

        if (*end != '\0' || pid <= 0 || pid == self)
            continue;
        len = read_environ((pid_t)pid, buf, ENVIRON_MAX);
        if (len <= 0)
            continue; /* gone, a zombie, or not ours to read */
        buf[len] = '\0';
        for (char *s = buf; s < buf + len; s += strlen(s) + 1) {
            if (strncmp(s, prefix, prefix_len) == 0 && (!exact || s[prefix_len] == '\0')) {
                found(data, (pid_t)pid, s + prefix_len);
                break;
            }
        }
    }
    free(buf);
    closedir(dir);
}

/* What pid's command line says: 1 a logger (`nanny log-writer`), 0 anything else, -1
 * none (gone, a zombie, or a process so far into its exit that its memory is gone). */
static int command_kind(pid_t pid)
{
    char path[64], buf[256];
    ssize_t len;
    size_t first;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (len <= 0)
        return -1;
    buf[len] = '\0';
    first = strlen(buf) + 1; /* argv[1] follows argv[0]'s NUL */
    return first < (size_t)len && strcmp(buf + first, "log-writer") == 0;
}

bool proc_is_logger(pid_t pid)
{
    return command_kind(pid) == 1;
}

bool proc_may_lead(pid_t pid)
{
    return command_kind(pid) == 0;
}

struct outside {
    char ***names;
    size_t n;
};

static void outside_found(void *data, pid_t pid, const char *rest)
{
    struct outside *o = data;

    for (size_t i = 0; i < o->n; i++)
        if (strcmp((*o->names)[i], rest) == 0)
            return;
    *o->names = xrealloc(*o->names, (o->n + 2) * sizeof(**o->names));
    (*o->names)[o->n++] = xstrdup(rest);
    (*o->names)[o->n] = NULL;
}

int proc_outside(char ***ret)
{
    char **names = xcalloc(1, sizeof(*names)), **kept;
    size_t n = 0;

    if (!mode.set_up) {
        *ret = names;
        return 0;
    }
    if (mode.base) {
        strv_free(names);
        if (cgroup_list_populated(mode.base, &names) < 0)
            names = xcalloc(1, sizeof(*names));
    } else {
        char *prefix = xasprintf("%s=%s/", PROC_MARKER, mode.id);
        struct outside o = {.names = &names};
        proc_marker_scan(prefix, false, outside_found, &o);
        free(prefix);
    }
    kept = xcalloc(1, sizeof(*kept));
    for (char **s = names; *s; s++) {
        if (proc_held(*s)) {
            free(*s);
            continue;
        }
        kept = xrealloc(kept, (n + 2) * sizeof(*kept));
        kept[n++] = *s;
        kept[n] = NULL;
    }
    free(names);
    *ret = kept;
    return 0;
}

const char *proc_mode_home(void)
{
    return mode.home;
}

const char *proc_mode_base(void)
{
    return mode.base;
}
