/* Small helpers over jansson. */
#ifndef NANNY_JSON_H
#define NANNY_JSON_H

#include <jansson.h>

/* A JSON string for text that may not be valid UTF-8 (folder names, say): bytes that do
 * not form UTF-8 become '?'. New reference. */
json_t *json_text(const char *s);

#endif
