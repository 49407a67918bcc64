/* nanny new: a new service folder copied from the service template, with its name and
 * host port filled in (SPEC sections 2 and 5). Runs as a command, never in the daemon. */
#ifndef NANNY_SCAFFOLD_H
#define NANNY_SCAFFOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The seed's port ranges (SPEC section 5). */
#define SCAFFOLD_GPU_PORT_FIRST 8001
#define SCAFFOLD_GPU_PORT_LAST  8009
#define SCAFFOLD_CPU_PORT_FIRST 8010
#define SCAFFOLD_CPU_PORT_LAST  8079
#define SCAFFOLD_DAEMON_PORT    8080

/* The template's folder in the services folder, and what its files say in place of the
 * new service's name and host port. */
#define SCAFFOLD_TEMPLATE_FOLDER "_template"
#define SCAFFOLD_TEMPLATE_NAME   "my-service"
#define SCAFFOLD_TEMPLATE_PORT   "8001"

/* Caps on a template: the size of one file and the number of its entries. */
#define SCAFFOLD_FILE_MAX    (1024 * 1024)
#define SCAFFOLD_ENTRIES_MAX 256

/* The names and host ports the services of a folder already hold. Opaque. */
struct scaffold_services;

/* Reads every service folder of dir as discovery does (folders starting with '_' or '.'
 * are not services) and parses each service.yaml with the manifest parser. A broken
 * manifest gives no ports (its folder and any name it spells still count). Returns
 * -errno with a sentence in err when dir cannot be read. */
int scaffold_services_read(const char *dir, struct scaffold_services **ret, char *err,
                           size_t err_size);

void scaffold_services_free(struct scaffold_services *s);

/* The folder of the service named name, or NULL. Borrowed from s. */
const char *scaffold_name_owner(const struct scaffold_services *s, const char *name);

/* The name (or, for a manifest without a readable name, the folder) of the first service
 * that declares host port port, or NULL. Borrowed from s. */
const char *scaffold_port_owner(const struct scaffold_services *s, uint16_t port);

/* The lowest port of the GPU or CPU range that no service declares; -ENOSPC when every
 * one is taken. */
int scaffold_pick_port(const struct scaffold_services *s, bool gpu, uint16_t *ret);

/* What a template's text is filled in with. */
struct scaffold_params {
    const char *name;
    uint16_t port;
    bool gpu;
};

/* The content of the template file file_name (text, len bytes) for the new service:
 * SCAFFOLD_TEMPLATE_NAME becomes the name and SCAFFOLD_TEMPLATE_PORT the port in every
 * text file; without gpu, service.yaml's "gpu_required: true" line says false and the
 * lines between "# >>> gpu" and "# <<< gpu" in docker-compose.yml are commented out. A
 * file holding a NUL byte is binary and copied as it is. *ret (owned by the caller, with
 * a NUL after *ret_len bytes) on success; -EINVAL with a sentence in err for unbalanced
 * gpu markers. */
int scaffold_render(const char *file_name, const char *text, size_t len,
                    const struct scaffold_params *p, char **ret, size_t *ret_len, char *err,
                    size_t err_size);

/* A request for a new service. */
struct scaffold_request {
    const char *name;
    const char *services_dir;
    const char *template_dir; /* NULL: SERVICES/_template */
    bool gpu;
    uint16_t port; /* 0: the first free one of the range */
};

/* Creates SERVICES/NAME from the template: built in a temporary sibling folder, checked
 * with the manifest parser, then renamed into place, so that the daemon never sees half a
 * service and an error leaves nothing behind. *ret_path (owned by the caller) and
 * *ret_port on success; a negative errno with a sentence in err otherwise (-EINVAL a bad
 * name, port or template, -EEXIST the name is taken, -EADDRINUSE the port is taken,
 * -ENOSPC no free port left, -ELOOP a symlink in the template). */
int scaffold_create(const struct scaffold_request *req, char **ret_path, uint16_t *ret_port,
                    char *err, size_t err_size);

/* The command "nanny new": argv[0] is "new". Returns the exit code: 0 done, 1 refused or
 * failed, 2 bad usage. */
int scaffold_main(int argc, char **argv);

#endif
