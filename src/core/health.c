/* Health probes on the loop: one timer and at most one transfer per service. */
#include <stdio.h>
#include <string.h>

#include "core/health.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct health_probe {
    uv_loop_t *loop;
    struct fetcher *fetcher;
    uv_timer_t timer;
    char *url;
    uint64_t interval_ms;
    uint64_t timeout_ms;
    uint64_t next_fast_ms; /* the next delay in the fast cadence, past the burst */
    uint64_t fast_since;   /* loop time the fast cadence began */
    bool fast;
    struct fetch *in_flight;
    health_fn done;
    void *data;
};

static void probe_send(struct health_probe *p);

/* The delay before the next probe: 10 ms during the burst, then growing to 100 ms while
 * fast; the interval otherwise. */
static uint64_t probe_next_delay(struct health_probe *p)
{
    uint64_t delay, cap = p->interval_ms < HEALTH_FAST_MAX_MS ? p->interval_ms : HEALTH_FAST_MAX_MS;

    if (!p->fast)
        return p->interval_ms;
    if (uv_now(p->loop) - p->fast_since < HEALTH_FAST_BURST_MS)
        return HEALTH_FAST_GAP_MS < cap ? HEALTH_FAST_GAP_MS : cap;
    delay = p->next_fast_ms;
    p->next_fast_ms = (uint64_t)((double)p->next_fast_ms * HEALTH_FAST_GROWTH);
    if (p->next_fast_ms > cap)
        p->next_fast_ms = cap;
    return delay < cap ? delay : cap;
}

static void on_timer(uv_timer_t *t)
{
    probe_send(t->data);
}

static void on_fetched(void *data, const struct fetch_result *res)
{
    struct health_probe *p = data;
    struct health_check check = {
        .status_code = res->status,
        .latency_ms = res->latency_ms,
    };
    char why[160];
    uint64_t delay;

    p->in_flight = NULL;
    if (res->curl_code != 0) {
        check.error = res->error;
    } else if (res->status >= 200 && res->status < 400) {
        check.ok = true;
    } else {
        snprintf(why, sizeof(why), "answered HTTP %ld", res->status);
        check.error = why;
    }
    delay = probe_next_delay(p);
    /* Nothing listens yet (a refusal costs the service nothing): look again sooner. */
    if (res->curl_code == 7 /* CURLE_COULDNT_CONNECT */ && p->fast &&
        uv_now(p->loop) - p->fast_since < HEALTH_FAST_BURST_MS && delay > HEALTH_REFUSED_GAP_MS)
        delay = HEALTH_REFUSED_GAP_MS;
    uv_timer_start(&p->timer, on_timer, delay, 0);
    /* Last: the callback may free p. */
    p->done(p->data, &check);
}

/* Sends one probe, unless one is still out (a timeout longer than the cadence). */
static void probe_send(struct health_probe *p)
{
    if (p->in_flight)
        return;
    if (fetcher_get(p->fetcher, p->url, NULL, p->timeout_ms, on_fetched, p, &p->in_flight) < 0) {
        struct health_check check = {.error = "cannot start the health check"};
        uv_timer_start(&p->timer, on_timer, probe_next_delay(p), 0);
        p->done(p->data, &check);
    }
}

struct health_probe *health_probe_new(uv_loop_t *loop, struct fetcher *fetcher, const char *url,
                                      uint64_t interval_ms, uint64_t timeout_ms, bool fast,
                                      health_fn done, void *data)
{
    struct health_probe *p = xcalloc(1, sizeof(*p));

    p->loop = loop;
    p->fetcher = fetcher;
    p->url = xstrdup(url);
    p->interval_ms = interval_ms ? interval_ms : 1;
    p->timeout_ms = timeout_ms;
    p->fast = fast;
    p->fast_since = uv_now(loop);
    p->next_fast_ms = HEALTH_FAST_GAP_MS;
    p->done = done;
    p->data = data;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_timer, 0, 0);
    return p;
}

void health_probe_set_fast(struct health_probe *p, bool fast)
{
    if (p->fast == fast)
        return;
    p->fast = fast;
    p->fast_since = uv_now(p->loop);
    p->next_fast_ms = HEALTH_FAST_GAP_MS;
    if (!p->in_flight)
        uv_timer_start(&p->timer, on_timer, probe_next_delay(p), 0);
}

static void on_closed(uv_handle_t *h)
{
    struct health_probe *p = h->data;

    free(p->url);
    free(p);
}

void health_probe_free(struct health_probe *p)
{
    if (!p)
        return;
    fetch_cancel(p->in_flight);
    p->in_flight = NULL;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_closed);
}
