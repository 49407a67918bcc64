/* A CUDA process that no service owns, for bench/gpu-device.sh: it takes MIB mebibytes of
 * GPU memory on device INDEX (as CUDA numbers it; the script sets CUDA_DEVICE_ORDER to
 * PCI_BUS_ID so that NVML's numbers are CUDA's), says "holding" on stdout, and keeps it
 * until killed or SECONDS have passed. The driver's libcuda.so.1 is loaded with dlopen and
 * its few functions declared here, so that nothing of NVIDIA's is needed to build it.
 *   gpu-foreign INDEX MIB SECONDS */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int (*cu_init_fn)(unsigned flags);
typedef int (*cu_device_get_fn)(int *device, int ordinal);
typedef int (*cu_ctx_create_fn)(void **ctx, unsigned flags, int device);
typedef int (*cu_mem_alloc_fn)(unsigned long long *dptr, size_t bytes);

/* The symbol name in libcuda, or exits saying which is missing. */
static void *need(void *lib, const char *name)
{
    void *f = dlsym(lib, name);

    if (!f) {
        fprintf(stderr, "gpu-foreign: libcuda.so.1 has no %s\n", name);
        exit(1);
    }
    return f;
}

int main(int argc, char **argv)
{
    void *lib, *ctx = NULL;
    unsigned long long ptr = 0;
    int device = 0, r;
    long index, mib, seconds;

    if (argc != 4 || (index = strtol(argv[1], NULL, 10)) < 0 ||
        (mib = strtol(argv[2], NULL, 10)) <= 0 || (seconds = strtol(argv[3], NULL, 10)) <= 0) {
        fprintf(stderr, "usage: gpu-foreign INDEX MIB SECONDS\n");
        return 2;
    }
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "gpu-foreign: %s\n", dlerror());
        return 1;
    }
    if ((r = ((cu_init_fn)need(lib, "cuInit"))(0)) != 0 ||
        (r = ((cu_device_get_fn)need(lib, "cuDeviceGet"))(&device, (int)index)) != 0 ||
        (r = ((cu_ctx_create_fn)need(lib, "cuCtxCreate_v2"))(&ctx, 0, device)) != 0 ||
        (r = ((cu_mem_alloc_fn)need(lib, "cuMemAlloc_v2"))(&ptr, (size_t)mib << 20)) != 0) {
        fprintf(stderr, "gpu-foreign: CUDA error %d\n", r);
        return 1;
    }
    printf("holding %ld MiB on GPU %ld, pid %d\n", mib, index, (int)getpid());
    fflush(stdout);
    sleep((unsigned)seconds);
    return 0;
}
