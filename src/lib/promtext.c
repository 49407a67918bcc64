/* The Prometheus and OpenMetrics text formats: see promtext.h. */
#include <string.h>

#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/promtext.h"

#define PROM_INITIAL_CAP 4096
#define U64_DIGITS_MAX   20

void prom_init(struct prom *p, bool openmetrics, size_t size_hint)
{
    *p = (struct prom){.openmetrics = openmetrics};
    if (size_hint > 0) {
        p->cap = size_hint + size_hint / 8;
        p->buf = xmalloc(p->cap);
    }
}

void prom_free(struct prom *p)
{
    free(p->buf);
    *p = (struct prom){0};
}

/* Room for need more bytes and a NUL. */
static char *reserve(struct prom *p, size_t need)
{
    if (p->len + need + 1 > p->cap) {
        size_t cap = p->cap ? p->cap : PROM_INITIAL_CAP;
        while (p->len + need + 1 > cap)
            cap *= 2;
        p->buf = xrealloc(p->buf, cap);
        p->cap = cap;
    }
    return p->buf + p->len;
}

static void put(struct prom *p, const char *s, size_t n)
{
    memcpy(reserve(p, n), s, n);
    p->len += n;
}

static void put_str(struct prom *p, const char *s)
{
    put(p, s, strlen(s));
}

static void put_char(struct prom *p, char c)
{
    *reserve(p, 1) = c;
    p->len++;
}

/* v in decimal, at least min_digits of them (zeros in front). */
static void put_u64(struct prom *p, uint64_t v, int min_digits)
{
    char digits[U64_DIGITS_MAX];
    int n = 0;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 || n < min_digits);
    char *out = reserve(p, (size_t)n);
    for (int i = 0; i < n; i++)
        out[i] = digits[n - 1 - i];
    p->len += (size_t)n;
}

/* A label value with backslash, double quote and newline escaped (both formats). */
static void put_escaped(struct prom *p, const char *s)
{
    for (;;) {
        size_t plain = strcspn(s, "\\\"\n");
        put(p, s, plain);
        s += plain;
        if (!*s)
            return;
        put_char(p, '\\');
        put_char(p, *s == '\n' ? 'n' : *s);
        s++;
    }
}

/* HELP text with backslash and newline escaped, and in OpenMetrics the double quote. */
static void put_help(struct prom *p, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '\n' || (p->openmetrics && *s == '"'))
            put_char(p, '\\');
        put_char(p, *s == '\n' ? 'n' : *s);
    }
}

void prom_reserve(struct prom *p, size_t size)
{
    if (size > p->len)
        reserve(p, size - p->len);
}

char *prom_finish(struct prom *p, size_t *ret_len)
{
    char *text;

    if (p->openmetrics)
        put_str(p, "# EOF\n");
    reserve(p, 0);
    p->buf[p->len] = '\0';
    text = p->buf;
    *ret_len = p->len;
    *p = (struct prom){.openmetrics = p->openmetrics};
    return text;
}

void prom_family(struct prom *p, const char *name, const char *type, const char *help)
{
    size_t name_len = strlen(name);

    /* OpenMetrics: a counter's family is its samples' name without "_total". */
    if (p->openmetrics && strcmp(type, "counter") == 0 && name_len > 6 &&
        strcmp(name + name_len - 6, "_total") == 0)
        name_len -= 6;
    put_str(p, "# HELP ");
    put(p, name, name_len);
    put_char(p, ' ');
    put_help(p, help);
    put_str(p, "\n# TYPE ");
    put(p, name, name_len);
    put_char(p, ' ');
    put_str(p, type);
    put_char(p, '\n');
}

void prom_sample(struct prom *p, const char *name)
{
    put_str(p, name);
    p->in_labels = false;
}

void prom_label(struct prom *p, const char *key, const char *value)
{
    put_char(p, p->in_labels ? ',' : '{');
    p->in_labels = true;
    put_str(p, key);
    put_str(p, "=\"");
    put_escaped(p, value);
    put_char(p, '"');
}

/* Closes the labels, if any, and the space before the value. */
static void value_begin(struct prom *p)
{
    if (p->in_labels)
        put_char(p, '}');
    p->in_labels = false;
    put_char(p, ' ');
}

void prom_value(struct prom *p, uint64_t v)
{
    value_begin(p);
    put_u64(p, v, 1);
    put_char(p, '\n');
}

void prom_value_us(struct prom *p, uint64_t us)
{
    value_begin(p);
    put_u64(p, us / 1000000, 1);
    put_char(p, '.');
    put_u64(p, us % 1000000, 6);
    put_char(p, '\n');
}

void prom_value_nan(struct prom *p)
{
    value_begin(p);
    put_str(p, "NaN\n");
}

void prom_histogram_init(struct prom_histogram *h, const struct prom_bucket *buckets,
                         size_t n_buckets)
{
    if (n_buckets > PROM_BUCKETS_MAX)
        fatal("a histogram of %zu buckets: at most %d", n_buckets, PROM_BUCKETS_MAX);
    *h = (struct prom_histogram){.buckets = buckets, .n_buckets = n_buckets};
}

void prom_histogram_observe(struct prom_histogram *h, uint64_t us)
{
    size_t i = 0;

    while (i < h->n_buckets && us > h->buckets[i].us)
        i++;
    h->counts[i]++;
    h->sum_us += us;
    h->count++;
}

/* One sample of the histogram: name and suffix, the label key="value" when key is set. */
static void histogram_sample(struct prom *p, const char *name, const char *suffix, const char *key,
                             const char *value)
{
    prom_sample(p, name);
    put_str(p, suffix);
    if (key)
        prom_label(p, key, value);
}

void prom_histogram_write(struct prom *p, const char *name, const char *key, const char *value,
                          const struct prom_histogram *h)
{
    uint64_t cumulative = 0;

    for (size_t i = 0; i <= h->n_buckets; i++) {
        cumulative += h->counts[i];
        histogram_sample(p, name, "_bucket", key, value);
        prom_label(p, "le", i < h->n_buckets ? h->buckets[i].le : "+Inf");
        prom_value(p, cumulative);
    }
    histogram_sample(p, name, "_sum", key, value);
    prom_value_us(p, h->sum_us);
    histogram_sample(p, name, "_count", key, value);
    prom_value(p, h->count);
}
