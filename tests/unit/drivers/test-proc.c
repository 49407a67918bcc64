/* Unit tests for the process driver's engine: real processes on a real loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/driver.h"
#include "drivers/proc.h"
#include "drivers/drivers.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/logfile.h"

struct fixture {
    uv_loop_t loop;
    char dir[64];
    char log[96];
    struct manifest *m;
    struct proc *p;
    int exits;
    int exit_status, term_signal;
    bool gone;
    uint64_t gone_at;
};

static void on_exited(void *data, struct proc *p, int exit_status, int term_signal)
{
    struct fixture *f = data;

    f->exits++;
    f->exit_status = exit_status;
    f->term_signal = term_signal;
}

static void on_gone(void *data, struct proc *p)
{
    struct fixture *f = data;

    f->gone = true;
    f->gone_at = uv_now(&f->loop);
}

static const struct proc_events events = {.exited = on_exited, .gone = on_gone};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(proc_become_subreaper(), 0);
    strcpy(f->dir, "/tmp/nanny-proc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->log, sizeof(f->log), "%s/service.log", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f->p && !f->gone)
        kill(-proc_pid(f->p), SIGKILL);
    proc_free(f->p);
    proc_set_logger(NULL, 0, 0); /* also after a logger test that failed */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    manifest_free(f->m);
    unlink(f->log);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* A manifest running a shell command in the fixture's folder. */
static void use_command(struct fixture *f, const char *shell, const char *extra)
{
    struct diags errors = {0}, warnings = {0};
    char *yaml = xasprintf("name: t\ncommand: [\"/bin/sh\", \"-c\", \"%s\"]\nhealth: false\n%s",
                           shell, extra ? extra : "");

    assert_int_equal(manifest_parse(yaml, strlen(yaml), f->dir, &f->m, NULL, &errors, &warnings),
                     0);
    free(yaml);
    diags_clear(&errors);
    diags_clear(&warnings);
}

static void start(struct fixture *f)
{
    char err[256];

    assert_int_equal(proc_start(&f->loop, f->m, NULL, f->log, &events, f, &f->p, err, sizeof(err)),
                     0);
    assert_true(proc_pid(f->p) > 0);
}

/* Runs the loop until cond holds, bounded by 10 s. */
#define RUN_UNTIL(f, cond)                                                                         \
    do {                                                                                           \
        uint64_t deadline_ = uv_now(&(f)->loop) + 10000;                                           \
        while (!(cond) && uv_now(&(f)->loop) < deadline_) {                                        \
            uv_run(&(f)->loop, UV_RUN_NOWAIT);                                                     \
            usleep(2000);                                                                          \
            uv_update_time(&(f)->loop);                                                            \
        }                                                                                          \
        assert_true(cond);                                                                         \
    } while (0)

static bool log_has(struct fixture *f, const char *text)
{
    char buf[4096] = "";
    FILE *fp = fopen(f->log, "r");
    size_t n;

    if (!fp)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return strstr(buf, text) != NULL;
}

static void test_output_goes_to_the_log_and_stop_ends_it(void **state)
{
    struct fixture *f = *state;

    use_command(f, "echo hello; echo oops >&2; exec sleep 30", NULL);
    start(f);
    RUN_UNTIL(f, log_has(f, "hello") && log_has(f, "oops"));
    assert_true(proc_running(f->p));
    proc_stop(f->p, 5000);
    RUN_UNTIL(f, f->gone);
    assert_int_equal(f->exits, 0); /* a stop is not an exit */
    assert_false(proc_running(f->p));
    assert_int_equal(kill(-proc_pid(f->p), 0), -1);
    assert_int_equal(errno, ESRCH);
}

static void test_exit_is_reported_with_its_status(void **state)
{
    struct fixture *f = *state;

    use_command(f, "exit 3", NULL);
    start(f);
    RUN_UNTIL(f, f->gone);
    assert_int_equal(f->exits, 1);
    assert_int_equal(f->exit_status, 3);
    assert_int_equal(f->term_signal, 0);
}

static void test_death_by_signal_is_reported(void **state)
{
    struct fixture *f = *state;

    use_command(f, "kill -SEGV $$", NULL);
    start(f);
    RUN_UNTIL(f, f->gone);
    assert_int_equal(f->exits, 1);
    assert_int_equal(f->term_signal, SIGSEGV);
}

static void test_sigterm_ignored_means_sigkill_after_timeout(void **state)
{
    struct fixture *f = *state;
    uint64_t stopped_at;

    use_command(f, "trap '' TERM; echo ready; sleep 30; sleep 30", NULL);
    start(f);
    RUN_UNTIL(f, log_has(f, "ready"));
    stopped_at = uv_now(&f->loop);
    proc_stop(f->p, 300);
    RUN_UNTIL(f, f->gone);
    /* It went only with the SIGKILL, after the timeout. */
    assert_true(f->gone_at >= stopped_at + 300);
    assert_int_equal(kill(-proc_pid(f->p), 0), -1);
}

static void test_children_go_with_the_group(void **state)
{
    struct fixture *f = *state;

    use_command(f, "sleep 30 & sleep 30 & echo forked; wait", NULL);
    start(f);
    RUN_UNTIL(f, log_has(f, "forked"));
    proc_stop(f->p, 5000);
    RUN_UNTIL(f, f->gone);
    assert_int_equal(kill(-proc_pid(f->p), 0), -1);
    assert_int_equal(errno, ESRCH);
}

static void test_leader_exit_takes_its_children(void **state)
{
    struct fixture *f = *state;

    use_command(f, "sleep 30 & exit 4", NULL);
    start(f);
    RUN_UNTIL(f, f->gone);
    assert_int_equal(f->exit_status, 4);
    assert_int_equal(kill(-proc_pid(f->p), 0), -1);
}

static void test_env_and_workdir(void **state)
{
    struct fixture *f = *state;

    use_command(f, "echo value=$NANNY_TEST_VAR dir=$(pwd)", "env: {NANNY_TEST_VAR: forty-two}\n");
    start(f);
    RUN_UNTIL(f, f->gone);
    assert_true(log_has(f, "value=forty-two"));
    assert_true(log_has(f, f->dir));
}

static void test_missing_command_and_workdir(void **state)
{
    struct fixture *f = *state;
    struct diags errors = {0}, warnings = {0};
    const char *yaml = "name: t\ncommand: [\"/nonexistent/binary\"]\nhealth: false\n";
    const char *yaml_wd = "name: t\ncommand: [\"true\"]\nworkdir: missing\nhealth: false\n";
    struct manifest *m;
    struct proc *p = NULL;
    char err[256];

    assert_int_equal(manifest_parse(yaml, strlen(yaml), f->dir, &m, NULL, &errors, &warnings), 0);
    assert_int_equal(proc_start(&f->loop, m, NULL, f->log, &events, f, &p, err, sizeof(err)),
                     UV_ENOENT);
    assert_null(p);
    assert_non_null(strstr(err, "no such command"));
    manifest_free(m);

    assert_int_equal(manifest_parse(yaml_wd, strlen(yaml_wd), f->dir, &m, NULL, &errors, &warnings),
                     0);
    assert_int_equal(proc_start(&f->loop, m, NULL, f->log, &events, f, &p, err, sizeof(err)),
                     -ENOTDIR);
    assert_non_null(strstr(err, "workdir"));
    manifest_free(m);
    diags_clear(&errors);
    diags_clear(&warnings);
}

static void test_log_tail(void **state)
{
    struct fixture *f = *state;
    FILE *fp = fopen(f->log, "w");
    char **lines;

    for (int i = 1; i <= 100; i++)
        fprintf(fp, "line %d\n", i);
    fclose(fp);

    assert_int_equal(logfile_tail(f->log, 3, 65536, &lines), 0);
    assert_string_equal(lines[0], "line 98");
    assert_string_equal(lines[2], "line 100");
    assert_null(lines[3]);
    strv_free(lines);

    /* A window of 20 bytes cuts a line: the cut one is dropped. */
    assert_int_equal(logfile_tail(f->log, 50, 20, &lines), 0);
    assert_string_equal(lines[0], "line 99");
    assert_string_equal(lines[1], "line 100");
    assert_null(lines[2]);
    strv_free(lines);

    assert_int_equal(logfile_tail(f->log, 0, 65536, &lines), 0);
    assert_null(lines[0]);
    strv_free(lines);

    unlink(f->log);
    assert_int_equal(logfile_tail(f->log, 10, 65536, &lines), 0);
    assert_null(lines[0]);
    strv_free(lines);
}

/* What a logs request answered. */
struct logs_answer {
    int calls;
    char *first, *last; /* the first and last line */
    size_t n;
    char *error;
};

static void on_logs(void *data, char **lines, const char *error)
{
    struct logs_answer *a = data;

    a->calls++;
    if (error)
        a->error = xstrdup(error);
    for (size_t i = 0; lines && lines[i]; i++) {
        if (i == 0)
            a->first = xstrdup(lines[i]);
        free(a->last);
        a->last = xstrdup(lines[i]);
        a->n = i + 1;
    }
}

static void logs_answer_clear(struct logs_answer *a)
{
    free(a->first);
    free(a->last);
    free(a->error);
}

static void test_driver_logs_answer_on_a_later_pass(void **state)
{
    struct fixture *f = *state;
    struct logs_answer a = {0};
    struct driver_logs *l = NULL;
    FILE *fp = fopen(f->log, "w");

    for (int i = 1; i <= 100; i++)
        fprintf(fp, "line %d\n", i);
    fclose(fp);
    driver_process.setup(&(struct driver_context){.loop = &f->loop});
    driver_process.logs(NULL, f->log, 10, on_logs, &a, &l);
    assert_non_null(l);
    assert_int_equal(a.calls, 0);
    RUN_UNTIL(f, a.calls > 0);
    assert_int_equal(a.calls, 1);
    assert_null(a.error);
    assert_int_equal(a.n, 10);
    assert_string_equal(a.first, "line 91");
    assert_string_equal(a.last, "line 100");
    logs_answer_clear(&a);

    /* A log that cannot be read is an error sentence naming it. */
    memset(&a, 0, sizeof(a));
    driver_process.logs(NULL, f->dir, 10, on_logs, &a, &l);
    RUN_UNTIL(f, a.calls > 0);
    assert_non_null(a.error);
    assert_non_null(strstr(a.error, f->dir));
    logs_answer_clear(&a);
}

static void test_driver_logs_cancelled_before_the_read(void **state)
{
    struct fixture *f = *state;
    struct logs_answer a = {0};
    struct driver_logs *l = NULL;
    FILE *fp = fopen(f->log, "w");

    fprintf(fp, "line 1\n");
    fclose(fp);
    driver_process.setup(&(struct driver_context){.loop = &f->loop});
    driver_process.logs(NULL, f->log, 10, on_logs, &a, &l);
    assert_non_null(l);
    driver_process.logs_cancel(l);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* until the request has freed itself */
    assert_int_equal(a.calls, 0);
}

/* Cancelled once the worker has begun: the log is a FIFO, whose open for reading waits
 * for a writer. */
static void test_driver_logs_cancelled_once_the_read_began(void **state)
{
    struct fixture *f = *state;
    struct logs_answer a = {0};
    struct driver_logs *l = NULL;
    int writer = -1;

    assert_int_equal(mkfifo(f->log, 0600), 0);
    driver_process.setup(&(struct driver_context){.loop = &f->loop});
    driver_process.logs(NULL, f->log, 10, on_logs, &a, &l);
    assert_non_null(l);
    /* A writer can open the FIFO only once the worker has it open for reading. */
    for (int i = 0; i < 5000 && writer < 0; i++) {
        writer = open(f->log, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (writer < 0)
            usleep(1000);
    }
    assert_true(writer >= 0);
    driver_process.logs_cancel(l); /* too late for uv_cancel(): the work has begun */
    close(writer);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 0);
}

static off_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Whether a logger of the fixture's log file still runs. */
static bool logger_alive(struct fixture *f)
{
    char pattern[160];
    DIR *dir = opendir("/proc");
    struct dirent *e;
    bool found = false;

    snprintf(pattern, sizeof(pattern), "log-writer %s ", f->log);
    while (dir && !found && (e = readdir(dir))) {
        char path[300], buf[512];
        ssize_t n;
        int fd;

        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; i < n; i++)
            buf[i] = buf[i] ? buf[i] : ' ';
        buf[n > 0 ? n : 0] = '\0';
        found = strstr(buf, pattern) != NULL;
    }
    if (dir)
        closedir(dir);
    return found;
}

/* The daemon's binary, which is the logger: NANNY_EXE (meson test sets it), else the
 * nanny beside this test's binary (the build folder, as ./test.sh runs it). */
static const char *logger_exe(void)
{
    static char path[4096];
    ssize_t n;

    if (getenv("NANNY_EXE"))
        return getenv("NANNY_EXE");
    n = readlink("/proc/self/exe", path, sizeof(path) - sizeof("nanny"));
    assert_true(n > 0);
    path[n] = '\0';
    strcpy(strrchr(path, '/') + 1, "nanny");
    assert_int_equal(access(path, X_OK), 0);
    return path;
}

/* With a logger: the service writes into a pipe, the logger rotates by rename under the
 * cap; the run ends with its last worker, and the logger, spared by the stop, writes the
 * last lines and goes by itself. */
static void test_logger_rotates_and_goes_with_the_run(void **state)
{
    struct fixture *f = *state;
    char *one = xasprintf("%s.1", f->log), *two = xasprintf("%s.2", f->log);
    char *three = xasprintf("%s.3", f->log), **lines;

    proc_setup(f->dir); /* a cgroup or a marker: what makes the logger part of the run */
    proc_set_logger(logger_exe(), 4096, 2);
    use_command(f,
                "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo done; "
                "exec sleep 30",
                NULL);
    start(f);
    RUN_UNTIL(f, log_has(f, "done"));
    assert_true(logger_alive(f));
    assert_true(file_size(f->log) <= 4096);
    assert_true(file_size(one) > 0 && file_size(one) <= 4096);
    assert_true(file_size(two) > 0 && file_size(two) <= 4096);
    assert_int_equal(file_size(three), -1); /* keep 2: no third */
    proc_stop(f->p, 5000);
    RUN_UNTIL(f, f->gone);
    RUN_UNTIL(f, !logger_alive(f));
    assert_int_equal(logfile_tail(f->log, 2, 65536, &lines), 0);
    assert_string_equal(lines[0], "line 2999");
    assert_string_equal(lines[1], "done");
    strv_free(lines);
    proc_set_logger(NULL, 0, 0);
    proc_teardown();
    unlink(one);
    unlink(two);
    free(one);
    free(two);
    free(three);
}

/* A service that ends by itself: what is left of it is killed, but not its logger, which
 * writes its last words first. */
static void test_logger_keeps_the_last_words(void **state)
{
    struct fixture *f = *state;
    char **lines;

    proc_setup(f->dir);
    proc_set_logger(logger_exe(), 1 << 20, 1);
    use_command(f,
                "i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done; "
                "echo last words; exit 3",
                NULL);
    start(f);
    RUN_UNTIL(f, f->gone);
    assert_int_equal(f->exit_status, 3);
    RUN_UNTIL(f, !logger_alive(f));
    assert_int_equal(logfile_tail(f->log, 2, 65536, &lines), 0);
    assert_string_equal(lines[0], "line 4999");
    assert_string_equal(lines[1], "last words");
    strv_free(lines);
    proc_set_logger(NULL, 0, 0);
    proc_teardown();
}

/* Starts a shell command as an earlier daemon would have left it: in its own session, no
 * child of ours any more (we are its subreaper, so that we can reap it). */
static pid_t orphan_group(const char *shell)
{
    int fds[2];
    pid_t child, grandchild = 0;

    assert_int_equal(pipe(fds), 0);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        pid_t g = fork();
        if (g == 0) {
            setsid();
            execl("/bin/sh", "sh", "-c", shell, (char *)NULL);
            _exit(127);
        }
        if (write(fds[1], &g, sizeof(g)) != sizeof(g))
            _exit(1);
        _exit(0);
    }
    assert_int_equal(read(fds[0], &grandchild, sizeof(grandchild)), sizeof(grandchild));
    close(fds[0]);
    close(fds[1]);
    waitpid(child, NULL, 0);
    for (int i = 0; i < 1000 && getpgid(grandchild) != grandchild; i++)
        usleep(1000);
    assert_int_equal(getpgid(grandchild), grandchild);
    return grandchild;
}

/* Reaps an orphan of ours once it is a zombie (an init process does this for a daemon). */
static bool reaped(pid_t pid)
{
    return waitpid(pid, NULL, WNOHANG) == pid || (kill(pid, 0) < 0 && errno == ESRCH);
}

static void test_adopt_and_stop(void **state)
{
    struct fixture *f = *state;
    pid_t pid = orphan_group("exec sleep 30");
    uint64_t start_time;

    assert_int_equal(proc_start_time(pid, &start_time), 0);
    assert_int_equal(proc_adopt(&f->loop, NULL, pid, start_time + 1, &events, f, &f->p), -ESRCH);
    assert_null(f->p);
    assert_int_equal(proc_adopt(&f->loop, NULL, pid, start_time, &events, f, &f->p), 0);
    assert_true(proc_running(f->p));
    proc_stop(f->p, 5000);
    RUN_UNTIL(f, (reaped(pid), f->gone));
    assert_int_equal(f->exits, 0);
}

static void test_adopted_exit_is_seen(void **state)
{
    struct fixture *f = *state;
    pid_t pid = orphan_group("sleep 0.3");
    uint64_t start_time;

    assert_int_equal(proc_start_time(pid, &start_time), 0);
    assert_int_equal(proc_adopt(&f->loop, NULL, pid, start_time, &events, f, &f->p), 0);
    RUN_UNTIL(f, (reaped(pid), f->gone));
    assert_int_equal(f->exits, 1);
    assert_int_equal(f->exit_status, -1); /* not our child: the status is unknown */
}

static void test_start_time_of_a_gone_pid(void **state)
{
    uint64_t t;
    pid_t pid = fork();

    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    assert_int_equal(proc_start_time(pid, &t), -ESRCH);
    assert_int_equal(proc_start_time(getpid(), &t), 0);
    assert_true(t > 0);
}

/* True once pid is no child of ours: reaped, not merely ended. */
static bool reaped_by_someone(pid_t pid)
{
    siginfo_t info;

    memset(&info, 0, sizeof(info));
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD;
}

/* True once pid has ended and waits to be reaped. */
static bool ended(pid_t pid)
{
    siginfo_t info;

    memset(&info, 0, sizeof(info));
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

/* A child of ours that no uv_process_t owns, as an orphan handed to the subreaper is; it
 * ends at once. */
static pid_t stray_child(void)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    return pid;
}

static void test_reaper_reaps_what_libuv_does_not_own(void **state)
{
    struct fixture *f = *state;
    struct proc_reaper *reaper;
    pid_t stray;

    assert_int_equal(proc_reaper_new(&f->loop, &reaper), 0);
    stray = stray_child();
    use_command(f, "exit 3", NULL);
    start(f);
    RUN_UNTIL(f, f->gone && reaped_by_someone(stray));
    /* libuv still reaped its own child and told its status. */
    assert_int_equal(f->exits, 1);
    assert_int_equal(f->exit_status, 3);
    proc_reaper_free(reaper);
}

/* An ended child of libuv's, not reaped yet, stands first in line: the reaper looks past
 * it and leaves it to libuv. */
static void test_reaper_looks_past_a_child_of_libuv(void **state)
{
    struct fixture *f = *state;
    struct proc_reaper *reaper;
    pid_t stray;

    use_command(f, "exit 3", NULL);
    start(f);
    for (int i = 0; i < 5000 && !ended(proc_pid(f->p)); i++)
        usleep(1000);
    assert_true(ended(proc_pid(f->p)));
    stray = stray_child();
    for (int i = 0; i < 5000 && !ended(stray); i++)
        usleep(1000);
    assert_true(ended(stray));
    /* Its first pass runs before libuv reads the SIGCHLD that is waiting. */
    assert_int_equal(proc_reaper_new(&f->loop, &reaper), 0);
    RUN_UNTIL(f, f->gone && reaped_by_someone(stray));
    assert_int_equal(f->exits, 1);
    assert_int_equal(f->exit_status, 3);
    proc_reaper_free(reaper);
}

/* The service gets PATH, LANG, HOME, env_pass's variables and env, not the rest of the
 * daemon's environment. */
static void test_env_is_clean(void **state)
{
    struct fixture *f = *state;

    setenv("NANNY_TEST_SECRET", "s3cret", 1);
    setenv("NANNY_TEST_PASSED", "passed", 1);
    use_command(f, "echo secret=$NANNY_TEST_SECRET passed=$NANNY_TEST_PASSED path=$PATH",
                "env_pass: [NANNY_TEST_PASSED]\n");
    start(f);
    RUN_UNTIL(f, f->gone);
    unsetenv("NANNY_TEST_SECRET");
    unsetenv("NANNY_TEST_PASSED");
    assert_true(log_has(f, "secret= passed=passed path=/"));
}

/* What compose commands get: names and prefixes kept, extra on top, later ones winning. */
static void test_env_build_keeps_what_is_named(void **state)
{
    static const char *const keep[] = {"DOCKER_*", "PATH", NULL};
    char *pass[] = {"NANNY_TEST_PASS", NULL};
    char *extra[] = {"DOCKER_TEST_B=over", "X=1", "X=2", NULL};
    char **env;
    bool a = false, b = false, passed = false, x = false;

    setenv("DOCKER_TEST_A", "a", 1);
    setenv("DOCKER_TEST_B", "b", 1);
    setenv("NANNY_TEST_PASS", "p", 1);
    setenv("NANNY_TEST_SECRET", "s", 1);
    env = proc_env_build(keep, pass, extra);
    for (char **e = env; *e; e++) {
        assert_null(strstr(*e, "NANNY_TEST_SECRET"));
        assert_string_not_equal(*e, "X=1");
        assert_string_not_equal(*e, "DOCKER_TEST_B=b");
        a |= strcmp(*e, "DOCKER_TEST_A=a") == 0;
        b |= strcmp(*e, "DOCKER_TEST_B=over") == 0;
        passed |= strcmp(*e, "NANNY_TEST_PASS=p") == 0;
        x |= strcmp(*e, "X=2") == 0;
    }
    assert_true(a && b && passed && x);
    free(env);
    unsetenv("DOCKER_TEST_A");
    unsetenv("DOCKER_TEST_B");
    unsetenv("NANNY_TEST_PASS");
    unsetenv("NANNY_TEST_SECRET");
}

static pid_t read_pid_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    int pid = 0;

    if (!fp)
        return 0;
    if (fscanf(fp, "%d", &pid) != 1)
        pid = 0;
    fclose(fp);
    return pid;
}

/* A grandchild that left the process group (setsid) is stopped with its service; a run
 * the daemon let go of (freed, still running) is found again without a record and
 * adopted. want_cgroup: the cgroup mode, skipped where none can be written. */
static void escape_stop_and_adopt(struct fixture *f, bool want_cgroup)
{
    char *pid_file = xasprintf("%s/grandchild.pid", f->dir), *shell, **outside = NULL;
    pid_t grandchild, leader;
    int mode;

    if (!want_cgroup)
        setenv("NANNY_CGROUP", "off", 1);
    mode = proc_setup(f->dir);
    unsetenv("NANNY_CGROUP");
    if (want_cgroup && mode != 1) {
        proc_teardown();
        free(pid_file);
        skip();
    }
    assert_int_equal(mode, want_cgroup ? 1 : 0);
    shell = xasprintf("(setsid sh -c 'echo $$ > %s.tmp; mv %s.tmp %s; exec sleep 30' &); "
                      "exec sleep 30",
                      pid_file, pid_file, pid_file);
    use_command(f, shell, NULL);
    free(shell);
    start(f);
    RUN_UNTIL(f, read_pid_file(pid_file) > 0);
    grandchild = read_pid_file(pid_file);
    leader = proc_pid(f->p);
    assert_int_equal(getpgid(grandchild), grandchild); /* out of the service's group */
    assert_int_equal(proc_cgroup(f->p) != NULL, want_cgroup);

    /* Let go of it, as a daemon that stops and leaves its services running. */
    proc_free(f->p);
    f->p = NULL;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(proc_outside(&outside), 0);
    assert_non_null(outside[0]);
    assert_string_equal(outside[0], "t");
    assert_null(outside[1]);
    strv_free(outside);
    assert_int_equal(proc_adopt(&f->loop, "t", 0, 0, &events, f, &f->p), 0);
    assert_int_equal(proc_pid(f->p), leader); /* the oldest process leads */
    assert_int_equal(proc_outside(&outside), 0);
    assert_null(outside[0]); /* held again */
    strv_free(outside);

    proc_stop(f->p, 5000);
    RUN_UNTIL(f, (reaped(leader), reaped(grandchild), f->gone));
    assert_true(reaped(grandchild));
    assert_int_equal(f->exits, 0);
    proc_teardown();
    unlink(pid_file);
    free(pid_file);
}

static void test_cgroup_stop_and_adopt(void **state)
{
    escape_stop_and_adopt(*state, true);
}

static void test_fallback_stop_and_adopt(void **state)
{
    escape_stop_and_adopt(*state, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_output_goes_to_the_log_and_stop_ends_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_exit_is_reported_with_its_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_death_by_signal_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_ignored_means_sigkill_after_timeout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_children_go_with_the_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader_exit_takes_its_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_and_workdir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_command_and_workdir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_driver_logs_answer_on_a_later_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_driver_logs_cancelled_before_the_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_driver_logs_cancelled_once_the_read_began, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_logger_rotates_and_goes_with_the_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logger_keeps_the_last_words, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopted_exit_is_seen, setup, teardown),
        cmocka_unit_test(test_start_time_of_a_gone_pid),
        cmocka_unit_test_setup_teardown(test_reaper_reaps_what_libuv_does_not_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper_looks_past_a_child_of_libuv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_is_clean, setup, teardown),
        cmocka_unit_test(test_env_build_keeps_what_is_named),
        cmocka_unit_test_setup_teardown(test_cgroup_stop_and_adopt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_stop_and_adopt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
