/* Unit tests for discovery.c: which folders count, cross-manifest rules, scale. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/discovery.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "drivers/drivers.h"

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* Each test gets its own services folder, removed afterwards. */
static int setup(void **state)
{
    char *root = xstrdup("/tmp/nanny-test-discovery-XXXXXX");

    if (!mkdtemp(root)) {
        free(root);
        return -1;
    }
    *state = root;
    return 0;
}

static int teardown(void **state)
{
    char *root = *state;
    int r = nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);

    free(root);
    return r;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Creates root/folder/service.yaml holding text. */
static void add_service(const char *root, const char *folder, const char *text)
{
    char *dir = xasprintf("%s/%s", root, folder);
    char *path = xasprintf("%s/%s", dir, MANIFEST_FILE_NAME);

    assert_int_equal(mkdir(dir, 0755), 0);
    write_file(path, text);
    free(path);
    free(dir);
}

static void assert_diag(const struct diags *d, int line, const char *text)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->items[i].line == line && strstr(d->items[i].message, text))
            return;
    }
    for (size_t i = 0; i < d->n; i++)
        print_message("  diag %d: %s\n", d->items[i].line, d->items[i].message);
    fail_msg("no diagnostic at line %d containing \"%s\"", line, text);
}

static struct scan *scan_ok(const char *root)
{
    struct scan *s = NULL;

    assert_int_equal(discovery_scan(root, &s), 0);
    assert_non_null(s);
    return s;
}

static char *service_text(const char *name, int port)
{
    return xasprintf("name: %s\ncommand: [\"./run\"]\nports: [\"%d\"]\n", name, port);
}

static void test_which_folders_count(void **state)
{
    const char *root = *state;
    char *text, *path;
    struct scan *s;

    text = service_text("b-svc", 8001);
    add_service(root, "b", text);
    free(text);
    text = service_text("a-svc", 8002);
    add_service(root, "a", text);
    free(text);
    add_service(root, "c", "name: c-svc\nports: [\"x\"]\n");
    add_service(root, "_template", "name: template\n");
    add_service(root, ".hidden", "name: hidden\n");
    path = xasprintf("%s/empty", root);
    assert_int_equal(mkdir(path, 0755), 0);
    free(path);
    path = xasprintf("%s/file.yaml", root);
    write_file(path, "name: file\n");
    free(path);
    add_service(root, "bad\xff-name", "name: bytes\n");
    add_service(root, "new\nline", "name: newline\n");

    s = scan_ok(root);
    assert_false(s->truncated);
    assert_int_equal(s->n, 3);
    assert_string_equal(s->entries[0].folder, "a");
    assert_string_equal(s->entries[1].folder, "b");
    assert_string_equal(s->entries[2].folder, "c");
    path = xasprintf("%s/a/service.yaml", root);
    assert_string_equal(s->entries[0].path, path);
    free(path);

    assert_non_null(s->entries[0].manifest);
    assert_string_equal(s->entries[0].name, "a-svc");
    assert_int_equal(s->entries[0].errors.n, 0);
    assert_string_equal(s->entries[1].manifest->name, "b-svc");

    /* A broken manifest is listed with its errors and never hides the others. */
    assert_null(s->entries[2].manifest);
    assert_string_equal(s->entries[2].name, "c-svc");
    assert_diag(&s->entries[2].errors, 2, "is not a valid port mapping");
    discovery_scan_free(s);

    /* A trailing slash on root changes nothing. */
    char *slashed = xasprintf("%s//", root);
    s = scan_ok(slashed);
    assert_int_equal(s->n, 3);
    path = xasprintf("%s/a/service.yaml", root);
    assert_string_equal(s->entries[0].path, path);
    free(path);
    free(slashed);
    discovery_scan_free(s);
}

static void test_empty_and_missing_root(void **state)
{
    const char *root = *state;
    struct scan *s = scan_ok(root);
    char *missing = xasprintf("%s/missing", root);

    assert_int_equal(s->n, 0);
    discovery_scan_free(s);
    s = (struct scan *)missing;
    assert_int_equal(discovery_scan(missing, &s), -ENOENT);
    assert_ptr_equal(s, (struct scan *)missing);
    free(missing);
    discovery_scan_free(NULL);
}

static void test_duplicate_name(void **state)
{
    const char *root = *state;
    char *text;
    struct scan *s;

    text = service_text("same", 8001);
    add_service(root, "first", text);
    free(text);
    text = xasprintf("# the copy\nname: same\ncommand: x\nports: [8002]\n");
    add_service(root, "second", text);
    free(text);

    s = scan_ok(root);
    assert_int_equal(s->n, 2);
    assert_non_null(s->entries[0].manifest);
    assert_null(s->entries[1].manifest);
    assert_string_equal(s->entries[1].name, "same");
    assert_int_equal(s->entries[1].errors.n, 1);
    assert_diag(&s->entries[1].errors, 2,
                "name \"same\" is already used by the service in folder \"first\"");
    discovery_scan_free(s);
}

/* Rewrites root/folder/service.yaml. */
static void write_file_in(const char *root, const char *folder, const char *text)
{
    char *path = xasprintf("%s/%s/%s", root, folder, MANIFEST_FILE_NAME);

    write_file(path, text);
    free(path);
}

/* The folder a running service runs from (a claim) comes first in every cross-manifest
 * rule, whatever the folder order: a new folder that sorts before it and takes its name or
 * a host port is the error, naming the running one. A claim whose folder no longer
 * carries the name (edited, removed) claims nothing. */
static void test_claimed_folder_comes_first(void **state)
{
    const char *root = *state;
    const struct discovery_claim claims[] = {{"other", "a-other"}, {"same", "z-running"}};
    const struct discovery_claim renamed[] = {{"gone", "z-running"}};
    char *text;
    struct scan *s;

    text = service_text("same", 8001);
    add_service(root, "z-running", text);
    free(text);
    add_service(root, "a-new", "name: same\ncommand: x\nports: [8002]\n");
    add_service(root, "b-new", "name: third\ncommand: x\nports: [8001]\n");

    /* Without the claim: the folder order decides. */
    assert_int_equal(discovery_scan(root, &s), 0);
    assert_int_equal(s->n, 3);
    assert_non_null(s->entries[0].manifest);
    assert_null(s->entries[2].manifest);
    discovery_scan_free(s);

    assert_int_equal(discovery_scan_claimed(root, claims, 2, &s), 0);
    assert_int_equal(s->n, 3);
    assert_string_equal(s->entries[0].folder, "a-new");
    assert_null(s->entries[0].manifest);
    assert_diag(&s->entries[0].errors, 1,
                "name \"same\" is already used by the running service in folder \"z-running\"");
    assert_null(s->entries[1].manifest);
    assert_diag(&s->entries[1].errors, 3,
                "host port 8001 is already used by service \"same\" (folder \"z-running\")");
    assert_non_null(s->entries[2].manifest);
    assert_non_null(s->entries[2].canonical);
    discovery_scan_free(s);

    /* The claimed folder now names another service: the claim counts for nothing. */
    assert_int_equal(discovery_scan_claimed(root, renamed, 1, &s), 0);
    assert_non_null(s->entries[0].manifest);
    assert_null(s->entries[2].manifest);
    discovery_scan_free(s);

    /* The running service's own manifest broke: it still claims the name, whether the
     * name can be read (a bad value) or not (a YAML syntax error). */
    write_file_in(root, "z-running", "name: same\ncommand: x\nports: [\"99999\"]\n");
    assert_int_equal(discovery_scan_claimed(root, claims, 2, &s), 0);
    assert_null(s->entries[0].manifest);
    assert_diag(&s->entries[0].errors, 1, "already used by the running service");
    discovery_scan_free(s);
    write_file_in(root, "z-running", "name: same\ncommand: [x\n");
    assert_int_equal(discovery_scan_claimed(root, claims, 2, &s), 0);
    assert_null(s->entries[0].manifest);
    assert_null(s->entries[2].name);
    discovery_scan_free(s);
}

/* Three folders with one name: the second and third are errors, the first stays (the
 * third is compared with the first, not with the rejected second). */
static void test_name_used_three_times(void **state)
{
    const char *root = *state;
    struct scan *s;

    add_service(root, "a", "name: same\ncommand: x\nports: [8001]\n");
    add_service(root, "b", "name: same\ncommand: x\nports: [8002]\n");
    add_service(root, "c", "name: same\ncommand: x\nports: [8003]\n");
    add_service(root, "d", "name: zzz\ncommand: x\nports: [8004]\n");

    s = scan_ok(root);
    assert_int_equal(s->n, 4);
    assert_non_null(s->entries[0].manifest);
    assert_null(s->entries[1].manifest);
    assert_null(s->entries[2].manifest);
    assert_non_null(s->entries[3].manifest);
    assert_diag(&s->entries[2].errors, 1,
                "name \"same\" is already used by the service in folder \"a\"");
    discovery_scan_free(s);
}

/* Compose drops '.' from project names: two compose services whose names differ only by
 * dots would share a project; the later folder is the error. Process services have no
 * project and may. */
static void test_compose_project_names_collide(void **state)
{
    const char *root = *state;
    struct scan *s;

    add_service(root, "a", "name: a.b\ndriver: compose\nports: [8001]\n");
    add_service(root, "b", "name: ab\ndriver: compose\nports: [8002]\n");
    add_service(root, "c", "name: c.d\ncommand: x\nports: [8003]\n");
    add_service(root, "d", "name: cd\ncommand: x\nports: [8004]\n");
    for (const char *const *f = (const char *const[]){"a", "b", NULL}; *f; f++) {
        char *path = xasprintf("%s/%s/docker-compose.yml", root, *f);
        write_file(path, "services: {}\n");
        free(path);
    }

    s = scan_ok(root);
    assert_int_equal(s->n, 4);
    assert_non_null(s->entries[0].manifest);
    assert_null(s->entries[1].manifest);
    assert_diag(&s->entries[1].errors, 1,
                "its compose project name ab (compose drops '.') is already the project of "
                "service a.b");
    assert_non_null(s->entries[2].manifest);
    assert_non_null(s->entries[3].manifest);
    discovery_scan_free(s);
}

/* A broken copy never hides the working service it was copied from. */
static void test_broken_manifest_takes_no_name(void **state)
{
    const char *root = *state;
    char *text;
    struct scan *s;

    add_service(root, "a-copy", "name: same\ncommand: x\nports: [\"bad\"]\n");
    text = service_text("same", 8002);
    add_service(root, "b-original", text);
    free(text);

    s = scan_ok(root);
    assert_null(s->entries[0].manifest);
    assert_string_equal(s->entries[0].name, "same");
    assert_non_null(s->entries[1].manifest);
    assert_int_equal(s->entries[1].errors.n, 0);
    discovery_scan_free(s);
}

static void test_shared_host_port(void **state)
{
    const char *root = *state;
    char *text;
    struct scan *s;

    text = service_text("one", 8000);
    add_service(root, "a-one", text);
    free(text);
    add_service(root, "b-two",
                "name: two\ncommand: x\nports:\n  - 9000\n  - \"127.0.0.1:8000:80\"\n");
    /* b-two is rejected, so its 9000 stays free for c-three. */
    text = service_text("three", 9000);
    add_service(root, "c-three", text);
    free(text);
    /* udp is another port. */
    add_service(root, "d-four", "name: four\ncommand: x\nports: [\"8000/udp\"]\n");
    /* A health port is not a host port claim. */
    add_service(root, "e-five", "name: five\ncommand: x\nhealth: {port: 8000}\n");

    s = scan_ok(root);
    assert_int_equal(s->n, 5);
    assert_non_null(s->entries[0].manifest);
    assert_null(s->entries[1].manifest);
    assert_int_equal(s->entries[1].errors.n, 1);
    assert_diag(&s->entries[1].errors, 5,
                "host port 8000 is already used by service \"one\" (folder \"a-one\"): pick "
                "another host port");
    assert_non_null(s->entries[2].manifest);
    assert_non_null(s->entries[3].manifest);
    assert_non_null(s->entries[4].manifest);
    discovery_scan_free(s);
}

/* discovery_read() lists the folders discovery_scan() does, each manifest checked on its
 * own: a clash of names or host ports rejects nothing, and no canonical text is made. */
static void test_read_keeps_clashes(void **state)
{
    const char *root = *state;
    char *missing = xasprintf("%s/missing", root);
    struct scan *s = NULL;

    add_service(root, "a", "name: same\ncommand: x\nports: [8001]\n");
    add_service(root, "b", "name: same\ncommand: x\nports: [8002]\n");
    add_service(root, "c", "name: other\ncommand: x\nports: [8001]\n");
    add_service(root, "d", "name: broken\nports: [\"x\"]\n");
    add_service(root, "_template", "name: template\n");

    assert_int_equal(discovery_read(root, &s), 0);
    assert_int_equal(s->n, 4);
    for (size_t i = 0; i < 3; i++) {
        assert_non_null(s->entries[i].manifest);
        assert_int_equal(s->entries[i].errors.n, 0);
        assert_null(s->entries[i].canonical);
    }
    assert_string_equal(s->entries[1].folder, "b");
    assert_string_equal(s->entries[1].name, "same");
    assert_string_equal(s->entries[2].manifest->name, "other");
    assert_null(s->entries[3].manifest);
    assert_string_equal(s->entries[3].name, "broken");
    assert_diag(&s->entries[3].errors, 2, "is not a valid port mapping");
    discovery_scan_free(s);

    /* The same folder scanned rejects b and c. */
    s = scan_ok(root);
    assert_null(s->entries[1].manifest);
    assert_null(s->entries[2].manifest);
    discovery_scan_free(s);

    assert_int_equal(discovery_read(missing, &s), -ENOENT);
    free(missing);
}

static void test_every_shared_port_reported(void **state)
{
    const char *root = *state;
    struct scan *s;

    add_service(root, "a", "name: a\ncommand: x\nports: [8000, 8001, 8002]\n");
    add_service(root, "b", "name: b\ncommand: x\nports:\n  - 8002\n  - 8003\n  - 8000\n");

    s = scan_ok(root);
    assert_null(s->entries[1].manifest);
    assert_int_equal(s->entries[1].errors.n, 2);
    assert_diag(&s->entries[1].errors, 4, "host port 8002 is already used");
    assert_diag(&s->entries[1].errors, 6, "host port 8000 is already used");
    discovery_scan_free(s);
}

static void test_symlinks(void **state)
{
    const char *root = *state;
    char outside[] = "/tmp/nanny-test-discovery-out-XXXXXX";
    char *target, *link, *dir, *real;
    struct scan *s;

    assert_non_null(mkdtemp(outside));
    target = xasprintf("%s/%s", outside, MANIFEST_FILE_NAME);
    write_file(target, "name: outside\ncommand: x\nports: [8000]\n");

    /* service.yaml pointing out of the folder. */
    dir = xasprintf("%s/evil", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    link = xasprintf("%s/%s", dir, MANIFEST_FILE_NAME);
    assert_int_equal(symlink(target, link), 0);
    free(link);
    free(dir);

    /* A service folder that is itself a symlink out of the folder. */
    link = xasprintf("%s/linked-folder", root);
    assert_int_equal(symlink(outside, link), 0);
    free(link);

    /* A dangling service.yaml is reported, not ignored. */
    dir = xasprintf("%s/dangling", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    link = xasprintf("%s/%s", dir, MANIFEST_FILE_NAME);
    assert_int_equal(symlink("nowhere.yaml", link), 0);
    free(link);
    free(dir);

    /* A symlink to another file inside the folder is fine. */
    dir = xasprintf("%s/inside", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    real = xasprintf("%s/real.yaml", dir);
    write_file(real, "name: inside\ncommand: x\nports: [8001]\n");
    link = xasprintf("%s/%s", dir, MANIFEST_FILE_NAME);
    assert_int_equal(symlink("real.yaml", link), 0);
    free(link);
    free(real);
    free(dir);

    s = scan_ok(root);
    assert_int_equal(s->n, 4);
    assert_string_equal(s->entries[0].folder, "dangling");
    assert_null(s->entries[0].manifest);
    assert_diag(&s->entries[0].errors, 0, "symlink to a file that does not exist");
    assert_string_equal(s->entries[1].folder, "evil");
    assert_null(s->entries[1].manifest);
    assert_null(s->entries[1].name);
    assert_diag(&s->entries[1].errors, 0, "outside the services folder");
    assert_string_equal(s->entries[2].folder, "inside");
    assert_non_null(s->entries[2].manifest);
    assert_string_equal(s->entries[3].folder, "linked-folder");
    assert_null(s->entries[3].manifest);
    assert_diag(&s->entries[3].errors, 0, "outside the services folder");
    discovery_scan_free(s);

    unlink(target);
    rmdir(outside);
    free(target);
}

/* The name rule alone, as the folder watcher uses it. */
static void test_folder_is_candidate(void **state)
{
    assert_true(discovery_folder_is_candidate("upscale-api"));
    assert_true(discovery_folder_is_candidate("a"));
    assert_true(discovery_folder_is_candidate("Café"));
    assert_true(discovery_folder_is_candidate("with space"));
    assert_false(discovery_folder_is_candidate(""));
    assert_false(discovery_folder_is_candidate("_template"));
    assert_false(discovery_folder_is_candidate(".git"));
    assert_false(discovery_folder_is_candidate("."));
    assert_false(discovery_folder_is_candidate(".."));
    assert_false(discovery_folder_is_candidate("bad\xff-name"));
    assert_false(discovery_folder_is_candidate("new\nline"));
    assert_false(discovery_folder_is_candidate("tab\there"));
}

/* Every valid entry carries its manifest as compact JSON with sorted keys; a broken one
 * carries none. */
static void test_canonical_text(void **state)
{
    const char *root = *state;
    struct scan *s;
    json_t *j;
    char *expected;

    add_service(root, "a", "name: a\ncommand: x\nports: [8000]\nenv: {B: 2, A: 1}\n");
    add_service(root, "b", "name: b\nports: [\"x\"]\n");
    add_service(root, "c", "name: a\ncommand: x\nports: [8001]\n"); /* a repeated name */
    s = scan_ok(root);
    assert_int_equal(s->n, 3);
    assert_non_null(s->entries[0].canonical);
    j = manifest_to_json(s->entries[0].manifest);
    expected = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s->entries[0].canonical, expected);
    assert_non_null(strstr(s->entries[0].canonical, "\"env\":{\"A\":\"1\",\"B\":\"2\"}"));
    free(expected);
    json_decref(j);
    assert_null(s->entries[1].manifest);
    assert_null(s->entries[1].canonical);
    assert_null(s->entries[2].manifest);
    assert_null(s->entries[2].canonical);

    /* A caller may take the text: the scan then leaves it alone. */
    free(s->entries[0].canonical);
    s->entries[0].canonical = NULL;
    discovery_scan_free(s);
}

/* A service sharing many ports with another reports ten of them and a count of the rest. */
static void test_cross_errors_capped(void **state)
{
    const char *root = *state;
    char ports[512];
    size_t len = 0;
    char *a, *b;
    struct scan *s;

    for (int i = 0; i < 25; i++)
        len += (size_t)snprintf(ports + len, sizeof(ports) - len, "  - %d\n", 8000 + i);
    a = xasprintf("name: a\ncommand: x\nports:\n%s", ports);
    b = xasprintf("name: b\ncommand: x\nports:\n%s", ports);
    add_service(root, "a", a);
    add_service(root, "b", b);
    s = scan_ok(root);
    assert_non_null(s->entries[0].manifest);
    assert_null(s->entries[1].manifest);
    assert_int_equal(s->entries[1].errors.n, MANIFEST_ERRORS_MAX + 1);
    assert_diag(&s->entries[1].errors, 4, "host port 8000 is already used");
    assert_diag(&s->entries[1].errors, 13, "host port 8009 is already used");
    assert_int_equal(s->entries[1].errors.items[10].line, 0);
    assert_string_equal(s->entries[1].errors.items[10].message, "... and 15 more problems");
    discovery_scan_free(s);
    free(a);
    free(b);
}

/* A broken manifest's own errors arrive capped, and the scan keeps the count it gave. */
static void test_manifest_errors_capped(void **state)
{
    const char *root = *state;
    char text[1024];
    size_t len = (size_t)snprintf(text, sizeof(text), "name: a\ncommand: x\nports:\n");
    struct scan *s;

    for (int i = 0; i < 30; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "  - \"%dx\"\n", i);
    add_service(root, "a", text);
    s = scan_ok(root);
    assert_null(s->entries[0].manifest);
    assert_int_equal(s->entries[0].errors.n, MANIFEST_ERRORS_MAX + 1);
    assert_diag(&s->entries[0].errors, 4, "ports[0]: \"0x\" is not a valid port mapping");
    assert_string_equal(s->entries[0].errors.items[10].message, "... and 20 more problems");
    discovery_scan_free(s);
}

/* Equal folders give equal JSON, so that a rescan sees no change. */
static void test_rescan_is_stable(void **state)
{
    const char *root = *state;
    struct scan *a, *b;

    add_service(root, "x", "name: x\ncommand: x\nports: [8000]\nenv: {B: 2, A: 1}\n");
    add_service(root, "y", "name: y\ncommand: [a, b]\nhealth: false\n");
    a = scan_ok(root);
    b = scan_ok(root);
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        json_t *ja = manifest_to_json(a->entries[i].manifest);
        json_t *jb = manifest_to_json(b->entries[i].manifest);

        assert_true(json_equal(ja, jb));
        assert_string_equal(a->entries[i].canonical, b->entries[i].canonical);
        json_decref(ja);
        json_decref(jb);
    }
    /* A change shows in the text; the unchanged service keeps its own. */
    char *path = xasprintf("%s/y/%s", root, MANIFEST_FILE_NAME);
    struct scan *c;

    write_file(path, "name: y\ncommand: [a, c]\nhealth: false\n");
    free(path);
    c = scan_ok(root);
    assert_string_equal(c->entries[0].canonical, a->entries[0].canonical);
    assert_string_not_equal(c->entries[1].canonical, a->entries[1].canonical);
    assert_non_null(strstr(c->entries[1].canonical, "\"command\":[\"a\",\"c\"]"));
    discovery_scan_free(a);
    discovery_scan_free(b);
    discovery_scan_free(c);
}

struct thread_scan {
    const char *root;
    size_t n;
    int r;
};

static void *scan_thread(void *arg)
{
    struct thread_scan *t = arg;
    struct scan *s = NULL;

    for (int i = 0; i < 20; i++) {
        t->r = discovery_scan(t->root, &s);
        if (t->r < 0)
            return NULL;
        t->n = s->n;
        discovery_scan_free(s);
    }
    return NULL;
}

/* Scans share nothing, so several may run at once on worker threads. */
static void test_parallel_scans(void **state)
{
    const char *root = *state;
    pthread_t threads[4];
    struct thread_scan results[4];

    for (int i = 0; i < 20; i++) {
        char folder[16];
        char *text;

        snprintf(folder, sizeof(folder), "svc%02d", i);
        text = service_text(folder, 8000 + i % 10); /* half of them clash */
        add_service(root, folder, text);
        free(text);
    }
    for (int i = 0; i < 4; i++) {
        results[i] = (struct thread_scan){.root = root, .r = -1};
        assert_int_equal(pthread_create(&threads[i], NULL, scan_thread, &results[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(results[i].r, 0);
        assert_int_equal(results[i].n, 20);
    }
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* 10,000 service folders: all found, in order, with their cross checks. The time is
 * printed, not asserted (tests assert behaviour). */
static void test_ten_thousand_folders(void **state)
{
    const char *root = *state;
    const int n = 10000;
    struct timespec start;
    struct scan *s;
    size_t valid = 0;

    for (int i = 0; i < n; i++) {
        char folder[32];
        char *text;

        snprintf(folder, sizeof(folder), "svc-%05d", i);
        text = xasprintf("name: %s\ndescription: Service %d\ncommand: [\"./run\", \"%d\"]\n"
                         "ports: [\"%d:8000\"]\nenv: {INDEX: \"%d\"}\n",
                         folder, i, i, 10000 + i, i);
        add_service(root, folder, text);
        free(text);
    }
    /* One clash at the end, to prove the cross checks ran over everything. */
    add_service(root, "zzz-clash", "name: clash\ncommand: x\nports: [\"10000\"]\n");

    clock_gettime(CLOCK_MONOTONIC, &start);
    s = scan_ok(root);
    print_message("# scanned %zu folders in %.3f s\n", s->n, seconds_since(&start));
    assert_int_equal(s->n, (size_t)n + 1);
    for (size_t i = 0; i < s->n; i++)
        valid += s->entries[i].manifest != NULL;
    assert_int_equal(valid, (size_t)n);
    assert_string_equal(s->entries[0].folder, "svc-00000");
    assert_string_equal(s->entries[n - 1].name, "svc-09999");
    assert_diag(&s->entries[n].errors, 3,
                "host port 10000 is already used by service \"svc-00000\"");
    discovery_scan_free(s);
}

int main(void)
{
    drivers_set(drivers_builtin);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_which_folders_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_missing_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claimed_folder_comes_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compose_project_names_collide, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_used_three_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_manifest_takes_no_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_host_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_shared_port_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_keeps_clashes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinks, setup, teardown),
        cmocka_unit_test(test_folder_is_candidate),
        cmocka_unit_test_setup_teardown(test_canonical_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_errors_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_errors_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rescan_is_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallel_scans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ten_thousand_folders, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
