/* The wall clock, and the CPU clock of the calling thread. */
#ifndef NANNY_CLOCK_H
#define NANNY_CLOCK_H

#include <stdint.h>

/* The time now, in milliseconds since the Unix epoch. */
int64_t unix_ms(void);

/* The CPU time the calling thread has used, in nanoseconds: what a piece of work cost,
 * less the time the thread was preempted. */
uint64_t thread_cpu_ns(void);

#endif
