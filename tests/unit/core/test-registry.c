/* Unit tests for the registry: merging scans, diffs, lookups and asynchronous rescans. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/registry.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct fixture {
    char root[64];
    uv_loop_t loop;
    struct events *hub;
    struct events_sub *sub;
    struct registry *reg;
    json_t *published; /* the discovery events heard, their data */
};

static void on_event(void *data, const struct event *ev)
{
    struct fixture *f = data;

    assert_int_equal(ev->kind, EVENT_DISCOVERY);
    json_array_append(f->published, ev->data);
}

static void write_service(const char *root, const char *folder, const char *yaml)
{
    char *dir = xasprintf("%s/%s", root, folder);
    char *path = xasprintf("%s/service.yaml", dir);
    FILE *f;

    mkdir(dir, 0755);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    free(dir);
    free(path);
}

static void remove_service(const char *root, const char *folder)
{
    char *path = xasprintf("%s/%s/service.yaml", root, folder);
    char *dir = xasprintf("%s/%s", root, folder);

    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    strcpy(f->root, "/tmp/nanny-registry-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->hub = events_new(0);
    f->published = json_array();
    f->sub = events_subscribe(f->hub, on_event, f);
    f->reg = registry_new(&f->loop, f->root, f->hub);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    registry_free(f->reg);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    events_free(f->hub);
    json_decref(f->published);
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static json_t *rescan(struct fixture *f)
{
    struct scan *scan;
    json_t *diff;

    assert_int_equal(discovery_scan(f->root, &scan), 0);
    registry_apply_scan(f->reg, scan, &diff);
    return diff;
}

static bool diff_has(json_t *diff, const char *list, const char *name)
{
    size_t i;
    json_t *v;

    json_array_foreach(json_object_get(diff, list), i,
                       v) if (strcmp(json_string_value(v), name) == 0) return true;
    return false;
}

static void test_added_changed_removed(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    uint64_t g;
    json_t *diff;

    write_service(f->root, "a", "name: alpha\ncommand: x\nports: [\"8011\"]\n");
    write_service(f->root, "b", "name: beta\ncommand: x\nports: [\"8012\"]\n");
    diff = rescan(f);
    assert_true(diff_has(diff, "added", "alpha"));
    assert_true(diff_has(diff, "added", "beta"));
    assert_int_equal(json_array_size(json_object_get(diff, "changed")), 0);
    json_decref(diff);
    assert_int_equal(registry_count(f->reg), 2);
    a = registry_find(f->reg, "alpha");
    assert_non_null(a);
    assert_string_equal(registry_at(f->reg, 0)->name, "alpha");
    assert_null(registry_find(f->reg, "gamma"));

    /* The service survives a rescan that does not change the manifest, unchanged. */
    g = a->generation;
    diff = rescan(f);
    assert_int_equal(json_array_size(json_object_get(diff, "added")), 0);
    assert_int_equal(json_array_size(json_object_get(diff, "changed")), 0);
    json_decref(diff);
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_int_equal(a->generation, g);

    /* A changed manifest is "changed", and keeps the service. */
    write_service(f->root, "a", "name: alpha\ncommand: y\nports: [\"8011\"]\n");
    remove_service(f->root, "b");
    diff = rescan(f);
    assert_true(diff_has(diff, "changed", "alpha"));
    assert_true(diff_has(diff, "removed", "beta"));
    json_decref(diff);
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_true(a->generation > g);
    assert_null(registry_find(f->reg, "beta"));
    assert_int_equal(registry_count(f->reg), 1);
}

/* Generations only grow and no two services share one; every merge that changes the
 * services is published once, with its diff. */
static void test_generation_and_events(void **state)
{
    struct fixture *f = *state;
    struct service *a, *b;
    uint64_t g;

    write_service(f->root, "a", "name: alpha\ncommand: x\nhealth: false\n");
    json_decref(rescan(f));
    assert_int_equal(json_array_size(f->published), 1);
    assert_true(diff_has(json_array_get(f->published, 0), "added", "alpha"));
    a = registry_find(f->reg, "alpha");
    g = registry_generation(f->reg);
    json_decref(rescan(f));
    /* Nothing changed: no generation moves, nothing is published. */
    assert_int_equal(registry_generation(f->reg), g);
    assert_int_equal(json_array_size(f->published), 1);
    write_service(f->root, "b", "name: beta\ncommand: x\nhealth: false\n");
    json_decref(rescan(f));
    b = registry_find(f->reg, "beta");
    assert_true(registry_generation(f->reg) > g);
    assert_true(b->generation != a->generation);
    assert_int_equal(json_array_size(f->published), 2);
    assert_true(diff_has(json_array_get(f->published, 1), "added", "beta"));
}

/* A held service whose folder is gone stays, marked; let go, the next merge removes it. */
static void test_hold_keeps_a_removed_service(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    json_t *diff;

    write_service(f->root, "a", "name: alpha\ncommand: x\nhealth: false\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    registry_hold(f->reg, a, true);
    remove_service(f->root, "a");
    diff = rescan(f);
    assert_false(diff_has(diff, "removed", "alpha"));
    json_decref(diff);
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_non_null(a->manifest_error);
    registry_hold(f->reg, a, false);
    diff = rescan(f);
    assert_true(diff_has(diff, "removed", "alpha"));
    json_decref(diff);
    assert_null(registry_find(f->reg, "alpha"));
    assert_true(diff_has(json_array_get(f->published, json_array_size(f->published) - 1), "removed",
                         "alpha"));
}

/* A held service keeps the manifest it runs with: a changed one waits as pending, shown
 * field by field; back to what runs, nothing waits; a start applies it
 * (registry_apply_pending), and a service let go takes the disk's at the next merge. */
static void test_held_service_keeps_its_manifest(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    struct manifest *running;
    json_t *diff, *changes, *expected;

    write_service(f->root, "a", "name: alpha\ncommand: x\ngpu_required: true\nhealth: false\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    running = a->manifest;
    assert_null(registry_pending_changes(a));
    registry_hold(f->reg, a, true);

    write_service(f->root, "a", "name: alpha\ncommand: x\ngpu_required: false\nhealth: false\n");
    diff = rescan(f);
    assert_true(diff_has(diff, "changed", "alpha"));
    json_decref(diff);
    assert_ptr_equal(a->manifest, running);
    assert_true(a->manifest->gpu_required);
    assert_non_null(a->pending);
    changes = registry_pending_changes(a);
    expected = json_pack("{s:{s:b, s:b}}", "gpu_required", "running", 1, "new", 0);
    assert_true(json_equal(changes, expected));
    json_decref(expected);
    json_decref(changes);
    /* The same again: nothing new. */
    diff = rescan(f);
    assert_false(diff_has(diff, "changed", "alpha"));
    json_decref(diff);

    /* Back to what runs: nothing waits. */
    write_service(f->root, "a", "name: alpha\ncommand: x\ngpu_required: true\nhealth: false\n");
    diff = rescan(f);
    assert_true(diff_has(diff, "changed", "alpha"));
    json_decref(diff);
    assert_null(a->pending);
    assert_null(registry_pending_changes(a));
    assert_ptr_equal(a->manifest, running);

    /* A broken file: it runs on, the problem attached; a start applies nothing. */
    write_service(f->root, "a", "name: alpha\ncommand: x\ngpu_required: [\n");
    json_decref(rescan(f));
    assert_ptr_equal(a->manifest, running);
    assert_non_null(a->manifest_error);
    assert_false(registry_apply_pending(f->reg, a));

    /* Changed again; a start applies it, and says so. */
    write_service(f->root, "a", "name: alpha\ncommand: y\ngpu_required: false\nhealth: false\n");
    json_decref(rescan(f));
    assert_null(a->manifest_error);
    assert_true(a->manifest->gpu_required);
    assert_true(registry_apply_pending(f->reg, a));
    assert_false(a->manifest->gpu_required);
    assert_null(a->pending);
    assert_true(diff_has(json_array_get(f->published, json_array_size(f->published) - 1), "changed",
                         "alpha"));

    /* Let go, the disk's manifest is taken at once. */
    write_service(f->root, "a", "name: alpha\ncommand: z\ngpu_required: true\nhealth: false\n");
    json_decref(rescan(f));
    assert_non_null(a->pending);
    registry_hold(f->reg, a, false);
    json_decref(rescan(f));
    assert_null(a->pending);
    assert_true(a->manifest->gpu_required);
}

/* A new folder that takes the name of a held service is the error, whatever the folder
 * order; a scan that was made before the service was held (it did not know the claim)
 * changes nothing of it, and asks for another. */
static void test_new_folder_cannot_take_a_held_name(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    struct scan *stale;
    json_t *diff;

    write_service(f->root, "m", "name: alpha\ncommand: x\ngpu_required: true\nhealth: false\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    write_service(f->root, "b", "name: alpha\ncommand: x\ngpu_required: false\nhealth: false\n");
    assert_int_equal(discovery_scan(f->root, &stale), 0); /* before the hold: b wins */
    registry_hold(f->reg, a, true);

    registry_apply_scan(f->reg, stale, &diff);
    assert_int_equal(json_array_size(json_object_get(diff, "changed")), 0);
    json_decref(diff);
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_string_equal(a->folder, "m");
    assert_true(a->manifest->gpu_required);
    assert_null(a->pending);

    /* The registry's own scans know the claim: b is the error, naming the running one. */
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_string_equal(a->folder, "m");
    assert_null(a->pending);
    assert_null(a->manifest_error);
    assert_int_equal(json_array_size(registry_errors(f->reg)), 1);
    assert_non_null(strstr(
        json_string_value(json_object_get(json_array_get(registry_errors(f->reg), 0), "message")),
        "running service in folder \"m\""));
    registry_hold(f->reg, a, false);
}

static void on_rescanned(void *data, json_t *diff)
{
    (*(int *)data)++;
}

/* The held service's own manifest broke (a typo; it still says its name) while a new
 * folder takes the name: the new folder is the error, and the rescans settle (one scan,
 * not a scan asking for the next forever). */
static void test_broken_held_folder_keeps_its_name(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    struct manifest *running;
    int rescans = 0;

    write_service(f->root, "m", "name: alpha\ncommand: x\ngpu_required: true\nhealth: false\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    running = a->manifest;
    registry_hold(f->reg, a, true);
    write_service(f->root, "m", "name: alpha\ncommand: [x\n");
    write_service(f->root, "b", "name: alpha\ncommand: x\ngpu_required: false\nhealth: false\n");
    registry_rescan(f->reg, on_rescanned, &rescans);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(rescans, 1);
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_ptr_equal(a->manifest, running);
    assert_null(a->pending);
    assert_string_equal(a->folder, "m");
    assert_non_null(a->manifest_error);
    assert_non_null(
        strstr(json_string_value(json_object_get(registry_find_error(f->reg, "alpha"), "message")),
               "running service in folder \"m\""));
    registry_hold(f->reg, a, false);
}

static void test_errors_and_422_lookup(void **state)
{
    struct fixture *f = *state;
    json_t *err;

    write_service(f->root, "good", "name: good\ncommand: x\nhealth: false\n");
    write_service(f->root, "broken", "name: broken\ncommand: x\nports: [\"99999\"]\n");
    json_decref(rescan(f));
    assert_int_equal(registry_count(f->reg), 1);
    assert_true(json_array_size(registry_errors(f->reg)) >= 1);
    err = registry_find_error(f->reg, "broken");
    assert_non_null(err);
    assert_int_equal(json_integer_value(json_object_get(err, "line")), 3);
    assert_string_equal(json_string_value(json_object_get(err, "folder")), "broken");
    assert_null(registry_find_error(f->reg, "good"));

    /* Fixed: the error goes, the service comes. */
    write_service(f->root, "broken", "name: broken\ncommand: x\nports: [\"8013\"]\n");
    json_decref(rescan(f));
    assert_int_equal(json_array_size(registry_errors(f->reg)), 0);
    assert_non_null(registry_find(f->reg, "broken"));
}

static void test_renamed_folder_keeps_service(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    json_t *diff;

    write_service(f->root, "one", "name: alpha\ncommand: x\nhealth: false\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    remove_service(f->root, "one");
    write_service(f->root, "two", "name: alpha\ncommand: x\nhealth: false\n");
    diff = rescan(f);
    /* The manifest's content decides identity (dir differs, so it is "changed"). */
    assert_false(diff_has(diff, "added", "alpha"));
    assert_false(diff_has(diff, "removed", "alpha"));
    json_decref(diff);
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_string_equal(a->folder, "two");
}

static void test_warnings_only_change_touches(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    uint64_t g;

    write_service(f->root, "a", "name: alpha\ncommand: x\nhealth: false\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    g = a->generation;
    write_service(f->root, "a", "name: alpha\ncommand: x\nhealth: false\nnew_key: 1\n");
    json_decref(rescan(f));
    assert_true(a->generation > g);
    assert_int_equal(json_array_size(a->warnings), 1);
}

static void test_broken_manifest_keeps_service_and_state(void **state)
{
    struct fixture *f = *state;
    struct service *a;
    json_t *diff;

    write_service(f->root, "a", "name: alpha\ncommand: x\nports: [\"8011\"]\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    write_service(f->root, "a", "name: alpha\ncommand: x\nports: [\"99999\"]\n");
    diff = rescan(f);
    assert_false(diff_has(diff, "removed", "alpha"));
    json_decref(diff);
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_non_null(a->manifest_error);
    assert_int_equal(json_integer_value(json_object_get(a->manifest_error, "line")), 3);
    /* The last good manifest stays in force. */
    assert_int_equal(a->manifest->port, 8011);
    assert_true(json_array_size(registry_errors(f->reg)) >= 1);

    write_service(f->root, "a", "name: alpha\ncommand: x\nports: [\"8011\"]\n");
    json_decref(rescan(f));
    assert_null(a->manifest_error);

    /* Gone for good: then it is removed. */
    remove_service(f->root, "a");
    diff = rescan(f);
    assert_true(diff_has(diff, "removed", "alpha"));
    json_decref(diff);
}

static void test_broken_copy_does_not_take_the_service(void **state)
{
    struct fixture *f = *state;
    struct service *a;

    write_service(f->root, "b-good", "name: alpha\ncommand: x\nhealth: false\n");
    json_decref(rescan(f));
    a = registry_find(f->reg, "alpha");
    /* "a-copy" sorts first and is broken: the good one keeps the name, clean. */
    write_service(f->root, "a-copy", "name: alpha\ncommand: [\n");
    json_decref(rescan(f));
    assert_ptr_equal(registry_find(f->reg, "alpha"), a);
    assert_null(a->manifest_error);
    assert_string_equal(a->folder, "b-good");
}

struct waited {
    int calls;
    json_t *diff;
};

static void on_rescan_done(void *data, json_t *diff)
{
    struct waited *w = data;

    w->calls++;
    json_decref(w->diff);
    w->diff = json_incref(diff);
}

static void test_async_rescan_coalesces(void **state)
{
    struct fixture *f = *state;
    struct waited w1 = {0}, w2 = {0}, w3 = {0};
    struct rescan_waiter *h3;

    write_service(f->root, "a", "name: alpha\ncommand: x\nhealth: false\n");
    registry_rescan(f->reg, on_rescan_done, &w1);
    /* Asked while the first scan runs: served by a second scan. */
    registry_rescan(f->reg, on_rescan_done, &w2);
    h3 = registry_rescan(f->reg, on_rescan_done, &w3);
    registry_rescan_cancel(f->reg, h3);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(w1.calls, 1);
    assert_int_equal(w2.calls, 1);
    assert_int_equal(w3.calls, 0);
    assert_true(diff_has(w1.diff, "added", "alpha"));
    assert_false(diff_has(w2.diff, "added", "alpha"));
    assert_non_null(registry_find(f->reg, "alpha"));
    json_decref(w1.diff);
    json_decref(w2.diff);
}

static void test_free_while_scanning(void **state)
{
    struct fixture *f = *state;
    struct waited w = {0};

    write_service(f->root, "a", "name: alpha\ncommand: x\nhealth: false\n");
    registry_rescan(f->reg, on_rescan_done, &w);
    registry_free(f->reg);
    f->reg = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    /* The registry went away when its scan ended; nobody was called. */
    assert_int_equal(w.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_added_changed_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation_and_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_keeps_a_removed_service, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_service_keeps_its_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_folder_cannot_take_a_held_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_held_folder_keeps_its_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_and_422_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renamed_folder_keeps_service, setup, teardown),
        cmocka_unit_test_setup_teardown(test_warnings_only_change_touches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_manifest_keeps_service_and_state, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_broken_copy_does_not_take_the_service, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_async_rescan_coalesces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_while_scanning, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
