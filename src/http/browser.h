/* The browser-safety rules: a web page must not reach the daemon through DNS rebinding
 * (a foreign Host) nor change anything from another origin (a foreign Origin). curl sends
 * no Origin and a loopback Host, so it is never refused. */
#ifndef NANNY_BROWSER_H
#define NANNY_BROWSER_H

#include <stdbool.h>

#include "core/config.h"
#include "http/server.h"

/* True when host (a Host header: "name" or "name:port") names this daemon: a loopback
 * name with our port (or none), or a name the config allows. */
bool browser_host_allowed(const char *host, unsigned port, char *const *allowed);

/* True when a browser page of origin may change things here: our own origin, or one the
 * config allows. */
bool browser_origin_allowed(const char *origin, unsigned port, char *const *allowed);

/* Answers 403 and returns true when req breaks the rules (config may be NULL); port is
 * the one the daemon answers on. */
bool browser_safety_refuses(struct request *req, unsigned port, const struct config *config,
                            bool changes_things);

#endif
