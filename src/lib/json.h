/* Small helpers over jansson. */
#ifndef NANNY_JSON_H
#define NANNY_JSON_H

#include <stdint.h>

#include <jansson.h>

/* A JSON string for text that may not be valid UTF-8 (folder names, say): bytes that do
 * not form UTF-8 become '?'. New reference. */
json_t *json_text(const char *s);

/* Unix milliseconds as an ISO 8601 UTC string ("2026-12-02T19:31:16.123Z"), or null for
 * 0 and below. New reference. */
json_t *json_time_ms(int64_t ms);

#endif
