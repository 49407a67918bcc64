/* The dashboard's static files (src/http/dashboard/), compiled into the binary: the
 * table is written at build time by scripts/embed.py (meson's custom_target). */
#ifndef NANNY_DASHBOARD_ASSETS_H
#define NANNY_DASHBOARD_ASSETS_H

#include <stddef.h>

struct dashboard_asset {
    const char *path;         /* "/" for index.html, else "/dashboard/NAME" */
    const char *content_type; /* "text/css; charset=utf-8" */
    const char *etag;         /* quoted: "\"0123456789abcdef\"" (its bytes' SHA-256) */
    const unsigned char *data;
    size_t len;
};

extern const struct dashboard_asset dashboard_assets[];
extern const size_t dashboard_assets_count;

#endif
