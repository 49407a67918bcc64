/* The lifecycle of one service as a pure state machine (DESIGN.md, "Pure core, thin
 * edges"): a function from (state, event) to (state, actions). It performs nothing
 * itself; the caller carries out the actions (drive the driver, arm timers, answer
 * waiting requests). No I/O, no clock: times come in as arguments. */
#ifndef NANNY_LIFECYCLE_H
#define NANNY_LIFECYCLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/manifest.h"

enum service_state {
    STATE_STOPPED,
    STATE_STARTING,
    STATE_RUNNING,
    STATE_UNHEALTHY,
    STATE_STOPPING,
    STATE_FAILED,
};

#define LIFECYCLE_UNHEALTHY_AFTER   3     /* failed probes in a row: running -> unhealthy */
#define LIFECYCLE_BACKOFF_FIRST_MS  1000  /* automatic restarts: 1 s, doubling... */
#define LIFECYCLE_BACKOFF_MAX_MS    60000 /* ...up to 60 s */
#define LIFECYCLE_START_BURST       5     /* at most 5 starts... */
#define LIFECYCLE_START_INTERVAL_MS 60000 /* ...within 60 s, then failed: start limit hit */

/* The reasons a step gives (struct lifecycle_step.reason): static sentences, compared by
 * tests and shown in last_error; the caller may add detail (an exit status, stderr). */
#define LIFECYCLE_STRINGIFY_(x)        #x
#define LIFECYCLE_STRINGIFY(x)         LIFECYCLE_STRINGIFY_(x)
#define LIFECYCLE_REASON_DRIVER_FAILED "the driver could not start it"
#define LIFECYCLE_REASON_START_TIMEOUT "not healthy within start_period"
#define LIFECYCLE_REASON_START_LIMIT   "start limit hit"
#define LIFECYCLE_REASON_EXITED        "exited with status 0"
#define LIFECYCLE_REASON_EXITED_FAILED "exited with a failure status or a signal"
#define LIFECYCLE_REASON_UNHEALTHY                                                                 \
    LIFECYCLE_STRINGIFY(LIFECYCLE_UNHEALTHY_AFTER) " failed health checks in a row"

/* Why a step went where it went, as a value to decide on; reason is its sentence. */
enum lifecycle_cause {
    LIFECYCLE_CAUSE_NONE,
    LIFECYCLE_CAUSE_DRIVER_FAILED,
    LIFECYCLE_CAUSE_START_TIMEOUT,
    LIFECYCLE_CAUSE_START_LIMIT,
    LIFECYCLE_CAUSE_EXITED,
    LIFECYCLE_CAUSE_EXITED_FAILED,
    LIFECYCLE_CAUSE_UNHEALTHY,
};

/* The sentence of a cause (LIFECYCLE_REASON_...), NULL for none. */
const char *lifecycle_cause_text(enum lifecycle_cause cause);

/* The state as the API and the log show it ("stopped", ...); "unknown" out of range. */
const char *lifecycle_state_name(enum service_state s);

/* True for the states in which a gpu_required service holds the GPU (SPEC section 3). */
bool lifecycle_holds_gpu(enum service_state s);

enum lifecycle_event {
    LIFECYCLE_START,          /* a person asked to start (the GPU arbiter said go) */
    LIFECYCLE_RESTART_DUE,    /* the backoff timer of an automatic restart fired */
    LIFECYCLE_DRIVER_STARTED, /* the driver's start returned: spawned, or `up -d` done */
    LIFECYCLE_DRIVER_FAILED,  /* the driver's start failed (no such command, ...) */
    LIFECYCLE_PROBE_OK,
    LIFECYCLE_PROBE_FAILED,
    LIFECYCLE_START_TIMEOUT, /* start_period passed without a passing probe */
    LIFECYCLE_STOP,          /* a person asked to stop */
    LIFECYCLE_EXITED_OK,     /* the process (all containers) ended with status 0 */
    LIFECYCLE_EXITED_FAILED, /* ... ended with another status or a signal */
};

/* What the caller must do after a step; several may be set. */
enum lifecycle_action {
    LIFECYCLE_DRIVER_START = 1 << 0,   /* start the service through its driver */
    LIFECYCLE_DRIVER_STOP = 1 << 1,    /* stop it: SIGTERM, stop_timeout, SIGKILL */
    LIFECYCLE_PROBE_BEGIN = 1 << 2,    /* start health probes (fast while starting) */
    LIFECYCLE_PROBE_END = 1 << 3,      /* no more probes */
    LIFECYCLE_RESTART_LATER = 1 << 4,  /* arm the restart timer with restart_delay_ms */
    LIFECYCLE_RESTART_CANCEL = 1 << 5, /* disarm it */
    LIFECYCLE_NOTIFY = 1 << 6,         /* the state settled: answer waiting requests */
};

/* One service's lifecycle. Plain data; the fields are the machine's, read them freely. */
struct lifecycle {
    enum service_state state;
    bool health_enabled;
    enum restart_policy restart;
    unsigned failed_probes;  /* in a row */
    unsigned restarts;       /* automatic restarts since the last start a person asked */
    uint64_t restarts_total; /* automatic restarts since the daemon began: only grows */
    uint64_t backoff_ms;     /* the next automatic restart's delay */
    uint64_t starts[LIFECYCLE_START_BURST]; /* times of the latest starts, for the limit */
    size_t n_starts;
    bool start_after_stop;     /* a start came while stopping: start once stopped */
    bool fail_after_stop;      /* the stop under way ends in failed, not stopped */
    bool restart_pending;      /* an automatic restart is armed */
    uint64_t running_since_ms; /* when it last went starting -> running (backoff reset) */
};

/* The outcome of one event. */
struct lifecycle_step {
    enum service_state from, to;
    unsigned actions;           /* enum lifecycle_action bits */
    uint64_t restart_delay_ms;  /* with LIFECYCLE_RESTART_LATER */
    enum lifecycle_cause cause; /* why, as a value */
    const char *reason;         /* its static sentence for the log and last_error, or NULL */
    bool no_op;                 /* the event changed nothing (start while running, ...) */
};

/* Sets up a stopped service: no history, backoff at LIFECYCLE_BACKOFF_FIRST_MS. */
void lifecycle_init(struct lifecycle *lc, bool health_enabled, enum restart_policy restart);

/* Feeds one event at time now_ms (any monotonic clock) and returns what to do. Total over
 * every state and event: an event that does not apply is a no-op, never an abort.
 *
 * no_op is true exactly when the event changed nothing in *lc (not even a counter or a
 * flag) and asks for no action. So a start while starting, running or unhealthy is a
 * no-op (the API's 200 "already running"), while a start while stopping is not (it queues
 * a start, below), nor is a failed probe while running (it counts).
 *
 * Actions, uniformly: DRIVER_START exactly when the step ends in starting from another
 * state; DRIVER_STOP exactly on starting/running/unhealthy -> stopping; PROBE_END on every
 * step from starting, running or unhealthy to another state than these three, and on
 * every end of a stop; NOTIFY on every step that ends in running, unhealthy, stopped or
 * failed from another state, and on every end of a stop (stopping + EXITED_*), even when
 * a queued start follows it; RESTART_CANCEL whenever a pending restart is dropped (a START
 * or STOP from failed).
 *
 * Starts by a person (START, including one queued while stopping, which counts when it
 * takes effect) clear the start history, `restarts` and the backoff (back to
 * LIFECYCLE_BACKOFF_FIRST_MS). Every start, a person's or automatic, is recorded in
 * starts[] (the latest LIFECYCLE_START_BURST) and resets failed_probes. RESTART_DUE with
 * a restart pending (in failed) counts one in `restarts`.
 *
 * An exit nobody asked for (EXITED_* from starting, running or unhealthy) ends in stopped
 * after EXITED_OK and in failed after EXITED_FAILED. Automatic restarts follow it with
 * restart: always (after either exit) or on-failure (after EXITED_FAILED only), and with
 * either policy a DRIVER_FAILED and the end of a stop that START_TIMEOUT began: the step
 * then goes to failed with RESTART_LATER and restart_delay_ms = backoff_ms, and the
 * backoff doubles, capped at LIFECYCLE_BACKOFF_MAX_MS (1, 2, 4, 8, 16, 32, 60, 60 s).
 * Start limit: the restart is refused (failed, reason LIFECYCLE_REASON_START_LIMIT, no
 * RESTART_LATER) when it would be the (LIFECYCLE_START_BURST + 1)-th start within
 * LIFECYCLE_START_INTERVAL_MS, that is when LIFECYCLE_START_BURST starts are recorded and
 * the oldest is less than LIFECYCLE_START_INTERVAL_MS before the restart's due time
 * (now_ms + delay). The check is made when the restart is scheduled, not again when
 * RESTART_DUE comes. A person's START is never refused and clears the limit.
 * Backoff reset: on an unexpected exit from running or unhealthy, when at least
 * LIFECYCLE_BACKOFF_MAX_MS passed since it last went starting -> running
 * (running_since_ms; unhealthy -> running does not move it), the backoff goes back to
 * LIFECYCLE_BACKOFF_FIRST_MS before the restart is scheduled.
 *
 * Stopping: START sets start_after_stop, STOP clears both start_after_stop and
 * fail_after_stop (the last word wins: a person's stop ends in stopped, with no restart).
 * The end of a stop (EXITED_OK or EXITED_FAILED alike) goes to starting when
 * start_after_stop, else to failed when fail_after_stop (LIFECYCLE_REASON_START_TIMEOUT,
 * then restarts as above), else to stopped. DRIVER_STARTED and DRIVER_FAILED while
 * stopping are ignored: the caller reports the end of every stop with EXITED_*, even
 * when the start it interrupted never ran anything.
 *
 * The caller answers a start itself when the driver's start returns (DRIVER_STARTED or
 * DRIVER_FAILED), and arbitrates the GPU (gpu_decide) before feeding START or
 * RESTART_DUE. */
struct lifecycle_step lifecycle_handle(struct lifecycle *lc, enum lifecycle_event ev,
                                       uint64_t now_ms);

/* Takes over a service found running that the daemon did not start (its process or
 * containers outlived a daemon restart, or were started by hand): stopped or failed ->
 * running at now_ms with NOTIFY, and PROBE_BEGIN when it has health checks, which then mark
 * it unhealthy if it is not; a pending automatic restart is dropped (RESTART_CANCEL). Not
 * a start: the start history stays. From any other state it is a no-op. */
struct lifecycle_step lifecycle_adopt(struct lifecycle *lc, uint64_t now_ms);

#endif
