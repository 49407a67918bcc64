/* The wall clock. */
#ifndef NANNY_CLOCK_H
#define NANNY_CLOCK_H

#include <stdint.h>

/* The time now, in milliseconds since the Unix epoch. */
int64_t unix_ms(void);

#endif
