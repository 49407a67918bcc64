/* libFuzzer target for the manifest parser: any bytes must give a manifest or errors,
 * never a crash, a hang or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct diags errors = {0}, warnings = {0};
    struct manifest *m = NULL;
    char *name = NULL;

    if (size > MANIFEST_SIZE_MAX)
        return 0;
    if (manifest_parse((const char *)data, size, "/nonexistent-fuzz-dir", &m, &name, &errors,
                       &warnings) == 0) {
        /* The JSON form must always be complete: every string valid UTF-8. */
        json_t *j = manifest_to_json(m);
        char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

        if (!text)
            abort();
        free(text);
        json_decref(j);
        manifest_free(m);
    } else if (errors.n == 0) {
        abort(); /* a failure always says why */
    }
    /* Messages end up in JSON too. */
    for (size_t i = 0; i < errors.n; i++) {
        json_t *s = json_string(errors.items[i].message);

        if (!s)
            abort();
        json_decref(s);
    }
    for (size_t i = 0; i < warnings.n; i++) {
        json_t *s = json_string(warnings.items[i].message);

        if (!s)
            abort();
        json_decref(s);
    }
    free(name);
    diags_clear(&errors);
    diags_clear(&warnings);
    return 0;
}
