/* Parsers for the small value types of manifests and configuration. Pure functions. */
#ifndef NANNY_UNITS_H
#define NANNY_UNITS_H

#include <stdint.h>

/* Longest duration accepted anywhere: one week. */
#define UNITS_DURATION_MAX_MS (7ULL * 24 * 3600 * 1000)

/* Parses "500ms", "5s", "2m", "1h" or a plain number of seconds ("5", "0.5") into
 * milliseconds. Returns -EINVAL for anything else, -ERANGE above UNITS_DURATION_MAX_MS. */
int units_parse_duration(const char *s, uint64_t *ret_ms);

/* Parses a TCP/UDP port number 1..65535 written in decimal. -EINVAL or -ERANGE. */
int units_parse_port(const char *s, uint16_t *ret);

#endif
