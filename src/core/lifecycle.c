/* The lifecycle state machine of one service: pure, the rules are in lifecycle.h. */
#include <limits.h>
#include <string.h>

#include "core/lifecycle.h"

static const char *const state_names[] = {
    [STATE_STOPPED] = "stopped",     [STATE_STARTING] = "starting", [STATE_RUNNING] = "running",
    [STATE_UNHEALTHY] = "unhealthy", [STATE_STOPPING] = "stopping", [STATE_FAILED] = "failed",
};

/* Names a state as the API shows it. */
const char *lifecycle_state_name(enum service_state s)
{
    if ((unsigned)s >= sizeof(state_names) / sizeof(state_names[0]))
        return "unknown";
    return state_names[s];
}

const char *lifecycle_cause_text(enum lifecycle_cause cause)
{
    switch (cause) {
    case LIFECYCLE_CAUSE_NONE:
        return NULL;
    case LIFECYCLE_CAUSE_DRIVER_FAILED:
        return LIFECYCLE_REASON_DRIVER_FAILED;
    case LIFECYCLE_CAUSE_START_TIMEOUT:
        return LIFECYCLE_REASON_START_TIMEOUT;
    case LIFECYCLE_CAUSE_START_LIMIT:
        return LIFECYCLE_REASON_START_LIMIT;
    case LIFECYCLE_CAUSE_EXITED:
        return LIFECYCLE_REASON_EXITED;
    case LIFECYCLE_CAUSE_EXITED_FAILED:
        return LIFECYCLE_REASON_EXITED_FAILED;
    case LIFECYCLE_CAUSE_UNHEALTHY:
        return LIFECYCLE_REASON_UNHEALTHY;
    }
    return NULL;
}

bool lifecycle_holds_gpu(enum service_state s)
{
    switch (s) {
    case STATE_STARTING:
    case STATE_RUNNING:
    case STATE_UNHEALTHY:
    case STATE_STOPPING:
        return true;
    case STATE_STOPPED:
    case STATE_FAILED:
        break;
    }
    return false;
}

/* Sets up a stopped service with no history. */
void lifecycle_init(struct lifecycle *lc, bool health_enabled, enum restart_policy restart)
{
    memset(lc, 0, sizeof(*lc));
    lc->state = STATE_STOPPED;
    lc->health_enabled = health_enabled;
    lc->restart = restart;
    lc->backoff_ms = LIFECYCLE_BACKOFF_FIRST_MS;
}

/* Time from since to now, zero if the clock seems to have gone back. */
static uint64_t elapsed(uint64_t since, uint64_t now)
{
    return now > since ? now - since : 0;
}

/* Compares two machines field by field (not memcmp: padding), to tell a no-op. */
static bool same_lifecycle(const struct lifecycle *a, const struct lifecycle *b)
{
    if (a->state != b->state || a->health_enabled != b->health_enabled ||
        a->restart != b->restart || a->failed_probes != b->failed_probes ||
        a->restarts != b->restarts || a->restarts_total != b->restarts_total ||
        a->backoff_ms != b->backoff_ms || a->n_starts != b->n_starts ||
        a->start_after_stop != b->start_after_stop || a->fail_after_stop != b->fail_after_stop ||
        a->restart_pending != b->restart_pending || a->running_since_ms != b->running_since_ms)
        return false;
    for (size_t i = 0; i < a->n_starts && i < LIFECYCLE_START_BURST; i++)
        if (a->starts[i] != b->starts[i])
            return false;
    return true;
}

/* Remembers a start for the start limit, keeping only the latest LIFECYCLE_START_BURST. */
static void record_start(struct lifecycle *lc, uint64_t now_ms)
{
    if (lc->n_starts > LIFECYCLE_START_BURST)
        lc->n_starts = LIFECYCLE_START_BURST;
    if (lc->n_starts == LIFECYCLE_START_BURST) {
        memmove(lc->starts, lc->starts + 1, (LIFECYCLE_START_BURST - 1) * sizeof(lc->starts[0]));
        lc->n_starts--;
    }
    lc->starts[lc->n_starts++] = now_ms;
}

/* True when a start at due_ms would be one too many within the start interval. */
static bool start_limit_hit(const struct lifecycle *lc, uint64_t due_ms)
{
    return lc->n_starts >= LIFECYCLE_START_BURST &&
           elapsed(lc->starts[0], due_ms) < LIFECYCLE_START_INTERVAL_MS;
}

/* Drops an armed automatic restart, telling the caller to disarm its timer. */
static void cancel_restart(struct lifecycle *lc, struct lifecycle_step *step)
{
    if (lc->restart_pending) {
        lc->restart_pending = false;
        step->actions |= LIFECYCLE_RESTART_CANCEL;
    }
}

/* Goes to starting; a person's start also forgets the history of automatic restarts. */
static void begin_start(struct lifecycle *lc, struct lifecycle_step *step, uint64_t now_ms,
                        bool by_person)
{
    if (by_person) {
        lc->n_starts = 0;
        lc->restarts = 0;
        lc->backoff_ms = LIFECYCLE_BACKOFF_FIRST_MS;
    }
    cancel_restart(lc, step);
    record_start(lc, now_ms);
    lc->failed_probes = 0;
    lc->start_after_stop = false;
    lc->fail_after_stop = false;
    lc->state = STATE_STARTING;
    step->actions |= LIFECYCLE_DRIVER_START;
}

/* Goes to stopping because a person asked; a stop forgets a queued start. */
static void begin_stop(struct lifecycle *lc, struct lifecycle_step *step)
{
    cancel_restart(lc, step);
    lc->start_after_stop = false;
    lc->fail_after_stop = false;
    lc->state = STATE_STOPPING;
    step->actions |= LIFECYCLE_DRIVER_STOP | LIFECYCLE_PROBE_END;
}

/* Goes to running, from starting (a new run begins) or from unhealthy. */
static void become_running(struct lifecycle *lc, struct lifecycle_step *step, uint64_t now_ms)
{
    if (lc->state == STATE_STARTING)
        lc->running_since_ms = now_ms;
    lc->failed_probes = 0;
    lc->state = STATE_RUNNING;
    step->actions |= LIFECYCLE_NOTIFY;
}

/* Settles after the service ended on its own or could not start: stopped or failed, and
 * an automatic restart when the policy asks for one and the start limit allows it. */
static void settle_after_end(struct lifecycle *lc, struct lifecycle_step *step, uint64_t now_ms,
                             bool failure, enum lifecycle_cause cause)
{
    bool restart = lc->restart == RESTART_ALWAYS || (lc->restart == RESTART_ON_FAILURE && failure);
    uint64_t delay = lc->backoff_ms;
    uint64_t due = now_ms + delay < now_ms ? UINT64_MAX : now_ms + delay;

    step->actions |= LIFECYCLE_NOTIFY;
    step->cause = cause;
    step->reason = lifecycle_cause_text(cause);
    if (!restart) {
        lc->state = failure ? STATE_FAILED : STATE_STOPPED;
        return;
    }
    lc->state = STATE_FAILED;
    if (start_limit_hit(lc, due)) {
        step->cause = LIFECYCLE_CAUSE_START_LIMIT;
        step->reason = LIFECYCLE_REASON_START_LIMIT;
        return;
    }
    lc->restart_pending = true;
    step->actions |= LIFECYCLE_RESTART_LATER;
    step->restart_delay_ms = delay;
    lc->backoff_ms = delay >= LIFECYCLE_BACKOFF_MAX_MS / 2 ? LIFECYCLE_BACKOFF_MAX_MS : delay * 2;
}

/* Handles an exit nobody asked for, from starting, running or unhealthy. */
static void exited_unasked(struct lifecycle *lc, struct lifecycle_step *step, uint64_t now_ms,
                           bool ok)
{
    if ((lc->state == STATE_RUNNING || lc->state == STATE_UNHEALTHY) &&
        elapsed(lc->running_since_ms, now_ms) >= LIFECYCLE_BACKOFF_MAX_MS)
        lc->backoff_ms = LIFECYCLE_BACKOFF_FIRST_MS;
    step->actions |= LIFECYCLE_PROBE_END;
    settle_after_end(lc, step, now_ms, !ok,
                     ok ? LIFECYCLE_CAUSE_EXITED : LIFECYCLE_CAUSE_EXITED_FAILED);
}

/* Events in stopped: only a start does something. */
static void handle_stopped(struct lifecycle *lc, struct lifecycle_step *step,
                           enum lifecycle_event ev, uint64_t now_ms)
{
    if (ev == LIFECYCLE_START)
        begin_start(lc, step, now_ms, true);
}

/* Events in starting: the driver's answer, the first probes, the start timeout. */
static void handle_starting(struct lifecycle *lc, struct lifecycle_step *step,
                            enum lifecycle_event ev, uint64_t now_ms)
{
    switch (ev) {
    case LIFECYCLE_DRIVER_STARTED:
        if (lc->health_enabled)
            step->actions |= LIFECYCLE_PROBE_BEGIN;
        else
            become_running(lc, step, now_ms);
        break;
    case LIFECYCLE_DRIVER_FAILED:
        step->actions |= LIFECYCLE_PROBE_END;
        settle_after_end(lc, step, now_ms, true, LIFECYCLE_CAUSE_DRIVER_FAILED);
        break;
    case LIFECYCLE_PROBE_OK:
        become_running(lc, step, now_ms);
        break;
    case LIFECYCLE_START_TIMEOUT:
        begin_stop(lc, step);
        lc->fail_after_stop = true;
        step->cause = LIFECYCLE_CAUSE_START_TIMEOUT;
        step->reason = LIFECYCLE_REASON_START_TIMEOUT;
        break;
    case LIFECYCLE_STOP:
        begin_stop(lc, step);
        break;
    case LIFECYCLE_EXITED_OK:
    case LIFECYCLE_EXITED_FAILED:
        exited_unasked(lc, step, now_ms, ev == LIFECYCLE_EXITED_OK);
        break;
    case LIFECYCLE_START:
    case LIFECYCLE_RESTART_DUE:
    case LIFECYCLE_PROBE_FAILED:
        break;
    }
}

/* Events in running and unhealthy: probes move between the two; stops and exits leave. */
static void handle_up(struct lifecycle *lc, struct lifecycle_step *step, enum lifecycle_event ev,
                      uint64_t now_ms)
{
    switch (ev) {
    case LIFECYCLE_PROBE_OK:
        if (lc->state == STATE_UNHEALTHY)
            become_running(lc, step, now_ms);
        lc->failed_probes = 0;
        break;
    case LIFECYCLE_PROBE_FAILED:
        if (lc->failed_probes < UINT_MAX)
            lc->failed_probes++;
        if (lc->state == STATE_RUNNING && lc->failed_probes >= LIFECYCLE_UNHEALTHY_AFTER) {
            lc->state = STATE_UNHEALTHY;
            step->actions |= LIFECYCLE_NOTIFY;
            step->cause = LIFECYCLE_CAUSE_UNHEALTHY;
            step->reason = LIFECYCLE_REASON_UNHEALTHY;
        }
        break;
    case LIFECYCLE_STOP:
        begin_stop(lc, step);
        break;
    case LIFECYCLE_EXITED_OK:
    case LIFECYCLE_EXITED_FAILED:
        exited_unasked(lc, step, now_ms, ev == LIFECYCLE_EXITED_OK);
        break;
    case LIFECYCLE_START:
    case LIFECYCLE_RESTART_DUE:
    case LIFECYCLE_DRIVER_STARTED:
    case LIFECYCLE_DRIVER_FAILED:
    case LIFECYCLE_START_TIMEOUT:
        break;
    }
}

/* Events in stopping: a person's last word is kept for when the stop ends. */
static void handle_stopping(struct lifecycle *lc, struct lifecycle_step *step,
                            enum lifecycle_event ev, uint64_t now_ms)
{
    switch (ev) {
    case LIFECYCLE_START:
        lc->start_after_stop = true;
        break;
    case LIFECYCLE_STOP:
        lc->start_after_stop = false;
        lc->fail_after_stop = false;
        break;
    case LIFECYCLE_EXITED_OK:
    case LIFECYCLE_EXITED_FAILED:
        step->actions |= LIFECYCLE_PROBE_END | LIFECYCLE_NOTIFY;
        if (lc->start_after_stop) {
            begin_start(lc, step, now_ms, true);
        } else if (lc->fail_after_stop) {
            lc->fail_after_stop = false;
            settle_after_end(lc, step, now_ms, true, LIFECYCLE_CAUSE_START_TIMEOUT);
        } else {
            lc->state = STATE_STOPPED;
        }
        break;
    case LIFECYCLE_RESTART_DUE:
    case LIFECYCLE_DRIVER_STARTED:
    case LIFECYCLE_DRIVER_FAILED:
    case LIFECYCLE_PROBE_OK:
    case LIFECYCLE_PROBE_FAILED:
    case LIFECYCLE_START_TIMEOUT:
        break;
    }
}

/* Events in failed: a person's start or stop, or the armed automatic restart. */
static void handle_failed(struct lifecycle *lc, struct lifecycle_step *step,
                          enum lifecycle_event ev, uint64_t now_ms)
{
    switch (ev) {
    case LIFECYCLE_START:
        begin_start(lc, step, now_ms, true);
        break;
    case LIFECYCLE_RESTART_DUE:
        if (lc->restart_pending) {
            lc->restart_pending = false;
            if (lc->restarts < UINT_MAX)
                lc->restarts++;
            lc->restarts_total++;
            begin_start(lc, step, now_ms, false);
        }
        break;
    case LIFECYCLE_STOP:
        cancel_restart(lc, step);
        lc->state = STATE_STOPPED;
        step->actions |= LIFECYCLE_NOTIFY;
        break;
    case LIFECYCLE_DRIVER_STARTED:
    case LIFECYCLE_DRIVER_FAILED:
    case LIFECYCLE_PROBE_OK:
    case LIFECYCLE_PROBE_FAILED:
    case LIFECYCLE_START_TIMEOUT:
    case LIFECYCLE_EXITED_OK:
    case LIFECYCLE_EXITED_FAILED:
        break;
    }
}

/* Dispatches one event to its state's handler and tells a no-op from the outcome. */
struct lifecycle_step lifecycle_handle(struct lifecycle *lc, enum lifecycle_event ev,
                                       uint64_t now_ms)
{
    struct lifecycle before = *lc;
    struct lifecycle_step step = {.from = lc->state};

    switch (lc->state) {
    case STATE_STOPPED:
        handle_stopped(lc, &step, ev, now_ms);
        break;
    case STATE_STARTING:
        handle_starting(lc, &step, ev, now_ms);
        break;
    case STATE_RUNNING:
    case STATE_UNHEALTHY:
        handle_up(lc, &step, ev, now_ms);
        break;
    case STATE_STOPPING:
        handle_stopping(lc, &step, ev, now_ms);
        break;
    case STATE_FAILED:
        handle_failed(lc, &step, ev, now_ms);
        break;
    }
    step.to = lc->state;
    step.no_op = step.actions == 0 && same_lifecycle(&before, lc);
    return step;
}

/* Takes over a service that outlived a daemon restart, or was started outside the daemon:
 * from stopped or failed to running, without counting a start. */
struct lifecycle_step lifecycle_adopt(struct lifecycle *lc, uint64_t now_ms)
{
    struct lifecycle_step step = {.from = lc->state, .to = lc->state, .no_op = true};

    if (lc->state != STATE_STOPPED && lc->state != STATE_FAILED)
        return step;
    lc->state = STATE_RUNNING;
    lc->running_since_ms = now_ms;
    lc->failed_probes = 0;
    step.to = STATE_RUNNING;
    step.actions = LIFECYCLE_NOTIFY | (lc->health_enabled ? LIFECYCLE_PROBE_BEGIN : 0);
    if (lc->restart_pending) {
        /* It runs again (started by hand): the automatic restart is not needed. */
        lc->restart_pending = false;
        step.actions |= LIFECYCLE_RESTART_CANCEL;
    }
    step.no_op = false;
    return step;
}
