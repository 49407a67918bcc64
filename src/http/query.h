/* Query arguments: the values libmicrohttpd has split and unescaped, checked into plain
 * numbers. Pure functions, so that they can be fuzzed. */
#ifndef NANNY_QUERY_H
#define NANNY_QUERY_H

/* Reads a count such as ?tail=N: NULL (absent) gives dflt, a value above max gives max
 * (also when it overflows). Returns 0, or -EINVAL for anything but 1 to 20 decimal
 * digits (no sign, no space). */
int query_count(const char *s, unsigned dflt, unsigned max, unsigned *ret);

#endif
