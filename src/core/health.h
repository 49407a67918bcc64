/* Health probes: GET http://127.0.0.1:PORT/PATH for one service, on the loop, every
 * interval, or quickly while the service is starting (every 10 ms for its first 2 s, 2 ms
 * while its port still refuses connections, then gaps growing to 100 ms), so that its
 * readiness is seen within milliseconds and never
 * more than about 100 ms late. It reports every result; deciding what a result means is
 * the lifecycle's job. */
#ifndef NANNY_HEALTH_H
#define NANNY_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/fetch.h"

#define HEALTH_FAST_GAP_MS    10   /* while starting: a probe every 10 ms... */
#define HEALTH_REFUSED_GAP_MS 2    /* ...2 ms after one its port refused (a cheap refusal) */
#define HEALTH_FAST_BURST_MS  2000 /* ...for the first 2 s, then gaps growing... */
#define HEALTH_FAST_GROWTH    1.5  /* ...by this factor... */
#define HEALTH_FAST_MAX_MS    100  /* ...up to 100 ms (or the interval, if shorter) */

/* One probe's outcome. */
struct health_check {
    bool ok;          /* answered 2xx or 3xx in time */
    long status_code; /* 0 when no answer came */
    uint64_t latency_ms;
    const char *error; /* why it failed, or NULL; valid during the callback */
};

typedef void (*health_fn)(void *data, const struct health_check *check);

struct health_probe;

/* Probes url every interval_ms with timeout_ms; fast while starting (see above). The first
 * probe is made at once. */
struct health_probe *health_probe_new(uv_loop_t *loop, struct fetcher *fetcher, const char *url,
                                      uint64_t interval_ms, uint64_t timeout_ms, bool fast,
                                      health_fn done, void *data);

/* Switches between the fast cadence (starting) and the interval (running). */
void health_probe_set_fast(struct health_probe *p, bool fast);

/* Stops probing (a probe in flight is cancelled) and frees p once the loop has let go. */
void health_probe_free(struct health_probe *p);

#endif
