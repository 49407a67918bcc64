/* Unit tests for yamldoc.c: loading, mapping iteration and the typed readers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/yamldoc.h"

/* Asserts that d holds an entry at line whose message contains text. */
static void assert_diag(const struct diags *d, int line, const char *text)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->items[i].line == line && strstr(d->items[i].message, text))
            return;
    }
    for (size_t i = 0; i < d->n; i++)
        print_message("  diag %d: %s\n", d->items[i].line, d->items[i].message);
    fail_msg("no diagnostic at line %d containing \"%s\"", line, text);
}

static struct yamldoc *load_ok(const char *text)
{
    struct diags errors = {0};
    struct yamldoc *doc = NULL;

    assert_int_equal(yamldoc_load(text, strlen(text), &doc, &errors), 0);
    assert_int_equal(errors.n, 0);
    assert_non_null(doc);
    return doc;
}

/* Loads text, which must fail with code rc and one error at line containing message. */
static void assert_load_fails_with(int rc, const char *text, size_t len, int line,
                                   const char *message)
{
    struct diags errors = {0};
    struct yamldoc *doc = (struct yamldoc *)&errors; /* a sentinel that must stay */

    assert_int_equal(yamldoc_load(text, len, &doc, &errors), rc);
    assert_ptr_equal(doc, (struct yamldoc *)&errors);
    assert_int_equal(errors.n, 1);
    assert_diag(&errors, line, message);
    diags_clear(&errors);
}

static void assert_load_fails(const char *text, size_t len, int line, const char *message)
{
    assert_load_fails_with(-EINVAL, text, len, line, message);
}

/* Returns the value node of key in the root mapping of doc. */
static yaml_node_t *value_of(struct yamldoc *doc, const char *key)
{
    yaml_node_t *root = yamldoc_root(doc);

    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        if (strcmp(yamldoc_scalar(yamldoc_node(doc, p->key)), key) == 0)
            return yamldoc_node(doc, p->value);
    }
    fail_msg("no key %s", key);
    return NULL;
}

static void test_load_mapping_and_lines(void **state)
{
    struct yamldoc *doc = load_ok("# comment\nname: demo\nports:\n  - 8000\n");
    yaml_node_t *root = yamldoc_root(doc);

    assert_int_equal(root->type, YAML_MAPPING_NODE);
    assert_int_equal(yamldoc_line(value_of(doc, "name")), 2);
    assert_string_equal(yamldoc_scalar(value_of(doc, "name")), "demo");
    assert_int_equal(yamldoc_line(value_of(doc, "ports")), 4);
    assert_null(yamldoc_scalar(value_of(doc, "ports")));
    yamldoc_free(doc);
}

static void test_load_syntax_error(void **state)
{
    const char *text = "name: demo\nports: [8000, 8001\nother: x\n";

    assert_load_fails(text, strlen(text), 3, "YAML syntax error: did not find expected ',' or ']'");
    text = "name: demo\n  bad: indent\n";
    assert_load_fails(text, strlen(text), 2, "YAML syntax error: mapping values are not allowed");
    text = "name: demo\n\tports: 1\n";
    assert_load_fails(text, strlen(text), 2, "YAML syntax error");
    text = "a: *undefined\n";
    assert_load_fails(text, strlen(text), 1, "YAML syntax error: found undefined alias");
}

static void test_load_not_text(void **state)
{
    static const char bad_utf8[] = "name: demo\ndescription: \xff\xfe\n";
    static const char nul[] = "name: demo\nx: a\0b\n";

    assert_load_fails(bad_utf8, sizeof(bad_utf8) - 1, 2, "not valid YAML text");
    assert_load_fails(nul, sizeof(nul) - 1, 2, "control characters are not allowed");
}

static void test_load_empty(void **state)
{
    assert_load_fails_with(-ENODATA, "", 0, 1, "the file is empty");
    assert_load_fails_with(-ENODATA, "\n\n   \n", 6, 1, "the file is empty");
    assert_load_fails_with(-ENODATA, "# nothing here\n# at all\n", 24, 1, "the file is empty");
    assert_load_fails_with(-ENODATA, "---\n", 4, 1, "the file is empty");
}

static void test_load_two_documents(void **state)
{
    const char *text = "a: 1\n---\nb: 2\n";

    assert_load_fails(text, strlen(text), 2, "more than one YAML document");
    text = "a: 1\n---\nb: [\n";
    assert_load_fails(text, strlen(text), 4, "YAML syntax error");
}

static void test_load_depth_limit(void **state)
{
    size_t len = 1024 * 1024;
    char *text = xmalloc(len);

    /* At the limit is fine. */
    memset(text, '[', YAMLDOC_DEPTH_MAX);
    memset(text + YAMLDOC_DEPTH_MAX, ']', YAMLDOC_DEPTH_MAX);
    text[2 * YAMLDOC_DEPTH_MAX] = '\0';
    yamldoc_free(load_ok(text));

    /* One more is refused; so is a megabyte of "[", at once (libyaml alone would take many
     * minutes over it). */
    memset(text, '[', YAMLDOC_DEPTH_MAX + 1);
    memset(text + YAMLDOC_DEPTH_MAX + 1, ']', YAMLDOC_DEPTH_MAX + 1);
    assert_load_fails(text, 2 * YAMLDOC_DEPTH_MAX + 2, 1, "nest more than 64 levels deep");
    memset(text, '[', len);
    assert_load_fails(text, len, 1, "nest more than 64 levels deep");
    for (size_t i = 0; i + 2 < len; i += 2)
        memcpy(text + i, "{a", 2);
    assert_load_fails(text, len, 1, "nest more than 64 levels deep");

    /* Block nesting counts too, at the line where it goes too deep. */
    size_t n = 0;
    for (int level = 0; level <= YAMLDOC_DEPTH_MAX; level++)
        n += (size_t)sprintf(text + n, "%*sk:\n", 2 * level, "");
    n += (size_t)sprintf(text + n, "%*sv: 1\n", 2 * (YAMLDOC_DEPTH_MAX + 1), "");
    assert_load_fails(text, n, YAMLDOC_DEPTH_MAX + 1, "nest more than 64 levels deep");
    free(text);
}

/* libyaml compares every anchor and %TAG directive with all earlier ones: a megabyte of
 * them would take it minutes. */
static void test_load_anchor_and_directive_limits(void **state)
{
    size_t size = 1024 * 1024, n = 0;
    char *text = xmalloc(size);

    for (int i = 0; i < YAMLDOC_ANCHORS_MAX; i++)
        n += (size_t)sprintf(text + n, "a%d: &x%d v\n", i, i);
    n += (size_t)sprintf(text + n, "b: *x7\n");
    yamldoc_free(load_ok(text));
    while (n < size - 64)
        n += (size_t)sprintf(text + n, "a%zu: &y%zu v\n", n, n);
    assert_load_fails(text, n, YAMLDOC_ANCHORS_MAX + 2, "more than 256 anchors (&name)");

    n = 0;
    while (n < size - 64)
        n += (size_t)sprintf(text + n, "%%TAG !t%zu! tag:example.com,2000:\n", n);
    n += (size_t)sprintf(text + n, "---\na: 1\n");
    assert_load_fails(text, n, YAMLDOC_DIRECTIVES_MAX + 1, "more than 16 %TAG directives");

    n = (size_t)sprintf(text, "a: 1\n");
    while (n < size - 64)
        n += (size_t)sprintf(text + n, "---\n");
    assert_load_fails(text, n, YAMLDOC_DIRECTIVES_MAX + 2, "more than one YAML document");
    free(text);
}

static void test_load_ignores_explicit_end(void **state)
{
    yamldoc_free(load_ok("---\na: 1\n...\n"));
    yamldoc_free(load_ok("a: 1\n---\n"));
    yamldoc_free(load_ok("a: 1\n---\n---\n# nothing\n"));
    assert_load_fails("a: 1\n---\n---\nb: 1\n", 18, 3, "more than one YAML document");
}

static void test_load_needs_no_nul_terminator(void **state)
{
    char buf[] = {'a', ':', ' ', '1', 'X'};
    struct diags errors = {0};
    struct yamldoc *doc;

    assert_int_equal(yamldoc_load(buf, 4, &doc, &errors), 0);
    assert_string_equal(yamldoc_scalar(value_of(doc, "a")), "1");
    yamldoc_free(doc);
}

static void test_iter_duplicates_and_bad_keys(void **state)
{
    struct yamldoc *doc = load_ok("a: 1\nb: 2\na: 3\n[x]: 4\n? {k: v}\n: 5\nc: 6\n");
    struct diags errors = {0};
    struct yamldoc_iter it;
    const char *key;
    int line;
    yaml_node_t *value;
    char seen[16] = "";

    yamldoc_iter_begin(&it, doc, yamldoc_root(doc), &errors);
    while (yamldoc_iter_next(&it, &key, &line, &value)) {
        strcat(seen, key);
        if (strcmp(key, "a") == 0) {
            assert_int_equal(line, 1);
            assert_string_equal(yamldoc_scalar(value), "1");
        }
    }
    assert_int_equal(yamldoc_iter_end(&it), -EINVAL);
    assert_string_equal(seen, "abc");
    assert_int_equal(errors.n, 3);
    assert_diag(&errors, 3, "key \"a\" appears twice (first on line 1)");
    assert_diag(&errors, 4, "a key must be a plain word, not a list");
    assert_diag(&errors, 5, "a key must be a plain word, not a mapping");
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_iter_clean_mapping(void **state)
{
    struct yamldoc *doc = load_ok("{}");
    struct diags errors = {0};
    struct yamldoc_iter it;
    const char *key;
    int line;
    yaml_node_t *value;

    yamldoc_iter_begin(&it, doc, yamldoc_root(doc), &errors);
    assert_false(yamldoc_iter_next(&it, &key, &line, &value));
    assert_int_equal(yamldoc_iter_end(&it), 0);
    yamldoc_free(doc);

    doc = load_ok("only: 1\n");
    yamldoc_iter_begin(&it, doc, yamldoc_root(doc), &errors);
    assert_true(yamldoc_iter_next(&it, &key, &line, &value));
    assert_string_equal(key, "only");
    assert_false(yamldoc_iter_next(&it, &key, &line, &value));
    assert_int_equal(yamldoc_iter_end(&it), 0);
    assert_int_equal(errors.n, 0);
    yamldoc_free(doc);
}

/* Many keys must not cost n squared; one repeat among thousands is still found. */
static void test_iter_many_keys(void **state)
{
    const size_t n = 20000;
    char *text = xmalloc(n * 16 + 32);
    size_t len = 0, count = 0;
    struct yamldoc *doc;
    struct diags errors = {0};
    struct yamldoc_iter it;
    const char *key;
    int line;
    yaml_node_t *value;

    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(text + len, "k%zu: %zu\n", i, i);
    len += (size_t)sprintf(text + len, "k1234: again\n");
    doc = load_ok(text);
    yamldoc_iter_begin(&it, doc, yamldoc_root(doc), &errors);
    while (yamldoc_iter_next(&it, &key, &line, &value))
        count++;
    assert_int_equal(yamldoc_iter_end(&it), -EINVAL);
    assert_int_equal(count, n);
    assert_int_equal(errors.n, 1);
    assert_diag(&errors, (int)n + 1, "key \"k1234\" appears twice (first on line 1235)");
    diags_clear(&errors);
    yamldoc_free(doc);
    free(text);
}

static void test_map_fields(void **state)
{
    struct yamldoc *doc = load_ok("path: /x\nprot: 8\ninterval: 5s\npath: /y\n");
    struct diags errors = {0}, warnings = {0};
    struct yamldoc_field fields[] = {{.key = "path"}, {.key = "port"}, {.key = "interval"}};

    assert_int_equal(
        yamldoc_map_fields(doc, yamldoc_root(doc), "health", fields, 3, &errors, &warnings),
        -EINVAL);
    assert_string_equal(yamldoc_scalar(fields[0].value), "/x");
    assert_int_equal(fields[0].line, 1);
    assert_null(fields[1].value);
    assert_int_equal(fields[1].line, 0);
    assert_string_equal(yamldoc_scalar(fields[2].value), "5s");
    assert_int_equal(fields[2].line, 3);
    assert_int_equal(errors.n, 1);
    assert_diag(&errors, 4, "key \"path\" appears twice");
    assert_int_equal(warnings.n, 1);
    assert_diag(&warnings, 2, "unknown key \"prot\" in health (known keys: path, port, interval)");
    diags_clear(&errors);
    diags_clear(&warnings);

    /* NULL for unknown: ignored. */
    assert_int_equal(yamldoc_map_fields(doc, yamldoc_root(doc), "health", fields, 3, &errors, NULL),
                     -EINVAL);
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_map_fields_not_a_mapping(void **state)
{
    struct yamldoc *doc = load_ok("- a\n- b\n");
    struct diags errors = {0};
    struct yamldoc_field fields[] = {{.key = "path"}};

    assert_int_equal(
        yamldoc_map_fields(doc, yamldoc_root(doc), "the config", fields, 1, &errors, &errors),
        -EINVAL);
    assert_diag(&errors, 1, "the config must be a mapping of \"key: value\" lines, not a list");
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_read_string(void **state)
{
    struct yamldoc *doc =
        load_ok("a: plain\nb: \"quoted\"\nc: 12\nd: [x]\ne: \"nul\\0here\"\nf:\ng: {k: v}\n");
    struct diags errors = {0};
    char *s = NULL;

    assert_int_equal(yamldoc_read_string(doc, value_of(doc, "a"), "a", &s, &errors), 0);
    assert_string_equal(s, "plain");
    free(s);
    assert_int_equal(yamldoc_read_string(doc, value_of(doc, "b"), "b", &s, &errors), 0);
    assert_string_equal(s, "quoted");
    free(s);
    assert_int_equal(yamldoc_read_string(doc, value_of(doc, "c"), "c", &s, &errors), 0);
    assert_string_equal(s, "12");
    free(s);
    assert_int_equal(yamldoc_read_string(doc, value_of(doc, "f"), "f", &s, &errors), 0);
    assert_string_equal(s, "");
    free(s);
    s = NULL;
    assert_int_equal(yamldoc_read_string(doc, value_of(doc, "d"), "d", &s, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_string(doc, value_of(doc, "e"), "e", &s, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_string(doc, value_of(doc, "g"), "g.key", &s, &errors), -EINVAL);
    assert_null(s);
    assert_int_equal(errors.n, 3);
    assert_diag(&errors, 4, "d must be a string, not a list");
    assert_diag(&errors, 5, "e must not contain a NUL character");
    assert_diag(&errors, 7, "g.key must be a string, not a mapping");
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_read_bool(void **state)
{
    static const char *const true_words[] = {"true", "True", "TRUE", "yes", "Yes", "on", "ON"};
    static const char *const false_words[] = {"false", "False", "no", "NO", "off", "Off"};
    struct diags errors = {0};
    bool value;

    for (size_t i = 0; i < sizeof(true_words) / sizeof(true_words[0]); i++) {
        char *text = xasprintf("v: %s\n", true_words[i]);
        struct yamldoc *doc = load_ok(text);

        value = false;
        assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "v"), "v", &value, &errors), 0);
        assert_true(value);
        yamldoc_free(doc);
        free(text);
    }
    for (size_t i = 0; i < sizeof(false_words) / sizeof(false_words[0]); i++) {
        char *text = xasprintf("v: %s\n", false_words[i]);
        struct yamldoc *doc = load_ok(text);

        value = true;
        assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "v"), "v", &value, &errors), 0);
        assert_false(value);
        assert_true(yamldoc_is_false(value_of(doc, "v")));
        yamldoc_free(doc);
        free(text);
    }
    assert_int_equal(errors.n, 0);
}

static void test_read_bool_wrong_types(void **state)
{
    struct yamldoc *doc = load_ok("a: \"true\"\nb: yes please\nc: 1\nd: [true]\ne:\nf: 'no'\n");
    struct diags errors = {0};
    bool value = true;

    assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "a"), "gpu_required", &value, &errors),
                     -EINVAL);
    assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "b"), "b", &value, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "c"), "c", &value, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "d"), "d", &value, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "e"), "e", &value, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_bool(doc, value_of(doc, "f"), "f", &value, &errors), -EINVAL);
    assert_true(value);
    assert_diag(&errors, 1,
                "gpu_required must be true or false written without quotes, not the quoted "
                "string \"true\"");
    assert_diag(&errors, 2, "b must be true or false, not \"yes please\"");
    assert_diag(&errors, 3, "c must be true or false, not \"1\"");
    assert_diag(&errors, 4, "d must be true or false, not a list");
    assert_diag(&errors, 5, "e must be true or false, not nothing");
    assert_diag(&errors, 6, "without quotes");
    assert_false(yamldoc_is_false(value_of(doc, "f")));
    assert_false(yamldoc_is_false(value_of(doc, "d")));
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_read_uint(void **state)
{
    struct yamldoc *doc = load_ok("a: 8000\nb: 0\nc: 70000\nd: \"8000\"\ne: -1\nf: 1.5\n"
                                  "g: 99999999999999999999999\nh: {x: 1}\ni: 65535\n");
    struct diags errors = {0};
    uint64_t value = 7;

    assert_int_equal(yamldoc_read_uint(doc, value_of(doc, "a"), "a", 1, 65535, &value, &errors), 0);
    assert_int_equal(value, 8000);
    assert_int_equal(yamldoc_read_uint(doc, value_of(doc, "i"), "i", 1, 65535, &value, &errors), 0);
    assert_int_equal(value, 65535);
    value = 7;
    assert_int_equal(
        yamldoc_read_uint(doc, value_of(doc, "b"), "health.port", 1, 65535, &value, &errors),
        -EINVAL);
    assert_int_equal(yamldoc_read_uint(doc, value_of(doc, "c"), "c", 1, 65535, &value, &errors),
                     -EINVAL);
    assert_int_equal(yamldoc_read_uint(doc, value_of(doc, "d"), "d", 1, 65535, &value, &errors),
                     -EINVAL);
    assert_int_equal(yamldoc_read_uint(doc, value_of(doc, "e"), "e", 1, 65535, &value, &errors),
                     -EINVAL);
    assert_int_equal(yamldoc_read_uint(doc, value_of(doc, "f"), "f", 1, 65535, &value, &errors),
                     -EINVAL);
    assert_int_equal(
        yamldoc_read_uint(doc, value_of(doc, "g"), "g", 0, UINT64_MAX, &value, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_uint(doc, value_of(doc, "h"), "h", 1, 65535, &value, &errors),
                     -EINVAL);
    assert_int_equal(value, 7);
    assert_diag(&errors, 2, "health.port is \"0\", out of range: use a number from 1 to 65535");
    assert_diag(&errors, 3, "c is \"70000\", out of range");
    assert_diag(&errors, 4, "d must be a number written without quotes");
    assert_diag(&errors, 5, "e must be a whole number from 1 to 65535, not \"-1\"");
    assert_diag(&errors, 6, "f must be a whole number");
    assert_diag(&errors, 7, "g is \"99999999999999999999999\", out of range");
    assert_diag(&errors, 8, "h must be a whole number from 1 to 65535, not a mapping");
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_read_size(void **state)
{
    struct yamldoc *doc = load_ok("a: 12GiB\nb: 4096\nc: 1.5GiB\nd: [1]\ne: 2000TiB\n");
    struct diags errors = {0};
    uint64_t bytes = 7;

    assert_int_equal(yamldoc_read_size(doc, value_of(doc, "a"), "a", &bytes, &errors), 0);
    assert_int_equal(bytes, UINT64_C(12) << 30);
    assert_int_equal(yamldoc_read_size(doc, value_of(doc, "b"), "b", &bytes, &errors), 0);
    assert_int_equal(bytes, 4096);
    bytes = 7;
    assert_int_equal(yamldoc_read_size(doc, value_of(doc, "c"), "gpu.memory", &bytes, &errors),
                     -EINVAL);
    assert_int_equal(yamldoc_read_size(doc, value_of(doc, "d"), "d", &bytes, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_size(doc, value_of(doc, "e"), "e", &bytes, &errors), -EINVAL);
    assert_int_equal(bytes, 7);
    assert_diag(&errors, 3,
                "gpu.memory must be a size such as 24GiB, 512MiB, 500MB or a number of bytes, "
                "not \"1.5GiB\"");
    assert_diag(&errors, 4, "d must be a size");
    assert_diag(&errors, 5, "e is \"2000TiB\", more than the limit of 1 PiB");
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_read_duration(void **state)
{
    struct yamldoc *doc = load_ok("a: 5s\nb: 30\nc: \"500ms\"\nd: 5x\ne: 200h\nf: [5s]\ng: -1s\n");
    struct diags errors = {0};
    uint64_t ms = 7;

    assert_int_equal(yamldoc_read_duration(doc, value_of(doc, "a"), "a", &ms, &errors), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(yamldoc_read_duration(doc, value_of(doc, "b"), "b", &ms, &errors), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(yamldoc_read_duration(doc, value_of(doc, "c"), "c", &ms, &errors), 0);
    assert_int_equal(ms, 500);
    ms = 7;
    assert_int_equal(
        yamldoc_read_duration(doc, value_of(doc, "d"), "health.interval", &ms, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_duration(doc, value_of(doc, "e"), "e", &ms, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_duration(doc, value_of(doc, "f"), "f", &ms, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_duration(doc, value_of(doc, "g"), "g", &ms, &errors), -EINVAL);
    assert_int_equal(ms, 7);
    assert_diag(&errors, 4,
                "health.interval must be a duration such as 500ms, 5s, 2m, 1h or a number of "
                "seconds, not \"5x\"");
    assert_diag(&errors, 5, "e is \"200h\", longer than the limit of 168 hours");
    assert_diag(&errors, 6, "f must be a duration");
    assert_diag(&errors, 7, "not \"-1s\"");
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_read_strings(void **state)
{
    struct yamldoc *doc = load_ok("a: [python3, \"app.py\", 8000]\nb: []\nc:\n  - ok\n"
                                  "  - [nested]\n  - {k: v}\nd: one\ne: [1, 2, 3, 4]\n");
    struct diags errors = {0};
    char **strv = NULL;
    size_t n = 99;

    assert_int_equal(yamldoc_read_strings(doc, value_of(doc, "a"), "a", 8, &strv, &n, &errors), 0);
    assert_int_equal(n, 3);
    assert_string_equal(strv[0], "python3");
    assert_string_equal(strv[1], "app.py");
    assert_string_equal(strv[2], "8000");
    assert_null(strv[3]);
    strv_free(strv);
    assert_int_equal(yamldoc_read_strings(doc, value_of(doc, "b"), "b", 8, &strv, &n, &errors), 0);
    assert_int_equal(n, 0);
    assert_null(strv[0]);
    strv_free(strv);

    strv = NULL;
    n = 99;
    assert_int_equal(
        yamldoc_read_strings(doc, value_of(doc, "c"), "command", 8, &strv, &n, &errors), -EINVAL);
    assert_int_equal(yamldoc_read_strings(doc, value_of(doc, "d"), "d", 8, &strv, &n, &errors),
                     -EINVAL);
    assert_int_equal(yamldoc_read_strings(doc, value_of(doc, "e"), "e", 3, &strv, &n, &errors),
                     -EINVAL);
    assert_null(strv);
    assert_int_equal(n, 99);
    assert_int_equal(errors.n, 4);
    assert_diag(&errors, 5, "command[1] must be a string, not a list");
    assert_diag(&errors, 6, "command[2] must be a string, not a mapping");
    assert_diag(&errors, 7, "d must be a list of strings such as [\"a\", \"b\"], not \"one\"");
    assert_diag(&errors, 8, "e has 4 items; the limit is 3");
    diags_clear(&errors);
    yamldoc_free(doc);
}

static void test_quote(void **state)
{
    char buf[TEXT_QUOTE_MAX + 1];
    char small[10];
    char long_text[200];

    text_quote("plain", 5, buf, sizeof(buf));
    assert_string_equal(buf, "\"plain\"");
    text_quote("a\"b\\c\n\t\x7f", 8, buf, sizeof(buf));
    assert_string_equal(buf, "\"a\\\"b\\\\c\\x0a\\x09\\x7f\"");
    text_quote("caf\xc3\xa9 \xff \xed\xa0\x80", 11, buf, sizeof(buf));
    assert_string_equal(buf, "\"caf\xc3\xa9 \\xff \\xed\\xa0\\x80\"");

    memset(long_text, 'x', sizeof(long_text));
    text_quote(long_text, sizeof(long_text), buf, sizeof(buf));
    assert_true(strlen(buf) <= TEXT_QUOTE_MAX);
    assert_non_null(strstr(buf, "...\""));

    /* A cut never splits a character: "é" is two bytes. */
    for (size_t i = 0; i + 1 < sizeof(long_text); i += 2)
        memcpy(long_text + i, "\xc3\xa9", 2);
    text_quote(long_text, sizeof(long_text), buf, sizeof(buf));
    size_t len = strlen(buf);
    assert_string_equal(buf + len - 4, "...\"");
    assert_int_equal((unsigned char)buf[len - 5], 0xa9);

    text_quote("0123456789", 10, small, sizeof(small));
    assert_string_equal(small, "\"0123...\"");
}

static void test_text_printable(void **state)
{
    assert_true(text_printable("", 0));
    assert_true(text_printable("svc-1", 5));
    assert_true(text_printable("caf\xc3\xa9", 5));
    assert_true(text_printable("\xf0\x9f\x98\x80", 4));
    assert_false(text_printable("a\nb", 3));
    assert_false(text_printable("a\x7f", 2));
    assert_false(text_printable("\xff", 1));
    assert_false(text_printable("\xc3", 1));             /* cut short */
    assert_false(text_printable("\xc0\xaf", 2));         /* overlong */
    assert_false(text_printable("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(text_printable("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
}

static void test_describe(void **state)
{
    struct yamldoc *doc = load_ok("a:\nb: ''\nc: [1]\nd: {}\ne: text\n");
    char buf[TEXT_QUOTE_MAX + 1];

    yamldoc_describe(value_of(doc, "a"), buf, sizeof(buf));
    assert_string_equal(buf, "nothing");
    yamldoc_describe(value_of(doc, "b"), buf, sizeof(buf));
    assert_string_equal(buf, "\"\"");
    yamldoc_describe(value_of(doc, "c"), buf, sizeof(buf));
    assert_string_equal(buf, "a list");
    yamldoc_describe(value_of(doc, "d"), buf, sizeof(buf));
    assert_string_equal(buf, "a mapping");
    yamldoc_describe(value_of(doc, "e"), buf, sizeof(buf));
    assert_string_equal(buf, "\"text\"");
    assert_true(yamldoc_is_plain(value_of(doc, "e")));
    assert_false(yamldoc_is_plain(value_of(doc, "b")));
    assert_false(yamldoc_is_plain(value_of(doc, "c")));
    assert_true(yamldoc_is_null(value_of(doc, "a")));
    assert_false(yamldoc_is_null(value_of(doc, "b")));
    assert_false(yamldoc_is_null(value_of(doc, "c")));
    assert_false(yamldoc_is_null(value_of(doc, "e")));
    yamldoc_free(doc);

    doc = load_ok("a: ~\nb: null\nc: NULL\nd: \"null\"\n");
    assert_true(yamldoc_is_null(value_of(doc, "a")));
    assert_true(yamldoc_is_null(value_of(doc, "b")));
    assert_true(yamldoc_is_null(value_of(doc, "c")));
    assert_false(yamldoc_is_null(value_of(doc, "d")));
    yamldoc_free(doc);
}

static void test_diags_cap(void **state)
{
    struct diags d = {0};

    for (int i = 0; i < 250; i++)
        diags_add(&d, i, "problem %d", i);
    assert_int_equal(d.n, DIAGS_MAX);
    assert_int_equal(d.dropped, 250 - DIAGS_MAX);
    assert_string_equal(d.items[0].message, "problem 0");
    assert_int_equal(d.items[DIAGS_MAX - 1].line, DIAGS_MAX - 1);
    diags_clear(&d);
    assert_int_equal(d.n, 0);
    assert_int_equal(d.dropped, 0);
    assert_null(d.items);
    diags_clear(&d);
}

/* diags_limit() keeps the first max entries after start and counts the rest, dropped
 * ones included, in one last entry. */
static void test_diags_limit(void **state)
{
    struct diags d = {0};

    /* At or under the limit nothing changes. */
    diags_limit(&d, 0, 10);
    assert_int_equal(d.n, 0);
    for (int i = 0; i < 10; i++)
        diags_add(&d, i + 1, "problem %d", i);
    diags_limit(&d, 0, 10);
    assert_int_equal(d.n, 10);
    assert_string_equal(d.items[9].message, "problem 9");

    /* One over: ten kept, the eleventh counted. */
    diags_add(&d, 11, "problem 10");
    diags_limit(&d, 0, 10);
    assert_int_equal(d.n, 11);
    assert_string_equal(d.items[9].message, "problem 9");
    assert_int_equal(d.items[10].line, 0);
    assert_string_equal(d.items[10].message, "... and 1 more problem");
    diags_clear(&d);

    /* Past the list's own cap the dropped entries count too. */
    for (int i = 0; i < 250; i++)
        diags_add(&d, i, "problem %d", i);
    diags_limit(&d, 0, 10);
    assert_int_equal(d.n, 11);
    assert_string_equal(d.items[10].message, "... and 240 more problems");
    assert_int_equal(d.dropped, 0);
    diags_clear(&d);

    /* Entries before start are not touched nor counted. */
    for (int i = 0; i < 5; i++)
        diags_add(&d, 1, "earlier %d", i);
    for (int i = 0; i < 4; i++)
        diags_add(&d, 2, "later %d", i);
    diags_limit(&d, 5, 2);
    assert_int_equal(d.n, 8);
    assert_string_equal(d.items[4].message, "earlier 4");
    assert_string_equal(d.items[6].message, "later 1");
    assert_string_equal(d.items[7].message, "... and 2 more problems");
    diags_limit(&d, 9, 2); /* start past the end */
    assert_int_equal(d.n, 8);
    diags_clear(&d);
    diags_limit(NULL, 0, 10);
}

/* An anchor used inside itself makes a cycle; nothing here walks it. */
static void test_recursive_alias(void **state)
{
    struct yamldoc *doc = load_ok("a: &x [*x, 1]\n");
    struct diags errors = {0};
    char **strv;
    size_t n;

    assert_int_equal(yamldoc_read_strings(doc, value_of(doc, "a"), "a", 8, &strv, &n, &errors),
                     -EINVAL);
    assert_diag(&errors, 1, "a[0] must be a string, not a list");
    diags_clear(&errors);
    yamldoc_free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_mapping_and_lines),
        cmocka_unit_test(test_load_syntax_error),
        cmocka_unit_test(test_load_not_text),
        cmocka_unit_test(test_load_empty),
        cmocka_unit_test(test_load_two_documents),
        cmocka_unit_test(test_load_depth_limit),
        cmocka_unit_test(test_load_anchor_and_directive_limits),
        cmocka_unit_test(test_load_ignores_explicit_end),
        cmocka_unit_test(test_load_needs_no_nul_terminator),
        cmocka_unit_test(test_iter_duplicates_and_bad_keys),
        cmocka_unit_test(test_iter_clean_mapping),
        cmocka_unit_test(test_iter_many_keys),
        cmocka_unit_test(test_map_fields),
        cmocka_unit_test(test_map_fields_not_a_mapping),
        cmocka_unit_test(test_read_string),
        cmocka_unit_test(test_read_bool),
        cmocka_unit_test(test_read_bool_wrong_types),
        cmocka_unit_test(test_read_uint),
        cmocka_unit_test(test_read_size),
        cmocka_unit_test(test_read_duration),
        cmocka_unit_test(test_read_strings),
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_text_printable),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_diags_cap),
        cmocka_unit_test(test_diags_limit),
        cmocka_unit_test(test_recursive_alias),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
