/* The Docker Compose command: found on the machine, run as a child on the loop. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drivers/compose_command.h"
#include "drivers/proc.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define COMPOSE_TAIL_MAX  1024 /* the end of a command's stderr kept for its error */
#define COMPOSE_ERROR_MAX 600  /* ...and the part of it that goes into last_error */

/* One compose command: done once it exited and both pipes are drained. */
struct compose_child {
    uv_process_t process;
    uv_pipe_t out, err;
    uv_timer_t watchdog; /* a command that hangs is killed */
    int handles_open;
    int open_streams;
    bool exited;
    int64_t exit_status;
    int term_signal;
    char tail[COMPOSE_TAIL_MAX];
    size_t tail_len;
    char *name, *command_text;
    const char *what;      /* "up -d" or "down" */
    compose_child_fn done; /* NULL once abandoned */
    void *data;
};

/* --- finding it ------------------------------------------------------------------------ */

static bool on_path(const char *program)
{
    const char *path = getenv("PATH");
    bool found = false;
    char *copy, *dir, *save = NULL;

    if (strchr(program, '/'))
        return access(program, X_OK) == 0;
    copy = xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
    for (dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char *full = xasprintf("%s/%s", *dir ? dir : ".", program);
        found = access(full, X_OK) == 0;
        free(full);
    }
    free(copy);
    return found;
}

/* `docker compose` works when the docker CLI finds its compose plugin: in the folders
 * the CLI itself searches. */
static bool compose_plugin_present(void)
{
    static const char *const dirs[] = {
        "/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
        "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins"};
    const char *config = getenv("DOCKER_CONFIG"), *home = getenv("HOME");
    char *own = NULL;
    bool found = false;

    if (config && *config)
        own = xasprintf("%s/cli-plugins/docker-compose", config);
    else if (home && *home)
        own = xasprintf("%s/.docker/cli-plugins/docker-compose", home);
    found = own && access(own, X_OK) == 0;
    free(own);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !found; i++) {
        char *p = xasprintf("%s/docker-compose", dirs[i]);
        found = access(p, X_OK) == 0;
        free(p);
    }
    return found;
}

/* Splits the command into words; an override is taken as it is, else v2 then v1. */
void compose_command_find(struct compose_command *c, const char *override)
{
    char *copy, *word, *save = NULL;
    size_t n = 0;

    if (override)
        copy = xstrdup(override);
    else if (on_path("docker") && compose_plugin_present())
        copy = xstrdup("docker compose");
    else if (on_path("docker-compose"))
        copy = xstrdup("docker-compose");
    else
        return;
    for (word = strtok_r(copy, " \t", &save); word && n < COMPOSE_ARGS_MAX - 1;
         word = strtok_r(NULL, " \t", &save))
        c->argv[n++] = xstrdup(word);
    free(copy);
    c->text = xstrdup(override ? override : n == 2 ? "docker compose" : "docker-compose");
}

void compose_command_clear(struct compose_command *c)
{
    for (size_t i = 0; c->argv[i]; i++)
        free(c->argv[i]);
    free(c->text);
    *c = (struct compose_command){0};
}

/* --- running it ------------------------------------------------------------------------ */

static void on_child_closed(uv_handle_t *h)
{
    struct compose_child *ch = h->data;

    if (--ch->handles_open == 0) {
        free(ch->name);
        free(ch->command_text);
        free(ch);
    }
}

static char *child_error(const struct compose_child *ch);

/* Done once it exited and both pipes are drained (tmux's job rule). */
static void child_maybe_done(struct compose_child *ch)
{
    char *error;

    if (!ch->exited || ch->open_streams > 0 || !ch->done)
        return;
    uv_close((uv_handle_t *)&ch->watchdog, on_child_closed);
    error = ch->exit_status != 0 || ch->term_signal ? child_error(ch) : NULL;
    ch->done(ch->data, error);
    free(error);
    uv_close((uv_handle_t *)&ch->process, on_child_closed);
}

static void on_child_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    struct compose_child *ch = p->data;

    ch->exited = true;
    ch->exit_status = exit_status;
    ch->term_signal = term_signal;
    child_maybe_done(ch);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char chunk[4096];

    (void)h;
    (void)suggested;
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_child_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct compose_child *ch = s->data;

    if (n < 0) {
        uv_close((uv_handle_t *)s, on_child_closed);
        ch->open_streams--;
        child_maybe_done(ch);
        return;
    }
    if (s != (uv_stream_t *)&ch->err || n == 0)
        return; /* stdout: compose's progress, not needed */
    if ((size_t)n >= sizeof(ch->tail)) {
        memcpy(ch->tail, buf->base + n - sizeof(ch->tail), sizeof(ch->tail));
        ch->tail_len = sizeof(ch->tail);
        return;
    }
    if (ch->tail_len + (size_t)n > sizeof(ch->tail)) {
        size_t drop = ch->tail_len + (size_t)n - sizeof(ch->tail);
        memmove(ch->tail, ch->tail + drop, ch->tail_len - drop);
        ch->tail_len -= drop;
    }
    memcpy(ch->tail + ch->tail_len, buf->base, (size_t)n);
    ch->tail_len += (size_t)n;
}

/* The end of a failed command's stderr, trimmed, for last_error. */
static char *child_error(const struct compose_child *ch)
{
    size_t len = ch->tail_len, start = 0;
    char status[64];

    while (len > 0 &&
           (ch->tail[len - 1] == '\n' || ch->tail[len - 1] == ' ' || ch->tail[len - 1] == '\r'))
        len--;
    if (len > COMPOSE_ERROR_MAX)
        start = len - COMPOSE_ERROR_MAX;
    if (ch->term_signal)
        snprintf(status, sizeof(status), "killed by signal %d", ch->term_signal);
    else
        snprintf(status, sizeof(status), "exit status %d", (int)ch->exit_status);
    return xasprintf("%s %s failed (%s)%s%.*s", ch->command_text, ch->what, status,
                     len > start ? ": " : "", (int)(len - start), ch->tail + start);
}

static void on_watchdog(uv_timer_t *t)
{
    struct compose_child *ch = t->data;

    log_warning("%s: %s %s does not end: killing it", ch->name, ch->command_text, ch->what);
    uv_kill(-ch->process.pid, SIGKILL); /* its own process group: UV_PROCESS_DETACHED */
}

/* What the compose command gets of the daemon's environment: where the engine and its
 * configuration are, what compose and buildx read, and what any command needs; not the
 * rest (a secret of the daemon's environment is not for it). */
static const char *const compose_env_keep[] = {
    "PATH",
    "HOME",
    "LANG",
    "LC_*",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "DOCKER_*",
    "COMPOSE_*",
    "BUILDKIT_*",
    "BUILDX_*",
    "SSH_AUTH_SOCK",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    NULL,
};

int compose_child_spawn(uv_loop_t *loop, const struct compose_child_args *a, compose_child_fn done,
                        void *data, struct compose_child **ret, char *err, size_t err_size)
{
    struct compose_child *ch = xcalloc(1, sizeof(*ch));
    uv_process_options_t options = {0};
    uv_stdio_container_t stdio[3];
    char *argv[COMPOSE_ARGS_MAX + 16];
    char **env;
    size_t n = 0;
    int rc;

    for (size_t i = 0; a->command->argv[i]; i++)
        argv[n++] = a->command->argv[i];
    argv[n++] = "-p";
    argv[n++] = (char *)a->project;
    if (a->file) {
        argv[n++] = "-f";
        argv[n++] = (char *)a->file;
    }
    for (size_t i = 0; a->args[i] && n < sizeof(argv) / sizeof(argv[0]) - 1; i++)
        argv[n++] = (char *)a->args[i];
    argv[n] = NULL;

    ch->name = xstrdup(a->name);
    ch->command_text = xstrdup(a->command->text);
    ch->what = a->what;
    ch->done = done;
    ch->data = data;
    uv_pipe_init(loop, &ch->out, 0);
    uv_pipe_init(loop, &ch->err, 0);
    uv_timer_init(loop, &ch->watchdog);
    ch->out.data = ch->err.data = ch->process.data = ch->watchdog.data = ch;
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&ch->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&ch->err;
    env = proc_env_build(compose_env_keep, NULL, a->env);
    options.file = argv[0];
    options.args = argv;
    options.env = env;
    options.cwd = a->dir;
    options.flags = UV_PROCESS_DETACHED; /* a Ctrl-C at the daemon's terminal is not for it */
    options.stdio = stdio;
    options.stdio_count = 3;
    options.exit_cb = on_child_exit;
    rc = uv_spawn(loop, &ch->process, &options);
    free(env);
    ch->handles_open = 4;
    if (rc < 0) {
        snprintf(err, err_size, "cannot run %s: %s", a->command->text, uv_strerror(rc));
        uv_close((uv_handle_t *)&ch->watchdog, on_child_closed);
        uv_close((uv_handle_t *)&ch->out, on_child_closed);
        uv_close((uv_handle_t *)&ch->err, on_child_closed);
        uv_close((uv_handle_t *)&ch->process, on_child_closed);
        return rc;
    }
    ch->open_streams = 2;
    uv_read_start((uv_stream_t *)&ch->out, on_alloc, on_child_read);
    uv_read_start((uv_stream_t *)&ch->err, on_alloc, on_child_read);
    if (a->timeout_ms > 0)
        uv_timer_start(&ch->watchdog, on_watchdog, a->timeout_ms, 0);
    log_debug("%s: %s -p %s %s", a->name, a->command->text, a->project, a->what);
    *ret = ch;
    return 0;
}

void compose_child_abandon(struct compose_child *ch)
{
    ch->done = NULL;
    uv_close((uv_handle_t *)&ch->watchdog, on_child_closed);
    if (!uv_is_closing((uv_handle_t *)&ch->out))
        uv_close((uv_handle_t *)&ch->out, on_child_closed);
    if (!uv_is_closing((uv_handle_t *)&ch->err))
        uv_close((uv_handle_t *)&ch->err, on_child_closed);
    uv_close((uv_handle_t *)&ch->process, on_child_closed);
}
