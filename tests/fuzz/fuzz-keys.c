/* libFuzzer target for the keys file: the input is its text, read by keys_parse() as
 * keys_load() reads a file it opened. Any bytes must give a set of keys or an error that
 * says why, never a crash, a hang or a leak; every key of a set that loads has a name the
 * CLI accepts and a role, and is found again by its name. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct keys *keys = NULL;
    char err[512] = "";

    if (size > KEYS_FILE_MAX)
        return 0;
    if (keys_parse((const char *)data, size, "keys.yaml", &keys, err, sizeof(err)) < 0) {
        if (err[0] == '\0')
            abort(); /* a refusal always says why */
        return 0;
    }
    for (size_t i = 0; i < keys->n; i++)
        if (!key_name_valid(keys->items[i].name) || keys->items[i].role >= ROLE_COUNT ||
            keys_by_name(keys, keys->items[i].name) != &keys->items[i])
            abort();
    keys_free(keys);
    return 0;
}
