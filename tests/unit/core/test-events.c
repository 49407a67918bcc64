/* Unit tests for events.c: seq and history, delivery order with subscribers that come,
 * go and publish from inside their callbacks, the JSON shape, and ownership. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/events.h"

#define SEEN_MAX 64

/* A subscriber that records what it hears and, on one seq, does what it is told. */
struct listener {
    struct events *hub;
    struct events_sub *sub;
    uint64_t seen[SEEN_MAX];
    size_t n;
    uint64_t act_on;              /* the seq on which to act; 0: never */
    struct listener *drop[3];     /* unsubscribed on act_on (itself included, if named) */
    struct listener *add;         /* subscribed on act_on */
    int publish;                  /* events published on act_on */
    uint64_t published[8];        /* the seqs the first of them returned */
    struct listener *watch;       /* another listener, whose count is noted at publish */
    size_t watch_n_after_publish; /* watch->n right after the publishes returned */
};

static void hear(void *data, const struct event *ev)
{
    struct listener *l = data;

    assert_true(l->n < SEEN_MAX);
    l->seen[l->n++] = ev->seq;
    if (ev->seq != l->act_on)
        return;
    for (size_t i = 0; i < 3; i++)
        if (l->drop[i])
            events_unsubscribe(l->hub, l->drop[i]->sub);
    for (int i = 0; i < l->publish; i++) {
        uint64_t seq = events_publish(l->hub, EVENT_GPU, NULL, NULL);

        if (i < 8)
            l->published[i] = seq;
    }
    if (l->watch)
        l->watch_n_after_publish = l->watch->n;
    if (l->add)
        l->add->sub = events_subscribe(l->hub, hear, l->add);
}

static void listen(struct events *hub, struct listener *l)
{
    l->hub = hub;
    l->sub = events_subscribe(hub, hear, l);
}

/* Checks that l heard exactly first, first + 1, ..., last. */
static void assert_heard(const struct listener *l, uint64_t first, uint64_t last)
{
    assert_int_equal(l->n, last - first + 1);
    for (size_t i = 0; i < l->n; i++)
        assert_int_equal(l->seen[i], first + i);
}

static uint64_t publish_state(struct events *hub, const char *service, const char *to)
{
    return events_publish(hub, EVENT_STATE, service, json_pack("{s:s,s:s}", "from", "x", "to", to));
}

static void test_seq_starts_at_one_and_grows(void **state)
{
    struct events *hub = events_new(4);
    const struct event *ev;

    assert_int_equal(events_last_seq(hub), 0);
    assert_null(events_after(hub, 0));
    assert_int_equal(publish_state(hub, "a", "starting"), 1);
    assert_int_equal(events_publish(hub, EVENT_GPU, NULL, NULL), 2);
    assert_int_equal(publish_state(hub, "b", "running"), 3);
    assert_int_equal(events_last_seq(hub), 3);

    ev = events_after(hub, 0);
    assert_non_null(ev);
    assert_int_equal(ev->seq, 1);
    assert_int_equal(ev->kind, EVENT_STATE);
    assert_string_equal(ev->service, "a");
    assert_string_equal(json_string_value(json_object_get(ev->data, "to")), "starting");
    assert_true(ev->time_ms > 0);

    ev = events_after(hub, 1);
    assert_int_equal(ev->seq, 2);
    assert_int_equal(ev->kind, EVENT_GPU);
    assert_null(ev->service);
    /* NULL data is an empty object. */
    assert_true(json_is_object(ev->data));
    assert_int_equal(json_object_size(ev->data), 0);

    assert_int_equal(events_after(hub, 2)->seq, 3);
    assert_null(events_after(hub, 3));
    assert_null(events_after(hub, 1000));
    events_free(hub);
}

/* The service is copied: the caller's buffer may change after the publish. */
static void test_service_is_copied(void **state)
{
    struct events *hub = events_new(2);
    char name[] = "alpha";

    publish_state(hub, name, "running");
    memcpy(name, "omega", 5);
    assert_string_equal(events_after(hub, 0)->service, "alpha");
    events_free(hub);
}

static void test_history_is_bounded(void **state)
{
    struct events *hub = events_new(1000);
    const struct event *ev;
    uint64_t seq = 0;

    for (int i = 1; i <= 3000; i++)
        assert_int_equal(events_publish(hub, EVENT_HEALTH, "svc", json_pack("{s:i}", "i", i)), i);
    assert_int_equal(events_last_seq(hub), 3000);

    ev = events_after(hub, 0);
    assert_non_null(ev);
    assert_int_equal(ev->seq, 2001);
    for (; ev; ev = events_after(hub, ev->seq)) {
        if (seq)
            assert_int_equal(ev->seq, seq + 1);
        seq = ev->seq;
        assert_int_equal(json_integer_value(json_object_get(ev->data, "i")), (json_int_t)seq);
    }
    assert_int_equal(seq, 3000);

    /* A seq older than kept gives the oldest kept; one inside gives the next. */
    assert_int_equal(events_after(hub, 5)->seq, 2001);
    assert_int_equal(events_after(hub, 2000)->seq, 2001);
    assert_int_equal(events_after(hub, 2500)->seq, 2501);
    assert_int_equal(events_after(hub, 2999)->seq, 3000);
    assert_null(events_after(hub, 3000));
    events_free(hub);
}

static void test_default_history(void **state)
{
    struct events *hub = events_new(0);

    for (int i = 0; i < EVENTS_HISTORY_DEFAULT + 10; i++)
        events_publish(hub, EVENT_GPU, NULL, NULL);
    assert_int_equal(events_after(hub, 0)->seq, 11);
    events_free(hub);
}

/* The history owns one reference to each kept event's data and drops it with the event. */
static void test_data_reference_is_taken_and_dropped(void **state)
{
    struct events *hub = events_new(2);
    json_t *data = json_pack("{s:b}", "healthy", 1);
    json_t *kept = json_pack("{s:b}", "healthy", 0);

    json_incref(data);
    json_incref(kept);
    events_publish(hub, EVENT_HEALTH, "a", data);
    assert_int_equal(data->refcount, 2);
    events_publish(hub, EVENT_HEALTH, "a", kept);
    events_publish(hub, EVENT_HEALTH, "a", NULL); /* pushes data out of the history */
    assert_int_equal(data->refcount, 1);
    assert_int_equal(kept->refcount, 2);
    events_free(hub);
    assert_int_equal(kept->refcount, 1);
    json_decref(data);
    json_decref(kept);
}

static void test_two_subscribers_hear_everything_in_order(void **state)
{
    struct events *hub = events_new(8);
    struct listener a = {0}, b = {0};

    publish_state(hub, "early", "running"); /* before anyone listens */
    listen(hub, &a);
    listen(hub, &b);
    for (int i = 0; i < 20; i++)
        publish_state(hub, "a", "running");
    assert_heard(&a, 2, 21);
    assert_heard(&b, 2, 21);
    events_free(hub);
}

static void test_unsubscribe_self_inside_callback(void **state)
{
    struct events *hub = events_new(8);
    struct listener a = {0}, b = {0}, c = {0};

    listen(hub, &a);
    listen(hub, &b);
    listen(hub, &c);
    b.act_on = 2;
    b.drop[0] = &b;
    for (int i = 0; i < 4; i++)
        publish_state(hub, "a", "running");
    assert_heard(&a, 1, 4);
    assert_heard(&b, 1, 2);
    assert_heard(&c, 1, 4); /* the one after it in the list still heard event 2 */
    events_free(hub);
}

/* A callback drops one subscriber before it in the list and one after it: the one after
 * does not hear even the current event; neither hears anything later. */
static void test_unsubscribe_others_inside_callback(void **state)
{
    struct events *hub = events_new(8);
    struct listener x = {0}, a = {0}, b = {0}, c = {0};

    listen(hub, &x);
    listen(hub, &a);
    listen(hub, &b);
    listen(hub, &c);
    a.act_on = 2;
    a.drop[0] = &x;
    a.drop[1] = &b;
    for (int i = 0; i < 4; i++)
        publish_state(hub, "a", "running");
    assert_heard(&x, 1, 2);
    assert_heard(&a, 1, 4);
    assert_heard(&b, 1, 1);
    assert_heard(&c, 1, 4);
    events_free(hub);
}

static void test_unsubscribe_outside_callback(void **state)
{
    struct events *hub = events_new(8);
    struct listener a = {0}, b = {0};

    listen(hub, &a);
    listen(hub, &b);
    publish_state(hub, "a", "running");
    events_unsubscribe(hub, a.sub);
    events_unsubscribe(hub, NULL);
    publish_state(hub, "a", "running");
    assert_heard(&a, 1, 1);
    assert_heard(&b, 1, 2);
    /* The last one gone, and a new one after: the list mends. */
    events_unsubscribe(hub, b.sub);
    listen(hub, &a);
    publish_state(hub, "a", "running");
    assert_int_equal(a.n, 2);
    assert_int_equal(a.seen[1], 3);
    assert_heard(&b, 1, 2);
    events_free(hub);
}

/* Publishes from callbacks are queued: the publish returns its seq at once, nobody hears
 * it before the current event reached everyone, and everyone hears all in seq order. */
static void test_publish_inside_callback(void **state)
{
    struct events *hub = events_new(8);
    struct listener a = {0}, b = {0}, c = {0};

    listen(hub, &a);
    listen(hub, &b);
    listen(hub, &c);
    a.act_on = 1;
    a.publish = 2;
    a.watch = &c;
    b.act_on = 2; /* an event that itself came from the queue */
    b.publish = 1;
    b.watch = &c;
    assert_int_equal(publish_state(hub, "a", "running"), 1);
    assert_int_equal(a.published[0], 2);
    assert_int_equal(a.published[1], 3);
    assert_int_equal(b.published[0], 4);
    assert_int_equal(a.watch_n_after_publish, 0); /* c had not heard 1 yet, let alone 2 */
    assert_int_equal(b.watch_n_after_publish, 1); /* c heard 1, not 2 */
    assert_heard(&a, 1, 4);
    assert_heard(&b, 1, 4);
    assert_heard(&c, 1, 4);
    assert_int_equal(events_last_seq(hub), 4);
    assert_int_equal(events_after(hub, 3)->kind, EVENT_GPU);

    /* Later publishes go straight through again. */
    assert_int_equal(publish_state(hub, "a", "stopping"), 5);
    assert_heard(&c, 1, 5);
    events_free(hub);
}

/* A subscriber added inside a callback first hears the next event delivered, also one
 * that was queued before it came. */
static void test_subscribe_inside_callback(void **state)
{
    struct events *hub = events_new(8);
    struct listener a = {0}, b = {0}, d = {0}, e = {0};

    d.hub = hub;
    e.hub = hub;
    listen(hub, &a);
    listen(hub, &b);
    a.act_on = 2;
    a.add = &d;
    b.act_on = 3;
    b.publish = 1; /* seq 4, queued before e comes */
    b.add = &e;
    publish_state(hub, "a", "running");
    publish_state(hub, "a", "running");
    publish_state(hub, "a", "running");
    publish_state(hub, "a", "running");
    assert_heard(&a, 1, 5);
    assert_heard(&b, 1, 5);
    assert_heard(&d, 3, 5);
    assert_heard(&e, 4, 5);
    events_free(hub);
}

/* The queue takes EVENTS_PENDING_FACTOR * history publishes from callbacks; the full
 * count is delivered. */
static void test_queue_up_to_its_cap(void **state)
{
    struct events *hub = events_new(1);
    struct listener a = {0}, b = {0};

    listen(hub, &a);
    listen(hub, &b);
    a.act_on = 1;
    a.publish = EVENTS_PENDING_FACTOR;
    /* Its own seq, though the ring of one has moved on by the time it returns. */
    assert_int_equal(publish_state(hub, "a", "running"), 1);
    assert_heard(&a, 1, 1 + EVENTS_PENDING_FACTOR);
    assert_heard(&b, 1, 1 + EVENTS_PENDING_FACTOR);
    events_free(hub);
}

/* One publish more from a callback than the queue takes. */
static void publish_too_many(void)
{
    struct events *hub = events_new(1);
    struct listener a = {0};

    listen(hub, &a);
    a.act_on = 1;
    a.publish = EVENTS_PENDING_FACTOR + 1;
    publish_state(hub, "a", "running");
}

static void publish_an_array(void)
{
    events_publish(events_new(1), EVENT_GPU, NULL, json_array());
}

/* Runs fn in a child with stderr silenced; true when it aborted. */
static bool aborts(void (*fn)(void))
{
    int status;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(2);
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void test_broken_invariants_are_fatal(void **state)
{
    assert_true(aborts(publish_an_array));
    assert_true(aborts(publish_too_many));
}

static void ignore(void *data, const struct event *ev)
{
}

/* Freeing with subscribers, a wrapped history and a queue left behind leaks nothing (the
 * ASan build checks it). */
static void test_free_with_subscribers_and_history(void **state)
{
    struct events *hub = events_new(3);

    events_subscribe(hub, ignore, NULL);
    events_subscribe(hub, ignore, NULL);
    for (int i = 0; i < 10; i++)
        publish_state(hub, "a", "running");
    events_free(hub);
    events_free(NULL);
}

static void test_to_json(void **state)
{
    json_t *data = json_pack("{s:s,s:s,s:s,s:i}", "from", "starting", "to", "running", "reason",
                             "healthy", "seq", 99);
    struct event ev = {
        .seq = 42,
        .time_ms = 1796239876123,
        .kind = EVENT_STATE,
        .service = "upscale-api",
        .data = data,
    };
    json_t *j = event_to_json(&ev);

    assert_int_equal(json_object_size(j), 7);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 42); /* not data's */
    assert_string_equal(json_string_value(json_object_get(j, "time")), "2026-12-02T19:31:16.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "state");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "upscale-api");
    assert_string_equal(json_string_value(json_object_get(j, "from")), "starting");
    assert_string_equal(json_string_value(json_object_get(j, "to")), "running");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "healthy");
    assert_int_equal(data->refcount, 1);
    json_decref(j);

    ev.kind = EVENT_GPU;
    ev.service = NULL;
    ev.time_ms = 5;
    ev.data = json_pack("{s:n}", "holder");
    j = event_to_json(&ev);
    assert_true(json_is_null(json_object_get(j, "service")));
    assert_true(json_is_null(json_object_get(j, "holder")));
    assert_string_equal(json_string_value(json_object_get(j, "type")), "gpu");
    assert_string_equal(json_string_value(json_object_get(j, "time")), "1970-01-01T00:00:00.005Z");
    json_decref(j);
    json_decref(ev.data);
    json_decref(data);
}

static void test_kind_names(void **state)
{
    assert_string_equal(event_kind_name(EVENT_STATE), "state");
    assert_string_equal(event_kind_name(EVENT_HEALTH), "health");
    assert_string_equal(event_kind_name(EVENT_GPU), "gpu");
    assert_string_equal(event_kind_name(EVENT_DISCOVERY), "discovery");
    assert_string_equal(event_kind_name(EVENT_PREEMPT), "preempt");
    assert_string_equal(event_kind_name(EVENT_GPU_OVERUSE), "gpu_overuse");
    assert_string_equal(event_kind_name((enum event_kind)77), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_starts_at_one_and_grows),
        cmocka_unit_test(test_service_is_copied),
        cmocka_unit_test(test_history_is_bounded),
        cmocka_unit_test(test_default_history),
        cmocka_unit_test(test_data_reference_is_taken_and_dropped),
        cmocka_unit_test(test_two_subscribers_hear_everything_in_order),
        cmocka_unit_test(test_unsubscribe_self_inside_callback),
        cmocka_unit_test(test_unsubscribe_others_inside_callback),
        cmocka_unit_test(test_unsubscribe_outside_callback),
        cmocka_unit_test(test_publish_inside_callback),
        cmocka_unit_test(test_subscribe_inside_callback),
        cmocka_unit_test(test_queue_up_to_its_cap),
        cmocka_unit_test(test_broken_invariants_are_fatal),
        cmocka_unit_test(test_free_with_subscribers_and_history),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_kind_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
