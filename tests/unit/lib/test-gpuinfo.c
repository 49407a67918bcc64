/* Unit tests for the GPU reader: NVML through the fake library (tests/fakes/fake-nvml.c),
 * nvidia-smi through the fake script (tests/fakes/nvidia-smi). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/alloc.h"
#include "lib/gpuinfo.h"

#define GIB (UINT64_C(1) << 30)
#define MIB (UINT64_C(1) << 20)
#define SMI "tests/fakes/nvidia-smi"

static char err[1024];
static char *nvml, *nvml_v1; /* the fake libraries' paths */

/* Writes text to a fresh temporary file; the caller unlinks and frees the name. */
static char *temp_file(const char *text)
{
    char *path = xstrdup("/tmp/nanny-gpuinfo-XXXXXX");
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static const char box_json[] =
    "{\"gpus\": [{\"name\": \"NVIDIA A100\", \"uuid\": \"GPU-aa\", \"total\": 85899345920,"
    "             \"used\": 3221225472, \"util\": 40},"
    "            {\"name\": \"NVIDIA A100\", \"uuid\": \"GPU-bb\", \"total\": 85899345920,"
    "             \"used\": 0}],"
    " \"processes\": [{\"gpu\": 0, \"pid\": 4242, \"memory\": 2147483648},"
    "                {\"gpu\": 0, \"pid\": 4243, \"memory\": null},"
    "                {\"gpu\": 1, \"pid\": 77, \"memory\": 1048576}]}";

static int setup(void **state)
{
    const char *root = getenv("NANNY_BUILD_ROOT");

    unsetenv("FAKE_NVML_BOX");
    unsetenv("FAKE_NVML_FAIL");
    unsetenv("FAKE_SMI_GPUS");
    unsetenv("FAKE_SMI_APPS");
    unsetenv("FAKE_SMI_HANG");
    unsetenv("FAKE_SMI_EXIT");
    free(nvml);
    free(nvml_v1);
    nvml = xasprintf("%s/tests/fakes/nvml/libnvidia-ml.so.1", root ? root : "build");
    nvml_v1 = xasprintf("%s/tests/fakes/nvml-v1/libnvidia-ml.so.1", root ? root : "build");
    err[0] = '\0';
    return 0;
}

/* Checks the box of box_json as read through library. */
static void check_nvml_box(const char *library)
{
    char *box = temp_file(box_json);
    struct gpuinfo g;

    setenv("FAKE_NVML_BOX", box, 1);
    assert_int_equal(gpuinfo_read(library, SMI, &g, err, sizeof(err)), 0);
    assert_string_equal(g.source, "nvml");
    assert_int_equal(g.n_gpus, 2);
    assert_int_equal(g.gpus[0].index, 0);
    assert_string_equal(g.gpus[0].name, "NVIDIA A100");
    assert_string_equal(g.gpus[0].uuid, "GPU-aa");
    assert_true(g.gpus[0].memory_total == 80 * GIB);
    assert_true(g.gpus[0].memory_used_known);
    assert_true(g.gpus[0].memory_used == 3 * GIB);
    assert_int_equal(g.gpus[0].utilization, 40);
    assert_int_equal(g.gpus[1].index, 1);
    assert_int_equal(g.gpus[1].utilization, -1);
    assert_int_equal(g.n_procs, 3);
    assert_int_equal(g.procs[0].gpu, 0);
    assert_int_equal(g.procs[0].pid, 4242);
    assert_true(g.procs[0].memory == 2 * GIB);
    assert_int_equal(g.procs[1].pid, 4243);
    assert_true(g.procs[1].memory == 0); /* N/A */
    assert_int_equal(g.procs[2].gpu, 1);
    assert_int_equal(g.procs[2].pid, 77);
    assert_true(g.procs[2].memory == MIB);
    gpuinfo_free(&g);
    unlink(box);
    free(box);
}

static void test_nvml_answers(void **state)
{
    check_nvml_box(nvml);
}

static void test_nvml_old_driver_v1_processes(void **state)
{
    check_nvml_box(nvml_v1);
}

static void test_nvml_many_processes(void **state)
{
    /* More than the first buffer holds: asked again with room. */
    size_t size = 1 << 16, len = 0;
    char *text = xmalloc(size), *box;
    struct gpuinfo g;

    len += (size_t)snprintf(text + len, size - len,
                            "{\"gpus\": [{\"name\": \"G\", \"uuid\": \"GPU-1\", \"total\": 1, "
                            "\"used\": 1}], \"processes\": [");
    for (int i = 0; i < 100; i++)
        len +=
            (size_t)snprintf(text + len, size - len, "%s{\"gpu\": 0, \"pid\": %d, \"memory\": 5}",
                             i ? "," : "", 1000 + i);
    snprintf(text + len, size - len, "]}");
    box = temp_file(text);
    setenv("FAKE_NVML_BOX", box, 1);
    assert_int_equal(gpuinfo_read_nvml(nvml, &g, err, sizeof(err)), 0);
    assert_int_equal(g.n_procs, 100);
    assert_int_equal(g.procs[99].pid, 1099);
    gpuinfo_free(&g);
    unlink(box);
    free(box);
    free(text);
}

static const char smi_gpus[] = "0, NVIDIA H100 80GB HBM3, GPU-11, 81559, 1024, 7\n"
                               "1, NVIDIA H100 80GB HBM3, GPU-22, 81559, [N/A], [Not Supported]\n";
static const char smi_apps[] = "GPU-11, 555, 1000\n"
                               "GPU-22, 556, [N/A]\n";

/* Points the fake nvidia-smi at these outputs (apps NULL: none). */
static void fake_smi(const char *gpus, const char *apps, char **ret_gpus, char **ret_apps)
{
    *ret_gpus = temp_file(gpus);
    setenv("FAKE_SMI_GPUS", *ret_gpus, 1);
    *ret_apps = NULL;
    if (apps) {
        *ret_apps = temp_file(apps);
        setenv("FAKE_SMI_APPS", *ret_apps, 1);
    }
}

static void fake_smi_done(char *gpus, char *apps)
{
    unlink(gpus);
    free(gpus);
    if (apps) {
        unlink(apps);
        free(apps);
    }
}

static void check_smi_box(const struct gpuinfo *g)
{
    assert_string_equal(g->source, "nvidia-smi");
    assert_int_equal(g->n_gpus, 2);
    assert_string_equal(g->gpus[0].name, "NVIDIA H100 80GB HBM3");
    assert_string_equal(g->gpus[0].uuid, "GPU-11");
    assert_true(g->gpus[0].memory_total == 81559 * MIB);
    assert_true(g->gpus[0].memory_used_known);
    assert_true(g->gpus[0].memory_used == GIB);
    assert_int_equal(g->gpus[0].utilization, 7);
    assert_int_equal(g->gpus[1].index, 1);
    assert_false(g->gpus[1].memory_used_known);
    assert_int_equal(g->gpus[1].utilization, -1);
    assert_int_equal(g->n_procs, 2);
    assert_int_equal(g->procs[0].gpu, 0);
    assert_int_equal(g->procs[0].pid, 555);
    assert_true(g->procs[0].memory == 1000 * MIB);
    assert_int_equal(g->procs[1].gpu, 1);
    assert_true(g->procs[1].memory == 0);
}

static void test_nvml_missing_falls_back_to_smi(void **state)
{
    char *gpus, *apps;
    struct gpuinfo g;

    fake_smi(smi_gpus, smi_apps, &gpus, &apps);
    assert_int_equal(gpuinfo_read("/nonexistent/libnvidia-ml.so.1", SMI, &g, err, sizeof(err)), 0);
    check_smi_box(&g);
    gpuinfo_free(&g);
    fake_smi_done(gpus, apps);
}

static void test_nvml_failing_falls_back_to_smi(void **state)
{
    char *gpus, *apps, *box = temp_file(box_json);
    struct gpuinfo g;

    setenv("FAKE_NVML_BOX", box, 1);
    setenv("FAKE_NVML_FAIL", "1", 1);
    fake_smi(smi_gpus, smi_apps, &gpus, &apps);
    assert_int_equal(gpuinfo_read(nvml, SMI, &g, err, sizeof(err)), 0);
    check_smi_box(&g);
    gpuinfo_free(&g);
    fake_smi_done(gpus, apps);
    unlink(box);
    free(box);
}

static void test_smi_no_apps(void **state)
{
    char *gpus, *apps;
    struct gpuinfo g;

    fake_smi(smi_gpus, NULL, &gpus, &apps);
    assert_int_equal(gpuinfo_read(NULL, SMI, &g, err, sizeof(err)), 0);
    assert_int_equal(g.n_gpus, 2);
    assert_int_equal(g.n_procs, 0);
    gpuinfo_free(&g);
    fake_smi_done(gpus, apps);
}

static void test_neither_answers(void **state)
{
    struct gpuinfo g;

    assert_int_equal(gpuinfo_read("/nonexistent/libnvidia-ml.so.1", "/nonexistent/nvidia-smi", &g,
                                  err, sizeof(err)),
                     -ENODEV);
    assert_non_null(strstr(err, "NVML: cannot load /nonexistent/libnvidia-ml.so.1"));
    assert_non_null(strstr(err, "nvidia-smi: cannot run /nonexistent/nvidia-smi"));
    assert_int_equal(gpuinfo_read("", NULL, &g, err, sizeof(err)), -ENODEV);
    assert_string_equal(err, "NVML: switched off; nvidia-smi: switched off");
    /* A program not in PATH. */
    assert_int_equal(gpuinfo_read(NULL, "nanny-no-such-nvidia-smi", &g, err, sizeof(err)), -ENODEV);
    /* The driver not loaded: nvidia-smi says so and exits 9. */
    setenv("FAKE_SMI_EXIT", "9", 1);
    assert_int_equal(gpuinfo_read(nvml, SMI, &g, err, sizeof(err)), -ENODEV);
    assert_non_null(strstr(err, "NVML: "));
    assert_non_null(strstr(err, "exited with status 9: NVIDIA-SMI has failed"));
}

/* Expects the fake nvidia-smi's output gpus (and apps) to be refused with a message
 * holding expect. */
static void expect_bad(const char *gpus_text, const char *apps_text, const char *expect)
{
    char *gpus, *apps;
    struct gpuinfo g;

    fake_smi(gpus_text, apps_text, &gpus, &apps);
    assert_int_equal(gpuinfo_read_smi(SMI, 5000, &g, err, sizeof(err)), -EBADMSG);
    if (!strstr(err, expect))
        fail_msg("'%s' does not say '%s'", err, expect);
    fake_smi_done(gpus, apps);
    unsetenv("FAKE_SMI_APPS");
}

static void test_smi_malformed(void **state)
{
    expect_bad("0, A, GPU-1, 100, 1, 2\n0, B, GPU-2, 100, 1\n", NULL,
               "nvidia-smi --query-gpu, line 2: expected 6 fields");
    expect_bad("x, A, GPU-1, 100, 1, 2\n", NULL, "line 1: the index is not a number");
    expect_bad("0, A, GPU-1, 100 MiB, 1, 2\n", NULL, "memory.total is not a number of MiB");
    expect_bad("0, A, GPU-1, 100, -1, 2\n", NULL, "memory.used is not a number of MiB");
    expect_bad("0, A, GPU-1, 100, 1, 101\n", NULL, "utilization.gpu is not a percentage");
    expect_bad("0, A, GPU-1, 100, 1, 2\n0, B, GPU-2, 100, 1, 2\n", NULL,
               "line 2: the index appears twice");
    expect_bad("0, A, GPU-1, 100, 1, 2\n\n", NULL, "line 2: expected 6 fields");
    expect_bad("0, A\x01, GPU-1, 100, 1, 2\n", NULL, "line 1: not printable text: '0, A?,");
    expect_bad("0, A, GPU-1, 100, 1, 2\n", "GPU-9, 5, 10\n",
               "--query-compute-apps, line 1: gpu_uuid names no GPU");
    expect_bad("0, A, GPU-1, 100, 1, 2\n", "GPU-1, 0, 10\n", "the pid is not a positive number");
    expect_bad("0, A, GPU-1, 100, 1, 2\n", "GPU-1, 5\n", "expected 3 fields");
}

static void test_smi_hanging_is_killed(void **state)
{
    struct gpuinfo g;

    setenv("FAKE_SMI_HANG", "1", 1);
    assert_int_equal(gpuinfo_read_smi(SMI, 200, &g, err, sizeof(err)), -ETIMEDOUT);
    assert_non_null(strstr(err, "gave no answer in 200 ms (killed)"));
    /* Through gpuinfo_read(), a wrong answer outweighs NVML's absence. */
}

static void test_smi_lists_no_gpu(void **state)
{
    char *gpus, *apps;
    struct gpuinfo g;

    fake_smi("", NULL, &gpus, &apps);
    assert_int_equal(gpuinfo_read_smi(SMI, 5000, &g, err, sizeof(err)), -ENODEV);
    assert_non_null(strstr(err, "lists no GPU"));
    fake_smi_done(gpus, apps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_nvml_answers, setup),
        cmocka_unit_test_setup(test_nvml_old_driver_v1_processes, setup),
        cmocka_unit_test_setup(test_nvml_many_processes, setup),
        cmocka_unit_test_setup(test_nvml_missing_falls_back_to_smi, setup),
        cmocka_unit_test_setup(test_nvml_failing_falls_back_to_smi, setup),
        cmocka_unit_test_setup(test_smi_no_apps, setup),
        cmocka_unit_test_setup(test_neither_answers, setup),
        cmocka_unit_test_setup(test_smi_malformed, setup),
        cmocka_unit_test_setup(test_smi_hanging_is_killed, setup),
        cmocka_unit_test_setup(test_smi_lists_no_gpu, setup),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);

    free(nvml);
    free(nvml_v1);
    return r;
}
