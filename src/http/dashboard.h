/* The dashboard (SPEC section 7): GET / and its script and style sheet, static files
 * compiled into the binary (http/dashboard_assets.h), served to anyone the gate lets
 * through without a key; the page then calls the API (/services, /events, the logs) with
 * the key it asks its user for. Each file is answered with its Content-Type, a
 * Content-Security-Policy that allows nothing from elsewhere and no inline script, and an
 * ETag (304 when If-None-Match names it). */
#ifndef NANNY_DASHBOARD_H
#define NANNY_DASHBOARD_H

#include <stddef.h>

#include "http/dashboard_assets.h"
#include "http/server.h"

/* What every dashboard answer carries. */
#define DASHBOARD_CSP                                                                              \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
#define DASHBOARD_CACHE "no-cache" /* revalidated each time: a new binary shows at once */

struct dashboard;

/* Prepares the answers of every asset once. */
struct dashboard *dashboard_new(void);
void dashboard_free(struct dashboard *dash);

/* The paths to mount on the API (api_mount(), each with GET): i from 0 while not NULL. */
const char *dashboard_path(size_t i);

/* The asset served at path; NULL for none. */
const struct dashboard_asset *dashboard_find(const char *path);

/* True when an If-None-Match header (NULL: none) names etag: "*", the tag itself, or its
 * weak form W/"...", alone or in a comma-separated list. */
bool dashboard_etag_matches(const char *if_none_match, const char *etag);

/* The handler of every mounted path (data: the struct dashboard). */
void dashboard_handle(void *data, struct request *req);

#endif
