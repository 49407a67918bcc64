/* libFuzzer target for the request-body parsers. */
#include <stddef.h>
#include <stdint.h>

#include "http/body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct start_request req;
    char err[256];

    body_parse_start((const char *)data, size, &req, err, sizeof(err));
    body_parse_empty((const char *)data, size, err, sizeof(err));
    return 0;
}
