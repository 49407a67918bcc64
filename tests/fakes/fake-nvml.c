/* A fake libnvidia-ml.so.1 for tests: the few NVML functions src/lib/gpuinfo.c calls,
 * answering from a JSON file named by FAKE_NVML_BOX, read again at each nvmlInit_v2 so
 * that a test can change the box while the daemon runs:
 *
 *   {"gpus": [{"name": "A100", "uuid": "GPU-0a", "total": 85899345920,
 *              "used": 1073741824, "util": 30}],          (util absent: not supported)
 *    "processes": [{"gpu": 0, "pid": 123, "memory": 1073741824}]}  (memory null: N/A)
 *
 * FAKE_NVML_FAIL=1 makes nvmlInit_v2 fail. Built twice: with
 * nvmlDeviceGetComputeRunningProcesses_v3 (build/tests/fakes/nvml/) and, with
 * FAKE_NVML_V1_ONLY, with only the unversioned one and its 16-byte entries
 * (build/tests/fakes/nvml-v1/), as an old driver has. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define SUCCESS           0
#define UNINITIALIZED     1
#define INVALID_ARGUMENT  2
#define NOT_SUPPORTED     3
#define INSUFFICIENT_SIZE 7
#define DRIVER_NOT_LOADED 9

typedef struct device *device_t;

struct memory {
    unsigned long long total, free, used;
};
struct utilization {
    unsigned int gpu, memory;
};
struct process_v1 {
    unsigned int pid;
    unsigned long long used;
};
struct process_v2 {
    unsigned int pid;
    unsigned long long used;
    unsigned int gpu_instance, compute_instance;
};

/* Every exported function, declared here for -Wmissing-prototypes. */
int nvmlInit_v2(void);
int nvmlShutdown(void);
const char *nvmlErrorString(int r);
int nvmlDeviceGetCount_v2(unsigned int *count);
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, device_t *dev);
int nvmlDeviceGetName(device_t dev, char *name, unsigned int length);
int nvmlDeviceGetUUID(device_t dev, char *uuid, unsigned int length);
int nvmlDeviceGetMemoryInfo(device_t dev, struct memory *memory);
int nvmlDeviceGetUtilizationRates(device_t dev, struct utilization *util);
int nvmlDeviceGetComputeRunningProcesses(device_t dev, unsigned int *count, struct process_v1 *p);
#ifndef FAKE_NVML_V1_ONLY
int nvmlDeviceGetComputeRunningProcesses_v3(device_t dev, unsigned int *count,
                                            struct process_v2 *p);
#endif

static json_t *box; /* the box read at nvmlInit_v2; NULL when not initialised */

int nvmlInit_v2(void)
{
    const char *file = getenv("FAKE_NVML_BOX"), *fail = getenv("FAKE_NVML_FAIL");

    if ((fail && strcmp(fail, "1") == 0) || !file)
        return DRIVER_NOT_LOADED;
    json_decref(box);
    box = json_load_file(file, 0, NULL);
    return box && json_is_array(json_object_get(box, "gpus")) ? SUCCESS : DRIVER_NOT_LOADED;
}

int nvmlShutdown(void)
{
    json_decref(box);
    box = NULL;
    return SUCCESS;
}

const char *nvmlErrorString(int r)
{
    return r == DRIVER_NOT_LOADED ? "Driver Not Loaded" : "Fake Error";
}

int nvmlDeviceGetCount_v2(unsigned int *count)
{
    if (!box)
        return UNINITIALIZED;
    *count = (unsigned int)json_array_size(json_object_get(box, "gpus"));
    return SUCCESS;
}

/* The GPU of a handle (its index + 1), or NULL. */
static json_t *gpu_of(device_t dev)
{
    return box ? json_array_get(json_object_get(box, "gpus"), (size_t)(uintptr_t)dev - 1) : NULL;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, device_t *dev)
{
    if (!box)
        return UNINITIALIZED;
    if (index >= json_array_size(json_object_get(box, "gpus")))
        return INVALID_ARGUMENT;
    *dev = (device_t)(uintptr_t)(index + 1);
    return SUCCESS;
}

/* Copies the GPU's string field key into buf. */
static int get_string(device_t dev, const char *key, char *buf, unsigned int length)
{
    json_t *gpu = gpu_of(dev);
    const char *s = json_string_value(json_object_get(gpu, key));

    if (!gpu)
        return INVALID_ARGUMENT;
    if (!s)
        return NOT_SUPPORTED;
    if (strlen(s) >= length)
        return INSUFFICIENT_SIZE;
    strcpy(buf, s);
    return SUCCESS;
}

int nvmlDeviceGetName(device_t dev, char *name, unsigned int length)
{
    return get_string(dev, "name", name, length);
}

int nvmlDeviceGetUUID(device_t dev, char *uuid, unsigned int length)
{
    return get_string(dev, "uuid", uuid, length);
}

int nvmlDeviceGetMemoryInfo(device_t dev, struct memory *memory)
{
    json_t *gpu = gpu_of(dev);

    if (!gpu)
        return INVALID_ARGUMENT;
    memory->total = (unsigned long long)json_integer_value(json_object_get(gpu, "total"));
    memory->used = (unsigned long long)json_integer_value(json_object_get(gpu, "used"));
    memory->free = memory->total - memory->used;
    return SUCCESS;
}

int nvmlDeviceGetUtilizationRates(device_t dev, struct utilization *util)
{
    json_t *gpu = gpu_of(dev), *value = json_object_get(gpu, "util");

    if (!gpu)
        return INVALID_ARGUMENT;
    if (!json_is_integer(value))
        return NOT_SUPPORTED;
    util->gpu = (unsigned int)json_integer_value(value);
    util->memory = 0;
    return SUCCESS;
}

/* Fills the processes on dev into entries of size bytes each (v1 or v2 layout). */
static int processes(device_t dev, unsigned int *count, void *entries, size_t size)
{
    json_t *list = json_object_get(box, "processes"), *p;
    unsigned int n = 0, index = (unsigned int)((uintptr_t)dev - 1);
    size_t i;

    if (!gpu_of(dev))
        return INVALID_ARGUMENT;
    json_array_foreach(list, i, p) n += json_integer_value(json_object_get(p, "gpu")) == index;
    if (n > *count) {
        *count = n;
        return INSUFFICIENT_SIZE;
    }
    *count = 0;
    json_array_foreach(list, i, p)
    {
        struct process_v2 e = {0};
        json_t *memory = json_object_get(p, "memory");
        if (json_integer_value(json_object_get(p, "gpu")) != index)
            continue;
        e.pid = (unsigned int)json_integer_value(json_object_get(p, "pid"));
        e.used = json_is_integer(memory) ? (unsigned long long)json_integer_value(memory) : ~0ULL;
        memcpy((char *)entries + (*count)++ * size, &e, size);
    }
    return SUCCESS;
}

int nvmlDeviceGetComputeRunningProcesses(device_t dev, unsigned int *count, struct process_v1 *p)
{
    return processes(dev, count, p, sizeof(*p));
}

#ifndef FAKE_NVML_V1_ONLY
int nvmlDeviceGetComputeRunningProcesses_v3(device_t dev, unsigned int *count, struct process_v2 *p)
{
    return processes(dev, count, p, sizeof(*p));
}
#endif
