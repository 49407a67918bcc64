/* The box's GPUs (SPEC section 7 "GPUs"): what each has and who uses it, read off the
 * loop from NVML, else nvidia-smi (lib/gpuinfo.h), else the config file's gpus:, else one
 * GPU of unknown size (the seed's rule). What NVML or nvidia-smi answer is read again
 * every few seconds; a change of what placement counts (a GPU's memory, what foreign
 * processes use) is told to the changed function. */
#ifndef NANNY_INVENTORY_H
#define NANNY_INVENTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/placement.h"

#define INVENTORY_REFRESH_MS 5000 /* NVML and nvidia-smi are read again this often */

struct inventory_gpu {
    unsigned index; /* 0..N-1: the numbers CUDA_VISIBLE_DEVICES names */
    char *name;
    char *uuid;      /* NULL when unknown */
    uint64_t memory; /* bytes in all, 0 unknown */
    uint64_t used;   /* bytes in use, when used_known */
    bool used_known;
    int utilization; /* percent, -1 unknown */
};

/* A process with a context on a GPU. */
struct inventory_proc {
    unsigned gpu;
    int pid;
    uint64_t memory; /* bytes, 0 unknown */
    bool owned;      /* a service's: it carries a NANNY_INSTANCE marker, or runs in a
                        container not the daemon's (a compose service's, as far as can
                        be told) */
};

struct inventory;

typedef void (*inventory_changed_fn)(void *data);

/* Reads the box described by config (nvml_library, nvidia_smi, gpus:) on loop; the
 * first read starts at once. changed (may be NULL) is called on the loop when what
 * inventory_box() gives changes after the first read. */
struct inventory *inventory_new(uv_loop_t *loop, const struct config *config,
                                inventory_changed_fn changed, void *data);

/* Calls fn(data, procs, n) on the loop after each reading of NVML or nvidia-smi (every
 * INVENTORY_REFRESH_MS), with the processes on the GPUs as read (valid during the call):
 * what services use of their GPUs is judged from them. NULL stops the calls. */
typedef void (*inventory_procs_fn)(void *data, const struct inventory_proc *procs, size_t n);
void inventory_on_procs(struct inventory *inv, inventory_procs_fn fn, void *data);

/* True once the first read is over: until then the box is one GPU of unknown size. */
bool inventory_known(const struct inventory *inv);

/* "nvml", "nvidia-smi", "config" or "none" (one GPU of unknown size). */
const char *inventory_source(const struct inventory *inv);

/* The GPUs, by index, and the processes on them, as last read (valid until the next
 * read: use them on the loop, at once). */
const struct inventory_gpu *inventory_gpus(const struct inventory *inv, size_t *ret_n);
const struct inventory_proc *inventory_procs(const struct inventory *inv, size_t *ret_n);

/* What placement counts: each GPU's memory and what processes no service owns use of
 * it. Returns how many GPUs (at most max, at least 1) were written to out. */
size_t inventory_box(const struct inventory *inv, struct placement_gpu *out, size_t max);

/* Reads again now (a read in progress is let end first). */
void inventory_refresh(struct inventory *inv);

/* Frees inv; a read on a worker thread is let end first (the loop must run on). */
void inventory_free(struct inventory *inv);

#endif
