/* gpu_required:, gpu: and devices: of a manifest: what a service needs of the box's GPUs
 * (SPEC section 7 "GPUs"): N whole GPUs, or so much memory on each of N, maybe pinned. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/manifest_internal.h"

enum gpu_field { G_COUNT, G_MEMORY, G_ENFORCE, G_FIELDS };

/* Reads the settings of a gpu: mapping into m->gpu. */
static void parse_gpu_settings(struct manifest_parser *p, yaml_node_t *node)
{
    struct manifest_gpu *gpu = &p->m->gpu;
    struct yamldoc_field g[G_FIELDS] = {
        [G_COUNT] = {.key = "count"},
        [G_MEMORY] = {.key = "memory"},
        [G_ENFORCE] = {.key = "enforce"},
    };
    uint64_t count;

    manifest_check(p, yamldoc_map_fields(p->doc, node, "gpu", g, G_FIELDS, p->errors, p->warnings));
    gpu->count = 1;
    if (g[G_COUNT].value &&
        manifest_check(p, yamldoc_read_uint(p->doc, g[G_COUNT].value, "gpu.count", 1,
                                            MANIFEST_GPUS_MAX, &count, p->errors)) == 0)
        gpu->count = (unsigned)count;
    if (g[G_MEMORY].value &&
        manifest_check(p, yamldoc_read_size(p->doc, g[G_MEMORY].value, "gpu.memory", &gpu->memory,
                                            p->errors)) == 0 &&
        gpu->memory == 0)
        manifest_error(p, g[G_MEMORY].line,
                       "gpu.memory must be more than 0, such as 12GiB (leave it out for whole "
                       "GPUs)");
    if (g[G_ENFORCE].value &&
        manifest_check(p, yamldoc_read_bool(p->doc, g[G_ENFORCE].value, "gpu.enforce",
                                            &gpu->enforce, p->errors)) == 0 &&
        gpu->enforce && !g[G_MEMORY].value)
        manifest_error(p, g[G_ENFORCE].line,
                       "gpu.enforce stops a service that uses more than its gpu.memory: give "
                       "gpu.memory (on whole GPUs a service cannot use more than it has)");
}

/* Reads devices: a list of distinct GPU indexes, into the bit set m->gpu.devices. */
static void parse_devices(struct manifest_parser *p, yaml_node_t *node)
{
    struct manifest_gpu *gpu = &p->m->gpu;
    char key[32];
    size_t n;

    if (node->type != YAML_SEQUENCE_NODE) {
        manifest_type_error(p, node, "devices must be a list of GPU indexes such as [0, 1]");
        return;
    }
    n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0) {
        manifest_error(p, yamldoc_line(node),
                       "devices must list at least one GPU index, such as [0] (leave it out for "
                       "any GPU)");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, node->data.sequence.items.start[i]);
        uint64_t index;

        snprintf(key, sizeof(key), "devices[%zu]", i);
        if (manifest_check(p, yamldoc_read_uint(p->doc, item, key, 0, MANIFEST_GPUS_MAX - 1, &index,
                                                p->errors)) < 0)
            continue;
        if (gpu->devices & (UINT64_C(1) << index))
            manifest_error(p, yamldoc_line(item), "devices lists GPU %" PRIu64 " twice", index);
        gpu->devices |= UINT64_C(1) << index;
    }
}

/* Settles what the service needs: gpu_required: true alone is one whole GPU (the seed's
 * rule); gpu: makes it a GPU service; devices: pins it, to at least as many GPUs as it
 * needs. */
void manifest_parse_gpu(struct manifest_parser *p)
{
    struct yamldoc_field *f = p->fields;
    struct manifest *m = p->m;
    bool required_given = false;

    if (f[F_GPU_REQUIRED].value)
        required_given =
            manifest_check(p, yamldoc_read_bool(p->doc, f[F_GPU_REQUIRED].value, "gpu_required",
                                                &m->gpu_required, p->errors)) == 0;
    if (f[F_GPU].value) {
        if (f[F_GPU].value->type != YAML_MAPPING_NODE) {
            manifest_type_error(p, f[F_GPU].value,
                                "gpu must be a mapping such as {count: 1, memory: 12GiB}");
            return;
        }
        if (required_given && !m->gpu_required)
            manifest_error(p, f[F_GPU_REQUIRED].line,
                           "gpu_required: false but gpu: says what GPUs it needs: remove one");
        parse_gpu_settings(p, f[F_GPU].value);
        m->gpu_required = true;
    } else if (m->gpu_required) {
        m->gpu.count = 1; /* one whole GPU, exclusive */
    }
    if (!f[F_DEVICES].value)
        return;
    if (!m->gpu_required) {
        manifest_error(p, f[F_DEVICES].line,
                       "devices pins a GPU service: add gpu: or gpu_required: true, or remove "
                       "devices");
        return;
    }
    parse_devices(p, f[F_DEVICES].value);
    if (m->gpu.devices && (unsigned)__builtin_popcountll(m->gpu.devices) < m->gpu.count)
        manifest_error(p, f[F_DEVICES].line,
                       "devices lists %d GPUs but gpu.count asks for %u: list at least as many",
                       __builtin_popcountll(m->gpu.devices), m->gpu.count);
}

/* The need as JSON: null for a service that needs no GPU, or the seed's one whole GPU
 * (gpu_required says it all), so that manifests written before gpu: read as they did. New
 * reference. */
json_t *manifest_gpu_to_json(const struct manifest *m)
{
    json_t *devices;

    if (!m->gpu_required || (m->gpu.count == 1 && m->gpu.memory == 0 && m->gpu.devices == 0))
        return json_null();
    devices = json_array();
    for (unsigned i = 0; i < MANIFEST_GPUS_MAX; i++)
        if (m->gpu.devices & (UINT64_C(1) << i))
            json_array_append_new(devices, json_integer(i));
    return json_pack("{s:i, s:o, s:b, s:o, s:b}", "count", (int)m->gpu.count, "memory",
                     m->gpu.memory ? json_integer((json_int_t)m->gpu.memory) : json_null(),
                     "exclusive", m->gpu.memory == 0, "devices", devices, "enforce",
                     m->gpu.enforce);
}
