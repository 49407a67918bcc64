/* Unit tests for the supervisor with a fake driver (one more row in the table of drivers,
 * named by the manifests' `driver: fake`): starts, forced starts, stops, restarts,
 * adoption and cancellation, with no process spawned. The fake's runs end when a test
 * says so (fake_gone), as a real one's end comes later from the kernel or the engine. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/driver.h"
#include "core/events.h"
#include "core/inventory.h"
#include "core/op.h"
#include "core/registry.h"
#include "core/supervisor.h"
#include "lib/alloc.h"
#include "fake_driver.h"

/* --- the fake driver's helpers (tests/unit/core/fake_driver.h) ----------------------- */

struct fixture;
static struct fixture *fixture; /* the running test's, for the fake's helpers */
static void settle(struct fixture *f);

/* The run of name ends (after a stop, or by itself). */
static void fake_gone(const char *name)
{
    struct fake_run *r = fake_find(name);

    assert_non_null(r);
    r->events->gone(r->data, &r->base);
    settle(fixture);
}

static void fake_exited(const char *name, int status)
{
    struct fake_run *r = fake_find(name);

    assert_non_null(r);
    r->events->exited(r->data, &r->base, status, 0);
    r->events->gone(r->data, &r->base);
    settle(fixture);
}

static void fake_started(const char *name, const char *error)
{
    struct fake_run *r = fake_find(name);

    assert_non_null(r);
    r->events->started(r->data, &r->base, error);
    settle(fixture);
}

/* --- the fixture -------------------------------------------------------------------- */

#define ANSWERS_MAX 16

struct answer {
    char *service;
    enum supervisor_outcome outcome;
    char *holder, *message;
    json_t *preempted;
};

struct fixture {
    char root[64], state[64];
    uv_loop_t loop;
    struct config config;
    struct events *hub;
    struct events_sub *sub;
    struct registry *reg;
    struct supervisor *sup;
    json_t *events; /* every event heard, as JSON */
    struct answer answers[ANSWERS_MAX];
    size_t n_answers;
};

static void on_event(void *data, const struct event *ev)
{
    struct fixture *f = data;

    json_array_append_new(f->events, event_to_json(ev));
}

static void on_done(void *data, struct service *svc, const struct supervisor_result *res)
{
    struct fixture *f = data;
    struct answer *a = &f->answers[f->n_answers++];

    assert_true(f->n_answers <= ANSWERS_MAX);
    a->service = xstrdup(svc->name);
    a->outcome = res->outcome;
    a->holder = res->holder ? xstrdup(res->holder) : NULL;
    a->message = res->message ? xstrdup(res->message) : NULL;
    a->preempted = json_deep_copy(res->preempted);
}

static void write_service(const char *root, const char *name, bool gpu)
{
    char path[256], text[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", root, name);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/%s/service.yaml", root, name);
    snprintf(text, sizeof(text), "name: %s\ndriver: fake\ngpu_required: %s\nhealth: false\n", name,
             gpu ? "true" : "false");
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    fake_reset();
    drivers_set(fake_table);
    strcpy(f->root, "/tmp/nanny-sup-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    strcpy(f->state, "/tmp/nanny-sup-state-XXXXXX");
    assert_non_null(mkdtemp(f->state));
    write_service(f->root, "a", true);
    write_service(f->root, "b", true);
    write_service(f->root, "c", true);
    write_service(f->root, "plain", false);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->config.state_dir = f->state;
    f->config.log_max_bytes = CONFIG_LOG_MAX_BYTES;
    f->config.log_max_files = CONFIG_LOG_MAX_FILES;
    f->hub = events_new(0);
    f->events = json_array();
    f->sub = events_subscribe(f->hub, on_event, f);
    f->reg = registry_new(&f->loop, f->root, f->hub);
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_int_equal(registry_count(f->reg), 4);
    f->sup = supervisor_new(&f->loop, f->reg, NULL, &f->config, f->hub);
    fixture = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    supervisor_free(f->sup);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    registry_free(f->reg);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    events_free(f->hub);
    json_decref(f->events);
    for (size_t i = 0; i < f->n_answers; i++) {
        free(f->answers[i].service);
        free(f->answers[i].holder);
        free(f->answers[i].message);
        json_decref(f->answers[i].preempted);
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

/* Lets the loop run what is due (a start's check of its ports answers on a later pass, a
 * write of the state on a worker thread: the answers that wait for it come after it). */
static void settle(struct fixture *f)
{
    fake_settle(&f->loop, f->sup);
}

/* Starts name and lets the loop settle it; the handle is still valid only when the start
 * waits for something the test makes happen (a preempted holder's end). */
static struct supervisor_op *start(struct fixture *f, const char *name, bool force)
{
    struct supervisor_op *op =
        supervisor_start(f->sup, svc(f, name), force, false, false, on_done, f);

    settle(f);
    return op;
}

/* The number of events of kind type (and about service, when not NULL) heard. */
static size_t events_count(struct fixture *f, const char *type, const char *service)
{
    size_t i, n = 0;
    json_t *e;

    json_array_foreach(f->events, i, e)
    {
        const char *s = json_string_value(json_object_get(e, "service"));
        if (strcmp(json_string_value(json_object_get(e, "type")), type) == 0 &&
            (!service || (s && strcmp(s, service) == 0)))
            n++;
    }
    return n;
}

/* The holder named by the latest GPU event; "" when it said none, or there was none. */
static const char *last_gpu_holder(struct fixture *f)
{
    const char *holder = "";
    size_t i;
    json_t *e;

    json_array_foreach(f->events, i,
                       e) if (strcmp(json_string_value(json_object_get(e, "type")), "gpu") == 0)
        holder = json_string_value(json_object_get(e, "holder")) ?: "";
    return holder;
}

/* --- the tests ---------------------------------------------------------------------- */

static void test_start_and_stop(void **state)
{
    struct fixture *f = *state;

    start(f, "plain", false);
    assert_int_equal(f->n_answers, 1);
    assert_int_equal(f->answers[0].outcome, SUPERVISOR_OK);
    assert_int_equal(state_of(f, "plain"), STATE_RUNNING);
    assert_true(supervisor_status(f->sup, svc(f, "plain"))->is_healthy == false);
    assert_true(supervisor_status(f->sup, svc(f, "plain"))->started_at_ms > 0);
    assert_int_equal(fake.starts, 1);

    /* Again: already running, nothing done. */
    start(f, "plain", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_ALREADY);
    assert_int_equal(fake.starts, 1);

    /* A stop waits for the run to be gone. */
    assert_non_null(supervisor_stop(f->sup, svc(f, "plain"), on_done, f));
    settle(f);
    assert_int_equal(state_of(f, "plain"), STATE_STOPPING);
    assert_int_equal(fake.stops, 1);
    assert_int_equal(f->n_answers, 2);
    fake_gone("plain");
    assert_int_equal(f->n_answers, 3);
    assert_int_equal(f->answers[2].outcome, SUPERVISOR_OK);
    assert_int_equal(state_of(f, "plain"), STATE_STOPPED);
    assert_int_equal(fake.releases, 1);

    /* Each change was published once, in order. */
    assert_int_equal(events_count(f, "state", "plain"),
                     4); /* ->starting->running->stopping->stopped */
}

static void test_gpu_conflict_and_force(void **state)
{
    struct fixture *f = *state;
    struct supervisor_op *op;

    start(f, "a", false);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_string_equal(last_gpu_holder(f), "a");

    /* A second GPU service: 409 naming the holder. */
    start(f, "b", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[1].holder, "a");
    assert_int_equal(state_of(f, "b"), STATE_STOPPED);

    /* Forced: a is stopped first; b waits, holding the GPU already. */
    op = start(f, "b", true);
    assert_non_null(op);
    assert_int_equal(state_of(f, "a"), STATE_STOPPING);
    assert_int_equal(events_count(f, "preempt", "a"), 1);
    /* A third start meanwhile sees a holder, and is refused. */
    start(f, "c", false);
    assert_int_equal(f->answers[2].outcome, SUPERVISOR_CONFLICT);
    assert_int_equal(fake.starts, 1);

    fake_gone("a");
    assert_int_equal(state_of(f, "a"), STATE_STOPPED);
    assert_int_equal(state_of(f, "b"), STATE_RUNNING);
    assert_int_equal(f->n_answers, 4);
    assert_int_equal(f->answers[3].outcome, SUPERVISOR_OK);
    assert_string_equal(json_string_value(json_array_get(f->answers[3].preempted, 0)), "a");
    assert_string_equal(last_gpu_holder(f), "b");
}

static void test_restart_stops_first(void **state)
{
    struct fixture *f = *state;

    start(f, "a", false);
    assert_non_null(supervisor_start(f->sup, svc(f, "a"), false, false, true, on_done, f));
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_STOPPING);
    assert_int_equal(fake.starts, 1);
    fake_gone("a");
    assert_int_equal(fake.starts, 2);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_int_equal(f->n_answers, 2);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_OK);
}

/* A start that goes on in the driver (compose up) answers when it ends; its failure is
 * a 502 with the driver's sentence, and the service is failed. */
static void test_start_later_and_driver_failure(void **state)
{
    struct fixture *f = *state;

    fake.start_result = 1;
    start(f, "plain", false);
    assert_int_equal(state_of(f, "plain"), STATE_STARTING);
    assert_int_equal(f->n_answers, 0);
    fake_started("plain", "up -d said no");
    assert_int_equal(f->n_answers, 1);
    assert_int_equal(f->answers[0].outcome, SUPERVISOR_DRIVER_FAILED);
    assert_string_equal(f->answers[0].message, "up -d said no");
    assert_int_equal(state_of(f, "plain"), STATE_FAILED);
    assert_string_equal(supervisor_status(f->sup, svc(f, "plain"))->last_error, "up -d said no");

    fake.start_result = -EIO;
    start(f, "a", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_DRIVER_FAILED);
    assert_string_equal(f->answers[1].message, "the fake could not start a");
    /* A failed start holds no GPU. */
    assert_string_equal(last_gpu_holder(f), "");

    fake.unavailable = true;
    start(f, "b", false);
    assert_int_equal(f->answers[2].outcome, SUPERVISOR_UNAVAILABLE);
    assert_string_equal(f->answers[2].message, "the fake backend is away");
}

/* The requester of a forced start goes away: its reservation goes too, so the GPU is not
 * held by nobody; a stop of a start that waits for the GPU cancels it. */
static void test_cancellation(void **state)
{
    struct fixture *f = *state;
    struct supervisor_op *op;

    start(f, "a", false);
    op = start(f, "b", true);
    assert_non_null(op);
    supervisor_op_cancel(op);
    fake_gone("a");
    assert_int_equal(state_of(f, "b"), STATE_STOPPED);
    assert_int_equal(fake.starts, 1);
    assert_int_equal(f->n_answers, 1); /* only a's start: the cancelled one is not answered */
    assert_string_equal(last_gpu_holder(f), "");

    start(f, "a", false);
    op = start(f, "b", true);
    assert_non_null(op);
    supervisor_stop(f->sup, svc(f, "b"), on_done, f);
    settle(f);
    assert_int_equal(f->answers[f->n_answers - 2].outcome, SUPERVISOR_CANCELLED);
    assert_int_equal(f->answers[f->n_answers - 1].outcome, SUPERVISOR_OK); /* the stop */
    fake_gone("a");
    assert_int_equal(state_of(f, "b"), STATE_STOPPED);
}

/* A stop while the driver's start goes on: the start is answered as cancelled. */
static void test_stop_during_start(void **state)
{
    struct fixture *f = *state;

    fake.start_result = 1;
    start(f, "plain", false);
    assert_non_null(supervisor_stop(f->sup, svc(f, "plain"), on_done, f));
    settle(f);
    fake_gone("plain");
    assert_int_equal(f->n_answers, 2);
    /* Both are answered by the same change, in no promised order. */
    assert_int_equal(f->answers[0].outcome + f->answers[1].outcome,
                     SUPERVISOR_CANCELLED + SUPERVISOR_OK);
    assert_true(f->answers[0].outcome == SUPERVISOR_CANCELLED ||
                f->answers[1].outcome == SUPERVISOR_CANCELLED);
    assert_int_equal(state_of(f, "plain"), STATE_STOPPED);
}

/* A stop while the start still checks its ports: nothing was started, the stop is over,
 * and the start is answered as cancelled (or, when the check ended before the stop's
 * intent was on disk, what started is stopped); the GPU it held goes free. */
static void test_stop_during_port_check(void **state)
{
    struct fixture *f = *state;

    assert_non_null(supervisor_start(f->sup, svc(f, "a"), false, false, false, on_done, f));
    /* Its intent is written first (on a worker), then its ports are checked. */
    for (int i = 0; i < 5000 && state_of(f, "a") != STATE_STARTING; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (state_of(f, "a") != STATE_STARTING)
            usleep(1000);
    }
    assert_int_equal(state_of(f, "a"), STATE_STARTING);
    supervisor_stop(f->sup, svc(f, "a"), on_done, f);
    settle(f);
    /* The stop acts once its own intent is on disk: the check may have ended by then,
     * and then the stop stops what it started. */
    if (fake.starts == 1 && state_of(f, "a") == STATE_STOPPING)
        fake_gone("a");
    assert_int_equal(state_of(f, "a"), STATE_STOPPED);
    assert_int_equal(f->n_answers, 2);
    assert_true(fake.starts == 1 || f->answers[0].outcome == SUPERVISOR_CANCELLED ||
                f->answers[1].outcome == SUPERVISOR_CANCELLED);
    assert_string_equal(last_gpu_holder(f), "");
}

/* An unasked exit fails the service; the GPU goes free. */
static void test_exit(void **state)
{
    struct fixture *f = *state;

    start(f, "a", false);
    fake_exited("a", 3);
    assert_int_equal(state_of(f, "a"), STATE_FAILED);
    assert_string_equal(supervisor_status(f->sup, svc(f, "a"))->last_error, "exited with status 3");
    assert_string_equal(last_gpu_holder(f), "");
    start(f, "b", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_OK);
}

/* Writes text as the state file an earlier daemon left. */
static void write_state(struct fixture *f, const char *text)
{
    char path[128];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/state.json", f->state);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* What an earlier daemon recorded is adopted when it still runs; a run seen outside the
 * daemon is adopted too and holds the GPU. */
static void test_adoption(void **state)
{
    struct fixture *f = *state;

    write_state(f, "{\"version\":1,\"services\":{\"a\":{\"driver\":\"fake\",\"pid\":4242,"
                   "\"started_at_ms\":1000},\"gone\":{\"driver\":\"fake\",\"pid\":1}}}");
    fake.adopt_finds = true;
    supervisor_adopt(f->sup);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_int_equal(supervisor_status(f->sup, svc(f, "a"))->started_at_ms, 1000);
    assert_string_equal(last_gpu_holder(f), "a");
    assert_int_equal(fake.starts, 0);

    /* b's backend says it runs: adopted, and the GPU has two holders now (said in the
     * log), the first by name named. */
    fake.outside->appeared(fake.outside_data, &driver_fake, "b");
    settle(f);
    assert_int_equal(state_of(f, "b"), STATE_RUNNING);
    start(f, "c", false);
    assert_int_equal(f->answers[0].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[0].holder, "a");
}

/* While a driver cannot yet say what runs (the engine's first list), the adoption waits,
 * and so do a start and a stop asked meanwhile: the start of another GPU service is then
 * refused, naming the recorded holder, and the stop stops what was found. */
static void test_adoption_waits_for_the_driver(void **state)
{
    struct fixture *f = *state;

    write_state(f, "{\"version\":1,\"services\":{\"a\":{\"driver\":\"fake\",\"pid\":4242,"
                   "\"started_at_ms\":1000}}}");
    fake.adopt_finds = true;
    fake.unsettled = true;
    supervisor_adopt(f->sup);
    assert_int_equal(state_of(f, "a"), STATE_STOPPED); /* not known yet */
    assert_non_null(supervisor_start(f->sup, svc(f, "b"), false, false, false, on_done, f));
    assert_non_null(supervisor_stop(f->sup, svc(f, "a"), on_done, f));
    settle(f);
    assert_int_equal(f->n_answers, 0);
    assert_int_equal(fake.starts + fake.stops, 0);

    fake.unsettled = false;
    fake.outside->backend(fake.outside_data, &driver_fake, NULL);
    settle(f);
    assert_int_equal(f->n_answers, 1);
    assert_int_equal(f->answers[0].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[0].holder, "a");
    assert_int_equal(fake.starts, 0);
    assert_int_equal(fake.stops, 1);
    fake_gone("a");
    assert_int_equal(f->n_answers, 2);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_OK);
    assert_int_equal(state_of(f, "a"), STATE_STOPPED);
}

/* A service started needing the GPU by an earlier daemon, whose manifest has since been
 * flipped off: the state file says what it was started with, and it holds the GPU. */
static void test_adopted_holder_keeps_what_it_was_started_with(void **state)
{
    struct fixture *f = *state;

    write_state(f, "{\"version\":1,\"services\":{\"plain\":{\"driver\":\"fake\",\"pid\":4242,"
                   "\"started_at_ms\":1000,\"gpu_required\":true}}}");
    fake.adopt_finds = true;
    supervisor_adopt(f->sup);
    assert_int_equal(state_of(f, "plain"), STATE_RUNNING);
    assert_string_equal(last_gpu_holder(f), "plain");
    start(f, "a", false);
    assert_int_equal(f->answers[0].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[0].holder, "plain");
}

/* The daemon ends leaving its services running, and a new one (a new registry on the
 * same folder, a new supervisor on the same state) adopts what the fake finds. */
static void restart_daemon(struct fixture *f)
{
    supervisor_shutdown(f->sup, false);
    settle(f);
    supervisor_free(f->sup);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    registry_free(f->reg);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    f->reg = registry_new(&f->loop, f->root, f->hub);
    assert_int_equal(registry_scan_now(f->reg), 0);
    f->sup = supervisor_new(&f->loop, f->reg, NULL, &f->config, f->hub);
    supervisor_adopt(f->sup);
    settle(f);
}

/* Rewrites name's manifest, GPU or not, and merges a scan of the folder. */
static void edit_service(struct fixture *f, const char *name, bool gpu)
{
    char path[256], text[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s/service.yaml", f->root, name);
    snprintf(text, sizeof(text), "name: %s\ndriver: fake\ngpu_required: %s\nhealth: false\n", name,
             gpu ? "true" : "false");
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(registry_scan_now(f->reg), 0);
}

/* A running holder's gpu_required flipped off on disk: it runs on the manifest it was
 * started with and holds the GPU; flipped back, nothing changed. A restart applies the
 * new manifest, but what lingers of the old run holds the GPU until it is gone. */
static void test_running_service_keeps_its_manifest(void **state)
{
    struct fixture *f = *state;
    struct fake_run *old;

    start(f, "a", false);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    edit_service(f, "a", false);
    assert_true(svc(f, "a")->manifest->gpu_required);
    assert_non_null(svc(f, "a")->pending);
    start(f, "b", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[1].holder, "a");
    edit_service(f, "a", true);
    assert_null(svc(f, "a")->pending);
    start(f, "b", false);
    assert_int_equal(f->answers[2].outcome, SUPERVISOR_CONFLICT);
    assert_int_equal(state_of(f, "b"), STATE_STOPPED);

    /* Restarted with the GPU off: its old process exits but its group lingers. */
    edit_service(f, "a", false);
    old = fake_find("a");
    assert_non_null(supervisor_start(f->sup, svc(f, "a"), false, false, true, on_done, f));
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_STOPPING);
    assert_true(svc(f, "a")->manifest->gpu_required); /* not yet: it still stops */
    old->events->exited(old->data, &old->base, 0, 0);
    settle(f);
    assert_int_equal(fake.starts, 2);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_false(svc(f, "a")->manifest->gpu_required);
    assert_null(svc(f, "a")->pending);
    start(f, "b", false);
    assert_int_equal(f->answers[4].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[4].holder, "a");
    old->events->gone(old->data, &old->base);
    settle(f);
    start(f, "b", false);
    assert_int_equal(f->answers[5].outcome, SUPERVISOR_OK);
    assert_int_equal(state_of(f, "b"), STATE_RUNNING);
    assert_string_equal(last_gpu_holder(f), "b");
}

/* The manifest a run was started with is in the state file: the next daemon runs it on
 * that one, the disk's waits as pending (the same changes as before), and the GPU stays
 * with it; a restart applies the disk's. */
static void test_recorded_manifest_round_trip(void **state)
{
    struct fixture *f = *state;
    json_t *changes;

    start(f, "a", false);
    edit_service(f, "a", false);
    assert_non_null(svc(f, "a")->pending);
    fake.adopt_finds = true;
    restart_daemon(f);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_true(svc(f, "a")->manifest->gpu_required);
    assert_non_null(svc(f, "a")->manifest->source);
    changes = registry_pending_changes(svc(f, "a"));
    assert_non_null(changes);
    assert_int_equal(json_object_size(changes), 1);
    assert_true(json_is_true(json_object_get(json_object_get(changes, "gpu_required"), "running")));
    assert_true(json_is_false(json_object_get(json_object_get(changes, "gpu_required"), "new")));
    json_decref(changes);
    start(f, "b", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[1].holder, "a");

    /* Once more: the new daemon recorded it again. A rescan keeps it pending. */
    restart_daemon(f);
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_true(svc(f, "a")->manifest->gpu_required);
    assert_false(svc(f, "a")->pending->gpu_required);

    /* A restart applies the disk's. */
    assert_non_null(supervisor_start(f->sup, svc(f, "a"), false, false, true, on_done, f));
    settle(f);
    fake_gone("a");
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_false(svc(f, "a")->manifest->gpu_required);
    assert_null(svc(f, "a")->pending);
    start(f, "b", false);
    assert_int_equal(f->answers[3].outcome, SUPERVISOR_OK);
}

/* Unchanged on disk: adopted with nothing pending. */
static void test_recorded_manifest_unchanged(void **state)
{
    struct fixture *f = *state;

    start(f, "a", false);
    fake.adopt_finds = true;
    restart_daemon(f);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_null(svc(f, "a")->pending);
    assert_null(registry_pending_changes(svc(f, "a")));
}

/* A folder removed while no daemon ran: the next one adopts what runs on the manifest it
 * was started with, holding the GPU; once stopped, the service leaves. */
static void test_recorded_manifest_of_a_removed_folder(void **state)
{
    struct fixture *f = *state;
    char path[256];

    start(f, "a", false);
    snprintf(path, sizeof(path), "%s/a/service.yaml", f->root);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/a", f->root);
    assert_int_equal(rmdir(path), 0);
    fake.adopt_finds = true;
    restart_daemon(f);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_true(svc(f, "a")->manifest->gpu_required);
    start(f, "b", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[1].holder, "a");
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_non_null(svc(f, "a")->manifest_error);
    supervisor_stop(f->sup, svc(f, "a"), on_done, f);
    settle(f);
    fake_gone("a");
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_null(registry_find(f->reg, "a"));
}

/* A driver that records nothing of its runs (compose: the engine's labels say what runs):
 * the state file keeps the manifest, taken when the driver finds the run. */
static void test_recorded_manifest_of_a_run_the_driver_finds(void **state)
{
    struct fixture *f = *state;

    fake.no_record = true;
    start(f, "a", false);
    edit_service(f, "a", false);
    fake.adopt_finds = false; /* the backend has not listed its runs yet */
    restart_daemon(f);
    assert_int_equal(state_of(f, "a"), STATE_STOPPED);
    fake.adopt_finds = true;
    fake.outside->appeared(fake.outside_data, &driver_fake, "a");
    settle(f);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    assert_true(svc(f, "a")->manifest->gpu_required);
    assert_non_null(svc(f, "a")->pending);
    start(f, "b", false);
    assert_int_equal(f->answers[1].outcome, SUPERVISOR_CONFLICT);
    assert_string_equal(f->answers[1].holder, "a");
}

/* A stop, then a start, applies what changed on disk while it ran. */
static void test_stop_then_start_applies_the_new_manifest(void **state)
{
    struct fixture *f = *state;

    start(f, "a", false);
    edit_service(f, "a", false);
    supervisor_stop(f->sup, svc(f, "a"), on_done, f);
    settle(f);
    fake_gone("a");
    assert_int_equal(state_of(f, "a"), STATE_STOPPED);
    start(f, "a", false);
    assert_false(svc(f, "a")->manifest->gpu_required);
    assert_null(svc(f, "a")->pending);
    start(f, "b", false);
    assert_int_equal(f->answers[3].outcome, SUPERVISOR_OK);
    assert_string_equal(last_gpu_holder(f), "b");
}

/* A service whose folder goes while it runs stays until it is stopped, then leaves at the
 * next rescan, and its run with it. */
static void test_removed_while_running(void **state)
{
    struct fixture *f = *state;
    struct scan *scan;
    char path[128];

    start(f, "plain", false);
    snprintf(path, sizeof(path), "%s/plain/service.yaml", f->root);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(discovery_scan(f->root, &scan), 0);
    registry_apply_scan(f->reg, scan, NULL);
    assert_non_null(registry_find(f->reg, "plain"));
    assert_non_null(registry_find(f->reg, "plain")->manifest_error);
    supervisor_stop(f->sup, svc(f, "plain"), on_done, f);
    settle(f);
    fake_gone("plain");
    assert_int_equal(discovery_scan(f->root, &scan), 0);
    registry_apply_scan(f->reg, scan, NULL);
    assert_null(registry_find(f->reg, "plain"));
}

/* op_next() over every phase and state. */
static void test_op_next(void **state)
{
    struct op_view v = {.state = STATE_STOPPED};

    assert_int_equal(op_next(OP_NEW, &v), OP_WAIT);
    assert_int_equal(op_next(OP_STOP_WAIT, &v), OP_DONE_OK);
    v.lingers = true;
    assert_int_equal(op_next(OP_STOP_WAIT, &v), OP_WAIT);
    assert_int_equal(op_next(OP_STOP_FIRST, &v), OP_ARBITRATE);
    v.state = STATE_STOPPING;
    assert_int_equal(op_next(OP_STOP_FIRST, &v), OP_WAIT);
    assert_int_equal(op_next(OP_STARTED, &v), OP_WAIT);
    assert_int_equal(op_next(OP_GPU_WAIT, &v), OP_WAIT);
    v.gpu_free = true;
    assert_int_equal(op_next(OP_GPU_WAIT, &v), OP_BEGIN_START);
    assert_int_equal(op_next(OP_ADOPT_WAIT, &v), OP_WAIT); /* supervisor_adopted() only */
    v.state = STATE_STARTING;
    v.driver_starting = true;
    assert_int_equal(op_next(OP_STARTED, &v), OP_WAIT);
    v.driver_starting = false;
    assert_int_equal(op_next(OP_STARTED, &v), OP_DONE_OK);
    v.wait_healthy = true;
    assert_int_equal(op_next(OP_STARTED, &v), OP_WAIT);
    v.state = STATE_UNHEALTHY;
    assert_int_equal(op_next(OP_STARTED, &v), OP_DONE_OK);
    v.state = STATE_FAILED;
    v.failure = LIFECYCLE_CAUSE_START_TIMEOUT;
    assert_int_equal(op_next(OP_STARTED, &v), OP_DONE_TIMED_OUT);
    v.failure = LIFECYCLE_CAUSE_START_LIMIT;
    assert_int_equal(op_next(OP_STARTED, &v), OP_DONE_FAILED);
    v.state = STATE_STOPPED;
    assert_int_equal(op_next(OP_STARTED, &v), OP_DONE_CANCELLED);
}

/* A service folder with these lines after name: and driver:. */
static void write_service_text(const char *root, const char *name, const char *text)
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

#define GIB (UINT64_C(1) << 30)

/* A service that uses more GPU memory than it declares is reported once per crossing (a
 * status warning, a gpu_overuse event) and, with gpu.enforce, stopped; what processes of
 * no service, or of a whole-GPU service, use is judged by nobody. */
static void test_gpu_overuse(void **state)
{
    struct fixture *f = *state;
    const struct placement_gpu box[] = {{24 * GIB, 0}};
    const struct service_status *st;
    int loose, strict, whole;

    write_service_text(f->root, "loose", "gpu: {count: 1, memory: 4GiB}\n");
    write_service_text(f->root, "strict", "gpu: {count: 1, memory: 4GiB, enforce: true}\n");
    assert_int_equal(registry_scan_now(f->reg), 0);
    supervisor_set_gpus(f->sup, box, 1);
    start(f, "loose", false);
    start(f, "strict", false);
    assert_int_equal(state_of(f, "loose"), STATE_RUNNING);
    assert_int_equal(state_of(f, "strict"), STATE_RUNNING);
    loose = fake_find("loose")->pid;
    strict = fake_find("strict")->pid;

    /* loose uses 5 GiB of the 4 it declares (in two processes); strict 3 of 4; a
     * foreign process 10. */
    struct inventory_proc over[] = {{0, loose, 3 * GIB, true},
                                    {0, strict, 3 * GIB, true},
                                    {0, loose + 100, 10 * GIB, false},
                                    {0, loose, 2 * GIB, true}};
    supervisor_gpu_usage(f->sup, over, 4);
    st = supervisor_status(f->sup, svc(f, "loose"));
    assert_non_null(st->gpu_warning);
    assert_non_null(strstr(st->gpu_warning, "uses 5120 MiB of GPU 0, more than the 4096 MiB"));
    assert_int_equal(st->state, STATE_RUNNING);
    assert_null(supervisor_status(f->sup, svc(f, "strict"))->gpu_warning);
    assert_int_equal(events_count(f, "gpu_overuse", "loose"), 1);
    assert_int_equal(events_count(f, "gpu_overuse", "strict"), 0);
    /* Told again: nothing new. */
    supervisor_gpu_usage(f->sup, over, 4);
    assert_int_equal(events_count(f, "gpu_overuse", "loose"), 1);

    /* Back within: the warning goes, with an event. */
    over[3].memory = 0;
    supervisor_gpu_usage(f->sup, over, 4);
    assert_null(supervisor_status(f->sup, svc(f, "loose"))->gpu_warning);
    assert_int_equal(events_count(f, "gpu_overuse", "loose"), 2);

    /* strict goes over with gpu.enforce: stopped, and its last error says why. */
    over[1].memory = 5 * GIB;
    supervisor_gpu_usage(f->sup, over, 4);
    settle(f);
    assert_int_equal(events_count(f, "gpu_overuse", "strict"), 1);
    assert_int_equal(state_of(f, "strict"), STATE_STOPPING);
    fake_gone("strict");
    st = supervisor_status(f->sup, svc(f, "strict"));
    assert_int_equal(st->state, STATE_STOPPED);
    assert_non_null(strstr(st->last_error, "stopped: uses 5120 MiB of GPU 0"));
    assert_non_null(strstr(st->last_error, "gpu.enforce"));
    assert_null(st->gpu_warning);
    assert_int_equal(state_of(f, "loose"), STATE_RUNNING);

    /* A whole GPU is its holder's: whatever it uses is not judged. */
    assert_int_equal(supervisor_stop(f->sup, svc(f, "loose"), on_done, f) != NULL, true);
    settle(f);
    fake_gone("loose");
    start(f, "a", false);
    assert_int_equal(state_of(f, "a"), STATE_RUNNING);
    whole = fake_find("a")->pid;
    struct inventory_proc all[] = {{0, whole, 24 * GIB, true}};
    supervisor_gpu_usage(f->sup, all, 1);
    assert_null(supervisor_status(f->sup, svc(f, "a"))->gpu_warning);
    assert_int_equal(events_count(f, "gpu_overuse", "a"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gpu_conflict_and_force, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_stops_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_later_and_driver_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancellation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_port_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adoption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adoption_waits_for_the_driver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recorded_manifest_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recorded_manifest_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recorded_manifest_of_a_removed_folder, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_recorded_manifest_of_a_run_the_driver_finds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_adopted_holder_keeps_what_it_was_started_with, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_removed_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_running_service_keeps_its_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_then_start_applies_the_new_manifest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gpu_overuse, setup, teardown),
        cmocka_unit_test(test_op_next),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
