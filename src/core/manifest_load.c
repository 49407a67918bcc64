/* Loading a manifest from disk: the file must lie inside the services folder (a symlink
 * may not lead out of it) and be a regular file of at most MANIFEST_SIZE_MAX bytes; the
 * compose file it names or the folder holds is held to the same rule (manifest.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/manifest.h"
#include "core/manifest_internal.h"
#include "lib/alloc.h"

/* Returns a static description of an errno value that is safe on any thread. */
static const char *errno_text(int e)
{
    const char *s = strerrordesc_np(e);

    return s ? s : "unknown error";
}

bool manifest_path_inside(const char *real, const char *root_real)
{
    size_t len = strlen(root_real);

    if (strcmp(root_real, "/") == 0)
        return real[0] == '/' && real[1] != '\0';
    return strncmp(real, root_real, len) == 0 && real[len] == '/';
}

/* Reads at most MANIFEST_SIZE_MAX bytes of a regular file into a buffer sized by fstat()
 * (one byte more, to see the end of the file in the same read). The file may grow while it
 * is read, so the buffer grows up to the limit, and the limit is checked on what was read. */
static int read_manifest_file(const char *real, char **ret, size_t *ret_len, struct diags *errors)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0, size;
    int fd, r;

    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        diags_add(errors, 0, "cannot open %s: %s", MANIFEST_FILE_NAME, errno_text(-r));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        diags_add(errors, 0, "cannot read %s: %s", MANIFEST_FILE_NAME, errno_text(-r));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        diags_add(errors, 0, "%s is not a regular file: make it a plain text file",
                  MANIFEST_FILE_NAME);
        r = -EINVAL;
        goto out;
    }
    if (st.st_size > MANIFEST_SIZE_MAX) {
        r = -EFBIG;
        goto out;
    }

    size = (size_t)st.st_size + 1;
    buf = xmalloc(size);
    for (;;) {
        ssize_t n;

        if (len == size) {
            if (size > MANIFEST_SIZE_MAX) {
                r = -EFBIG;
                goto out;
            }
            size = size > MANIFEST_SIZE_MAX / 2 ? MANIFEST_SIZE_MAX + 1 : 2 * size;
            buf = xrealloc(buf, size);
        }
        n = read(fd, buf + len, size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            diags_add(errors, 0, "cannot read %s: %s", MANIFEST_FILE_NAME, errno_text(-r));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *ret = buf;
    *ret_len = len;
    buf = NULL;
    r = 0;

out:
    if (r == -EFBIG)
        diags_add(errors, 0,
                  "%s is larger than the limit of %d bytes (1 MiB): a manifest is a short "
                  "text file",
                  MANIFEST_FILE_NAME, MANIFEST_SIZE_MAX);
    free(buf);
    close(fd);
    return r;
}

/* Returns the resolved folder that holds path (a symlinked manifest keeps its own
 * folder's), or NULL with errno set. */
static char *manifest_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir, *real;

    if (!slash)
        return realpath(".", NULL);
    dir = slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
    real = realpath(dir, NULL);
    free(dir);
    return real;
}

/* Checks where the file lies before reading it: a symlink must not carry the daemon
 * outside the services folder. */
int manifest_load(const char *path, const char *root, struct manifest **ret, char **ret_name,
                  struct diags *errors, struct diags *warnings)
{
    char quoted[TEXT_QUOTE_MAX + 1], quoted_root[TEXT_QUOTE_MAX + 1];
    char *root_real = NULL, *real = NULL, *dir = NULL, *buf = NULL;
    size_t len = 0;
    int r;

    root_real = realpath(root, NULL);
    if (!root_real) {
        r = -errno;
        diags_add(errors, 0, "cannot resolve the services folder: %s", errno_text(-r));
        goto out;
    }
    real = realpath(path, NULL);
    if (!real) {
        struct stat st;

        r = -errno;
        diags_add(errors, 0, "cannot open %s: %s%s", MANIFEST_FILE_NAME, errno_text(-r),
                  lstat(path, &st) == 0 && S_ISLNK(st.st_mode)
                      ? " (it is a symlink to a file that does not exist)"
                      : "");
        goto out;
    }
    if (!manifest_path_inside(real, root_real)) {
        text_quote(real, strlen(real), quoted, sizeof(quoted));
        text_quote(root_real, strlen(root_real), quoted_root, sizeof(quoted_root));
        diags_add(errors, 0,
                  "%s is a symlink to %s, outside the services folder %s: copy the file into "
                  "the service folder instead",
                  MANIFEST_FILE_NAME, quoted, quoted_root);
        r = -EPERM;
        goto out;
    }
    dir = manifest_folder(path);
    if (!dir) {
        r = -errno;
        diags_add(errors, 0, "cannot resolve the service folder: %s", errno_text(-r));
        goto out;
    }
    r = read_manifest_file(real, &buf, &len, errors);
    if (r < 0)
        goto out;
    r = manifest_parse_within(buf, len, dir, root_real, ret, ret_name, errors, warnings);

out:
    free(buf);
    free(dir);
    free(real);
    free(root_real);
    return r;
}
