/* The driver interface: how the supervisor starts, stops, watches and reads a service
 * without knowing what runs it. The daemon's drivers (process, compose) are in the table
 * of drivers/drivers.c; the core finds them by name and never names one. */
#ifndef NANNY_DRIVER_H
#define NANNY_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "core/manifest.h"
#include "lib/fetch.h"

struct config;
struct driver;

/* A run of one service, and a logs request still in flight. Every handle a driver makes
 * starts with this header (its own struct embeds it first), naming the driver that made
 * it: a handle is always stopped, released or cancelled by that driver's code, whatever
 * the service's manifest says by then. */
struct driver_run {
    const struct driver *driver;
};
struct driver_logs {
    const struct driver *driver;
};

/* What a run tells the supervisor, on the loop. */
struct driver_events {
    /* A start that answered 1 (in progress) finished: error NULL, or a sentence (the run
     * then ends by itself and gone() follows). */
    void (*started)(void *data, struct driver_run *r, const char *error);
    /* It ended by itself (not after stop): exit status (-1 when unknown) or signal. */
    void (*exited)(void *data, struct driver_run *r, int exit_status, int term_signal);
    /* After stop or an exit: nothing of it runs any more (for compose: the engine lists
     * none of the project's containers running, or it is unreachable). release() may be
     * called from here. */
    void (*gone)(void *data, struct driver_run *r);
};

/* The last lines of a service's output, NULL-terminated and valid during the call only;
 * or NULL and a sentence. */
typedef void (*driver_logs_fn)(void *data, char **lines, const char *error);

/* A follow of a service's output (one per service, which the supervisor shares among its
 * followers: core/follow.c), and a tail asked of it for a follower that joins. */
struct driver_follow {
    const struct driver *driver;
};
struct driver_follow_tail {
    const struct driver *driver;
};

/* What a follow tells, on the loop, never before follow() returns. */
struct driver_follow_events {
    /* A line (without its '\n'; any byte but '\n'), valid during the call. follow_stop()
     * may be called from here. */
    void (*line)(void *data, const char *line, size_t len);
    /* It ended by itself (error: a sentence: the containers stopped, the engine went
     * away); the driver has let go of the handle: follow_stop() must not follow. */
    void (*ended)(void *data, const char *error);
};

/* What a driver sees happen outside the daemon, told to the supervisor. */
struct driver_outside {
    /* Something of a service runs that no run of the daemon has (started by hand, or
     * before the daemon): key is the service's instance_key(). The supervisor adopt()s it
     * with a NULL record. Said again after each change the driver sees. */
    void (*appeared)(void *data, const struct driver *d, const char *key);
    /* The driver's backend (the Docker engine) became unavailable (error says why) or
     * came back (NULL). */
    void (*backend)(void *data, const struct driver *d, const char *error);
};

/* What a driver is given once, at setup; valid until its teardown. */
struct driver_context {
    uv_loop_t *loop;
    struct fetcher *fetcher;
    const struct config *config;
    const struct driver_outside *outside;
    void *data;
};

/* A driver: a table of functions, one per kind of service (systemd's unit_vtable). The
 * supervisor never names a driver; it finds a manifest's by name (driver_for).
 *
 * Required: name, available, start, stop, release. Every other slot may be NULL, with
 * the meaning given beside it; the calls below (driver_run_stop...) check them. */
struct driver {
    const char *name; /* what manifests call it: "process", "compose" */

    /* Once, before anything else (NULL: nothing to set up). */
    void (*setup)(const struct driver_context *ctx);
    /* Once, at the end: every run has been released (NULL: nothing to undo). */
    void (*teardown)(void);
    /* A service of this driver exists now (again after each rescan that finds one): the
     * driver may begin watching its backend (NULL: nothing to watch). */
    void (*in_use)(void);
    /* Whether the driver can say what runs: false while it waits for its backend's first
     * answer (compose: the engine's first list, or the engine known unreachable). The
     * daemon adopts, and carries out operations, only once every driver can; a driver
     * that becomes able tells it through outside->backend. NULL: always. */
    bool (*settled)(void);
    /* The backend as GET /health shows it, a new reference (NULL: nothing to show). */
    json_t *(*info)(void);
    /* The name the backend knows a service by (compose's project name), newly allocated;
     * two services with one key would be one thing there, so discovery rejects the later
     * folder, with instance_clash's sentence. NULL: the service name itself. */
    char *(*instance_key)(const char *name);
    void (*instance_clash)(const char *key, const char *other, char *buf, size_t size);

    /* 0 when the driver can start m now; else a negative errno and a sentence (no Docker
     * engine...): the backend is unavailable, nothing was tried. */
    int (*available)(const struct manifest *m, char *err, size_t err_size);
    /* Starts m, its output appended to log_path, with env (NULL-terminated "KEY=VALUE",
     * or NULL: what the daemon adds for this run, the GPUs it was placed on) in its
     * environment over m's: 0 when started, 1 when the start goes on (started() tells its
     * end); on failure a negative errno and a sentence for last_error in err. */
    int (*start)(uv_loop_t *loop, const struct manifest *m, char *const *env, const char *log_path,
                 const struct driver_events *events, void *data, struct driver_run **ret, char *err,
                 size_t err_size);
    /* Stops it: asks it to end, forces it after timeout_ms, calls gone() when nothing is
     * left. Harmless when called again. */
    void (*stop)(struct driver_run *r, uint64_t timeout_ms);
    /* What the state file keeps of a run, for a later daemon to adopt it (new reference,
     * NULL when there is nothing to keep). NULL: runs are never kept. */
    json_t *(*record)(const struct driver_run *r);
    /* Takes over a run of m that the daemon did not start (recorded by an earlier daemon,
     * or seen by the driver: record NULL); -ESRCH when it no longer runs. NULL: nothing is
     * ever adopted. */
    int (*adopt)(uv_loop_t *loop, const struct manifest *m, json_t *record,
                 const struct driver_events *events, void *data, struct driver_run **ret);
    /* The GPUs an adopted run was given, as what runs says (a process's environment, a
     * container's NVIDIA_VISIBLE_DEVICES):
     * a bit set of indexes in *ret and 0; -ENOENT when it names none, another negative
     * errno when it cannot be read. NULL: the driver cannot tell (the state file's
     * record then stands). */
    int (*gpu_devices)(const struct driver_run *r, uint64_t *ret);
    /* Whether process pid (one NVML lists on a GPU) is part of the run, for telling
     * what a service uses of its GPUs (process: its marker; compose: a cgroup of one of
     * its containers). NULL: the driver cannot tell (none is counted). */
    bool (*owns_pid)(const struct driver_run *r, int pid);
    /* A stop of a service that does not run: what its last run left (a compose project's
     * exited containers) is removed by a run that only stops (gone() when done). 0 and
     * *ret NULL when nothing is left. NULL: the driver leaves nothing. */
    int (*leftovers)(const struct manifest *m, const struct driver_events *events, void *data,
                     struct driver_run **ret);
    /* Forgets a run without stopping it (the daemon stops; the service keeps running). */
    void (*release)(struct driver_run *r);
    /* The last tail lines of m's output; done may be called before this returns, and is
     * then the answer (*ret NULL). Otherwise *ret can be cancelled until done. NULL: the
     * driver keeps no output. */
    void (*logs)(const struct manifest *m, const char *log_path, unsigned tail, driver_logs_fn done,
                 void *data, struct driver_logs **ret);
    /* NULL when logs always answers before it returns. */
    void (*logs_cancel)(struct driver_logs *l);
    /* Follows m's output: line() gets its last tail lines, then each line written from now
     * on, until follow_stop() or ended(). 0, or a negative errno and a sentence in err.
     * NULL: the driver cannot follow (and the other follow slots are NULL too). */
    int (*follow)(uv_loop_t *loop, const struct manifest *m, const char *log_path, unsigned tail,
                  const struct driver_follow_events *events, void *data, struct driver_follow **ret,
                  char *err, size_t err_size);
    /* For a follower that joins f: its last tail lines, given to done on a later loop pass
     * (NULL-terminated, valid during the call; or NULL and a sentence). They end with the
     * last line f gave through line() before done, so that the follower, taking them and
     * then f's lines after done, misses nothing and sees nothing twice. *ret can be
     * cancelled until done; each is answered or cancelled before follow_stop(f). */
    void (*follow_tail)(struct driver_follow *f, unsigned tail, driver_logs_fn done, void *data,
                        struct driver_follow_tail **ret);
    void (*follow_tail_cancel)(struct driver_follow_tail *t);
    /* Stops f: no callback after this. Safe inside its line(). */
    void (*follow_stop)(struct driver_follow *f);
    /* Keeps the output's size in bounds (rotation), on a worker thread; 1 when it rotated.
     * NULL when the driver keeps no log file. */
    int (*rotate)(const char *log_path, uint64_t max_bytes, unsigned keep);
};

/* The table of drivers, NULL-terminated (drivers/drivers.h has the daemon's): set once,
 * before any manifest is looked at. A new driver is one file and one row there. */
void drivers_set(const struct driver *const *table);
/* The table, for walking it. */
const struct driver *const *drivers_all(void);
/* The driver called name, or NULL. */
const struct driver *driver_find(const char *name);
/* The driver of a manifest, or NULL when the table has none of that name. */
const struct driver *driver_for(const struct manifest *m);

/* The calls that go through a handle's own driver, optional slots checked. */
void driver_run_stop(struct driver_run *r, uint64_t timeout_ms);
void driver_run_release(struct driver_run *r); /* NULL is fine */
json_t *driver_run_record(const struct driver_run *r);
void driver_logs_cancel(struct driver_logs *l); /* NULL is fine */
/* The backend's name for a service of driver d (instance_key, or the name). */
char *driver_instance_key(const struct driver *d, const char *name);

#endif
