/* The Docker Engine API over its unix socket, on the loop (libcurl through fetch.h): the
 * containers of every compose project, kept true by the engine's event stream (a fresh
 * list after each container event, never a polling loop), and their logs. When the engine
 * cannot be reached it says why and tries again every second. */
#ifndef NANNY_DOCKER_H
#define NANNY_DOCKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "lib/alloc.h"
#include "lib/fetch.h"

#define DOCKER_LABEL_PROJECT "com.docker.compose.project"
#define DOCKER_LABEL_SERVICE "com.docker.compose.service"

struct docker;

/* One container of a compose project, as the latest list saw it. */
struct docker_container {
    char *id;
    char *project; /* its com.docker.compose.project label */
    char *service; /* its com.docker.compose.service label ("" when none) */
    bool running;  /* State "running", "restarting" or "paused": it still holds what it holds */
};

/* What a project's containers amount to, in the latest list. */
struct docker_project {
    unsigned n_containers;
    unsigned n_running;
    int exit_code; /* of the last of its containers that died, -1 when unknown */
};

struct docker_watch {
    /* The engine became reachable (error NULL) or unreachable (error says why). */
    void (*engine)(void *data, const char *error);
    /* A new list of the containers arrived (after a container event, or a refresh). */
    void (*listed)(void *data);
};

/* Starts watching the engine at socket_path; the first answer comes through the watch,
 * never before this returns (the first request goes out on the next loop pass). */
struct docker *docker_new(uv_loop_t *loop, struct fetcher *fetcher, const char *socket_path,
                          const struct docker_watch *watch, void *data);
void docker_free(struct docker *d);

/* Whether the engine answered the latest request; before its first answer it is not known
 * (docker_known false) and counts as reachable. */
bool docker_reachable(const struct docker *d);
bool docker_known(const struct docker *d);
/* Unreachable because nothing listens on the socket: dockerd is not running (and its
 * containers, without live-restore, ended with it). */
bool docker_gone(const struct docker *d);

/* Stops the running containers of project through the engine (SIGTERM, SIGKILL after
 * timeout_s), by id: for what `down` could not remove. Their ends come as events. */
void docker_stop_project(struct docker *d, const char *project, unsigned timeout_s);
const char *docker_error(const struct docker *d); /* why it is unreachable, else NULL */
const char *docker_socket(const struct docker *d);

/* Asks for a fresh list now; returns the number that list will have (docker_generation()
 * reaches it when the list is in). */
uint64_t docker_refresh(struct docker *d);
uint64_t docker_generation(const struct docker *d);

/* Forgets the exit code of project's last death (a new start begins). */
void docker_forget_exit(struct docker *d, const char *project);

/* The latest list. */
size_t docker_count(const struct docker *d);
const struct docker_container *docker_at(const struct docker *d, size_t i);
void docker_project_get(const struct docker *d, const char *project, struct docker_project *ret);

/* The last tail lines of every container of project, oldest first, each as
 * "SERVICE | line" the way `docker compose logs` shows them: each container's lines in the
 * engine's order, the containers merged by timestamp (ties by service, then container id),
 * so that the lines for tail N are always the last N of those for a bigger tail. done gets
 * lines (NULL-terminated, freed by strv_free) or NULL and an error. */
typedef void (*docker_logs_fn)(void *data, char **lines, const char *error);
struct docker_logs;
int docker_logs(struct docker *d, const char *project, unsigned tail, docker_logs_fn done,
                void *data, struct docker_logs **ret);
void docker_logs_cancel(struct docker_logs *l);

/* Follows the logs of every container of project (the engine's follow=1 stream, one per
 * container, tail lines first), as "SERVICE | line" lines (a line longer than
 * DOCKER_FOLLOW_LINE_MAX comes in pieces), in the order they arrive. end() comes once every
 * stream has ended (the containers stopped, or the engine went away), with a sentence;
 * the follow then frees itself. No callback before this returns; -ENOENT when project has
 * no containers. */
#define DOCKER_FOLLOW_LINE_MAX (64 * 1024)
typedef void (*docker_follow_line_fn)(void *data, const char *line, size_t len);
typedef void (*docker_follow_end_fn)(void *data, const char *error);
struct docker_follow;
int docker_follow(struct docker *d, uv_loop_t *loop, const char *project, unsigned tail,
                  docker_follow_line_fn line, docker_follow_end_fn end, void *data,
                  struct docker_follow **ret);
/* Stops it: no callback after this. Safe inside line(); NULL is fine. */
void docker_follow_free(struct docker_follow *f);

/* Splits a log body of the Engine API into lines: the multiplexed stream format (8-byte
 * frame headers, when the container has no TTY) or raw text. Each line is passed to fn
 * without its newline. Exposed for the unit tests. */
void docker_log_lines(const char *body, size_t len,
                      void (*fn)(void *data, const char *line, size_t len), void *data);

/* The compose project name of a service name, as compose normalizes it: lower case, only
 * a-z 0-9 _ - kept. Exposed for the compose driver and the unit tests. */
char *docker_project_name(const char *name);

/* The fetcher the engine is reached through (for docker_logs.c). */
struct fetcher *docker_fetcher(const struct docker *d);

#endif
