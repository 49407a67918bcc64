/* Unit tests for lifecycle.c: every (state, event) pair, the properties every step keeps,
 * and the sequences of restarts, start limits, queued starts and health. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/lifecycle.h"

#define N_STATES 6
#define N_EVENTS 10
#define NOW      1000000u /* a time well after zero, so that history fits before it */

/* Short names for the table. */
#define DSTART LIFECYCLE_DRIVER_START
#define DSTOP  LIFECYCLE_DRIVER_STOP
#define PBEGIN LIFECYCLE_PROBE_BEGIN
#define PEND   LIFECYCLE_PROBE_END
#define LATER  LIFECYCLE_RESTART_LATER
#define CANCEL LIFECYCLE_RESTART_CANCEL
#define NOTIFY LIFECYCLE_NOTIFY

/* How a row prepares the machine beyond its state; also the flags expected after. */
enum setup {
    PENDING = 1 << 0,    /* restart_pending (failed only) */
    QUEUED = 1 << 1,     /* start_after_stop (stopping only) */
    FAIL_AFTER = 1 << 2, /* fail_after_stop (stopping only) */
    PROBES_2 = 1 << 3,   /* failed_probes one short of unhealthy (running only) */
    LIMIT_FULL = 1 << 4, /* LIFECYCLE_START_BURST starts within the last 50 s */
    LONG_RUN = 1 << 5,   /* running since LIFECYCLE_BACKOFF_MAX_MS ago */
    BACKOFF_8 = 1 << 6,  /* backoff_ms at 8 s */
    SETUP_ALL = (1 << 7) - 1,
};

struct row {
    enum service_state from;
    enum lifecycle_event ev;
    enum restart_policy restart;
    bool health;
    unsigned setup;
    enum service_state to;
    unsigned actions;
    bool no_op;
    const char *reason;
    uint64_t delay; /* with LATER */
    unsigned after; /* PENDING, QUEUED, FAIL_AFTER expected set after the step */
};

/* Shorter names still, so that a row fits on a line. */
#define STOPPED     STATE_STOPPED
#define STARTING    STATE_STARTING
#define RUNNING     STATE_RUNNING
#define UNHEALTHY   STATE_UNHEALTHY
#define STOPPING    STATE_STOPPING
#define FAILED      STATE_FAILED
#define E_START     LIFECYCLE_START
#define E_DUE       LIFECYCLE_RESTART_DUE
#define E_STARTED   LIFECYCLE_DRIVER_STARTED
#define E_DFAILED   LIFECYCLE_DRIVER_FAILED
#define E_PROBE_OK  LIFECYCLE_PROBE_OK
#define E_PROBE_BAD LIFECYCLE_PROBE_FAILED
#define E_TIMEOUT   LIFECYCLE_START_TIMEOUT
#define E_STOP      LIFECYCLE_STOP
#define E_EXIT_0    LIFECYCLE_EXITED_OK
#define E_EXIT_1    LIFECYCLE_EXITED_FAILED
#define NO          RESTART_NO
#define ONFAIL      RESTART_ON_FAILURE
#define ALWAYS      RESTART_ALWAYS
#define H           true  /* health checks */
#define NOH         false /* health: false */
#define R_DRIVER    LIFECYCLE_REASON_DRIVER_FAILED
#define R_TIMEOUT   LIFECYCLE_REASON_START_TIMEOUT
#define R_LIMIT     LIFECYCLE_REASON_START_LIMIT
#define R_EXITED    LIFECYCLE_REASON_EXITED
#define R_CRASHED   LIFECYCLE_REASON_EXITED_FAILED
#define R_SICK      LIFECYCLE_REASON_UNHEALTHY

/* Columns: from, event, restart, health, setup -> to, actions, no_op, reason, delay, after. */
static const struct row table[] = {
    /* stopped: only START does anything. */
    {STOPPED, E_START, NO, H, 0, STARTING, DSTART, false, NULL, 0, 0},
    {STOPPED, E_START, ALWAYS, NOH, 0, STARTING, DSTART, false, NULL, 0, 0},
    {STOPPED, E_DUE, ALWAYS, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_STARTED, NO, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_DFAILED, ALWAYS, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_PROBE_OK, NO, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_PROBE_BAD, NO, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_TIMEOUT, NO, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_STOP, NO, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_EXIT_0, ALWAYS, H, 0, STOPPED, 0, true, NULL, 0, 0},
    {STOPPED, E_EXIT_1, ONFAIL, H, 0, STOPPED, 0, true, NULL, 0, 0},

    /* starting */
    {STARTING, E_START, NO, H, 0, STARTING, 0, true, NULL, 0, 0},
    {STARTING, E_DUE, ALWAYS, H, 0, STARTING, 0, true, NULL, 0, 0},
    {STARTING, E_STARTED, NO, H, 0, STARTING, PBEGIN, false, NULL, 0, 0},
    {STARTING, E_STARTED, NO, NOH, 0, RUNNING, NOTIFY, false, NULL, 0, 0},
    {STARTING, E_DFAILED, NO, H, 0, FAILED, PEND | NOTIFY, false, R_DRIVER, 0, 0},
    {STARTING, E_DFAILED, ONFAIL, H, 0, FAILED, PEND | NOTIFY | LATER, false, R_DRIVER, 1000,
     PENDING},
    {STARTING, E_DFAILED, ALWAYS, NOH, BACKOFF_8, FAILED, PEND | NOTIFY | LATER, false, R_DRIVER,
     8000, PENDING},
    {STARTING, E_DFAILED, ONFAIL, H, LIMIT_FULL, FAILED, PEND | NOTIFY, false, R_LIMIT, 0, 0},
    {STARTING, E_PROBE_OK, NO, H, 0, RUNNING, NOTIFY, false, NULL, 0, 0},
    {STARTING, E_PROBE_BAD, NO, H, 0, STARTING, 0, true, NULL, 0, 0},
    {STARTING, E_TIMEOUT, NO, H, 0, STOPPING, DSTOP | PEND, false, R_TIMEOUT, 0, FAIL_AFTER},
    {STARTING, E_TIMEOUT, ALWAYS, H, 0, STOPPING, DSTOP | PEND, false, R_TIMEOUT, 0, FAIL_AFTER},
    {STARTING, E_STOP, ALWAYS, H, 0, STOPPING, DSTOP | PEND, false, NULL, 0, 0},
    {STARTING, E_EXIT_0, NO, H, 0, STOPPED, PEND | NOTIFY, false, R_EXITED, 0, 0},
    {STARTING, E_EXIT_0, ONFAIL, H, 0, STOPPED, PEND | NOTIFY, false, R_EXITED, 0, 0},
    {STARTING, E_EXIT_0, ALWAYS, H, 0, FAILED, PEND | NOTIFY | LATER, false, R_EXITED, 1000,
     PENDING},
    {STARTING, E_EXIT_1, NO, H, 0, FAILED, PEND | NOTIFY, false, R_CRASHED, 0, 0},
    {STARTING, E_EXIT_1, ONFAIL, H, 0, FAILED, PEND | NOTIFY | LATER, false, R_CRASHED, 1000,
     PENDING},
    {STARTING, E_EXIT_1, ALWAYS, H, LIMIT_FULL, FAILED, PEND | NOTIFY, false, R_LIMIT, 0, 0},
    /* Never reached running in this run: no backoff reset, however old running_since is. */
    {STARTING, E_EXIT_1, ALWAYS, H, LONG_RUN | BACKOFF_8, FAILED, PEND | NOTIFY | LATER, false,
     R_CRASHED, 8000, PENDING},

    /* running */
    {RUNNING, E_START, NO, H, 0, RUNNING, 0, true, NULL, 0, 0},
    {RUNNING, E_DUE, ALWAYS, H, 0, RUNNING, 0, true, NULL, 0, 0},
    {RUNNING, E_STARTED, NO, H, 0, RUNNING, 0, true, NULL, 0, 0},
    {RUNNING, E_DFAILED, ALWAYS, H, 0, RUNNING, 0, true, NULL, 0, 0},
    {RUNNING, E_PROBE_OK, NO, H, 0, RUNNING, 0, true, NULL, 0, 0},
    {RUNNING, E_PROBE_OK, NO, H, PROBES_2, RUNNING, 0, false, NULL, 0, 0},
    {RUNNING, E_PROBE_BAD, NO, H, 0, RUNNING, 0, false, NULL, 0, 0},
    {RUNNING, E_PROBE_BAD, NO, H, PROBES_2, UNHEALTHY, NOTIFY, false, R_SICK, 0, 0},
    {RUNNING, E_TIMEOUT, NO, H, 0, RUNNING, 0, true, NULL, 0, 0},
    {RUNNING, E_STOP, ALWAYS, H, 0, STOPPING, DSTOP | PEND, false, NULL, 0, 0},
    {RUNNING, E_EXIT_0, NO, H, 0, STOPPED, PEND | NOTIFY, false, R_EXITED, 0, 0},
    {RUNNING, E_EXIT_0, ONFAIL, H, 0, STOPPED, PEND | NOTIFY, false, R_EXITED, 0, 0},
    {RUNNING, E_EXIT_0, ALWAYS, NOH, 0, FAILED, PEND | NOTIFY | LATER, false, R_EXITED, 1000,
     PENDING},
    {RUNNING, E_EXIT_1, NO, H, 0, FAILED, PEND | NOTIFY, false, R_CRASHED, 0, 0},
    {RUNNING, E_EXIT_1, ONFAIL, H, BACKOFF_8, FAILED, PEND | NOTIFY | LATER, false, R_CRASHED, 8000,
     PENDING},
    {RUNNING, E_EXIT_1, ONFAIL, H, BACKOFF_8 | LONG_RUN, FAILED, PEND | NOTIFY | LATER, false,
     R_CRASHED, 1000, PENDING},
    {RUNNING, E_EXIT_1, ALWAYS, H, LIMIT_FULL, FAILED, PEND | NOTIFY, false, R_LIMIT, 0, 0},

    /* unhealthy (set up with LIFECYCLE_UNHEALTHY_AFTER failed probes) */
    {UNHEALTHY, E_START, NO, H, 0, UNHEALTHY, 0, true, NULL, 0, 0},
    {UNHEALTHY, E_DUE, ALWAYS, H, 0, UNHEALTHY, 0, true, NULL, 0, 0},
    {UNHEALTHY, E_STARTED, NO, H, 0, UNHEALTHY, 0, true, NULL, 0, 0},
    {UNHEALTHY, E_DFAILED, NO, H, 0, UNHEALTHY, 0, true, NULL, 0, 0},
    {UNHEALTHY, E_PROBE_OK, NO, H, 0, RUNNING, NOTIFY, false, NULL, 0, 0},
    {UNHEALTHY, E_PROBE_BAD, NO, H, 0, UNHEALTHY, 0, false, NULL, 0, 0},
    {UNHEALTHY, E_TIMEOUT, NO, H, 0, UNHEALTHY, 0, true, NULL, 0, 0},
    {UNHEALTHY, E_STOP, ONFAIL, H, 0, STOPPING, DSTOP | PEND, false, NULL, 0, 0},
    {UNHEALTHY, E_EXIT_0, NO, H, 0, STOPPED, PEND | NOTIFY, false, R_EXITED, 0, 0},
    {UNHEALTHY, E_EXIT_1, NO, H, 0, FAILED, PEND | NOTIFY, false, R_CRASHED, 0, 0},
    {UNHEALTHY, E_EXIT_1, ONFAIL, H, 0, FAILED, PEND | NOTIFY | LATER, false, R_CRASHED, 1000,
     PENDING},
    {UNHEALTHY, E_EXIT_1, ALWAYS, H, BACKOFF_8 | LONG_RUN, FAILED, PEND | NOTIFY | LATER, false,
     R_CRASHED, 1000, PENDING},

    /* stopping */
    {STOPPING, E_START, NO, H, 0, STOPPING, 0, false, NULL, 0, QUEUED},
    {STOPPING, E_START, NO, H, QUEUED, STOPPING, 0, true, NULL, 0, QUEUED},
    {STOPPING, E_START, NO, H, FAIL_AFTER, STOPPING, 0, false, NULL, 0, QUEUED | FAIL_AFTER},
    {STOPPING, E_DUE, ALWAYS, H, 0, STOPPING, 0, true, NULL, 0, 0},
    {STOPPING, E_STARTED, NO, H, 0, STOPPING, 0, true, NULL, 0, 0},
    {STOPPING, E_DFAILED, ALWAYS, H, 0, STOPPING, 0, true, NULL, 0, 0},
    {STOPPING, E_PROBE_OK, NO, H, 0, STOPPING, 0, true, NULL, 0, 0},
    {STOPPING, E_PROBE_BAD, NO, H, 0, STOPPING, 0, true, NULL, 0, 0},
    {STOPPING, E_TIMEOUT, NO, H, FAIL_AFTER, STOPPING, 0, true, NULL, 0, FAIL_AFTER},
    {STOPPING, E_STOP, NO, H, 0, STOPPING, 0, true, NULL, 0, 0},
    {STOPPING, E_STOP, NO, H, QUEUED, STOPPING, 0, false, NULL, 0, 0},
    {STOPPING, E_STOP, ALWAYS, H, FAIL_AFTER, STOPPING, 0, false, NULL, 0, 0},
    {STOPPING, E_EXIT_0, NO, H, 0, STOPPED, PEND | NOTIFY, false, NULL, 0, 0},
    /* A stop that was asked for never restarts, whatever the exit status and policy. */
    {STOPPING, E_EXIT_1, ALWAYS, H, 0, STOPPED, PEND | NOTIFY, false, NULL, 0, 0},
    {STOPPING, E_EXIT_1, ONFAIL, H, 0, STOPPED, PEND | NOTIFY, false, NULL, 0, 0},
    {STOPPING, E_EXIT_1, NO, H, QUEUED, STARTING, DSTART | PEND | NOTIFY, false, NULL, 0, 0},
    {STOPPING, E_EXIT_0, NO, H, QUEUED | FAIL_AFTER, STARTING, DSTART | PEND | NOTIFY, false, NULL,
     0, 0},
    {STOPPING, E_EXIT_0, NO, H, FAIL_AFTER, FAILED, PEND | NOTIFY, false, R_TIMEOUT, 0, 0},
    {STOPPING, E_EXIT_1, ONFAIL, H, FAIL_AFTER, FAILED, PEND | NOTIFY | LATER, false, R_TIMEOUT,
     1000, PENDING},
    {STOPPING, E_EXIT_0, ALWAYS, H, FAIL_AFTER | BACKOFF_8, FAILED, PEND | NOTIFY | LATER, false,
     R_TIMEOUT, 8000, PENDING},
    {STOPPING, E_EXIT_0, ALWAYS, H, FAIL_AFTER | LIMIT_FULL, FAILED, PEND | NOTIFY, false, R_LIMIT,
     0, 0},

    /* failed */
    {FAILED, E_START, NO, H, 0, STARTING, DSTART, false, NULL, 0, 0},
    {FAILED, E_START, ALWAYS, H, PENDING, STARTING, DSTART | CANCEL, false, NULL, 0, 0},
    {FAILED, E_START, ALWAYS, H, LIMIT_FULL, STARTING, DSTART, false, NULL, 0, 0},
    {FAILED, E_DUE, ALWAYS, H, 0, FAILED, 0, true, NULL, 0, 0},
    {FAILED, E_DUE, ALWAYS, H, PENDING, STARTING, DSTART, false, NULL, 0, 0},
    {FAILED, E_STARTED, NO, H, 0, FAILED, 0, true, NULL, 0, 0},
    {FAILED, E_DFAILED, ALWAYS, H, PENDING, FAILED, 0, true, NULL, 0, PENDING},
    {FAILED, E_PROBE_OK, NO, H, 0, FAILED, 0, true, NULL, 0, 0},
    {FAILED, E_PROBE_BAD, NO, H, 0, FAILED, 0, true, NULL, 0, 0},
    {FAILED, E_TIMEOUT, NO, H, 0, FAILED, 0, true, NULL, 0, 0},
    {FAILED, E_STOP, NO, H, 0, STOPPED, NOTIFY, false, NULL, 0, 0},
    {FAILED, E_STOP, ALWAYS, H, PENDING, STOPPED, NOTIFY | CANCEL, false, NULL, 0, 0},
    {FAILED, E_EXIT_0, ALWAYS, H, PENDING, FAILED, 0, true, NULL, 0, PENDING},
    {FAILED, E_EXIT_1, ONFAIL, H, 0, FAILED, 0, true, NULL, 0, 0},
};

/* Puts a fresh machine in state from, shaped by setup as a real history would leave it. */
static void prepare(struct lifecycle *lc, enum service_state from, enum restart_policy restart,
                    bool health, unsigned setup)
{
    lifecycle_init(lc, health, restart);
    lc->state = from;
    if (from != STATE_STOPPED) {
        lc->starts[0] = NOW - 30000;
        lc->n_starts = 1;
    }
    if (from == STATE_RUNNING || from == STATE_UNHEALTHY)
        lc->running_since_ms = NOW - 10000;
    if (from == STATE_UNHEALTHY)
        lc->failed_probes = LIFECYCLE_UNHEALTHY_AFTER;
    if ((setup & PENDING) && from == STATE_FAILED)
        lc->restart_pending = true;
    if ((setup & QUEUED) && from == STATE_STOPPING)
        lc->start_after_stop = true;
    if ((setup & FAIL_AFTER) && from == STATE_STOPPING)
        lc->fail_after_stop = true;
    if ((setup & PROBES_2) && from == STATE_RUNNING)
        lc->failed_probes = LIFECYCLE_UNHEALTHY_AFTER - 1;
    if (setup & LIMIT_FULL) {
        for (size_t i = 0; i < LIFECYCLE_START_BURST; i++)
            lc->starts[i] = NOW - 50000 + 10000 * i;
        lc->n_starts = LIFECYCLE_START_BURST;
    }
    if (setup & LONG_RUN)
        lc->running_since_ms = NOW - LIFECYCLE_BACKOFF_MAX_MS;
    if (setup & BACKOFF_8)
        lc->backoff_ms = 8000;
}

static unsigned flags_of(const struct lifecycle *lc)
{
    return (lc->restart_pending ? PENDING : 0) | (lc->start_after_stop ? QUEUED : 0) |
           (lc->fail_after_stop ? FAIL_AFTER : 0);
}

static bool same_lifecycle(const struct lifecycle *a, const struct lifecycle *b)
{
    return a->state == b->state && a->health_enabled == b->health_enabled &&
           a->restart == b->restart && a->failed_probes == b->failed_probes &&
           a->restarts == b->restarts && a->restarts_total == b->restarts_total &&
           a->backoff_ms == b->backoff_ms && a->n_starts == b->n_starts &&
           memcmp(a->starts, b->starts, sizeof(a->starts[0]) * a->n_starts) == 0 &&
           a->start_after_stop == b->start_after_stop && a->fail_after_stop == b->fail_after_stop &&
           a->restart_pending == b->restart_pending && a->running_since_ms == b->running_since_ms;
}

static void assert_reason(const char *got, const char *expected)
{
    if (!expected)
        assert_null(got);
    else
        assert_string_equal(got, expected);
}

/* Runs every row of the table. */
static void test_table(void **state)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const struct row *r = &table[i];
        struct lifecycle lc;
        struct lifecycle_step step;

        prepare(&lc, r->from, r->restart, r->health, r->setup);
        step = lifecycle_handle(&lc, r->ev, NOW);
        if (step.to != r->to || step.actions != r->actions || step.no_op != r->no_op ||
            flags_of(&lc) != r->after)
            print_error("row %zu (%s + event %d): got %s, actions %#x, no_op %d, flags %#x\n", i,
                        lifecycle_state_name(r->from), r->ev, lifecycle_state_name(step.to),
                        step.actions, step.no_op, flags_of(&lc));
        assert_int_equal(step.from, r->from);
        assert_int_equal(step.to, r->to);
        assert_int_equal(lc.state, r->to);
        assert_int_equal(step.actions, r->actions);
        assert_int_equal(step.no_op, r->no_op);
        assert_reason(step.reason, r->reason);
        if (r->actions & LATER)
            assert_int_equal(step.restart_delay_ms, r->delay);
        assert_int_equal(flags_of(&lc), r->after);
    }
}

/* Every one of the 60 (state, event) pairs has at least one row. */
static void test_table_covers_every_pair(void **state)
{
    bool seen[N_STATES][N_EVENTS] = {{false}};

    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        seen[table[i].from][table[i].ev] = true;
    for (int s = 0; s < N_STATES; s++)
        for (int e = 0; e < N_EVENTS; e++) {
            if (!seen[s][e])
                print_error("no row for %s + event %d\n", lifecycle_state_name(s), e);
            assert_true(seen[s][e]);
        }
}

static bool up(enum service_state s)
{
    return s == STATE_STARTING || s == STATE_RUNNING || s == STATE_UNHEALTHY;
}

static bool settled(enum service_state s)
{
    return s == STATE_RUNNING || s == STATE_UNHEALTHY || s == STATE_STOPPED || s == STATE_FAILED;
}

/* The uniform rules of lifecycle.h hold for every state, event, policy, health and setup. */
static void test_every_step_keeps_the_rules(void **state)
{
    static const enum restart_policy policies[] = {RESTART_NO, RESTART_ON_FAILURE, RESTART_ALWAYS};
    unsigned steps = 0;

    for (enum service_state s = STATE_STOPPED; s <= STATE_FAILED; s++)
        for (enum lifecycle_event e = LIFECYCLE_START; e <= LIFECYCLE_EXITED_FAILED; e++)
            for (size_t p = 0; p < 3; p++)
                for (int h = 0; h < 2; h++)
                    for (unsigned setup = 0; setup <= SETUP_ALL; setup++) {
                        struct lifecycle lc, before;
                        struct lifecycle_step step;
                        bool exited = e == LIFECYCLE_EXITED_OK || e == LIFECYCLE_EXITED_FAILED;

                        prepare(&lc, s, policies[p], h, setup);
                        before = lc;
                        step = lifecycle_handle(&lc, e, NOW);
                        steps++;
                        assert_int_equal(step.from, s);
                        assert_int_equal(step.to, lc.state);
                        assert_in_range(step.to, STATE_STOPPED, STATE_FAILED);
                        assert_int_equal(step.no_op,
                                         step.actions == 0 && same_lifecycle(&before, &lc));
                        /* The cause is the value of the reason, whatever the step. */
                        if (step.reason)
                            assert_string_equal(lifecycle_cause_text(step.cause), step.reason);
                        else
                            assert_int_equal(step.cause, LIFECYCLE_CAUSE_NONE);
                        if (step.no_op) {
                            assert_int_equal(step.to, s);
                            assert_null(step.reason);
                        }
                        assert_int_equal(!!(step.actions & DSTART),
                                         step.to == STATE_STARTING && s != STATE_STARTING);
                        assert_int_equal(!!(step.actions & DSTOP),
                                         step.to == STATE_STOPPING && up(s));
                        assert_int_equal(!!(step.actions & PEND),
                                         (up(s) && !up(step.to)) ||
                                             (s == STATE_STOPPING && exited));
                        assert_int_equal(!!(step.actions & NOTIFY),
                                         (settled(step.to) && step.to != s) ||
                                             (s == STATE_STOPPING && exited));
                        assert_int_equal(!!(step.actions & PBEGIN),
                                         h && s == STATE_STARTING && e == LIFECYCLE_DRIVER_STARTED);
                        /* RESTART_DUE uses the pending restart up; only others drop it. */
                        assert_int_equal(!!(step.actions & CANCEL), before.restart_pending &&
                                                                        !lc.restart_pending &&
                                                                        e != LIFECYCLE_RESTART_DUE);
                        if (step.actions & LATER) {
                            assert_int_equal(step.to, STATE_FAILED);
                            assert_true(lc.restart_pending);
                            assert_in_range(step.restart_delay_ms, LIFECYCLE_BACKOFF_FIRST_MS,
                                            LIFECYCLE_BACKOFF_MAX_MS);
                        }
                        if (lc.restart_pending)
                            assert_int_equal(lc.state, STATE_FAILED);
                        if (lc.start_after_stop || lc.fail_after_stop)
                            assert_int_equal(lc.state, STATE_STOPPING);
                        assert_in_range(lc.n_starts, 0, LIFECYCLE_START_BURST);
                        /* The GPU is let go only once nothing runs any more. */
                        if (lifecycle_holds_gpu(s) && !lifecycle_holds_gpu(step.to))
                            assert_true(exited || e == LIFECYCLE_DRIVER_FAILED);
                        if (step.reason)
                            assert_true(step.to == STATE_FAILED || step.to == STATE_STOPPED ||
                                        step.to == STATE_UNHEALTHY || step.to == STATE_STOPPING);
                    }
    assert_int_equal(steps, N_STATES * N_EVENTS * 3 * 2 * (SETUP_ALL + 1));
}

/* Out-of-range events and states change nothing and never abort. */
static void test_out_of_range_is_a_no_op(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;

    for (int s = 0; s < N_STATES; s++) {
        prepare(&lc, s, RESTART_ALWAYS, true, 0);
        step = lifecycle_handle(&lc, (enum lifecycle_event)N_EVENTS, NOW);
        assert_true(step.no_op);
        assert_int_equal(lc.state, s);
        step = lifecycle_handle(&lc, (enum lifecycle_event) - 1, NOW);
        assert_true(step.no_op);
    }
    prepare(&lc, STATE_STOPPED, RESTART_NO, true, 0);
    lc.state = (enum service_state)42;
    step = lifecycle_handle(&lc, LIFECYCLE_START, NOW);
    assert_true(step.no_op);
    assert_int_equal(step.actions, 0);
    assert_string_equal(lifecycle_state_name((enum service_state)42), "unknown");
}

static void test_state_names(void **state)
{
    assert_string_equal(lifecycle_state_name(STATE_STOPPED), "stopped");
    assert_string_equal(lifecycle_state_name(STATE_STARTING), "starting");
    assert_string_equal(lifecycle_state_name(STATE_RUNNING), "running");
    assert_string_equal(lifecycle_state_name(STATE_UNHEALTHY), "unhealthy");
    assert_string_equal(lifecycle_state_name(STATE_STOPPING), "stopping");
    assert_string_equal(lifecycle_state_name(STATE_FAILED), "failed");
    assert_string_equal(LIFECYCLE_REASON_UNHEALTHY, "3 failed health checks in a row");
}

static void test_holds_gpu(void **state)
{
    assert_false(lifecycle_holds_gpu(STATE_STOPPED));
    assert_true(lifecycle_holds_gpu(STATE_STARTING));
    assert_true(lifecycle_holds_gpu(STATE_RUNNING));
    assert_true(lifecycle_holds_gpu(STATE_UNHEALTHY));
    assert_true(lifecycle_holds_gpu(STATE_STOPPING));
    assert_false(lifecycle_holds_gpu(STATE_FAILED));
    assert_false(lifecycle_holds_gpu((enum service_state)42));
}

static void test_init(void **state)
{
    struct lifecycle lc;

    memset(&lc, 0xa5, sizeof(lc));
    lifecycle_init(&lc, true, RESTART_ON_FAILURE);
    assert_int_equal(lc.state, STATE_STOPPED);
    assert_true(lc.health_enabled);
    assert_int_equal(lc.restart, RESTART_ON_FAILURE);
    assert_int_equal(lc.failed_probes, 0);
    assert_int_equal(lc.restarts, 0);
    assert_int_equal(lc.restarts_total, 0);
    assert_int_equal(lc.backoff_ms, LIFECYCLE_BACKOFF_FIRST_MS);
    assert_int_equal(lc.n_starts, 0);
    assert_false(lc.start_after_stop);
    assert_false(lc.fail_after_stop);
    assert_false(lc.restart_pending);
}

/* Feeds one event and checks where it lands and what it asks. */
static struct lifecycle_step feed(struct lifecycle *lc, enum lifecycle_event ev, uint64_t now,
                                  enum service_state to, unsigned actions)
{
    struct lifecycle_step step = lifecycle_handle(lc, ev, now);

    assert_int_equal(step.to, to);
    assert_int_equal(step.actions, actions);
    return step;
}

/* Crashes after each run of run_ms and expects the restart delays given, then restarts. */
static uint64_t crash_loop(struct lifecycle *lc, uint64_t t, uint64_t run_ms,
                           const uint64_t *delays, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct lifecycle_step step;
        unsigned restarts = lc->restarts;
        uint64_t total = lc->restarts_total;

        t += run_ms;
        step = feed(lc, LIFECYCLE_EXITED_FAILED, t, STATE_FAILED, PEND | NOTIFY | LATER);
        assert_int_equal(step.restart_delay_ms, delays[i]);
        assert_string_equal(step.reason, R_CRASHED);
        t += step.restart_delay_ms;
        feed(lc, LIFECYCLE_RESTART_DUE, t, STATE_STARTING, DSTART);
        assert_int_equal(lc->restarts, restarts + 1);
        assert_int_equal(lc->restarts_total, total + 1);
        feed(lc, LIFECYCLE_DRIVER_STARTED, t + 10, STATE_RUNNING, NOTIFY);
        t += 10;
    }
    return t;
}

/* The backoff doubles from 1 s to its 60 s cap, and a person's start resets it. */
static void test_backoff_sequence(void **state)
{
    static const uint64_t delays[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    struct lifecycle lc;
    uint64_t t = 0;

    lifecycle_init(&lc, false, RESTART_ON_FAILURE);
    feed(&lc, LIFECYCLE_START, t, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_RUNNING, NOTIFY);
    /* 30 s runs: too short for the backoff reset, too far apart for the start limit. */
    t = crash_loop(&lc, t, 30000, delays, sizeof(delays) / sizeof(delays[0]));
    assert_int_equal(lc.restarts, 9);
    assert_int_equal(lc.backoff_ms, LIFECYCLE_BACKOFF_MAX_MS);

    feed(&lc, LIFECYCLE_STOP, t, STATE_STOPPING, DSTOP | PEND);
    feed(&lc, LIFECYCLE_EXITED_FAILED, t + 5, STATE_STOPPED, PEND | NOTIFY);
    assert_int_equal(lc.backoff_ms, LIFECYCLE_BACKOFF_MAX_MS); /* a stop keeps it */
    feed(&lc, LIFECYCLE_START, t + 10, STATE_STARTING, DSTART);
    assert_int_equal(lc.backoff_ms, LIFECYCLE_BACKOFF_FIRST_MS);
    assert_int_equal(lc.restarts, 0);
    assert_int_equal(lc.restarts_total, 9); /* the metrics' counter: a start keeps it */
    feed(&lc, LIFECYCLE_DRIVER_STARTED, t + 20, STATE_RUNNING, NOTIFY);
    crash_loop(&lc, t + 20, 30000, delays, 3);
    assert_int_equal(lc.restarts_total, 12);
}

/* A run of at least LIFECYCLE_BACKOFF_MAX_MS since reaching running resets the backoff. */
static void test_backoff_resets_after_a_long_run(void **state)
{
    static const uint64_t first[] = {1000, 2000, 4000, 8000};
    struct lifecycle lc;
    struct lifecycle_step step;
    uint64_t t = 0;

    lifecycle_init(&lc, true, RESTART_ALWAYS);
    feed(&lc, LIFECYCLE_START, t, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_PROBE_OK, t, STATE_RUNNING, NOTIFY);
    for (size_t i = 0; i < 4; i++) {
        t += 30000;
        step = feed(&lc, LIFECYCLE_EXITED_OK, t, STATE_FAILED, PEND | NOTIFY | LATER);
        assert_int_equal(step.restart_delay_ms, first[i]);
        t += step.restart_delay_ms;
        feed(&lc, LIFECYCLE_RESTART_DUE, t, STATE_STARTING, DSTART);
        feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_STARTING, PBEGIN);
        /* Slow to become healthy: the run is counted from running, not from the start. */
        feed(&lc, LIFECYCLE_PROBE_OK, t + 20000, STATE_RUNNING, NOTIFY);
        t += 20000;
    }
    /* One millisecond short of the reset, then unhealthy and back (the clock keeps on). */
    feed(&lc, LIFECYCLE_PROBE_FAILED, t + 1000, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, t + 2000, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, t + 3000, STATE_UNHEALTHY, NOTIFY);
    feed(&lc, LIFECYCLE_PROBE_OK, t + 4000, STATE_RUNNING, NOTIFY);
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, t + LIFECYCLE_BACKOFF_MAX_MS - 1, STATE_FAILED,
                PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 16000);
    t += LIFECYCLE_BACKOFF_MAX_MS - 1 + 16000;
    feed(&lc, LIFECYCLE_RESTART_DUE, t, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_PROBE_OK, t, STATE_RUNNING, NOTIFY);
    /* Exactly the cap since it went running, a spell of unhealthy in between: reset. */
    feed(&lc, LIFECYCLE_PROBE_FAILED, t + 1000, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, t + 2000, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, t + 3000, STATE_UNHEALTHY, NOTIFY);
    feed(&lc, LIFECYCLE_PROBE_OK, t + 4000, STATE_RUNNING, NOTIFY);
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, t + LIFECYCLE_BACKOFF_MAX_MS, STATE_FAILED,
                PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 1000);
    t += LIFECYCLE_BACKOFF_MAX_MS + 1000;
    feed(&lc, LIFECYCLE_RESTART_DUE, t, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_PROBE_OK, t, STATE_RUNNING, NOTIFY);
    t += 30000;
    step = feed(&lc, LIFECYCLE_EXITED_OK, t, STATE_FAILED, PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 2000); /* doubling again from 1 s */
}

/* The 6th start within 60 s is refused: failed, "start limit hit"; a person's start
 * clears the limit. */
static void test_start_limit(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;
    uint64_t t = 0;

    lifecycle_init(&lc, false, RESTART_ALWAYS);
    feed(&lc, LIFECYCLE_START, t, STATE_STARTING, DSTART); /* start 1 at 0 */
    for (int i = 0; i < 4; i++) {                          /* starts 2..5 at 1, 3, 7, 15 s */
        feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_RUNNING, NOTIFY);
        step = feed(&lc, LIFECYCLE_EXITED_FAILED, t, STATE_FAILED, PEND | NOTIFY | LATER);
        t += step.restart_delay_ms;
        feed(&lc, LIFECYCLE_RESTART_DUE, t, STATE_STARTING, DSTART);
    }
    assert_int_equal(t, 15000);
    assert_int_equal(lc.n_starts, 5);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_RUNNING, NOTIFY);
    /* The 6th would come at 31 s: within 60 s of the 1st. */
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, t, STATE_FAILED, PEND | NOTIFY);
    assert_string_equal(step.reason, R_LIMIT);
    assert_false(lc.restart_pending);
    feed(&lc, LIFECYCLE_RESTART_DUE, t + 16000, STATE_FAILED, 0);
    assert_int_equal(lc.restarts, 4);

    /* A person's start is never refused and clears the history. */
    feed(&lc, LIFECYCLE_START, t + 17000, STATE_STARTING, DSTART);
    assert_int_equal(lc.n_starts, 1);
    assert_int_equal(lc.restarts, 0);
    assert_int_equal(lc.backoff_ms, LIFECYCLE_BACKOFF_FIRST_MS);
    step = feed(&lc, LIFECYCLE_DRIVER_FAILED, t + 17001, STATE_FAILED, PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 1000);
    assert_string_equal(step.reason, R_DRIVER);
}

/* The limit counts starts within the interval only: a restart due exactly 60 s after the
 * oldest of the last five goes ahead. */
static void test_start_limit_window(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;

    prepare(&lc, STATE_RUNNING, RESTART_ON_FAILURE, false, 0);
    for (size_t i = 0; i < LIFECYCLE_START_BURST; i++)
        lc.starts[i] = NOW - 59000 + 1000 * i;
    lc.n_starts = LIFECYCLE_START_BURST;
    /* Due at NOW + 1000 = oldest + 60000: allowed. */
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, NOW, STATE_FAILED, PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 1000);
    feed(&lc, LIFECYCLE_RESTART_DUE, NOW + 1000, STATE_STARTING, DSTART);
    assert_int_equal(lc.n_starts, LIFECYCLE_START_BURST);
    assert_int_equal(lc.starts[0], NOW - 58000);
    assert_int_equal(lc.starts[LIFECYCLE_START_BURST - 1], NOW + 1000);

    /* Due one millisecond earlier relative to the oldest: refused. */
    prepare(&lc, STATE_RUNNING, RESTART_ON_FAILURE, false, 0);
    for (size_t i = 0; i < LIFECYCLE_START_BURST; i++)
        lc.starts[i] = NOW - 58999 + 1000 * i;
    lc.n_starts = LIFECYCLE_START_BURST;
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, NOW, STATE_FAILED, PEND | NOTIFY);
    assert_string_equal(step.reason, R_LIMIT);

    /* Four starts never hit it, however close. */
    prepare(&lc, STATE_RUNNING, RESTART_ALWAYS, false, 0);
    for (size_t i = 0; i < LIFECYCLE_START_BURST - 1; i++)
        lc.starts[i] = NOW - 4 + i;
    lc.n_starts = LIFECYCLE_START_BURST - 1;
    feed(&lc, LIFECYCLE_EXITED_OK, NOW, STATE_FAILED, PEND | NOTIFY | LATER);
}

/* A start while stopping is kept for when the stop ends; a later stop takes it back. */
static void test_start_after_stop(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;

    prepare(&lc, STATE_RUNNING, RESTART_ON_FAILURE, true, 0);
    lc.restarts = 3;
    lc.backoff_ms = 16000;
    feed(&lc, LIFECYCLE_STOP, NOW, STATE_STOPPING, DSTOP | PEND);
    step = feed(&lc, LIFECYCLE_START, NOW + 1, STATE_STOPPING, 0);
    assert_false(step.no_op);
    assert_true(lc.start_after_stop);
    step = feed(&lc, LIFECYCLE_START, NOW + 2, STATE_STOPPING, 0);
    assert_true(step.no_op);
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, NOW + 3, STATE_STARTING, DSTART | PEND | NOTIFY);
    assert_false(lc.start_after_stop);
    assert_int_equal(lc.restarts, 0); /* it was a person's start */
    assert_int_equal(lc.backoff_ms, LIFECYCLE_BACKOFF_FIRST_MS);
    assert_int_equal(lc.n_starts, 1);
    assert_int_equal(lc.starts[0], NOW + 3);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW + 4, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_PROBE_OK, NOW + 5, STATE_RUNNING, NOTIFY);

    /* Stop, start, stop: the last word wins. */
    feed(&lc, LIFECYCLE_STOP, NOW + 6, STATE_STOPPING, DSTOP | PEND);
    feed(&lc, LIFECYCLE_START, NOW + 7, STATE_STOPPING, 0);
    step = feed(&lc, LIFECYCLE_STOP, NOW + 8, STATE_STOPPING, 0);
    assert_false(step.no_op);
    assert_false(lc.start_after_stop);
    feed(&lc, LIFECYCLE_EXITED_OK, NOW + 9, STATE_STOPPED, PEND | NOTIFY);
}

/* A start that is not healthy within start_period is stopped and ends failed. */
static void test_fail_after_stop(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;

    lifecycle_init(&lc, true, RESTART_NO);
    feed(&lc, LIFECYCLE_START, NOW, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW, STATE_STARTING, PBEGIN);
    for (int i = 0; i < 10; i++) {
        step = feed(&lc, LIFECYCLE_PROBE_FAILED, NOW + 100 * i, STATE_STARTING, 0);
        assert_true(step.no_op);
    }
    step = feed(&lc, LIFECYCLE_START_TIMEOUT, NOW + 300000, STATE_STOPPING, DSTOP | PEND);
    assert_string_equal(step.reason, R_TIMEOUT);
    assert_true(lc.fail_after_stop);
    feed(&lc, LIFECYCLE_PROBE_OK, NOW + 300001, STATE_STOPPING, 0); /* too late */
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, NOW + 300002, STATE_FAILED, PEND | NOTIFY);
    assert_string_equal(step.reason, R_TIMEOUT);
    assert_false(lc.fail_after_stop);
    assert_false(lc.restart_pending);

    /* With on-failure it counts as a failure: restarted after the backoff. */
    lifecycle_init(&lc, true, RESTART_ON_FAILURE);
    feed(&lc, LIFECYCLE_START, NOW, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_START_TIMEOUT, NOW + 300000, STATE_STOPPING, DSTOP | PEND);
    step = feed(&lc, LIFECYCLE_EXITED_OK, NOW + 300002, STATE_FAILED, PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 1000);
    assert_string_equal(step.reason, R_TIMEOUT);
    feed(&lc, LIFECYCLE_RESTART_DUE, NOW + 301002, STATE_STARTING, DSTART);
    assert_int_equal(lc.restarts, 1);

    /* A person's stop during that stop ends in stopped, with no restart. */
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW + 301003, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_START_TIMEOUT, NOW + 601003, STATE_STOPPING, DSTOP | PEND);
    feed(&lc, LIFECYCLE_STOP, NOW + 601004, STATE_STOPPING, 0);
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, NOW + 601005, STATE_STOPPED, PEND | NOTIFY);
    assert_null(step.reason);

    /* A person's start during it wins over the failure. */
    lifecycle_init(&lc, true, RESTART_ALWAYS);
    feed(&lc, LIFECYCLE_START, NOW, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_START_TIMEOUT, NOW + 300000, STATE_STOPPING, DSTOP | PEND);
    feed(&lc, LIFECYCLE_START, NOW + 300001, STATE_STOPPING, 0);
    feed(&lc, LIFECYCLE_EXITED_OK, NOW + 300002, STATE_STARTING, DSTART | PEND | NOTIFY);
    assert_false(lc.fail_after_stop);
}

/* Exactly three failed probes in a row make running unhealthy; one success brings it back. */
static void test_unhealthy_after_three(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;
    uint64_t t = NOW;

    lifecycle_init(&lc, true, RESTART_NO);
    feed(&lc, LIFECYCLE_START, t, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, t, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_PROBE_FAILED, t, STATE_STARTING, 0);
    step = feed(&lc, LIFECYCLE_PROBE_OK, ++t, STATE_RUNNING, NOTIFY);
    assert_null(step.reason);
    assert_int_equal(lc.failed_probes, 0);

    /* Two failures, then a success: the count starts over. */
    feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_RUNNING, 0);
    assert_int_equal(lc.failed_probes, 2);
    step = feed(&lc, LIFECYCLE_PROBE_OK, ++t, STATE_RUNNING, 0);
    assert_false(step.no_op);
    assert_int_equal(lc.failed_probes, 0);
    step = feed(&lc, LIFECYCLE_PROBE_OK, ++t, STATE_RUNNING, 0);
    assert_true(step.no_op);

    feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_RUNNING, 0);
    step = feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_UNHEALTHY, NOTIFY);
    assert_string_equal(step.reason, "3 failed health checks in a row");
    for (int i = 0; i < 5; i++)
        feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_UNHEALTHY, 0);
    assert_int_equal(lc.failed_probes, 8);
    step = feed(&lc, LIFECYCLE_START, ++t, STATE_UNHEALTHY, 0);
    assert_true(step.no_op);
    step = feed(&lc, LIFECYCLE_PROBE_OK, ++t, STATE_RUNNING, NOTIFY);
    assert_int_equal(lc.failed_probes, 0);

    /* And again: it takes three more. */
    feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_PROBE_FAILED, ++t, STATE_UNHEALTHY, NOTIFY);
    feed(&lc, LIFECYCLE_STOP, ++t, STATE_STOPPING, DSTOP | PEND);
    feed(&lc, LIFECYCLE_EXITED_FAILED, ++t, STATE_STOPPED, PEND | NOTIFY);
    /* A new start counts from zero. */
    feed(&lc, LIFECYCLE_START, ++t, STATE_STARTING, DSTART);
    assert_int_equal(lc.failed_probes, 0);
}

/* A failed service with a pending restart: stop cancels it, start replaces it. */
static void test_pending_restart(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;

    lifecycle_init(&lc, false, RESTART_ALWAYS);
    feed(&lc, LIFECYCLE_START, NOW, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW, STATE_RUNNING, NOTIFY);
    feed(&lc, LIFECYCLE_EXITED_FAILED, NOW + 1, STATE_FAILED, PEND | NOTIFY | LATER);
    step = feed(&lc, LIFECYCLE_STOP, NOW + 2, STATE_STOPPED, NOTIFY | CANCEL);
    assert_null(step.reason);
    step = feed(&lc, LIFECYCLE_RESTART_DUE, NOW + 1001, STATE_STOPPED, 0); /* a stale timer */
    assert_true(step.no_op);

    feed(&lc, LIFECYCLE_START, NOW + 2000, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW + 2000, STATE_RUNNING, NOTIFY);
    feed(&lc, LIFECYCLE_EXITED_OK, NOW + 2001, STATE_FAILED, PEND | NOTIFY | LATER);
    feed(&lc, LIFECYCLE_START, NOW + 2002, STATE_STARTING, DSTART | CANCEL);
    assert_false(lc.restart_pending);
    step = feed(&lc, LIFECYCLE_RESTART_DUE, NOW + 3001, STATE_STARTING, 0);
    assert_true(step.no_op);
}

/* A clock that seems to go back counts as no time at all: no backoff reset. */
static void test_clock_going_back(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;

    prepare(&lc, STATE_RUNNING, RESTART_ALWAYS, false, BACKOFF_8);
    lc.running_since_ms = NOW;
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, NOW - 1, STATE_FAILED, PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 8000);
}

/* Adoption after a daemon restart: running at once, probed when it has health checks. */
static void test_adopt(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;

    lifecycle_init(&lc, true, RESTART_ON_FAILURE);
    step = lifecycle_adopt(&lc, NOW);
    assert_int_equal(step.from, STATE_STOPPED);
    assert_int_equal(step.to, STATE_RUNNING);
    assert_int_equal(step.actions, NOTIFY | PBEGIN);
    assert_false(step.no_op);
    assert_int_equal(lc.n_starts, 0);
    step = lifecycle_adopt(&lc, NOW);
    assert_true(step.no_op);
    assert_int_equal(step.actions, 0);
    /* It ran long enough before: its crash restarts after the first delay. */
    step = feed(&lc, LIFECYCLE_EXITED_FAILED, NOW + 5000, STATE_FAILED, PEND | NOTIFY | LATER);
    assert_int_equal(step.restart_delay_ms, 1000);

    lifecycle_init(&lc, false, RESTART_NO);
    step = lifecycle_adopt(&lc, NOW);
    assert_int_equal(step.actions, NOTIFY);
    assert_int_equal(lc.state, STATE_RUNNING);
}

/* Adoption from failed: running again, and a pending automatic restart is dropped. */
static void test_adopt_from_failed(void **state)
{
    struct lifecycle lc;
    struct lifecycle_step step;
    size_t n_starts;

    /* Failed for good (restart: no): adopted, nothing to cancel. */
    lifecycle_init(&lc, false, RESTART_NO);
    feed(&lc, LIFECYCLE_START, NOW, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW, STATE_RUNNING, NOTIFY);
    feed(&lc, LIFECYCLE_EXITED_FAILED, NOW + 1000, STATE_FAILED, PEND | NOTIFY);
    step = lifecycle_adopt(&lc, NOW + 2000);
    assert_int_equal(step.from, STATE_FAILED);
    assert_int_equal(step.to, STATE_RUNNING);
    assert_int_equal(step.actions, NOTIFY);
    assert_false(step.no_op);
    assert_null(step.reason);
    assert_int_equal(lc.state, STATE_RUNNING);
    assert_int_equal(lc.running_since_ms, NOW + 2000);

    /* Failed with a restart armed: the restart is cancelled, the start history stays. */
    lifecycle_init(&lc, true, RESTART_ALWAYS);
    feed(&lc, LIFECYCLE_START, NOW, STATE_STARTING, DSTART);
    feed(&lc, LIFECYCLE_DRIVER_STARTED, NOW, STATE_STARTING, PBEGIN);
    feed(&lc, LIFECYCLE_PROBE_OK, NOW + 100, STATE_RUNNING, NOTIFY);
    feed(&lc, LIFECYCLE_PROBE_FAILED, NOW + 200, STATE_RUNNING, 0);
    feed(&lc, LIFECYCLE_EXITED_FAILED, NOW + 300, STATE_FAILED, PEND | NOTIFY | LATER);
    assert_true(lc.restart_pending);
    n_starts = lc.n_starts;
    step = lifecycle_adopt(&lc, NOW + 400);
    assert_int_equal(step.from, STATE_FAILED);
    assert_int_equal(step.to, STATE_RUNNING);
    assert_int_equal(step.actions, NOTIFY | PBEGIN | CANCEL);
    assert_false(step.no_op);
    assert_false(lc.restart_pending);
    assert_int_equal(lc.failed_probes, 0);
    assert_int_equal(lc.n_starts, n_starts);
    assert_int_equal(lc.restarts, 0);
    /* The timer that fires anyway finds nothing to restart. */
    step = feed(&lc, LIFECYCLE_RESTART_DUE, NOW + 1300, STATE_RUNNING, 0);
    assert_true(step.no_op);
}

/* Adoption while starting, running, unhealthy or stopping changes nothing at all. */
static void test_adopt_is_a_no_op_while_up_or_stopping(void **state)
{
    static const enum service_state states[] = {STATE_STARTING, STATE_RUNNING, STATE_UNHEALTHY,
                                                STATE_STOPPING};

    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        for (unsigned setup = 0; setup <= SETUP_ALL; setup++) {
            struct lifecycle lc, before;
            struct lifecycle_step step;

            prepare(&lc, states[i], RESTART_ALWAYS, true, setup);
            before = lc;
            step = lifecycle_adopt(&lc, NOW);
            assert_int_equal(step.from, states[i]);
            assert_int_equal(step.to, states[i]);
            assert_int_equal(step.actions, 0);
            assert_true(step.no_op);
            assert_null(step.reason);
            assert_true(same_lifecycle(&before, &lc));
        }
}

/* Adoption from stopped or failed, for every policy, health and history: running, NOTIFY,
 * PROBE_BEGIN with health checks, RESTART_CANCEL exactly when a restart was pending; not a
 * start (history, restarts and backoff stay). */
static void test_adopt_keeps_the_rules(void **state)
{
    static const enum service_state states[] = {STATE_STOPPED, STATE_FAILED};
    static const enum restart_policy policies[] = {RESTART_NO, RESTART_ON_FAILURE, RESTART_ALWAYS};

    for (size_t i = 0; i < 2; i++)
        for (size_t p = 0; p < 3; p++)
            for (int h = 0; h < 2; h++)
                for (unsigned setup = 0; setup <= SETUP_ALL; setup++) {
                    struct lifecycle lc, before;
                    struct lifecycle_step step;

                    prepare(&lc, states[i], policies[p], h, setup);
                    lc.failed_probes = 2;
                    before = lc;
                    step = lifecycle_adopt(&lc, NOW);
                    assert_int_equal(step.from, states[i]);
                    assert_int_equal(step.to, STATE_RUNNING);
                    assert_int_equal(lc.state, STATE_RUNNING);
                    assert_false(step.no_op);
                    assert_int_equal(step.actions, NOTIFY | (h ? PBEGIN : 0) |
                                                       (before.restart_pending ? CANCEL : 0));
                    assert_false(lc.restart_pending);
                    assert_int_equal(lc.failed_probes, 0);
                    assert_int_equal(lc.running_since_ms, NOW);
                    assert_int_equal(lc.n_starts, before.n_starts);
                    assert_memory_equal(lc.starts, before.starts, sizeof(lc.starts));
                    assert_int_equal(lc.restarts, before.restarts);
                    assert_int_equal(lc.backoff_ms, before.backoff_ms);
                }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_table_covers_every_pair),
        cmocka_unit_test(test_every_step_keeps_the_rules),
        cmocka_unit_test(test_out_of_range_is_a_no_op),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_holds_gpu),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_backoff_sequence),
        cmocka_unit_test(test_backoff_resets_after_a_long_run),
        cmocka_unit_test(test_start_limit),
        cmocka_unit_test(test_start_limit_window),
        cmocka_unit_test(test_start_after_stop),
        cmocka_unit_test(test_fail_after_stop),
        cmocka_unit_test(test_unhealthy_after_three),
        cmocka_unit_test(test_pending_restart),
        cmocka_unit_test(test_clock_going_back),
        cmocka_unit_test(test_adopt),
        cmocka_unit_test(test_adopt_from_failed),
        cmocka_unit_test(test_adopt_is_a_no_op_while_up_or_stopping),
        cmocka_unit_test(test_adopt_keeps_the_rules),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
