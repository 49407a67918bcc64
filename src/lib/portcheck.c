/* The port-in-use check on the loop: all the connects at once, one timer for their
 * deadline, and an answer as soon as the first port of the list that is taken is known. */
#include <stdbool.h>
#include <stdlib.h>

#include "lib/alloc.h"
#include "lib/portcheck.h"

enum port_state { PORT_PENDING, PORT_FREE, PORT_TAKEN };

/* One port's connect. */
struct port_probe {
    struct portcheck *pc;
    uv_tcp_t tcp;
    uv_connect_t connect;
    unsigned port;
    enum port_state state;
    bool tcp_open; /* tcp was initialised: it must be closed */
};

struct portcheck {
    uv_timer_t timer;
    struct port_probe *probes;
    size_t n;
    portcheck_fn done;
    void *data;
    bool finished;       /* answered or cancelled: the handles are closing */
    size_t handles_open; /* the timer and each open tcp; the check is freed at 0 */
};

static void on_closed(uv_handle_t *h)
{
    struct portcheck *pc = h->data;

    if (--pc->handles_open == 0) {
        free(pc->probes);
        free(pc);
    }
}

/* Closes every handle; the check frees itself once they are closed. */
static void portcheck_close(struct portcheck *pc)
{
    pc->finished = true;
    uv_close((uv_handle_t *)&pc->timer, on_closed);
    for (size_t i = 0; i < pc->n; i++)
        if (pc->probes[i].tcp_open)
            uv_close((uv_handle_t *)&pc->probes[i].tcp, on_closed);
}

static void finish(struct portcheck *pc, unsigned taken_port)
{
    portcheck_fn done = pc->done;
    void *data = pc->data;

    portcheck_close(pc);
    done(data, taken_port);
}

/* Answers once the list decides: the first port that is not free is taken (answer it), or
 * still pending (wait), or every port is free (answer 0). */
static void decide(struct portcheck *pc)
{
    for (size_t i = 0; i < pc->n; i++) {
        if (pc->probes[i].state == PORT_PENDING)
            return;
        if (pc->probes[i].state == PORT_TAKEN) {
            finish(pc, pc->probes[i].port);
            return;
        }
    }
    finish(pc, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct port_probe *probe = req->data;

    if (probe->pc->finished)
        return; /* closed under it (UV_ECANCELED) */
    probe->state = status == 0 ? PORT_TAKEN : PORT_FREE;
    decide(probe->pc);
}

/* The deadline (or, with nothing to wait for, the later pass that answers): a port that
 * has not answered is taken. */
static void on_timer(uv_timer_t *t)
{
    struct portcheck *pc = t->data;

    for (size_t i = 0; i < pc->n; i++)
        if (pc->probes[i].state == PORT_PENDING)
            pc->probes[i].state = PORT_TAKEN;
    decide(pc);
}

/* Starts the connect of one port; a port that cannot be tried counts as free. */
static void probe_start(uv_loop_t *loop, struct port_probe *probe)
{
    struct sockaddr_in addr;

    probe->state = PORT_FREE;
    if (probe->port == 0 || probe->port > 65535 ||
        uv_ip4_addr("127.0.0.1", (int)probe->port, &addr) < 0)
        return;
    if (uv_tcp_init(loop, &probe->tcp) < 0)
        return;
    probe->tcp.data = probe->pc;
    probe->tcp_open = true;
    probe->pc->handles_open++;
    probe->connect.data = probe;
    if (uv_tcp_connect(&probe->connect, &probe->tcp, (const struct sockaddr *)&addr, on_connect) ==
        0)
        probe->state = PORT_PENDING;
}

struct portcheck *portcheck_start(uv_loop_t *loop, const unsigned *ports, size_t n,
                                  uint64_t timeout_ms, portcheck_fn done, void *data)
{
    struct portcheck *pc = xcalloc(1, sizeof(*pc));
    bool pending = false;

    pc->done = done;
    pc->data = data;
    pc->n = n;
    pc->probes = xcalloc(n ? n : 1, sizeof(*pc->probes));
    uv_timer_init(loop, &pc->timer);
    pc->timer.data = pc;
    pc->handles_open = 1;
    for (size_t i = 0; i < n; i++) {
        pc->probes[i].pc = pc;
        pc->probes[i].port = ports[i];
        probe_start(loop, &pc->probes[i]);
        pending = pending || pc->probes[i].state == PORT_PENDING;
    }
    /* With no connect under way, the answer is known now but given on the next pass. */
    uv_timer_start(&pc->timer, on_timer, pending ? timeout_ms : 0, 0);
    return pc;
}

void portcheck_cancel(struct portcheck *pc)
{
    if (!pc || pc->finished)
        return;
    portcheck_close(pc);
}
