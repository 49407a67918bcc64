/* Unit tests for manifest.c: every field, every default and every error of SPEC section 2. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/manifest.h"
#include "lib/alloc.h"
#include "lib/log.h"

/* A temporary services folder shared by the tests, removed at the end. */
static char root[64];
static char plain_dir[128];   /* a service folder without a compose file */
static char compose_dir[128]; /* one with docker-compose.yml */

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *path_in(const char *dir, const char *name)
{
    return xasprintf("%s/%s", dir, name);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    char *p;

    snprintf(root, sizeof(root), "/tmp/nanny-test-manifest-XXXXXX");
    if (!mkdtemp(root))
        return -1;
    snprintf(plain_dir, sizeof(plain_dir), "%s/plain", root);
    snprintf(compose_dir, sizeof(compose_dir), "%s/compose", root);
    if (mkdir(plain_dir, 0755) < 0 || mkdir(compose_dir, 0755) < 0)
        return -1;
    p = path_in(compose_dir, "docker-compose.yml");
    write_file(p, "services: {}\n", 13);
    free(p);
    return 0;
}

static int teardown(void **state)
{
    return nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Asserts that d holds an entry at line whose message contains text. */
static void assert_diag(const struct diags *d, int line, const char *text)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->items[i].line == line && strstr(d->items[i].message, text))
            return;
    }
    for (size_t i = 0; i < d->n; i++)
        print_message("  diag %d: %s\n", d->items[i].line, d->items[i].message);
    fail_msg("no diagnostic at line %d containing \"%s\"", line, text);
}

/* Parses text in dir, which must succeed without errors. */
static struct manifest *parse_ok_in(const char *dir, const char *text, struct diags *warnings)
{
    struct diags errors = {0};
    struct manifest *m = NULL;

    if (manifest_parse(text, strlen(text), dir, &m, NULL, &errors, warnings) != 0) {
        for (size_t i = 0; i < errors.n; i++)
            print_message("  error %d: %s\n", errors.items[i].line, errors.items[i].message);
        fail_msg("manifest did not parse");
    }
    assert_int_equal(errors.n, 0);
    assert_non_null(m);
    return m;
}

static struct manifest *parse_ok(const char *text)
{
    struct diags warnings = {0};
    struct manifest *m = parse_ok_in(plain_dir, text, &warnings);

    assert_int_equal(warnings.n, 0);
    return m;
}

/* Parses text in dir, which must fail; errors are returned for more checks. */
static void parse_fails_in(const char *dir, const char *text, struct diags *errors)
{
    struct diags warnings = {0};
    struct manifest *m = (struct manifest *)errors; /* a sentinel that must stay */

    assert_int_equal(manifest_parse(text, strlen(text), dir, &m, NULL, errors, &warnings), -EINVAL);
    assert_ptr_equal(m, (struct manifest *)errors);
    assert_true(errors->n > 0);
    diags_clear(&warnings);
}

/* Parses text, which must fail with an error at line containing message. */
static void assert_fails(const char *text, int line, const char *message)
{
    struct diags errors = {0};

    parse_fails_in(plain_dir, text, &errors);
    assert_diag(&errors, line, message);
    diags_clear(&errors);
}

#define PROCESS_BASE "name: demo\ncommand: [\"./run\"]\nports: [\"8000\"]\n"

static void test_minimal_process_defaults(void **state)
{
    struct manifest *m =
        parse_ok("name: demo\ncommand: [python3, app.py]\nports: [\"8001:8000\"]\n");

    assert_string_equal(m->name, "demo");
    assert_int_equal(m->name_line, 1);
    assert_string_equal(m->description, "");
    assert_int_equal(m->n_ports, 1);
    assert_int_equal(m->ports[0].host, 8001);
    assert_int_equal(m->ports[0].container, 8000);
    assert_null(m->ports[0].host_ip);
    assert_false(m->ports[0].udp);
    assert_int_equal(m->ports[0].line, 3);
    assert_int_equal(m->port, 8001);
    assert_int_equal(m->ports_line, 3);
    assert_false(m->gpu_required);
    assert_int_equal(m->driver, DRIVER_PROCESS);
    assert_null(m->compose_file);
    assert_string_equal(m->command[0], "python3");
    assert_string_equal(m->command[1], "app.py");
    assert_null(m->command[2]);
    assert_false(m->command_is_shell);
    assert_string_equal(m->workdir, plain_dir);
    assert_non_null(m->env);
    assert_null(m->env[0]);
    assert_true(m->health_enabled);
    assert_string_equal(m->health_path, "/health");
    assert_int_equal(m->health_port, 8001);
    assert_int_equal(m->health_interval_ms, 5000);
    assert_int_equal(m->health_timeout_ms, 2000);
    assert_int_equal(m->health_start_period_ms, 300000);
    assert_int_equal(m->stop_timeout_ms, 10000);
    assert_int_equal(m->restart, RESTART_NO);
    assert_string_equal(m->dir, plain_dir);
    manifest_free(m);
}

static void test_full_manifest(void **state)
{
    const char *text = "name: upscale-api\n"
                       "description: Image upscaling API\n"
                       "ports: [\"8011:8000\", 9100]\n"
                       "gpu_required: true\n"
                       "driver: process\n"
                       "command: [\"python3\", \"app.py\", \"--port\", \"8000\"]\n"
                       "workdir: src/./app/\n"
                       "env: {MODEL: sdxl, THREADS: 4, EMPTY: ~, _X1: \"a=b\", N: null, Q: \"~\"}\n"
                       "health:\n"
                       "  path: /ready?full=1\n"
                       "  port: 9100\n"
                       "  interval: 1.5\n"
                       "  timeout: 500ms\n"
                       "  start_period: 2m\n"
                       "stop_timeout: 1h\n"
                       "restart: on-failure\n";
    struct manifest *m = parse_ok(text);
    char *workdir = path_in(plain_dir, "src/app");

    assert_string_equal(m->name, "upscale-api");
    assert_string_equal(m->description, "Image upscaling API");
    assert_int_equal(m->n_ports, 2);
    assert_int_equal(m->ports[1].host, 9100);
    assert_int_equal(m->ports[1].container, 9100);
    assert_int_equal(m->port, 8011);
    assert_true(m->gpu_required);
    assert_int_equal(m->driver, DRIVER_PROCESS);
    assert_string_equal(m->command[3], "8000");
    assert_string_equal(m->workdir, workdir);
    assert_string_equal(m->env[0], "MODEL=sdxl");
    assert_string_equal(m->env[1], "THREADS=4");
    assert_string_equal(m->env[2], "EMPTY=");
    assert_string_equal(m->env[3], "_X1=a=b");
    assert_string_equal(m->env[4], "N=");
    assert_string_equal(m->env[5], "Q=~");
    assert_null(m->env[6]);
    assert_string_equal(m->health_path, "/ready?full=1");
    assert_int_equal(m->health_port, 9100);
    assert_int_equal(m->health_interval_ms, 1500);
    assert_int_equal(m->health_timeout_ms, 500);
    assert_int_equal(m->health_start_period_ms, 120000);
    assert_int_equal(m->stop_timeout_ms, 3600000);
    assert_int_equal(m->restart, RESTART_ON_FAILURE);
    free(workdir);
    manifest_free(m);
}

static void test_compose_inferred(void **state)
{
    struct diags warnings = {0};
    struct manifest *m = parse_ok_in(compose_dir, "name: sd\nports: [8000]\n", &warnings);
    char *expected = path_in(compose_dir, "docker-compose.yml");

    assert_int_equal(warnings.n, 0);
    assert_int_equal(m->driver, DRIVER_COMPOSE);
    assert_string_equal(m->compose_file, expected);
    assert_null(m->command);
    manifest_free(m);

    /* A command next to a compose file is ignored, with a warning saying how to run it. */
    m = parse_ok_in(compose_dir, "name: sd\nports: [8000]\ncommand: run\n", &warnings);
    assert_int_equal(m->driver, DRIVER_COMPOSE);
    assert_null(m->command);
    assert_diag(&warnings, 3, "add \"driver: process\" to run the command");
    diags_clear(&warnings);
    manifest_free(m);

    /* An explicit process driver wins over the compose file. */
    m = parse_ok_in(compose_dir, "name: sd\nports: [8000]\ndriver: process\ncommand: run\n",
                    &warnings);
    assert_int_equal(m->driver, DRIVER_PROCESS);
    assert_null(m->compose_file);
    assert_int_equal(warnings.n, 0);
    manifest_free(m);
    free(expected);
}

static void test_compose_file_order(void **state)
{
    char *dir = path_in(root, "order");
    char *a = path_in(dir, "compose.yaml"), *b = path_in(dir, "docker-compose.yaml");
    char *c = path_in(dir, "compose.yml");
    struct diags warnings = {0};
    struct manifest *m;

    assert_int_equal(mkdir(dir, 0755), 0);
    write_file(a, "x: 1\n", 5);
    m = parse_ok_in(dir, "name: o\nhealth: false\ndriver: compose\n", &warnings);
    assert_string_equal(m->compose_file, a);
    manifest_free(m);
    write_file(c, "x: 1\n", 5);
    write_file(b, "x: 1\n", 5);
    m = parse_ok_in(dir, "name: o\nhealth: false\n", &warnings);
    assert_string_equal(m->compose_file, b);
    manifest_free(m);
    assert_int_equal(warnings.n, 0);
    unlink(a);
    unlink(b);
    unlink(c);
    rmdir(dir);
    free(a);
    free(b);
    free(c);
    free(dir);
}

static void test_compose_file_given(void **state)
{
    char *other = path_in(plain_dir, "other.yml");
    struct diags warnings = {0};
    struct manifest *m;

    write_file(other, "x: 1\n", 5);
    m = parse_ok_in(plain_dir, "name: c\nhealth: false\ncompose_file: ./other.yml\n", &warnings);
    assert_int_equal(m->driver, DRIVER_COMPOSE);
    assert_string_equal(m->compose_file, other);
    manifest_free(m);
    unlink(other);
    free(other);
}

static void test_command_string_is_shell(void **state)
{
    struct manifest *m =
        parse_ok("name: demo\nports: [8000]\ncommand: python3 -m http.server 8000 && echo done\n");

    assert_true(m->command_is_shell);
    assert_string_equal(m->command[0], "/bin/sh");
    assert_string_equal(m->command[1], "-c");
    assert_string_equal(m->command[2], "python3 -m http.server 8000 && echo done");
    assert_null(m->command[3]);
    manifest_free(m);
}

static void test_env_list_form(void **state)
{
    struct manifest *m =
        parse_ok(PROCESS_BASE "env:\n  - MODEL=sdxl\n  - EMPTY=\n  - URL=http://x/?a=b\n");

    assert_string_equal(m->env[0], "MODEL=sdxl");
    assert_string_equal(m->env[1], "EMPTY=");
    assert_string_equal(m->env[2], "URL=http://x/?a=b");
    assert_null(m->env[3]);
    manifest_free(m);
}

static void test_port_forms(void **state)
{
    struct manifest *m =
        parse_ok("name: demo\ncommand: x\nports:\n  - \"8000\"\n  - 8001\n  - \"8002:80\"\n"
                 "  - \"127.0.0.1:8003:80\"\n  - \"[::1]:8004:80\"\n  - \"8005:80/udp\"\n"
                 "  - \"8006/tcp\"\n  - 8007:80\n  - \"::1:8008:80\"\n  - \"8000/udp\"\n");
    json_t *j = manifest_to_json(m);
    json_t *expected = json_pack("[s,s,s,s,s,s,s,s,s,s]", "8000:8000", "8001:8001", "8002:80",
                                 "127.0.0.1:8003:80", "[::1]:8004:80", "8005:80/udp", "8006:8006",
                                 "8007:80", "[::1]:8008:80", "8000:8000/udp");

    assert_int_equal(m->n_ports, 10);
    assert_int_equal(m->port, 8000);
    assert_string_equal(m->ports[3].host_ip, "127.0.0.1");
    assert_string_equal(m->ports[4].host_ip, "::1");
    assert_true(m->ports[5].udp);
    assert_int_equal(m->ports[9].line, 13);
    assert_true(json_equal(json_object_get(j, "ports"), expected));
    json_decref(expected);
    json_decref(j);
    manifest_free(m);
}

static void test_health_variants(void **state)
{
    struct manifest *m = parse_ok("name: demo\ncommand: x\nhealth: false\n");

    assert_false(m->health_enabled);
    assert_int_equal(m->port, 0);
    manifest_free(m);

    m = parse_ok("name: demo\ncommand: x\nhealth: no\n");
    assert_false(m->health_enabled);
    manifest_free(m);

    m = parse_ok("name: demo\ncommand: x\nports: [8000]\nhealth: true\n");
    assert_true(m->health_enabled);
    assert_int_equal(m->health_port, 8000);
    manifest_free(m);

    /* A health port alone is enough, without ports. */
    m = parse_ok("name: demo\ncommand: x\nhealth: {port: 9000, path: /}\n");
    assert_int_equal(m->health_port, 9000);
    assert_string_equal(m->health_path, "/");
    assert_int_equal(m->port, 0);
    manifest_free(m);
}

/* priority: a whole number, 0 by default; anything else is an error that says so. */
static void test_priority(void **state)
{
    struct manifest *m = parse_ok(PROCESS_BASE);

    assert_int_equal(m->priority, 0);
    manifest_free(m);
    m = parse_ok(PROCESS_BASE "priority: -5\n");
    assert_int_equal(m->priority, -5);
    manifest_free(m);
    m = parse_ok(PROCESS_BASE "priority: 10\n");
    assert_int_equal(m->priority, 10);
    manifest_free(m);
    assert_fails(PROCESS_BASE "priority: high\n", 4, "priority must be a whole number");
    assert_fails(PROCESS_BASE "priority: \"3\"\n", 4, "priority must be a whole number");
    assert_fails(PROCESS_BASE "priority: 1.5\n", 4, "priority must be a whole number");
    assert_fails(PROCESS_BASE "priority: 99999999999999999999\n", 4,
                 "priority must be a whole number");
    assert_fails(PROCESS_BASE "priority: [1]\n", 4, "priority must be a whole number");
}

/* gpu_required: true alone is one whole GPU; gpu: says how many and how much of each;
 * devices: pins; every contradiction or bad value is an error naming the key. */
static void test_gpu_needs(void **state)
{
    struct manifest *m = parse_ok(PROCESS_BASE);
    json_t *j;

    assert_false(m->gpu_required);
    assert_int_equal(m->gpu.count, 0);
    j = manifest_gpu_to_json(m);
    assert_true(json_is_null(j));
    json_decref(j);
    manifest_free(m);

    m = parse_ok(PROCESS_BASE "gpu_required: true\n");
    assert_true(m->gpu_required);
    assert_int_equal(m->gpu.count, 1);
    assert_int_equal(m->gpu.memory, 0);
    assert_int_equal(m->gpu.devices, 0);
    j = manifest_gpu_to_json(m); /* gpu_required says it all */
    assert_true(json_is_null(j));
    json_decref(j);
    manifest_free(m);

    m = parse_ok(PROCESS_BASE "gpu: {count: 2}\n");
    assert_true(m->gpu_required);
    assert_int_equal(m->gpu.count, 2);
    assert_int_equal(m->gpu.memory, 0);
    j = manifest_gpu_to_json(m);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 2);
    assert_true(json_is_null(json_object_get(j, "memory")));
    assert_true(json_is_true(json_object_get(j, "exclusive")));
    json_decref(j);
    manifest_free(m);

    m = parse_ok(PROCESS_BASE "gpu_required: true\ngpu:\n  memory: 12GiB\ndevices: [1, 3]\n");
    assert_int_equal(m->gpu.count, 1);
    assert_int_equal(m->gpu.memory, UINT64_C(12) << 30);
    assert_int_equal(m->gpu.devices, 0xa);
    j = manifest_gpu_to_json(m);
    assert_int_equal(json_integer_value(json_object_get(j, "memory")), INT64_C(12) << 30);
    assert_true(json_is_false(json_object_get(j, "exclusive")));
    assert_int_equal(json_array_size(json_object_get(j, "devices")), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "devices"), 1)), 3);
    assert_true(json_is_false(json_object_get(j, "enforce")));
    json_decref(j);
    manifest_free(m);

    m = parse_ok(PROCESS_BASE "gpu: {memory: 4GiB, enforce: true}\n");
    assert_true(m->gpu.enforce);
    j = manifest_gpu_to_json(m);
    assert_true(json_is_true(json_object_get(j, "enforce")));
    json_decref(j);
    manifest_free(m);

    assert_fails(PROCESS_BASE "gpu: 1\n", 4, "gpu must be a mapping");
    assert_fails(PROCESS_BASE "gpu: {count: 0}\n", 4, "gpu.count is");
    assert_fails(PROCESS_BASE "gpu: {count: 65}\n", 4, "gpu.count is");
    assert_fails(PROCESS_BASE "gpu: {memory: 0}\n", 4, "gpu.memory must be more than 0");
    assert_fails(PROCESS_BASE "gpu: {memory: 12 GB}\n", 4, "gpu.memory must be a size");
    assert_fails(PROCESS_BASE "gpu: {memory: 1.5GiB}\n", 4, "gpu.memory must be a size");
    assert_fails(PROCESS_BASE "gpu: {count: 1, enforce: true}\n", 4,
                 "gpu.enforce stops a service that uses more than its gpu.memory");
    assert_fails(PROCESS_BASE "gpu: {memory: 1GiB, enforce: yes please}\n", 4, "gpu.enforce");
    {
        struct diags warnings = {0};

        m = parse_ok_in(plain_dir, PROCESS_BASE "gpu: {memroy: 1GiB}\n", &warnings);
        assert_diag(&warnings, 4, "unknown key \"memroy\" in gpu");
        assert_int_equal(m->gpu.count, 1);
        diags_clear(&warnings);
        manifest_free(m);
    }
    assert_fails(PROCESS_BASE "gpu_required: false\ngpu: {count: 1}\n", 4,
                 "gpu_required: false but gpu:");
    assert_fails(PROCESS_BASE "devices: [0]\n", 4, "devices pins a GPU service");
    assert_fails(PROCESS_BASE "gpu_required: true\ndevices: []\n", 5,
                 "devices must list at least one");
    assert_fails(PROCESS_BASE "gpu_required: true\ndevices: 0\n", 5, "devices must be a list");
    assert_fails(PROCESS_BASE "gpu_required: true\ndevices: [0, 0]\n", 5,
                 "devices lists GPU 0 twice");
    assert_fails(PROCESS_BASE "gpu_required: true\ndevices: [64]\n", 5, "devices[0]");
    assert_fails(PROCESS_BASE "gpu_required: true\ndevices: [-1]\n", 5, "devices[0]");
    assert_fails(PROCESS_BASE "gpu: {count: 2}\ndevices: [1]\n", 5,
                 "devices lists 1 GPUs but gpu.count asks for 2");
}

static void test_models(void **state)
{
    struct manifest *m =
        parse_ok(PROCESS_BASE "models: [llama-3-8b, \"org/model:q4\"]\n"
                              "model_aliases: {gpt-4o: llama-3-8b, small: \"org/model:q4\"}\n");
    char *long_name = xcalloc(1, MANIFEST_MODEL_MAX + 2), *text;
    json_t *j;

    assert_string_equal(m->models[0], "llama-3-8b");
    assert_string_equal(m->models[1], "org/model:q4");
    assert_null(m->models[2]);
    assert_string_equal(manifest_model_for(m, "llama-3-8b"), "llama-3-8b");
    assert_string_equal(manifest_model_for(m, "gpt-4o"), "llama-3-8b");
    assert_string_equal(manifest_model_for(m, "small"), "org/model:q4");
    assert_null(manifest_model_for(m, "other"));
    assert_null(manifest_model_for(m, "LLAMA-3-8B")); /* names are exact */
    j = manifest_to_json(m);
    assert_int_equal(json_array_size(json_object_get(j, "models")), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "model_aliases"), "gpt-4o")),
        "llama-3-8b");
    json_decref(j);
    manifest_free(m);

    m = parse_ok(PROCESS_BASE "idle_timeout: 10m\n");
    assert_int_equal(m->idle_timeout_ms, 600000);
    manifest_free(m);
    m = parse_ok(PROCESS_BASE "idle_timeout: false\n");
    assert_int_equal(m->idle_timeout_ms, 0);
    manifest_free(m);
    assert_fails(PROCESS_BASE "idle_timeout: soon\n", 4, "idle_timeout");
    /* A swap's terms: the config's (-1) unless given. */
    m = parse_ok(PROCESS_BASE);
    assert_true(m->swap_grace_ms == -1 && m->swap_max_wait_ms == -1 && m->min_resident_ms == -1);
    assert_int_equal(m->swap_drain, -1);
    manifest_free(m);
    m = parse_ok(PROCESS_BASE "swap_grace: 2m\nswap_max_wait: 0s\nmin_resident: 90s\n"
                              "swap_drain: true\n");
    assert_true(m->swap_grace_ms == 120000 && m->swap_max_wait_ms == 0);
    assert_true(m->min_resident_ms == 90000 && m->swap_drain == 1);
    j = manifest_to_json(m);
    assert_int_equal(json_integer_value(json_object_get(j, "swap_grace_ms")), 120000);
    assert_true(json_is_true(json_object_get(j, "swap_drain")));
    json_decref(j);
    manifest_free(m);
    assert_fails(PROCESS_BASE "swap_grace: soon\n", 4, "swap_grace");
    assert_fails(PROCESS_BASE "swap_max_wait: [1]\n", 4, "swap_max_wait");
    assert_fails(PROCESS_BASE "min_resident: -5s\n", 4, "min_resident");
    assert_fails(PROCESS_BASE "swap_drain: maybe\n", 4, "swap_drain");
    assert_fails(PROCESS_BASE "models: llama\n", 4, "models must be a list");
    assert_fails(PROCESS_BASE "models: [a, a]\n", 4, "models[1]: \"a\" is listed twice");
    assert_fails(PROCESS_BASE "models: [\"\"]\n", 4, "models[0]: a model name has 1 to 256");
    assert_fails(PROCESS_BASE "models: [\"a\\tb\"]\n", 4, "holds a control character");
    memset(long_name, 'm', MANIFEST_MODEL_MAX + 1);
    text = xasprintf(PROCESS_BASE "models: [%s]\n", long_name);
    assert_fails(text, 4, "a model name has 1 to 256 bytes, not 257");
    free(text);
    free(long_name);
    assert_fails(PROCESS_BASE "models: [a]\nmodel_aliases: [a]\n", 5,
                 "model_aliases must be a mapping");
    assert_fails(PROCESS_BASE "models: [a]\nmodel_aliases: {b: c}\n", 5,
                 "names a model that models does not list");
    assert_fails(PROCESS_BASE "models: [a, b]\nmodel_aliases: {b: a}\n", 5,
                 "is a model of models already");
}

static void test_restart_values(void **state)
{
    static const struct {
        const char *text;
        enum restart_policy policy;
    } cases[] = {
        {"no", RESTART_NO},
        {"\"no\"", RESTART_NO},
        {"'no'", RESTART_NO},
        {"false", RESTART_NO},
        {"on-failure", RESTART_ON_FAILURE},
        {"always", RESTART_ALWAYS},
        {"\"always\"", RESTART_ALWAYS},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = xasprintf(PROCESS_BASE "restart: %s\n", cases[i].text);
        struct manifest *m = parse_ok(text);

        assert_int_equal(m->restart, cases[i].policy);
        manifest_free(m);
        free(text);
    }
    {
        struct manifest *m = parse_ok(PROCESS_BASE "on_demand: reject\n");
        assert_true(m->on_demand_reject);
        manifest_free(m);
        m = parse_ok(PROCESS_BASE "on_demand: start\n");
        assert_false(m->on_demand_reject);
        manifest_free(m);
    }
    assert_fails(PROCESS_BASE "on_demand: yes\n", 4, "on_demand must be start");
    assert_fails(PROCESS_BASE "on_demand: [start]\n", 4, "on_demand must be start");
    assert_string_equal(manifest_restart_name(RESTART_NO), "no");
    assert_string_equal(manifest_restart_name(RESTART_ON_FAILURE), "on-failure");
    assert_string_equal(manifest_restart_name(RESTART_ALWAYS), "always");
    assert_string_equal(manifest_driver_name(&(struct manifest){.driver = DRIVER_COMPOSE}),
                        "compose");
    assert_string_equal(manifest_driver_name(&(struct manifest){.driver = DRIVER_PROCESS}),
                        "process");
}

static void test_unknown_keys_are_warnings(void **state)
{
    struct diags warnings = {0};
    struct manifest *m = parse_ok_in(
        plain_dir, PROCESS_BASE "labels: {a: b}\nhealth:\n  path: /h\n  retries: 3\n", &warnings);

    assert_non_null(m);
    assert_int_equal(warnings.n, 2);
    assert_diag(&warnings, 4, "unknown key \"labels\" in the manifest");
    assert_diag(&warnings, 7, "unknown key \"retries\" in health");
    diags_clear(&warnings);
    manifest_free(m);
}

static void test_name_rules(void **state)
{
    char long_name[80];
    char *text;
    struct manifest *m;

    assert_true(manifest_name_valid("a"));
    assert_true(manifest_name_valid("0.svc_x-y"));
    assert_false(manifest_name_valid(""));
    assert_false(manifest_name_valid("-a"));
    assert_false(manifest_name_valid(".a"));
    assert_false(manifest_name_valid("_a"));
    assert_false(manifest_name_valid("Abc"));
    assert_false(manifest_name_valid("a b"));
    assert_false(manifest_name_valid("a/b"));

    memset(long_name, 'a', 63);
    long_name[63] = '\0';
    assert_true(manifest_name_valid(long_name));
    text = xasprintf("name: %s\ncommand: x\nhealth: false\n", long_name);
    m = parse_ok(text);
    assert_string_equal(m->name, long_name);
    manifest_free(m);
    free(text);

    long_name[63] = 'a';
    long_name[64] = '\0';
    assert_false(manifest_name_valid(long_name));
    text = xasprintf("command: x\nhealth: false\nname: %s\n", long_name);
    assert_fails(text, 3, "is 64 characters long; the limit is 63");
    free(text);
}

static void test_error_syntax(void **state)
{
    assert_fails("name: demo\nports: [8000\ncommand: x\n", 3, "YAML syntax error");
    assert_fails("name: demo\n  command: x\n", 2, "YAML syntax error");
}

static void test_error_empty(void **state)
{
    assert_fails("", 1, "the file is empty");
    assert_fails("# just a comment\n", 1, "the file is empty");
}

static void test_error_not_a_mapping(void **state)
{
    assert_fails("- name: demo\n", 1, "the manifest must be a mapping");
    assert_fails("just text\n", 1, "the manifest must be a mapping");
}

static void test_error_missing_name(void **state)
{
    assert_fails("command: x\nports: [8000]\n", 1, "missing \"name\": add a line such as");
}

static void test_error_bad_name(void **state)
{
    assert_fails("command: x\nname: My Service\nports: [8000]\n", 2,
                 "name \"My Service\" is not valid: use lowercase letters");
    assert_fails("command: x\nname: ../etc\nports: [8000]\n", 2, "is not valid");
    assert_fails("command: x\nname: -x\nports: [8000]\n", 2, "starting with a letter or digit");
    assert_fails("command: x\nname: [a]\nports: [8000]\n", 2, "name must be a string, not a list");
    assert_fails("command: x\nname:\nports: [8000]\n", 2, "name is empty");
}

static void test_error_bad_port_string(void **state)
{
    assert_fails("name: d\ncommand: x\nports: [\"80a0\"]\n", 3,
                 "ports[0]: \"80a0\" is not a valid port");
    assert_fails("name: d\ncommand: x\nports:\n  - 8000\n  - \"abc:8000\"\n", 5,
                 "ports[1]: \"abc:8000\" is not a valid port mapping: use \"PORT\"");
    assert_fails("name: d\ncommand: x\nports: [\"8000:\"]\n", 3, "is not a valid port mapping");
    assert_fails("name: d\ncommand: x\nports: [\":8000\"]\n", 3, "has no host port");
    assert_fails("name: d\ncommand: x\nports: [\"1.2.3:8001:8000\"]\n", 3,
                 "\"1.2.3\" in \"1.2.3:8001:8000\" is not an IP address");
    assert_fails("name: d\ncommand: x\nports: [\"8000/sctp\"]\n", 3, "unknown protocol");
    assert_fails("name: d\ncommand: x\nports: [\"\"]\n", 3, "is not a valid port mapping");
    assert_fails("name: d\ncommand: x\nports: [8000.5]\n", 3, "is not a valid port mapping");
}

static void test_error_port_range(void **state)
{
    assert_fails("name: d\ncommand: x\nports: [\"8000-8005\"]\n", 3,
                 "is a port range, and ranges are not supported");
    assert_fails("name: d\ncommand: x\nports: [\"8000-8001:8000-8001\"]\n", 3,
                 "ranges are not supported");
}

static void test_error_port_out_of_range(void **state)
{
    assert_fails("name: d\ncommand: x\nports: [70000]\n", 3,
                 "ports[0]: port \"70000\" is out of range: ports go from 1 to 65535");
    assert_fails("name: d\ncommand: x\nports: [\"0:8000\"]\n", 3,
                 "ports[0]: port \"0\" in \"0:8000\" is out of range");
    assert_fails("name: d\ncommand: x\nports: [\"8000:65536\"]\n", 3, "is out of range");
    assert_fails(PROCESS_BASE "health: {port: 70000}\n", 4,
                 "health.port is \"70000\", out of range");
}

static void test_error_port_twice_in_one_manifest(void **state)
{
    assert_fails("name: d\ncommand: x\nports:\n  - 8000\n  - \"8000:9000\"\n", 5,
                 "host port 8000 is already listed on line 4");
    /* The same number over udp is another port. */
    manifest_free(parse_ok("name: d\ncommand: x\nports: [8000, \"8000/udp\"]\n"));
}

static void test_error_bad_duration(void **state)
{
    assert_fails(PROCESS_BASE "stop_timeout: 5x\n", 4,
                 "stop_timeout must be a duration such as 500ms, 5s, 2m, 1h");
    assert_fails(PROCESS_BASE "health:\n  interval: soon\n", 5,
                 "health.interval must be a duration");
    assert_fails(PROCESS_BASE "health:\n  interval: 0s\n", 5,
                 "health.interval must be longer than 0");
    assert_fails(PROCESS_BASE "health:\n  timeout: 0\n", 5, "health.timeout must be longer than 0");
    assert_fails(PROCESS_BASE "health:\n  start_period: 9999h\n", 5,
                 "health.start_period is \"9999h\", longer than the limit");
}

static void test_error_unknown_driver(void **state)
{
    assert_fails(PROCESS_BASE "driver: docker\n", 4,
                 "unknown driver \"docker\": use compose or process");
}

static void test_error_process_without_command(void **state)
{
    assert_fails("name: d\nports: [8000]\ndriver: process\n", 3,
                 "driver is process but there is no command: add one");
}

static void test_error_compose_without_file(void **state)
{
    assert_fails("name: d\nports: [8000]\ndriver: compose\n", 3,
                 "driver is compose but the service folder has no docker-compose.yml");
    assert_fails("name: d\nports: [8000]\ncompose_file: missing.yml\n", 3,
                 "compose_file \"missing.yml\" does not exist");
    assert_fails("name: d\nports: [8000]\ndriver: compose\ncompose_file: /nonexistent/x.yml\n", 4,
                 "does not exist");
    /* A folder is not a compose file. */
    assert_fails("name: d\nports: [8000]\ncompose_file: .\n", 3, "is not a file");
}

static void test_error_cannot_infer_driver(void **state)
{
    assert_fails("name: d\nports: [8000]\n", 1,
                 "cannot tell how to run this service: add a docker-compose.yml to the service "
                 "folder, or a command");
}

static void test_error_wrong_types(void **state)
{
    assert_fails(PROCESS_BASE "gpu_required: \"yes please\"\n", 4,
                 "gpu_required must be true or false, not \"yes please\"");
    assert_fails(PROCESS_BASE "gpu_required: \"true\"\n", 4, "without quotes");
    assert_fails("name: d\ncommand: x\nports: 8000\n", 3,
                 "ports must be a list such as [\"8001:8000\"], not \"8000\"");
    assert_fails("name: d\ncommand: x\nports: [[8000]]\n", 3,
                 "ports[0] must be a string such as \"8001:8000\" or a number, not a list");
    assert_fails(PROCESS_BASE "env:\n  - MODEL\n", 5,
                 "env[0]: \"MODEL\" must have the form KEY=VALUE");
    assert_fails(PROCESS_BASE "env:\n  - {A: b}\n", 5, "env[0] must be a string, not a mapping");
    assert_fails(PROCESS_BASE "env: MODEL=x\n", 4, "env must be a mapping (KEY: value) or a list");
    assert_fails(PROCESS_BASE "env: {MODEL: [a]}\n", 4, "env.MODEL must be a string, not a list");
    assert_fails(PROCESS_BASE "env: {1BAD: x}\n", 4, "env: \"1BAD\" is not a valid variable name");
    assert_fails(PROCESS_BASE "env: [\"A-B=1\"]\n", 4, "\"A-B\" is not a valid variable name");
    assert_fails(PROCESS_BASE "env: [\"=1\"]\n", 4, "is not a valid variable name");
    assert_fails(PROCESS_BASE "env: [A=1, A=2]\n", 4, "env[1]: \"A\" is set twice");
    assert_fails(PROCESS_BASE "health: /health\n", 4,
                 "health must be a mapping (path, port, interval, timeout, start_period) or false, "
                 "not \"/health\"");
    assert_fails(PROCESS_BASE "health: \"false\"\n", 4, "health must be a mapping");
    assert_fails(PROCESS_BASE "health: [a]\n", 4, "health must be a mapping");
    assert_fails(PROCESS_BASE "health: {path: health}\n", 4,
                 "health.path must be a URL path starting with '/'");
    assert_fails(PROCESS_BASE "health: {path: \"/a b\"}\n", 4, "health.path must be a URL path");
    assert_fails(PROCESS_BASE "health: {port: \"8000\"}\n", 4,
                 "health.port must be a number written without quotes");
    assert_fails(PROCESS_BASE "health: {port: [1]}\n", 4, "health.port must be a whole number");
    assert_fails(PROCESS_BASE "description: {a: b}\n", 4,
                 "description must be a string, not a mapping");
    assert_fails(
        "name: d\nports: [8000]\ncommand: {a: b}\n", 3,
        "command must be a list such as [\"python3\", \"app.py\"] or a string, not a mapping");
    assert_fails("name: d\nports: [8000]\ncommand: []\n", 3, "command must start with the program");
    assert_fails("name: d\nports: [8000]\ncommand: [\"\"]\n", 3,
                 "command must start with the program");
    assert_fails("name: d\nports: [8000]\ncommand: \"  \"\n", 3, "command is empty");
    assert_fails("name: d\nports: [8000]\ncommand: [a, [b]]\n", 3, "command[1] must be a string");
    assert_fails(PROCESS_BASE "stop_timeout: [1]\n", 4, "stop_timeout must be a duration");
    assert_fails(PROCESS_BASE "restart: maybe\n", 4,
                 "restart must be \"no\", on-failure or always, not \"maybe\"");
    assert_fails(PROCESS_BASE "restart: \"false\"\n", 4, "restart must be");
    assert_fails(PROCESS_BASE "restart: [always]\n", 4, "restart must be");
    assert_fails(PROCESS_BASE "driver: [process]\n", 4, "driver must be a string, not a list");
    assert_fails(PROCESS_BASE "workdir: [a]\n", 4, "workdir must be a string, not a list");
    assert_fails(PROCESS_BASE "workdir: \"\"\n", 4, "workdir is empty");
    assert_fails(PROCESS_BASE "compose_file: {a: 1}\n", 4, "compose_file must be a string");
    assert_fails(PROCESS_BASE "description: \"a\\0b\"\n", 4, "must not contain a NUL character");
}

static void test_error_health_needs_port(void **state)
{
    assert_fails("name: d\ncommand: x\n", 1,
                 "health check needs a port: add ports or health.port, or set health: false");
    assert_fails("name: d\ncommand: x\nhealth:\n  path: /h\n", 3, "health check needs a port");
}

static void test_error_duplicate_key(void **state)
{
    assert_fails(PROCESS_BASE "name: again\n", 4, "key \"name\" appears twice (first on line 1)");
    assert_fails(PROCESS_BASE "health:\n  path: /a\n  path: /b\n", 6, "key \"path\" appears twice");
    assert_fails(PROCESS_BASE "env: {A: 1, A: 2}\n", 4, "key \"A\" appears twice");
}

static void test_error_caps(void **state)
{
    size_t size = 16 * 1100 + 256;
    char *text = xmalloc(size);
    size_t len;

    len = (size_t)sprintf(text, "name: d\ncommand: x\nports:\n");
    for (int i = 0; i < MANIFEST_PORTS_MAX + 1; i++)
        len += (size_t)sprintf(text + len, "  - %d\n", 1 + i);
    assert_fails(text, 4, "ports has 1025 items; the limit is 1024");

    len = (size_t)sprintf(text, "name: d\nports: [1]\ncommand:\n");
    for (int i = 0; i < MANIFEST_ARGS_MAX + 1; i++)
        len += (size_t)sprintf(text + len, "  - a%d\n", i);
    assert_fails(text, 4, "command has 1025 items; the limit is 1024");

    len = (size_t)sprintf(text, PROCESS_BASE "env:\n");
    for (int i = 0; i < MANIFEST_ENV_MAX + 1; i++)
        len += (size_t)sprintf(text + len, "  K%d: v\n", i);
    assert_fails(text, 5 + MANIFEST_ENV_MAX, "env has more than 1024 entries");

    len = (size_t)sprintf(text, PROCESS_BASE "env:\n");
    for (int i = 0; i < MANIFEST_ENV_MAX + 1; i++)
        len += (size_t)sprintf(text + len, "  - K%d=v\n", i);
    assert_fails(text, 5, "env has 1025 items; the limit is 1024");
    free(text);

    /* Exactly at the caps is fine. */
    text = xmalloc(size);
    len = (size_t)sprintf(text, "name: d\ncommand: x\nports:\n");
    for (int i = 0; i < MANIFEST_PORTS_MAX; i++)
        len += (size_t)sprintf(text + len, "  - %d\n", 1 + i);
    struct manifest *m = parse_ok(text);
    assert_int_equal(m->n_ports, MANIFEST_PORTS_MAX);
    manifest_free(m);
    free(text);
}

/* Independent problems are all reported, each at its own line. */
static void test_many_errors_at_once(void **state)
{
    struct diags errors = {0};
    char *name = NULL;

    parse_fails_in(plain_dir,
                   "restart: sometimes\nstop_timeout: forever\ncommand: x\n"
                   "gpu_required: maybe\nports: [\"80x\"]\nname: Bad Name\n",
                   &errors);
    assert_int_equal(errors.n, 5);
    /* Reported top to bottom, whatever order the checks ran in. */
    for (size_t i = 1; i < errors.n; i++)
        assert_true(errors.items[i - 1].line < errors.items[i].line);
    assert_diag(&errors, 1, "restart must be");
    assert_diag(&errors, 2, "stop_timeout must be a duration");
    assert_diag(&errors, 4, "gpu_required must be true or false");
    assert_diag(&errors, 5, "is not a valid port mapping");
    assert_diag(&errors, 6, "is not valid");
    diags_clear(&errors);

    /* The name is handed back even when the manifest is broken, if it is valid. */
    const char *text = "name: broken-one\ncommand: x\nports: [\"80x\"]\n";
    struct manifest *m = NULL;
    assert_int_equal(manifest_parse(text, strlen(text), plain_dir, &m, &name, &errors, NULL),
                     -EINVAL);
    assert_null(m);
    assert_string_equal(name, "broken-one");
    free(name);
    diags_clear(&errors);

    name = NULL;
    text = "name: Bad Name\ncommand: x\nports: [1]\n";
    assert_int_equal(manifest_parse(text, strlen(text), plain_dir, &m, &name, &errors, NULL),
                     -EINVAL);
    assert_null(name);
    diags_clear(&errors);
}

/* Returns a string of n copies of c; the caller frees it. */
static char *repeat(char c, size_t n)
{
    char *s = xmalloc(n + 1);

    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* Parses base followed by format, whose %s becomes n bytes of 'a' ("/aaa..." when
 * is_path): it must fail with message at line, or succeed when message is NULL. */
static void check_value_size(const char *base, const char *format, bool is_path, size_t n, int line,
                             const char *message)
{
    char *value = repeat('a', n);
    const char *hole;
    char *text;

    if (is_path)
        value[0] = '/';
    hole = strstr(format, "%s");
    assert_non_null(hole);
    text = xasprintf("%s%.*s%s%s", base, (int)(hole - format), format, value, hole + 2);
    if (message) {
        assert_fails(text, line, message);
    } else {
        struct diags warnings = {0};
        struct manifest *m = parse_ok_in(plain_dir, text, &warnings);

        manifest_free(m);
        diags_clear(&warnings);
    }
    free(text);
    free(value);
}

/* Every value a manifest holds has a size limit, reported with its key, line and limit. */
static void test_error_value_sizes(void **state)
{
    const char *base = PROCESS_BASE;
    const char *no_command = "name: demo\nports: [\"8000\"]\n";

    check_value_size(base, "description: %s\n", false, MANIFEST_DESCRIPTION_MAX, 0, NULL);
    check_value_size(base, "description: %s\n", false, MANIFEST_DESCRIPTION_MAX + 1, 4,
                     "description is 1025 bytes long; the limit is 1024 bytes");
    check_value_size(base, "env: {A: %s}\n", false, MANIFEST_VALUE_MAX, 0, NULL);
    check_value_size(base, "env: {A: %s}\n", false, MANIFEST_VALUE_MAX + 1, 4,
                     "env: the value of \"A\" is 4097 bytes long; the limit is 4096 bytes");
    check_value_size(base, "env:\n  - B=1\n  - A=%s\n", false, MANIFEST_VALUE_MAX, 0, NULL);
    check_value_size(base, "env:\n  - B=1\n  - A=%s\n", false, MANIFEST_VALUE_MAX + 1, 6,
                     "env[1]: the value of \"A\" is 4097 bytes long; the limit is 4096 bytes");
    check_value_size(no_command, "command: [./run, %s]\n", false, MANIFEST_VALUE_MAX, 0, NULL);
    check_value_size(no_command, "command:\n  - ./run\n  - %s\n", false, MANIFEST_VALUE_MAX + 1, 5,
                     "command[1] is 4097 bytes long; the limit is 4096 bytes");
    check_value_size(no_command, "command: %s\n", false, MANIFEST_VALUE_MAX, 0, NULL);
    check_value_size(no_command, "command: %s\n", false, MANIFEST_VALUE_MAX + 1, 3,
                     "command is 4097 bytes long; the limit is 4096 bytes");
    check_value_size(base, "workdir: %s\n", false, MANIFEST_VALUE_MAX + 1, 4,
                     "workdir is 4097 bytes long; the limit is 4096 bytes");
    check_value_size(base, "compose_file: %s\n", false, MANIFEST_VALUE_MAX + 1, 4,
                     "compose_file is 4097 bytes long; the limit is 4096 bytes");
    check_value_size(base, "health: {path: %s}\n", true, MANIFEST_VALUE_MAX, 0, NULL);
    check_value_size(base, "health: {path: %s}\n", true, MANIFEST_VALUE_MAX + 1, 4,
                     "health.path is 4097 bytes long; the limit is 4096 bytes");
}

/* env and command together hold at most 64 KiB, as written. */
static void test_error_env_command_total(void **state)
{
    /* command "x" is 1 byte; each "Knn=value" is 4 + 4092 = 4096 bytes. */
    const size_t value_len = 4092;
    char *value = repeat('v', value_len);
    size_t size = 17 * (value_len + 16) + 256, len;
    char *text = xmalloc(size);
    struct manifest *m;

    len = (size_t)sprintf(text, "name: d\nports: [1]\ncommand: x\nenv:\n");
    for (int i = 0; i < 16; i++)
        len += (size_t)sprintf(text + len, "  K%02d: %.*s\n", i, (int)value_len - (i == 15), value);
    m = parse_ok(text); /* 1 + 16 * 4096 - 1 = 65536 */
    manifest_free(m);

    len = (size_t)sprintf(text, "name: d\nports: [1]\ncommand: x\nenv:\n");
    for (int i = 0; i < 16; i++)
        len += (size_t)sprintf(text + len, "  K%02d: %s\n", i, value);
    assert_fails(text, 4,
                 "env and command together are 65537 bytes long (env 65536, command 1); the "
                 "limit is 65536 bytes (64 KiB)");

    /* The line is that of the larger of the two. */
    len = (size_t)sprintf(text, "name: d\nports: [1]\nenv: {A: b}\ncommand:\n");
    for (int i = 0; i < 17; i++)
        len += (size_t)sprintf(text + len, "  - %s\n", value);
    assert_fails(text, 4, "env and command together are 69567 bytes long (env 3, command 69564)");
    free(text);
    free(value);
}

/* A manifest reports its first ten errors (by line) and how many more there are. */
static void test_errors_capped(void **state)
{
    size_t size = 200 * 16 + 256, len;
    char *text = xmalloc(size);
    struct diags errors = {0};

    /* Ten errors: all shown, no summary. */
    len = (size_t)sprintf(text, PROCESS_BASE "env:\n");
    for (int i = 0; i < 10; i++)
        len += (size_t)sprintf(text + len, "  - %dA=x\n", i);
    parse_fails_in(plain_dir, text, &errors);
    assert_int_equal(errors.n, 10);
    diags_clear(&errors);

    /* Eleven: ten and one more. */
    len += (size_t)sprintf(text + len, "  - 10A=x\n");
    parse_fails_in(plain_dir, text, &errors);
    assert_int_equal(errors.n, MANIFEST_ERRORS_MAX + 1);
    assert_diag(&errors, 14, "env: \"9A\" is not a valid variable name");
    assert_int_equal(errors.items[10].line, 0);
    assert_string_equal(errors.items[10].message, "... and 1 more problem");
    diags_clear(&errors);

    /* 150, more than a diagnostics list holds: still counted right. */
    len = (size_t)sprintf(text, PROCESS_BASE "env:\n");
    for (int i = 0; i < 150; i++)
        len += (size_t)sprintf(text + len, "  - %dA=x\n", i);
    parse_fails_in(plain_dir, text, &errors);
    assert_int_equal(errors.n, MANIFEST_ERRORS_MAX + 1);
    assert_int_equal(errors.items[0].line, 5);
    assert_int_equal(errors.items[9].line, 14);
    assert_string_equal(errors.items[10].message, "... and 140 more problems");
    diags_clear(&errors);
    free(text);
}

/* A health timeout not shorter than the interval is a warning, at the line of the value
 * that made it so. */
static void test_health_timeout_warning(void **state)
{
    struct diags warnings = {0};
    struct manifest *m;

    m = parse_ok_in(plain_dir, PROCESS_BASE "health:\n  interval: 5s\n  timeout: 5s\n", &warnings);
    assert_int_equal(warnings.n, 1);
    assert_diag(&warnings, 6,
                "health.timeout 5s is not shorter than health.interval 5s: a slow check "
                "overlaps the next");
    diags_clear(&warnings);
    manifest_free(m);

    /* The default timeout (2s) against a short interval: the interval's line. */
    m = parse_ok_in(plain_dir, PROCESS_BASE "health: {interval: 1}\n", &warnings);
    assert_int_equal(warnings.n, 1);
    assert_diag(&warnings, 4, "health.timeout 2s is not shorter than health.interval 1s");
    diags_clear(&warnings);
    manifest_free(m);

    m = parse_ok_in(plain_dir, PROCESS_BASE "health:\n  timeout: 1500ms\n  interval: 1s\n",
                    &warnings);
    assert_diag(&warnings, 5, "health.timeout 1500ms is not shorter than health.interval 1s");
    diags_clear(&warnings);
    manifest_free(m);

    m = parse_ok_in(plain_dir, PROCESS_BASE "health: {timeout: 2m, interval: 1h}\n", &warnings);
    assert_int_equal(warnings.n, 0);
    manifest_free(m);
    m = parse_ok_in(plain_dir, PROCESS_BASE "health: {timeout: 2h, interval: 1m}\n", &warnings);
    assert_diag(&warnings, 4, "health.timeout 2h is not shorter than health.interval 1m");
    diags_clear(&warnings);
    manifest_free(m);

    /* Shorter, defaults, or health: true: no warning. */
    m = parse_ok(PROCESS_BASE "health: {timeout: 4999ms, interval: 5s}\n");
    manifest_free(m);
    m = parse_ok(PROCESS_BASE "health: true\n");
    manifest_free(m);
    m = parse_ok(PROCESS_BASE "health: {path: /}\n");
    manifest_free(m);

    /* A bad duration is an error alone, not compared with the default as well. */
    struct diags errors = {0};
    assert_int_equal(manifest_parse(PROCESS_BASE "health: {timeout: 0}\n",
                                    strlen(PROCESS_BASE "health: {timeout: 0}\n"), plain_dir, &m,
                                    NULL, &errors, &warnings),
                     -EINVAL);
    assert_int_equal(warnings.n, 0);
    assert_diag(&errors, 4, "health.timeout must be longer than 0");
    diags_clear(&errors);
}

/* The files whose presence decides a service: the manifest and the default compose
 * files, and nothing else. */
static void test_file_decides(void **state)
{
    assert_true(manifest_file_decides("service.yaml"));
    assert_true(manifest_file_decides("docker-compose.yml"));
    assert_true(manifest_file_decides("docker-compose.yaml"));
    assert_true(manifest_file_decides("compose.yml"));
    assert_true(manifest_file_decides("compose.yaml"));
    assert_false(manifest_file_decides(""));
    assert_false(manifest_file_decides("service.yml"));
    assert_false(manifest_file_decides("Service.yaml"));
    assert_false(manifest_file_decides("compose.yaml.swp"));
    assert_false(manifest_file_decides("docker-compose.override.yml"));
    assert_false(manifest_file_decides("app.py"));
}

static void test_to_json(void **state)
{
    struct manifest *m =
        parse_ok("name: demo\ndescription: Demo\nports: [\"127.0.0.1:8001:8000\", 9000]\n"
                 "command: [./run, --fast]\nenv: {A: \"1\"}\nstop_timeout: 3s\nrestart: always\n");
    json_t *j = manifest_to_json(m);
    json_t *health = json_object_get(j, "health");

    assert_string_equal(json_string_value(json_object_get(j, "name")), "demo");
    assert_string_equal(json_string_value(json_object_get(j, "description")), "Demo");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "ports"), 0)),
                        "127.0.0.1:8001:8000");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "ports"), 1)),
                        "9000:9000");
    assert_int_equal(json_integer_value(json_object_get(j, "port")), 8001);
    assert_true(json_is_false(json_object_get(j, "gpu_required")));
    assert_string_equal(json_string_value(json_object_get(j, "driver")), "process");
    assert_true(json_is_null(json_object_get(j, "compose_file")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "command"), 1)),
                        "--fast");
    assert_string_equal(json_string_value(json_object_get(j, "workdir")), plain_dir);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "env"), "A")), "1");
    assert_string_equal(json_string_value(json_object_get(health, "path")), "/health");
    assert_int_equal(json_integer_value(json_object_get(health, "port")), 8001);
    assert_int_equal(json_integer_value(json_object_get(health, "interval_ms")), 5000);
    assert_int_equal(json_integer_value(json_object_get(health, "timeout_ms")), 2000);
    assert_int_equal(json_integer_value(json_object_get(health, "start_period_ms")), 300000);
    assert_int_equal(json_integer_value(json_object_get(j, "stop_timeout_ms")), 3000);
    assert_string_equal(json_string_value(json_object_get(j, "restart")), "always");
    assert_string_equal(json_string_value(json_object_get(j, "dir")), plain_dir);
    assert_int_equal(json_integer_value(json_object_get(j, "priority")), 0);
    assert_true(json_is_null(json_object_get(j, "gpu")));
    assert_string_equal(json_string_value(json_object_get(j, "on_demand")), "start");
    assert_int_equal(json_array_size(json_object_get(j, "models")), 0);
    assert_int_equal(json_object_size(json_object_get(j, "model_aliases")), 0);
    assert_true(json_is_null(json_object_get(j, "idle_timeout_ms")));
    assert_true(json_is_null(json_object_get(j, "swap_grace_ms")));
    assert_true(json_is_null(json_object_get(j, "swap_max_wait_ms")));
    assert_true(json_is_null(json_object_get(j, "min_resident_ms")));
    assert_true(json_is_null(json_object_get(j, "swap_drain")));
    assert_int_equal(json_object_size(j), 25);
    json_decref(j);
    manifest_free(m);

    m = parse_ok("name: demo\ncommand: x\nhealth: false\n");
    j = manifest_to_json(m);
    assert_true(json_is_null(json_object_get(j, "port")));
    assert_true(json_is_false(json_object_get(j, "health")));
    assert_int_equal(json_array_size(json_object_get(j, "ports")), 0);
    assert_int_equal(json_object_size(json_object_get(j, "env")), 0);
    json_decref(j);
    manifest_free(m);
}

/* Equal manifests give equal JSON, written or defaulted, and a change shows. */
static void test_to_json_detects_changes(void **state)
{
    struct manifest *a = parse_ok("name: d\ncommand: x\nports: [8000]\n");
    struct manifest *b =
        parse_ok("# same, spelled out\nname: d\ncommand: [\"/bin/sh\", \"-c\", x]\n"
                 "ports: [\"8000:8000/tcp\"]\ndescription: null\nrestart: no\n"
                 "workdir: .\nhealth: {interval: 5s, path: /health}\n"
                 "stop_timeout: 10\ngpu_required: false\n");
    struct manifest *c = parse_ok("name: d\ncommand: x\nports: [8000]\ngpu_required: true\n");
    json_t *ja = manifest_to_json(a), *jb = manifest_to_json(b), *jc = manifest_to_json(c);
    char *sa = json_dumps(ja, JSON_SORT_KEYS | JSON_COMPACT);
    char *sb = json_dumps(jb, JSON_SORT_KEYS | JSON_COMPACT);

    assert_true(json_equal(ja, jb));
    assert_string_equal(sa, sb);
    assert_false(json_equal(ja, jc));
    free(sa);
    free(sb);
    json_decref(ja);
    json_decref(jb);
    json_decref(jc);
    manifest_free(a);
    manifest_free(b);
    manifest_free(c);
}

static char *write_manifest(const char *folder, const char *text, size_t len)
{
    char *dir = path_in(root, folder);
    char *path = path_in(dir, MANIFEST_FILE_NAME);

    mkdir(dir, 0755);
    write_file(path, text, len);
    free(dir);
    return path;
}

static void test_load_ok(void **state)
{
    char *path = write_manifest("load-ok", PROCESS_BASE "workdir: bin\n",
                                strlen(PROCESS_BASE "workdir: bin\n"));
    char *workdir = xasprintf("%s/load-ok/bin", root);
    struct diags errors = {0}, warnings = {0};
    struct manifest *m = NULL;
    char *name = NULL;

    assert_int_equal(manifest_load(path, root, &m, &name, &errors, &warnings), 0);
    assert_string_equal(name, "demo");
    assert_string_equal(m->workdir, workdir);
    assert_int_equal(errors.n, 0);
    manifest_free(m);
    free(name);
    free(workdir);
    free(path);
}

static void test_load_too_big(void **state)
{
    size_t len = MANIFEST_SIZE_MAX + 1;
    char *text = xmalloc(len);
    struct diags errors = {0};
    struct manifest *m = NULL;
    char *path;

    memset(text, '#', len);
    memcpy(text, PROCESS_BASE, strlen(PROCESS_BASE));
    text[strlen(PROCESS_BASE)] = '#';
    path = write_manifest("too-big", text, len);
    assert_true(manifest_load(path, root, &m, NULL, &errors, NULL) < 0);
    assert_null(m);
    assert_diag(&errors, 0, "service.yaml is larger than the limit of 1048576 bytes (1 MiB)");
    diags_clear(&errors);

    /* Exactly 1 MiB is allowed. */
    write_file(path, text, len - 1);
    assert_int_equal(manifest_load(path, root, &m, NULL, &errors, NULL), 0);
    manifest_free(m);
    unlink(path);
    free(path);
    free(text);
}

/* A file may hold more than fstat() said (it grew, or it is a /proc file of size 0): the
 * read buffer grows to take it all. */
static void test_load_more_than_stat_size(void **state)
{
    char comm[64], *expected;
    struct diags errors = {0};
    struct manifest *m = NULL;
    struct stat st;
    FILE *f = fopen("/proc/self/comm", "r");

    if (!f || stat("/proc/self/comm", &st) < 0 || st.st_size != 0) {
        if (f)
            fclose(f);
        skip();
    }
    assert_non_null(fgets(comm, sizeof(comm), f));
    fclose(f);
    comm[strcspn(comm, "\n")] = '\0';
    /* Its text, the program's name, is one YAML scalar: the error quotes all of it. */
    expected = xasprintf("not \"%s\"", comm);
    assert_int_equal(manifest_load("/proc/self/comm", "/", &m, NULL, &errors, NULL), -EINVAL);
    assert_diag(&errors, 1, expected);
    diags_clear(&errors);
    free(expected);
}

static void test_load_symlink_outside(void **state)
{
    char outside[] = "/tmp/nanny-test-outside-XXXXXX";
    char *target, *dir, *link;
    struct diags errors = {0};
    struct manifest *m = NULL;

    assert_non_null(mkdtemp(outside));
    target = path_in(outside, "service.yaml");
    write_file(target, PROCESS_BASE, strlen(PROCESS_BASE));
    dir = path_in(root, "evil");
    assert_int_equal(mkdir(dir, 0755), 0);
    link = path_in(dir, MANIFEST_FILE_NAME);
    assert_int_equal(symlink(target, link), 0);

    assert_true(manifest_load(link, root, &m, NULL, &errors, NULL) < 0);
    assert_null(m);
    assert_diag(&errors, 0, "is a symlink to");
    assert_diag(&errors, 0, "outside the services folder");
    diags_clear(&errors);

    /* A relative symlink that climbs out is caught the same way. */
    unlink(link);
    char *relative = xasprintf("../../%s/service.yaml", outside + 5);
    assert_int_equal(symlink(relative, link), 0);
    assert_true(manifest_load(link, root, &m, NULL, &errors, NULL) < 0);
    assert_diag(&errors, 0, "outside the services folder");
    diags_clear(&errors);

    /* A symlink to a file inside the folder is fine; the service keeps its own folder. */
    char *inside = path_in(dir, "real.yaml");
    write_file(inside, PROCESS_BASE, strlen(PROCESS_BASE));
    unlink(link);
    assert_int_equal(symlink("real.yaml", link), 0);
    assert_int_equal(manifest_load(link, root, &m, NULL, &errors, NULL), 0);
    assert_string_equal(m->dir, dir);
    manifest_free(m);

    /* A dangling one says what it is. */
    unlink(link);
    assert_int_equal(symlink("nowhere.yaml", link), 0);
    assert_true(manifest_load(link, root, &m, NULL, &errors, NULL) < 0);
    assert_diag(&errors, 0, "it is a symlink to a file that does not exist");
    diags_clear(&errors);

    unlink(link);
    unlink(inside);
    rmdir(dir);
    unlink(target);
    rmdir(outside);
    free(inside);
    free(relative);
    free(target);
    free(dir);
    free(link);
}

static void test_load_not_regular(void **state)
{
    char *dir = path_in(root, "fifo");
    char *path = path_in(dir, MANIFEST_FILE_NAME);
    struct diags errors = {0};
    struct manifest *m = NULL;

    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkfifo(path, 0644), 0);
    assert_true(manifest_load(path, root, &m, NULL, &errors, NULL) < 0);
    assert_diag(&errors, 0, "is not a regular file");
    diags_clear(&errors);
    unlink(path);

    assert_int_equal(mkdir(path, 0755), 0);
    assert_true(manifest_load(path, root, &m, NULL, &errors, NULL) < 0);
    assert_diag(&errors, 0, "is not a regular file");
    diags_clear(&errors);
    rmdir(path);

    assert_true(manifest_load(path, root, &m, NULL, &errors, NULL) < 0);
    assert_diag(&errors, 0, "No such file or directory");
    diags_clear(&errors);
    rmdir(dir);
    free(path);
    free(dir);
}

/* Asserts that no diagnostic quotes text (a line of a file outside the services folder). */
static void assert_no_diag_quotes(const struct diags *d, const char *text)
{
    for (size_t i = 0; i < d->n; i++) {
        if (strstr(d->items[i].message, text))
            fail_msg("diagnostic %d quotes \"%s\": %s", d->items[i].line, text,
                     d->items[i].message);
    }
}

/* Loads dir/service.yaml holding text: the manifest must be refused at line as leading
 * outside the services folder, quoting no line of the file outside. */
static void assert_load_outside(const char *dir, const char *text, int line)
{
    char *path = path_in(dir, MANIFEST_FILE_NAME);
    struct diags errors = {0};
    struct manifest *m = NULL;

    write_file(path, text, strlen(text));
    assert_int_equal(manifest_load(path, root, &m, NULL, &errors, NULL), -EINVAL);
    assert_null(m);
    assert_diag(&errors, line, "outside the services folder");
    assert_no_diag_quotes(&errors, "SECRET");
    diags_clear(&errors);
    free(path);
}

/* Loads dir/service.yaml holding text, which must succeed with compose file expected. */
static void assert_load_compose(const char *dir, const char *text, const char *expected)
{
    char *path = path_in(dir, MANIFEST_FILE_NAME);
    struct diags errors = {0};
    struct manifest *m = NULL;

    write_file(path, text, strlen(text));
    assert_int_equal(manifest_load(path, root, &m, NULL, &errors, NULL), 0);
    assert_string_equal(m->compose_file, expected);
    manifest_free(m);
    free(path);
}

/* compose_file and a found compose file are held to the manifest's rule: a path that leads
 * outside the services folder, by "..", an absolute path or a symlink, is refused. */
static void test_load_compose_file_outside(void **state)
{
    char outside[] = "/tmp/nanny-test-outside-XXXXXX";
    char *secret, *dir, *shared, *shared_file, *given, *link, *text;
    const char *secret_text = "services: SECRET-LINE: [\n";

    assert_non_null(mkdtemp(outside));
    secret = path_in(outside, "docker-compose.yml");
    write_file(secret, secret_text, strlen(secret_text));
    dir = path_in(root, "leaky");
    assert_int_equal(mkdir(dir, 0755), 0);

    /* Given: absolute, and climbing out with "..". */
    text = xasprintf("name: leaky\nports: [\"8001:80\"]\ncompose_file: %s\n", secret);
    assert_load_outside(dir, text, 3);
    free(text);
    text = xasprintf("name: leaky\nports: [\"8001:80\"]\ncompose_file: ../../%s\n", secret + 5);
    assert_load_outside(dir, text, 3);
    free(text);

    /* Given: a file of the folder that is a symlink out of it. */
    link = path_in(dir, "linked.yml");
    assert_int_equal(symlink(secret, link), 0);
    assert_load_outside(dir, "name: leaky\nports: [\"8001:80\"]\ncompose_file: linked.yml\n", 3);
    unlink(link);
    free(link);

    /* Found: a default compose file that is a symlink out of the folder, with the driver
     * inferred (the manifest's first line) or explicit (its line). */
    link = path_in(dir, "docker-compose.yml");
    assert_int_equal(symlink(secret, link), 0);
    assert_load_outside(dir, "name: leaky\nports: [\"8001:80\"]\n", 1);
    assert_load_outside(dir, "name: leaky\nports: [\"8001:80\"]\ndriver: compose\n", 3);
    unlink(link);

    /* Inside the services folder is fine, through ".." or a symlink. */
    shared = path_in(root, "_shared");
    assert_int_equal(mkdir(shared, 0755), 0);
    shared_file = path_in(shared, "compose.yml");
    write_file(shared_file, "services: {}\n", 13);
    given = path_in(dir, "../_shared/compose.yml"); /* ".." is the user's to write */
    assert_load_compose(
        dir, "name: leaky\nports: [\"8001:80\"]\ncompose_file: ../_shared/compose.yml\n", given);
    assert_int_equal(symlink("../_shared/compose.yml", link), 0);
    assert_load_compose(dir, "name: leaky\nports: [\"8001:80\"]\n", link);

    /* manifest_parse() holds files to no folder: the manifest is not read from one. */
    {
        struct diags errors = {0};
        struct manifest *m = NULL;
        const char *yaml = "name: leaky\nports: [\"8001:80\"]\n";

        unlink(link);
        assert_int_equal(symlink(secret, link), 0);
        assert_int_equal(manifest_parse(yaml, strlen(yaml), dir, &m, NULL, &errors, NULL), 0);
        manifest_free(m);
    }

    unlink(link);
    free(link);
    link = path_in(dir, MANIFEST_FILE_NAME);
    unlink(link);
    free(link);
    rmdir(dir);
    unlink(shared_file);
    rmdir(shared);
    unlink(secret);
    rmdir(outside);
    free(shared_file);
    free(given);
    free(shared);
    free(secret);
    free(dir);
}

static void test_env_pass(void **state)
{
    struct manifest *m = parse_ok(PROCESS_BASE "env_pass: [HF_TOKEN, CUDA_VISIBLE_DEVICES]\n");
    json_t *j;

    assert_string_equal(m->env_pass[0], "HF_TOKEN");
    assert_string_equal(m->env_pass[1], "CUDA_VISIBLE_DEVICES");
    assert_null(m->env_pass[2]);
    j = manifest_to_json(m);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "env_pass"), 1)),
                        "CUDA_VISIBLE_DEVICES");
    json_decref(j);
    manifest_free(m);
    m = parse_ok(PROCESS_BASE "env_pass: []\n");
    assert_null(m->env_pass[0]);
    manifest_free(m);

    assert_fails(PROCESS_BASE "env_pass: HF_TOKEN\n", 4,
                 "env_pass must be a list of variable names");
    assert_fails(PROCESS_BASE "env_pass: {A: 1}\n", 4, "env_pass must be a list of variable names");
    assert_fails(PROCESS_BASE "env_pass:\n  - A\n  - 1X\n", 6,
                 "env_pass[1]: \"1X\" is not a valid variable name");
    assert_fails(PROCESS_BASE "env_pass: [A, \"B=C\"]\n", 4,
                 "env_pass[1]: \"B=C\" is not a valid variable name");
    assert_fails(PROCESS_BASE "env_pass:\n  - A\n  - A\n", 6, "env_pass[1]: \"A\" is listed twice");
    assert_fails(PROCESS_BASE "env_pass: [[A]]\n", 4, "env_pass");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_process_defaults),
        cmocka_unit_test(test_full_manifest),
        cmocka_unit_test(test_compose_inferred),
        cmocka_unit_test(test_compose_file_order),
        cmocka_unit_test(test_compose_file_given),
        cmocka_unit_test(test_command_string_is_shell),
        cmocka_unit_test(test_env_list_form),
        cmocka_unit_test(test_port_forms),
        cmocka_unit_test(test_health_variants),
        cmocka_unit_test(test_restart_values),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_gpu_needs),
        cmocka_unit_test(test_unknown_keys_are_warnings),
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test(test_error_syntax),
        cmocka_unit_test(test_error_empty),
        cmocka_unit_test(test_error_not_a_mapping),
        cmocka_unit_test(test_error_missing_name),
        cmocka_unit_test(test_error_bad_name),
        cmocka_unit_test(test_error_bad_port_string),
        cmocka_unit_test(test_error_port_range),
        cmocka_unit_test(test_error_port_out_of_range),
        cmocka_unit_test(test_error_port_twice_in_one_manifest),
        cmocka_unit_test(test_error_bad_duration),
        cmocka_unit_test(test_error_unknown_driver),
        cmocka_unit_test(test_error_process_without_command),
        cmocka_unit_test(test_error_compose_without_file),
        cmocka_unit_test(test_error_cannot_infer_driver),
        cmocka_unit_test(test_error_wrong_types),
        cmocka_unit_test(test_error_health_needs_port),
        cmocka_unit_test(test_error_duplicate_key),
        cmocka_unit_test(test_error_caps),
        cmocka_unit_test(test_many_errors_at_once),
        cmocka_unit_test(test_error_value_sizes),
        cmocka_unit_test(test_error_env_command_total),
        cmocka_unit_test(test_errors_capped),
        cmocka_unit_test(test_health_timeout_warning),
        cmocka_unit_test(test_file_decides),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_env_pass),
        cmocka_unit_test(test_to_json_detects_changes),
        cmocka_unit_test(test_load_ok),
        cmocka_unit_test(test_load_too_big),
        cmocka_unit_test(test_load_more_than_stat_size),
        cmocka_unit_test(test_load_symlink_outside),
        cmocka_unit_test(test_load_not_regular),
        cmocka_unit_test(test_load_compose_file_outside),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
