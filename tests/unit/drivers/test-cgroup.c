/* Unit tests for the cgroup v2 helpers: what /proc says, the instance id, the names of
 * service cgroups, and (where a cgroup2 can be written) a cgroup's life. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "drivers/cgroup.h"
#include "lib/alloc.h"

static void test_mountinfo(void **state)
{
    char *point;

    point = cgroup_parse_mountinfo_line(
        "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
        "rw,nsdelegate,memory_recursiveprot\n");
    assert_string_equal(point, "/sys/fs/cgroup");
    free(point);
    /* Hybrid: the v2 hierarchy beside the v1 ones. */
    point = cgroup_parse_mountinfo_line(
        "36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n");
    assert_string_equal(point, "/sys/fs/cgroup/unified");
    free(point);
    assert_null(cgroup_parse_mountinfo_line(
        "40 25 0:35 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory\n"));
    /* A part of the hierarchy bound elsewhere: its root is not "/". */
    assert_null(cgroup_parse_mountinfo_line("50 25 0:31 /a/b /mnt rw - cgroup2 cgroup2 rw\n"));
    assert_null(cgroup_parse_mountinfo_line("garbage"));
    assert_null(cgroup_parse_mountinfo_line(""));
}

static void test_self(void **state)
{
    char *self;

    self = cgroup_parse_self("12:memory:/x\n1:name=systemd:/y\n0::/system.slice/nanny.service\n");
    assert_string_equal(self, "/system.slice/nanny.service");
    free(self);
    self = cgroup_parse_self("0::/\n");
    assert_string_equal(self, "/");
    free(self);
    assert_null(cgroup_parse_self("12:memory:/x\n"));
    assert_null(cgroup_parse_self(""));
}

static void test_instance_id(void **state)
{
    char a[CGROUP_ID_LEN + 1], b[CGROUP_ID_LEN + 1], c[CGROUP_ID_LEN + 1];

    cgroup_instance_id("/nonexistent/state-a", a);
    cgroup_instance_id("/nonexistent/state-a", b);
    cgroup_instance_id("/nonexistent/state-b", c);
    assert_int_equal(strlen(a), CGROUP_ID_LEN);
    assert_int_equal(strspn(a, "0123456789abcdef"), CGROUP_ID_LEN);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    /* The real path counts: /tmp and /tmp/ are one folder. */
    cgroup_instance_id("/tmp", a);
    cgroup_instance_id("/tmp/", b);
    assert_string_equal(a, b);
}

static void test_service_names(void **state)
{
    char *path = cgroup_service_path("/cg/nanny/abc", "upscale-api"), *name;

    assert_string_equal(path, "/cg/nanny/abc/upscale-api.service");
    name = cgroup_service_name("upscale-api.service");
    assert_string_equal(name, "upscale-api");
    free(name);
    free(path);
    assert_null(cgroup_service_name("cgroup.procs"));
    assert_null(cgroup_service_name(".service"));
    assert_null(cgroup_service_name("memory.max"));
}

/* Made, entered by a child, listed, killed, emptied and removed: where a cgroup2 can be
 * written (else skipped). */
static void test_cgroup_life(void **state)
{
    char why[512], id[CGROUP_ID_LEN + 1], dir[] = "/tmp/nanny-cgroup-XXXXXX";
    char *home = NULL, *base = NULL, *path, **names = NULL, *nanny;
    pid_t *pids = NULL, child;
    size_t n = 0;
    int fds[2], status;
    char go;

    assert_non_null(mkdtemp(dir));
    cgroup_instance_id(dir, id);
    if (getenv(CGROUP_ENV_SWITCH) || cgroup_subtree_open(id, &home, &base, why, sizeof(why)) < 0) {
        rmdir(dir);
        skip();
    }
    path = cgroup_service_path(base, "t");
    assert_int_equal(cgroup_create(path), 0);
    assert_int_equal(cgroup_create(path), 0); /* there already */
    assert_int_equal(cgroup_populated(path), 0);
    assert_int_equal(pipe(fds), 0);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (cgroup_enter(path) < 0)
            _exit(1);
        close(fds[0]);
        write(fds[1], "x", 1);
        pause();
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], &go, 1), 1);
    close(fds[0]);
    assert_int_equal(cgroup_populated(path), 1);
    assert_true(cgroup_has_pid(path, child));
    assert_false(cgroup_has_pid(path, getpid()));
    assert_int_equal(cgroup_pids(path, &pids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(pids[0], child);
    free(pids);
    assert_int_equal(cgroup_list_populated(base, &names), 0);
    assert_string_equal(names[0], "t");
    assert_null(names[1]);
    for (char **s = names; *s; s++)
        free(*s);
    free(names);
    assert_int_equal(cgroup_remove(path), -EBUSY);
    assert_int_equal(cgroup_kill(path), 0);
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    for (int i = 0; i < 1000 && cgroup_populated(path) == 1; i++)
        usleep(1000);
    assert_int_equal(cgroup_populated(path), 0);
    assert_int_equal(cgroup_remove(path), 0);
    assert_int_equal(cgroup_remove(base), 0);
    nanny = xasprintf("%s/nanny", home);
    rmdir(nanny); /* when no other daemon uses it */
    free(nanny);
    free(path);
    free(home);
    free(base);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mountinfo),   cmocka_unit_test(test_self),
        cmocka_unit_test(test_instance_id), cmocka_unit_test(test_service_names),
        cmocka_unit_test(test_cgroup_life),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
