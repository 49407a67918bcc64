/* The GPU inventory from nvidia-smi's CSV (gpuinfo.h): the program run with a timeout
 * and bounded output, each line parsed strictly. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/alloc.h"
#include "lib/gpuinfo.h"
#include "lib/gpuinfo_internal.h"

extern char **environ;

#define SMI_ERR_MAX    512                 /* bytes of its stderr kept for a message */
#define SMI_MIB_MAX    (UINT64_C(1) << 30) /* 1 PiB in MiB: past it a size is nonsense */
#define SMI_GPU_FIELDS 6
#define SMI_APP_FIELDS 3

/* One run of the program: its output and how it ended. */
struct smi_run {
    char out[GPUINFO_SMI_OUTPUT_MAX + 1];
    size_t out_len;
    char errtext[SMI_ERR_MAX + 1];
    size_t err_len;
    int status; /* waitpid()'s */
};

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Kills the program's process group (it is its leader) and reaps it. */
static void smi_kill(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Starts argv[0] in its own process group, stdout and stderr into pipes, stdin from
 * /dev/null, signals as a fresh program has them. */
static int smi_spawn(char *const argv[], int out[2], int errp[2], pid_t *ret_pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, reset;
    int r;

    sigemptyset(&none);
    sigemptyset(&reset);
    for (int sig = 1; sig < 32; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaddset(&reset, sig);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &reset);
    r = posix_spawnp(ret_pid, argv[0], &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return -r;
}

/* Reads what is there on fd into buf (len so far, at most max); -1 at its end, 1 past
 * max, else 0. */
static int smi_drain(int fd, char *buf, size_t *len, size_t max)
{
    char scratch[4096];
    ssize_t n;

    if (*len < max)
        n = read(fd, buf + *len, max - *len);
    else
        n = read(fd, scratch, sizeof(scratch));
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (n == 0)
        return -1;
    if (*len >= max)
        return 1;
    *len += (size_t)n;
    return 0;
}

/* Runs argv until it exits, timeout_ms at most; its output into run. 0, or -ENOENT and
 * the like when it cannot start, -ETIMEDOUT (killed), -E2BIG (output past the cap). */
static int smi_run(char *const argv[], int timeout_ms, struct smi_run *run)
{
    long long deadline = now_ms() + timeout_ms;
    int out[2], errp[2], r;
    bool out_open = true, err_open = true, started;
    pid_t pid = 0;

    run->out_len = run->err_len = 0;
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(errp, O_CLOEXEC) < 0) {
        r = -errno;
        close(out[0]);
        close(out[1]);
        return r;
    }
    r = smi_spawn(argv, out, errp, &pid);
    started = r == 0;
    close(out[1]);
    close(errp[1]);
    while (r == 0 && (out_open || err_open)) {
        struct pollfd fds[2] = {{.fd = out_open ? out[0] : -1, .events = POLLIN},
                                {.fd = err_open ? errp[0] : -1, .events = POLLIN}};
        long long left = deadline - now_ms();
        int d;
        if (left <= 0)
            r = -ETIMEDOUT;
        else if (poll(fds, 2, (int)left) < 0 && errno != EINTR)
            r = -errno;
        if (r == 0 && fds[0].revents) {
            d = smi_drain(out[0], run->out, &run->out_len, GPUINFO_SMI_OUTPUT_MAX);
            out_open = d >= 0;
            if (d > 0)
                r = -E2BIG;
        }
        if (r == 0 && fds[1].revents)
            err_open = smi_drain(errp[0], run->errtext, &run->err_len, SMI_ERR_MAX) >= 0;
    }
    close(out[0]);
    close(errp[0]);
    if (!started)
        return r;
    /* Its output ended: it exits now, or is killed at the deadline. */
    while (r == 0) {
        pid_t w = waitpid(pid, &run->status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR)
            r = -errno;
        else if (now_ms() >= deadline)
            r = -ETIMEDOUT;
        else
            nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000}, NULL);
    }
    if (r < 0)
        smi_kill(pid);
    run->out[run->out_len] = '\0';
    run->errtext[run->err_len] = '\0';
    return r;
}

/* True for nvidia-smi's words for "unknown": "[N/A]", "[Not Supported]", "[Insufficient
 * Permissions]" and the like, or a bare "N/A". */
static bool smi_unknown(const char *field)
{
    size_t len = strlen(field);

    return strcmp(field, "N/A") == 0 || (len >= 2 && field[0] == '[' && field[len - 1] == ']');
}

/* A whole decimal number from 0 to max. */
static int smi_number(const char *field, uint64_t max, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    if (field[0] < '0' || field[0] > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(field, &end, 10);
    if (errno || *end || v > max)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* Splits line (changed in place) at commas into exactly n trimmed fields. */
static int smi_split(char *line, char **fields, int n)
{
    int i = 0;

    for (char *p = line;; i++) {
        char *comma = strchr(p, ','), *end;
        if (i == n)
            return -EINVAL;
        if (comma)
            *comma = '\0';
        p += strspn(p, " ");
        end = p + strlen(p);
        while (end > p && end[-1] == ' ')
            *--end = '\0';
        fields[i] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    return i + 1 == n ? 0 : -EINVAL;
}

/* True when s holds only printable ASCII. */
static bool smi_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* A size field in MiB: bytes, or unknown (*ret_known false). */
static int smi_mib(const char *field, uint64_t *ret, bool *ret_known)
{
    uint64_t mib;

    *ret = 0;
    *ret_known = false;
    if (smi_unknown(field))
        return 0;
    if (smi_number(field, SMI_MIB_MAX, &mib) < 0)
        return -EINVAL;
    *ret = mib * 1024 * 1024;
    *ret_known = true;
    return 0;
}

/* Parses one line of --query-gpu into gpu; a short reason in *ret_why when it is bad. */
static int smi_parse_gpu(char *line, struct gpuinfo_gpu *gpu, const char **ret_why)
{
    char *f[SMI_GPU_FIELDS];
    uint64_t index, util;
    bool known;

    if (smi_split(line, f, SMI_GPU_FIELDS) < 0)
        return *ret_why = "expected 6 fields: index, name, uuid, memory.total, memory.used, "
                          "utilization.gpu",
               -EINVAL;
    if (smi_number(f[0], GPUINFO_GPUS_MAX - 1, &index) < 0)
        return *ret_why = "the index is not a number from 0 to 63", -EINVAL;
    if (!f[1][0] || !f[2][0])
        return *ret_why = "an empty name or uuid", -EINVAL;
    gpu->index = (unsigned)index;
    if (smi_mib(f[3], &gpu->memory_total, &known) < 0)
        return *ret_why = "memory.total is not a number of MiB", -EINVAL;
    if (smi_mib(f[4], &gpu->memory_used, &gpu->memory_used_known) < 0)
        return *ret_why = "memory.used is not a number of MiB", -EINVAL;
    gpu->utilization = -1;
    if (!smi_unknown(f[5])) {
        if (smi_number(f[5], 100, &util) < 0)
            return *ret_why = "utilization.gpu is not a percentage", -EINVAL;
        gpu->utilization = (int)util;
    }
    gpu->name = smi_unknown(f[1]) ? xasprintf("GPU %u", gpu->index) : xstrdup(f[1]);
    gpu->uuid = smi_unknown(f[2]) ? NULL : xstrdup(f[2]);
    return 0;
}

/* Parses one line of --query-compute-apps into proc, its GPU found by uuid in g. */
static int smi_parse_app(char *line, const struct gpuinfo *g, struct gpuinfo_proc *proc,
                         const char **ret_why)
{
    char *f[SMI_APP_FIELDS];
    uint64_t pid;
    bool known;
    size_t i;

    if (smi_split(line, f, SMI_APP_FIELDS) < 0)
        return *ret_why = "expected 3 fields: gpu_uuid, pid, used_memory", -EINVAL;
    for (i = 0; i < g->n_gpus; i++)
        if (g->gpus[i].uuid && strcmp(g->gpus[i].uuid, f[0]) == 0)
            break;
    if (i == g->n_gpus)
        return *ret_why = "gpu_uuid names no GPU of --query-gpu", -EINVAL;
    if (smi_number(f[1], 0x7fffffff, &pid) < 0 || pid == 0)
        return *ret_why = "the pid is not a positive number", -EINVAL;
    if (smi_mib(f[2], &proc->memory, &known) < 0)
        return *ret_why = "used_memory is not a number of MiB", -EINVAL;
    proc->gpu = g->gpus[i].index;
    proc->pid = (int)pid;
    return 0;
}

/* Parses the output of one query (what: "--query-gpu" or "--query-compute-apps") line by
 * line into g. */
static int smi_parse(char *text, const char *what, struct gpuinfo *g, char *err, size_t err_size)
{
    bool gpus = strcmp(what, "--query-gpu") == 0;
    char *line = text;

    for (int number = 1; *line; number++) {
        char *nl = strchr(line, '\n'), *shown;
        const char *why = "not printable text";
        int r = -EINVAL;
        if (nl)
            *nl = '\0';
        shown = gpuinfo_printable(line, 100);
        if (smi_printable(line) && gpus) {
            struct gpuinfo_gpu gpu = {0};
            if (g->n_gpus >= GPUINFO_GPUS_MAX)
                why = "more than 64 GPUs";
            else if ((r = smi_parse_gpu(line, &gpu, &why)) == 0) {
                for (size_t i = 0; i < g->n_gpus; i++)
                    if (g->gpus[i].index == gpu.index)
                        r = -EINVAL, why = "the index appears twice";
                if (r < 0) {
                    free(gpu.name);
                    free(gpu.uuid);
                } else {
                    g->gpus = xrealloc(g->gpus, (g->n_gpus + 1) * sizeof(*g->gpus));
                    g->gpus[g->n_gpus++] = gpu;
                }
            }
        } else if (smi_printable(line)) {
            struct gpuinfo_proc proc = {0};
            if (g->n_procs >= (size_t)GPUINFO_PROCS_MAX * g->n_gpus)
                why = "more processes than the 1024 a GPU may list";
            else if ((r = smi_parse_app(line, g, &proc, &why)) == 0) {
                g->procs = xrealloc(g->procs, (g->n_procs + 1) * sizeof(*g->procs));
                g->procs[g->n_procs++] = proc;
            }
        }
        if (r < 0) {
            gpuinfo_fail(err, err_size, -EBADMSG, "nvidia-smi %s, line %d: %s: '%s'", what, number,
                         why, shown);
            free(shown);
            return -EBADMSG;
        }
        free(shown);
        if (!nl)
            break;
        line = nl + 1;
    }
    return 0;
}

/* Runs one query and parses its output into g. */
static int smi_query(const char *program, const char *what, const char *fields, int timeout_ms,
                     struct gpuinfo *g, char *err, size_t err_size)
{
    char query[128];
    char *argv[] = {(char *)program, query, "--format=csv,noheader,nounits", NULL};
    struct smi_run *run = xmalloc(sizeof(*run));
    int r;

    snprintf(query, sizeof(query), "%s=%s", what, fields);
    r = smi_run(argv, timeout_ms, run);
    if (r == -ENOENT || r == -EACCES || r == -ENOEXEC)
        r = gpuinfo_fail(err, err_size, -ENODEV, "nvidia-smi: cannot run %s: %s", program,
                         strerror(-r));
    else if (r == -ETIMEDOUT)
        gpuinfo_fail(err, err_size, r, "nvidia-smi: %s %s gave no answer in %d ms (killed)",
                     program, what, timeout_ms);
    else if (r == -E2BIG)
        gpuinfo_fail(err, err_size, r, "nvidia-smi: %s %s wrote more than %d bytes", program, what,
                     GPUINFO_SMI_OUTPUT_MAX);
    else if (r < 0)
        gpuinfo_fail(err, err_size, r, "nvidia-smi: %s %s: %s", program, what, strerror(-r));
    else if (!WIFEXITED(run->status) || WEXITSTATUS(run->status) != 0) {
        const char *text = run->err_len ? run->errtext : run->out;
        char *first =
            gpuinfo_printable(text, strcspn(text, "\n") < 200 ? strcspn(text, "\n") : 200);
        if (WIFEXITED(run->status))
            r = gpuinfo_fail(err, err_size, -ENODEV, "nvidia-smi: %s %s exited with status %d: %s",
                             program, what, WEXITSTATUS(run->status), first);
        else
            r = gpuinfo_fail(err, err_size, -EIO, "nvidia-smi: %s %s was killed by signal %d",
                             program, what, WTERMSIG(run->status));
        free(first);
    } else {
        r = smi_parse(run->out, what, g, err, err_size);
    }
    free(run);
    return r;
}

int gpuinfo_read_smi(const char *program, int timeout_ms, struct gpuinfo *ret, char *err,
                     size_t err_size)
{
    struct gpuinfo g = {.source = "nvidia-smi"};
    int r;

    r = smi_query(program, "--query-gpu",
                  "index,name,uuid,memory.total,memory.used,utilization.gpu", timeout_ms, &g, err,
                  err_size);
    if (r == 0 && g.n_gpus == 0)
        r = gpuinfo_fail(err, err_size, -ENODEV, "nvidia-smi: %s lists no GPU", program);
    if (r == 0)
        r = smi_query(program, "--query-compute-apps", "gpu_uuid,pid,used_memory", timeout_ms, &g,
                      err, err_size);
    if (r < 0) {
        gpuinfo_free(&g);
        return r;
    }
    *ret = g;
    return 0;
}
