/* Request bodies, read as JSON whatever their Content-Type says (SPEC section 3). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "http/body.h"

static bool is_blank(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\0' || !strchr(" \t\r\n", buf[i]))
            return false;
    return true;
}

/* Loads a JSON object from buf; an empty body gives NULL with no error. */
static int load_object(const char *buf, size_t len, json_t **ret, char *err, size_t err_size)
{
    json_error_t jerr;
    json_t *doc;

    if (is_blank(buf, len)) {
        *ret = NULL;
        return 0;
    }
    doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(err, err_size, "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        return -EINVAL;
    }
    if (!json_is_object(doc)) {
        snprintf(err, err_size, "the body must be a JSON object, like {\"force\": true}");
        json_decref(doc);
        return -EINVAL;
    }
    *ret = doc;
    return 0;
}

int body_parse_start(const char *buf, size_t len, struct start_request *ret, char *err,
                     size_t err_size)
{
    struct start_request req = {.force = false};
    json_t *doc, *value;
    const char *key;
    int r;

    r = load_object(buf, len, &doc, err, err_size);
    if (r < 0)
        return r;
    json_object_foreach(doc, key, value)
    {
        if (strcmp(key, "force") == 0) {
            if (!json_is_boolean(value)) {
                snprintf(err, err_size, "\"force\" must be true or false");
                json_decref(doc);
                return -EINVAL;
            }
            req.force = json_is_true(value);
        } else {
            snprintf(err, err_size, "unknown member \"%.64s\" (known: \"force\")", key);
            json_decref(doc);
            return -EINVAL;
        }
    }
    json_decref(doc);
    *ret = req;
    return 0;
}

int body_parse_empty(const char *buf, size_t len, char *err, size_t err_size)
{
    json_t *doc;
    int r;

    r = load_object(buf, len, &doc, err, err_size);
    if (r < 0)
        return r;
    if (doc && json_object_size(doc) > 0) {
        snprintf(err, err_size, "this endpoint takes no parameters; send no body or {}");
        json_decref(doc);
        return -EINVAL;
    }
    json_decref(doc);
    return 0;
}
