/* The Docker Compose command: found on the machine (`docker compose` when the docker CLI
 * has its compose plugin, else docker-compose), and run as a child on the loop, its stdout
 * drained and the end of its stderr kept for the error a person reads. */
#ifndef NANNY_COMPOSE_COMMAND_H
#define NANNY_COMPOSE_COMMAND_H

#include <stdint.h>

#include <uv.h>

#define COMPOSE_ARGS_MAX 16

struct compose_command {
    char *argv[COMPOSE_ARGS_MAX]; /* its words, NULL-terminated; argv[0] NULL: none found */
    char *text;                   /* as a person writes it: "docker compose" */
};

/* Finds the command; override (when not NULL) is taken as it is, split into words. */
void compose_command_find(struct compose_command *c, const char *override);
void compose_command_clear(struct compose_command *c);

struct compose_child;

/* The command ended and its output is drained: error is NULL when it exited with 0, else
 * a sentence ("docker compose up -d failed (exit status 1): <its stderr's end>"), valid
 * during the call. The child is gone after it. */
typedef void (*compose_child_fn)(void *data, const char *error);

/* What to run: `COMMAND -p PROJECT [-f FILE] ARGS...` in dir with env. */
struct compose_child_args {
    const struct compose_command *command;
    const char *name; /* the service's, for the log */
    const char *project, *file, *dir;
    char *const *env; /* "KEY=VALUE", NULL-terminated, over what compose needs of the
                         daemon's environment (DOCKER_*, COMPOSE_*, PATH, HOME...) */
    const char *what; /* "up -d", "down": for the log and the error */
    const char *const *args;
    uint64_t timeout_ms; /* killed after this (0: no limit), and then it failed */
};

/* Spawns it (in its own process group); done follows when it ended. On failure returns a
 * negative errno with a sentence in err, and done never comes. */
int compose_child_spawn(uv_loop_t *loop, const struct compose_child_args *a, compose_child_fn done,
                        void *data, struct compose_child **ret, char *err, size_t err_size);

/* The daemon ends while it runs: the command goes on by itself (the service keeps what it
 * started), the daemon only stops watching it; done never comes. */
void compose_child_abandon(struct compose_child *ch);

#endif
