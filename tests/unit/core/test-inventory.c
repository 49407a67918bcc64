/* Unit tests for the GPU inventory on a real loop: the config's box, the seed's one GPU
 * of unknown size, NVML through the fake library (tests/fakes/fake-nvml.c) with a service's
 * process told from a foreign one, a change seen by the next read, a failing library. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/inventory.h"
#include "lib/alloc.h"

#define GIB (UINT64_C(1) << 30)

static uv_loop_t loop;
static char *nvml; /* the fake library's path */
static char *box_file;
static int changes;

static int setup(void **state)
{
    const char *root = getenv("NANNY_BUILD_ROOT");
    int fd;

    unsetenv("FAKE_NVML_FAIL");
    nvml = xasprintf("%s/tests/fakes/nvml/libnvidia-ml.so.1", root ? root : "build");
    box_file = xstrdup("/tmp/nanny-inventory-XXXXXX");
    fd = mkstemp(box_file);
    assert_true(fd >= 0);
    close(fd);
    setenv("FAKE_NVML_BOX", box_file, 1);
    changes = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    return 0;
}

static int teardown(void **state)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    unlink(box_file);
    free(box_file);
    free(nvml);
    return 0;
}

static void write_box(const char *text)
{
    FILE *f = fopen(box_file, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void on_changed(void *data)
{
    changes++;
}

/* A config with the inventory's keys: no NVML or nvidia-smi unless library is given. */
static struct config config_with(const char *library, struct config_gpu *gpus, size_t n)
{
    struct config c = {0};

    c.nvml_library = (char *)(library ? library : "");
    c.nvidia_smi = (char *)"";
    c.gpus = gpus;
    c.n_gpus = n;
    return c;
}

static struct inventory *read_box(const struct config *c)
{
    struct inventory *inv = inventory_new(&loop, c, on_changed, NULL);

    assert_false(inventory_known(inv));
    while (!inventory_known(inv))
        uv_run(&loop, UV_RUN_ONCE);
    return inv;
}

static void test_nothing_answers_one_gpu_of_unknown_size(void **state)
{
    struct config c = config_with(NULL, NULL, 0);
    struct inventory *inv = read_box(&c);
    struct placement_gpu box[4];
    const struct inventory_gpu *g;
    size_t n;

    assert_string_equal(inventory_source(inv), "none");
    g = inventory_gpus(inv, &n);
    assert_int_equal(n, 1);
    assert_int_equal(g[0].index, 0);
    assert_true(g[0].memory == 0);
    assert_int_equal(g[0].utilization, -1);
    inventory_procs(inv, &n);
    assert_int_equal(n, 0);
    assert_int_equal(inventory_box(inv, box, 4), 1);
    assert_true(box[0].memory == 0 && box[0].foreign == 0);
    inventory_free(inv);
}

static void test_config_describes_the_box(void **state)
{
    struct config_gpu gpus[] = {{0, (char *)"A", 24 * GIB}, {1, (char *)"B", 48 * GIB}};
    struct config c = config_with(NULL, gpus, 2);
    struct inventory *inv = read_box(&c);
    struct placement_gpu box[4];
    const struct inventory_gpu *g;
    size_t n;

    assert_string_equal(inventory_source(inv), "config");
    g = inventory_gpus(inv, &n);
    assert_int_equal(n, 2);
    assert_string_equal(g[1].name, "B");
    assert_true(g[1].memory == 48 * GIB);
    assert_false(g[1].used_known);
    assert_int_equal(inventory_box(inv, box, 4), 2);
    assert_true(box[0].memory == 24 * GIB && box[1].memory == 48 * GIB);
    assert_int_equal(inventory_box(inv, box, 1), 1); /* never past max */
    inventory_free(inv);
}

/* A child that waits, its environment env (NULL: none). */
static pid_t spawn_sleeper(char *const env[])
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        char *const argv[] = {(char *)"sleep", (char *)"30", NULL};

        execve("/bin/sleep", argv, env);
        _exit(127);
    }
    return pid;
}

static void reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_nvml_tells_services_from_foreign_processes(void **state)
{
    char *const marked[] = {(char *)"NANNY_INSTANCE=test/a", NULL};
    char *const plain[] = {(char *)"PATH=/bin", NULL};
    pid_t service = spawn_sleeper(marked), other = spawn_sleeper(plain);
    struct config c = config_with(nvml, NULL, 0);
    struct placement_gpu box[4];
    const struct inventory_proc *p;
    const struct inventory_gpu *g;
    struct inventory *inv;
    char text[1024];
    size_t n;

    usleep(50 * 1000); /* the children's environments are theirs once they have exec'd */
    snprintf(text, sizeof(text),
             "{\"gpus\": [{\"name\": \"H100\", \"uuid\": \"GPU-1\", \"total\": %llu,"
             " \"used\": %llu, \"util\": 12},"
             " {\"name\": \"H100\", \"uuid\": \"GPU-2\", \"total\": %llu, \"used\": 0}],"
             " \"processes\": [{\"gpu\": 0, \"pid\": %d, \"memory\": %llu},"
             " {\"gpu\": 0, \"pid\": %d, \"memory\": %llu}]}",
             (unsigned long long)(80 * GIB), (unsigned long long)(12 * GIB),
             (unsigned long long)(80 * GIB), (int)service, (unsigned long long)(8 * GIB),
             (int)other, (unsigned long long)(4 * GIB));
    write_box(text);
    inv = read_box(&c);
    assert_string_equal(inventory_source(inv), "nvml");
    g = inventory_gpus(inv, &n);
    assert_int_equal(n, 2);
    assert_string_equal(g[0].uuid, "GPU-1");
    assert_true(g[0].used_known && g[0].used == 12 * GIB);
    assert_int_equal(g[0].utilization, 12);
    p = inventory_procs(inv, &n);
    assert_int_equal(n, 2);
    assert_int_equal(p[0].pid, service);
    assert_true(p[0].owned);
    assert_int_equal(p[1].pid, other);
    assert_false(p[1].owned); /* no marker, and in the test's own cgroups */
    assert_int_equal(inventory_box(inv, box, 4), 2);
    assert_true(box[0].memory == 80 * GIB);
    assert_true(box[0].foreign == 4 * GIB);
    assert_true(box[1].foreign == 0);
    assert_int_equal(changes, 0); /* the first read is no change */

    /* The foreign process ends: the next read tells it. */
    snprintf(text, sizeof(text),
             "{\"gpus\": [{\"name\": \"H100\", \"uuid\": \"GPU-1\", \"total\": %llu,"
             " \"used\": %llu}, {\"name\": \"H100\", \"uuid\": \"GPU-2\", \"total\": %llu,"
             " \"used\": 0}], \"processes\": [{\"gpu\": 0, \"pid\": %d, \"memory\": %llu}]}",
             (unsigned long long)(80 * GIB), (unsigned long long)(8 * GIB),
             (unsigned long long)(80 * GIB), (int)service, (unsigned long long)(8 * GIB));
    write_box(text);
    inventory_refresh(inv);
    while (inventory_procs(inv, &n) && n != 1)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(inventory_box(inv, box, 4), 2);
    assert_true(box[0].foreign == 0);
    assert_int_equal(changes, 1);

    /* The library stops answering: the last reading stands. */
    setenv("FAKE_NVML_FAIL", "1", 1);
    inventory_refresh(inv);
    inventory_refresh(inv);        /* while one is in progress: one more after it */
    uv_run(&loop, UV_RUN_DEFAULT); /* returns: the refresh timer keeps no loop alive */
    assert_string_equal(inventory_source(inv), "nvml");
    inventory_gpus(inv, &n);
    assert_int_equal(n, 2);
    inventory_free(inv);
    reap(service);
    reap(other);
}

static void test_failing_library_falls_back_to_the_config(void **state)
{
    struct config_gpu gpus[] = {{0, (char *)"A", 24 * GIB}};
    struct config c = config_with(nvml, gpus, 1);
    struct inventory *inv;
    size_t n;

    setenv("FAKE_NVML_FAIL", "1", 1);
    inv = read_box(&c);
    assert_string_equal(inventory_source(inv), "config");
    inventory_gpus(inv, &n);
    assert_int_equal(n, 1);
    inventory_free(inv);
}

static void test_freed_while_reading(void **state)
{
    struct config c = config_with(nvml, NULL, 0);
    struct inventory *inv;

    write_box("{\"gpus\": [{\"name\": \"G\", \"uuid\": \"GPU-1\", \"total\": 1, \"used\": 0}],"
              " \"processes\": []}");
    inv = inventory_new(&loop, &c, on_changed, NULL);
    inventory_free(inv); /* its read ends on the worker; teardown runs the loop out */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nothing_answers_one_gpu_of_unknown_size, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_describes_the_box, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nvml_tells_services_from_foreign_processes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failing_library_falls_back_to_the_config, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_freed_while_reading, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
