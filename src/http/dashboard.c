/* The dashboard's static files (see dashboard.h): one prepared answer per file, and one
 * 304 per file for a browser that has it already. */
#include <stdbool.h>
#include <string.h>

#include <microhttpd.h>

#include "http/dashboard.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct dashboard_answer {
    const struct dashboard_asset *asset;
    struct MHD_Response *full;         /* 200 with the file */
    struct MHD_Response *not_modified; /* 304, no body */
};

struct dashboard {
    struct dashboard_answer *answers; /* one per asset, in the table's order */
    size_t n;
};

/* Adds the headers every answer for asset carries; aborts when libmicrohttpd cannot. */
static void add_headers(struct MHD_Response *resp, const struct dashboard_asset *asset)
{
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, asset->etag) != MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, DASHBOARD_CACHE) != MHD_YES ||
        MHD_add_response_header(resp, "Content-Security-Policy", DASHBOARD_CSP) != MHD_YES ||
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") != MHD_YES ||
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer") != MHD_YES)
        fatal("out of memory (dashboard headers)");
}

/* The two answers of one asset; the bytes are the binary's own, never copied. */
static void answer_init(struct dashboard_answer *a, const struct dashboard_asset *asset)
{
    a->asset = asset;
    a->full =
        MHD_create_response_from_buffer(asset->len, (void *)asset->data, MHD_RESPMEM_PERSISTENT);
    a->not_modified = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!a->full || !a->not_modified)
        fatal("out of memory (dashboard answers)");
    if (MHD_add_response_header(a->full, MHD_HTTP_HEADER_CONTENT_TYPE, asset->content_type) !=
        MHD_YES)
        fatal("out of memory (dashboard headers)");
    add_headers(a->full, asset);
    add_headers(a->not_modified, asset);
}

struct dashboard *dashboard_new(void)
{
    struct dashboard *dash = xcalloc(1, sizeof(*dash));

    dash->n = dashboard_assets_count;
    dash->answers = xcalloc(dash->n, sizeof(*dash->answers));
    for (size_t i = 0; i < dash->n; i++)
        answer_init(&dash->answers[i], &dashboard_assets[i]);
    return dash;
}

void dashboard_free(struct dashboard *dash)
{
    if (!dash)
        return;
    for (size_t i = 0; i < dash->n; i++) {
        MHD_destroy_response(dash->answers[i].full);
        MHD_destroy_response(dash->answers[i].not_modified);
    }
    free(dash->answers);
    free(dash);
}

const char *dashboard_path(size_t i)
{
    return i < dashboard_assets_count ? dashboard_assets[i].path : NULL;
}

const struct dashboard_asset *dashboard_find(const char *path)
{
    for (size_t i = 0; i < dashboard_assets_count; i++)
        if (strcmp(dashboard_assets[i].path, path) == 0)
            return &dashboard_assets[i];
    return NULL;
}

bool dashboard_etag_matches(const char *if_none_match, const char *etag)
{
    /* Our tags are quoted hex: found anywhere in the list, bare or after W/, they are it. */
    return if_none_match &&
           (strcmp(if_none_match, "*") == 0 || strstr(if_none_match, etag) != NULL);
}

void dashboard_handle(void *data, struct request *req)
{
    struct dashboard *dash = data;
    const struct dashboard_asset *asset = dashboard_find(request_path(req));
    struct dashboard_answer *a;

    if (!asset) { /* only the mounted paths come here */
        request_reply_error(req, MHD_HTTP_NOT_FOUND, "not_found", "no such file of the dashboard");
        return;
    }
    a = &dash->answers[asset - dashboard_assets];
    if (dashboard_etag_matches(request_header(req, "If-None-Match"), asset->etag))
        request_reply_response(req, MHD_HTTP_NOT_MODIFIED, a->not_modified);
    else
        request_reply_response(req, MHD_HTTP_OK, a->full);
}
