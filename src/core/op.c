/* What a pending operation does next: a pure function (op.h). */
#include "core/op.h"

static bool ended(enum service_state s)
{
    return s == STATE_STOPPED || s == STATE_FAILED;
}

enum op_next op_next(enum op_phase phase, const struct op_view *v)
{
    switch (phase) {
    case OP_NEW:
        return OP_WAIT;
    case OP_STOP_WAIT:
        return ended(v->state) && !v->lingers ? OP_DONE_OK : OP_WAIT;
    case OP_STOP_FIRST:
        return ended(v->state) ? OP_ARBITRATE : OP_WAIT;
    case OP_GPU_WAIT:
        return v->gpu_free ? OP_BEGIN_START : OP_WAIT;
    case OP_ADOPT_WAIT:
        return OP_WAIT; /* supervisor_adopted() lets it go */
    case OP_STARTED:
        switch (v->state) {
        case STATE_RUNNING:
        case STATE_UNHEALTHY:
            return OP_DONE_OK;
        case STATE_STARTING:
            return !v->wait_healthy && !v->driver_starting ? OP_DONE_OK : OP_WAIT;
        case STATE_FAILED:
            return v->failure == LIFECYCLE_CAUSE_START_TIMEOUT ? OP_DONE_TIMED_OUT : OP_DONE_FAILED;
        case STATE_STOPPED:
            return OP_DONE_CANCELLED;
        case STATE_STOPPING:
            return OP_WAIT;
        }
        break;
    }
    return OP_WAIT;
}
