/* What a pending operation (a start, stop or restart someone waits for) does next, as a
 * pure function of where it is and what its service is doing: the supervisor feeds it
 * what it sees and carries out the answer. No I/O. */
#ifndef NANNY_OP_H
#define NANNY_OP_H

#include <stdbool.h>

#include "core/lifecycle.h"

/* Where an operation is. */
enum op_phase {
    OP_NEW,        /* a start not decided yet (its GPU verdict is being carried out) */
    OP_STOP_WAIT,  /* a stop: waits for nothing of the service to run any more */
    OP_STOP_FIRST, /* a restart: waits for its service to stop before it starts it */
    OP_GPU_WAIT,   /* a start: waits for the GPU holders it preempted to be gone */
    OP_STARTED,    /* a start fed to the lifecycle: waits for its outcome */
    OP_ADOPT_WAIT, /* asked before the daemon adopted what runs: waits for the adoption */
};

/* What the operation's service is doing, as the supervisor sees it. */
struct op_view {
    enum service_state state;
    bool lingers;                 /* processes of an earlier run still go */
    bool gpu_free;                /* no other service holds the GPU */
    bool driver_starting;         /* the driver's start goes on (compose up) */
    bool wait_healthy;            /* the start answers only once it runs */
    enum lifecycle_cause failure; /* why it last went to failed */
};

enum op_next {
    OP_WAIT,           /* nothing yet */
    OP_ARBITRATE,      /* the restart's stop is over: decide its start by the GPU rule */
    OP_BEGIN_START,    /* the GPU is free: feed the start to the lifecycle */
    OP_DONE_OK,        /* answered: done */
    OP_DONE_TIMED_OUT, /* answered: not healthy within start_period, stopped (504) */
    OP_DONE_FAILED,    /* answered: it failed (502, with its last error) */
    OP_DONE_CANCELLED, /* answered: a stop asked after the start stopped it */
};

/* The next step of an operation in phase, its service seen as v:
 * - OP_NEW: waits;
 * - OP_STOP_WAIT: done once stopped or failed with nothing lingering;
 * - OP_STOP_FIRST: arbitrate once stopped or failed;
 * - OP_GPU_WAIT: begin the start once the GPU is free;
 * - OP_STARTED: done once running or unhealthy, or starting when the start does not wait
 *   for health and the driver's start returned; failed answers timed out or failed by
 *   the cause; stopped answers cancelled. */
enum op_next op_next(enum op_phase phase, const struct op_view *v);

#endif
