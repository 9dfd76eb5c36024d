/*
 * events.h - lifecycle events (SPEC §8): what happened, as JSON objects in
 * the Channels layer's message format ({"type": "herald.connect", ...}),
 * and their delivery to the application.
 *
 * Delivery. Each destination - the webhook (HERALD_EVENTS_WEBHOOK_URL,
 * built in here) or a Django Channels channel (HERALD_EVENTS_DJANGO_CHANNEL,
 * plugged in through hr_events_add by the channel layer's bridge) - has its
 * own bounded queue, so a slow one never holds up the other. Events are
 * sent in batches of at most `batch`, a partial batch at least every
 * flush_ms, and one batch at a time per destination, so a destination sees
 * events in the order they were queued. A batch is kept until the
 * destination confirms it (at least once: a retried batch may arrive
 * twice); failures are retried with exponential backoff and jitter. What
 * does not fit in a queue, what a destination refuses for good, and what
 * is still queued at shutdown is dropped, counted (herald_events_dropped_
 * total) and logged.
 *
 * Threads: events may be emitted from any thread; delivery runs on one
 * loop thread (hr_events_start), which also owns the destinations.
 */
#ifndef HR_EVENTS_H
#define HR_EVENTS_H

#include "gateway/backend.h"
#include "gateway/metrics.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

/*---- The events (pure) -----------------------------------------------------*/

/* Each returns a new object (one reference, the caller's), or NULL when a
 * string is not UTF-8. user NULL (an anonymous connection) is JSON null. */

/* {"type":"herald.connect","client","user","transport","node"} */
json_t *hr_event_connect(const char *client, const char *user, const char *transport,
                         const char *node);
/* {"type":"herald.disconnect","client","user","code","duration_ms","node"} */
json_t *hr_event_disconnect(const char *client, const char *user, int code, uint64_t duration_ms,
                            const char *node);
/* {"type":"herald.subscribe"|"herald.unsubscribe","client","user","channel"} */
json_t *hr_event_subscription(int subscribed, const char *client, const char *user,
                              const char *channel);
/* {"type":"herald.channel.occupied"|"herald.channel.vacated","channel"}: the
 * first subscriber anywhere / the last one gone, cluster-wide */
json_t *hr_event_channel(int occupied, const char *channel);

/* The webhook's request body for events[0..n): {"events":[...]}, compact,
 * malloc'ed (caller frees), its length in *len. */
char *hr_events_webhook_body(json_t *const *events, size_t n, size_t *len);

/*---- Delivery --------------------------------------------------------------*/

typedef struct hr_events hr_events;

typedef struct hr_events_opts {
    int batch;          /* most events per delivery (HERALD_EVENTS_BATCH) */
    int queue;          /* most events waiting per destination (HERALD_EVENTS_QUEUE) */
    int flush_ms;       /* a partial batch leaves after at most this long (1000) */
    int backoff_min_ms; /* first retry after a failure (100) ... */
    int backoff_max_ms; /* ... doubling up to this (30000) */
} hr_events_opts;

/* How one delivery ended. */
typedef enum hr_events_result {
    HR_EVENTS_DELIVERED, /* confirmed: the batch is done */
    HR_EVENTS_RETRY,     /* failed for now: the same batch again after a backoff */
    HR_EVENTS_REFUSED,   /* refused for good (a 4xx): the batch is dropped and logged */
} hr_events_result;

typedef void (*hr_events_done_fn)(void *token, hr_events_result r);

/* A destination: the hook for the Django Channels channel, and the shape of
 * the built-in webhook. */
typedef struct hr_events_dest_ops {
    const char *name; /* "webhook", "django": in logs */
    /* At hr_events_start, on the delivery loop's thread: set up what needs
     * the loop. Returns 0 or -1 (start fails). May be NULL. */
    int (*start)(void *ud, uv_loop_t *uv);
    /* Sends events[0..n) (borrowed until done runs). Must call
     * done(token, ...) exactly once, on the delivery loop's thread; calling
     * it before returning is allowed. */
    void (*deliver)(void *ud, json_t *const *events, size_t n, hr_events_done_fn done, void *token);
    /* Stops for good: a pending delivery's done must not be called any
     * more; frees ud. */
    void (*close)(void *ud);
} hr_events_dest_ops;

/* Returns a new, not yet started, event hub with opts (values <= 0 take
 * the defaults above). */
hr_events *hr_events_new(const hr_events_opts *opts);

/* Adds a destination (before hr_events_start); the hub owns ud from now on
 * and closes it through ops->close. Returns 0, or -1 when there are
 * already HR_EVENTS_MAX_DESTS (ops->close(ud) is called). */
#define HR_EVENTS_MAX_DESTS 4
int hr_events_add(hr_events *ev, const hr_events_dest_ops *ops, void *ud);

/* Adds the webhook: POSTs hr_events_webhook_body to url, with
 * "X-Herald-Proxy-Key: key" when key is set, through its own HTTP client
 * (one request at a time; timeout_ms each; TLS verified against ca_file
 * when set), created at hr_events_start. A 2xx answer confirms the batch; a
 * 4xx other than 408 and 429 refuses it; anything else is retried. Strings
 * are copied. Returns 0 or -1 (as hr_events_add). */
int hr_events_add_webhook(hr_events *ev, const char *url, const char *key, long timeout_ms,
                          const char *ca_file);

/* Starts delivering on uv (that loop's thread owns the destinations from
 * now on); stats are that loop's counters (sent, retries, drops by
 * refusal or shutdown). Returns 0, or -1 (logged). */
int hr_events_start(hr_events *ev, uv_loop_t *uv, hr_counters *stats);

/* Any thread: queues event (takes the caller's reference) for every
 * destination. A destination whose queue is full drops it: counted in
 * stats (the caller's loop counters; NULL = not counted) and logged at
 * most once a second. Before start or after stop it is dropped the same
 * way. */
void hr_events_emit(hr_events *ev, json_t *event, hr_counters *stats);

/* Events waiting in the fullest destination's queue (any thread). */
size_t hr_events_queued(hr_events *ev);

/* Delivery loop's thread: stops delivering, closes the destinations and
 * counts (and logs) what was still queued or in flight as dropped. The uv
 * handles close as the loop runs on. */
void hr_events_stop(hr_events *ev);

/* Frees the hub after hr_events_stop and once its loop has run the close
 * callbacks (or it never started). NULL ok. */
void hr_events_free(hr_events *ev);

#endif
