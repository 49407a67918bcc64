/* health: of a manifest: off, the defaults, or the path, port and timings of the check. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/manifest_internal.h"

enum health_field { H_PATH, H_PORT, H_INTERVAL, H_TIMEOUT, H_START_PERIOD, H_COUNT };

/* Reads health.path, which goes into a request line as it is: it must start with '/'
 * and hold no spaces or control characters. */
static void parse_health_path(struct manifest_parser *p, yaml_node_t *node)
{
    char quoted[TEXT_QUOTE_MAX + 1];
    char *path;
    bool ok;

    if (manifest_check(p, yamldoc_read_string(p->doc, node, "health.path", &path, p->errors)) < 0)
        return;
    if (!manifest_check_length(p, yamldoc_line(node), "health.path", strlen(path),
                               MANIFEST_VALUE_MAX)) {
        free(path);
        return;
    }
    ok = path[0] == '/';
    for (const unsigned char *c = (const unsigned char *)path; ok && *c; c++)
        ok = *c > 0x20 && *c != 0x7f;
    if (!ok) {
        text_quote(path, strlen(path), quoted, sizeof(quoted));
        manifest_error(p, yamldoc_line(node),
                       "health.path must be a URL path starting with '/', without spaces, such "
                       "as /health, not %s",
                       quoted);
        free(path);
        return;
    }
    free(p->m->health_path);
    p->m->health_path = path;
}

/* Reads a duration that must be above zero. */
static int parse_positive_duration(struct manifest_parser *p, yaml_node_t *node, const char *key,
                                   uint64_t *ret_ms)
{
    uint64_t ms;

    if (manifest_check(p, yamldoc_read_duration(p->doc, node, key, &ms, p->errors)) < 0)
        return -EINVAL;
    if (ms == 0) {
        manifest_error(p, yamldoc_line(node), "%s must be longer than 0, such as 5s", key);
        return -EINVAL;
    }
    *ret_ms = ms;
    return 0;
}

/* Writes a duration the way a person would write it in a manifest: "2s", "1500ms". */
static void format_duration(uint64_t ms, char *buf, size_t size)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, size, "%" PRIu64 "h", ms / 3600000);
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, size, "%" PRIu64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, size, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, size, "%" PRIu64 "ms", ms);
}

/* A check still running when the next is due makes the checks pile up on a slow service;
 * it is allowed, but worth a warning. line is where the warning points. */
static void warn_timeout_not_shorter(struct manifest_parser *p, int line)
{
    struct manifest *m = p->m;
    char timeout[32], interval[32];

    if (m->health_timeout_ms < m->health_interval_ms)
        return;
    format_duration(m->health_timeout_ms, timeout, sizeof(timeout));
    format_duration(m->health_interval_ms, interval, sizeof(interval));
    diags_add(p->warnings, line,
              "health.timeout %s is not shorter than health.interval %s: a slow check overlaps "
              "the next",
              timeout, interval);
}

/* Reads the settings of a health: mapping. Returns -EINVAL when health.port was given but
 * wrong, so that no second error asks for a port. */
static int parse_health_settings(struct manifest_parser *p, yaml_node_t *node)
{
    struct manifest *m = p->m;
    struct yamldoc_field h[H_COUNT] = {
        [H_PATH] = {.key = "path"},
        [H_PORT] = {.key = "port"},
        [H_INTERVAL] = {.key = "interval"},
        [H_TIMEOUT] = {.key = "timeout"},
        [H_START_PERIOD] = {.key = "start_period"},
    };
    bool durations_ok = true;
    int r = 0;

    manifest_check(p,
                   yamldoc_map_fields(p->doc, node, "health", h, H_COUNT, p->errors, p->warnings));
    if (h[H_PATH].value)
        parse_health_path(p, h[H_PATH].value);
    if (h[H_PORT].value) {
        uint64_t port;

        r = manifest_check(p, yamldoc_read_uint(p->doc, h[H_PORT].value, "health.port", 1, 65535,
                                                &port, p->errors));
        if (r == 0)
            m->health_port = (uint16_t)port;
    }
    if (h[H_INTERVAL].value && parse_positive_duration(p, h[H_INTERVAL].value, "health.interval",
                                                       &m->health_interval_ms) < 0)
        durations_ok = false;
    if (h[H_TIMEOUT].value &&
        parse_positive_duration(p, h[H_TIMEOUT].value, "health.timeout", &m->health_timeout_ms) < 0)
        durations_ok = false;
    if (h[H_START_PERIOD].value)
        manifest_check(p,
                       yamldoc_read_duration(p->doc, h[H_START_PERIOD].value, "health.start_period",
                                             &m->health_start_period_ms, p->errors));
    /* A bad duration is already an error: comparing it with a default would mislead. */
    if (durations_ok && (h[H_TIMEOUT].value || h[H_INTERVAL].value))
        warn_timeout_not_shorter(p, h[H_TIMEOUT].value ? h[H_TIMEOUT].line : h[H_INTERVAL].line);
    return r < 0 ? -EINVAL : 0;
}

/* Reads health: false (no check), true (the defaults) or a mapping of settings, then
 * settles the port the check uses: health.port, else the service's port. */
void manifest_parse_health(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_HEALTH];
    struct manifest *m = p->m;
    bool port_failed = false;
    bool enabled;

    if (f->value && f->value->type == YAML_SCALAR_NODE &&
        yamldoc_read_bool(p->doc, f->value, "health", &enabled, NULL) == 0) {
        if (!enabled) {
            m->health_enabled = false;
            return;
        }
        /* health: true keeps the defaults. */
    } else if (f->value && f->value->type == YAML_MAPPING_NODE) {
        port_failed = parse_health_settings(p, f->value) < 0;
    } else if (f->value) {
        manifest_type_error(p, f->value,
                            "health must be a mapping (path, port, interval, timeout, "
                            "start_period) or false");
        return;
    }

    if (m->health_port == 0)
        m->health_port = m->port;
    if (m->health_port == 0 && !port_failed && !p->ports_failed)
        manifest_error(p, f->value ? f->line : p->root_line,
                       "health check needs a port: add ports or health.port, or set health: false");
}
