/*
 * channels.h - Herald's channel layer: group membership and fan-out.
 *
 * One interface, two implementations behind an ops table: the in-process
 * layer (embedded mode, local.c) and the Redis layer (cluster mode). The
 * WebSocket and REST code see only this header.
 *
 * Threads. The gateway runs one event loop per thread. Each loop thread owns
 * a shard of the layer: the memberships of its own connections, touched
 * only by that thread. A node-level registry (registry.c), shared by all
 * threads, knows which threads hold subscribers of each channel. Its
 * transitions "this node gained its first subscriber of C" and "lost its
 * last" are the only place where an implementation hears about channels
 * (ops->channel_open / channel_close): the Redis layer SUBSCRIBEs and
 * UNSUBSCRIBEs there, so a node holds one Redis subscription per channel
 * whatever its number of threads and connections.
 *
 * Fan-out. A publication is serialised and framed once (chan_msg). The layer
 * routes it with chan_dispatch(): under the channel's registry lock it hands
 * one reference to the inbox of every thread that has subscribers (the
 * host's post callback). Because every publication of a channel passes
 * through that one lock, every thread's inbox receives a channel's
 * publications in the same order, so all subscribers on all threads see
 * one order. The thread then calls chan_deliver(), which hands the
 * reference to each local subscriber (the host's deliver callback). The
 * publishing thread is no exception: its own subscribers are reached through
 * its inbox too, never ahead of publications queued before.
 */
#ifndef HR_CHANNELS_H
#define HR_CHANNELS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/*---- Messages: serialised once, framed once, refcounted --------------------*/

/* Maximum WebSocket frame header for a server (unmasked) frame. */
#define CHAN_FRAME_HDR_MAX 10
/* Threads a layer can serve (the registry keeps one bit per thread). */
#define CHAN_MAX_THREADS 64

typedef struct chan_msg {
    atomic_int refs;
    size_t len;          /* payload bytes (the JSON text) */
    size_t hdr;          /* frame header bytes stored just before the payload */
    const char *channel; /* publications: the channel (inside _b), else NULL */
    unsigned char _b[];  /* [pad][header][payload][channel NUL] */
} chan_msg;

/* Builds a message from JSON text: copies it and precomputes the WebSocket
 * text-frame header. Returns a message with one reference (the caller's).
 * Aborts on allocation failure (common.h's policy). */
chan_msg *chan_msg_new(const char *json, size_t len);
/* Takes one more reference; returns m. Any thread. */
chan_msg *chan_msg_ref(chan_msg *m);
/* Drops one reference; frees the message when the last one goes. NULL ok.
 * Any thread. */
void chan_msg_unref(chan_msg *m);
/* The complete frame (header + payload) to hand to the socket as-is. */
static inline const unsigned char *chan_msg_frame(const chan_msg *m, size_t *frame_len)
{
    *frame_len = m->hdr + m->len;
    return m->_b + CHAN_FRAME_HDR_MAX - m->hdr;
}
/* The JSON payload (not NUL-terminated). */
static inline const char *chan_msg_payload(const chan_msg *m)
{
    return (const char *)m->_b + CHAN_FRAME_HDR_MAX;
}

/* Serialises the `message` push {"push":"message","channel":C,"data":D} with
 * data_json inserted verbatim (it must already be valid JSON), plus
 * "offset":O when offset > 0, and records C in m->channel. Returns a new
 * message (one reference, the caller's). */
chan_msg *chan_msg_publication(const char *channel, const char *data_json, size_t data_len,
                               uint64_t offset);

/*---- The layer -------------------------------------------------------------*/

typedef struct chan_layer chan_layer;
typedef struct chan_sub chan_sub; /* one (channel, subscriber) membership */

/* What the layer needs from the gateway. */
typedef struct chan_host {
    unsigned nthreads; /* loop threads, 1..CHAN_MAX_THREADS */
    /* Gives one reference to m to loop thread `thread`; that thread later
     * calls chan_deliver(l, thread, m) and drops the reference. Called on
     * any thread with a registry lock held: it must only queue (no
     * blocking, no calls back into the layer). */
    void (*post)(void *ud, unsigned thread, chan_msg *m);
    /* Called on the subscriber's thread once per local subscriber of a
     * publication; `owner` is the pointer given to chan_subscribe. The
     * callee takes its own reference if it keeps m, and must not subscribe
     * or unsubscribe (the subscriber array is being walked). */
    void (*deliver)(void *owner, chan_msg *m);
    void *ud;
} chan_host;

/* Completion of a publish: status 0 on success, negative on failure (e.g.
 * -EAGAIN when Redis is unreachable); offset > 0 where history is kept. Runs
 * on the publishing thread, possibly before chan_publish returns. */
typedef void (*chan_publish_cb)(void *ud, int status, uint64_t offset);

typedef struct chan_stats {
    uint64_t channels;      /* channels with at least one subscriber on this node */
    uint64_t subscriptions; /* memberships on this node */
    uint64_t publications;  /* publish() calls accepted */
    uint64_t deliveries;    /* messages handed to local subscribers */
} chan_stats;

/* An implementation. Every function may be called from any loop thread
 * unless it says otherwise. */
typedef struct chan_layer_ops {
    const char *name;
    /* Publishes data_json (valid JSON text, not retained) to channel. */
    int (*publish)(chan_layer *l, unsigned thread, const char *channel, const char *data_json,
                   size_t data_len, chan_publish_cb cb, void *ud);
    /* The node gained its first / lost its last subscriber of channel.
     * Called with that channel's registry lock held, in the order the
     * transitions happened: must only queue work. NULL = nothing to do. */
    void (*channel_open)(chan_layer *l, const char *channel);
    void (*channel_close)(chan_layer *l, const char *channel);
    /* Frees what the implementation added to the layer. */
    void (*destroy)(chan_layer *l);
} chan_layer_ops;

/* Creates the in-process layer. The host struct is copied. */
chan_layer *chan_local_new(const chan_host *host);
/* The implementation's name ("local", "redis"). */
const char *chan_layer_name(const chan_layer *l);
/* Frees the layer and every remaining membership. After every loop thread
 * has stopped. NULL ok. */
void chan_layer_destroy(chan_layer *l);

/* On loop thread `thread`: adds owner to channel. Returns the membership
 * handle (owned by the layer, valid until chan_unsubscribe). */
chan_sub *chan_subscribe(chan_layer *l, unsigned thread, const char *channel, void *owner);
/* On the thread that subscribed: removes and frees the membership. */
void chan_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s);
/* Publishes from loop thread `thread` (see ops->publish). */
int chan_publish(chan_layer *l, unsigned thread, const char *channel, const char *data_json,
                 size_t data_len, chan_publish_cb cb, void *ud);
/* Any thread: routes a publication (m->channel set) to every thread with
 * subscribers of its channel. Does not consume the caller's reference.
 * Implementations call this for what they receive. */
void chan_dispatch(chan_layer *l, chan_msg *m);
/* On loop thread `thread`: hands m to that thread's subscribers of
 * m->channel. Does not consume the caller's reference. */
void chan_deliver(chan_layer *l, unsigned thread, chan_msg *m);
/* Sums the counters of every thread (any thread; values are a snapshot). */
void chan_layer_stats(chan_layer *l, chan_stats *out);
/* Number of threads of this node with subscribers of channel (for tests and
 * metrics). Any thread. */
unsigned chan_channel_threads(chan_layer *l, const char *channel);

/*---- Channel names ---------------------------------------------------------*/

/* 1..max_len bytes of [A-Za-z0-9_.:@=,-]. Returns 1 if valid. */
int chan_name_valid(const char *name, size_t len, size_t max_len);

#endif
