/* The GPU inventory's reader: NVML through dlopen, nvidia-smi's CSV as the fallback. See
 * gpuinfo.h. Nothing here is NVIDIA's code: the few NVML prototypes and structs are
 * declared from nvml.h's documented ABI (as nvtop does). */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/alloc.h"
#include "lib/gpuinfo.h"
#include "lib/gpuinfo_internal.h"

/* nvml.h's types, as far as we use them. */
typedef int nvml_return;                 /* nvmlReturn_t */
typedef struct nvml_device *nvml_device; /* nvmlDevice_t, an opaque handle */

#define NVML_SUCCESS                 0
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_VALUE_NOT_AVAILABLE     (~0ULL)
#define NVML_NAME_SIZE               96 /* NVML_DEVICE_NAME_V2_BUFFER_SIZE */
#define NVML_UUID_SIZE               96 /* NVML_DEVICE_UUID_V2_BUFFER_SIZE */

struct nvml_memory { /* nvmlMemory_t (v1) */
    unsigned long long total, free, used;
};

struct nvml_utilization { /* nvmlUtilization_t */
    unsigned int gpu, memory;
};

/* nvmlProcessInfo_t as nvmlDeviceGetComputeRunningProcesses_v2 and _v3 fill it
 * (nvmlProcessInfo_v2_t, 24 bytes); the unversioned function fills only its first two
 * fields (nvmlProcessInfo_v1_t, 16 bytes), so entries are read with the stride of the
 * function found. */
struct nvml_process {
    unsigned int pid;
    unsigned long long used_gpu_memory; /* bytes; NVML_VALUE_NOT_AVAILABLE */
    unsigned int gpu_instance_id, compute_instance_id;
};

#define NVML_PROCESS_V1_SIZE 16

/* The library and the functions taken from it. */
struct nvml {
    void *lib;
    nvml_return (*init)(void);
    nvml_return (*shutdown)(void);
    nvml_return (*count)(unsigned int *);
    nvml_return (*handle)(unsigned int, nvml_device *);
    nvml_return (*name)(nvml_device, char *, unsigned int);
    nvml_return (*uuid)(nvml_device, char *, unsigned int);
    nvml_return (*memory)(nvml_device, struct nvml_memory *);
    nvml_return (*utilization)(nvml_device, struct nvml_utilization *);
    nvml_return (*processes)(nvml_device, unsigned int *, void *);
    size_t process_size; /* the stride of what processes() fills */
    const char *(*error_string)(nvml_return);
};

int gpuinfo_fail(char *err, size_t err_size, int r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return r;
}

char *gpuinfo_printable(const char *s, size_t len)
{
    char *copy = xstrndup(s, len);

    for (char *p = copy; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    return copy;
}

/* NVML's text for an error code (its own function may be missing from a broken library). */
static const char *nvml_error(const struct nvml *nvml, nvml_return r)
{
    const char *s = nvml->error_string ? nvml->error_string(r) : NULL;

    return s ? s : "unknown error";
}

/* Loads the library and its functions; the process function is the newest there. */
static int nvml_open(struct nvml *nvml, const char *library, char *err, size_t err_size)
{
    const char *missing = NULL;
    const char *error;

    *nvml = (struct nvml){0};
    nvml->lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!nvml->lib) {
        error = dlerror();
        return gpuinfo_fail(err, err_size, -ENODEV, "NVML: cannot load %s: %s", library,
                            error ? error : "unknown error");
    }
#define NVML_SYM(field, symbol)                                                                    \
    do {                                                                                           \
        *(void **)&nvml->field = dlsym(nvml->lib, symbol);                                         \
        if (!nvml->field && !missing)                                                              \
            missing = symbol;                                                                      \
    } while (0)
    NVML_SYM(error_string, "nvmlErrorString");
    NVML_SYM(init, "nvmlInit_v2");
    NVML_SYM(shutdown, "nvmlShutdown");
    NVML_SYM(count, "nvmlDeviceGetCount_v2");
    NVML_SYM(handle, "nvmlDeviceGetHandleByIndex_v2");
    NVML_SYM(name, "nvmlDeviceGetName");
    NVML_SYM(uuid, "nvmlDeviceGetUUID");
    NVML_SYM(memory, "nvmlDeviceGetMemoryInfo");
    NVML_SYM(utilization, "nvmlDeviceGetUtilizationRates");
#undef NVML_SYM
    nvml->process_size = sizeof(struct nvml_process);
    *(void **)&nvml->processes = dlsym(nvml->lib, "nvmlDeviceGetComputeRunningProcesses_v3");
    if (!nvml->processes)
        *(void **)&nvml->processes = dlsym(nvml->lib, "nvmlDeviceGetComputeRunningProcesses_v2");
    if (!nvml->processes) {
        *(void **)&nvml->processes = dlsym(nvml->lib, "nvmlDeviceGetComputeRunningProcesses");
        nvml->process_size = NVML_PROCESS_V1_SIZE;
    }
    if (!nvml->processes && !missing)
        missing = "nvmlDeviceGetComputeRunningProcesses";
    if (missing) {
        dlclose(nvml->lib);
        return gpuinfo_fail(err, err_size, -ENODEV, "NVML: %s has no %s", library, missing);
    }
    return 0;
}

/* Reads one GPU's processes into g (grown); what NVML cannot tell is left out. */
static int nvml_read_processes(const struct nvml *nvml, nvml_device dev, unsigned index,
                               struct gpuinfo *g, char *err, size_t err_size)
{
    unsigned int cap = 64, n = 0;
    unsigned char *buf = NULL;
    nvml_return r = NVML_SUCCESS;

    for (int attempt = 0; attempt < 4; attempt++) {
        buf = xrealloc(buf, cap * nvml->process_size);
        memset(buf, 0, cap * nvml->process_size);
        n = cap;
        r = nvml->processes(dev, &n, buf);
        if (r != NVML_ERROR_INSUFFICIENT_SIZE || n <= cap || n > GPUINFO_PROCS_MAX)
            break;
        /* More started meanwhile: ask with room to spare. */
        cap = n + 16 < GPUINFO_PROCS_MAX ? n + 16 : GPUINFO_PROCS_MAX;
    }
    if (r == NVML_ERROR_INSUFFICIENT_SIZE) {
        free(buf);
        return gpuinfo_fail(err, err_size, -E2BIG, "NVML: more than %d processes on GPU %u",
                            GPUINFO_PROCS_MAX, index);
    }
    if (r != NVML_SUCCESS || n > cap)
        n = 0; /* not supported, no permission: usage is still in the memory used */
    g->procs = xrealloc(g->procs, (g->n_procs + n + 1) * sizeof(*g->procs));
    for (unsigned int i = 0; i < n; i++) {
        struct nvml_process p = {0};
        memcpy(&p, buf + i * nvml->process_size, nvml->process_size);
        g->procs[g->n_procs++] = (struct gpuinfo_proc){
            .gpu = index,
            .pid = (int)p.pid,
            .memory = p.used_gpu_memory == NVML_VALUE_NOT_AVAILABLE ? 0 : p.used_gpu_memory,
        };
    }
    free(buf);
    return 0;
}

/* Reads GPU index into g->gpus[index]; only a missing handle fails. */
static int nvml_read_gpu(const struct nvml *nvml, unsigned index, struct gpuinfo *g, char *err,
                         size_t err_size)
{
    struct gpuinfo_gpu *gpu = &g->gpus[index];
    char name[NVML_NAME_SIZE] = "", uuid[NVML_UUID_SIZE] = "";
    struct nvml_memory memory;
    struct nvml_utilization util;
    nvml_device dev;
    nvml_return r;

    r = nvml->handle(index, &dev);
    if (r != NVML_SUCCESS)
        return gpuinfo_fail(err, err_size, -EIO, "NVML: GPU %u: %s", index, nvml_error(nvml, r));
    gpu->index = index;
    gpu->utilization = -1;
    if (nvml->name(dev, name, sizeof(name)) == NVML_SUCCESS && name[0])
        gpu->name = gpuinfo_printable(name, sizeof(name) - 1);
    else
        gpu->name = xasprintf("GPU %u", index);
    if (nvml->uuid(dev, uuid, sizeof(uuid)) == NVML_SUCCESS && uuid[0])
        gpu->uuid = gpuinfo_printable(uuid, sizeof(uuid) - 1);
    if (nvml->memory(dev, &memory) == NVML_SUCCESS) {
        gpu->memory_total = memory.total;
        gpu->memory_used = memory.used;
        gpu->memory_used_known = true;
    }
    if (nvml->utilization(dev, &util) == NVML_SUCCESS && util.gpu <= 100)
        gpu->utilization = (int)util.gpu;
    return nvml_read_processes(nvml, dev, index, g, err, err_size);
}

int gpuinfo_read_nvml(const char *library, struct gpuinfo *ret, char *err, size_t err_size)
{
    struct gpuinfo g = {.source = "nvml"};
    struct nvml nvml;
    unsigned int count = 0;
    nvml_return r;
    int result = 0;

    result = nvml_open(&nvml, library, err, err_size);
    if (result < 0)
        return result;
    r = nvml.init();
    if (r != NVML_SUCCESS) {
        result = gpuinfo_fail(err, err_size, -ENODEV, "NVML: %s: nvmlInit failed: %s", library,
                              nvml_error(&nvml, r));
        dlclose(nvml.lib);
        return result;
    }
    r = nvml.count(&count);
    if (r != NVML_SUCCESS)
        result = gpuinfo_fail(err, err_size, -EIO, "NVML: cannot count the GPUs: %s",
                              nvml_error(&nvml, r));
    else if (count == 0)
        result = gpuinfo_fail(err, err_size, -ENODEV, "NVML: the driver sees no GPU");
    else if (count > GPUINFO_GPUS_MAX)
        result = gpuinfo_fail(err, err_size, -E2BIG, "NVML: %u GPUs, more than the %d handled",
                              count, GPUINFO_GPUS_MAX);
    if (result == 0) {
        g.gpus = xcalloc(count, sizeof(*g.gpus));
        g.n_gpus = count;
        for (unsigned i = 0; i < count && result == 0; i++)
            result = nvml_read_gpu(&nvml, i, &g, err, err_size);
    }
    nvml.shutdown();
    dlclose(nvml.lib);
    if (result < 0) {
        gpuinfo_free(&g);
        return result;
    }
    *ret = g;
    return 0;
}

int gpuinfo_read(const char *nvml_library, const char *nvidia_smi, struct gpuinfo *ret, char *err,
                 size_t err_size)
{
    char nvml_err[512] = "NVML: switched off", smi_err[512] = "nvidia-smi: switched off";
    int r_nvml = -ENODEV, r_smi = -ENODEV;

    if (nvml_library && *nvml_library) {
        r_nvml = gpuinfo_read_nvml(nvml_library, ret, nvml_err, sizeof(nvml_err));
        if (r_nvml == 0)
            return 0;
    }
    if (nvidia_smi && *nvidia_smi) {
        r_smi = gpuinfo_read_smi(nvidia_smi, GPUINFO_SMI_TIMEOUT_MS, ret, smi_err, sizeof(smi_err));
        if (r_smi == 0)
            return 0;
    }
    snprintf(err, err_size, "%s; %s", nvml_err, smi_err);
    /* A probe that answered wrongly says more than one that is not there. */
    return r_nvml != -ENODEV ? r_nvml : r_smi;
}

void gpuinfo_free(struct gpuinfo *g)
{
    for (size_t i = 0; i < g->n_gpus; i++) {
        free(g->gpus[i].name);
        free(g->gpus[i].uuid);
    }
    free(g->gpus);
    free(g->procs);
    *g = (struct gpuinfo){0};
}
