/* Parsers for the small value types of manifests and configuration. Pure functions. */
#ifndef NANNY_UNITS_H
#define NANNY_UNITS_H

#include <stdint.h>

/* Longest duration accepted anywhere: one week. */
#define UNITS_DURATION_MAX_MS (7ULL * 24 * 3600 * 1000)

/* Parses "500ms", "5s", "2m", "1h" or a plain number of seconds ("5", "0.5") into
 * milliseconds. Returns -EINVAL for anything else, -ERANGE above UNITS_DURATION_MAX_MS. */
int units_parse_duration(const char *s, uint64_t *ret_ms);

/* Largest size accepted anywhere: 1 PiB. */
#define UNITS_SIZE_MAX (UINT64_C(1) << 50)

/* Parses a size in bytes: a whole number, optionally followed by a unit: B, KiB, MiB,
 * GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000), as "12GiB" or "500MB".
 * Returns -EINVAL for anything else (a fraction, a sign, a space), -ERANGE above
 * UNITS_SIZE_MAX. */
int units_parse_size(const char *s, uint64_t *ret);

/* Parses a TCP/UDP port number 1..65535 written in decimal. -EINVAL or -ERANGE. */
int units_parse_port(const char *s, uint16_t *ret);

#endif
