/* What the pieces of nanny new share: the error helper and the template copy. Private to
 * scaffold*.c; the rest of the code sees only scaffold.h. */
#ifndef NANNY_SCAFFOLD_INTERNAL_H
#define NANNY_SCAFFOLD_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>

#include "cli/scaffold.h"

/* Writes the message into err (err_size bytes) and returns r, the negative errno the
 * caller passes on. */
int scaffold_fail(char *err, size_t err_size, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Copies every regular file of template_dir, filled in by scaffold_render(), into the
 * folder dest_fd (dest_path, for messages): folders are left out, a symlink or any other
 * entry is refused, and the template must hold a service.yaml. *ret_mode gets the mode
 * the new folder should take (the template folder's, writable by its owner). A negative
 * errno with a sentence in err otherwise. */
int scaffold_copy_template(const char *template_dir, const struct scaffold_params *params,
                           int dest_fd, const char *dest_path, mode_t *ret_mode, char *err,
                           size_t err_size);

#endif
