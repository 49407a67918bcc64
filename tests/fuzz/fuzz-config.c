/* libFuzzer target for the daemon's configuration: the input is a config file, optionally
 * followed by a NUL and command-line arguments separated by NULs (the values of --listen,
 * --log-max-size...). config_load() reads the file through /proc/self/fd (a memfd, so
 * that nothing touches the disk) exactly as it reads --config FILE: any bytes must give a
 * configuration or an error message, never a crash, a hang or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/config.h"

#define ARGS_MAX 16

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int config_fd = -1;
static char config_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const env[] = {"NANNY_CONFIG",          "NANNY_LISTEN",
                                      "NANNY_SERVICES",        "NANNY_STATE_DIR",
                                      "NANNY_COMPOSE_COMMAND", "NANNY_DOCKER_HOST"};

    (void)argc;
    (void)argv;
    for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
        unsetenv(env[i]);
    config_fd = memfd_create("fuzz-config.yaml", MFD_CLOEXEC);
    if (config_fd < 0)
        abort();
    snprintf(config_path, sizeof(config_path), "/proc/self/fd/%d", config_fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *end = memchr(data, '\0', size);
    size_t file_len = end ? (size_t)(end - (const char *)data) : size;
    char *argv[3 + ARGS_MAX + 1] = {"serve", "--config", config_path};
    int argc = 3;
    char *args = NULL, err[512];
    struct config c;

    if (size > CONFIG_SIZE_MAX + 4096)
        return 0;
    if (ftruncate(config_fd, 0) < 0 || pwrite(config_fd, data, file_len, 0) != (ssize_t)file_len)
        abort();
    if (end) {
        size_t rest = size - file_len - 1;

        args = malloc(rest + 1);
        if (!args)
            abort();
        memcpy(args, end + 1, rest);
        args[rest] = '\0';
        for (char *a = args; argc < 3 + ARGS_MAX && a <= args + rest; a += strlen(a) + 1) {
            /* --help prints the usage and ends the parse: a path of its own, not fuzzed. */
            if (strncmp(a, "-h", 2) == 0 || strncmp(a, "--h", 3) == 0)
                goto out;
            argv[argc++] = a;
        }
    }
    argv[argc] = NULL;

    memset(&c, 0, sizeof(c));
    err[0] = '\0';
    if (config_load(&c, argc, argv, err, sizeof(err)) < 0 && err[0] == '\0')
        abort(); /* a refusal always says why */
    config_done(&c);
out:
    free(args);
    return 0;
}
