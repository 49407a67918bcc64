/* Starts on demand, the GPU queue and swaps: see demand.h.
 *
 * One timer does the work: each tick answers the holds whose time is up, lets go of the
 * starts nobody waits for, tries the waiting starts in the queue's order, and sleeps until
 * the next deadline. Events (a service stopped, the GPU changed) and a swapped holder's
 * last request ending wake it at once; it never runs inside a caller's call. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/demand.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/clock.h"

struct want;

/* What one service's proxied requests amount to, and what a swap asks of it. */
struct usage {
    struct demand *d;
    char name[MANIFEST_NAME_MAX + 1];
    unsigned in_flight;
    uv_timer_t idle;   /* its idle_timeout, while none is in flight */
    bool idle_once_up; /* a start on demand that every client left: idle from when it runs */
    bool swapping;     /* a swap waits for it to stop... */
    bool committed;    /* ...and its stop is asked for: no new request goes to it */
    uint64_t swap_since;
    char swap_for[MANIFEST_NAME_MAX + 1]; /* ...for this service */
    struct usage *next;
};

enum want_phase {
    WANT_NEW,      /* not tried yet */
    WANT_QUEUED,   /* in the GPU queue (or waits for its own swap out to end) */
    WANT_SWAPPING, /* waits for its holders' requests in flight to end */
    WANT_STARTING, /* its start is under way */
    WANT_OVER,     /* answered: let go of at the next tick */
};

/* A start that requests asked for, and the requests held for it. */
struct want {
    struct demand *d;
    char name[MANIFEST_NAME_MAX + 1];
    enum want_phase phase;
    struct supervisor_op *op;
    bool in_start; /* supervisor_start() is on the stack */
    bool forced;   /* its start is a swap's: it stops the holders */
    struct demand_hold *head, *tail;
    unsigned n_holds;
    uint64_t seq;     /* first come... */
    int priority;     /* ...after the highest priority */
    uint64_t since;   /* loop time it began waiting for the GPU */
    int64_t since_ms; /* the same, Unix time (0: it has not) */
    uint64_t wake_at; /* loop time to try again (0: on events only) */
    json_t *holders;  /* WANT_QUEUED and WANT_SWAPPING: who keeps it out */
    struct want *next;
};

struct demand_hold {
    struct want *w;
    demand_fn done;
    void *data;
    uint64_t deadline; /* loop time */
    struct demand_hold *prev, *next;
};

struct demand {
    uv_loop_t *loop;
    struct registry *reg;
    struct supervisor *sup;
    const struct config *config;
    struct events *hub;
    struct events_sub *sub;
    uv_timer_t tick;
    struct want *wants;
    struct usage *usages;
    uint64_t seq;
    bool kicked; /* a tick is asked for */
};

static void on_tick(uv_timer_t *t);

/* Runs a tick as soon as the loop comes round. */
static void kick(struct demand *d)
{
    d->kicked = true;
    uv_timer_start(&d->tick, on_tick, 0, 0);
}

static bool runs(const struct service_status *st)
{
    return st->state == STATE_RUNNING || st->state == STATE_UNHEALTHY;
}

/* --- requests in flight and idle stops ------------------------------------------------ */

static struct usage *usage_find(const struct demand *d, const char *name)
{
    for (struct usage *u = d->usages; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return u;
    return NULL;
}

static struct usage *usage_of(struct demand *d, const char *name)
{
    struct usage *u = usage_find(d, name);

    if (u)
        return u;
    u = xcalloc(1, sizeof(*u));
    u->d = d;
    snprintf(u->name, sizeof(u->name), "%s", name);
    uv_timer_init(d->loop, &u->idle);
    uv_unref((uv_handle_t *)&u->idle); /* a stopping daemon does not wait for it */
    u->idle.data = u;
    u->next = d->usages;
    d->usages = u;
    return u;
}

static void idle_stop_done(void *data, struct service *svc, const struct supervisor_result *res)
{
}

static void on_idle(uv_timer_t *t);

/* The idle clock of a service with nothing in flight starts (or starts over): stopped
 * after its idle_timeout, if it has one. */
static void idle_arm(struct demand *d, struct usage *u, struct service *svc)
{
    uint64_t timeout = svc->manifest->idle_timeout_ms;

    if (!timeout || u->in_flight)
        return;
    uv_timer_start(&u->idle, on_idle, timeout, 0);
    supervisor_set_idle_stop(d->sup, svc, unix_ms() + (int64_t)timeout);
}

/* idle_timeout went by with nothing proxied: the service is stopped. */
static void on_idle(uv_timer_t *t)
{
    struct usage *u = t->data;
    struct demand *d = u->d;
    struct service *svc = registry_find(d->reg, u->name);

    if (!svc || u->in_flight)
        return;
    supervisor_set_idle_stop(d->sup, svc, 0);
    if (!runs(supervisor_status(d->sup, svc)))
        return;
    log_info("%s: no proxied request for its idle_timeout (%" PRIu64 " ms): stopping it", svc->name,
             svc->manifest->idle_timeout_ms);
    supervisor_stop(d->sup, svc, idle_stop_done, NULL);
}

/* A service's state changed. Stopped, it loses its idle clock (a later start by the API
 * begins none); up after a start on demand that every client left, it begins it now. */
static void idle_follow(struct demand *d, struct usage *u)
{
    struct service *svc = registry_find(d->reg, u->name);
    const struct service_status *st;

    if (!svc)
        return;
    st = supervisor_status(d->sup, svc);
    if (st->state == STATE_STOPPED || st->state == STATE_FAILED) {
        u->idle_once_up = false;
        uv_timer_stop(&u->idle);
        supervisor_set_idle_stop(d->sup, svc, 0);
    } else if (runs(st) && u->idle_once_up) {
        u->idle_once_up = false;
        idle_arm(d, u, svc);
    }
}

void demand_begin(struct demand *d, const char *name)
{
    struct usage *u = usage_of(d, name);
    struct service *svc;

    if (u->in_flight++ == 0) {
        uv_timer_stop(&u->idle);
        if ((svc = registry_find(d->reg, name)))
            supervisor_set_idle_stop(d->sup, svc, 0);
    }
}

void demand_end(struct demand *d, const char *name)
{
    struct usage *u = usage_of(d, name);
    struct service *svc;

    if (u->in_flight == 0 || --u->in_flight > 0)
        return;
    if (u->swapping)
        kick(d); /* the swap waited for this one */
    if ((svc = registry_find(d->reg, name)))
        idle_arm(d, u, svc);
}

unsigned demand_in_flight(const struct demand *d, const char *name)
{
    const struct usage *u = usage_find(d, name);

    return u ? u->in_flight : 0;
}

/* --- a swap's terms: the holder's manifest, else the config ---------------------------- */

static uint64_t term_ms(int64_t manifest_ms, uint64_t config_ms)
{
    return manifest_ms >= 0 ? (uint64_t)manifest_ms : config_ms;
}

static uint64_t swap_grace(const struct demand *d, const struct service *svc)
{
    return term_ms(svc->manifest->swap_grace_ms, d->config->swap_grace_ms);
}

static uint64_t swap_max_wait(const struct demand *d, const struct service *svc)
{
    return term_ms(svc->manifest->swap_max_wait_ms, d->config->swap_max_wait_ms);
}

static uint64_t min_resident(const struct demand *d, const struct service *svc)
{
    return term_ms(svc->manifest->min_resident_ms, d->config->min_resident_ms);
}

static bool swap_drain(const struct demand *d, const struct service *svc)
{
    return svc->manifest->swap_drain >= 0 ? svc->manifest->swap_drain : d->config->swap_drain;
}

bool demand_admits(struct demand *d, const struct service *svc)
{
    const struct usage *u = usage_find(d, svc->name);

    if (!runs(supervisor_status(d->sup, svc)))
        return false;
    if (!u || !u->swapping)
        return true;
    return !u->committed && !swap_drain(d, svc) &&
           uv_now(d->loop) - u->swap_since < swap_max_wait(d, svc);
}

/* The longest swap_grace of any service: how much longer a request may be held while its
 * start waits for the GPU. */
static uint64_t longest_grace(const struct demand *d)
{
    uint64_t grace = d->config->swap_grace_ms;

    for (size_t i = 0, n = registry_count(d->reg); i < n; i++)
        if (swap_grace(d, registry_at(d->reg, i)) > grace)
            grace = swap_grace(d, registry_at(d->reg, i));
    return grace;
}

uint64_t demand_hold_max_ms(const struct demand *d, const struct service *svc)
{
    return svc->manifest->health_start_period_ms + longest_grace(d);
}

/* --- holds ------------------------------------------------------------------------------ */

static void hold_unlink(struct demand_hold *h)
{
    struct want *w = h->w;

    if (h->prev)
        h->prev->next = h->next;
    else
        w->head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        w->tail = h->prev;
    w->n_holds--;
}

/* Answers h and lets go of it. */
static void hold_answer(struct demand_hold *h, struct service *svc, const struct demand_answer *a)
{
    hold_unlink(h);
    h->done(h->data, svc, a);
    free(h);
}

/* Answers every hold of w alike. */
static void want_answer_all(struct want *w, struct service *svc, const struct demand_answer *a)
{
    while (w->head)
        hold_answer(w->head, svc, a);
}

static bool waits_for_gpu(const struct want *w)
{
    return w->phase == WANT_QUEUED || w->phase == WANT_SWAPPING;
}

/* Requests held for the GPU now, in every start that waits for it. */
static unsigned held_for_gpu(const struct demand *d)
{
    unsigned n = 0;

    for (const struct want *w = d->wants; w; w = w->next)
        if (waits_for_gpu(w))
            n += w->n_holds;
    return n;
}

static struct want *want_find(struct demand *d, const char *name)
{
    for (struct want *w = d->wants; w; w = w->next)
        if (w->phase != WANT_OVER && strcmp(w->name, name) == 0)
            return w;
    return NULL;
}

unsigned demand_held(const struct demand *d, const char *name)
{
    unsigned n = 0;

    for (const struct want *w = d->wants; w; w = w->next)
        if (strcmp(w->name, name) == 0)
            n += w->n_holds;
    return n;
}

struct demand_hold *demand_hold(struct demand *d, struct service *svc, demand_fn done, void *data)
{
    struct want *w = want_find(d, svc->name);
    struct demand_hold *h = xcalloc(1, sizeof(*h));
    uint64_t now = uv_now(d->loop);

    if (!w) {
        w = xcalloc(1, sizeof(*w));
        w->d = d;
        snprintf(w->name, sizeof(w->name), "%s", svc->name);
        w->seq = ++d->seq;
        w->priority = svc->manifest->priority;
        w->next = d->wants;
        d->wants = w;
    }
    h->w = w;
    h->done = done;
    h->data = data;
    h->deadline = now + svc->manifest->health_start_period_ms;
    if (waits_for_gpu(w))
        h->deadline += longest_grace(d);
    h->prev = w->tail;
    if (w->tail)
        w->tail->next = h;
    else
        w->head = h;
    w->tail = h;
    w->n_holds++;
    kick(d);
    return h;
}

void demand_hold_cancel(struct demand_hold *h)
{
    struct want *w = h->w;

    hold_unlink(h);
    free(h);
    if (!w->head && w->op && !w->in_start) {
        /* Nobody waits for the start any more: it goes on, unanswered, and its idle clock
         * runs once it is up (nothing may ever come to end a request and start it). */
        struct usage *u = usage_of(w->d, w->name);

        supervisor_op_cancel(w->op);
        w->op = NULL;
        w->phase = WANT_OVER;
        u->idle_once_up = true;
        idle_follow(w->d, u); /* up already */
    }
    kick(w->d);
}

/* --- starts and swaps ------------------------------------------------------------------- */

/* Lets go of the swap marks that w put on its holders. */
static void want_unmark(struct want *w)
{
    for (struct usage *u = w->d->usages; u; u = u->next)
        if (u->swapping && strcmp(u->swap_for, w->name) == 0)
            u->swapping = u->committed = false;
}

/* The start is answered: running, every hold goes on to it; else each is told why. */
static void on_want_started(void *data, struct service *svc, const struct supervisor_result *res)
{
    struct want *w = data;
    struct demand_answer a = {DEMAND_READY, res, res->message};

    w->op = NULL;
    if (res->outcome == SUPERVISOR_CONFLICT && w->head) {
        /* Another start took the GPU between the look and the start (one asked by the
         * API, or one of the queue's in the same tick): it waits again. */
        w->phase = WANT_NEW;
        kick(w->d);
        return;
    }
    w->phase = WANT_OVER;
    want_unmark(w);
    if (res->outcome != SUPERVISOR_OK && res->outcome != SUPERVISOR_ALREADY)
        a.outcome = DEMAND_REFUSED;
    else /* its idle clock runs until a request begins (if every client left, none will) */
        idle_arm(w->d, usage_of(w->d, w->name), svc);
    want_answer_all(w, svc, &a);
    kick(w->d);
}

static void want_start(struct want *w, struct service *svc, bool force)
{
    struct supervisor_op *op;

    w->phase = WANT_STARTING;
    w->forced = force;
    w->in_start = true;
    op = supervisor_start(w->d->sup, svc, force, true, false, on_want_started, w);
    w->in_start = false;
    if (w->phase == WANT_STARTING)
        w->op = op; /* else answered before supervisor_start() returned */
}

/* True when a start of svc may swap out holders rather than queue: the config says
 * preempt, or its priority is above every holder's. */
static bool may_swap(const struct demand *d, const struct service *svc, const json_t *holders)
{
    size_t i;
    json_t *name;

    if (d->config->gpu_conflict == GPU_CONFLICT_PREEMPT)
        return true;
    json_array_foreach(holders, i, name)
    {
        const struct service *h = registry_find(d->reg, json_string_value(name));

        if (h && h->manifest->priority >= svc->manifest->priority)
            return false;
    }
    return true;
}

/* Loop time when every holder has run its min_resident (0: they have). */
static uint64_t resident_until(struct demand *d, const json_t *holders)
{
    int64_t now_ms = unix_ms(), latest = 0;
    size_t i;
    json_t *name;

    json_array_foreach(holders, i, name)
    {
        struct service *h = registry_find(d->reg, json_string_value(name));
        const struct service_status *st;
        int64_t until;

        if (!h)
            continue;
        st = supervisor_status(d->sup, h);
        until = st->started_at_ms + (int64_t)min_resident(d, h);
        if (st->started_at_ms && until > now_ms && until > latest)
            latest = until;
    }
    return latest ? uv_now(d->loop) + (uint64_t)(latest - now_ms) : 0;
}

/* The swap goes on: each holder marked, the start made once none has a request in flight
 * or swap_grace went by for those that have. */
static void want_swap(struct want *w, struct service *svc)
{
    struct demand *d = w->d;
    uint64_t now = uv_now(d->loop), wake = 0;
    size_t i;
    json_t *name;

    w->phase = WANT_SWAPPING;
    /* Holders that no longer keep it out (the GPU changed) are let be. */
    for (struct usage *u = d->usages; u; u = u->next) {
        bool listed = false;

        json_array_foreach(w->holders, i, name)
        {
            listed = listed || strcmp(json_string_value(name), u->name) == 0;
        }
        if (u->swapping && strcmp(u->swap_for, w->name) == 0 && !listed)
            u->swapping = u->committed = false;
    }
    json_array_foreach(w->holders, i, name)
    {
        struct service *h = registry_find(d->reg, json_string_value(name));
        struct usage *u = usage_of(d, json_string_value(name));
        uint64_t until;

        if (!u->swapping) {
            u->swapping = true;
            u->swap_since = now;
            snprintf(u->swap_for, sizeof(u->swap_for), "%s", w->name);
            if (u->in_flight)
                log_info("%s: to be swapped out for %s once its %u proxied request%s in flight "
                         "end%s",
                         u->name, w->name, u->in_flight, u->in_flight == 1 ? "" : "s",
                         u->in_flight == 1 ? "s" : "");
            else
                log_info("%s: to be swapped out for %s (no proxied request in flight)", u->name,
                         w->name);
        }
        if (!u->in_flight)
            continue;
        until = u->swap_since + swap_grace(d, h);
        if (until > now && (!wake || until < wake))
            wake = until;
    }
    if (wake) {
        w->wake_at = wake;
        return;
    }
    json_array_foreach(w->holders, i, name)
    {
        const struct usage *u = usage_find(d, json_string_value(name));

        if (u && u->in_flight)
            log_warning("%s: swap_grace went by: swapped out for %s with %u proxied request%s "
                        "in flight, which are cut",
                        u->name, w->name, u->in_flight, u->in_flight == 1 ? "" : "s");
    }
    json_array_foreach(w->holders, i, name)
    {
        struct usage *u = usage_of(d, json_string_value(name));

        if (u->swapping && strcmp(u->swap_for, w->name) == 0)
            u->committed = true;
    }
    log_info("%s: swapping in (stopping %s)", w->name,
             json_string_value(json_array_get(w->holders, 0)) ?: "the holders");
    want_start(w, svc, true);
}

/* Begins waiting for the GPU: the holds may now wait swap_grace longer. */
static void want_wait_gpu(struct want *w, enum want_phase phase, json_t *holders)
{
    struct demand *d = w->d;

    if (!w->since_ms) {
        uint64_t grace = longest_grace(d);

        w->since = uv_now(d->loop);
        w->since_ms = unix_ms();
        for (struct demand_hold *h = w->head; h; h = h->next)
            h->deadline += grace;
    }
    w->phase = phase;
    json_decref(w->holders);
    w->holders = holders;
}

/* True when every holder runs: a holder still starting (or holding a reservation for its
 * start) is not swapped out, else two starts would take the GPU from each other in turn;
 * the start waits for its state to change. */
static bool holders_run(struct demand *d, const json_t *holders)
{
    size_t i;
    json_t *name;

    json_array_foreach(holders, i, name)
    {
        struct service *h = registry_find(d->reg, json_string_value(name));

        if (h && !runs(supervisor_status(d->sup, h)))
            return false;
    }
    return true;
}

/* Tries w's start as things are now. busy: a start of a GPU service is under way whose
 * place the GPU rule does not see yet (its intent being written), so that no other GPU
 * start is tried this tick; set when w begins one. A start that fits now goes, even past
 * one before it in the queue that does not fit yet (it takes nothing from it). */
static void want_try(struct want *w, bool *busy)
{
    struct demand *d = w->d;
    struct service *svc = registry_find(d->reg, w->name);
    const struct usage *u = usage_find(d, w->name);
    const struct service_status *st;
    json_t *holders;
    uint64_t resident;

    w->wake_at = 0;
    if (!svc) {
        struct demand_answer a = {DEMAND_GONE, NULL, "the service was removed"};

        w->phase = WANT_OVER;
        want_answer_all(w, NULL, &a);
        return;
    }
    if (u && u->swapping) {
        /* It is being swapped out: started again once it is stopped. */
        want_wait_gpu(w, WANT_QUEUED, json_pack("[s]", u->swap_for));
        return;
    }
    st = supervisor_status(d->sup, svc);
    if (!svc->manifest->gpu_required || runs(st) || st->state == STATE_STARTING) {
        want_start(w, svc, false);
        return;
    }
    if (*busy) {
        want_wait_gpu(w, WANT_QUEUED, w->holders ? json_incref(w->holders) : json_array());
        return;
    }
    switch (supervisor_gpu_room(d->sup, svc, &holders)) {
    case SUPERVISOR_ROOM:
        *busy = true;
        /* fall through */
    case SUPERVISOR_NO_ROOM_EVER:
        want_start(w, svc, false); /* answered as the API answers it (422) */
        return;
    case SUPERVISOR_NO_ROOM:
        break;
    }
    if (!may_swap(d, svc, holders) || !holders_run(d, holders)) {
        want_wait_gpu(w, WANT_QUEUED, holders);
        return;
    }
    resident = resident_until(d, holders);
    want_wait_gpu(w, resident ? WANT_QUEUED : WANT_SWAPPING, holders);
    if (resident) {
        w->wake_at = resident; /* they stay min_resident: tried again then */
        return;
    }
    want_swap(w, svc);
    if (w->phase == WANT_STARTING)
        *busy = true;
}

/* The starts in the order they are served: the highest priority, then first come. */
static int want_order(const void *a, const void *b)
{
    const struct want *x = *(struct want *const *)a, *y = *(struct want *const *)b;

    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static struct want **wants_sorted(const struct demand *d, size_t *ret_n)
{
    size_t n = 0;
    struct want **v;

    for (struct want *w = d->wants; w; w = w->next)
        n++;
    v = xcalloc(n + 1, sizeof(*v));
    n = 0;
    for (struct want *w = d->wants; w; w = w->next)
        v[n++] = w;
    qsort(v, n, sizeof(*v), want_order);
    *ret_n = n;
    return v;
}

/* Answers w's holds whose time is up. */
static void want_expire(struct want *w, uint64_t now)
{
    struct service *svc = registry_find(w->d->reg, w->name);
    char message[256];

    for (struct demand_hold *h = w->head, *next; h; h = next) {
        next = h->next;
        if (h->deadline > now)
            continue;
        snprintf(message, sizeof(message),
                 waits_for_gpu(w) ? "%s waits for the GPU (held by %s): try again shortly"
                                  : "%s is starting and not healthy yet (its start_period went "
                                    "by): try again shortly",
                 w->name, json_string_value(json_array_get(w->holders, 0)) ?: "another service");
        hold_answer(h, svc, &(struct demand_answer){DEMAND_TIMED_OUT, NULL, message});
    }
}

/* What the status shows of w. */
static void want_publish(struct want *w)
{
    struct service *svc = registry_find(w->d->reg, w->name);
    struct service_wait wait = {w->since_ms, w->n_holds, w->priority, w->phase == WANT_SWAPPING};

    if (svc)
        supervisor_set_waiting(w->d->sup, svc, waits_for_gpu(w) && w->head ? &wait : NULL);
}

static void want_free(struct want *w)
{
    json_decref(w->holders);
    free(w);
}

/* Lets go of the starts that are over, or that nobody waits for (not under way). */
static void wants_sweep(struct demand *d)
{
    for (struct want **at = &d->wants, *w; (w = *at);) {
        if (w->head || (w->phase == WANT_STARTING && (w->op || w->in_start))) {
            at = &w->next;
            continue;
        }
        *at = w->next;
        want_unmark(w);
        want_publish(w);
        want_free(w);
    }
}

/* True when a start of a GPU service is on its way that the GPU rule does not see yet (its
 * intent is being written): other GPU starts wait for its state to change. */
static bool gpu_start_pending(struct demand *d)
{
    for (struct want *w = d->wants; w; w = w->next) {
        struct service *svc = registry_find(d->reg, w->name);
        enum service_state state;

        if (w->phase != WANT_STARTING || !svc || !svc->manifest->gpu_required)
            continue;
        state = supervisor_status(d->sup, svc)->state;
        if (state == STATE_STOPPED || state == STATE_FAILED)
            return true;
    }
    return false;
}

/* A start under way whose service runs now: its holds go on at once, without waiting for
 * the start's answer (which waits for the state to be on disk). */
static void want_ready_early(struct want *w)
{
    struct service *svc = registry_find(w->d->reg, w->name);

    if (w->phase == WANT_STARTING && svc && supervisor_status(w->d->sup, svc)->is_healthy)
        want_answer_all(w, svc, &(struct demand_answer){DEMAND_READY, NULL, NULL});
}

/* Answers 429 to the requests beyond the queue's bound: the last served first (the lowest
 * priority's latest). */
static void queue_bound(struct demand *d, struct want **v, size_t n)
{
    char message[160];

    snprintf(message, sizeof(message),
             "the GPU queue is full (%u requests wait for the GPU): try again shortly",
             d->config->gpu_queue_max);
    for (size_t i = n; i-- > 0 && held_for_gpu(d) > d->config->gpu_queue_max;) {
        struct want *w = v[i];
        struct service *svc = registry_find(d->reg, w->name);

        while (waits_for_gpu(w) && w->tail && held_for_gpu(d) > d->config->gpu_queue_max)
            hold_answer(w->tail, svc, &(struct demand_answer){DEMAND_FULL, NULL, message});
    }
}

static void on_tick(uv_timer_t *t)
{
    struct demand *d = t->data;
    uint64_t now = uv_now(d->loop), wake = 0;
    bool busy;
    struct want **v;
    size_t n;

    d->kicked = false;
    /* A holder swapped out that no longer runs is no longer marked. */
    for (struct usage *u = d->usages; u; u = u->next) {
        struct service *svc = registry_find(d->reg, u->name);

        if (u->swapping && (!svc || !runs(supervisor_status(d->sup, svc))))
            u->swapping = u->committed = false;
    }
    wants_sweep(d);
    busy = gpu_start_pending(d);
    v = wants_sorted(d, &n);
    for (size_t i = 0; i < n; i++) {
        struct want *w = v[i];

        want_expire(w, now);
        want_ready_early(w);
        if (!w->head)
            continue;
        if (w->phase == WANT_NEW || waits_for_gpu(w))
            want_try(w, &busy);
        if (w->phase != WANT_SWAPPING && !(w->phase == WANT_STARTING && w->forced))
            want_unmark(w); /* a swap it no longer makes lets its holders be */
    }
    queue_bound(d, v, n);
    wants_sweep(d);
    for (struct want *w = d->wants; w; w = w->next) {
        want_publish(w);
        if (w->wake_at && (!wake || w->wake_at < wake))
            wake = w->wake_at;
        for (struct demand_hold *h = w->head; h; h = h->next)
            if (!wake || h->deadline < wake)
                wake = h->deadline;
    }
    free(v);
    if (d->kicked) /* asked for while it ran: once more */
        uv_timer_start(&d->tick, on_tick, 0, 0);
    else if (wake)
        uv_timer_start(&d->tick, on_tick, wake > now ? wake - now : 0, 0);
}

/* A service stopped, or the GPUs changed: waiting starts may go now. */
static void on_event(void *data, const struct event *ev)
{
    struct demand *d = data;
    struct usage *u;

    if (ev->kind == EVENT_STATE && ev->service && (u = usage_find(d, ev->service)))
        idle_follow(d, u);
    if ((ev->kind == EVENT_STATE || ev->kind == EVENT_GPU || ev->kind == EVENT_DISCOVERY) &&
        d->wants)
        kick(d);
}

json_t *demand_queue(const struct demand *d)
{
    json_t *queue = json_array();
    uint64_t now = uv_now(d->loop);
    struct want **v;
    size_t n;

    v = wants_sorted(d, &n);
    for (size_t i = 0; i < n; i++) {
        const struct want *w = v[i];

        if (!waits_for_gpu(w) || !w->head)
            continue;
        json_array_append_new(
            queue, json_pack("{s:s, s:i, s:o, s:I, s:I, s:b, s:O}", "service", w->name, "priority",
                             w->priority, "since", json_time_ms(w->since_ms), "age_ms",
                             (json_int_t)(now - w->since), "requests", (json_int_t)w->n_holds,
                             "swap", w->phase == WANT_SWAPPING, "holders", w->holders));
    }
    free(v);
    return queue;
}

struct demand *demand_new(uv_loop_t *loop, struct registry *reg, struct supervisor *sup,
                          const struct config *config, struct events *hub)
{
    struct demand *d = xcalloc(1, sizeof(*d));

    d->loop = loop;
    d->reg = reg;
    d->sup = sup;
    d->config = config;
    d->hub = hub;
    uv_timer_init(loop, &d->tick);
    uv_unref((uv_handle_t *)&d->tick);
    d->tick.data = d;
    d->sub = events_subscribe(hub, on_event, d);
    return d;
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void demand_free(struct demand *d)
{
    struct usage *u;
    struct want *w;

    if (!d)
        return;
    events_unsubscribe(d->hub, d->sub);
    while ((w = d->wants)) {
        d->wants = w->next;
        if (w->op)
            supervisor_op_cancel(w->op);
        while (w->head) {
            struct demand_hold *h = w->head;

            hold_unlink(h);
            free(h);
        }
        want_free(w);
    }
    while ((u = d->usages)) {
        d->usages = u->next;
        uv_close((uv_handle_t *)&u->idle, on_closed);
    }
    d->tick.data = d;
    uv_close((uv_handle_t *)&d->tick, on_closed);
}
