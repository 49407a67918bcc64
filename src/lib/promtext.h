/* Writes metrics in Prometheus' text exposition format (version 0.0.4) or in OpenMetrics
 * 1.0.0 text, into a growing buffer: a family's HELP and TYPE, then its samples. Values are
 * integers or fixed-point microseconds written without printf, so that a page of tens of
 * thousands of samples costs little. */
#ifndef NANNY_PROMTEXT_H
#define NANNY_PROMTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROM_TEXT_TYPE        "text/plain; version=0.0.4; charset=utf-8"
#define PROM_OPENMETRICS_TYPE "application/openmetrics-text; version=1.0.0; charset=utf-8"

#define PROM_BUCKETS_MAX 20

struct prom {
    char *buf;
    size_t len, cap;
    bool openmetrics;
    bool in_labels; /* a sample's '{' is open */
};

/* Bucket bounds of a histogram, ascending: le as written, a canonical float as OpenMetrics
 * asks ("0.005", "1.0", "60.0"), and in microseconds; the +Inf bucket is implied. */
struct prom_bucket {
    const char *le;
    uint64_t us;
};

struct prom_histogram {
    const struct prom_bucket *buckets; /* borrowed, n_buckets of them */
    size_t n_buckets;
    uint64_t counts[PROM_BUCKETS_MAX + 1]; /* per bucket, not cumulative; the last: +Inf */
    uint64_t sum_us;
    uint64_t count;
};

/* An empty page with room for size_hint bytes (0: a default). */
void prom_init(struct prom *p, bool openmetrics, size_t size_hint);

/* Makes room for a page of size bytes in all, at once: a page that grows by doubling
 * copies itself, and first touches its new memory, in the middle of a slice. */
void prom_reserve(struct prom *p, size_t size);

/* The text written (NUL-terminated) and its length; the caller owns it and the prom is
 * empty again. OpenMetrics' "# EOF" is added first. */
char *prom_finish(struct prom *p, size_t *ret_len);

void prom_free(struct prom *p);

/* A family's HELP and TYPE ("gauge", "counter", "histogram"). A counter's name ends in
 * _total: OpenMetrics names its family without it. */
void prom_family(struct prom *p, const char *name, const char *type, const char *help);

/* A sample: prom_sample(), then prom_label() for each label, then one prom_value_*(). */
void prom_sample(struct prom *p, const char *name);
void prom_label(struct prom *p, const char *key, const char *value);
void prom_value(struct prom *p, uint64_t v);
void prom_value_us(struct prom *p, uint64_t us); /* microseconds, written as seconds */
void prom_value_nan(struct prom *p);

/* A histogram that counts into the bounds of buckets (at most PROM_BUCKETS_MAX). */
void prom_histogram_init(struct prom_histogram *h, const struct prom_bucket *buckets,
                         size_t n_buckets);
void prom_histogram_observe(struct prom_histogram *h, uint64_t us);

/* Writes h's _bucket (cumulative, le), _sum and _count samples of the family name, each
 * with the label key="value" first (key NULL: none). */
void prom_histogram_write(struct prom *p, const char *name, const char *key, const char *value,
                          const struct prom_histogram *h);

#endif
