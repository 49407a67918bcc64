/* Which NVIDIA GPUs this machine has and which processes use them, read from NVML
 * (libnvidia-ml, loaded with dlopen: no NVIDIA package is needed to build) or, where it
 * does not answer, from nvidia-smi's CSV. Blocking: call it on a worker thread. */
#ifndef NANNY_GPUINFO_H
#define NANNY_GPUINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GPUINFO_NVML_DEFAULT   "libnvidia-ml.so.1"
#define GPUINFO_SMI_DEFAULT    "nvidia-smi"
#define GPUINFO_GPUS_MAX       64    /* GPUs read, at most... */
#define GPUINFO_PROCS_MAX      1024  /* ...and processes on each */
#define GPUINFO_SMI_TIMEOUT_MS 5000  /* nvidia-smi is killed past this */
#define GPUINFO_SMI_OUTPUT_MAX 65536 /* bytes of its output read, at most */

struct gpuinfo_gpu {
    unsigned index;        /* NVML's (and nvidia-smi's) index: PCI bus order */
    char *name;            /* "NVIDIA H100 80GB HBM3" */
    char *uuid;            /* "GPU-5c3a...", NULL when unknown */
    uint64_t memory_total; /* bytes, 0 unknown */
    uint64_t memory_used;  /* bytes, when memory_used_known */
    bool memory_used_known;
    int utilization; /* percent, -1 unknown */
};

/* A process with a context on a GPU (NVML's compute processes). */
struct gpuinfo_proc {
    unsigned gpu;    /* the GPU's index */
    int pid;         /* as the host's pid namespace sees it */
    uint64_t memory; /* bytes, 0 unknown */
};

struct gpuinfo {
    const char *source; /* "nvml" or "nvidia-smi" (static) */
    struct gpuinfo_gpu *gpus;
    size_t n_gpus;
    struct gpuinfo_proc *procs;
    size_t n_procs;
};

/* Reads the GPUs and their processes: NVML first (dlopen(nvml_library)), then nvidia_smi
 * (a program name looked up in PATH, or a path). NULL or "" for either means "don't try
 * it". Returns 0 and fills *ret (free with gpuinfo_free()); -ENODEV when neither is
 * there or answers (no library, no program, no driver: most machines), another negative
 * errno when one answered wrongly (-ETIMEDOUT, -EBADMSG for output that makes no sense,
 * -E2BIG past the limits above). On failure err gets one sentence per probe tried. */
int gpuinfo_read(const char *nvml_library, const char *nvidia_smi, struct gpuinfo *ret, char *err,
                 size_t err_size);

/* The two probes on their own (gpuinfo_read() tries them in turn), same returns; the
 * nvidia-smi one with a timeout in milliseconds, so that tests need not wait 5 s. */
int gpuinfo_read_nvml(const char *library, struct gpuinfo *ret, char *err, size_t err_size);
int gpuinfo_read_smi(const char *program, int timeout_ms, struct gpuinfo *ret, char *err,
                     size_t err_size);

/* Frees what gpuinfo_read() filled (not g itself); g is left empty. */
void gpuinfo_free(struct gpuinfo *g);

#endif
