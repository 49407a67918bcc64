/* Unit tests for starts on demand, the GPU queue and swaps (core/demand.h), on a real
 * registry, supervisor and event hub with a fake driver (the manifests' `driver: fake`),
 * as test-supervisor.c builds them: no process is spawned, and a run's end comes when a
 * test says so (fake_gone). The GPU services share the supervisor's default box (one GPU of
 * unknown size), so any two of them conflict. Every check is of an outcome, never of a
 * duration: the loop is run until what is awaited happened, with a bound. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/demand.h"
#include "core/driver.h"
#include "core/events.h"
#include "core/registry.h"
#include "core/supervisor.h"
#include "lib/alloc.h"
#include "fake_driver.h"

/* --- the fixture -------------------------------------------------------------------- */

#define ANSWERS_MAX 16

/* What a hold was answered. */
struct answer {
    char *service; /* NULL: none given (DEMAND_GONE) */
    enum demand_outcome outcome;
    char *message;
};

struct fixture {
    char root[64], state[64];
    uv_loop_t loop;
    struct config config;
    struct events *hub;
    struct registry *reg;
    struct supervisor *sup;
    struct demand *demand;
    struct answer answers[ANSWERS_MAX];
    size_t n_answers;
    bool in_hold; /* demand_hold() is on the stack */
};

/* A service folder: name, the fake driver, no health check, and these lines. */
static void write_service(const char *root, const char *name, const char *text)
{
    char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", root, name);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/%s/service.yaml", root, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "name: %s\ndriver: fake\nhealth: false\n%s", name, text);
    fclose(fp);
}

/* The config's terms of demand.c as config_load() sets them by default. */
static void config_defaults(struct config *c)
{
    c->gpu_conflict = GPU_CONFLICT_REFUSE;
    c->swap_grace_ms = CONFIG_SWAP_GRACE_DEFAULT;
    c->swap_max_wait_ms = CONFIG_SWAP_MAX_WAIT_DEFAULT;
    c->swap_drain = false;
    c->min_resident_ms = 0;
    c->gpu_queue_max = CONFIG_GPU_QUEUE_DEFAULT;
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    fake_reset();
    drivers_set(fake_table);
    strcpy(f->root, "/tmp/nanny-demand-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    strcpy(f->state, "/tmp/nanny-demand-state-XXXXXX");
    assert_non_null(mkdtemp(f->state));
    /* GPU services, each by its priority; and two that need no GPU. */
    write_service(f->root, "a", "gpu_required: true\n");
    write_service(f->root, "b", "gpu_required: true\n");
    write_service(f->root, "lo", "gpu_required: true\npriority: 1\n");
    write_service(f->root, "hi", "gpu_required: true\npriority: 5\n");
    write_service(f->root, "top", "gpu_required: true\npriority: 10\n");
    write_service(f->root, "plain", "");
    write_service(f->root, "idler", "idle_timeout: 50ms\n");
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->config.state_dir = f->state;
    f->config.log_max_bytes = CONFIG_LOG_MAX_BYTES;
    f->config.log_max_files = CONFIG_LOG_MAX_FILES;
    config_defaults(&f->config);
    f->hub = events_new(0);
    f->reg = registry_new(&f->loop, f->root, f->hub);
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_int_equal(registry_count(f->reg), 7);
    f->sup = supervisor_new(&f->loop, f->reg, NULL, &f->config, f->hub);
    f->demand = demand_new(&f->loop, f->reg, f->sup, &f->config, f->hub);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    demand_free(f->demand);
    supervisor_free(f->sup);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    registry_free(f->reg);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    events_free(f->hub);
    for (size_t i = 0; i < f->n_answers; i++) {
        free(f->answers[i].service);
        free(f->answers[i].message);
    }
    fake_remove_tree(f->root);
    fake_remove_tree(f->state);
    free(f);
    fake_reset();
    return 0;
}

static struct service *svc(struct fixture *f, const char *name)
{
    return fake_service(f->reg, name);
}

static enum service_state state_of(struct fixture *f, const char *name)
{
    return supervisor_status(f->sup, svc(f, name))->state;
}

/* Lets the loop run what is due (a state write on a worker thread: what waits for it comes
 * after it). */
static void settle(struct fixture *f)
{
    fake_settle(&f->loop, f->sup);
}

/* Runs the loop until name is in state st (bounded: a timer of the test's is due within
 * it). */
static void wait_state(struct fixture *f, const char *name, enum service_state st)
{
    for (int i = 0; i < 5000; i++) {
        settle(f);
        if (state_of(f, name) == st)
            return;
        usleep(1000);
    }
    fail_msg("%s never reached state %d (it is %d)", name, (int)st, (int)state_of(f, name));
}

/* The run of name ends (after a stop). */
static void fake_gone(struct fixture *f, const char *name)
{
    struct fake_run *r = fake_find(name);

    assert_non_null(r);
    r->events->gone(r->data, &r->base);
    settle(f);
}

static void on_supervisor_done(void *data, struct service *s, const struct supervisor_result *res)
{
}

/* Starts name outside demand (as the API would) and lets it settle: it runs. */
static void start(struct fixture *f, const char *name)
{
    supervisor_start(f->sup, svc(f, name), false, false, false, on_supervisor_done, NULL);
    settle(f);
    assert_int_equal(state_of(f, name), STATE_RUNNING);
}

/* Stops name and lets its run end. */
static void stop(struct fixture *f, const char *name)
{
    assert_non_null(supervisor_stop(f->sup, svc(f, name), on_supervisor_done, NULL));
    settle(f);
    fake_gone(f, name);
    assert_int_equal(state_of(f, name), STATE_STOPPED);
}

static void on_held(void *data, struct service *s, const struct demand_answer *a)
{
    struct fixture *f = data;
    struct answer *ans;

    assert_false(f->in_hold); /* never from inside demand_hold() */
    assert_true(f->n_answers < ANSWERS_MAX);
    ans = &f->answers[f->n_answers++];
    ans->service = s ? xstrdup(s->name) : NULL;
    ans->outcome = a->outcome;
    ans->message = a->message ? xstrdup(a->message) : NULL;
}

static struct demand_hold *hold(struct fixture *f, const char *name)
{
    struct demand_hold *h;
    size_t before = f->n_answers;

    f->in_hold = true;
    h = demand_hold(f->demand, svc(f, name), on_held, f);
    f->in_hold = false;
    assert_non_null(h);
    assert_int_equal(f->n_answers, before);
    return h;
}

/* The number of holds answered outcome. */
static size_t answered(struct fixture *f, enum demand_outcome outcome)
{
    size_t n = 0;

    for (size_t i = 0; i < f->n_answers; i++)
        n += f->answers[i].outcome == outcome;
    return n;
}

/* Runs the loop until n holds are answered (bounded). */
static void wait_answers(struct fixture *f, size_t n)
{
    for (int i = 0; i < 5000 && f->n_answers < n; i++) {
        settle(f);
        if (f->n_answers < n)
            usleep(1000);
    }
    assert_int_equal(f->n_answers, n);
}

/* The queue's entry at i (asserting it is there). */
static json_t *queue_at(json_t *queue, size_t i)
{
    json_t *e = json_array_get(queue, i);

    assert_non_null(e);
    return e;
}

static const char *entry_str(json_t *e, const char *key)
{
    const char *s = json_string_value(json_object_get(e, key));

    assert_non_null(s);
    return s;
}

static json_int_t entry_int(json_t *e, const char *key)
{
    json_t *v = json_object_get(e, key);

    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* The queue is empty now. */
static void assert_queue_empty(struct fixture *f)
{
    json_t *queue = demand_queue(f->demand);

    assert_int_equal(json_array_size(queue), 0);
    json_decref(queue);
}

/* --- the tests ---------------------------------------------------------------------- */

/* Several holds for a stopped service: one start serves them all, and each is answered
 * READY once it runs, never from inside demand_hold(). */
static void test_cold_start(void **state)
{
    struct fixture *f = *state;

    hold(f, "a");
    hold(f, "a");
    hold(f, "a");
    assert_int_equal(demand_held(f->demand, "a"), 3);
    assert_int_equal(f->n_answers, 0);
    wait_answers(f, 3);
    assert_int_equal(answered(f, DEMAND_READY), 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(f->answers[i].service, "a");
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_int_equal(fake.starts, 1);
    assert_int_equal(demand_held(f->demand, "a"), 0);
    assert_true(demand_admits(f->demand, svc(f, "a")));
    assert_queue_empty(f);

    /* It runs: a new hold is answered READY with no other start. */
    hold(f, "a");
    wait_answers(f, 4);
    assert_int_equal(f->answers[3].outcome, DEMAND_READY);
    assert_int_equal(fake.starts, 1);

    /* A service that needs no GPU alike. */
    hold(f, "plain");
    hold(f, "plain");
    wait_answers(f, 6);
    assert_int_equal(answered(f, DEMAND_READY), 6);
    assert_int_equal(fake_starts_of("plain"), 1);
    assert_int_equal(state_of(f, "plain"), STATE_RUNNING);
}

/* With refuse and equal priorities, a start for a taken GPU waits in the queue, and goes
 * once the holder stops. */
static void test_gpu_queue(void **state)
{
    struct fixture *f = *state;
    const struct service_status *st;
    json_t *queue, *e;

    start(f, "a");
    assert_false(demand_admits(f->demand, svc(f, "b"))); /* it does not run */
    hold(f, "b");
    settle(f);
    assert_int_equal(f->n_answers, 0);
    assert_int_equal(state_of(f, "b"), STATE_STOPPED);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);

    queue = demand_queue(f->demand);
    assert_int_equal(json_array_size(queue), 1);
    e = queue_at(queue, 0);
    assert_string_equal(entry_str(e, "service"), "b");
    assert_int_equal(entry_int(e, "requests"), 1);
    assert_int_equal(entry_int(e, "priority"), 0);
    assert_true(json_is_false(json_object_get(e, "swap")));
    assert_int_equal(json_array_size(json_object_get(e, "holders")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(e, "holders"), 0)), "a");
    json_decref(queue);

    st = supervisor_status(f->sup, svc(f, "b"));
    assert_true(st->waiting.since_ms != 0);
    assert_int_equal(st->waiting.requests, 1);
    assert_false(st->waiting.swap);
    /* The holder is not swapped out: new requests still go to it. */
    assert_true(demand_admits(f->demand, svc(f, "a")));

    /* The GPU frees: b starts, and the hold goes on to it. */
    stop(f, "a");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
    assert_string_equal(f->answers[0].service, "b");
    assert_int_equal(state_of(f, "b"), STATE_RUNNING);
    assert_int_equal(fake_starts_of("b"), 1);
    assert_queue_empty(f);
    assert_int_equal(supervisor_status(f->sup, svc(f, "b"))->waiting.since_ms, 0);
}

/* A start of a higher priority swaps the holder out: it waits for the holder's request in
 * flight, which it still lets new ones in meanwhile (swap_max_wait not gone by), then
 * stops it and starts. */
static void test_swap(void **state)
{
    struct fixture *f = *state;
    json_t *queue, *e;

    start(f, "a");
    demand_begin(f->demand, "a");
    assert_int_equal(demand_in_flight(f->demand, "a"), 1);
    hold(f, "hi");
    settle(f);

    queue = demand_queue(f->demand);
    assert_int_equal(json_array_size(queue), 1);
    e = queue_at(queue, 0);
    assert_string_equal(entry_str(e, "service"), "hi");
    assert_int_equal(entry_int(e, "priority"), 5);
    assert_int_equal(entry_int(e, "requests"), 1);
    assert_true(json_is_true(json_object_get(e, "swap")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(e, "holders"), 0)), "a");
    json_decref(queue);
    assert_true(supervisor_status(f->sup, svc(f, "hi"))->waiting.swap);

    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_int_equal(fake.stops, 0);
    assert_int_equal(f->n_answers, 0);
    assert_true(demand_admits(f->demand, svc(f, "a")));

    /* Its last request ends: a is stopped for hi, which then starts. */
    demand_end(f->demand, "a");
    assert_int_equal(demand_in_flight(f->demand, "a"), 0);
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_STOPPING);
    assert_false(demand_admits(f->demand, svc(f, "a")));
    assert_int_equal(f->n_answers, 0);
    fake_gone(f, "a");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
    assert_string_equal(f->answers[0].service, "hi");
    assert_int_equal(state_of(f, "a"), STATE_STOPPED);
    assert_int_equal(state_of(f, "hi"), STATE_RUNNING);
    assert_queue_empty(f);
}

/* With swap_drain, a holder to be swapped out lets no new request in, at once. */
static void test_swap_drain(void **state)
{
    struct fixture *f = *state;

    f->config.swap_drain = true;
    start(f, "a");
    assert_true(demand_admits(f->demand, svc(f, "a"))); /* no swap yet */
    demand_begin(f->demand, "a");
    hold(f, "hi");
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_true(supervisor_status(f->sup, svc(f, "hi"))->waiting.swap);
    assert_false(demand_admits(f->demand, svc(f, "a")));

    /* The swap goes on as without it. */
    demand_end(f->demand, "a");
    settle(f);
    fake_gone(f, "a");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
    assert_int_equal(state_of(f, "hi"), STATE_RUNNING);
}

/* A queued start's only hold goes: it leaves the queue, and nothing starts when the GPU
 * frees. */
static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct demand_hold *h;
    json_t *queue;

    start(f, "a");
    h = hold(f, "b");
    settle(f);
    queue = demand_queue(f->demand);
    assert_int_equal(json_array_size(queue), 1);
    json_decref(queue);

    demand_hold_cancel(h);
    settle(f);
    assert_queue_empty(f);
    assert_int_equal(demand_held(f->demand, "b"), 0);
    assert_int_equal(supervisor_status(f->sup, svc(f, "b"))->waiting.since_ms, 0);

    stop(f, "a");
    settle(f);
    assert_int_equal(state_of(f, "b"), STATE_STOPPED);
    assert_int_equal(fake_starts_of("b"), 0);
    assert_int_equal(f->n_answers, 0);
}

/* The queue is served by priority, then first come. */
static void test_priority_order(void **state)
{
    struct fixture *f = *state;
    json_t *queue;

    start(f, "top");
    hold(f, "lo");
    settle(f);
    hold(f, "hi");
    settle(f);
    queue = demand_queue(f->demand);
    assert_int_equal(json_array_size(queue), 2);
    assert_string_equal(entry_str(queue_at(queue, 0), "service"), "hi");
    assert_string_equal(entry_str(queue_at(queue, 1), "service"), "lo");
    assert_true(json_is_false(json_object_get(queue_at(queue, 0), "swap")));
    assert_true(json_is_false(json_object_get(queue_at(queue, 1), "swap")));
    json_decref(queue);
    assert_int_equal(state_of(f, "top"), STATE_RUNNING);

    /* The GPU frees: the first served starts; the other waits for it now. */
    stop(f, "top");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
    assert_string_equal(f->answers[0].service, "hi");
    assert_int_equal(state_of(f, "hi"), STATE_RUNNING);
    assert_int_equal(state_of(f, "lo"), STATE_STOPPED);
    settle(f);
    queue = demand_queue(f->demand);
    assert_int_equal(json_array_size(queue), 1);
    assert_string_equal(entry_str(queue_at(queue, 0), "service"), "lo");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(queue_at(queue, 0), "holders"), 0)), "hi");
    json_decref(queue);
}

/* More requests held for the GPU than gpu_queue_max: the one beyond is answered FULL, the
 * other stays and is served. */
static void test_queue_bound(void **state)
{
    struct fixture *f = *state;
    json_t *queue;

    f->config.gpu_queue_max = 1;
    start(f, "a");
    hold(f, "b");
    hold(f, "b");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_FULL);
    assert_non_null(f->answers[0].message);
    assert_int_equal(demand_held(f->demand, "b"), 1);
    queue = demand_queue(f->demand);
    assert_int_equal(json_array_size(queue), 1);
    assert_int_equal(entry_int(queue_at(queue, 0), "requests"), 1);
    json_decref(queue);

    /* One more, once the queue is full: FULL too. */
    hold(f, "b");
    wait_answers(f, 2);
    assert_int_equal(f->answers[1].outcome, DEMAND_FULL);
    assert_int_equal(demand_held(f->demand, "b"), 1);

    stop(f, "a");
    wait_answers(f, 3);
    assert_int_equal(f->answers[2].outcome, DEMAND_READY);
    assert_int_equal(state_of(f, "b"), STATE_RUNNING);
}

/* The manifest's idle_timeout stops a service once its last request ended; a request that
 * begins meanwhile takes the pending stop back. */
static void test_idle_timeout(void **state)
{
    struct fixture *f = *state;

    start(f, "idler");
    demand_begin(f->demand, "idler");
    demand_end(f->demand, "idler");
    assert_true(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms != 0);
    demand_begin(f->demand, "idler"); /* before the loop runs: the timer is stopped */
    assert_int_equal(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms, 0);
    demand_end(f->demand, "idler");
    assert_true(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms != 0);

    wait_state(f, "idler", STATE_STOPPING);
    assert_int_equal(fake.stops, 1);
    fake_gone(f, "idler");
    assert_int_equal(state_of(f, "idler"), STATE_STOPPED);
    assert_int_equal(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms, 0);
}

/* A service stopped by the API loses its idle clock: started again by the API, with no
 * proxied request since, it is not stopped for idleness. */
static void test_a_stop_ends_the_idle_clock(void **state)
{
    struct fixture *f = *state;

    start(f, "idler");
    demand_begin(f->demand, "idler");
    demand_end(f->demand, "idler");
    assert_true(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms != 0);
    stop(f, "idler");
    assert_int_equal(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms, 0);
    start(f, "idler");
    for (int i = 0; i < 150; i++) { /* three idle_timeouts */
        settle(f);
        usleep(1000);
    }
    assert_int_equal(state_of(f, "idler"), STATE_RUNNING);
    assert_int_equal(fake.stops, 1);
    assert_int_equal(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms, 0);
}

/* A start on demand that every client left before it was up: its idle clock begins once
 * it runs, and it is stopped an idle_timeout later. */
static void test_a_start_every_client_left_stops_when_idle(void **state)
{
    struct fixture *f = *state;
    struct demand_hold *h;

    fake.start_result = 1; /* it stays starting until the driver says it started */
    h = hold(f, "idler");
    wait_state(f, "idler", STATE_STARTING);
    demand_hold_cancel(h);
    settle(f);
    assert_int_equal(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms, 0);
    fake_find("idler")->events->started(fake_find("idler")->data, &fake_find("idler")->base, NULL);
    wait_state(f, "idler", STATE_RUNNING);
    assert_true(supervisor_status(f->sup, svc(f, "idler"))->idle_stop_at_ms != 0);
    wait_state(f, "idler", STATE_STOPPING);
    assert_int_equal(f->n_answers, 0);
}

/* gpu_conflict: preempt swaps even for an equal priority. */
static void test_preempt_swaps_equal_priority(void **state)
{
    struct fixture *f = *state;

    f->config.gpu_conflict = GPU_CONFLICT_PREEMPT;
    start(f, "a");
    hold(f, "b");
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_STOPPING); /* no request in flight: at once */
    fake_gone(f, "a");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
    assert_string_equal(f->answers[0].service, "b");
    assert_int_equal(state_of(f, "b"), STATE_RUNNING);
}

/* A holder that has not run its min_resident is not swapped out yet: the start waits in
 * the queue (swap false) and the holder goes on taking requests. */
static void test_min_resident(void **state)
{
    struct fixture *f = *state;
    struct demand_hold *h;
    json_t *queue;

    f->config.min_resident_ms = 10 * 60 * 1000;
    start(f, "a");
    h = hold(f, "hi");
    settle(f);
    queue = demand_queue(f->demand);
    assert_int_equal(json_array_size(queue), 1);
    assert_string_equal(entry_str(queue_at(queue, 0), "service"), "hi");
    assert_true(json_is_false(json_object_get(queue_at(queue, 0), "swap")));
    json_decref(queue);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_int_equal(fake.stops, 0);
    assert_true(demand_admits(f->demand, svc(f, "a")));
    demand_hold_cancel(h);
    settle(f);
    assert_queue_empty(f);
}

/* swap_max_wait gone by (0 here): the holder to be swapped out lets no new request in. */
static void test_swap_max_wait(void **state)
{
    struct fixture *f = *state;

    f->config.swap_max_wait_ms = 0;
    start(f, "a");
    demand_begin(f->demand, "a");
    hold(f, "hi");
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_false(demand_admits(f->demand, svc(f, "a")));
    demand_end(f->demand, "a");
    settle(f);
    fake_gone(f, "a");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
}

/* swap_grace gone by with a request still in flight: the holder is stopped anyway. */
static void test_swap_grace(void **state)
{
    struct fixture *f = *state;

    f->config.swap_grace_ms = 50;
    start(f, "a");
    demand_begin(f->demand, "a");
    hold(f, "hi");
    settle(f);
    wait_state(f, "a", STATE_STOPPING);
    assert_int_equal(demand_in_flight(f->demand, "a"), 1);
    fake_gone(f, "a");
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
    assert_int_equal(state_of(f, "hi"), STATE_RUNNING);
    demand_end(f->demand, "a"); /* the cut request ends */
    settle(f);
}

/* The swap's only hold goes (with swap_drain): the holder is let be, a request held for it
 * meanwhile goes on to it, and new ones are let in again; its last request ending stops
 * nothing. */
static void test_swap_cancelled(void **state)
{
    struct fixture *f = *state;
    struct demand_hold *h;

    f->config.swap_drain = true;
    start(f, "a");
    demand_begin(f->demand, "a");
    h = hold(f, "hi");
    settle(f);
    assert_false(demand_admits(f->demand, svc(f, "a")));
    hold(f, "a"); /* held, as the proxy does when a does not admit it */
    settle(f);
    assert_int_equal(f->n_answers, 0);

    demand_hold_cancel(h);
    wait_answers(f, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_READY);
    assert_string_equal(f->answers[0].service, "a");
    assert_true(demand_admits(f->demand, svc(f, "a")));
    demand_end(f->demand, "a");
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_int_equal(fake.stops, 0);
    assert_int_equal(fake_starts_of("hi"), 0);
    assert_queue_empty(f);
}

static void remove_service(struct fixture *f, const char *name)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s/service.yaml", f->root, name);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/%s", f->root, name);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_null(registry_find(f->reg, name));
}

/* A service removed while its start waits in the GPU queue: its holds are answered
 * DEMAND_GONE at once (the rescan's discovery event wakes the demand), not at their
 * deadline. */
static void test_removed_while_queued(void **state)
{
    struct fixture *f = *state;

    start(f, "a");
    hold(f, "b");
    settle(f);
    remove_service(f, "b");
    for (int i = 0; i < 200 && f->n_answers == 0; i++) {
        settle(f);
        if (f->n_answers == 0)
            usleep(1000);
    }
    assert_int_equal(f->n_answers, 1);
    assert_int_equal(f->answers[0].outcome, DEMAND_GONE);
    assert_null(f->answers[0].service);
    assert_queue_empty(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cold_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gpu_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_stop_ends_the_idle_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_start_every_client_left_stops_when_idle, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_preempt_swaps_equal_priority, setup, teardown),
        cmocka_unit_test_setup_teardown(test_min_resident, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_max_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removed_while_queued, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
