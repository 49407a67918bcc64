/* Followed logs: every follower of a service shares one follow of its driver (a feed: one
 * watch of a process service's log file, one stream of a compose project's logs). The
 * first follower's tail comes through the feed itself; one that joins a feed already
 * there asks the driver for its tail (follow_tail), which ends where the feed stands when
 * it is answered: until then the follower gets none of the feed's lines, after it all of
 * them, so nothing is missed or seen twice. */
#include <stdio.h>
#include <string.h>

#include "core/supervisor_impl.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct follow_feed {
    struct supervisor *sup;   /* NULL once it left the supervisor's feeds */
    struct follow_feed *next; /* in sup->feeds */
    char *name;
    struct driver_follow *source;   /* NULL once stopped or ended */
    struct supervisor_follow *list; /* its followers, newest first */
    unsigned delivering;            /* callbacks on the stack: nothing is freed */
};

struct supervisor_follow {
    struct follow_feed *feed;
    supervisor_follow_line_fn line;
    supervisor_follow_end_fn end;
    void *data;
    struct driver_follow_tail *joining; /* its tail, while asked */
    bool live;                          /* gets the feed's lines */
    bool gone;                          /* cancelled or ended: freed once nothing delivers */
    struct supervisor_follow *next;
};

static char follow_error[256]; /* supervisor_follow()'s sentence, until its next call */

/* Frees the followers that went, and the feed when it has none and nothing delivers. */
static void feed_sweep(struct follow_feed *feed)
{
    struct supervisor_follow **at = &feed->list;

    if (feed->delivering > 0)
        return;
    while (*at) {
        struct supervisor_follow *f = *at;
        if (f->gone) {
            *at = f->next;
            free(f);
        } else {
            at = &f->next;
        }
    }
    if (!feed->list && !feed->source && !feed->sup) {
        free(feed->name);
        free(feed);
    }
}

/* Takes the feed out of the supervisor's feeds: followers that come later make a new one. */
static void feed_detach(struct follow_feed *feed)
{
    if (!feed->sup)
        return;
    for (struct follow_feed **at = &feed->sup->feeds; *at; at = &(*at)->next) {
        if (*at == feed) {
            *at = feed->next;
            break;
        }
    }
    feed->sup = NULL;
}

/* The feed of the service called name, or NULL. */
static struct follow_feed *feed_find(const struct supervisor *sup, const char *name)
{
    struct follow_feed *feed;

    for (feed = sup->feeds; feed && strcmp(feed->name, name) != 0; feed = feed->next)
        ;
    return feed;
}

/* Stops the driver's follow (no callback after it). */
static void feed_stop(struct follow_feed *feed)
{
    struct driver_follow *source = feed->source;

    feed_detach(feed);
    feed->source = NULL;
    if (source)
        source->driver->follow_stop(source);
}

/* True while some follower has not gone. */
static bool feed_followed(const struct follow_feed *feed)
{
    for (const struct supervisor_follow *f = feed->list; f; f = f->next)
        if (!f->gone)
            return true;
    return false;
}

/* f goes: its tail is no longer wanted, and a feed nobody follows stops. */
static void follower_drop(struct supervisor_follow *f)
{
    struct follow_feed *feed = f->feed;

    f->gone = true;
    if (f->joining) {
        struct driver_follow_tail *t = f->joining;
        f->joining = NULL;
        t->driver->follow_tail_cancel(t);
    }
    if (!feed_followed(feed))
        feed_stop(feed);
}

static void on_feed_line(void *data, const char *line, size_t len)
{
    struct follow_feed *feed = data;

    feed->delivering++;
    for (struct supervisor_follow *f = feed->list; f; f = f->next)
        if (f->live && !f->gone)
            f->line(f->data, line, len);
    feed->delivering--;
    feed_sweep(feed);
}

/* Ends every follower of feed (error: why), and stops its driver's follow (unless it
 * ended by itself). */
static void feed_end(struct follow_feed *feed, const char *error)
{
    feed_detach(feed); /* a follower that comes from an end() makes a new feed */
    feed->delivering++;
    for (struct supervisor_follow *f = feed->list; f; f = f->next) {
        if (f->gone)
            continue;
        f->gone = true;
        if (f->joining) {
            struct driver_follow_tail *t = f->joining;
            f->joining = NULL;
            t->driver->follow_tail_cancel(t);
        }
        f->end(f->data, error);
    }
    feed_stop(feed); /* every tail was cancelled by now */
    feed->delivering--;
    feed_sweep(feed);
}

static void on_feed_ended(void *data, const char *error)
{
    struct follow_feed *feed = data;

    feed_detach(feed);
    feed->source = NULL; /* the driver let go of it */
    feed_end(feed, error ? error : "its output ended");
}

static const struct driver_follow_events feed_events = {
    .line = on_feed_line,
    .ended = on_feed_ended,
};

/* A joining follower's tail: it goes out, then the follower is live. */
static void on_join_tail(void *data, char **lines, const char *error)
{
    struct supervisor_follow *f = data;
    struct follow_feed *feed = f->feed;

    f->joining = NULL;
    feed->delivering++;
    if (!lines) {
        f->gone = true;
        f->end(f->data, error ? error : "cannot read its last lines");
        if (!feed_followed(feed))
            feed_stop(feed);
    } else {
        for (char **line = lines; *line && !f->gone; line++)
            f->line(f->data, *line, strlen(*line));
        f->live = true;
    }
    feed->delivering--;
    feed_sweep(feed);
}

struct supervisor_follow *supervisor_follow(struct supervisor *sup, struct service *svc,
                                            unsigned tail, supervisor_follow_line_fn line,
                                            supervisor_follow_end_fn end, void *data,
                                            const char **error)
{
    const struct driver *driver = driver_for(svc->manifest);
    struct follow_feed *feed = feed_find(sup, svc->name);
    struct supervisor_follow *f;
    char *path;
    int r;

    if (!driver || !driver->follow) {
        *error = "its driver cannot follow its output";
        return NULL;
    }
    if (feed && feed->source->driver != driver)
        feed_end(feed, "its driver changed");
    feed = feed_find(sup, svc->name);
    f = xcalloc(1, sizeof(*f));
    f->line = line;
    f->end = end;
    f->data = data;
    if (feed) {
        f->feed = feed;
        f->next = feed->list;
        feed->list = f;
        feed->source->driver->follow_tail(feed->source, tail, on_join_tail, f, &f->joining);
        return f;
    }
    feed = xcalloc(1, sizeof(*feed));
    feed->name = xstrdup(svc->name);
    path = state_log_path(sup->config->state_dir, svc->name);
    r = driver->follow(sup->loop, svc->manifest, path, tail, &feed_events, feed, &feed->source,
                       follow_error, sizeof(follow_error));
    free(path);
    if (r < 0) {
        free(feed->name);
        free(feed);
        free(f);
        *error = follow_error;
        return NULL;
    }
    feed->sup = sup;
    feed->next = sup->feeds;
    sup->feeds = feed;
    f->feed = feed;
    f->live = true; /* its tail comes through the feed */
    feed->list = f;
    return f;
}

void supervisor_follow_cancel(struct supervisor_follow *f)
{
    struct follow_feed *feed;

    if (!f || f->gone)
        return;
    feed = f->feed;
    feed->delivering++;
    follower_drop(f);
    feed->delivering--;
    feed_sweep(feed);
}

size_t supervisor_follow_watches(const struct supervisor *sup)
{
    size_t n = 0;

    for (const struct follow_feed *feed = sup->feeds; feed; feed = feed->next)
        n++;
    return n;
}

void follow_service_removed(struct supervisor *sup, const char *name)
{
    struct follow_feed *feed = feed_find(sup, name);

    if (feed)
        feed_end(feed, "the service was removed");
}

void follow_free_all(struct supervisor *sup)
{
    while (sup->feeds)
        feed_end(sup->feeds, "the daemon is stopping");
}
