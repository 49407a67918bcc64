/* A small layer over libyaml's document API; see yamldoc.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/units.h"
#include "lib/yamldoc.h"

struct yamldoc {
    yaml_document_t document;
};

/* Quotes untrusted text for a message, so that messages stay short, printable and valid
 * UTF-8 whatever the input holds. */
void text_quote(const char *s, size_t len, char *buf, size_t size)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t out = 0, i = 0;
    /* Room kept for the closing quote, "..." and the NUL. */
    size_t limit = size > TEXT_QUOTE_MAX + 1 ? TEXT_QUOTE_MAX + 1 : size;

    if (size == 0)
        return;
    if (limit < 8) {
        buf[0] = '\0';
        return;
    }
    limit -= 5;
    buf[out++] = '"';
    while (i < len) {
        char piece[8];
        size_t piece_len, seq = text_utf8_length(p + i, len - i);

        if (seq == 1 && p[i] >= 0x20 && p[i] != 0x7f && p[i] != '"' && p[i] != '\\') {
            piece[0] = (char)p[i];
            piece_len = 1;
        } else if (seq == 1 && (p[i] == '"' || p[i] == '\\')) {
            piece[0] = '\\';
            piece[1] = (char)p[i];
            piece_len = 2;
        } else if (seq > 1) {
            memcpy(piece, p + i, seq);
            piece_len = seq;
        } else {
            snprintf(piece, sizeof(piece), "\\x%02x", p[i]);
            piece_len = 4;
            seq = 1;
        }
        if (out + piece_len > limit) {
            memcpy(buf + out, "...", 3);
            out += 3;
            break;
        }
        memcpy(buf + out, piece, piece_len);
        out += piece_len;
        i += seq;
    }
    buf[out++] = '"';
    buf[out] = '\0';
}

void yamldoc_describe(const yaml_node_t *node, char *buf, size_t size)
{
    const char *text;

    if (size == 0)
        return;
    if (!node) {
        snprintf(buf, size, "nothing");
        return;
    }
    switch (node->type) {
    case YAML_SCALAR_NODE:
        if (node->data.scalar.length == 0 && yamldoc_is_plain(node))
            text = "nothing";
        else {
            text_quote((const char *)node->data.scalar.value, node->data.scalar.length, buf, size);
            return;
        }
        break;
    case YAML_SEQUENCE_NODE:
        text = "a list";
        break;
    case YAML_MAPPING_NODE:
        text = "a mapping";
        break;
    default:
        text = "nothing";
        break;
    }
    snprintf(buf, size, "%s", text);
}

/* Returns the 1-based line of byte offset in buf. */
static int line_at_offset(const char *buf, size_t len, size_t offset)
{
    int line = 1;

    for (size_t i = 0; i < offset && i < len; i++) {
        if (buf[i] == '\n')
            line++;
    }
    return line;
}

/* Turns libyaml's error state into one diagnostic that says where and what. */
static void add_parser_error(const yaml_parser_t *parser, const char *buf, size_t len,
                             struct diags *errors)
{
    const char *problem = parser->problem ? parser->problem : "unknown problem";
    int line = (int)parser->problem_mark.line + 1;

    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        fatal("out of memory (libyaml)");
    case YAML_READER_ERROR:
        line = line_at_offset(buf, len, parser->problem_offset);
        if (parser->problem_value >= 0)
            diags_add(errors, line,
                      "the file is not valid YAML text: %s (0x%X at byte offset %zu); save it "
                      "as UTF-8 without control characters",
                      problem, (unsigned)parser->problem_value, parser->problem_offset);
        else
            diags_add(errors, line, "the file is not valid YAML text: %s (at offset %zu)", problem,
                      parser->problem_offset);
        break;
    default:
        if (parser->context)
            diags_add(errors, line, "YAML syntax error: %s (%s on line %d)", problem,
                      parser->context, (int)parser->context_mark.line + 1);
        else
            diags_add(errors, line, "YAML syntax error: %s", problem);
        break;
    }
}

/* True when the document has no content: nothing, only comments, or a bare "---". */
static bool document_is_empty(yaml_document_t *document)
{
    yaml_node_t *root = yaml_document_get_root_node(document);

    return !root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0 &&
                     root->data.scalar.style == YAML_PLAIN_SCALAR_STYLE);
}

/* Runs libyaml's scanner alone over buf and stops at the first thing that would make
 * yaml_parser_load() slow: its scanner spends time in proportion to the depth of [ and {
 * on every token, and its parser and composer compare each %TAG directive and each anchor
 * with all the earlier ones. A megabyte of "[", of "&a" or of "%TAG" takes libyaml from
 * seconds to hours; files people write need a few of each. Syntax errors are left for
 * yaml_parser_load() to report. */
static int check_limits(const char *buf, size_t len, struct diags *errors)
{
    yaml_parser_t parser;
    yaml_token_t token;
    int depth = 0, anchors = 0, directives = 0, documents = 0, r = 0;

    if (!yaml_parser_initialize(&parser))
        fatal("out of memory (libyaml parser)");
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    while (r == 0) {
        if (!yaml_parser_scan(&parser, &token)) {
            if (parser.error == YAML_MEMORY_ERROR)
                fatal("out of memory (libyaml)");
            break;
        }
        yaml_token_type_t type = token.type;
        int line = (int)token.start_mark.line + 1;

        yaml_token_delete(&token);
        switch (type) {
        case YAML_STREAM_END_TOKEN:
            goto done;
        case YAML_FLOW_SEQUENCE_START_TOKEN:
        case YAML_FLOW_MAPPING_START_TOKEN:
        case YAML_BLOCK_SEQUENCE_START_TOKEN:
        case YAML_BLOCK_MAPPING_START_TOKEN:
            if (++depth > YAMLDOC_DEPTH_MAX) {
                diags_add(errors, line,
                          "lists and mappings nest more than %d levels deep here: flatten the "
                          "file",
                          YAMLDOC_DEPTH_MAX);
                r = -EINVAL;
            }
            break;
        case YAML_FLOW_SEQUENCE_END_TOKEN:
        case YAML_FLOW_MAPPING_END_TOKEN:
        case YAML_BLOCK_END_TOKEN:
            depth--;
            break;
        case YAML_ANCHOR_TOKEN:
            if (++anchors > YAMLDOC_ANCHORS_MAX) {
                diags_add(errors, line, "the file has more than %d anchors (&name)",
                          YAMLDOC_ANCHORS_MAX);
                r = -EINVAL;
            }
            break;
        case YAML_TAG_DIRECTIVE_TOKEN:
            if (++directives > YAMLDOC_DIRECTIVES_MAX) {
                diags_add(errors, line, "the file has more than %d %%TAG directives",
                          YAMLDOC_DIRECTIVES_MAX);
                r = -EINVAL;
            }
            break;
        case YAML_DOCUMENT_START_TOKEN:
            if (++documents > YAMLDOC_DIRECTIVES_MAX) {
                diags_add(errors, line,
                          "the file holds more than one YAML document (\"---\" again here): "
                          "keep a single document");
                r = -EINVAL;
            }
            break;
        default:
            break;
        }
    }
done:
    yaml_parser_delete(&parser);
    return r;
}

/* Loads the one document of buf; a second document is an error rather than ignored,
 * because a stray "---" usually means two files were pasted together. */
int yamldoc_load(const char *buf, size_t len, struct yamldoc **ret, struct diags *errors)
{
    yaml_parser_t parser;
    yaml_document_t extra;
    struct yamldoc *doc;

    if (check_limits(buf, len, errors) < 0)
        return -EINVAL;
    if (!yaml_parser_initialize(&parser))
        fatal("out of memory (libyaml parser)");
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

    doc = xcalloc(1, sizeof(*doc));
    if (!yaml_parser_load(&parser, &doc->document)) {
        add_parser_error(&parser, buf, len, errors);
        goto fail_parser;
    }
    if (document_is_empty(&doc->document)) {
        diags_add(errors, 1,
                  "the file is empty: it holds no YAML content, only blanks or comments");
        yaml_document_delete(&doc->document);
        free(doc);
        yaml_parser_delete(&parser);
        return -ENODATA;
    }
    /* Empty documents after the first (a trailing "---") are harmless. */
    for (;;) {
        if (!yaml_parser_load(&parser, &extra)) {
            add_parser_error(&parser, buf, len, errors);
            goto fail_document;
        }
        bool end = !yaml_document_get_root_node(&extra);
        bool empty = document_is_empty(&extra);
        int line = (int)extra.start_mark.line + 1;

        yaml_document_delete(&extra);
        if (end)
            break;
        if (!empty) {
            diags_add(errors, line,
                      "the file holds more than one YAML document (a second one starts here "
                      "with \"---\"): keep a single document");
            goto fail_document;
        }
    }
    yaml_parser_delete(&parser);
    *ret = doc;
    return 0;

fail_document:
    yaml_document_delete(&doc->document);
fail_parser:
    free(doc);
    yaml_parser_delete(&parser);
    return -EINVAL;
}

void yamldoc_free(struct yamldoc *doc)
{
    if (!doc)
        return;
    yaml_document_delete(&doc->document);
    free(doc);
}

yaml_node_t *yamldoc_root(struct yamldoc *doc)
{
    return yaml_document_get_root_node(&doc->document);
}

yaml_node_t *yamldoc_node(struct yamldoc *doc, yaml_node_item_t id)
{
    return yaml_document_get_node(&doc->document, id);
}

int yamldoc_line(const yaml_node_t *node)
{
    return (int)node->start_mark.line + 1;
}

const char *yamldoc_scalar(const yaml_node_t *node)
{
    if (!node || node->type != YAML_SCALAR_NODE)
        return NULL;
    return (const char *)node->data.scalar.value;
}

bool yamldoc_is_plain(const yaml_node_t *node)
{
    return node && node->type == YAML_SCALAR_NODE &&
           node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* True when the scalar holds a NUL byte, which C strings would silently cut at. */
static bool scalar_has_nul(const yaml_node_t *node)
{
    return strlen((const char *)node->data.scalar.value) != node->data.scalar.length;
}

/* Reads a YAML 1.1 boolean word; -EINVAL when s is none. */
static int bool_word(const char *s, bool *ret)
{
    static const char *const true_words[] = {"true", "yes", "on"};
    static const char *const false_words[] = {"false", "no", "off"};

    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, true_words[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(s, false_words[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

bool yamldoc_is_null(const yaml_node_t *node)
{
    const char *s = yamldoc_scalar(node);

    return yamldoc_is_plain(node) && !scalar_has_nul(node) &&
           (s[0] == '\0' || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0);
}

bool yamldoc_is_false(const yaml_node_t *node)
{
    bool value;

    return yamldoc_is_plain(node) && !scalar_has_nul(node) &&
           bool_word(yamldoc_scalar(node), &value) == 0 && !value;
}

struct key_ref {
    const char *key;
    size_t index;
};

static int key_ref_compare(const void *a, const void *b)
{
    const struct key_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);

    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Finds repeated keys up front by sorting, so that a mapping with many keys costs
 * n log n rather than n squared. */
void yamldoc_iter_begin(struct yamldoc_iter *it, struct yamldoc *doc, yaml_node_t *map,
                        struct diags *errors)
{
    yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    struct key_ref *refs;
    size_t n_refs = 0;

    *it = (struct yamldoc_iter){
        .doc = doc,
        .map = map,
        .n = (size_t)(map->data.mapping.pairs.top - pairs),
        .errors = errors,
    };
    if (it->n < 2)
        return;

    refs = xmalloc(it->n * sizeof(*refs));
    it->first = xmalloc(it->n * sizeof(*it->first));
    for (size_t i = 0; i < it->n; i++) {
        yaml_node_t *key = yamldoc_node(doc, pairs[i].key);

        it->first[i] = i;
        if (key && key->type == YAML_SCALAR_NODE && !scalar_has_nul(key))
            refs[n_refs++] = (struct key_ref){yamldoc_scalar(key), i};
    }
    qsort(refs, n_refs, sizeof(*refs), key_ref_compare);
    for (size_t j = 1; j < n_refs; j++) {
        if (strcmp(refs[j].key, refs[j - 1].key) == 0)
            it->first[refs[j].index] = it->first[refs[j - 1].index];
    }
    free(refs);
}

bool yamldoc_iter_next(struct yamldoc_iter *it, const char **ret_key, int *ret_line,
                       yaml_node_t **ret_value)
{
    while (it->index < it->n) {
        size_t i = it->index++;
        yaml_node_pair_t *pair = &it->map->data.mapping.pairs.start[i];
        yaml_node_t *key = yamldoc_node(it->doc, pair->key);
        yaml_node_t *value = yamldoc_node(it->doc, pair->value);
        char what[TEXT_QUOTE_MAX + 1];

        if (!key || !value)
            continue;
        if (key->type != YAML_SCALAR_NODE) {
            yamldoc_describe(key, what, sizeof(what));
            diags_add(it->errors, yamldoc_line(key), "a key must be a plain word, not %s", what);
            it->failed = true;
            continue;
        }
        if (scalar_has_nul(key)) {
            diags_add(it->errors, yamldoc_line(key), "a key must not contain a NUL character");
            it->failed = true;
            continue;
        }
        if (it->first && it->first[i] != i) {
            yaml_node_t *first =
                yamldoc_node(it->doc, it->map->data.mapping.pairs.start[it->first[i]].key);

            yamldoc_describe(key, what, sizeof(what));
            diags_add(it->errors, yamldoc_line(key),
                      "key %s appears twice (first on line %d): keep only one", what,
                      first ? yamldoc_line(first) : 0);
            it->failed = true;
            continue;
        }
        *ret_key = yamldoc_scalar(key);
        *ret_line = yamldoc_line(key);
        *ret_value = value;
        return true;
    }
    return false;
}

int yamldoc_iter_end(struct yamldoc_iter *it)
{
    free(it->first);
    it->first = NULL;
    return it->failed ? -EINVAL : 0;
}

/* Lists the known keys for a message, comma-separated. Caller frees. */
static char *known_keys_text(const struct yamldoc_field *fields, size_t n_fields)
{
    size_t size = 1;
    char *text;

    for (size_t i = 0; i < n_fields; i++)
        size += strlen(fields[i].key) + 2;
    text = xmalloc(size);
    text[0] = '\0';
    for (size_t i = 0; i < n_fields; i++) {
        if (i > 0)
            strcat(text, ", ");
        strcat(text, fields[i].key);
    }
    return text;
}

int yamldoc_map_fields(struct yamldoc *doc, yaml_node_t *node, const char *what,
                       struct yamldoc_field *fields, size_t n_fields, struct diags *errors,
                       struct diags *unknown)
{
    struct yamldoc_iter it;
    const char *key;
    int line;
    yaml_node_t *value;
    char *known = NULL;

    for (size_t i = 0; i < n_fields; i++) {
        fields[i].value = NULL;
        fields[i].line = 0;
    }
    if (!node || node->type != YAML_MAPPING_NODE) {
        char found[TEXT_QUOTE_MAX + 1];

        yamldoc_describe(node, found, sizeof(found));
        diags_add(errors, node ? yamldoc_line(node) : 0,
                  "%s must be a mapping of \"key: value\" lines, not %s", what, found);
        return -EINVAL;
    }

    yamldoc_iter_begin(&it, doc, node, errors);
    while (yamldoc_iter_next(&it, &key, &line, &value)) {
        size_t i;

        for (i = 0; i < n_fields; i++) {
            if (strcmp(fields[i].key, key) == 0)
                break;
        }
        if (i < n_fields) {
            fields[i].value = value;
            fields[i].line = line;
        } else if (unknown) {
            char quoted[TEXT_QUOTE_MAX + 1];

            if (!known)
                known = known_keys_text(fields, n_fields);
            text_quote(key, strlen(key), quoted, sizeof(quoted));
            diags_add(unknown, line, "unknown key %s in %s (known keys: %s)", quoted, what, known);
        }
    }
    free(known);
    return yamldoc_iter_end(&it);
}

int yamldoc_read_string(struct yamldoc *doc, yaml_node_t *node, const char *key, char **ret,
                        struct diags *errors)
{
    char found[TEXT_QUOTE_MAX + 1];

    if (!node || node->type != YAML_SCALAR_NODE) {
        yamldoc_describe(node, found, sizeof(found));
        diags_add(errors, node ? yamldoc_line(node) : 0, "%s must be a string, not %s", key, found);
        return -EINVAL;
    }
    if (scalar_has_nul(node)) {
        diags_add(errors, yamldoc_line(node), "%s must not contain a NUL character", key);
        return -EINVAL;
    }
    *ret = xstrndup(yamldoc_scalar(node), node->data.scalar.length);
    return 0;
}

int yamldoc_read_bool(struct yamldoc *doc, yaml_node_t *node, const char *key, bool *ret,
                      struct diags *errors)
{
    char found[TEXT_QUOTE_MAX + 1];
    bool value;

    if (node && node->type == YAML_SCALAR_NODE && !scalar_has_nul(node) &&
        bool_word(yamldoc_scalar(node), &value) == 0) {
        if (yamldoc_is_plain(node)) {
            *ret = value;
            return 0;
        }
        yamldoc_describe(node, found, sizeof(found));
        diags_add(errors, yamldoc_line(node),
                  "%s must be true or false written without quotes, not the quoted string %s", key,
                  found);
        return -EINVAL;
    }
    yamldoc_describe(node, found, sizeof(found));
    diags_add(errors, node ? yamldoc_line(node) : 0, "%s must be true or false, not %s", key,
              found);
    return -EINVAL;
}

/* Reads decimal digits only; -ERANGE above UINT64_MAX. */
static int parse_decimal(const char *s, uint64_t *ret)
{
    uint64_t value = 0;

    if (*s == '\0')
        return -EINVAL;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
    }
    for (const char *p = s; *p; p++) {
        unsigned digit = (unsigned)(*p - '0');

        if (value > (UINT64_MAX - digit) / 10)
            return -ERANGE;
        value = value * 10 + digit;
    }
    *ret = value;
    return 0;
}

int yamldoc_read_uint(struct yamldoc *doc, yaml_node_t *node, const char *key, uint64_t min,
                      uint64_t max, uint64_t *ret, struct diags *errors)
{
    char found[TEXT_QUOTE_MAX + 1];
    uint64_t value = 0;
    int r = -EINVAL;

    if (node && node->type == YAML_SCALAR_NODE && !scalar_has_nul(node))
        r = parse_decimal(yamldoc_scalar(node), &value);
    yamldoc_describe(node, found, sizeof(found));
    if (r == 0 && !yamldoc_is_plain(node)) {
        diags_add(errors, yamldoc_line(node),
                  "%s must be a number written without quotes, not the quoted string %s", key,
                  found);
        return -EINVAL;
    }
    if (r == -EINVAL) {
        diags_add(errors, node ? yamldoc_line(node) : 0,
                  "%s must be a whole number from %" PRIu64 " to %" PRIu64 ", not %s", key, min,
                  max, found);
        return -EINVAL;
    }
    if (r == -ERANGE || value < min || value > max) {
        diags_add(errors, yamldoc_line(node),
                  "%s is %s, out of range: use a number from %" PRIu64 " to %" PRIu64, key, found,
                  min, max);
        return -EINVAL;
    }
    *ret = value;
    return 0;
}

int yamldoc_read_duration(struct yamldoc *doc, yaml_node_t *node, const char *key, uint64_t *ret_ms,
                          struct diags *errors)
{
    char found[TEXT_QUOTE_MAX + 1];
    uint64_t ms;
    int r = -EINVAL;

    if (node && node->type == YAML_SCALAR_NODE && !scalar_has_nul(node))
        r = units_parse_duration(yamldoc_scalar(node), &ms);
    if (r == 0) {
        *ret_ms = ms;
        return 0;
    }
    yamldoc_describe(node, found, sizeof(found));
    if (r == -ERANGE)
        diags_add(errors, yamldoc_line(node),
                  "%s is %s, longer than the limit of %llu hours (one week)", key, found,
                  UNITS_DURATION_MAX_MS / 3600000);
    else
        diags_add(errors, node ? yamldoc_line(node) : 0,
                  "%s must be a duration such as 500ms, 5s, 2m, 1h or a number of seconds, "
                  "not %s",
                  key, found);
    return -EINVAL;
}

int yamldoc_read_size(struct yamldoc *doc, yaml_node_t *node, const char *key, uint64_t *ret,
                      struct diags *errors)
{
    char found[TEXT_QUOTE_MAX + 1];
    uint64_t bytes;
    int r = -EINVAL;

    if (node && node->type == YAML_SCALAR_NODE && !scalar_has_nul(node))
        r = units_parse_size(yamldoc_scalar(node), &bytes);
    if (r == 0) {
        *ret = bytes;
        return 0;
    }
    yamldoc_describe(node, found, sizeof(found));
    if (r == -ERANGE)
        diags_add(errors, yamldoc_line(node), "%s is %s, more than the limit of 1 PiB", key, found);
    else
        diags_add(errors, node ? yamldoc_line(node) : 0,
                  "%s must be a size such as 24GiB, 512MiB, 500MB or a number of bytes, not %s",
                  key, found);
    return -EINVAL;
}

int yamldoc_read_strings(struct yamldoc *doc, yaml_node_t *node, const char *key, size_t max,
                         char ***ret, size_t *ret_n, struct diags *errors)
{
    char found[TEXT_QUOTE_MAX + 1];
    char **strv;
    size_t n, n_good = 0;
    bool failed = false;

    if (!node || node->type != YAML_SEQUENCE_NODE) {
        yamldoc_describe(node, found, sizeof(found));
        diags_add(errors, node ? yamldoc_line(node) : 0,
                  "%s must be a list of strings such as [\"a\", \"b\"], not %s", key, found);
        return -EINVAL;
    }
    n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n > max) {
        diags_add(errors, yamldoc_line(node), "%s has %zu items; the limit is %zu", key, n, max);
        return -EINVAL;
    }

    strv = xcalloc(n + 1, sizeof(*strv));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yamldoc_node(doc, node->data.sequence.items.start[i]);
        char *item_key = xasprintf("%s[%zu]", key, i);

        if (yamldoc_read_string(doc, item, item_key, &strv[n_good], errors) == 0)
            n_good++;
        else
            failed = true;
        free(item_key);
    }
    if (failed) {
        strv_free(strv);
        return -EINVAL;
    }
    *ret = strv;
    *ret_n = n;
    return 0;
}
