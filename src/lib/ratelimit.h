/* Token buckets by name (a key's name, a client address), bounded in number: the rate
 * limits and the throttle on failed authentications. A bucket holds up to burst tokens
 * and gains rate of them per second; a request takes one. The table holds at most max
 * buckets: a new name past it replaces the bucket used least recently (a full bucket
 * first, since dropping it loses nothing), so a client cycling names cannot grow memory.
 * Pure: the caller gives the time (ms, monotonic). */
#ifndef NANNY_RATELIMIT_H
#define NANNY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* rate: tokens per second (> 0); burst: the bucket's size (>= 1); max: buckets kept. */
struct ratelimit *ratelimit_new(double rate, double burst, size_t max);
void ratelimit_free(struct ratelimit *rl);

/* Takes a token from name's bucket at now_ms (a new name starts full): returns 0 when
 * there was one, else the ms until there will be one (at least 1; nothing taken). */
uint64_t ratelimit_take(struct ratelimit *rl, const char *name, uint64_t now_ms);

/* The ms until name's bucket has a token (0: it has one now); takes nothing and adds no
 * bucket for a name it does not know. */
uint64_t ratelimit_wait(struct ratelimit *rl, const char *name, uint64_t now_ms);

/* How many buckets the table holds. */
size_t ratelimit_count(const struct ratelimit *rl);

#endif
