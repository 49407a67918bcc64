/* Unit tests for followed logs (core/follow.c) through the process driver: a real log
 * file in a real state folder, written by the test as the logger would. Followers of one
 * service share one watch; one that joins gets its tail then the lines after it; cancels
 * from inside a line callback; the service removed; the supervisor freed with followers. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
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
#include "core/registry.h"
#include "core/state.h"
#include "core/supervisor.h"
#include "drivers/drivers.h"
#include "lib/alloc.h"
#include "lib/logfile.h"

#define SEEN_MAX 32

struct follower {
    struct fixture *f;
    struct supervisor_follow *handle;
    char *seen[SEEN_MAX];
    size_t n_seen;
    char *ended; /* end()'s sentence */
    /* At this many lines, cancels these (itself included, maybe). */
    size_t cancel_at;
    struct follower *cancel[2];
};

struct fixture {
    char root[64], state[64], log[128];
    uv_loop_t loop;
    uv_timer_t guard;
    bool guard_fired;
    struct config config;
    struct events *hub;
    struct registry *reg;
    struct supervisor *sup;
    struct follower a, b;
};

/* --- a fake driver whose follow the tests drive ------------------------------------------ */

static struct {
    const struct driver_follow_events *events;
    void *data;
    struct driver_follow handle;
    bool following;
    struct driver_follow_tail tail_handle;
    driver_logs_fn tail_done; /* the tail asked, until answered or cancelled */
    void *tail_data;
    unsigned follows, stops, tail_cancels;
} fake;

extern const struct driver driver_fake, driver_plain;

static int fake_available(const struct manifest *m, char *err, size_t err_size)
{
    return 0;
}

static int fake_start(uv_loop_t *loop, const struct manifest *m, char *const *env,
                      const char *log_path, const struct driver_events *events, void *data,
                      struct driver_run **ret, char *err, size_t err_size)
{
    snprintf(err, err_size, "the fake starts nothing");
    return -ENOSYS;
}

static void fake_stop(struct driver_run *r, uint64_t timeout_ms)
{
}

static void fake_release(struct driver_run *r)
{
}

static int fake_follow(uv_loop_t *loop, const struct manifest *m, const char *log_path,
                       unsigned tail, const struct driver_follow_events *events, void *data,
                       struct driver_follow **ret, char *err, size_t err_size)
{
    assert_false(fake.following);
    fake.events = events;
    fake.data = data;
    fake.following = true;
    fake.follows++;
    fake.handle.driver = &driver_fake;
    *ret = &fake.handle;
    return 0;
}

static void fake_follow_tail(struct driver_follow *f, unsigned tail, driver_logs_fn done,
                             void *data, struct driver_follow_tail **ret)
{
    assert_null(fake.tail_done);
    fake.tail_done = done;
    fake.tail_data = data;
    fake.tail_handle.driver = &driver_fake;
    *ret = &fake.tail_handle;
}

static void fake_follow_tail_cancel(struct driver_follow_tail *t)
{
    assert_non_null(fake.tail_done);
    fake.tail_done = NULL;
    fake.tail_cancels++;
}

static void fake_follow_stop(struct driver_follow *f)
{
    assert_true(fake.following);
    assert_null(fake.tail_done); /* every tail was cancelled first */
    fake.following = false;
    fake.stops++;
}

const struct driver driver_fake = {
    .name = "fake",
    .available = fake_available,
    .start = fake_start,
    .stop = fake_stop,
    .release = fake_release,
    .follow = fake_follow,
    .follow_tail = fake_follow_tail,
    .follow_tail_cancel = fake_follow_tail_cancel,
    .follow_stop = fake_follow_stop,
};

/* A driver that cannot follow. */
const struct driver driver_plain = {
    .name = "plain",
    .available = fake_available,
    .start = fake_start,
    .stop = fake_stop,
    .release = fake_release,
};

static void fake_line(const char *line)
{
    assert_true(fake.following);
    fake.events->line(fake.data, line, strlen(line));
}

static void fake_answer_tail(char **lines, const char *error)
{
    driver_logs_fn done = fake.tail_done;

    assert_non_null(done);
    fake.tail_done = NULL;
    done(fake.tail_data, lines, error);
}

static const struct driver *const process_table[] = {&driver_process, &driver_fake, &driver_plain,
                                                     NULL};

static void on_line(void *data, const char *line, size_t len)
{
    struct follower *w = data;

    assert_null(w->ended);
    assert_true(w->n_seen < SEEN_MAX);
    w->seen[w->n_seen++] = xstrndup(line, len);
    if (w->cancel_at && w->n_seen == w->cancel_at)
        for (size_t i = 0; i < 2; i++)
            if (w->cancel[i]) {
                supervisor_follow_cancel(w->cancel[i]->handle);
                w->cancel[i]->handle = NULL;
            }
}

static void on_end(void *data, const char *error)
{
    struct follower *w = data;

    assert_null(w->ended);
    w->ended = xstrdup(error);
    w->handle = NULL;
}

static void write_service(struct fixture *f, const char *name, const char *text)
{
    char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", f->root, name);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/%s/service.yaml", f->root, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    drivers_set(process_table);
    strcpy(f->root, "/tmp/nanny-follow-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    strcpy(f->state, "/tmp/nanny-follow-state-XXXXXX");
    assert_non_null(mkdtemp(f->state));
    assert_int_equal(state_prepare(f->state), 0);
    snprintf(f->log, sizeof(f->log), "%s/logs/p.log", f->state);
    write_service(f, "p", "name: p\ncommand: [\"true\"]\nhealth: false\n");
    write_service(f, "q", "name: q\ndriver: fake\nhealth: false\n");
    write_service(f, "r", "name: r\ndriver: plain\nhealth: false\n");
    memset(&fake, 0, sizeof(fake));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->guard);
    f->guard.data = f;
    f->config.state_dir = f->state;
    f->config.log_max_bytes = CONFIG_LOG_MAX_BYTES;
    f->config.log_max_files = CONFIG_LOG_MAX_FILES;
    f->hub = events_new(0);
    f->reg = registry_new(&f->loop, f->root, f->hub);
    assert_int_equal(registry_scan_now(f->reg), 0);
    assert_non_null(registry_find(f->reg, "p"));
    assert_non_null(registry_find(f->reg, "q"));
    assert_non_null(registry_find(f->reg, "r"));
    f->sup = supervisor_new(&f->loop, f->reg, NULL, &f->config, f->hub);
    f->a.f = f->b.f = f;
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void follower_clear(struct follower *w)
{
    for (size_t i = 0; i < w->n_seen; i++)
        free(w->seen[i]);
    free(w->ended);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    supervisor_follow_cancel(f->a.handle);
    supervisor_follow_cancel(f->b.handle);
    supervisor_free(f->sup);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    registry_free(f->reg);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    events_free(f->hub);
    follower_clear(&f->a);
    follower_clear(&f->b);
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    nftw(f->state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void on_guard(uv_timer_t *t)
{
    struct fixture *f = t->data;

    f->guard_fired = true;
}

/* Runs the loop until w has seen n lines (or ended, when n is 0). */
static void wait_for(struct fixture *f, struct follower *w, size_t n)
{
    f->guard_fired = false;
    uv_timer_start(&f->guard, on_guard, 10000, 0);
    while ((n ? w->n_seen < n : !w->ended) && !f->guard_fired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->guard);
    assert_false(f->guard_fired);
}

static void drain(struct fixture *f)
{
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void append(struct fixture *f, const char *text)
{
    int fd = open(f->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void follow_service(struct fixture *f, const char *name, struct follower *w, unsigned tail)
{
    const char *error = NULL;

    w->handle =
        supervisor_follow(f->sup, registry_find(f->reg, name), tail, on_line, on_end, w, &error);
    assert_non_null(w->handle);
    assert_null(error);
}

static void follow(struct fixture *f, struct follower *w, unsigned tail)
{
    follow_service(f, "p", w, tail);
}

static void expect(const struct follower *w, const char *const *lines)
{
    size_t n = 0;

    for (; lines[n]; n++) {
        assert_true(n < w->n_seen);
        assert_string_equal(w->seen[n], lines[n]);
    }
    assert_int_equal(w->n_seen, n);
}

/* Two followers, one watch: each gets its tail then every line after it, once. */
static void test_two_followers_one_watch(void **state)
{
    struct fixture *f = *state;

    append(f, "l1\nl2\nl3\n");
    follow(f, &f->a, 2);
    assert_int_equal(supervisor_follow_watches(f->sup), 1);
    wait_for(f, &f->a, 2);
    append(f, "l4\n");
    wait_for(f, &f->a, 3);
    follow(f, &f->b, 2);
    append(f, "l5\n"); /* after b's tail, whenever the watch sees it */
    wait_for(f, &f->b, 3);
    wait_for(f, &f->a, 4);
    assert_int_equal(supervisor_follow_watches(f->sup), 1);
    /* Across a rotation by the logger's rename. */
    assert_int_equal(logfile_rotate(f->log, 2), 0);
    append(f, "l6\n");
    wait_for(f, &f->a, 5);
    wait_for(f, &f->b, 4);
    drain(f);
    expect(&f->a, (const char *const[]){"l2", "l3", "l4", "l5", "l6", NULL});
    expect(&f->b, (const char *const[]){"l3", "l4", "l5", "l6", NULL});
    /* One goes: the watch stays for the other; the last goes: the watch goes. */
    supervisor_follow_cancel(f->a.handle);
    f->a.handle = NULL;
    assert_int_equal(supervisor_follow_watches(f->sup), 1);
    append(f, "l7\n");
    wait_for(f, &f->b, 5);
    drain(f);
    assert_int_equal(f->a.n_seen, 5);
    supervisor_follow_cancel(f->b.handle);
    f->b.handle = NULL;
    assert_int_equal(supervisor_follow_watches(f->sup), 0);
    assert_null(f->a.ended);
    assert_null(f->b.ended);
}

/* A service never started: no file yet, no tail; its lines come once it is written. */
static void test_file_not_there_yet(void **state)
{
    struct fixture *f = *state;

    follow(f, &f->a, 10);
    drain(f);
    append(f, "first\n");
    wait_for(f, &f->a, 1);
    expect(&f->a, (const char *const[]){"first", NULL});
}

/* A line callback cancels another follower and then itself: no line after, no leak. */
static void test_cancel_inside_line(void **state)
{
    struct fixture *f = *state;

    follow(f, &f->a, 0);
    follow(f, &f->b, 0);
    drain(f);
    f->a.cancel_at = 2;
    f->a.cancel[0] = &f->b;
    f->a.cancel[1] = &f->a;
    append(f, "1\n2\n3\n");
    wait_for(f, &f->a, 2);
    drain(f);
    append(f, "4\n");
    drain(f);
    expect(&f->a, (const char *const[]){"1", "2", NULL});
    assert_true(f->b.n_seen <= 2);
    assert_int_equal(supervisor_follow_watches(f->sup), 0);
    assert_null(f->a.ended);
    assert_null(f->b.ended);
}

/* The service's folder goes: its followers end, and so does the watch. */
static void test_service_removed(void **state)
{
    struct fixture *f = *state;
    char path[256];

    follow(f, &f->a, 5);
    follow(f, &f->b, 5); /* still joining */
    snprintf(path, sizeof(path), "%s/p/service.yaml", f->root);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/p", f->root);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(registry_scan_now(f->reg), 0);
    wait_for(f, &f->a, 0);
    wait_for(f, &f->b, 0);
    assert_string_equal(f->a.ended, "the service was removed");
    assert_string_equal(f->b.ended, "the service was removed");
    assert_int_equal(supervisor_follow_watches(f->sup), 0);
}

/* The supervisor freed with followers: they end, nothing is left behind. */
static void test_supervisor_freed(void **state)
{
    struct fixture *f = *state;

    append(f, "x\n");
    follow(f, &f->a, 1);
    wait_for(f, &f->a, 1);
    follow(f, &f->b, 1); /* its tail in flight */
    supervisor_free(f->sup);
    f->sup = NULL;
    assert_string_equal(f->a.ended, "the daemon is stopping");
    assert_string_equal(f->b.ended, "the daemon is stopping");
    uv_run(&f->loop, UV_RUN_NOWAIT);
    f->sup = supervisor_new(&f->loop, f->reg, NULL, &f->config, f->hub); /* for teardown */
}

/* A follower that joins gets none of the feed's lines until its tail is in, then all. */
static void test_join_waits_for_its_tail(void **state)
{
    struct fixture *f = *state;
    char *tail[] = {"1", "2", NULL};

    follow_service(f, "q", &f->a, 5);
    fake_line("1");
    follow_service(f, "q", &f->b, 5);
    assert_int_equal(fake.follows, 1);
    fake_line("2");
    fake_answer_tail(tail, NULL);
    fake_line("3");
    expect(&f->a, (const char *const[]){"1", "2", "3", NULL});
    expect(&f->b, (const char *const[]){"1", "2", "3", NULL});
    /* A tail that fails ends its follower alone. */
    supervisor_follow_cancel(f->b.handle);
    follower_clear(&f->b);
    memset(&f->b, 0, sizeof(f->b));
    f->b.f = f;
    follow_service(f, "q", &f->b, 5);
    fake_answer_tail(NULL, "cannot read its last lines: the engine went away");
    assert_string_equal(f->b.ended, "cannot read its last lines: the engine went away");
    fake_line("4");
    expect(&f->a, (const char *const[]){"1", "2", "3", "4", NULL});
    assert_int_equal(fake.stops, 0);
    supervisor_follow_cancel(f->a.handle);
    f->a.handle = NULL;
    assert_int_equal(fake.stops, 1);
    assert_int_equal(supervisor_follow_watches(f->sup), 0);
}

/* The driver's follow ends by itself (the containers stopped): every follower ends with
 * its sentence, a tail still asked is cancelled, and the follow is not stopped again. */
static void test_driver_follow_ends(void **state)
{
    struct fixture *f = *state;

    follow_service(f, "q", &f->a, 5);
    follow_service(f, "q", &f->b, 5);
    fake.following = false; /* the driver let go of it */
    fake.events->ended(fake.data, "its containers stopped");
    assert_string_equal(f->a.ended, "its containers stopped");
    assert_string_equal(f->b.ended, "its containers stopped");
    assert_int_equal(fake.tail_cancels, 1);
    assert_int_equal(fake.stops, 0);
    assert_int_equal(supervisor_follow_watches(f->sup), 0);
    /* A new follower makes a new follow. */
    follow_service(f, "q", &f->a, 5);
    assert_int_equal(fake.follows, 2);
    assert_int_equal(supervisor_follow_watches(f->sup), 1);
}

/* A driver that cannot follow: NULL and a sentence, no end(). */
static void test_driver_cannot_follow(void **state)
{
    struct fixture *f = *state;
    const char *error = NULL;

    assert_null(
        supervisor_follow(f->sup, registry_find(f->reg, "r"), 5, on_line, on_end, &f->a, &error));
    assert_string_equal(error, "its driver cannot follow its output");
    assert_null(f->a.ended);
    assert_int_equal(supervisor_follow_watches(f->sup), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_followers_one_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_not_there_yet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_inside_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_supervisor_freed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_waits_for_its_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_driver_follow_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_driver_cannot_follow, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
