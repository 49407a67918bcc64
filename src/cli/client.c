/* The client core: libcurl's easy API (blocking is fine in a command), the key sent as a
 * bearer token, and a failure told as one sentence with the exit code it maps to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli/client.h"
#include "lib/alloc.h"

void client_defaults(struct client *c)
{
    if (!c->url)
        c->url = getenv("NANNY_URL");
    if (!c->url || !*c->url)
        c->url = CLIENT_DEFAULT_URL;
    if (!c->key)
        c->key = getenv("NANNY_KEY");
    if (!c->cacert)
        c->cacert = getenv("NANNY_CACERT");
}

static size_t on_data(char *data, size_t size, size_t n, void *user)
{
    struct client_response *resp = user;
    size_t len = size * n;

    resp->body = xrealloc(resp->body, resp->len + len + 1);
    memcpy(resp->body + resp->len, data, len);
    resp->len += len;
    resp->body[resp->len] = '\0';
    return len;
}

int client_request(const struct client *c, const char *method, const char *path, const char *body,
                   struct client_response *resp)
{
    struct curl_slist *headers = NULL;
    size_t base_len = strlen(c->url);
    char *url, *auth = NULL;
    CURLcode rc;
    CURL *curl;
    int r = 0;

    while (base_len > 0 && c->url[base_len - 1] == '/')
        base_len--;
    url = xasprintf("%.*s%s", (int)base_len, c->url, path);
    memset(resp, 0, sizeof(*resp));
    curl = curl_easy_init();
    if (!curl)
        abort();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (c->timeout_ms > 0)
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    if (c->cacert && *c->cacert)
        curl_easy_setopt(curl, CURLOPT_CAINFO, c->cacert);
    if (c->key && *c->key) {
        auth = xasprintf("Authorization: Bearer %s", c->key);
        headers = curl_slist_append(headers, auth);
    }
    if (body) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

    rc = curl_easy_perform(curl);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        fprintf(stderr, "nanny: timed out waiting for the nanny at %s\n", c->url);
        r = CLIENT_EXIT_TIMEOUT;
    } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
        fprintf(stderr, "nanny: no nanny answers at %s: is it running? (./start.sh)\n", c->url);
        r = CLIENT_EXIT_UNREACHABLE;
    } else if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
        fprintf(stderr,
                "nanny: the nanny at %s shows a certificate this command does not trust: "
                "give its CA with --cacert or NANNY_CACERT (%s)\n",
                c->url, curl_easy_strerror(rc));
        r = CLIENT_EXIT_UNREACHABLE;
    } else if (rc != CURLE_OK) {
        fprintf(stderr, "nanny: no nanny answers at %s: %s\n", c->url, curl_easy_strerror(rc));
        r = CLIENT_EXIT_UNREACHABLE;
    } else {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
        if (resp->body)
            resp->json = json_loadb(resp->body, resp->len, 0, NULL);
        else
            resp->body = xstrdup("");
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    free(auth);
    free(url);
    if (r)
        client_response_done(resp);
    return r;
}

int client_fail(const char *cmd, const char *name, const struct client_response *resp)
{
    const char *message = json_string_value(json_object_get(resp->json, "message"));
    const char *error = json_string_value(json_object_get(resp->json, "error"));
    const char *holder = json_string_value(json_object_get(resp->json, "holder"));

    if (resp->status >= 200 && resp->status < 300)
        return CLIENT_EXIT_OK;
    if (!message)
        message = "the nanny gave no message";
    if (resp->status == 409 && error && strcmp(error, "gpu_conflict") == 0) {
        fprintf(stderr, "nanny %s: %s\n", cmd, message);
        fprintf(stderr, "%s holds the GPU; to stop it and start %s: nanny start %s --force\n",
                holder ? holder : "another service", name ? name : "this one",
                name ? name : "NAME");
        return CLIENT_EXIT_CONFLICT;
    }
    fprintf(stderr, "nanny %s: %s (HTTP %ld)\n", cmd, message, resp->status);
    if (resp->status == 401 || resp->status == 403)
        return CLIENT_EXIT_UNAUTHORIZED;
    if (resp->status == 504)
        return CLIENT_EXIT_TIMEOUT;
    return CLIENT_EXIT_FAILED;
}

void client_response_done(struct client_response *resp)
{
    free(resp->body);
    json_decref(resp->json);
    memset(resp, 0, sizeof(*resp));
}

char *client_escape(const char *name)
{
    char *e = curl_easy_escape(NULL, name, 0);
    char *r;

    if (!e)
        abort();
    r = xstrdup(e);
    curl_free(e);
    return r;
}
