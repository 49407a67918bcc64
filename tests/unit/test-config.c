/* Unit tests for the daemon's configuration: flags, environment and the config file. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

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
                           "future_knob: 1\n");
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
        {"listen: [unclosed\n", ":2:"},     {"log_level: loud\n", ":1:"},
        {"a: 1\ninsecure: maybe\n", ":2:"}, {"gpu_conflict: share\n", ":1:"},
        {"listen: nope\n", ":1:"},          {"- a list\n", ":1:"},
        {"allowed_hosts: {a: 1}\n", ":1:"}, {"log_max_size: 10\n", ":1:"},
        {"log_max_files: many\n", ":1:"},
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
