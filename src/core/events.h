/* The event hub: every change of a service that others care about is published once,
 * in order, with a sequence number that only grows, and kept in a bounded history.
 * Everything runs on the loop's thread: no locks. */
#ifndef NANNY_EVENTS_H
#define NANNY_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum event_kind {
    EVENT_STATE,       /* a service's state changed: {"from","to","reason"?} */
    EVENT_HEALTH,      /* is_healthy flipped: {"healthy","ok" (both is_healthy),"status_code",
                        * "latency_ms" (null before a check),"error" (null)} */
    EVENT_GPU,         /* the GPU holder changed: {"holder": name|null, "holders": [names],
                        * "queue": [services whose start waits for the GPU]} */
    EVENT_DISCOVERY,   /* a rescan changed the services: {"added":[],"removed":[],"changed":[]} */
    EVENT_PREEMPT,     /* a service is stopped to free the GPU: {"for": name} */
    EVENT_GPU_OVERUSE, /* a service uses more GPU memory than it declares, or no longer:
                        * {"over": bool, "gpu": index, "used", "declared" (bytes),
                        * "enforced": bool (gpu.enforce: it is stopped)} */
};

#define EVENTS_HISTORY_DEFAULT 1024

/* Publishes made from inside callbacks wait in a queue of at most this many times the
 * history; more is a feedback loop between subscribers, a broken invariant: fatal(). */
#define EVENTS_PENDING_FACTOR 4

struct event {
    uint64_t seq;    /* 1, 2, 3, ...: only grows, never reused */
    int64_t time_ms; /* Unix time when published */
    enum event_kind kind;
    const char *service; /* the service it is about, or NULL */
    json_t *data;        /* a JSON object: the kind's fields (borrowed during callbacks) */
};

struct events;
struct events_sub;
typedef void (*events_fn)(void *data, const struct event *ev);

/* A hub keeping the last history events (0: EVENTS_HISTORY_DEFAULT). */
struct events *events_new(size_t history);

/* Frees the hub, its history, its queue and every subscription still held (NULL is fine).
 * Calling it from inside a callback is a broken invariant: fatal(). */
void events_free(struct events *hub);

/* Publishes: takes the reference to data (NULL: an empty object; anything but an object is
 * a broken invariant: fatal()), copies service, stamps seq and time, keeps it in the
 * history, calls every subscriber. Returns seq.
 * A publish from inside a subscriber's callback is queued and delivered after the
 * current event has reached every subscriber, so every subscriber sees every event in seq
 * order. It enters the history (and events_last_seq) at once, before its delivery; outside
 * any callback the queue is empty, so the history holds exactly what was delivered. */
uint64_t events_publish(struct events *hub, enum event_kind kind, const char *service,
                        json_t *data);

/* Calls fn(data, ev) for every event published from now on, until unsubscribed. The hub
 * owns the returned subscription; it is freed by events_unsubscribe or events_free. */
struct events_sub *events_subscribe(struct events *hub, events_fn fn, void *data);

/* Safe at any time, including inside any callback (its own included): the subscriber is
 * never called again. A subscriber added inside a callback first hears the next event
 * delivered. Once per subscription: sub is freed (at once, or after the delivery on the
 * stack). NULL is fine. */
void events_unsubscribe(struct events *hub, struct events_sub *sub);

/* The seq of the last event published, 0 before the first. */
uint64_t events_last_seq(const struct events *hub);

/* The oldest event kept with seq > after, or NULL: walking the history for a client
 * that reconnects with Last-Event-ID (SSE). Valid until the next publish. */
const struct event *events_after(const struct events *hub, uint64_t after);

/* "state", "health", "gpu", "discovery", "preempt", "gpu_overuse" ("unknown" for anything
 * else). */
const char *event_kind_name(enum event_kind kind);

/* {"seq":N,"time":"2026-12-02T19:31:16.123Z","type":"state","service":"x", ...data's members}
 * (new reference). service is null for an event about no service; a member of data named
 * seq, time, type or service is left out. */
json_t *event_to_json(const struct event *ev);

#endif
