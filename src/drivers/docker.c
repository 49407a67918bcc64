/* The Docker Engine API client: see docker.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "drivers/docker.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define DOCKER_RETRY_MS    1000              /* the next attempt after the engine went away */
#define DOCKER_LIST_MS     10000             /* a list that takes longer: the engine hangs */
#define DOCKER_LIST_MAX    (8 * 1024 * 1024) /* the list's JSON, generous */
#define DOCKER_EVENT_MAX   (64 * 1024)       /* one event line; longer ones are skipped */
#define DOCKER_EXITS_MAX   256               /* projects whose last exit code is kept */
#define DOCKER_DEAD_MAX    256               /* containers known dead that a list may not show */
#define DOCKER_NOT_RUNNING "nothing answers on its socket"

/* URL-encoded {"type":["container"],"label":["com.docker.compose.project"]} and the same
 * label filter for the list: only compose containers concern the daemon. */
#define DOCKER_FILTER_EVENTS                                                                       \
    "%7B%22type%22%3A%5B%22container%22%5D%2C%22label%22%3A%5B%22" DOCKER_LABEL_PROJECT "%22%5D%"  \
    "7D"
#define DOCKER_FILTER_LIST "%7B%22label%22%3A%5B%22" DOCKER_LABEL_PROJECT "%22%5D%7D"

struct exit_code {
    char *project;
    int code;
};

struct docker {
    uv_loop_t *loop;
    struct fetcher *fetcher;
    char *socket;
    const struct docker_watch *watch;
    void *data;
    struct fetch *events;  /* the event stream, while connected */
    struct fetch *listing; /* the list in flight */
    bool list_again;       /* an event came while listing */
    uint64_t generation;   /* of the latest list */
    uint64_t asked;        /* of the latest list asked for */
    bool known, reachable;
    bool not_running; /* unreachable because nothing listens on its socket: dockerd is gone */
    char *error;
    struct docker_container *containers;
    size_t n_containers;
    struct exit_code exits[DOCKER_EXITS_MAX];
    size_t n_exits;
    /* Containers whose "die" event came: the engine sends it before its list shows the
     * container stopped, so a list right after it may still say running. */
    struct dead {
        char *id;
        uint64_t lists_started; /* when it was marked: only later lists may forget it */
    } dead[DOCKER_DEAD_MAX];
    size_t n_dead;
    uint64_t lists_started; /* lists asked of the engine so far */
    uint64_t list_number;   /* ...and the number of the one in flight */
    bool died;              /* a die came since the last kick */
    char *pending;          /* a partial event line */
    size_t pending_len;
    uv_timer_t retry;
    uv_timer_t kick; /* lists after an event, outside libcurl's callback */
    int handles_open;
    struct docker_stop *stops; /* containers being stopped through the engine */
};

/* POST /containers/ID/stop in flight. */
struct docker_stop {
    struct docker *d;
    struct fetch *fetch;
    char *id;
    struct docker_stop *next;
};

static void docker_connect(struct docker *d);
static void stop_free(struct docker_stop *st);
static void dead_remove(struct docker *d, size_t i);

char *docker_project_name(const char *name)
{
    char *p = xstrdup(name), *out = p;

    for (const char *s = name; *s; s++) {
        char c = (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s);
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')
            *out++ = c;
    }
    *out = '\0';
    return p;
}

static char *url(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *url(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        fatal("out of memory (vasprintf)");
    va_end(ap);
    return s;
}

static void containers_clear(struct docker *d)
{
    for (size_t i = 0; i < d->n_containers; i++) {
        free(d->containers[i].id);
        free(d->containers[i].project);
        free(d->containers[i].service);
    }
    free(d->containers);
    d->containers = NULL;
    d->n_containers = 0;
}

/* The engine answered, or stopped answering: tell the watch when that changes. */
static void set_reachable(struct docker *d, const char *error)
{
    bool was_known = d->known, was = d->reachable;

    d->known = true;
    d->reachable = error == NULL;
    if (!error && was && was_known)
        return;
    if (error && !was && was_known && d->error && strcmp(d->error, error) == 0)
        return;
    free(d->error);
    d->error = error ? xstrdup(error) : NULL;
    if (error)
        log_warning("the Docker engine at %s is not reachable: %s", d->socket, error);
    else
        log_info("the Docker engine at %s is reachable", d->socket);
    d->watch->engine(d->data, error);
}

static void on_retry(uv_timer_t *t)
{
    docker_connect(t->data);
}

/* The engine went away (not_running: nothing listens on its socket): drop the stream,
 * keep the last list, try again later. */
static void disconnect(struct docker *d, const char *error, bool not_running)
{
    fetch_cancel(d->events);
    d->events = NULL;
    fetch_cancel(d->listing);
    d->listing = NULL;
    d->pending_len = 0;
    /* What the stream said is void: deaths and starts seen no more, so the marks go, and
     * the lists after reconnecting, all asked after them, are the truth. */
    uv_timer_stop(&d->kick);
    d->died = false;
    while (d->n_dead > 0)
        dead_remove(d, 0);
    /* Whoever waits for a list asked before now gets the first one after reconnecting. */
    if (d->asked > d->generation + 1)
        d->generation = d->asked - 1;
    d->not_running = not_running;
    set_reachable(d, error);
    uv_timer_start(&d->retry, on_retry, DOCKER_RETRY_MS, 0);
}

/* A failed transfer in words a person can act on, with libcurl's own after them. */
static void transfer_error(const struct fetch_result *res, char *buf, size_t size)
{
    switch (res->curl_code) {
    case CURLE_COULDNT_CONNECT:
        snprintf(buf, size, DOCKER_NOT_RUNNING ", is dockerd running? (%s)", res->error);
        return;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        snprintf(buf, size, "it closed the connection, did dockerd stop? (%s)", res->error);
        return;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(buf, size, "it does not answer in time (%s)", res->error);
        return;
    default:
        snprintf(buf, size, "%s", res->error);
    }
}

static const char *label(json_t *labels, const char *key)
{
    const char *s = json_string_value(json_object_get(labels, key));

    return s ? s : "";
}

static void list_start(struct docker *d);
static void apply_dead(struct docker *d, bool prune);

static void on_list(void *data, const struct fetch_result *res)
{
    struct docker *d = data;
    json_t *doc, *c;
    size_t i;
    char error[256];

    d->listing = NULL;
    if (res->error || res->status != 200) {
        if (res->error)
            transfer_error(res, error, sizeof(error));
        else
            snprintf(error, sizeof(error), "listing containers answered HTTP %ld", res->status);
        disconnect(d, error, res->error && res->curl_code == CURLE_COULDNT_CONNECT);
        return;
    }
    doc = json_loadb(res->body, res->body_len, 0, NULL);
    if (!json_is_array(doc)) {
        json_decref(doc);
        disconnect(d, "the engine's container list is not a JSON array", false);
        return;
    }
    containers_clear(d);
    d->containers = xcalloc(json_array_size(doc) + 1, sizeof(*d->containers));
    json_array_foreach(doc, i, c)
    {
        json_t *labels = json_object_get(c, "Labels");
        const char *id = json_string_value(json_object_get(c, "Id"));
        const char *state = json_string_value(json_object_get(c, "State"));
        struct docker_container *dc = &d->containers[d->n_containers];

        if (!id || !*label(labels, DOCKER_LABEL_PROJECT))
            continue;
        dc->id = xstrdup(id);
        dc->project = xstrdup(label(labels, DOCKER_LABEL_PROJECT));
        dc->service = xstrdup(label(labels, DOCKER_LABEL_SERVICE));
        dc->running = state && (strcmp(state, "running") == 0 || strcmp(state, "restarting") == 0 ||
                                strcmp(state, "paused") == 0);
        d->n_containers++;
    }
    json_decref(doc);
    apply_dead(d, true);
    d->generation++;
    d->not_running = false;
    set_reachable(d, NULL);
    d->watch->listed(d->data);
    if (d->list_again)
        list_start(d);
}

static void list_start(struct docker *d)
{
    struct fetch_request req = {
        .unix_socket = d->socket, .timeout_ms = DOCKER_LIST_MS, .body_max = DOCKER_LIST_MAX};

    if (d->listing) {
        d->list_again = true;
        return;
    }
    d->list_again = false;
    req.url = "http://docker/containers/json?all=1&filters=" DOCKER_FILTER_LIST;
    d->list_number = ++d->lists_started;
    if (fetcher_request(d->fetcher, &req, on_list, d, &d->listing) < 0)
        disconnect(d, "cannot start a request to the engine", false);
}

static void dead_remove(struct docker *d, size_t i)
{
    free(d->dead[i].id);
    d->dead[i] = d->dead[--d->n_dead];
}

static void dead_set(struct docker *d, const char *id, bool dead)
{
    for (size_t i = 0; i < d->n_dead; i++) {
        if (strcmp(d->dead[i].id, id) == 0) {
            if (!dead)
                dead_remove(d, i);
            return;
        }
    }
    if (!dead)
        return;
    if (d->n_dead == DOCKER_DEAD_MAX)
        dead_remove(d, 0);
    d->dead[d->n_dead].id = xstrdup(id);
    d->dead[d->n_dead++].lists_started = d->lists_started;
}

/* The dead stay dead in the list until a start event says otherwise. With prune (a list
 * came), ids that list no longer shows are forgotten, if the list was asked after they
 * died: one asked before may not show a container that started and died meanwhile. */
static void apply_dead(struct docker *d, bool prune)
{
    for (size_t i = 0; i < d->n_dead;) {
        bool listed = false;
        for (size_t j = 0; j < d->n_containers; j++) {
            if (strcmp(d->containers[j].id, d->dead[i].id) == 0) {
                d->containers[j].running = false;
                listed = true;
            }
        }
        if (!listed && prune && d->list_number > d->dead[i].lists_started)
            dead_remove(d, i);
        else
            i++;
    }
}

/* After events: what a die says is known now, the rest when the list comes. */
static void on_kick(uv_timer_t *t)
{
    struct docker *d = t->data;

    if (d->died && d->reachable) {
        d->died = false;
        apply_dead(d, false);
        d->watch->listed(d->data);
    }
    list_start(d);
}

/* Keeps the exit code of a "die" event, for last_error. */
static void remember_exit(struct docker *d, const char *project, int code)
{
    size_t i;

    for (i = 0; i < d->n_exits; i++)
        if (strcmp(d->exits[i].project, project) == 0)
            break;
    if (i == d->n_exits) {
        if (d->n_exits == DOCKER_EXITS_MAX) {
            free(d->exits[0].project);
            memmove(&d->exits[0], &d->exits[1], sizeof(d->exits[0]) * (DOCKER_EXITS_MAX - 1));
            i = --d->n_exits;
        }
        d->exits[i].project = xstrdup(project);
        d->n_exits++;
    }
    d->exits[i].code = code;
}

/* One event of the stream: a container of a project started, died or went. */
static void on_event_line(struct docker *d, const char *line, size_t len)
{
    json_t *ev = json_loadb(line, len, 0, NULL);

    const char *action = json_string_value(json_object_get(ev, "Action"));
    json_t *attrs = json_object_get(json_object_get(ev, "Actor"), "Attributes");

    const char *id = json_string_value(json_object_get(ev, "id"));

    if (action && id && strcmp(action, "die") == 0) {
        const char *code = json_string_value(json_object_get(attrs, "exitCode"));
        const char *project = json_string_value(json_object_get(attrs, DOCKER_LABEL_PROJECT));
        if (code && project)
            remember_exit(d, project, atoi(code));
        dead_set(d, id, true);
        d->died = true;
    } else if (action && id && strcmp(action, "start") == 0) {
        dead_set(d, id, false);
    }
    if (action && (strcmp(action, "start") == 0 || strcmp(action, "die") == 0 ||
                   strcmp(action, "destroy") == 0 || strcmp(action, "pause") == 0 ||
                   strcmp(action, "unpause") == 0))
        uv_timer_start(&d->kick, on_kick, 0, 0); /* no new transfer inside curl's callback */
    json_decref(ev);
}

static void on_events_data(void *data, const char *buf, size_t len)
{
    struct docker *d = data;

    while (len > 0) {
        const char *nl = memchr(buf, '\n', len);
        size_t n = nl ? (size_t)(nl - buf) : len;

        if (d->pending_len + n <= DOCKER_EVENT_MAX) {
            if (!d->pending)
                d->pending = xmalloc(DOCKER_EVENT_MAX);
            memcpy(d->pending + d->pending_len, buf, n);
        }
        d->pending_len += n; /* past the cap the line is skipped */
        if (!nl)
            return;
        if (d->pending_len > 0 && d->pending_len <= DOCKER_EVENT_MAX)
            on_event_line(d, d->pending, d->pending_len);
        d->pending_len = 0;
        buf = nl + 1;
        len -= n + 1;
    }
}

static void on_events_end(void *data, const struct fetch_result *res)
{
    struct docker *d = data;
    char error[256];

    d->events = NULL;
    if (res->error)
        transfer_error(res, error, sizeof(error));
    else if (res->status != 200)
        snprintf(error, sizeof(error), "its event stream answered HTTP %ld", res->status);
    else
        snprintf(error, sizeof(error), "it closed its event stream");
    disconnect(d, error, res->error && res->curl_code == CURLE_COULDNT_CONNECT);
}

static void docker_connect(struct docker *d)
{
    struct fetch_request req = {
        .url = "http://docker/events?filters=" DOCKER_FILTER_EVENTS,
        .unix_socket = d->socket,
        .on_data = on_events_data,
    };

    if (d->events)
        return;
    if (fetcher_request(d->fetcher, &req, on_events_end, d, &d->events) < 0) {
        disconnect(d, "cannot start a request to the engine", false);
        return;
    }
    d->asked = d->generation + 1; /* no list is in flight: disconnect() cancelled it */
    list_start(d);
}

struct docker *docker_new(uv_loop_t *loop, struct fetcher *fetcher, const char *socket_path,
                          const struct docker_watch *watch, void *data)
{
    struct docker *d = xcalloc(1, sizeof(*d));

    d->loop = loop;
    d->fetcher = fetcher;
    d->socket = xstrdup(socket_path);
    d->watch = watch;
    d->data = data;
    d->reachable = true;
    uv_timer_init(loop, &d->retry);
    uv_timer_init(loop, &d->kick);
    d->retry.data = d->kick.data = d;
    d->handles_open = 2;
    /* On the next loop pass, not now: the watch hears nothing before its owner holds d. */
    uv_timer_start(&d->retry, on_retry, 0, 0);
    return d;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct docker *d = h->data;

    if (--d->handles_open == 0)
        free(d);
}

void docker_free(struct docker *d)
{
    if (!d)
        return;
    fetch_cancel(d->events);
    fetch_cancel(d->listing);
    while (d->stops) { /* a stop in flight at the end: the engine goes on with it */
        fetch_cancel(d->stops->fetch);
        stop_free(d->stops);
    }
    containers_clear(d);
    for (size_t i = 0; i < d->n_exits; i++)
        free(d->exits[i].project);
    for (size_t i = 0; i < d->n_dead; i++)
        free(d->dead[i].id);
    free(d->pending);
    free(d->socket);
    free(d->error);
    uv_close((uv_handle_t *)&d->retry, on_timer_closed);
    uv_close((uv_handle_t *)&d->kick, on_timer_closed);
}

bool docker_reachable(const struct docker *d)
{
    return d->reachable;
}

bool docker_gone(const struct docker *d)
{
    return !d->reachable && d->not_running;
}

static void stop_free(struct docker_stop *st)
{
    for (struct docker_stop **p = &st->d->stops; *p; p = &(*p)->next) {
        if (*p == st) {
            *p = st->next;
            break;
        }
    }
    free(st->id);
    free(st);
}

static void on_stopped(void *data, const struct fetch_result *res)
{
    struct docker_stop *st = data;

    if (res->error || (res->status != 204 && res->status != 304 && res->status != 404))
        log_warning("docker: cannot stop container %.12s: %s", st->id,
                    res->error ? res->error : "the engine refused");
    stop_free(st);
}

void docker_stop_project(struct docker *d, const char *project, unsigned timeout_s)
{
    for (size_t i = 0; i < d->n_containers; i++) {
        const struct docker_container *c = &d->containers[i];
        struct fetch_request req = {.unix_socket = d->socket,
                                    .timeout_ms = (uint64_t)timeout_s * 1000 + DOCKER_LIST_MS,
                                    .post = true};
        struct docker_stop *st;
        char *u;

        if (!c->running || strcmp(c->project, project) != 0)
            continue;
        u = url("http://docker/containers/%s/stop?t=%u", c->id, timeout_s);
        st = xcalloc(1, sizeof(*st));
        st->d = d;
        st->id = xstrdup(c->id);
        st->next = d->stops;
        d->stops = st;
        req.url = u;
        log_info("docker: stopping container %.12s of %s through the engine", c->id, project);
        if (fetcher_request(d->fetcher, &req, on_stopped, st, &st->fetch) < 0)
            stop_free(st);
        free(u);
    }
}

bool docker_known(const struct docker *d)
{
    return d->known;
}

const char *docker_error(const struct docker *d)
{
    return d->reachable ? NULL : d->error;
}

const char *docker_socket(const struct docker *d)
{
    return d->socket;
}

uint64_t docker_refresh(struct docker *d)
{
    if (!d->events) {
        docker_connect(d);
        return d->asked;
    }
    /* A list already in flight may have been asked before the caller's change. */
    d->asked = d->generation + (d->listing ? 2 : 1);
    list_start(d);
    return d->asked;
}

void docker_forget_exit(struct docker *d, const char *project)
{
    for (size_t i = 0; i < d->n_exits; i++) {
        if (strcmp(d->exits[i].project, project) == 0) {
            free(d->exits[i].project);
            d->exits[i] = d->exits[--d->n_exits];
            return;
        }
    }
}

struct fetcher *docker_fetcher(const struct docker *d)
{
    return d->fetcher;
}

uint64_t docker_generation(const struct docker *d)
{
    return d->generation;
}

size_t docker_count(const struct docker *d)
{
    return d->n_containers;
}

const struct docker_container *docker_at(const struct docker *d, size_t i)
{
    return i < d->n_containers ? &d->containers[i] : NULL;
}

void docker_project_get(const struct docker *d, const char *project, struct docker_project *ret)
{
    *ret = (struct docker_project){.exit_code = -1};
    for (size_t i = 0; i < d->n_containers; i++) {
        if (strcmp(d->containers[i].project, project) != 0)
            continue;
        ret->n_containers++;
        if (d->containers[i].running)
            ret->n_running++;
    }
    for (size_t i = 0; i < d->n_exits; i++)
        if (strcmp(d->exits[i].project, project) == 0)
            ret->exit_code = d->exits[i].code;
}
