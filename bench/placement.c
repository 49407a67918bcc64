/* Times placement_decide() (src/core/placement.c) on a box of 8 GPUs of 80 GiB with 100
 * shared services placed, for a request that fits and one that needs stops (issue 15's
 * figure; target < 50 us a decision). Built by meson as bench-placement; run by hand:
 *   build/bench-placement */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/gpu.h"
#include "core/placement.h"

#define GIB    (UINT64_C(1) << 30)
#define GPUS   8
#define N      100
#define ROUNDS 20000

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

/* The mean time of a decision over ROUNDS, in ns; aborts when the verdict is not kind. */
static double time_decision(const struct placement_gpu *gpus, const struct placement_holder *h,
                            struct placement_need need, enum placement_kind kind)
{
    uint64_t begun = now_ns();

    for (int r = 0; r < ROUNDS; r++) {
        struct placement_verdict v;
        if (placement_decide(gpus, GPUS, h, N, &need, &v) < 0 || v.kind != kind) {
            fprintf(stderr, "bench-placement: unexpected verdict %d\n", v.kind);
            exit(1);
        }
        free(v.holders);
    }
    return (double)(now_ns() - begun) / ROUNDS;
}

/* The same through gpu_decide() (src/core/gpu.c), what the supervisor calls for a start:
 * the candidates turned into holders, the decision, and for force the placement after the
 * stops; target is a stopped service of need. */
static double time_arbiter(const struct placement_gpu *gpus, const struct placement_holder *h,
                           struct placement_need need, bool force, enum gpu_verdict_kind kind)
{
    static struct gpu_candidate c[N + 1];
    struct gpu_box box = {gpus, GPUS};
    uint64_t begun;

    for (int i = 0; i < N; i++)
        c[i] = (struct gpu_candidate){"holder",  true,         STATE_RUNNING, false,
                                      h[i].need, h[i].devices, h[i].priority, h[i].last_used};
    c[N] = (struct gpu_candidate){"target", true, STATE_STOPPED, false, need, 0, 0, 0};
    begun = now_ns();
    for (int r = 0; r < ROUNDS; r++) {
        struct gpu_verdict v;
        if (gpu_decide(&box, c, N + 1, N, force, false, &v) < 0 || v.kind != kind) {
            fprintf(stderr, "bench-placement: unexpected arbiter verdict %d\n", v.kind);
            exit(1);
        }
        gpu_verdict_done(&v);
    }
    return (double)(now_ns() - begun) / ROUNDS;
}

int main(void)
{
    struct placement_gpu gpus[GPUS];
    struct placement_holder h[N];

    for (int d = 0; d < GPUS; d++)
        gpus[d] = (struct placement_gpu){.memory = 80 * GIB, .foreign = GIB / 2};
    /* 100 services of 6 GiB, round robin: 12 or 13 on each GPU, 2 to 8 GiB left. */
    for (int i = 0; i < N; i++)
        h[i] = (struct placement_holder){.need = {.count = 1, .memory = 6 * GIB},
                                         .devices = UINT64_C(1) << (i % GPUS),
                                         .priority = i % 3,
                                         .last_used = (uint64_t)(i * 7919 % N)};
    printf("placement_decide, %d GPUs, %d services placed, mean of %d decisions:\n", GPUS, N,
           ROUNDS);
    printf("  fits (2 GiB)                    %8.2f us\n",
           time_decision(gpus, h, (struct placement_need){.count = 1, .memory = 2 * GIB},
                         PLACEMENT_PLACED) /
               1000);
    printf("  needs stops (40 GiB)            %8.2f us\n",
           time_decision(gpus, h, (struct placement_need){.count = 1, .memory = 40 * GIB},
                         PLACEMENT_CONFLICT) /
               1000);
    printf("  needs stops (2 whole GPUs)      %8.2f us\n",
           time_decision(gpus, h, (struct placement_need){.count = 2}, PLACEMENT_CONFLICT) / 1000);
    printf("  impossible (81 GiB)             %8.2f us\n",
           time_decision(gpus, h, (struct placement_need){.count = 1, .memory = 81 * GIB},
                         PLACEMENT_IMPOSSIBLE) /
               1000);
    printf("gpu_decide (the supervisor's call: candidates, decision, force's placement):\n");
    printf("  fits (2 GiB)                    %8.2f us\n",
           time_arbiter(gpus, h, (struct placement_need){.count = 1, .memory = 2 * GIB}, false,
                        GPU_GO) /
               1000);
    printf("  conflict (40 GiB)               %8.2f us\n",
           time_arbiter(gpus, h, (struct placement_need){.count = 1, .memory = 40 * GIB}, false,
                        GPU_CONFLICT) /
               1000);
    printf("  force (2 whole GPUs)            %8.2f us\n",
           time_arbiter(gpus, h, (struct placement_need){.count = 2}, true, GPU_PREEMPT) / 1000);
    printf("target: < 50 us a decision\n");
    return 0;
}
