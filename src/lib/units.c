/* Parsers for durations and port numbers: strict, with no locale and no strtod(). */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib/units.h"

/* Fraction digits beyond this carry no meaning at millisecond precision. */
#define UNITS_FRACTION_DIGITS_MAX 9

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Returns the milliseconds in one unit, or 0 when suffix is not a known unit. */
static uint64_t duration_unit_ms(const char *suffix)
{
    if (*suffix == '\0' || strcmp(suffix, "s") == 0)
        return 1000;
    if (strcmp(suffix, "ms") == 0)
        return 1;
    if (strcmp(suffix, "m") == 0)
        return 60 * 1000;
    if (strcmp(suffix, "h") == 0)
        return 3600 * 1000;
    return 0;
}

/* Reads DIGITS[.DIGITS]UNIT exactly; a fraction must come to whole milliseconds. */
int units_parse_duration(const char *s, uint64_t *ret_ms)
{
    const char *p = s;
    uint64_t whole = 0, fraction = 0, fraction_scale = 1;
    bool too_big = false;

    if (!is_digit(*p))
        return -EINVAL;
    for (; is_digit(*p); p++) {
        if (whole > UNITS_DURATION_MAX_MS)
            too_big = true;
        else
            whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (!is_digit(*p))
            return -EINVAL;
        for (int digits = 0; is_digit(*p); p++, digits++) {
            if (digits >= UNITS_FRACTION_DIGITS_MAX)
                return -EINVAL;
            fraction = fraction * 10 + (uint64_t)(*p - '0');
            fraction_scale *= 10;
        }
    }

    uint64_t unit = duration_unit_ms(p);
    if (unit == 0)
        return -EINVAL;
    /* fraction < 10^9 and unit <= 3.6e6, so the product fits in 64 bits. */
    if ((fraction * unit) % fraction_scale != 0)
        return -EINVAL;
    if (too_big || whole > UNITS_DURATION_MAX_MS / unit)
        return -ERANGE;

    uint64_t ms = whole * unit + fraction * unit / fraction_scale;
    if (ms > UNITS_DURATION_MAX_MS)
        return -ERANGE;
    *ret_ms = ms;
    return 0;
}

/* The bytes in one size unit, or 0 when suffix is not a known unit. */
static uint64_t size_unit(const char *suffix)
{
    static const struct {
        const char *name;
        uint64_t bytes;
    } units[] = {
        {"", 1},
        {"B", 1},
        {"KiB", UINT64_C(1) << 10},
        {"MiB", UINT64_C(1) << 20},
        {"GiB", UINT64_C(1) << 30},
        {"TiB", UINT64_C(1) << 40},
        {"KB", 1000},
        {"MB", 1000 * 1000},
        {"GB", 1000 * 1000 * 1000},
        {"TB", UINT64_C(1000) * 1000 * 1000 * 1000},
    };

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(suffix, units[i].name) == 0)
            return units[i].bytes;
    return 0;
}

/* Reads DIGITS[UNIT] exactly. */
int units_parse_size(const char *s, uint64_t *ret)
{
    const char *p = s;
    uint64_t number = 0, unit;
    bool too_big = false;

    if (!is_digit(*p))
        return -EINVAL;
    for (; is_digit(*p); p++) {
        if (number > UNITS_SIZE_MAX)
            too_big = true;
        else
            number = number * 10 + (uint64_t)(*p - '0');
    }
    unit = size_unit(p);
    if (unit == 0)
        return -EINVAL;
    if (too_big || number > UNITS_SIZE_MAX / unit)
        return -ERANGE;
    *ret = number * unit;
    return 0;
}

/* Accepts decimal digits only: no sign, no spaces, no hex. */
int units_parse_port(const char *s, uint16_t *ret)
{
    uint32_t value = 0;
    bool too_big = false;

    if (!is_digit(*s))
        return -EINVAL;
    for (const char *p = s; *p; p++) {
        if (!is_digit(*p))
            return -EINVAL;
        if (value > 65535)
            too_big = true;
        else
            value = value * 10 + (uint32_t)(*p - '0');
    }
    if (too_big || value == 0 || value > 65535)
        return -ERANGE;
    *ret = (uint16_t)value;
    return 0;
}
