/* The event hub: a ring of the last events, a list of subscribers that may come and go
 * during a delivery, and a queue that turns publishes from callbacks into later
 * deliveries, so that every subscriber hears every event once and in seq order. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/events.h"
#include "lib/clock.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"

struct events_sub {
    struct events_sub *next;
    events_fn fn;
    void *data;
    uint64_t after; /* hears only events with a greater seq: those published after it came */
    bool dead;      /* unsubscribed; freed by the next sweep */
};

/* A published event waiting for its delivery; it owns its own copy of the event, since
 * the ring may drop the original before the delivery comes. */
struct pending {
    struct pending *next;
    struct event ev;
};

struct events {
    struct event *ring; /* seq s lives in ring[(s - 1) % history]; owns service and data */
    size_t history;
    size_t count;           /* events kept: the last count seqs up to last_seq */
    uint64_t last_seq;      /* the last seq published */
    uint64_t delivered_seq; /* the seq being delivered, or the last delivered */
    struct events_sub *subs;
    struct events_sub *subs_tail;
    bool delivering; /* a delivery is on the stack: unsubscribe marks, publish queues */
    bool has_dead;
    struct pending *pending;
    struct pending *pending_tail;
    size_t n_pending;
    size_t pending_max;
};

/* Drops what an event owns. */
static void event_clear(struct event *ev)
{
    free((char *)ev->service);
    json_decref(ev->data);
    memset(ev, 0, sizeof(*ev));
}

struct events *events_new(size_t history)
{
    struct events *hub = xcalloc(1, sizeof(*hub));

    if (history == 0)
        history = EVENTS_HISTORY_DEFAULT;
    hub->history = history;
    hub->ring = xcalloc(history, sizeof(*hub->ring));
    hub->pending_max =
        history > SIZE_MAX / EVENTS_PENDING_FACTOR ? SIZE_MAX : history * EVENTS_PENDING_FACTOR;
    return hub;
}

void events_free(struct events *hub)
{
    if (!hub)
        return;
    if (hub->delivering)
        fatal("events: events_free called from inside an event callback");
    for (size_t i = 0; i < hub->history; i++)
        event_clear(&hub->ring[i]);
    free(hub->ring);
    while (hub->pending) {
        struct pending *p = hub->pending;

        hub->pending = p->next;
        event_clear(&p->ev);
        free(p);
    }
    while (hub->subs) {
        struct events_sub *s = hub->subs;

        hub->subs = s->next;
        free(s);
    }
    free(hub);
}

/* Frees the unsubscribed; only when no delivery walks the list. */
static void sweep(struct events *hub)
{
    struct events_sub **link = &hub->subs;

    hub->subs_tail = NULL;
    while (*link) {
        struct events_sub *s = *link;

        if (s->dead) {
            *link = s->next;
            free(s);
            continue;
        }
        hub->subs_tail = s;
        link = &s->next;
    }
    hub->has_dead = false;
}

/* Delivers the queue in order, including what the callbacks publish meanwhile. A
 * subscriber added during the walk is reached by it but skipped by its after. */
static void drain(struct events *hub)
{
    hub->delivering = true;
    while (hub->pending) {
        struct pending *p = hub->pending;

        hub->pending = p->next;
        if (!hub->pending)
            hub->pending_tail = NULL;
        hub->n_pending--;
        hub->delivered_seq = p->ev.seq;
        for (struct events_sub *s = hub->subs; s; s = s->next)
            if (!s->dead && p->ev.seq > s->after)
                s->fn(s->data, &p->ev);
        event_clear(&p->ev);
        free(p);
    }
    hub->delivering = false;
    if (hub->has_dead)
        sweep(hub);
}

uint64_t events_publish(struct events *hub, enum event_kind kind, const char *service, json_t *data)
{
    struct event *slot;
    struct pending *p;
    uint64_t seq;

    if (!data && !(data = json_object()))
        fatal("out of memory (event data)");
    if (!json_is_object(data))
        fatal("events: %s event for %s: data is not a JSON object", event_kind_name(kind),
              service ? service : "no service");
    if (hub->n_pending >= hub->pending_max)
        fatal("events: %zu events published from callbacks wait for delivery: a feedback "
              "loop between subscribers",
              hub->n_pending);

    slot = &hub->ring[hub->last_seq % hub->history];
    if (hub->count == hub->history)
        event_clear(slot);
    else
        hub->count++;
    slot->seq = seq = ++hub->last_seq;
    slot->time_ms = unix_ms();
    slot->kind = kind;
    slot->service = service ? xstrdup(service) : NULL;
    slot->data = data;

    p = xcalloc(1, sizeof(*p));
    p->ev = *slot;
    p->ev.service = service ? xstrdup(service) : NULL;
    json_incref(data);
    if (hub->pending_tail)
        hub->pending_tail->next = p;
    else
        hub->pending = p;
    hub->pending_tail = p;
    hub->n_pending++;

    /* The slot may hold a later event once the queue is drained: return the local. */
    if (!hub->delivering)
        drain(hub);
    return seq;
}

struct events_sub *events_subscribe(struct events *hub, events_fn fn, void *data)
{
    struct events_sub *s = xcalloc(1, sizeof(*s));

    s->fn = fn;
    s->data = data;
    s->after = hub->delivered_seq;
    if (hub->subs_tail)
        hub->subs_tail->next = s;
    else
        hub->subs = s;
    hub->subs_tail = s;
    return s;
}

void events_unsubscribe(struct events *hub, struct events_sub *sub)
{
    if (!sub)
        return;
    sub->dead = true;
    hub->has_dead = true;
    if (!hub->delivering)
        sweep(hub);
}

uint64_t events_last_seq(const struct events *hub)
{
    return hub->last_seq;
}

const struct event *events_after(const struct events *hub, uint64_t after)
{
    uint64_t oldest, want;

    if (hub->count == 0 || after >= hub->last_seq)
        return NULL;
    oldest = hub->last_seq - hub->count + 1;
    want = after < oldest ? oldest : after + 1;
    return &hub->ring[(want - 1) % hub->history];
}

const char *event_kind_name(enum event_kind kind)
{
    switch (kind) {
    case EVENT_STATE:
        return "state";
    case EVENT_HEALTH:
        return "health";
    case EVENT_GPU:
        return "gpu";
    case EVENT_DISCOVERY:
        return "discovery";
    case EVENT_PREEMPT:
        return "preempt";
    case EVENT_GPU_OVERUSE:
        return "gpu_overuse";
    }
    return "unknown";
}

static void set_new(json_t *obj, const char *key, json_t *value)
{
    if (!value || json_object_set_new(obj, key, value) < 0)
        fatal("out of memory (event JSON)");
}

json_t *event_to_json(const struct event *ev)
{
    json_t *obj = json_object();

    if (!obj)
        fatal("out of memory (event JSON)");
    set_new(obj, "seq", json_integer((json_int_t)ev->seq));
    set_new(obj, "time", json_time_ms(ev->time_ms));
    set_new(obj, "type", json_string(event_kind_name(ev->kind)));
    set_new(obj, "service", ev->service ? json_text(ev->service) : json_null());
    if (ev->data && json_object_update_missing(obj, ev->data) < 0)
        fatal("out of memory (event JSON)");
    return obj;
}
