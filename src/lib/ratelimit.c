/* Token buckets by name: a strmap finds a name's bucket, and an intrusive doubly linked
 * list keeps the buckets in order of use (head: the latest), so that a take and an
 * eviction are O(1).
 *
 * Eviction: a new name past max drops one bucket among the EVICT_SCAN least recently
 * used: the first of them that is full at that time (dropping it loses nothing, since a
 * new bucket starts full), else the least recently used one. The scan is bounded, so a
 * take stays O(1), and it looks only at the stale end, so a recently drained bucket
 * always outlives stale ones. */
#include <string.h>

#include "lib/alloc.h"
#include "lib/ratelimit.h"
#include "lib/strmap.h"

/* How many of the least recently used buckets an eviction looks at for a full one. */
#define EVICT_SCAN 8

/* Tolerance on a token count, so that floating-point rounding never turns the exact
 * wait into one ms more (after waiting the ms take() returned, a token is there). */
#define TOKEN_EPSILON 1e-9

struct bucket {
    double tokens;
    uint64_t last_ms; /* when tokens was last brought up to date */
    struct bucket *prev, *next;
    char name[]; /* the strmap holds its own copy; this one is for the removal */
};

struct ratelimit {
    double rate; /* tokens per ms */
    double burst;
    size_t max;
    struct strmap *buckets;
    struct bucket *head, *tail; /* most and least recently used */
};

struct ratelimit *ratelimit_new(double rate, double burst, size_t max)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));

    rl->rate = rate / 1000.0;
    rl->burst = burst;
    rl->max = max ? max : 1;
    rl->buckets = strmap_new();
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    strmap_free(rl->buckets, free);
    free(rl);
}

static void list_unlink(struct ratelimit *rl, struct bucket *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        rl->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        rl->tail = b->prev;
    b->prev = b->next = NULL;
}

static void list_push_head(struct ratelimit *rl, struct bucket *b)
{
    b->prev = NULL;
    b->next = rl->head;
    if (rl->head)
        rl->head->prev = b;
    rl->head = b;
    if (!rl->tail)
        rl->tail = b;
}

/* The tokens b holds at now_ms, without changing it. Time going backwards (a caller's
 * clock read before another's) adds nothing. */
static double bucket_tokens(const struct ratelimit *rl, const struct bucket *b, uint64_t now_ms)
{
    double tokens = b->tokens;

    if (now_ms > b->last_ms)
        tokens += (double)(now_ms - b->last_ms) * rl->rate;
    return tokens < rl->burst ? tokens : rl->burst;
}

/* The ms until a bucket holding tokens has one (0: it has one now). */
static uint64_t wait_ms(const struct ratelimit *rl, double tokens)
{
    double ms;
    uint64_t whole;

    if (tokens >= 1.0 - TOKEN_EPSILON)
        return 0;
    ms = (1.0 - tokens) / rl->rate - TOKEN_EPSILON;
    if (ms > 1e15) /* a rate so small that the wait is forever, as near as matters */
        return UINT64_C(1000000000000000);
    whole = (uint64_t)ms; /* ceil, at least 1 */
    if ((double)whole < ms)
        whole++;
    return whole ? whole : 1;
}

static void bucket_drop(struct ratelimit *rl, struct bucket *b)
{
    list_unlink(rl, b);
    strmap_remove(rl->buckets, b->name);
    free(b);
}

/* Makes room for one more bucket (see the top of the file). */
static void evict_one(struct ratelimit *rl, uint64_t now_ms)
{
    struct bucket *b = rl->tail;

    for (int i = 0; b && i < EVICT_SCAN; i++, b = b->prev) {
        if (bucket_tokens(rl, b, now_ms) >= rl->burst - TOKEN_EPSILON) {
            bucket_drop(rl, b);
            return;
        }
    }
    bucket_drop(rl, rl->tail);
}

uint64_t ratelimit_take(struct ratelimit *rl, const char *name, uint64_t now_ms)
{
    struct bucket *b = strmap_get(rl->buckets, name);
    uint64_t wait;

    if (b) {
        b->tokens = bucket_tokens(rl, b, now_ms);
        if (now_ms > b->last_ms)
            b->last_ms = now_ms;
        list_unlink(rl, b);
    } else {
        size_t len = strlen(name);

        if (strmap_count(rl->buckets) >= rl->max)
            evict_one(rl, now_ms);
        b = xcalloc(1, sizeof(*b) + len + 1);
        memcpy(b->name, name, len + 1);
        b->tokens = rl->burst;
        b->last_ms = now_ms;
        strmap_put(rl->buckets, b->name, b);
    }
    list_push_head(rl, b);

    wait = wait_ms(rl, b->tokens);
    if (wait == 0)
        b->tokens = b->tokens > 1.0 ? b->tokens - 1.0 : 0.0;
    return wait;
}

uint64_t ratelimit_wait(struct ratelimit *rl, const char *name, uint64_t now_ms)
{
    const struct bucket *b = strmap_get(rl->buckets, name);

    return b ? wait_ms(rl, bucket_tokens(rl, b, now_ms)) : 0;
}

size_t ratelimit_count(const struct ratelimit *rl)
{
    return strmap_count(rl->buckets);
}
