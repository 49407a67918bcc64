/* A fake driver for the unit tests of the supervisor and of starts on demand, and the
 * helpers both use (at the end): one more row
 * in the table of drivers (fake_table, for drivers_set()), named by the manifests'
 * `driver: fake`. No process is spawned; a run's end comes when a test says so, through
 * the events its run was given (fake_find(name)->events), as a real one's end comes later
 * from the kernel or the engine. What it does is set by the fields of `fake`. */
#ifndef NANNY_TEST_FAKE_DRIVER_H
#define NANNY_TEST_FAKE_DRIVER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "core/driver.h"
#include "core/registry.h"
#include "core/supervisor.h"

#define FAKE_RUNS_MAX 32

struct fake_run {
    struct driver_run base;
    const struct driver_events *events;
    void *data;
    char *name;
    bool stop_asked;
    bool live; /* not released */
    int pid;   /* what owns_pid() answers for: 1000 + its number */
};

struct fake_state {
    int start_result; /* 0: started at once; 1: the test's started event ends it; < 0: fails */
    bool unavailable;
    bool adopt_finds; /* adopt() finds the service running */
    bool unsettled;   /* settled() says the backend has not yet said what runs */
    bool no_record;   /* record() keeps nothing: the backend finds runs (compose) */
    unsigned starts, stops, releases;
    struct fake_run *runs[FAKE_RUNS_MAX];
    size_t n_runs;
    const struct driver_outside *outside;
    void *outside_data;
};

extern struct fake_state fake;
extern const struct driver driver_fake;
extern const struct driver *const fake_table[];

/* The latest live run of service name, or NULL. */
struct fake_run *fake_find(const char *name);

/* The number of starts of name the fake was asked for. */
unsigned fake_starts_of(const char *name);

/* Forgets every run and setting (before and after each test). */
void fake_reset(void);

/* The service name of reg (the test fails when there is none). */
struct service *fake_service(struct registry *reg, const char *name);

/* Lets loop run what is due until sup is writing no state (a write on a worker thread: what
 * waits for it comes after it); the test fails when it never ends. */
void fake_settle(uv_loop_t *loop, struct supervisor *sup);

/* Removes the folder path and all it holds (a test's temp folder). */
void fake_remove_tree(const char *path);

#endif
