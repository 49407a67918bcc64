/* models: and model_aliases: of a manifest: the model names OpenAI-style requests
 * (/v1/..., their body's "model") are routed by to this service (SPEC section 7 "Proxy
 * and on demand"). */
#include <stdlib.h>
#include <string.h>

#include "core/manifest_internal.h"
#include "lib/alloc.h"
#include "lib/text.h"

/* A model name as requests carry it: 1 to MANIFEST_MODEL_MAX bytes, no control
 * character. Reports at line and returns false otherwise. */
static bool model_name_ok(struct manifest_parser *p, const char *what, const char *name, int line)
{
    size_t len = strlen(name);
    char quoted[TEXT_QUOTE_MAX + 1];

    text_quote(name, len, quoted, sizeof(quoted));
    if (len == 0 || len > MANIFEST_MODEL_MAX) {
        manifest_error(p, line, "%s: a model name has 1 to %d bytes, not %zu", what,
                       MANIFEST_MODEL_MAX, len);
        return false;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
            manifest_error(p, line, "%s: %s holds a control character", what, quoted);
            return false;
        }
    return true;
}

static void parse_models(struct manifest_parser *p)
{
    char **kept = manifest_read_names(
        p, &p->fields[F_MODELS], "models", MANIFEST_MODELS_MAX,
        "models must be a list of the model names requests carry, such as [\"llama-3-8b\"]",
        model_name_ok);

    if (kept)
        p->m->models = kept;
}

/* model_aliases: {alias: model}: more names for models it lists. */
static void parse_aliases(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_MODEL_ALIASES];
    struct yamldoc_iter it;
    const char *key;
    yaml_node_t *value;
    int line;
    size_t n = 0, size;
    char what[MANIFEST_MODEL_MAX + 32], quoted[TEXT_QUOTE_MAX + 1];

    if (!f->value)
        return;
    if (f->value->type != YAML_MAPPING_NODE) {
        manifest_type_error(p, f->value,
                            "model_aliases must be a mapping of other names to models it lists, "
                            "such as {gpt-4o: llama-3-8b}");
        return;
    }
    size = (size_t)(f->value->data.mapping.pairs.top - f->value->data.mapping.pairs.start);
    p->m->model_aliases = xcalloc(2 * size + 1, sizeof(char *));
    yamldoc_iter_begin(&it, p->doc, f->value, p->errors);
    while (yamldoc_iter_next(&it, &key, &line, &value)) {
        char *target = NULL;

        snprintf(what, sizeof(what), "model_aliases.%.*s", MANIFEST_MODEL_MAX, key);
        if (!model_name_ok(p, "model_aliases", key, line) ||
            manifest_check(p, yamldoc_read_string(p->doc, value, what, &target, p->errors)) < 0)
            continue;
        text_quote(key, strlen(key), quoted, sizeof(quoted));
        if (!strv_find(p->m->models, target))
            manifest_error(p, line, "%s: %s names a model that models does not list", what, quoted);
        else if (strv_find(p->m->models, key))
            manifest_error(p, line, "%s: %s is a model of models already, not another name", what,
                           quoted);
        else {
            p->m->model_aliases[n++] = xstrdup(key);
            p->m->model_aliases[n++] = target;
            target = NULL;
        }
        free(target);
    }
    manifest_check(p, yamldoc_iter_end(&it));
}

void manifest_parse_models(struct manifest_parser *p)
{
    parse_models(p);
    parse_aliases(p);
}

const char *manifest_model_for(const struct manifest *m, const char *name)
{
    const char *model = strv_find(m->models, name);

    if (model)
        return model;
    for (size_t i = 0; m->model_aliases && m->model_aliases[i]; i += 2)
        if (strcmp(m->model_aliases[i], name) == 0)
            return m->model_aliases[i + 1];
    return NULL;
}
