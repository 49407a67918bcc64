/* Unit tests for the daemon's configuration: flags, environment and the config file. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "lib/alloc.h"

static char err[1024];

static int load(struct config *c, int argc, char **argv)
{
    err[0] = '\0';
    return config_load(c, argc, argv, err, sizeof(err));
}

static int setup(void **state)
{
    unsetenv("NANNY_LISTEN");
    unsetenv("NANNY_SERVICES");
    unsetenv("NANNY_STATE_DIR");
    unsetenv("NANNY_CONFIG");
    unsetenv("NANNY_TRUSTED_PROXIES");
    unsetenv("NANNY_NVML_LIBRARY");
    unsetenv("NANNY_NVIDIA_SMI");
    return 0;
}

/* Writes text to a fresh temporary file; the caller unlinks it. */
static char *temp_file(const char *text)
{
    char *path = xstrdup("/tmp/nanny-config-XXXXXX.yaml");
    int fd = mkstemps(path, 5);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_defaults(void **state)
{
    struct config c;
    char *argv[] = {"serve", NULL};

    assert_int_equal(load(&c, 1, argv), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_string_equal(c.services_dir, "./services");
    assert_non_null(c.state_dir);
    assert_null(c.config_file);
    assert_int_equal(c.log_level, LOG_INFO);
    assert_false(c.insecure);
    assert_int_equal(c.gpu_conflict, GPU_CONFLICT_REFUSE);
    assert_int_equal(c.swap_grace_ms, 5 * 60 * 1000);
    assert_int_equal(c.swap_max_wait_ms, 30 * 1000);
    assert_false(c.swap_drain);
    assert_int_equal(c.min_resident_ms, 0);
    assert_int_equal(c.gpu_queue_max, 256);
    assert_int_equal(c.proxy_connect_timeout_ms, 5000);
    assert_int_equal(c.proxy_read_timeout_ms, 10 * 60 * 1000);
    assert_int_equal(c.client_timeout_ms, 10000);
    config_done(&c);
}

static void test_flags(void **state)
{
    struct config c;
    char *argv[] = {"serve",       "--listen",    "[::1]:9000",  "-s",    "/srv/x",
                    "--state-dir", "/var/tmp/st", "--log-level", "debug", NULL};

    assert_int_equal(load(&c, 9, argv), 0);
    assert_string_equal(c.listen, "[::1]:9000");
    assert_string_equal(c.services_dir, "/srv/x");
    assert_string_equal(c.state_dir, "/var/tmp/st");
    assert_int_equal(c.log_level, LOG_DEBUG);
    config_done(&c);
}

static void test_env_and_flag_precedence(void **state)
{
    struct config c;
    char *argv_none[] = {"serve", NULL};
    char *argv_flag[] = {"serve", "--listen", "127.0.0.1:7001", NULL};

    setenv("NANNY_LISTEN", "127.0.0.1:7000", 1);
    setenv("NANNY_SERVICES", "/env/services", 1);
    assert_int_equal(load(&c, 1, argv_none), 0);
    assert_string_equal(c.listen, "127.0.0.1:7000");
    assert_string_equal(c.services_dir, "/env/services");
    config_done(&c);
    assert_int_equal(load(&c, 3, argv_flag), 0);
    assert_string_equal(c.listen, "127.0.0.1:7001");
    assert_string_equal(c.services_dir, "/env/services");
    config_done(&c);
}

static void test_bad_flags(void **state)
{
    static char *cases[][4] = {
        {"serve", "--listen", "nohost", NULL},  {"serve", "--listen", "1.2.3.4:99999", NULL},
        {"serve", "--log-level", "loud", NULL}, {"serve", "--bogus", NULL, NULL},
        {"serve", "extra-arg", NULL, NULL},     {"serve", "--listen", NULL, NULL},
        {"serve", "--services", "", NULL},      {"serve", "--log-format", "xml", NULL},
    };
    struct config c;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int argc = 0;
        while (cases[i][argc])
            argc++;
        assert_int_equal(load(&c, argc, cases[i]), -EINVAL);
        assert_true(strlen(err) > 0);
        config_done(&c);
    }
    /* The message names the flag. */
    assert_int_equal(load(&c, 3, cases[0]), -EINVAL);
    assert_non_null(strstr(err, "--listen"));
    config_done(&c);
}

static void test_non_loopback_needs_insecure(void **state)
{
    struct config c;
    char *argv[] = {"serve", "--listen", "0.0.0.0:8080", NULL};
    char *argv_ok[] = {"serve", "--listen", "0.0.0.0:8080", "--insecure", NULL};

    assert_int_equal(load(&c, 3, argv), -EINVAL);
    assert_non_null(strstr(err, "--insecure"));
    config_done(&c);
    assert_int_equal(load(&c, 4, argv_ok), 0);
    assert_true(c.insecure);
    config_done(&c);
}

static void test_file(void **state)
{
    char *path = temp_file("listen: 127.0.0.1:7100\n"
                           "services: svc\n"
                           "log_level: warning\n"
                           "gpu_conflict: preempt\n"
                           "allowed_hosts: [box.local, gpu1]\n"
                           "stop_services_on_exit: true\n"
                           "log_max_size: 1048576\n"
                           "log_max_files: 5\n"
                           "future_knob: 1\n"
                           "swap_grace: 1m\n"
                           "swap_max_wait: 5s\n"
                           "swap_drain: true\n"
                           "min_resident: 2m\n"
                           "gpu_queue_max: 8\n"
                           "proxy_connect_timeout: 250ms\n"
                           "proxy_read_timeout: 1h\n"
                           "client_timeout: 75s\n");
    char *argv[] = {"serve", "--config", path, NULL};
    struct config c;

    assert_int_equal(load(&c, 3, argv), 0);
    assert_string_equal(c.listen, "127.0.0.1:7100");
    assert_string_equal(c.services_dir, "/tmp/svc"); /* relative to the file */
    assert_int_equal(c.log_level, LOG_WARNING);
    assert_int_equal(c.gpu_conflict, GPU_CONFLICT_PREEMPT);
    assert_string_equal(c.allowed_hosts[0], "box.local");
    assert_string_equal(c.allowed_hosts[1], "gpu1");
    assert_null(c.allowed_hosts[2]);
    assert_true(c.stop_services_on_exit);
    assert_int_equal(c.log_max_bytes, 1048576);
    assert_int_equal(c.log_max_files, 5);
    assert_int_equal(c.swap_grace_ms, 60000);
    assert_int_equal(c.swap_max_wait_ms, 5000);
    assert_true(c.swap_drain);
    assert_int_equal(c.min_resident_ms, 120000);
    assert_int_equal(c.gpu_queue_max, 8);
    assert_int_equal(c.proxy_connect_timeout_ms, 250);
    assert_int_equal(c.proxy_read_timeout_ms, 3600000);
    assert_int_equal(c.client_timeout_ms, 75000);
    /* The unknown key is a warning with its line, kept for the daemon's log. */
    assert_non_null(c.warnings);
    assert_non_null(strstr(c.warnings[0], ":9: "));
    assert_non_null(strstr(c.warnings[0], "future_knob"));
    assert_null(c.warnings[1]);
    config_done(&c);

    /* The environment and flags win over the file. */
    setenv("NANNY_LISTEN", "127.0.0.1:7200", 1);
    assert_int_equal(load(&c, 3, argv), 0);
    assert_string_equal(c.listen, "127.0.0.1:7200");
    config_done(&c);
    unlink(path);
    free(path);
}

static void test_file_errors_name_file_and_line(void **state)
{
    static const struct {
        const char *text;
        const char *line;
    } cases[] = {
        {"listen: [unclosed\n", ":2:"},
        {"log_level: loud\n", ":1:"},
        {"a: 1\ninsecure: maybe\n", ":2:"},
        {"gpu_conflict: share\n", ":1:"},
        {"listen: nope\n", ":1:"},
        {"- a list\n", ":1:"},
        {"allowed_hosts: {a: 1}\n", ":1:"},
        {"log_max_size: 10\n", ":1:"},
        {"log_max_files: many\n", ":1:"},
        {"swap_grace: soon\n", ":1:"},
        {"swap_drain: maybe\n", ":1:"},
        {"gpu_queue_max: -1\n", ":1:"},
        {"a: 1\nproxy_read_timeout: 0s\n", ":2:"},
        {"min_resident: [1]\n", ":1:"},
        {"proxy_connect_timeout: x\n", ":1:"},
        {"gpu_queue_max: 0\n", ":1:"},
        {"client_timeout: 500ms\n", ":1:"},
    };
    struct config c;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = temp_file(cases[i].text);
        char *argv[] = {"serve", "--config", path, NULL};

        assert_int_equal(load(&c, 3, argv), -EINVAL);
        if (!strstr(err, path) || !strstr(err, cases[i].line))
            fail_msg("case %zu: '%s' lacks the file or %s", i, err, cases[i].line);
        config_done(&c);
        unlink(path);
        free(path);
    }
}

static void test_file_with_only_comments_means_defaults(void **state)
{
    char *path = temp_file("# listen: 127.0.0.1:9999\n# every line commented out\n");
    char *argv[] = {"serve", "--config", path, NULL};
    struct config c;

    assert_int_equal(load(&c, 3, argv), 0);
    assert_string_equal(c.listen, CONFIG_DEFAULT_LISTEN);
    config_done(&c);
    unlink(path);
    free(path);
}

static void test_missing_file(void **state)
{
    char *argv[] = {"serve", "--config", "/nonexistent/nanny.yaml", NULL};
    struct config c;

    assert_int_equal(load(&c, 3, argv), -EINVAL);
    assert_non_null(strstr(err, "/nonexistent/nanny.yaml"));
    config_done(&c);
}

/* --- gpus, nvml_library, nvidia_smi ----------------------------------------------------- */

static void test_gpus(void **state)
{
    char *path = temp_file("gpus:\n"
                           "  - {index: 1, memory: 24GiB}\n"
                           "  - index: 0\n"
                           "    name: A100\n"
                           "    memory: 80GiB\n");
    char *argv[] = {"serve", "--config", path, NULL};
    char *argv_none[] = {"serve", NULL};
    struct config c;

    assert_int_equal(load(&c, 1, argv_none), 0);
    assert_null(c.gpus);
    assert_int_equal(c.n_gpus, 0);
    config_done(&c);

    assert_int_equal(load(&c, 3, argv), 0);
    assert_int_equal(c.n_gpus, 2);
    assert_int_equal(c.gpus[0].index, 0); /* sorted by index */
    assert_string_equal(c.gpus[0].name, "A100");
    assert_true(c.gpus[0].memory == 80ULL << 30);
    assert_int_equal(c.gpus[1].index, 1);
    assert_string_equal(c.gpus[1].name, "GPU 1");
    assert_true(c.gpus[1].memory == 24ULL << 30);
    config_done(&c);
    unlink(path);
    free(path);
}

static void test_gpus_refused(void **state)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"gpus: 2\n", ":1: gpus must be a list of {index, name, memory}"},
        {"gpus:\n  - {index: 0, memory: 1GiB}\n  - {name: x, memory: 1GiB}\n",
         ":3: gpus[1] needs index"},
        {"gpus:\n  - {index: 64, memory: 1GiB}\n", ":2: gpus[0].index"},
        {"gpus:\n  - {index: 0, memory: 1GiB}\n  - {index: 0, memory: 2GiB}\n",
         ":3: gpus[1].index is 0, as gpus[0].index is already"},
        {"gpus:\n  - {index: 0}\n", ":2: gpus[0] needs memory"},
        {"gpus:\n  - {index: 0, memory: 0}\n", ":2: gpus[0].memory must be more than 0"},
        {"gpus:\n  - {index: 0, memory: lots}\n", ":2: gpus[0].memory"},
        {"gpus:\n  - {index: 0, memory: 1GiB, vram: 2}\n", ":2:"},
        {"gpus:\n  - 0\n", ":2:"},
        {"gpus:\n  - {index: 1, memory: 1GiB}\n",
         ":1: gpus must number the GPUs 0 to 0, as nvidia-smi does: 0 is missing"},
        {"gpus:\n  - {index: 0, memory: 1GiB}\n  - {index: 2, memory: 1GiB}\n",
         ":1: gpus must number the GPUs 0 to 1, as nvidia-smi does: 1 is missing"},
    };
    struct config c;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = temp_file(cases[i].text);
        char *argv[] = {"serve", "--config", path, NULL};

        assert_int_equal(load(&c, 3, argv), -EINVAL);
        if (!strstr(err, path) || !strstr(err, cases[i].message))
            fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].message);
        config_done(&c);
        unlink(path);
        free(path);
    }
}

static void test_gpus_at_most_64(void **state)
{
    char text[8192] = "gpus:\n";
    char *path, *argv[] = {"serve", "--config", NULL, NULL};
    struct config c;

    for (int i = 0; i < 65; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text),
                 "  - {index: %d, memory: 1GiB}\n", i);
    path = temp_file(text);
    argv[2] = path;
    assert_int_equal(load(&c, 3, argv), -EINVAL);
    assert_non_null(strstr(err, "more than 64"));
    config_done(&c);
    unlink(path);
    free(path);
}

static void test_gpu_probes(void **state)
{
    char *path = temp_file("nvml_library: lib/libnvidia-ml.so.1\nnvidia_smi: \"\"\n");
    char *argv_none[] = {"serve", NULL};
    char *argv_file[] = {"serve", "--config", path, NULL};
    char *argv_flag[] = {"serve", "--nvml-library", "", "--nvidia-smi", "/x/smi", NULL};
    char *expect = xasprintf("%.*s/lib/libnvidia-ml.so.1", (int)(strrchr(path, '/') - path), path);
    struct config c;

    assert_int_equal(load(&c, 1, argv_none), 0);
    assert_string_equal(c.nvml_library, "libnvidia-ml.so.1");
    assert_string_equal(c.nvidia_smi, "nvidia-smi");
    config_done(&c);

    /* A relative path is the config file's; "" switches a probe off. */
    assert_int_equal(load(&c, 3, argv_file), 0);
    assert_string_equal(c.nvml_library, expect);
    assert_string_equal(c.nvidia_smi, "");
    config_done(&c);

    /* The environment: set but empty counts. */
    setenv("NANNY_NVML_LIBRARY", "", 1);
    setenv("NANNY_NVIDIA_SMI", "/opt/fake/nvidia-smi", 1);
    assert_int_equal(load(&c, 1, argv_none), 0);
    assert_string_equal(c.nvml_library, "");
    assert_string_equal(c.nvidia_smi, "/opt/fake/nvidia-smi");
    config_done(&c);

    /* Flags win over both. */
    setenv("NANNY_CONFIG", path, 1);
    assert_int_equal(load(&c, 5, argv_flag), 0);
    assert_string_equal(c.nvml_library, "");
    assert_string_equal(c.nvidia_smi, "/x/smi");
    config_done(&c);
    unsetenv("NANNY_CONFIG");
    unsetenv("NANNY_NVML_LIBRARY");
    unsetenv("NANNY_NVIDIA_SMI");
    unlink(path);
    free(path);
    free(expect);
}

/* --- trusted_proxies ------------------------------------------------------------------- */

static void test_trusted_proxies_sources(void **state)
{
    char *path = temp_file("trusted_proxies: [127.0.0.1, \"10.0.0.0/8\", \"::1\"]\n");
    char *file_argv[] = {"serve", "--config", path, NULL};
    char *flag_argv[] = {
        "serve", "--config", path, "--trusted-proxies", " 192.168.0.0/16 ,fd00::/8", NULL};
    char *none_argv[] = {"serve", "--config", path, "--trusted-proxies", "", NULL};
    char *default_argv[] = {"serve", NULL};
    struct config c;
    char buf[80];

    assert_int_equal(load(&c, 1, default_argv), 0);
    assert_int_equal(c.trusted_proxies_n, 0);
    config_done(&c);

    assert_int_equal(load(&c, 3, file_argv), 0);
    assert_int_equal(c.trusted_proxies_n, 3);
    assert_string_equal(cidr_format(&c.trusted_proxies[0], buf, sizeof(buf)), "127.0.0.1/32");
    assert_string_equal(cidr_format(&c.trusted_proxies[1], buf, sizeof(buf)), "10.0.0.0/8");
    assert_string_equal(cidr_format(&c.trusted_proxies[2], buf, sizeof(buf)), "::1/128");
    config_done(&c);

    /* The environment wins over the file, the flag over both. */
    setenv("NANNY_TRUSTED_PROXIES", "10.1.0.0/16", 1);
    assert_int_equal(load(&c, 3, file_argv), 0);
    assert_int_equal(c.trusted_proxies_n, 1);
    assert_string_equal(cidr_format(&c.trusted_proxies[0], buf, sizeof(buf)), "10.1.0.0/16");
    config_done(&c);
    assert_int_equal(load(&c, 5, flag_argv), 0);
    assert_int_equal(c.trusted_proxies_n, 2);
    assert_string_equal(cidr_format(&c.trusted_proxies[1], buf, sizeof(buf)), "fd00::/8");
    config_done(&c);
    assert_int_equal(load(&c, 5, none_argv), 0);
    assert_int_equal(c.trusted_proxies_n, 0);
    assert_null(c.trusted_proxies);
    config_done(&c);
    unsetenv("NANNY_TRUSTED_PROXIES");
    unlink(path);
    free(path);
}

static void test_trusted_proxies_refused(void **state)
{
    static const struct {
        const char *value, *names;
    } flags[] = {
        {"nope", "'nope'"},        {"127.0.0.1,10.0.0.300/8", "'10.0.0.300/8'"},
        {"10.0.0.0/33", "prefix"}, {"10.0.0.1/8", "'10.0.0.1/8'"},
        {"127.0.0.1,", "empty"},   {"127.0.0.1,,::1", "empty"},
        {"[::1]", "'[::1]'"},      {"localhost", "'localhost'"},
    };
    static const struct {
        const char *text, *line, *names;
    } files[] = {
        {"trusted_proxies:\n  - 127.0.0.1\n  - 10.0.0.300/8\n", ":3:", "'10.0.0.300/8'"},
        {"listen: 127.0.0.1:0\ntrusted_proxies: [\"::1\", \"::1/200\"]\n", ":2:", "'::1/200'"},
        {"trusted_proxies: 127.0.0.1\n", ":1:", "list"},
        {"trusted_proxies:\n  - [a]\n", ":2:", "trusted_proxies[0]"},
    };
    struct config c;

    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        char *argv[] = {"serve", "--trusted-proxies", (char *)flags[i].value, NULL};
        assert_int_equal(load(&c, 3, argv), -EINVAL);
        if (!strstr(err, "--trusted-proxies") || !strstr(err, flags[i].names))
            fail_msg("flag '%s': '%s'", flags[i].value, err);
        config_done(&c);
    }
    setenv("NANNY_TRUSTED_PROXIES", "10.0.0.0/8, bad", 1);
    {
        char *argv[] = {"serve", NULL};
        assert_int_equal(load(&c, 1, argv), -EINVAL);
        assert_non_null(strstr(err, "NANNY_TRUSTED_PROXIES"));
        assert_non_null(strstr(err, "'bad'"));
        config_done(&c);
    }
    unsetenv("NANNY_TRUSTED_PROXIES");
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *path = temp_file(files[i].text);
        char *argv[] = {"serve", "--config", path, NULL};
        assert_int_equal(load(&c, 3, argv), -EINVAL);
        if (!strstr(err, path) || !strstr(err, files[i].line) || !strstr(err, files[i].names))
            fail_msg("file case %zu: '%s'", i, err);
        config_done(&c);
        unlink(path);
        free(path);
    }
}

/* --- docker_host and compose_command ---------------------------------------------------- */

/* The variables these tests set: saved before each test, restored after it. */
static const char *const docker_vars[] = {"DOCKER_HOST", "NANNY_DOCKER_HOST",
                                          "NANNY_COMPOSE_COMMAND"};
#define N_DOCKER_VARS (sizeof(docker_vars) / sizeof(docker_vars[0]))

static int setup_docker(void **state)
{
    char **saved = xcalloc(N_DOCKER_VARS, sizeof(*saved));

    for (size_t i = 0; i < N_DOCKER_VARS; i++) {
        const char *v = getenv(docker_vars[i]);
        saved[i] = v ? xstrdup(v) : NULL;
        unsetenv(docker_vars[i]);
    }
    *state = saved;
    return setup(state);
}

static int teardown_docker(void **state)
{
    char **saved = *state;

    for (size_t i = 0; i < N_DOCKER_VARS; i++) {
        if (saved[i])
            setenv(docker_vars[i], saved[i], 1);
        else
            unsetenv(docker_vars[i]);
        free(saved[i]);
    }
    free(saved);
    return 0;
}

/* prefix, then a path of n characters: "/" and 'a's. */
static char *long_path(const char *prefix, size_t n)
{
    size_t len = strlen(prefix);
    char *s = xmalloc(len + n + 1);

    memcpy(s, prefix, len);
    s[len] = '/';
    memset(s + len + 1, 'a', n - 1);
    s[len + n] = '\0';
    return s;
}

/* Loads with the one flag given and returns the result (err holds the message). */
static int load_flag(struct config *c, const char *flag, const char *value)
{
    char *argv[] = {"serve", (char *)flag, (char *)value, NULL};

    return load(c, 3, argv);
}

/* The engine's socket: $DOCKER_HOST when it is unix://, else /var/run/docker.sock. */
static void test_docker_host_default(void **state)
{
    static const struct {
        const char *docker_host; /* NULL: unset */
        const char *expected;
    } cases[] = {
        {NULL, CONFIG_DEFAULT_DOCKER_HOST},
        {"unix:///run/user/1000/docker.sock", "/run/user/1000/docker.sock"},
        {"tcp://127.0.0.1:2375", CONFIG_DEFAULT_DOCKER_HOST},
        {"unix://relative.sock", CONFIG_DEFAULT_DOCKER_HOST},
        {"ssh://me@box", CONFIG_DEFAULT_DOCKER_HOST},
    };
    char *argv[] = {"serve", NULL};
    struct config c;

    assert_string_equal(CONFIG_DEFAULT_DOCKER_HOST, "/var/run/docker.sock");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].docker_host)
            setenv("DOCKER_HOST", cases[i].docker_host, 1);
        else
            unsetenv("DOCKER_HOST");
        assert_int_equal(load(&c, 1, argv), 0);
        assert_string_equal(c.docker_host, cases[i].expected);
        assert_null(c.compose_command); /* found at start */
        config_done(&c);
    }
}

/* The file, then NANNY_DOCKER_HOST, then --docker-host; DOCKER_HOST is only the default. */
static void test_docker_host_sources(void **state)
{
    char *path = temp_file("docker_host: unix:///srv/file.sock\n");
    char *plain = temp_file("docker_host: /srv/plain.sock\n");
    char *argv_file[] = {"serve", "--config", path, NULL};
    char *argv_plain[] = {"serve", "--config", plain, NULL};
    char *argv_flag[] = {"serve", "--config", path, "--docker-host", "unix:///srv/flag.sock", NULL};
    char *max = long_path("", 107);
    struct config c;

    setenv("DOCKER_HOST", "unix:///srv/default.sock", 1);
    assert_int_equal(load(&c, 3, argv_file), 0);
    assert_string_equal(c.docker_host, "/srv/file.sock");
    config_done(&c);
    assert_int_equal(load(&c, 3, argv_plain), 0);
    assert_string_equal(c.docker_host, "/srv/plain.sock");
    config_done(&c);

    setenv("NANNY_DOCKER_HOST", "/srv/env.sock", 1);
    assert_int_equal(load(&c, 3, argv_file), 0);
    assert_string_equal(c.docker_host, "/srv/env.sock");
    config_done(&c);
    setenv("NANNY_DOCKER_HOST", "unix:///srv/env2.sock", 1);
    assert_int_equal(load(&c, 3, argv_file), 0);
    assert_string_equal(c.docker_host, "/srv/env2.sock");
    config_done(&c);

    assert_int_equal(load(&c, 5, argv_flag), 0);
    assert_string_equal(c.docker_host, "/srv/flag.sock");
    config_done(&c);
    assert_int_equal(load_flag(&c, "--docker-host", "/run/docker.sock"), 0);
    assert_string_equal(c.docker_host, "/run/docker.sock");
    config_done(&c);

    /* 107 characters fit a unix socket address (108 with its NUL). */
    assert_int_equal(load_flag(&c, "--docker-host", max), 0);
    assert_string_equal(c.docker_host, max);
    config_done(&c);

    unlink(path);
    unlink(plain);
    free(path);
    free(plain);
    free(max);
}

/* Only local unix sockets: tcp://, relative paths and paths too long for a socket address
 * are refused, naming the flag, the variable or the file and line. */
static void test_docker_host_refused(void **state)
{
    char *too_long = long_path("", 108), *too_long_url = long_path("unix://", 108);
    const char *bad[] = {"tcp://127.0.0.1:2375",
                         "relative/docker.sock",
                         "unix://relative.sock",
                         "",
                         too_long,
                         too_long_url};
    struct config c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(load_flag(&c, "--docker-host", bad[i]), -EINVAL);
        if (!strstr(err, "--docker-host"))
            fail_msg("'%s': '%s' does not name the flag", bad[i], err);
        config_done(&c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (!*bad[i])
            continue; /* an empty variable is as good as unset */
        setenv("NANNY_DOCKER_HOST", bad[i], 1);
        assert_int_equal(load(&c, 1, (char *[]){"serve", NULL}), -EINVAL);
        if (!strstr(err, "NANNY_DOCKER_HOST"))
            fail_msg("'%s': '%s' does not name the variable", bad[i], err);
        config_done(&c);
    }
    unsetenv("NANNY_DOCKER_HOST");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *text = xasprintf("listen: 127.0.0.1:8080\ndocker_host: \"%s\"\n", bad[i]);
        char *path = temp_file(text);
        char *argv[] = {"serve", "--config", path, NULL};

        assert_int_equal(load(&c, 3, argv), -EINVAL);
        if (!strstr(err, path) || !strstr(err, ":2:") || !strstr(err, "docker_host"))
            fail_msg("'%s': '%s' lacks the file, line 2 or the key", bad[i], err);
        config_done(&c);
        unlink(path);
        free(path);
        free(text);
    }
    free(too_long);
    free(too_long_url);
}

/* The file, then NANNY_COMPOSE_COMMAND, then --compose-command. */
static void test_compose_command_sources(void **state)
{
    char *path = temp_file("compose_command: docker compose\n");
    char *argv_file[] = {"serve", "--config", path, NULL};
    char *argv_flag[] = {"serve", "--config", path, "--compose-command", "podman compose", NULL};
    struct config c;

    assert_int_equal(load(&c, 3, argv_file), 0);
    assert_string_equal(c.compose_command, "docker compose");
    config_done(&c);
    setenv("NANNY_COMPOSE_COMMAND", "docker-compose", 1);
    assert_int_equal(load(&c, 3, argv_file), 0);
    assert_string_equal(c.compose_command, "docker-compose");
    config_done(&c);
    assert_int_equal(load(&c, 5, argv_flag), 0);
    assert_string_equal(c.compose_command, "podman compose");
    config_done(&c);
    unlink(path);
    free(path);
}

/* An empty or blank compose command names no program: refused where it came from. */
static void test_compose_command_refused(void **state)
{
    static const char *const blank[] = {"", " ", "    "};
    struct config c;

    for (size_t i = 0; i < sizeof(blank) / sizeof(blank[0]); i++) {
        char *text = xasprintf("services: .\ncompose_command: \"%s\"\n", blank[i]);
        char *path = temp_file(text);
        char *argv[] = {"serve", "--config", path, NULL};

        assert_int_equal(load_flag(&c, "--compose-command", blank[i]), -EINVAL);
        if (!strstr(err, "--compose-command"))
            fail_msg("'%s': '%s' does not name the flag", blank[i], err);
        config_done(&c);

        if (*blank[i]) { /* an empty variable is as good as unset */
            setenv("NANNY_COMPOSE_COMMAND", blank[i], 1);
            assert_int_equal(load(&c, 1, (char *[]){"serve", NULL}), -EINVAL);
            if (!strstr(err, "NANNY_COMPOSE_COMMAND"))
                fail_msg("'%s': '%s' does not name the variable", blank[i], err);
            config_done(&c);
            unsetenv("NANNY_COMPOSE_COMMAND");
        }

        assert_int_equal(load(&c, 3, argv), -EINVAL);
        if (!strstr(err, path) || !strstr(err, ":2:") || !strstr(err, "compose_command"))
            fail_msg("'%s': '%s' lacks the file, line 2 or the key", blank[i], err);
        config_done(&c);
        unlink(path);
        free(path);
        free(text);
    }
}

/* Tabs are blank too: the compose driver splits the command at spaces and tabs, so a
 * command of tabs names no program either. */
static void test_compose_command_of_tabs_is_blank(void **state)
{
    static const char *const blank[] = {"\t", " \t "};
    struct config c;

    for (size_t i = 0; i < sizeof(blank) / sizeof(blank[0]); i++) {
        int r = load_flag(&c, "--compose-command", blank[i]);

        config_done(&c);
        if (r != -EINVAL)
            fail_msg("--compose-command '%s' is taken (%d), though it names no program", blank[i],
                     r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_flags, setup),
        cmocka_unit_test_setup(test_env_and_flag_precedence, setup),
        cmocka_unit_test_setup(test_bad_flags, setup),
        cmocka_unit_test_setup(test_non_loopback_needs_insecure, setup),
        cmocka_unit_test_setup(test_file, setup),
        cmocka_unit_test_setup(test_file_errors_name_file_and_line, setup),
        cmocka_unit_test_setup(test_file_with_only_comments_means_defaults, setup),
        cmocka_unit_test_setup(test_missing_file, setup),
        cmocka_unit_test_setup(test_gpus, setup),
        cmocka_unit_test_setup(test_gpus_refused, setup),
        cmocka_unit_test_setup(test_gpus_at_most_64, setup),
        cmocka_unit_test_setup(test_gpu_probes, setup),
        cmocka_unit_test_setup(test_trusted_proxies_sources, setup),
        cmocka_unit_test_setup(test_trusted_proxies_refused, setup),
        cmocka_unit_test_setup_teardown(test_docker_host_default, setup_docker, teardown_docker),
        cmocka_unit_test_setup_teardown(test_docker_host_sources, setup_docker, teardown_docker),
        cmocka_unit_test_setup_teardown(test_docker_host_refused, setup_docker, teardown_docker),
        cmocka_unit_test_setup_teardown(test_compose_command_sources, setup_docker,
                                        teardown_docker),
        cmocka_unit_test_setup_teardown(test_compose_command_refused, setup_docker,
                                        teardown_docker),
        cmocka_unit_test_setup_teardown(test_compose_command_of_tabs_is_blank, setup_docker,
                                        teardown_docker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
