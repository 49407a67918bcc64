/* The fake driver of fake_driver.h. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "lib/alloc.h"
#include "fake_driver.h"

struct fake_state fake;

static struct fake_run *fake_run_new(const struct manifest *m, const struct driver_events *events,
                                     void *data)
{
    struct fake_run *r = xcalloc(1, sizeof(*r));

    assert_true(fake.n_runs < FAKE_RUNS_MAX);
    r->base.driver = &driver_fake;
    r->events = events;
    r->data = data;
    r->name = xstrdup(m->name);
    r->live = true;
    r->pid = 1000 + (int)fake.n_runs;
    fake.runs[fake.n_runs++] = r;
    return r;
}

struct fake_run *fake_find(const char *name)
{
    for (size_t i = fake.n_runs; i-- > 0;)
        if (fake.runs[i]->live && strcmp(fake.runs[i]->name, name) == 0)
            return fake.runs[i];
    return NULL;
}

unsigned fake_starts_of(const char *name)
{
    unsigned n = 0;

    for (size_t i = 0; i < fake.n_runs; i++)
        if (strcmp(fake.runs[i]->name, name) == 0)
            n++;
    return n;
}

void fake_reset(void)
{
    for (size_t i = 0; i < fake.n_runs; i++) {
        free(fake.runs[i]->name);
        free(fake.runs[i]);
    }
    memset(&fake, 0, sizeof(fake));
}

static void fake_setup(const struct driver_context *ctx)
{
    fake.outside = ctx->outside;
    fake.outside_data = ctx->data;
}

static int fake_available(const struct manifest *m, char *err, size_t err_size)
{
    if (!fake.unavailable)
        return 0;
    snprintf(err, err_size, "the fake backend is away");
    return -EHOSTDOWN;
}

static int fake_start(uv_loop_t *loop, const struct manifest *m, char *const *env,
                      const char *log_path, const struct driver_events *events, void *data,
                      struct driver_run **ret, char *err, size_t err_size)
{
    fake.starts++;
    if (fake.start_result < 0) {
        snprintf(err, err_size, "the fake could not start %s", m->name);
        return fake.start_result;
    }
    *ret = &fake_run_new(m, events, data)->base;
    return fake.start_result;
}

static void fake_stop(struct driver_run *handle, uint64_t timeout_ms)
{
    fake.stops++;
    ((struct fake_run *)handle)->stop_asked = true;
}

static json_t *fake_record(const struct driver_run *handle)
{
    if (fake.no_record)
        return NULL;
    return json_pack("{s:s, s:i}", "driver", "fake", "pid", 4242);
}

static int fake_adopt(uv_loop_t *loop, const struct manifest *m, json_t *record,
                      const struct driver_events *events, void *data, struct driver_run **ret)
{
    if (!fake.adopt_finds)
        return -ESRCH;
    *ret = &fake_run_new(m, events, data)->base;
    return 0;
}

static bool fake_settled(void)
{
    return !fake.unsettled;
}

static bool fake_owns_pid(const struct driver_run *handle, int pid)
{
    return ((const struct fake_run *)handle)->pid == pid;
}

static void fake_release(struct driver_run *handle)
{
    fake.releases++;
    ((struct fake_run *)handle)->live = false;
}

const struct driver driver_fake = {
    .name = "fake",
    .setup = fake_setup,
    .available = fake_available,
    .start = fake_start,
    .stop = fake_stop,
    .record = fake_record,
    .adopt = fake_adopt,
    .settled = fake_settled,
    .owns_pid = fake_owns_pid,
    .release = fake_release,
};

const struct driver *const fake_table[] = {&driver_fake, NULL};

struct service *fake_service(struct registry *reg, const char *name)
{
    struct service *s = registry_find(reg, name);

    assert_non_null(s);
    return s;
}

void fake_settle(uv_loop_t *loop, struct supervisor *sup)
{
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 10; i++)
            uv_run(loop, UV_RUN_NOWAIT);
        if (!supervisor_writing(sup))
            return;
        uv_run(loop, UV_RUN_ONCE); /* the write's end wakes it */
    }
    fail_msg("the state is still being written");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

void fake_remove_tree(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
