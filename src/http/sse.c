/* GET /events (see sse.h): one subscription to the hub for every client; each event is
 * rendered once and written to every client's stream. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/sse.h"
#include "http/stream.h"
#include "lib/alloc.h"
#include "lib/clock.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/units.h"

#define SSE_LAST_ID_MAX 64 /* characters of a Last-Event-ID worth reading */

struct sse_client {
    struct sse *sse;
    struct stream *stream;
    struct sse_client *next, *prev;
};

struct sse {
    struct events *hub;
    struct events_sub *sub;
    uv_timer_t keepalive;
    uint64_t keepalive_ms;
    int64_t epoch; /* Unix ms of this daemon's start: ids of another start do not resume */
    struct sse_client *clients;
    size_t n_clients;
};

static const char *const sse_headers[] = {"X-Accel-Buffering", "no", NULL};

static void client_unlink(struct sse_client *c)
{
    struct sse *sse = c->sse;

    if (c->prev)
        c->prev->next = c->next;
    else
        sse->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sse->n_clients--;
    free(c);
}

static void on_client_gone(void *data)
{
    client_unlink(data);
}

/* An event's text, "id: EPOCH-SEQ\nevent: TYPE\ndata: JSON\n\n"; takes the reference to
 * data. New string; its length in *ret_len. */
static char *format(const struct sse *sse, uint64_t seq, const char *type, json_t *data,
                    size_t *ret_len)
{
    char *json = json_dumps(data, JSON_COMPACT), *text;

    json_decref(data);
    if (!json)
        fatal("out of memory (json_dumps)");
    text = xasprintf("id: %" PRId64 "-%" PRIu64 "\nevent: %s\ndata: %s\n\n", sse->epoch, seq, type,
                     json);
    free(json);
    *ret_len = strlen(text);
    return text;
}

/* A hub event's text: NULL for a kind SSE does not carry. */
static char *render(const struct sse *sse, const struct event *ev, size_t *ret_len)
{
    json_t *data;

    switch (ev->kind) {
    case EVENT_STATE:
    case EVENT_HEALTH:
    case EVENT_GPU:
    case EVENT_DISCOVERY:
    case EVENT_GPU_OVERUSE:
        break;
    default:
        return NULL;
    }
    data = json_object();
    if (ev->service)
        json_object_set_new(data, "service", json_string(ev->service));
    json_object_update(data, ev->data);
    if (ev->kind == EVENT_STATE && !json_object_get(data, "reason"))
        json_object_set_new(data, "reason", json_null());
    /* When the hub published it: how late a client shows it (bench/dashboard.sh). */
    json_object_set_new(data, "time", json_time_ms(ev->time_ms));
    return format(sse, ev->seq, event_kind_name(ev->kind), data, ret_len);
}

/* A reset event: the client must re-read /services. */
static char *render_reset(const struct sse *sse, const char *reason, size_t *ret_len)
{
    return format(sse, events_last_seq(sse->hub), "reset", json_pack("{s:s}", "reason", reason),
                  ret_len);
}

/* Writes text to a client; one that has let too much wait gets a last reset and goes. */
static void client_write(struct sse_client *c, const char *text, size_t len)
{
    char reason[160], *last;
    size_t last_len;

    if (stream_write(c->stream, text, len))
        return;
    snprintf(reason, sizeof(reason),
             "this client read too slowly: more than %d bytes of events waited unread; "
             "reconnect and re-read /services",
             SSE_UNREAD_MAX);
    log_info("events: a client read too slowly (%zu bytes unread); ending its stream",
             stream_unread(c->stream));
    last = render_reset(c->sse, reason, &last_len);
    stream_end(c->stream, last, last_len);
    free(last);
    client_unlink(c);
}

static void on_event(void *data, const struct event *ev)
{
    struct sse *sse = data;
    size_t len;
    char *text;

    if (!sse->clients)
        return;
    text = render(sse, ev, &len);
    if (!text)
        return;
    for (struct sse_client *c = sse->clients, *next; c; c = next) {
        next = c->next;
        client_write(c, text, len);
    }
    free(text);
}

static void on_keepalive(uv_timer_t *t)
{
    struct sse *sse = t->data;
    static const char comment[] = ": keepalive\n\n";

    if (!sse->clients)
        uv_timer_stop(t);
    for (struct sse_client *c = sse->clients, *next; c; c = next) {
        next = c->next;
        client_write(c, comment, sizeof(comment) - 1);
    }
}

/* The test suite's shorter keepalive (NANNY_TEST_SSE_KEEPALIVE, a duration), else the
 * default. */
static uint64_t keepalive_ms(void)
{
    const char *s = getenv("NANNY_TEST_SSE_KEEPALIVE");
    uint64_t ms;

    if (!s || units_parse_duration(s, &ms) < 0 || ms == 0)
        return SSE_KEEPALIVE_MS;
    return ms;
}

struct sse *sse_new(uv_loop_t *loop, struct events *hub)
{
    struct sse *sse = xcalloc(1, sizeof(*sse));

    sse->hub = hub;
    sse->epoch = unix_ms();
    sse->sub = events_subscribe(hub, on_event, sse);
    sse->keepalive_ms = keepalive_ms();
    uv_timer_init(loop, &sse->keepalive);
    sse->keepalive.data = sse;
    return sse;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void sse_free(struct sse *sse)
{
    if (!sse)
        return;
    while (sse->clients) {
        struct sse_client *c = sse->clients;
        stream_end(c->stream, NULL, 0);
        client_unlink(c);
    }
    events_unsubscribe(sse->hub, sse->sub);
    uv_close((uv_handle_t *)&sse->keepalive, on_timer_closed);
}

size_t sse_clients(const struct sse *sse)
{
    return sse->n_clients;
}

/* Reads "EPOCH-SEQ"; false when it is not one. */
static bool parse_id(const char *id, int64_t *ret_epoch, uint64_t *ret_seq)
{
    char *end;

    if (!id || !*id || strlen(id) > SSE_LAST_ID_MAX || *id == '-' || *id == '+')
        return false;
    *ret_epoch = strtoll(id, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9')
        return false;
    *ret_seq = strtoull(end + 1, &end, 10);
    return *end == '\0';
}

/* What a client that comes back with Last-Event-ID missed: the events after it from the
 * history, or a reset when they are not all there. */
static void client_resume(struct sse_client *c, const char *last_id)
{
    struct sse *sse = c->sse;
    uint64_t last = events_last_seq(sse->hub), seq;
    const struct event *ev;
    const char *why = NULL;
    int64_t epoch;
    char *text;
    size_t len;

    if (!parse_id(last_id, &epoch, &seq))
        why = "Last-Event-ID is not an id of this daemon (EPOCH-SEQ)";
    else if (epoch != sse->epoch)
        why = "the daemon restarted since that event";
    else if (seq > last)
        why = "Last-Event-ID is ahead of the last event";
    else if (seq < last && (!(ev = events_after(sse->hub, seq)) || ev->seq != seq + 1))
        why = "the events since Last-Event-ID are no longer kept";
    if (why) {
        text = render_reset(sse, why, &len);
        client_write(c, text, len);
        free(text);
        return;
    }
    /* The replay may go past the cap: it is bounded by the history. */
    for (ev = events_after(sse->hub, seq); ev; ev = events_after(sse->hub, ev->seq)) {
        text = render(sse, ev, &len);
        if (!text)
            continue;
        stream_write_all(c->stream, text, len);
        free(text);
    }
}

void sse_handle(void *data, struct request *req)
{
    struct sse *sse = data;
    struct sse_client *c;
    const char *last_id = request_header(req, "Last-Event-ID");
    char hello[96];
    int n;

    if (request_server_stopping(req)) {
        request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                            "the daemon is stopping");
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->sse = sse;
    c->stream = request_stream(req, MHD_HTTP_OK, "text/event-stream", sse_headers, SSE_UNREAD_MAX,
                               on_client_gone, c);
    if (!c->stream) {
        free(c);
        return;
    }
    c->next = sse->clients;
    if (sse->clients)
        sse->clients->prev = c;
    sse->clients = c;
    sse->n_clients++;
    if (!uv_is_active((uv_handle_t *)&sse->keepalive))
        uv_timer_start(&sse->keepalive, on_keepalive, sse->keepalive_ms, sse->keepalive_ms);
    /* A first line at once: the client knows it is subscribed, and from which event. */
    n = snprintf(hello, sizeof(hello), ": events after %" PRId64 "-%" PRIu64 "\n\n", sse->epoch,
                 events_last_seq(sse->hub));
    stream_write(c->stream, hello, (size_t)n);
    if (last_id)
        client_resume(c, last_id);
}
