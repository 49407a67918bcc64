/* File descriptor helpers. */
#ifndef NANNY_IO_H
#define NANNY_IO_H

#include <stddef.h>

/* Writes all of buf to fd (again after EINTR and short writes); 0 or a negative errno. */
int write_all(int fd, const char *buf, size_t len);

#endif
