/* Unit tests for placement.c: boxes of one, two and eight GPUs, exclusive and shared
 * services, priorities, pinning, foreign use, and a property test over random boxes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/placement.h"

#define GIB    (UINT64_C(1) << 30)
#define BIT(d) (UINT64_C(1) << (d))

static struct placement_verdict decide(const struct placement_gpu *gpus, size_t n_gpus,
                                       const struct placement_holder *holders, size_t n,
                                       struct placement_need need)
{
    struct placement_verdict v;

    assert_int_equal(placement_decide(gpus, n_gpus, holders, n, &need, &v), 0);
    return v;
}

static void assert_placed(struct placement_verdict v, uint64_t devices)
{
    assert_int_equal(v.kind, PLACEMENT_PLACED);
    assert_int_equal(v.devices, devices);
    free(v.holders);
}

/* holders: the expected indexes, in stop order, ending with -1. */
static void assert_conflict(struct placement_verdict v, ...)
{
    va_list ap;
    size_t k = 0;
    int i;

    assert_int_equal(v.kind, PLACEMENT_CONFLICT);
    va_start(ap, v);
    while ((i = va_arg(ap, int)) >= 0) {
        assert_true(k < v.n_holders);
        assert_int_equal(v.holders[k++], (size_t)i);
    }
    va_end(ap);
    assert_int_equal(v.n_holders, k);
    free(v.holders);
}

/* The seed's box: one GPU of unknown size, gpu_required services (exclusive). */
static void test_one_gpu_of_unknown_size(void **state)
{
    struct placement_gpu box[1] = {{0}};
    struct placement_holder a = {.need = {.count = 1}, .devices = BIT(0)};

    assert_placed(decide(box, 1, NULL, 0, (struct placement_need){.count = 1}), BIT(0));
    assert_conflict(decide(box, 1, &a, 1, (struct placement_need){.count = 1}), 0, -1);
    /* A shared service cannot join an exclusive one, whatever the size. */
    assert_conflict(decide(box, 1, &a, 1, (struct placement_need){.count = 1, .memory = GIB}), 0,
                    -1);
    /* Shared ones share a GPU of unknown size. */
    a.need.memory = 40 * GIB;
    assert_placed(decide(box, 1, &a, 1, (struct placement_need){.count = 1, .memory = GIB}),
                  BIT(0));
    assert_int_equal(decide(box, 1, NULL, 0, (struct placement_need){.count = 2}).kind,
                     PLACEMENT_IMPOSSIBLE);
}

/* Two GPUs: two exclusive services side by side; a third conflicts with the lowest
 * priority, then the least recently used. */
static void test_two_gpus_exclusive(void **state)
{
    struct placement_gpu box[2] = {{24 * GIB, 0}, {24 * GIB, 0}};
    struct placement_holder h[2] = {
        {.need = {.count = 1}, .devices = BIT(0), .priority = 0, .last_used = 5},
        {.need = {.count = 1}, .devices = BIT(1), .priority = 0, .last_used = 3},
    };

    assert_placed(decide(box, 2, h, 1, (struct placement_need){.count = 1}), BIT(1));
    assert_conflict(decide(box, 2, h, 2, (struct placement_need){.count = 1}), 1, -1);
    h[1].priority = 9; /* now 0 is stopped first, though used later */
    assert_conflict(decide(box, 2, h, 2, (struct placement_need){.count = 1}), 0, -1);
    /* Pinned to GPU 1: only its holder is in the way. */
    assert_conflict(decide(box, 2, h, 2, (struct placement_need){.count = 1, .pinned = BIT(1)}), 1,
                    -1);
    /* Both GPUs: both holders go, in stop order. */
    assert_conflict(decide(box, 2, h, 2, (struct placement_need){.count = 2}), 0, 1, -1);
    assert_int_equal(
        decide(box, 2, h, 2, (struct placement_need){.count = 1, .pinned = BIT(5)}).kind,
        PLACEMENT_IMPOSSIBLE);
}

/* Memory: three 24 GiB services on one 80 GiB GPU; best fit fills the fuller GPU first. */
static void test_memory_packing(void **state)
{
    struct placement_gpu box[2] = {{80 * GIB, 0}, {80 * GIB, 0}};
    struct placement_need need = {.count = 1, .memory = 24 * GIB};
    struct placement_holder h[4];
    size_t n = 0;

    for (int i = 0; i < 3; i++) {
        struct placement_verdict v = decide(box, 2, h, n, need);
        assert_placed(v, BIT(0));
        h[n++] = (struct placement_holder){.need = need, .devices = BIT(0), .last_used = i};
    }
    /* 8 GiB left on GPU 0: the fourth goes to GPU 1. */
    assert_placed(decide(box, 2, h, n, need), BIT(1));
    /* A whole GPU: GPU 1 is empty. */
    assert_placed(decide(box, 2, h, n, (struct placement_need){.count = 1}), BIT(1));
    /* 8 GiB: fits on GPU 0, the fuller one. */
    assert_placed(decide(box, 2, h, n, (struct placement_need){.count = 1, .memory = 8 * GIB}),
                  BIT(0));
    assert_int_equal(
        decide(box, 2, h, n, (struct placement_need){.count = 1, .memory = 81 * GIB}).kind,
        PLACEMENT_IMPOSSIBLE);
}

/* Memory that foreign processes use counts. */
static void test_foreign_use(void **state)
{
    struct placement_gpu box[1] = {{80 * GIB, 70 * GIB}};

    assert_placed(decide(box, 1, NULL, 0, (struct placement_need){.count = 1, .memory = 10 * GIB}),
                  BIT(0));
    assert_int_equal(
        decide(box, 1, NULL, 0, (struct placement_need){.count = 1, .memory = 11 * GIB}).kind,
        PLACEMENT_IMPOSSIBLE);
}

/* The greedy pass takes the least recently used first; a stop that turned out not to be
 * needed is given back. */
static void test_only_needed_stops(void **state)
{
    struct placement_gpu box[1] = {{80 * GIB, 0}};
    struct placement_holder h[3] = {
        {.need = {.count = 1, .memory = 10 * GIB}, .devices = BIT(0), .last_used = 1},
        {.need = {.count = 1, .memory = 40 * GIB}, .devices = BIT(0), .last_used = 2},
        {.need = {.count = 1, .memory = 30 * GIB}, .devices = BIT(0), .priority = 5},
    };

    /* Taken: 0 (10 free, short), then 1 (50 free); 0 given back (40 free: enough). */
    assert_conflict(decide(box, 1, h, 3, (struct placement_need){.count = 1, .memory = 40 * GIB}),
                    1, -1);
    /* 60 GiB: 0 and 1 free only 50; the high-priority 2 goes too, and then 0 may stay
     * (1 and 2 free 70). */
    assert_conflict(decide(box, 1, h, 3, (struct placement_need){.count = 1, .memory = 60 * GIB}),
                    1, 2, -1);
}

static void test_bad_needs(void **state)
{
    struct placement_gpu box[1] = {{0}};
    struct placement_need none = {.count = 0};
    struct placement_verdict v;

    assert_int_equal(placement_decide(box, 1, NULL, 0, &none, &v), -EINVAL);
    none.count = 1;
    assert_int_equal(placement_decide(box, PLACEMENT_GPUS_MAX + 1, NULL, 0, &none, &v), -EINVAL);
    assert_int_equal(decide(box, 0, NULL, 0, none).kind, PLACEMENT_IMPOSSIBLE);
}

/* --- property test --------------------------------------------------------------------- */

/* No GPU over its memory (foreign use counted), no exclusive service beside another. */
static void assert_valid(const struct placement_gpu *gpus, size_t n_gpus,
                         const struct placement_holder *h, size_t n)
{
    for (size_t d = 0; d < n_gpus; d++) {
        uint64_t shared = 0;
        unsigned on = 0, exclusive = 0;
        for (size_t i = 0; i < n; i++) {
            if (!(h[i].devices & BIT(d)))
                continue;
            on++;
            if (h[i].need.memory == 0)
                exclusive++;
            shared += h[i].need.memory;
        }
        assert_true(exclusive == 0 || on == 1);
        if (gpus[d].memory)
            assert_true(shared + gpus[d].foreign <= gpus[d].memory);
    }
}

static void remove_holders(struct placement_holder *h, size_t *n, const size_t *gone, size_t k)
{
    bool drop[64] = {false};

    for (size_t j = 0; j < k; j++)
        drop[gone[j]] = true;
    size_t w = 0;
    for (size_t i = 0; i < *n; i++)
        if (!drop[i])
            h[w++] = h[i];
    *n = w;
}

static void test_random_boxes(void **state)
{
    srandom(4242);
    for (int round = 0; round < 2000; round++) {
        struct placement_gpu gpus[8];
        struct placement_holder h[64];
        size_t n_gpus = 1 + (size_t)(random() % 8), n = 0;

        for (size_t d = 0; d < n_gpus; d++) {
            gpus[d].memory = random() % 4 == 0 ? 0 : (8 + (uint64_t)(random() % 134)) * GIB;
            gpus[d].foreign = gpus[d].memory ? (uint64_t)(random() % 4) * GIB : 0;
        }
        for (int step = 0; step < 40; step++) {
            struct placement_need need = {.count = 1 + (unsigned)(random() % 3 == 0)};
            struct placement_verdict v;

            if (random() % 2)
                need.memory = (1 + (uint64_t)(random() % 48)) * GIB;
            if (random() % 5 == 0)
                need.pinned = (uint64_t)random() & ((UINT64_C(1) << n_gpus) - 1);
            assert_int_equal(placement_decide(gpus, n_gpus, h, n, &need, &v), 0);
            if (v.kind == PLACEMENT_CONFLICT) {
                /* Every holder listed is needed; without them all, it is placed. */
                assert_true(v.n_holders > 0);
                for (size_t k = 0; k < v.n_holders; k++) {
                    struct placement_holder keep[64];
                    size_t m = n, others[64], n_others = 0;
                    for (size_t j = 0; j < v.n_holders; j++)
                        if (j != k)
                            others[n_others++] = v.holders[j];
                    memcpy(keep, h, n * sizeof(*h));
                    remove_holders(keep, &m, others, n_others);
                    struct placement_verdict w;
                    assert_int_equal(placement_decide(gpus, n_gpus, keep, m, &need, &w), 0);
                    assert_int_not_equal(w.kind, PLACEMENT_PLACED);
                    free(w.holders);
                }
                remove_holders(h, &n, v.holders, v.n_holders);
                free(v.holders);
                assert_int_equal(placement_decide(gpus, n_gpus, h, n, &need, &v), 0);
                assert_int_equal(v.kind, PLACEMENT_PLACED);
            }
            if (v.kind == PLACEMENT_PLACED) {
                assert_int_equal(__builtin_popcountll(v.devices), need.count);
                assert_true(v.devices < (UINT64_C(1) << n_gpus));
                if (need.pinned)
                    assert_int_equal(v.devices & ~need.pinned, 0);
                if (n < 64)
                    h[n++] = (struct placement_holder){.need = need,
                                                       .devices = v.devices,
                                                       .priority = (int)(random() % 3),
                                                       .last_used = (uint64_t)step};
            }
            if (v.kind == PLACEMENT_IMPOSSIBLE) {
                /* Not even on the empty box. */
                struct placement_verdict e;
                assert_int_equal(placement_decide(gpus, n_gpus, NULL, 0, &need, &e), 0);
                assert_int_equal(e.kind, PLACEMENT_IMPOSSIBLE);
                free(e.holders);
            }
            free(v.holders);
            assert_valid(gpus, n_gpus, h, n);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_gpu_of_unknown_size),
        cmocka_unit_test(test_two_gpus_exclusive),
        cmocka_unit_test(test_memory_packing),
        cmocka_unit_test(test_foreign_use),
        cmocka_unit_test(test_only_needed_stops),
        cmocka_unit_test(test_bad_needs),
        cmocka_unit_test(test_random_boxes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
