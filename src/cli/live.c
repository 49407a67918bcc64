/* What the CLI watches as it happens: start --wait's live line on a terminal, driven by
 * GET /events while the start request waits, and logs -f, a followed log copied to stdout
 * until the stream ends or Ctrl-C. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/client.h"
#include "cli/live.h"
#include "lib/alloc.h"

#define LIVE_TICK_MS          1000
#define LIVE_SSE_MAX          (1024 * 1024) /* one event's text past this: the live line stops */
#define LIVE_HEALTH_MAX       160
#define LIVE_SUBSCRIBE_WAIT_S 2 /* the request goes once subscribed, or after this */

struct live {
    struct client_run run;
    struct client_transfer events, request, status;
    char *status_path;   /* GET /services/NAME/status: the last health result, each tick */
    bool status_running; /* the status transfer is under way */
    const char *name;
    char *buf; /* event text not yet split into events */
    size_t len;
    bool subscribed; /* the daemon said it follows the events for us */
    bool request_added;
    char state[32];
    char health[LIVE_HEALTH_MAX];
    struct timespec t0;
};

static unsigned elapsed_s(const struct live *l)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned)(now.tv_sec - l->t0.tv_sec);
}

static void draw(struct live *l)
{
    printf("\r\033[K%s: %s, %us, health: %s", l->name, l->state, elapsed_s(l), l->health);
    fflush(stdout);
}

static void start_request(struct live *l);

/* Redraws the line; a stream that has not said it subscribed by now (a buffering proxy in
 * between) does not hold the request back any longer. */
static void on_tick(void *data)
{
    struct live *l = data;

    if (elapsed_s(l) >= LIVE_SUBSCRIBE_WAIT_S)
        start_request(l);
    if (l->request_added && !l->status_running && !l->request.done) {
        l->status_running = true;
        client_transfer_add(&l->run, &l->status);
    }
    draw(l);
}

/* The health result as the line shows it, from an event's or a status's fields. */
static void set_health(struct live *l, bool checked, bool ok, const json_t *code,
                       const json_t *latency, const char *error)
{
    if (!checked)
        snprintf(l->health, sizeof(l->health), "not checked yet");
    else if (ok)
        snprintf(l->health, sizeof(l->health), "ok (%lld, %lld ms)",
                 (long long)json_integer_value(code), (long long)json_integer_value(latency));
    else if (error)
        snprintf(l->health, sizeof(l->health), "failing (%s)", error);
    else
        snprintf(l->health, sizeof(l->health), "failing (HTTP %lld)",
                 (long long)json_integer_value(code));
}

/* Health results come as events only when is_healthy flips: while it starts, the last
 * check's result is read from its status once a tick. */
static void on_status_done(void *data, struct client_transfer *t)
{
    struct live *l = data;
    const json_t *h = json_object_get(t->resp.json, "health");

    l->status_running = false;
    if (t->result == 0 && t->resp.status == 200 && json_is_object(h))
        set_health(l, json_string_value(json_object_get(h, "checked_at")) != NULL,
                   json_is_true(json_object_get(h, "ok")), json_object_get(h, "status_code"),
                   json_object_get(h, "latency_ms"),
                   json_string_value(json_object_get(h, "error")));
    client_response_done(&t->resp);
}

/* One event ("event: TYPE\ndata: JSON", comments aside) about our service. */
static void on_event(struct live *l, const char *type, const char *data)
{
    json_t *j = json_loads(data, 0, NULL);
    const char *service = json_string_value(json_object_get(j, "service"));

    if (!j || !service || strcmp(service, l->name) != 0) {
        json_decref(j);
        return;
    }
    if (strcmp(type, "state") == 0) {
        const char *to = json_string_value(json_object_get(j, "to"));
        snprintf(l->state, sizeof(l->state), "%s", to ? to : "?");
    } else if (strcmp(type, "health") == 0) {
        const json_t *code = json_object_get(j, "status_code");
        set_health(l, !json_is_null(code) || json_string_value(json_object_get(j, "error")),
                   json_is_true(json_object_get(j, "ok")), code, json_object_get(j, "latency_ms"),
                   json_string_value(json_object_get(j, "error")));
    }
    json_decref(j);
    draw(l);
}

static void start_request(struct live *l)
{
    if (l->request_added)
        return;
    l->request_added = true;
    client_transfer_add(&l->run, &l->request);
}

/* Splits what came into blocks separated by a blank line. */
static bool on_events_data(void *data, const char *buf, size_t len)
{
    struct live *l = data;
    char *end;

    if (l->len + len > LIVE_SSE_MAX)
        return false;
    l->buf = xrealloc(l->buf, l->len + len + 1);
    memcpy(l->buf + l->len, buf, len);
    l->len += len;
    l->buf[l->len] = '\0';
    if (memchr(buf, '\0', len))
        return false; /* not an event stream: the live line stops, the request goes on */
    while ((end = strstr(l->buf, "\n\n"))) {
        const char *type = "message", *payload = NULL;
        size_t used = (size_t)(end - l->buf) + 2;
        *end = '\0';
        for (char *line = strtok(l->buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (strncmp(line, ": events after ", 15) == 0)
                l->subscribed = true;
            else if (strncmp(line, "event: ", 7) == 0)
                type = line + 7;
            else if (strncmp(line, "data: ", 6) == 0)
                payload = line + 6;
        }
        if (payload)
            on_event(l, type, payload);
        memmove(l->buf, l->buf + used, l->len - used + 1);
        l->len -= used;
    }
    if (l->subscribed)
        start_request(l);
    return true;
}

/* Without the events (an older daemon, a refusal), the request goes on all the same; no
 * daemon at all was said once, and is the answer. */
static void on_events_done(void *data, struct client_transfer *t)
{
    struct live *l = data;

    if (t->result && !l->request_added) {
        l->run.stop = true;
        return;
    }
    start_request(l);
}

static void on_request_done(void *data, struct client_transfer *t)
{
    struct live *l = data;

    (void)t;
    l->run.stop = true;
}

int live_request(const struct client *c, const char *method, const char *path, const char *body,
                 const char *name, struct client_response *resp)
{
    static const char *const sse_headers[] = {"Accept: text/event-stream", NULL};
    struct live l = {.name = name};
    char *escaped_name = client_escape(name);
    int r;

    clock_gettime(CLOCK_MONOTONIC, &l.t0);
    snprintf(l.state, sizeof(l.state), "asking");
    snprintf(l.health, sizeof(l.health), "not checked yet");
    l.run.client = c;
    l.run.tick = on_tick;
    l.run.tick_data = &l;
    l.events = (struct client_transfer){.method = "GET",
                                        .path = "/events",
                                        .headers = sse_headers,
                                        .on_data = on_events_data,
                                        .on_done = on_events_done,
                                        .data = &l};
    l.status_path = xasprintf("/services/%s/status", escaped_name);
    free(escaped_name);
    l.status = (struct client_transfer){.method = "GET",
                                        .path = l.status_path,
                                        .timeout_ms = LIVE_TICK_MS * 5,
                                        .quiet = true,
                                        .on_done = on_status_done,
                                        .data = &l};
    l.request = (struct client_transfer){.method = method,
                                         .path = path,
                                         .body = body,
                                         .timeout_ms = c->timeout_ms,
                                         .on_done = on_request_done,
                                         .data = &l};
    draw(&l);
    client_transfer_add(&l.run, &l.events);
    r = client_run(&l.run, LIVE_TICK_MS);
    client_transfer_cancel(&l.run, &l.events);
    client_transfer_cancel(&l.run, &l.request);
    client_transfer_cancel(&l.run, &l.status);
    client_run_done(&l.run);
    free(l.status_path);
    printf("\r\033[K");
    fflush(stdout);
    free(l.buf);
    if (r < 0) {
        client_response_done(&l.request.resp);
        fprintf(stderr, "nanny: interrupted; %s was left as it is\n", name);
        return CLIENT_EXIT_FAILED;
    }
    if (!l.request_added) /* the events told there is no daemon to ask */
        return l.events.result ? l.events.result : CLIENT_EXIT_UNREACHABLE;
    if (l.request.result) {
        client_response_done(&l.request.resp);
        return l.request.result;
    }
    *resp = l.request.resp;
    return 0;
}

static bool on_log_data(void *data, const char *buf, size_t len)
{
    (void)data;
    fwrite(buf, 1, len, stdout);
    fflush(stdout);
    return !ferror(stdout); /* a closed pipe (| head) ends it */
}

int live_logs(const struct client *c, const char *path, const char *name)
{
    struct client_run run = {.client = c};
    struct client_transfer t = {.method = "GET", .path = path, .on_data = on_log_data};
    int r;

    /* A closed stdout (| head) is a write error that ends it, not a signal that kills it. */
    signal(SIGPIPE, SIG_IGN);
    client_transfer_add(&run, &t);
    r = client_run(&run, 0);
    client_transfer_cancel(&run, &t);
    client_run_done(&run);
    if (r < 0 || t.stopped) { /* Ctrl-C, or stdout went away: that is how it ends */
        client_response_done(&t.resp);
        return CLIENT_EXIT_OK;
    }
    if (t.result)
        return t.result;
    r = client_fail("logs", name, &t.resp);
    client_response_done(&t.resp);
    return r;
}
