/* Unit tests for gpu.c: every arbitration case on the seed's box (one GPU of unknown
 * size), random worlds in which applying the verdicts never leaves two GPU holders, and
 * boxes of several GPUs with shared and pinned services. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/gpu.h"

/* The seed's cases list each candidate as {name, gpu_required, state, reserved}: the rest
 * (a need of one whole GPU, on GPU 0, priority 0) is zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const struct placement_gpu one_unknown[] = {{0, 0}};
static const struct gpu_box seed_box = {one_unknown, 1};

/* The holders of the last verdict decide*() gave, kept here so that no test frees them. */
static size_t last_holders[256];

/* Decides on box and checks that the call succeeded. */
static struct gpu_verdict decide_on(const struct gpu_box *box, const struct gpu_candidate *c,
                                    size_t n, size_t target, bool force, bool preempt_always)
{
    struct gpu_verdict v;

    memset(&v, 0xa5, sizeof(v));
    assert_int_equal(gpu_decide(box, c, n, target, force, preempt_always, &v), 0);
    assert_true(v.n_holders <= 256);
    if (v.n_holders)
        memcpy(last_holders, v.holders, v.n_holders * sizeof(*v.holders));
    n = v.n_holders;
    gpu_verdict_done(&v);
    v.holders = last_holders;
    v.n_holders = n;
    return v;
}

/* Decides on the seed's box. */
static struct gpu_verdict decide(const struct gpu_candidate *c, size_t n, size_t target, bool force,
                                 bool preempt_always)
{
    return decide_on(&seed_box, c, n, target, force, preempt_always);
}

static void assert_conflict(const struct gpu_candidate *c, size_t n, size_t target, size_t holder)
{
    struct gpu_verdict v = decide(c, n, target, false, false);

    assert_int_equal(v.kind, GPU_CONFLICT);
    assert_int_equal(v.holder, holder);
}

static void assert_kind(const struct gpu_candidate *c, size_t n, size_t target, bool force,
                        bool preempt_always, enum gpu_verdict_kind kind)
{
    assert_int_equal(decide(c, n, target, force, preempt_always).kind, kind);
}

static void test_target_out_of_range(void **state)
{
    struct gpu_candidate c[] = {{"a", true, STATE_STOPPED, false}};
    struct gpu_verdict v = {.kind = GPU_CONFLICT, .holder = 77};
    const struct gpu_box empty = {one_unknown, 0}, none = {NULL, 1};

    assert_int_equal(gpu_decide(&seed_box, c, 1, 1, false, false, &v), -EINVAL);
    assert_int_equal(gpu_decide(&seed_box, c, 1, SIZE_MAX, true, true, &v), -EINVAL);
    assert_int_equal(gpu_decide(&seed_box, c, 0, 0, false, false, &v), -EINVAL);
    assert_int_equal(gpu_decide(&seed_box, NULL, 1, 0, false, false, &v), -EINVAL);
    assert_int_equal(gpu_decide(&seed_box, c, 1, 0, false, false, NULL), -EINVAL);
    assert_int_equal(gpu_decide(NULL, c, 1, 0, false, false, &v), -EINVAL);
    assert_int_equal(gpu_decide(&empty, c, 1, 0, false, false, &v), -EINVAL);
    assert_int_equal(gpu_decide(&none, c, 1, 0, false, false, &v), -EINVAL);
    /* Untouched on failure. */
    assert_int_equal(v.kind, GPU_CONFLICT);
    assert_int_equal(v.holder, 77);
}

/* Starting a service that is already starting, running or unhealthy is a 200 no-op, for
 * any service, whoever else holds the GPU and whatever force says. */
static void test_already(void **state)
{
    static const enum service_state up[] = {STATE_STARTING, STATE_RUNNING, STATE_UNHEALTHY};

    for (size_t i = 0; i < N_OF(up); i++)
        for (int gpu = 0; gpu < 2; gpu++)
            for (int force = 0; force < 2; force++) {
                struct gpu_candidate c[] = {
                    {"other", true, STATE_RUNNING, false},
                    {"target", gpu, up[i], false},
                };

                assert_kind(c, 2, 1, force, false, GPU_ALREADY);
                assert_kind(c, 2, 1, false, force, GPU_ALREADY);
                assert_kind(c, 2, 1, force, true, GPU_ALREADY);
                assert_kind(&c[1], 1, 0, force, false, GPU_ALREADY);
            }
}

/* A reserved target waits for its preempted holders: starting it again is a no-op. */
static void test_reserved_target_is_already(void **state)
{
    struct gpu_candidate c[] = {
        {"old", true, STATE_STOPPING, false},
        {"new", true, STATE_STOPPED, true},
    };

    assert_kind(c, 2, 1, false, false, GPU_ALREADY);
    assert_kind(c, 2, 1, true, false, GPU_ALREADY);
    assert_kind(c, 2, 1, false, true, GPU_ALREADY);
}

/* A service that needs no GPU always goes, whoever holds the GPU. */
static void test_not_gpu_required_goes(void **state)
{
    static const enum service_state down[] = {STATE_STOPPED, STATE_STOPPING, STATE_FAILED};

    for (size_t i = 0; i < N_OF(down); i++) {
        struct gpu_candidate c[] = {
            {"holder", true, STATE_RUNNING, false},
            {"cpu", false, down[i], false},
            {"reserved", true, STATE_STOPPED, true},
        };

        assert_kind(c, 3, 1, false, false, GPU_GO);
        assert_kind(c, 3, 1, true, true, GPU_GO);
    }
}

/* No holder: go, with force or without; services that do not hold never count. */
static void test_no_holder_goes(void **state)
{
    struct gpu_candidate c[] = {
        {"cpu-running", false, STATE_RUNNING, false},
        {"cpu-stopping", false, STATE_STOPPING, false},
        {"gpu-stopped", true, STATE_STOPPED, false},
        {"gpu-failed", true, STATE_FAILED, false},
        {"target", true, STATE_STOPPED, false},
    };

    assert_kind(c, 5, 4, false, false, GPU_GO);
    assert_kind(c, 5, 4, true, false, GPU_GO); /* force with no holder */
    assert_kind(c, 5, 4, false, true, GPU_GO);
    assert_kind(c, 5, 4, true, true, GPU_GO);
    c[4].state = STATE_FAILED;
    assert_kind(c, 5, 4, false, false, GPU_GO);
    assert_kind(&c[4], 1, 0, false, false, GPU_GO); /* alone */
}

/* One holder in each holding state: a 409 naming it, unless forced. */
static void test_conflict_with_each_holding_state(void **state)
{
    static const enum service_state holding[] = {STATE_STARTING, STATE_RUNNING, STATE_UNHEALTHY,
                                                 STATE_STOPPING};

    for (size_t i = 0; i < N_OF(holding); i++) {
        struct gpu_candidate c[] = {
            {"target", true, STATE_STOPPED, false},
            {"cpu", false, STATE_RUNNING, false},
            {"minimal-sd-api", true, holding[i], false},
        };
        struct gpu_verdict v;

        assert_conflict(c, 3, 0, 2);
        c[0].state = STATE_FAILED;
        assert_conflict(c, 3, 0, 2);

        /* Force, also while the holder is itself starting or stopping. */
        v = decide(c, 3, 0, true, false);
        assert_int_equal(v.kind, GPU_PREEMPT);
        assert_int_equal(v.n_holders, 1);
        assert_int_equal(v.holders[0], 2);
        assert_int_equal(v.holder, 2);
        /* gpu_conflict: preempt makes every start behave as forced. */
        v = decide(c, 3, 0, false, true);
        assert_int_equal(v.kind, GPU_PREEMPT);
        assert_int_equal(v.n_holders, 1);
        assert_int_equal(v.holders[0], 2);
    }
}

/* Several holders (a preemption under way): the 409 names the first to stop: of equal
 * priority and use, the first in registry order. */
static void test_conflict_names_the_first_to_stop(void **state)
{
    struct gpu_candidate c[] = {
        {"zeta", true, STATE_STOPPING, false},  {"target", true, STATE_STOPPED, false},
        {"beta", true, STATE_STOPPED, true},    {"alpha", false, STATE_RUNNING, false},
        {"gamma", true, STATE_STOPPING, false},
    };
    struct gpu_candidate same[] = {
        {"x", true, STATE_STOPPING, false},
        {"x", true, STATE_STOPPED, true},
        {"t", true, STATE_STOPPED, false},
    };
    struct gpu_candidate unnamed[] = {
        {"a", true, STATE_STOPPING, false},
        {NULL, true, STATE_STOPPED, true},
        {"t", true, STATE_STOPPED, false},
    };

    assert_conflict(c, 5, 1, 0); /* "alpha" needs no GPU; "beta" is reserved */
    assert_conflict(same, 3, 2, 0);
    assert_conflict(unnamed, 3, 2, 0);
    /* The lowest priority first, then the least recently used. */
    c[0].priority = 5;
    assert_conflict(c, 5, 1, 2);
    c[2].last_used = 100;
    c[4].last_used = 50;
    assert_conflict(c, 5, 1, 4);
    c[4].priority = 6;
    assert_conflict(c, 5, 1, 2);
}

/* Two holders during a preemption: the old one stopping, the new one reserved. */
static void test_two_holders_during_a_preemption(void **state)
{
    struct gpu_candidate c[] = {
        {"old", true, STATE_STOPPING, false},
        {"new", true, STATE_STOPPED, true},
        {"third", true, STATE_STOPPED, false},
    };
    struct gpu_verdict v;

    assert_conflict(c, 3, 2, 0); /* both stop: the first in registry order */
    v = decide(c, 3, 2, true, false);
    assert_int_equal(v.kind, GPU_PREEMPT);
    assert_int_equal(v.n_holders, 2);
    assert_int_equal(v.holders[0], 0);
    assert_int_equal(v.holders[1], 1);
    assert_int_equal(v.holder, 0);
    v = decide(c, 3, 2, false, true);
    assert_int_equal(v.kind, GPU_PREEMPT);
    assert_int_equal(v.n_holders, 2);

    /* The old holder, preempted and still stopping, asks to start again. */
    v = decide(c, 3, 0, false, false);
    assert_int_equal(v.kind, GPU_CONFLICT);
    assert_int_equal(v.holder, 1);
    v = decide(c, 3, 0, true, false);
    assert_int_equal(v.kind, GPU_PREEMPT);
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holders[0], 1);
}

/* A reserved service holds the GPU whatever its state and gpu_required say. */
static void test_reserved_candidates_hold(void **state)
{
    static const enum service_state any[] = {STATE_STOPPED, STATE_FAILED, STATE_STOPPING};

    for (size_t i = 0; i < N_OF(any); i++)
        for (int gpu = 0; gpu < 2; gpu++) {
            struct gpu_candidate c[] = {
                {"reserved", gpu, any[i], true},
                {"target", true, STATE_STOPPED, false},
            };
            struct gpu_verdict v;

            assert_conflict(c, 2, 1, 0);
            v = decide(c, 2, 1, true, false);
            assert_int_equal(v.kind, GPU_PREEMPT);
            assert_int_equal(v.n_holders, 1);
            assert_int_equal(v.holders[0], 0);
        }
}

/* The one holder test: gpu_holder() names the holder that sorts first, leaves out the one
 * asked, and agrees with gpu_is_holder() on every candidate. */
static void test_holder(void **state)
{
    struct gpu_candidate c[] = {
        {"zeta", true, STATE_RUNNING, false},   {"plain", false, STATE_RUNNING, false},
        {"alpha", true, STATE_STOPPING, false}, {"beta", false, STATE_STOPPED, true},
        {"gone", true, STATE_FAILED, false},
    };
    const bool holds[] = {true, false, true, true, false};

    for (size_t i = 0; i < N_OF(c); i++)
        assert_int_equal(gpu_is_holder(&c[i]), holds[i]);
    assert_int_equal(gpu_holder(c, N_OF(c), N_OF(c)), 2); /* alpha */
    assert_int_equal(gpu_holder(c, N_OF(c), 2), 3);       /* without alpha: beta, reserved */
    assert_int_equal(gpu_holder(c, 2, 0), 2);             /* only plain is left: none */
    assert_int_equal(gpu_holder(c, 0, 0), 0);
}

/* A target that is itself stopping is not "already": it goes (queued after its stop) when
 * no one else holds, and never counts as its own holder. */
static void test_stopping_target(void **state)
{
    struct gpu_candidate alone[] = {
        {"cpu", false, STATE_RUNNING, false},
        {"target", true, STATE_STOPPING, false},
    };
    struct gpu_candidate with_holder[] = {
        {"target", true, STATE_STOPPING, false},
        {"other", true, STATE_RUNNING, false},
    };
    struct gpu_verdict v;

    assert_kind(alone, 2, 1, false, false, GPU_GO);
    assert_kind(alone, 2, 1, true, false, GPU_GO);
    assert_kind(alone, 2, 1, false, true, GPU_GO);
    alone[1].gpu_required = false;
    assert_kind(alone, 2, 1, false, false, GPU_GO);

    /* Two holders is a broken world, but the verdict still names the other one only. */
    assert_conflict(with_holder, 2, 0, 1);
    v = decide(with_holder, 2, 0, true, false);
    assert_int_equal(v.kind, GPU_PREEMPT);
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holders[0], 1);
}

/* However many holders there are (a broken world on one GPU), force lists them all. */
static void test_many_holders(void **state)
{
    struct gpu_candidate c[40];
    char names[40][8];
    struct gpu_verdict v;

    for (size_t i = 0; i < N_OF(c); i++) {
        snprintf(names[i], sizeof(names[i]), "s%zu", N_OF(c) - i);
        c[i] = (struct gpu_candidate){names[i], true, STATE_STOPPING, false};
    }
    c[0].state = STATE_STOPPED; /* the target */
    v = decide(c, N_OF(c), 0, true, false);
    assert_int_equal(v.kind, GPU_PREEMPT);
    assert_int_equal(v.n_holders, N_OF(c) - 1);
    for (size_t i = 0; i < v.n_holders; i++)
        assert_int_equal(v.holders[i], i + 1);
    assert_int_equal(v.devices, 1);
    assert_conflict(c, N_OF(c), 0, 1);
}

#define GIB (UINT64_C(1) << 30)

/* A box of two 24 GiB GPUs: whole-GPU services side by side, a third refused naming the
 * one in the way, force stopping exactly that one. */
static void test_two_gpus_whole(void **state)
{
    static const struct placement_gpu gpus[] = {{24 * GIB, 0}, {24 * GIB, 0}};
    const struct gpu_box box = {gpus, 2};
    struct gpu_candidate c[] = {
        {"a", true, STATE_RUNNING, false, {1, 0, 0}, 0x1, 0, 10},
        {"b", true, STATE_STOPPED, false, {1, 0, 0}, 0, 0, 0},
        {"c", true, STATE_STOPPED, false, {1, 0, 0}, 0, 0, 0},
    };
    struct gpu_verdict v;

    v = decide_on(&box, c, 3, 1, false, false);
    assert_int_equal(v.kind, GPU_GO);
    assert_int_equal(v.devices, 0x2);
    c[1].state = STATE_RUNNING;
    c[1].devices = 0x2;
    c[1].last_used = 5; /* used less recently than a */
    v = decide_on(&box, c, 3, 2, false, false);
    assert_int_equal(v.kind, GPU_CONFLICT);
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holder, 1);
    v = decide_on(&box, c, 3, 2, true, false);
    assert_int_equal(v.kind, GPU_PREEMPT);
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holders[0], 1);
    assert_int_equal(v.devices, 0x2);
    /* Pinned to GPU 0: a is the one in the way, whatever its use. */
    c[2].need.pinned = 0x1;
    v = decide_on(&box, c, 3, 2, true, false);
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holders[0], 0);
    assert_int_equal(v.devices, 0x1);
    /* Two whole GPUs: both must go, the least recently used first. */
    c[2].need = (struct placement_need){2, 0, 0};
    v = decide_on(&box, c, 3, 2, false, false);
    assert_int_equal(v.kind, GPU_CONFLICT);
    assert_int_equal(v.n_holders, 2);
    assert_int_equal(v.holders[0], 1);
    assert_int_equal(v.holders[1], 0);
    /* Three: never on this box, and force stops nothing. */
    c[2].need.count = 3;
    assert_int_equal(decide_on(&box, c, 3, 2, true, true).kind, GPU_IMPOSSIBLE);
    /* A pinned device the box lacks. */
    c[2].need = (struct placement_need){1, 0, 0x4};
    assert_int_equal(decide_on(&box, c, 3, 2, true, false).kind, GPU_IMPOSSIBLE);
}

/* Memory: three services of 40 GiB share one 141 GiB GPU; a fourth does not fit; a whole
 * GPU service cannot join them; foreign use counts. */
static void test_shared_memory(void **state)
{
    static struct placement_gpu gpus[] = {{141 * GIB, 0}};
    const struct gpu_box box = {gpus, 1};
    struct gpu_candidate c[] = {
        {"a", true, STATE_STOPPED, false, {1, 40 * GIB, 0}, 0, 0, 0},
        {"b", true, STATE_STOPPED, false, {1, 40 * GIB, 0}, 0, 0, 0},
        {"c", true, STATE_STOPPED, false, {1, 40 * GIB, 0}, 0, 0, 0},
        {"d", true, STATE_STOPPED, false, {1, 40 * GIB, 0}, 0, 1, 0},
        {"whole", true, STATE_STOPPED, false, {1, 0, 0}, 0, 0, 0},
    };
    struct gpu_verdict v;

    for (size_t i = 0; i < 3; i++) {
        v = decide_on(&box, c, 5, i, false, false);
        assert_int_equal(v.kind, GPU_GO);
        assert_int_equal(v.devices, 0x1);
        c[i].state = STATE_RUNNING;
        c[i].devices = v.devices;
        c[i].last_used = 10 - i; /* c the least recently used */
    }
    v = decide_on(&box, c, 5, 3, false, false);
    assert_int_equal(v.kind, GPU_CONFLICT);
    assert_int_equal(v.n_holders, 1);
    assert_int_equal(v.holder, 2); /* one stop makes room: the least recently used */
    v = decide_on(&box, c, 5, 4, false, false);
    assert_int_equal(v.kind, GPU_CONFLICT);
    assert_int_equal(v.n_holders, 3);
    /* With 102 GiB used outside the daemon, 40 GiB never fits on this GPU. */
    gpus[0].foreign = 102 * GIB;
    assert_int_equal(decide_on(&box, c, 5, 3, true, false).kind, GPU_IMPOSSIBLE);
    gpus[0].foreign = 0;
}

/* A small deterministic generator, so that every run sees the same worlds. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rng(uint32_t bound)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % bound);
}

#define WORLD_MAX 6

struct world {
    struct gpu_candidate c[WORLD_MAX];
    bool start_after_stop[WORLD_MAX]; /* GO given while stopping: starts once stopped */
    size_t n;
};

static const char *const world_names[WORLD_MAX] = {"f", "c", "a", "e", "b", "d"};

/* GPU services in a holding state: the rule says never more than one. */
static size_t holding(const struct world *w)
{
    size_t count = 0;

    for (size_t i = 0; i < w->n; i++)
        if (w->c[i].gpu_required && lifecycle_holds_gpu(w->c[i].state))
            count++;
    return count;
}

static size_t reserved(const struct world *w)
{
    size_t count = 0;

    for (size_t i = 0; i < w->n; i++)
        count += w->c[i].reserved;
    return count;
}

/* Builds a world that keeps the rule: at most one GPU holder, or a preemption under way
 * (one reserved service waiting for one stopping holder). */
static void random_world(struct world *w)
{
    memset(w, 0, sizeof(*w));
    w->n = 1 + rng(WORLD_MAX);
    for (size_t i = 0; i < w->n; i++) {
        w->c[i].name = world_names[i];
        w->c[i].gpu_required = rng(3) != 0;
        w->c[i].state = (enum service_state)rng(6);
    }
    /* Demote every GPU holder but one. */
    for (size_t i = 0, kept = 0; i < w->n; i++)
        if (w->c[i].gpu_required && lifecycle_holds_gpu(w->c[i].state) && kept++ > 0)
            w->c[i].state = rng(2) ? STATE_STOPPED : STATE_FAILED;
    /* Sometimes a preemption under way: the holder stopping, another GPU service reserved. */
    if (rng(3) == 0)
        for (size_t i = 0; i < w->n; i++)
            if (w->c[i].gpu_required && !lifecycle_holds_gpu(w->c[i].state)) {
                w->c[i].reserved = true;
                for (size_t j = 0; j < w->n; j++)
                    if (w->c[j].gpu_required && lifecycle_holds_gpu(w->c[j].state))
                        w->c[j].state = STATE_STOPPING;
                break;
            }
}

/* Applies a verdict to a world the way the daemon does, the preemption done at once. */
static void apply_at_once(struct world *w, size_t target, const struct gpu_verdict *v)
{
    struct gpu_candidate *t = &w->c[target];

    switch (v->kind) {
    case GPU_GO:
        if (t->state == STATE_STOPPING)
            w->start_after_stop[target] = true;
        else
            t->state = STATE_STARTING;
        break;
    case GPU_PREEMPT:
        for (size_t i = 0; i < v->n_holders; i++) {
            w->c[v->holders[i]].state = STATE_STOPPED;
            w->c[v->holders[i]].reserved = false;
        }
        t->state = STATE_STARTING;
        break;
    case GPU_ALREADY:
    case GPU_CONFLICT:
    case GPU_IMPOSSIBLE:
        break;
    }
}

/* Checks the verdict against the world it was given. */
static void check_verdict(const struct world *w, size_t target, bool forced,
                          const struct gpu_verdict *v)
{
    const struct gpu_candidate *t = &w->c[target];
    bool already = t->reserved || t->state == STATE_STARTING || t->state == STATE_RUNNING ||
                   t->state == STATE_UNHEALTHY;
    size_t others = 0;

    for (size_t i = 0; i < w->n; i++)
        if (i != target &&
            (w->c[i].reserved || (w->c[i].gpu_required && lifecycle_holds_gpu(w->c[i].state))))
            others++;
    if (already)
        assert_int_equal(v->kind, GPU_ALREADY);
    else if (!t->gpu_required || others == 0)
        assert_int_equal(v->kind, GPU_GO);
    else if (forced)
        assert_int_equal(v->kind, GPU_PREEMPT);
    else
        assert_int_equal(v->kind, GPU_CONFLICT);
    if (v->kind == GPU_CONFLICT || v->kind == GPU_PREEMPT) {
        /* On one GPU every other holder is in the way, the first in registry order. */
        assert_int_equal(v->n_holders, others);
        assert_int_equal(v->holder, v->holders[0]);
        for (size_t i = 1; i < v->n_holders; i++)
            assert_true(v->holders[i - 1] < v->holders[i]);
    }
    if (v->kind == GPU_PREEMPT) {
        assert_int_equal(v->n_holders, others);
        for (size_t i = 0; i < v->n_holders; i++)
            assert_true(v->holders[i] != target && v->holders[i] < w->n);
    }
}

/* For random small worlds and requests, applying the verdict never yields two holders. */
static void test_property_one_decision(void **state)
{
    for (int iter = 0; iter < 5000; iter++) {
        struct world w;
        size_t target;
        bool force = rng(2), preempt_always = rng(4) == 0;
        struct gpu_verdict v;

        random_world(&w);
        assert_true(holding(&w) <= 1);
        target = rng((uint32_t)w.n);
        v = decide(w.c, w.n, target, force, preempt_always);
        check_verdict(&w, target, force || preempt_always, &v);
        apply_at_once(&w, target, &v);
        assert_true(holding(&w) <= 1);
    }
}

/* Random walks of starts (forced or not), stops, crashes and finished stops, with
 * preemptions that take time as in the daemon: the preempted stop, the target waits
 * reserved, and starts only once every other holder is gone. */
static void test_property_random_walk(void **state)
{
    for (int walk = 0; walk < 500; walk++) {
        struct world w;

        random_world(&w);
        for (int step = 0; step < 40; step++) {
            size_t i = rng((uint32_t)w.n);
            struct gpu_candidate *c = &w.c[i];

            switch (rng(4)) {
            case 0: { /* a start */
                bool force = rng(2);
                struct gpu_verdict v = decide(w.c, w.n, i, force, false);

                check_verdict(&w, i, force, &v);
                if (v.kind == GPU_GO) {
                    apply_at_once(&w, i, &v);
                } else if (v.kind == GPU_PREEMPT) {
                    for (size_t k = 0; k < v.n_holders; k++) {
                        struct gpu_candidate *p = &w.c[v.holders[k]];

                        p->reserved = false; /* its own wait is over: it lost */
                        if (lifecycle_holds_gpu(p->state))
                            p->state = STATE_STOPPING;
                        w.start_after_stop[v.holders[k]] = false;
                    }
                    c->reserved = true;
                }
                break;
            }
            case 1: /* a stop */
                if (lifecycle_holds_gpu(c->state) && c->state != STATE_STOPPING)
                    c->state = STATE_STOPPING;
                w.start_after_stop[i] = false;
                c->reserved = false;
                break;
            case 2: /* a crash */
                if (c->state == STATE_STARTING || c->state == STATE_RUNNING ||
                    c->state == STATE_UNHEALTHY)
                    c->state = STATE_FAILED;
                break;
            case 3: /* a stop finishes */
                if (c->state == STATE_STOPPING)
                    c->state = w.start_after_stop[i] ? STATE_STARTING : STATE_STOPPED;
                w.start_after_stop[i] = false;
                break;
            }
            /* A reserved service starts once no other GPU service holds. */
            for (size_t r = 0; r < w.n; r++)
                if (w.c[r].reserved) {
                    bool busy = false;

                    for (size_t k = 0; k < w.n; k++)
                        busy |= k != r && w.c[k].gpu_required && lifecycle_holds_gpu(w.c[k].state);
                    if (!busy && w.c[r].state != STATE_STOPPING) {
                        w.c[r].reserved = false;
                        w.c[r].state = STATE_STARTING;
                    }
                }
            assert_true(holding(&w) <= 1);
            assert_true(reserved(&w) <= 1);
        }
    }
}

/* CUDA_VISIBLE_DEVICES as the daemon writes it, read back; anything else refused. */
static void test_devices_parse_and_format(void **state)
{
    static const char *const bad[] = {"0,,1", ",0", "0,", "1,1",    "64",   "007", "01",
                                      "0, 1", "a",  "-1", "GPU-1a", "1000", " 0",  "0;1"};
    uint64_t set = 0;
    char text[256];

    assert_int_equal(gpu_devices_parse("0", &set), 0);
    assert_true(set == 1);
    assert_int_equal(gpu_devices_parse("2,0,63", &set), 0);
    assert_true(set == ((UINT64_C(1) << 63) | 5));
    gpu_devices_format(set, text, sizeof(text));
    assert_string_equal(text, "0,2,63");
    assert_int_equal(gpu_devices_parse("10", &set), 0);
    assert_true(set == UINT64_C(1) << 10);
    assert_int_equal(gpu_devices_parse("", &set), -ENOENT);
    assert_int_equal(gpu_devices_parse(NULL, &set), -ENOENT);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set = 7;
        assert_int_equal(gpu_devices_parse(bad[i], &set), -EINVAL);
        assert_true(set == 7); /* untouched */
    }
    gpu_devices_format(0, text, sizeof(text));
    assert_string_equal(text, "");
    gpu_devices_format(UINT64_MAX, text, 8); /* cut, still a string */
    assert_int_equal(strlen(text), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_out_of_range),
        cmocka_unit_test(test_already),
        cmocka_unit_test(test_reserved_target_is_already),
        cmocka_unit_test(test_not_gpu_required_goes),
        cmocka_unit_test(test_no_holder_goes),
        cmocka_unit_test(test_conflict_with_each_holding_state),
        cmocka_unit_test(test_conflict_names_the_first_to_stop),
        cmocka_unit_test(test_two_holders_during_a_preemption),
        cmocka_unit_test(test_reserved_candidates_hold),
        cmocka_unit_test(test_holder),
        cmocka_unit_test(test_stopping_target),
        cmocka_unit_test(test_many_holders),
        cmocka_unit_test(test_two_gpus_whole),
        cmocka_unit_test(test_shared_memory),
        cmocka_unit_test(test_property_one_decision),
        cmocka_unit_test(test_property_random_walk),
        cmocka_unit_test(test_devices_parse_and_format),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
