/* ports: of a manifest: the short syntax of docker compose ("PORT", "HOST:CONTAINER",
 * "IP:HOST:CONTAINER", optionally /tcp or /udp), each host port listed once. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/manifest_internal.h"
#include "lib/alloc.h"
#include "lib/units.h"

/* Longest port item worth reading: "[IPv6]:HOST:CONTAINER/udp" fits easily. */
#define PORT_SPEC_MAX 128

/* Reads one port number of a mapping, reporting a bad or out-of-range one. */
static int parse_port_number(struct manifest_parser *p, int line, const char *key, const char *spec,
                             const char *text, uint16_t *ret)
{
    char quoted_spec[TEXT_QUOTE_MAX + 1], quoted[TEXT_QUOTE_MAX + 1];
    int r = units_parse_port(text, ret);

    if (r == 0)
        return 0;
    text_quote(spec, strlen(spec), quoted_spec, sizeof(quoted_spec));
    text_quote(text, strlen(text), quoted, sizeof(quoted));
    if (r == -ERANGE && strcmp(spec, text) == 0)
        manifest_error(p, line, "%s: port %s is out of range: ports go from 1 to 65535", key,
                       quoted);
    else if (r == -ERANGE)
        manifest_error(p, line, "%s: port %s in %s is out of range: ports go from 1 to 65535", key,
                       quoted, quoted_spec);
    else
        manifest_error(p, line,
                       "%s: %s is not a valid port mapping: use \"PORT\", \"HOST:CONTAINER\" or "
                       "\"IP:HOST:CONTAINER\", optionally followed by /tcp or /udp",
                       key, quoted_spec);
    return -EINVAL;
}

/* Strips an optional "/tcp" or "/udp" from the end of buf; quoted is the whole item for
 * messages. */
static int parse_port_protocol(struct manifest_parser *p, int line, const char *key,
                               const char *quoted, char *buf, bool *ret_udp)
{
    char *slash = strrchr(buf, '/');

    *ret_udp = false;
    if (!slash)
        return 0;
    *slash = '\0';
    if (strcmp(slash + 1, "udp") == 0)
        *ret_udp = true;
    else if (strcmp(slash + 1, "tcp") != 0) {
        manifest_error(p, line, "%s: %s has an unknown protocol: use /tcp or /udp", key, quoted);
        return -EINVAL;
    }
    return 0;
}

/* Checks the IP part of "IP:HOST:CONTAINER", an IPv4 or IPv6 address, the latter possibly
 * in brackets as docker compose writes it; *ret points into ip, brackets removed. */
static int parse_host_ip(struct manifest_parser *p, int line, const char *key, const char *quoted,
                         char *ip, char **ret)
{
    unsigned char addr[sizeof(struct in6_addr)];
    char quoted_ip[TEXT_QUOTE_MAX + 1];
    size_t len = strlen(ip);

    if (len >= 2 && ip[0] == '[' && ip[len - 1] == ']') {
        ip[len - 1] = '\0';
        ip++;
    }
    if (inet_pton(AF_INET, ip, addr) == 1 || inet_pton(AF_INET6, ip, addr) == 1) {
        *ret = ip;
        return 0;
    }
    text_quote(ip, strlen(ip), quoted_ip, sizeof(quoted_ip));
    manifest_error(p, line,
                   "%s: %s in %s is not an IP address: use \"IP:HOST:CONTAINER\" such as "
                   "\"127.0.0.1:8001:8000\"",
                   key, quoted_ip, quoted);
    return -EINVAL;
}

/* Reads "PORT", "HOST:CONTAINER" or "IP:HOST:CONTAINER" with an optional "/tcp" or
 * "/udp", the short syntax of docker compose, minus the ranges it also allows. */
static int parse_port_spec(struct manifest_parser *p, int line, const char *key, const char *spec,
                           struct port_map *ret)
{
    char quoted[TEXT_QUOTE_MAX + 1];
    char buf[PORT_SPEC_MAX + 1];
    char *last_colon, *host_text, *ip = NULL;
    struct port_map pm = {.line = line};

    text_quote(spec, strlen(spec), quoted, sizeof(quoted));
    if (strlen(spec) > PORT_SPEC_MAX) {
        manifest_error(p, line, "%s: %s is too long to be a port mapping", key, quoted);
        return -EINVAL;
    }
    strcpy(buf, spec);
    if (parse_port_protocol(p, line, key, quoted, buf, &pm.udp) < 0)
        return -EINVAL;
    if (strchr(buf, '-')) {
        manifest_error(p, line,
                       "%s: %s is a port range, and ranges are not supported: list each port on "
                       "its own",
                       key, quoted);
        return -EINVAL;
    }

    last_colon = strrchr(buf, ':');
    if (!last_colon) {
        if (parse_port_number(p, line, key, spec, buf, &pm.host) < 0)
            return -EINVAL;
        pm.container = pm.host;
        *ret = pm;
        return 0;
    }
    *last_colon = '\0';
    host_text = strrchr(buf, ':');
    if (host_text) {
        *host_text++ = '\0';
        if (parse_host_ip(p, line, key, quoted, buf, &ip) < 0)
            return -EINVAL;
    } else {
        host_text = buf;
    }
    if (*host_text == '\0') {
        manifest_error(p, line,
                       "%s: %s has no host port; a host port chosen by Docker is not supported: "
                       "give it, as in \"8001:8000\"",
                       key, quoted);
        return -EINVAL;
    }
    if (parse_port_number(p, line, key, spec, host_text, &pm.host) < 0 ||
        parse_port_number(p, line, key, spec, last_colon + 1, &pm.container) < 0)
        return -EINVAL;
    if (ip)
        pm.host_ip = xstrdup(ip);
    *ret = pm;
    return 0;
}

/* Reads ports: every item is checked, and a host port listed twice is an error, so that
 * all the problems of the list show at once. */
void manifest_parse_ports(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_PORTS];
    struct manifest *m = p->m;
    char found[TEXT_QUOTE_MAX + 1];
    size_t n;

    if (!f->value)
        return;
    m->ports_line = f->line;
    if (f->value->type != YAML_SEQUENCE_NODE) {
        manifest_type_error(p, f->value, "ports must be a list such as [\"8001:8000\"]");
        p->ports_failed = true;
        return;
    }
    n = (size_t)(f->value->data.sequence.items.top - f->value->data.sequence.items.start);
    if (n > MANIFEST_PORTS_MAX) {
        manifest_error(p, yamldoc_line(f->value), "ports has %zu items; the limit is %d", n,
                       MANIFEST_PORTS_MAX);
        p->ports_failed = true;
        return;
    }

    m->ports = xcalloc(n, sizeof(*m->ports));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, f->value->data.sequence.items.start[i]);
        char key[32];
        char *spec;
        struct port_map pm;

        snprintf(key, sizeof(key), "ports[%zu]", i);
        if (!item || item->type != YAML_SCALAR_NODE) {
            yamldoc_describe(item, found, sizeof(found));
            manifest_error(p, item ? yamldoc_line(item) : f->line,
                           "%s must be a string such as \"8001:8000\" or a number, not %s", key,
                           found);
            p->ports_failed = true;
            continue;
        }
        if (manifest_check(p, yamldoc_read_string(p->doc, item, key, &spec, p->errors)) < 0) {
            p->ports_failed = true;
            continue;
        }
        if (parse_port_spec(p, yamldoc_line(item), key, spec, &pm) < 0) {
            p->ports_failed = true;
            free(spec);
            continue;
        }
        free(spec);
        for (size_t j = 0; j < m->n_ports; j++) {
            if (m->ports[j].host == pm.host && m->ports[j].udp == pm.udp) {
                manifest_error(p, pm.line,
                               "%s: host port %u is already listed on line %d: list each host "
                               "port once",
                               key, pm.host, m->ports[j].line);
                p->ports_failed = true;
                free(pm.host_ip);
                pm.host_ip = NULL;
                pm.host = 0;
                break;
            }
        }
        if (pm.host != 0)
            m->ports[m->n_ports++] = pm;
    }
    if (m->n_ports > 0)
        m->port = m->ports[0].host;
}
