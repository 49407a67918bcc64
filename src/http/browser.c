/* The browser-safety rules: a web page must not reach the daemon through DNS rebinding
 * (a foreign Host) nor change anything from another origin (a foreign Origin). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "http/browser.h"

/* Whether text is port in decimal, as a Host header writes it: digits only, no leading
 * zero (what "%u" prints; checked on every request, so without printf). */
static bool port_is(const char *text, unsigned port)
{
    unsigned long value = 0;
    size_t n = 0;

    for (; n < 6 && text[n] >= '0' && text[n] <= '9'; n++)
        value = value * 10 + (unsigned long)(text[n] - '0');
    return n > 0 && text[n] == '\0' && (text[0] != '0' || n == 1) && value == port;
}

/* True when host (a Host header: "name" or "name:port") names this daemon: a loopback
 * name with our port (or none), or a name the config allows. */
bool browser_host_allowed(const char *host, unsigned port, char *const *allowed)
{
    static const char *const loopback[] = {"localhost", "127.0.0.1", "[::1]"};
    const char *colon = host[0] == '[' ? strstr(host, "]:") : strrchr(host, ':');
    size_t name_len;

    if (colon && host[0] == '[')
        colon++; /* "[::1]:8080": the colon after the bracket */
    name_len = colon ? (size_t)(colon - host) : strlen(host);
    for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
        if (strlen(loopback[i]) != name_len || strncasecmp(host, loopback[i], name_len) != 0)
            continue;
        if (!colon || port_is(colon + 1, port))
            return true;
    }
    for (char *const *a = allowed; a && *a; a++)
        if (strcasecmp(host, *a) == 0 ||
            (strlen(*a) == name_len && strncasecmp(host, *a, name_len) == 0))
            return true;
    return false;
}

/* True when a browser page of origin may change things here: our own origin, or one the
 * config allows. */
bool browser_origin_allowed(const char *origin, unsigned port, char *const *allowed)
{
    static const char *const own[] = {"http://localhost", "http://127.0.0.1", "http://[::1]"};
    char want[64];

    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
        snprintf(want, sizeof(want), "%s:%u", own[i], port);
        if (strcasecmp(origin, want) == 0)
            return true;
    }
    for (char *const *a = allowed; a && *a; a++)
        if (strcmp(origin, *a) == 0)
            return true;
    return false;
}

/* Refuses requests a web page could forge: a Host that is not ours (DNS rebinding), and a
 * change asked from a foreign Origin. curl sends no Origin and a loopback Host. */
bool browser_safety_refuses(struct request *req, unsigned port, const struct config *config,
                            bool changes_things)
{
    const char *host = request_header(req, MHD_HTTP_HEADER_HOST);
    const char *origin = request_header(req, MHD_HTTP_HEADER_ORIGIN);
    char *const *hosts = config ? config->allowed_hosts : NULL;
    char *const *origins = config ? config->allowed_origins : NULL;

    if (host && !browser_host_allowed(host, port, hosts)) {
        request_reply_error(req, MHD_HTTP_FORBIDDEN, "forbidden_host",
                            "this daemon answers only to localhost, 127.0.0.1 and [::1] (add "
                            "other names to allowed_hosts in the config file)");
        return true;
    }
    if (changes_things && origin && !browser_origin_allowed(origin, port, origins)) {
        request_reply_error(req, MHD_HTTP_FORBIDDEN, "forbidden_origin",
                            "requests from web pages of another origin may not change anything "
                            "(add the origin to allowed_origins in the config file)");
        return true;
    }
    return false;
}
