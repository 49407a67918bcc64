/* Unit tests for procstat.c: this process's own figures, and another process's stat line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/procstat.h"

static void test_own_process(void **state)
{
    struct procstat ps;
    uint64_t now = (uint64_t)time(NULL);
    volatile uint64_t spin = 0;

    for (uint64_t i = 0; i < 50000000; i++) /* some CPU time to see */
        spin += i;
    assert_int_equal(procstat_read(&ps), 0);
    assert_true(ps.resident_bytes > 0);
    assert_true(ps.virtual_bytes >= ps.resident_bytes);
    assert_true(ps.start_time_s <= now && ps.start_time_s + 3600 > now);
    assert_true(ps.open_fds >= 3); /* stdin, stdout, stderr; not the one that counted */
    assert_true(ps.max_fds >= ps.open_fds);
    assert_true(ps.cpu_us > 0);
}

/* The state field follows the command's name, whatever the name holds. */
static void test_stat_line(void **state)
{
    char buf[1024], *fields = NULL;

    assert_int_equal(procstat_stat(getpid(), buf, sizeof(buf), &fields), 0);
    assert_non_null(fields);
    assert_true(*fields == 'R' || *fields == 'S');
    assert_int_equal(procstat_stat(0x7ffffff0, buf, sizeof(buf), &fields), -ESRCH);
}

/* A child started with a known environment: its variables are read back exactly, a
 * missing one is -ENOENT, a long value is cut to the buffer, a gone process is -ESRCH. */
static void test_environ_get(void **state)
{
    char buf[64], small[4];
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        char *env[] = {"A=1", "CUDA_VISIBLE_DEVICES=0,2", "EMPTY=", "CUDA=no", NULL};
        char *argv[] = {"sleep", "5", NULL};

        execve("/bin/sleep", argv, env);
        _exit(127);
    }
    /* execve may not have happened yet: wait until the new environment shows. */
    for (int i = 0; i < 500 && procstat_environ_get(pid, "A", buf, sizeof(buf)) != 0; i++)
        usleep(10000);
    assert_int_equal(procstat_environ_get(pid, "CUDA_VISIBLE_DEVICES", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "0,2");
    assert_int_equal(procstat_environ_get(pid, "CUDA", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "no");
    assert_int_equal(procstat_environ_get(pid, "EMPTY", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    assert_int_equal(procstat_environ_get(pid, "CUDA_VISIBLE", buf, sizeof(buf)), -ENOENT);
    assert_int_equal(procstat_environ_get(pid, "PATH", buf, sizeof(buf)), -ENOENT);
    assert_int_equal(procstat_environ_get(pid, "CUDA_VISIBLE_DEVICES", small, sizeof(small)), 0);
    assert_string_equal(small, "0,2");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(procstat_environ_get(pid, "A", buf, sizeof(buf)), -ESRCH);
    assert_false(procstat_in_another_container(pid));
}

/* A process runs in another container when its cgroups name a container runtime's and
 * are not the caller's own: never the caller itself, nor a child in its cgroups. */
static void test_in_another_container(void **state)
{
    static const char docker_v2[] = "0::/system.slice/docker-4f1c2a.scope\n";
    static const char docker_v1[] = "12:memory:/docker/4f1c2a\n11:cpu:/docker/4f1c2a\n";
    static const char containerd[] = "0::/kubepods/besteffort/pod1/cri-containerd-9ab.scope\n";
    static const char podman[] = "0::/machine.slice/libpod-77e.scope/container\n";
    static const char host[] = "0::/user.slice/user-1000.slice/session-2.scope\n";
    pid_t child = fork();

    assert_true(procstat_cgroups_name_another_container(docker_v2, host));
    assert_true(procstat_cgroups_name_another_container(docker_v1, host));
    assert_true(procstat_cgroups_name_another_container(containerd, host));
    assert_true(procstat_cgroups_name_another_container(podman, NULL));
    assert_false(procstat_cgroups_name_another_container(host, docker_v2));
    /* The daemon itself in a container: its own cgroups are not another's. */
    assert_false(procstat_cgroups_name_another_container(docker_v2, docker_v2));
    assert_true(procstat_cgroups_name_another_container(podman, docker_v2));
    assert_false(procstat_cgroups_name_another_container(NULL, host));

    assert_false(procstat_in_another_container(getpid()));
    assert_true(child >= 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    assert_false(procstat_in_another_container(child));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_false(procstat_in_another_container(-1));
}

static void test_cgroups(void **state)
{
    char *own = procstat_cgroups(getpid());

    assert_non_null(own); /* "0::/path" (v2), "N:controllers:/path" lines (v1) */
    assert_non_null(strstr(own, ":/"));
    free(own);
    assert_null(procstat_cgroups(0));
    assert_null(procstat_cgroups(-1));
    assert_null(procstat_cgroups(INT32_MAX)); /* no such process */
}

static void test_cgroup_member(void **state)
{
    char *own = procstat_cgroups(getpid()), *path, *nl, *theirs;
    pid_t pid;

    assert_non_null(own);
    path = strstr(own, ":/"); /* the first line's path: this process is in it */
    assert_non_null(path);
    path += 1;
    if ((nl = strchr(path, '\n')))
        *nl = '\0';
    pid = procstat_cgroup_member(path);
    assert_true(pid > 0 && pid <= getpid()); /* the lowest pid in it */
    theirs = procstat_cgroups(pid);
    assert_non_null(theirs);
    assert_non_null(strstr(theirs, path));
    free(theirs);
    free(own);
    assert_int_equal(procstat_cgroup_member("/no-such-cgroup-of-nanny-tests"), -ESRCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_process), cmocka_unit_test(test_stat_line),
        cmocka_unit_test(test_environ_get), cmocka_unit_test(test_in_another_container),
        cmocka_unit_test(test_cgroups),     cmocka_unit_test(test_cgroup_member),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
