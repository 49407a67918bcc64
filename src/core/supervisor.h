/* The supervisor: the core that runs services. It owns what is happening to each service
 * (its run: the lifecycle state machine, the driver's handle, the health probe, the timers,
 * and the status the API shows), applies the GPU one-of rule to every start, publishes
 * every change on the event hub, and records what it started in the state folder, so that
 * a restarted daemon adopts what still runs. Everything happens on the loop.
 *
 * Its files: supervisor.c (operations and settling), run.c (one service's run), adopt.c
 * (what was started before or outside the daemon), logs.c (logs and their rotation),
 * follow.c (followed logs). */
#ifndef NANNY_SUPERVISOR_H
#define NANNY_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "core/config.h"
#include "core/driver.h"
#include "core/events.h"
#include "core/placement.h"
#include "core/lifecycle.h"
#include "core/registry.h"
#include "lib/fetch.h"

struct supervisor;
struct supervisor_op; /* a start, stop or restart someone waits for */

/* The last health check. */
struct health_result {
    bool checked; /* false until the first check */
    bool ok;
    long status_code;
    uint64_t latency_ms;
    int64_t checked_at_ms; /* Unix time */
    const char *error;
};

/* A start on demand waiting for the GPU (core/demand.h): since when (Unix ms; 0: none),
 * how many proxied requests wait for it, its manifest priority, and whether it waits for
 * a swap (its holders' requests in flight to end) rather than in the queue. */
struct service_wait {
    int64_t since_ms;
    unsigned requests;
    int priority;
    bool swap;
};

/* What is happening to a service: the supervisor's alone, read here. */
struct service_status {
    enum service_state state;
    bool is_healthy;         /* running and its last check passed (none: false, SPEC) */
    int64_t started_at_ms;   /* Unix time, 0 when not started */
    unsigned restarts;       /* automatic restarts since the last start a person asked */
    uint64_t restarts_total; /* automatic restarts since the daemon began (a counter) */
    const char *last_error;
    const char *gpu_warning;     /* it uses more GPU memory than it declares (NULL: it does not) */
    int64_t idle_stop_at_ms;     /* Unix time its idle_timeout stops it (0: none pending) */
    struct service_wait waiting; /* its start on demand waits for the GPU (since_ms 0: not) */
    struct health_result health;
    /* Changes whenever anything above changes, and is never reused by another service:
     * lets a surface reuse what it rendered. 0 for a service never run. */
    uint64_t generation;
};

enum supervisor_outcome {
    SUPERVISOR_OK,            /* done: the service is in the state asked for */
    SUPERVISOR_ALREADY,       /* it already runs: nothing was done */
    SUPERVISOR_CONFLICT,      /* other services hold the GPUs it needs (holders, holder) */
    SUPERVISOR_IMPOSSIBLE,    /* the box can never give what it needs (message, detail) */
    SUPERVISOR_DRIVER_FAILED, /* the driver could not start it (message) */
    SUPERVISOR_TIMED_OUT,     /* not healthy within start_period; it was stopped */
    SUPERVISOR_UNAVAILABLE,   /* its driver cannot work here (message) */
    SUPERVISOR_CANCELLED,     /* a later request undid it (a stop after a start...) */
    SUPERVISOR_UNRECORDED,    /* its intent could not be written ahead (message) */
};

struct supervisor_result {
    enum supervisor_outcome outcome;
    const char *holder;  /* SUPERVISOR_CONFLICT: the first of holders */
    const char *message; /* a sentence for the person, or NULL */
    json_t *preempted;   /* array of the names stopped to free the GPU (borrowed) */
    json_t *holders;     /* SUPERVISOR_CONFLICT: the names whose stop makes room, in stop order
                          * (borrowed; NULL otherwise) */
    json_t *detail;      /* SUPERVISOR_IMPOSSIBLE: {"need", "gpus"} (borrowed; NULL otherwise) */
    const struct service_status *status; /* the service's, now */
};

/* Called once per operation, on the loop (possibly before supervisor_start returns). */
typedef void (*supervisor_done_fn)(void *data, struct service *svc,
                                   const struct supervisor_result *res);

/* Sets up every driver of the table (drivers_set) and subscribes to hub, on which it
 * publishes state, health, GPU and preemption events. */
struct supervisor *supervisor_new(uv_loop_t *loop, struct registry *reg, struct fetcher *fetcher,
                                  const struct config *config, struct events *hub);

/* Adopts what an earlier daemon started and recorded in the state folder; what no longer
 * runs (or whose pid now belongs to another process) is marked stopped. */
void supervisor_adopt(struct supervisor *sup);

/* The registry changed: a driver that has services now may begin watching its backend
 * (the compose driver, the Docker engine). */
void supervisor_services_changed(struct supervisor *sup);

/* The daemon is stopping: records what runs for the next daemon to adopt or, with
 * stop_services, stops every service (supervisor_busy() tells when they are gone). */
void supervisor_shutdown(struct supervisor *sup, bool stop_services);

/* True while some service still has a process. */
bool supervisor_busy(struct supervisor *sup);

/* Lets go of every run without stopping it, and frees the supervisor. */
void supervisor_free(struct supervisor *sup);

/* What is happening to svc; sup may be NULL (then every service is stopped). Valid until
 * the supervisor next runs. */
const struct service_status *supervisor_status(const struct supervisor *sup,
                                               const struct service *svc);

/* Changes whenever any service's status changes: a surface's list of every status is
 * still good while this and registry_generation() are what they were. */
uint64_t supervisor_generation(const struct supervisor *sup);

/* Who holds GPUs now and who waits, as the gpu event shows it: {"holder": name|null (the
 * first by name), "holders": [names], "queue": [names], "placed": [{"service", "devices":
 * [indexes], "memory": bytes|null (whole GPUs), "reserved"}]}. New reference. */
json_t *supervisor_gpu(struct supervisor *sup);

/* The box placement decides on (placement.h): n GPUs with their memory (0: unknown) and
 * what processes outside the daemon use of each. n 0 is one GPU of unknown size, the
 * seed's box, which is also what the supervisor starts with. Starts waiting for room are
 * looked at again. */
void supervisor_set_gpus(struct supervisor *sup, const struct placement_gpu *gpus, size_t n);
const struct placement_gpu *supervisor_gpus(const struct supervisor *sup, size_t *ret_n);

/* When svc's idle_timeout will stop it (Unix ms; 0: not pending), as the proxy, which
 * sees its requests, says: shown in its status. */
void supervisor_set_idle_stop(struct supervisor *sup, struct service *svc, int64_t at_ms);

/* That svc's start on demand waits for the GPU (w), or no longer does (NULL), as the core's
 * demand says: shown in its status, and in the gpu event's queue. */
void supervisor_set_waiting(struct supervisor *sup, struct service *svc,
                            const struct service_wait *w);

/* What the GPU rule says now of a start of svc without force, changing nothing. */
enum supervisor_room {
    SUPERVISOR_ROOM,         /* it would start (it needs no GPU, one is free, or it runs already) */
    SUPERVISOR_NO_ROOM,      /* holders keep it out: *ret_holders names them in stop order */
    SUPERVISOR_NO_ROOM_EVER, /* no GPU of the box can ever take it */
};
/* *ret_holders (NO_ROOM only; else NULL) is a new reference. */
enum supervisor_room supervisor_gpu_room(struct supervisor *sup, struct service *svc,
                                         json_t **ret_holders);

/* The processes on the GPUs as NVML last listed them (inventory.h): each is counted to the
 * running service that owns it, and a service that now uses more memory on a GPU than its
 * gpu.memory declares (or is back within it) gets a status gpu_warning and a gpu_overuse
 * event; with gpu.enforce it is stopped, with a last_error that says why. */
struct inventory_proc;
void supervisor_gpu_usage(struct supervisor *sup, const struct inventory_proc *procs, size_t n);

/* Starts (restart: stops first) svc. force preempts the GPU holder; wait_healthy answers
 * only once it is running. Returns a handle for supervisor_op_cancel() while the answer
 * is pending, or NULL when done() was already called. */
struct supervisor_op *supervisor_start(struct supervisor *sup, struct service *svc, bool force,
                                       bool wait_healthy, bool restart, supervisor_done_fn done,
                                       void *data);
struct supervisor_op *supervisor_stop(struct supervisor *sup, struct service *svc,
                                      supervisor_done_fn done, void *data);

/* The requester went away: done() will not be called; the operation itself goes on. */
void supervisor_op_cancel(struct supervisor_op *op);

/* The last tail lines of svc's output, given to done (NULL-terminated, valid during the
 * call; or NULL and a sentence). Returns NULL when done was called already, else a handle
 * for supervisor_logs_cancel() until done is called. */
struct supervisor_logs;
struct supervisor_logs *supervisor_logs(struct supervisor *sup, struct service *svc, unsigned tail,
                                        driver_logs_fn done, void *data);
void supervisor_logs_cancel(struct supervisor_logs *l);

/* A follower of a service's output: first its last `tail` lines (as supervisor_logs gives
 * them), then each new line as it is written, in order, on the loop. line: one line without
 * its '\n' (len bytes; may contain any byte but '\n'; a line longer than 64 KiB comes in
 * pieces). */
typedef void (*supervisor_follow_line_fn)(void *data, const char *line, size_t len);
/* The follow ended by itself (error: a sentence; e.g. the service was removed, the engine
 * went away, the stream failed, the daemon is stopping: supervisor_free() ends every
 * follower); never called after supervisor_follow_cancel(). After it, the follower must
 * not be cancelled. */
typedef void (*supervisor_follow_end_fn)(void *data, const char *error);
struct supervisor_follow;
/* Follows svc's output. All followers of a service share one follow of its driver (one
 * watch of a process service's log file, one stream of a compose project's logs); no
 * callback comes before this returns. NULL and end() not called when it cannot start:
 * then *error says why (a sentence valid until the next call). Lines come as fast as the
 * service writes them: a follower that cannot keep up bounds its own queue (drops, or
 * cancels). A process service is followed until cancelled (a file not there yet is
 * waited for); a compose service until its containers stop (end(): "its containers
 * stopped"), and one without containers cannot be followed. A compose follower that joins
 * others gets its tail from the last 10,000 lines they were given. */
struct supervisor_follow *supervisor_follow(struct supervisor *sup, struct service *svc,
                                            unsigned tail, supervisor_follow_line_fn line,
                                            supervisor_follow_end_fn end, void *data,
                                            const char **error);
/* Stops f: no callback after this. NULL is fine; safe inside line() (its own or another's). */
void supervisor_follow_cancel(struct supervisor_follow *f);
/* The follows of drivers under way: one per followed service (for the tests). */
size_t supervisor_follow_watches(const struct supervisor *sup);

/* Why the driver of svc cannot start it now (no Docker engine...), in buf; NULL when it
 * can. */
const char *supervisor_unavailable(const struct service *svc, char *buf, size_t size);

/* Why the daemon's state is not sound (the state folder cannot be written, or a corrupt
 * state file was set aside and no good one written since), in buf; NULL when it is. */
const char *supervisor_state_problem(const struct supervisor *sup, char *buf, size_t size);

/* True while a write of the state is under way: answers that wait for it come after it
 * (tests run the loop until it is done). */
bool supervisor_writing(const struct supervisor *sup);

/* What each driver shows of its backend, for GET /health: {"compose": {...}}. New
 * reference. */
json_t *supervisor_drivers_info(void);

#endif
