/*
 * channels.h - Herald's channel layer: group membership and fan-out.
 *
 * One interface (chan_layer + chan_layer_ops), two implementations: the
 * in-process layer (embedded mode) and the Redis layer (cluster mode). The
 * WebSocket and REST code see only this header.
 *
 * Speed model. A publication is serialised to JSON once and framed as a
 * WebSocket text frame once (chan_msg); every local subscriber receives a
 * reference to those same bytes through the deliver callback, which the
 * gateway uses to append the message to the connection's bounded queue.
 *
 * Threading. A layer instance belongs to one loop thread; all calls happen on
 * that thread. chan_msg reference counts are atomic so a message can later be
 * shared by several loop threads (one layer shard per thread).
 */
#ifndef HR_CHANNELS_H
#define HR_CHANNELS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/*---- Messages: serialised once, framed once, refcounted --------------------*/

/* Maximum WebSocket frame header for a server (unmasked) frame. */
#define CHAN_FRAME_HDR_MAX 10

typedef struct chan_msg {
    atomic_int refs;
    size_t len;         /* payload bytes (the JSON text) */
    size_t hdr;         /* frame header bytes stored just before the payload */
    unsigned char _b[]; /* CHAN_FRAME_HDR_MAX + len bytes: [pad][header][payload] */
} chan_msg;

/* Builds a message from JSON text: copies it and precomputes the WebSocket
 * text-frame header. Returns a message with one reference (the caller's), or
 * NULL on allocation failure. */
chan_msg *chan_msg_new(const char *json, size_t len);
/* Takes one more reference; returns m. */
chan_msg *chan_msg_ref(chan_msg *m);
/* Drops one reference; frees the message when the last one goes. NULL ok. */
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
 * "offset":O when offset > 0. Returns a new message (one reference). */
chan_msg *chan_msg_publication(const char *channel, const char *data_json, size_t data_len,
                               uint64_t offset);

/*---- The layer -------------------------------------------------------------*/

typedef struct chan_layer chan_layer;
typedef struct chan_sub chan_sub; /* one (channel, subscriber) membership */

/* Called on the loop thread once per local subscriber of a publication.
 * `owner` is the pointer passed to subscribe. The callee takes its own
 * reference (chan_msg_ref) if it keeps m. */
typedef void (*chan_deliver_fn)(void *owner, chan_msg *m);

/* Completion of publish: status 0 on success, negative on failure (e.g.
 * -EAGAIN when Redis is unreachable); offset > 0 where history is kept.
 * May run before publish() returns (in-process layer). */
typedef void (*chan_publish_cb)(void *ud, int status, uint64_t offset);

typedef struct chan_stats {
    uint64_t channels;      /* channels with at least one local subscriber */
    uint64_t subscriptions; /* local memberships */
    uint64_t publications;  /* publish() calls accepted */
    uint64_t deliveries;    /* messages handed to local subscribers */
} chan_stats;

typedef struct chan_layer_ops {
    const char *name;
    /* Adds owner to channel. Returns the membership handle (owned by the
     * layer, valid until unsubscribe), or NULL on allocation failure. */
    chan_sub *(*subscribe)(chan_layer *l, const char *channel, void *owner);
    /* Removes a membership returned by subscribe; the handle is freed. */
    void (*unsubscribe)(chan_layer *l, chan_sub *s);
    /* Publishes data_json (valid JSON text, not retained) to channel. */
    int (*publish)(chan_layer *l, const char *channel, const char *data_json, size_t data_len,
                   chan_publish_cb cb, void *ud);
    void (*stats)(const chan_layer *l, chan_stats *out);
    /* Frees the layer; every remaining membership is dropped. */
    void (*destroy)(chan_layer *l);
} chan_layer_ops;

/* Every implementation embeds this as its first member. */
struct chan_layer {
    const chan_layer_ops *ops;
    chan_deliver_fn deliver;
};

/* Creates the in-process layer. Returns NULL on allocation failure. */
chan_layer *chan_local_new(chan_deliver_fn deliver);

/* Convenience wrappers that dispatch through ops. */
static inline chan_sub *chan_subscribe(chan_layer *l, const char *channel, void *owner)
{
    return l->ops->subscribe(l, channel, owner);
}
static inline void chan_unsubscribe(chan_layer *l, chan_sub *s)
{
    l->ops->unsubscribe(l, s);
}
static inline int chan_publish(chan_layer *l, const char *channel, const char *data_json,
                               size_t data_len, chan_publish_cb cb, void *ud)
{
    return l->ops->publish(l, channel, data_json, data_len, cb, ud);
}
static inline void chan_layer_stats(const chan_layer *l, chan_stats *out)
{
    l->ops->stats(l, out);
}
static inline void chan_layer_destroy(chan_layer *l)
{
    if (l)
        l->ops->destroy(l);
}

/*---- Channel names ---------------------------------------------------------*/

/* 1..max_len bytes of [A-Za-z0-9_.:@=,-]. Returns 1 if valid. */
int chan_name_valid(const char *name, size_t len, size_t max_len);

#endif
