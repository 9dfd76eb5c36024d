/*
 * channels.h - Herald's channel layer: group membership, fan-out, presence,
 * join/leave, history with recovery, and server-side membership control.
 *
 * One interface, two implementations behind an ops table (as nchan's
 * stores are): the in-process layer (embedded mode, local.c) and the Redis
 * layer (cluster mode, redis*.c: see redis_internal.h). The WebSocket and
 * REST code see only this header; neither touches hiredis.
 *
 * Threads. The gateway runs one event loop per thread. Each loop thread owns
 * a shard of the layer: the memberships of its own connections, touched
 * only by that thread. A node-level registry (core.c), shared by all
 * threads, knows which threads hold subscribers of each channel. Its
 * transitions "this node gained its first subscriber of C" and "lost its
 * last" are where an implementation hears about channels
 * (ops->channel_open / channel_close): the Redis layer SUBSCRIBEs and
 * UNSUBSCRIBEs there, so a node holds one Redis subscription per channel
 * whatever its number of threads and connections.
 *
 * Fan-out. A publication is serialised and framed once (chan_msg). The layer
 * routes it with chan_dispatch(): under the channel's registry lock it hands
 * one reference to the inbox of every thread that has subscribers (the
 * host's post callback). Every publication of a channel passes through that
 * one lock, so every thread's inbox receives a channel's publications in
 * one order. The thread then calls chan_deliver(), which hands the reference
 * to each local subscriber. In cluster mode every publication, local ones
 * included, comes back from Redis before it is dispatched: one order per
 * channel across nodes.
 *
 * Subscriptions complete asynchronously. chan_subscribe registers the
 * membership at once (so nothing published after the completion is missed)
 * but holds back what is delivered to it until the implementation has
 * completed it (the Redis subscription is active; for history channels the
 * stream position is read and, with `since`, the missed publications). The
 * host then hears `subscribed` first, with the missed publications, and
 * afterwards the held-back deliveries that are newer than what it was given:
 * no gap, no duplicate, one order.
 *
 * Every callback into the host runs on the loop thread that owns the
 * subscriber or made the call, never on another.
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
/* Longest epoch string (history streams), NUL included. */
#define CHAN_EPOCH_MAX 40

/* The same payload as a compressed frame (RFC 7692 permessage-deflate: RSV1
 * set, raw deflate without the trailing 00 00 ff ff), made by the gateway the
 * first time a connection that negotiated compression is sent the message
 * (gateway/ws_deflate.c). len 0: compression did not make the frame smaller. */
typedef struct chan_zframe {
    size_t len;
    unsigned char b[];
} chan_zframe;

typedef struct chan_msg {
    atomic_int refs;
    size_t len;          /* payload bytes (the JSON text) */
    size_t hdr;          /* frame header bytes stored just before the payload */
    const char *channel; /* pushes of a channel: the channel (inside _b), else NULL */
    uint64_t offset;     /* position in the channel's history, 0 = none */
    uint64_t hash;       /* the layer's hash of channel (computed once, used by every table) */
    uint64_t born_us;    /* hr_now_us() when this node created it (latency metrics) */
    atomic_int tag;      /* the host's cache (the namespace index), -1 until set */
    /* the host's compressed frame: NULL until made; set once (compare and
     * swap, any thread), freed with the message */
    _Atomic(chan_zframe *) zframe;
    /* the host's text-stream frame (SSE, HTTP streaming): NULL until made;
     * set once (compare and swap, any thread), one allocation freed with
     * the message */
    _Atomic(void *) tframe;
    unsigned char _b[]; /* [pad][header][payload][channel NUL] */
} chan_msg;

/* Builds a message from JSON text: copies it and precomputes the WebSocket
 * text-frame header. Returns a message with one reference (the caller's).
 * Aborts on allocation failure (common.h's policy). */
chan_msg *chan_msg_new(const char *json, size_t len);
/* As chan_msg_new, for a push that belongs to a channel (a publication,
 * join, leave): records channel and offset so it can be dispatched. */
chan_msg *chan_msg_for_channel(const char *json, size_t len, const char *channel, uint64_t offset);
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
 * "offset":O when offset > 0 and "from":F when from (the JSON object text
 * of the publishing client, {"user","client","info"}) is not NULL. Returns
 * a new message (one reference, the caller's) with channel and offset
 * recorded. */
chan_msg *chan_msg_publication(const char *channel, const char *data_json, size_t data_len,
                               uint64_t offset, const char *from);
/* The same text into a malloc'ed string (caller frees): what the Redis
 * layer publishes. *len receives its length. */
char *chan_publication_text(const char *channel, const char *data_json, size_t data_len,
                            uint64_t offset, const char *from, size_t *len);
/* {"push":"join"|"leave","channel":C,"client":..,"user":..}; join = 1 for
 * join. Returns malloc'ed text (caller frees), *len its length. */
char *chan_join_leave_text(int join, const char *channel, const char *client, const char *user,
                           size_t *len);

/* Checks a push received from outside the process (Redis): valid JSON, an
 * object whose "push" is message/join/leave and whose "channel" is
 * `channel`. Returns a message ready to dispatch (one reference, the
 * caller's) or NULL with a reason in err. */
chan_msg *chan_msg_parse_push(const char *json, size_t len, const char *channel, char *err,
                              size_t errlen);

/*---- What a subscription is and learns -------------------------------------*/

/* A channel's options, from its namespace: the layer never reads the
 * gateway's configuration. */
typedef struct chan_opts {
    int presence;     /* keep who is subscribed */
    int join_leave;   /* push join/leave to subscribers */
    int history_size; /* publications kept; 0 = no history (and no offsets) */
    int history_ttl;  /* seconds they are kept */
} chan_opts;

/* Who subscribes (presence, join/leave). Strings are copied by the layer. */
typedef struct chan_client {
    const char *client;    /* "<node>.<n>" */
    const char *user;      /* "" for anonymous */
    const char *info_json; /* JSON object text, or NULL */
} chan_client;

/* A stream position. */
typedef struct chan_pos {
    uint64_t offset;
    char epoch[CHAN_EPOCH_MAX];
} chan_pos;

/* One publication read from history. */
typedef struct chan_pub {
    uint64_t offset;
    char *data; /* JSON text, NUL-terminated */
    char *from; /* the publishing client's {"user","client","info"} text, or NULL */
} chan_pub;

/* The outcome of a subscribe (or of a resubscription after an outage). */
typedef struct chan_sub_result {
    int status;           /* 0, or -EAGAIN (layer unavailable), -ECANCELED */
    int history;          /* the channel keeps history: pos is meaningful */
    chan_pos pos;         /* the stream's top when the subscription began */
    int recovered;        /* `since` given and every missed publication is in pubs */
    const chan_pub *pubs; /* missed publications, oldest first (borrowed) */
    size_t npubs;
    int resubscribed; /* after an outage: not an answer to chan_subscribe */
} chan_sub_result;

/* A history read. */
typedef struct chan_history {
    int status; /* 0, -EAGAIN, -ENOENT (the namespace keeps no history) */
    chan_pos top;
    const chan_pub *pubs; /* borrowed, oldest first */
    size_t npubs;
} chan_history;

/* A presence read: `clients` is a JSON array text of
 * {"client","user","info"} objects (borrowed). */
typedef struct chan_presence {
    int status; /* 0, -EAGAIN, -ENOENT (the namespace keeps no presence) */
    const char *clients;
    size_t len;
} chan_presence;

/* Node-wide control: server-side membership and disconnects, delivered to
 * every node (the Redis layer's control topic; in-process, at once). */
typedef enum chan_control_op {
    CHAN_CTL_MEMBER_ADD = 1, /* user's connections join channel */
    CHAN_CTL_MEMBER_REMOVE,  /* ... leave it */
    CHAN_CTL_DISCONNECT,     /* close user's connections with code */
    CHAN_CTL_REVOKE,         /* tokens of user issued up to `at` are refused; closes 4003 */
    CHAN_CTL_RESYNC,         /* local only: the control topic was reconnected after an
                              * outage; what it carried meanwhile is lost (user NULL) */
} chan_control_op;

typedef struct chan_control {
    chan_control_op op;
    const char *user;
    const char *channel; /* member ops */
    int code;            /* disconnect */
    int64_t at;          /* revoke */
} chan_control;

/*---- The layer -------------------------------------------------------------*/

typedef struct chan_layer chan_layer;
typedef struct chan_sub chan_sub; /* one (channel, subscriber) membership */

/* Work an implementation runs on a given loop thread (host->call). run
 * consumes the task; discard frees it unrun when the loop has stopped. */
typedef struct chan_task chan_task;
struct chan_task {
    void (*run)(chan_task *t);
    void (*discard)(chan_task *t);
};

/* What a subscriber hears: called on the subscriber's thread with the
 * `owner` given to chan_subscribe. */
typedef struct chan_sub_ops {
    /* A push for the subscriber (publication, join, leave). The callee
     * takes its own reference if it keeps m, and must not subscribe or
     * unsubscribe (the subscriber array is being walked). */
    void (*deliver)(void *owner, chan_msg *m);
    /* The subscription completed (req: what was given to chan_subscribe),
     * was cancelled by chan_unsubscribe before completing (status
     * -ECANCELED: only free req), or was renewed after an outage (req NULL,
     * r->resubscribed). On failure the membership is already gone. */
    void (*subscribed)(void *owner, void *req, const char *channel, const chan_sub_result *r);
} chan_sub_ops;

/* Log levels of chan_host.log (the values of gateway/log.h's HR_LOG_*). */
enum { CHAN_LOG_DEBUG = 0, CHAN_LOG_INFO, CHAN_LOG_WARN, CHAN_LOG_ERROR };

/* What the layer needs from the gateway. */
typedef struct chan_host {
    unsigned nthreads; /* loop threads, 1..CHAN_MAX_THREADS */
    /* Gives one reference to m to loop thread `thread`; that thread later
     * calls chan_deliver(l, thread, m) and drops the reference. Called on
     * any thread with a registry lock held: it must only queue. */
    void (*post)(void *ud, unsigned thread, chan_msg *m);
    /* Runs t on loop thread `thread` soon (any thread; must only queue). */
    void (*call)(void *ud, unsigned thread, chan_task *t);
    /* A control message for this node (any thread; must only queue). */
    void (*control)(void *ud, const chan_control *c);
    /* One log line (any thread): level CHAN_LOG_*, event a short stable
     * name ("redis_shard_down"), msg a sentence; both borrowed for the
     * call. NULL: "herald: <msg>" on stderr. */
    void (*log)(void *ud, int level, const char *event, const char *msg);
    /* A channel got its first subscriber anywhere (occupied 1), or its last
     * one anywhere left (0). The Redis layer keeps, per channel, the set of
     * nodes with subscribers in Redis (<p>:occupied:<channel>, changed
     * atomically at each node's first/last subscriber, so exactly one node
     * sees each transition); the in-process layer reports its own. Any
     * thread, maybe under a registry lock: must only queue. NULL: not
     * wanted (no Redis round trip is made). */
    void (*occupancy)(void *ud, const char *channel, int occupied);
    chan_sub_ops sub;
    void *ud;
} chan_host;

/* Completion of a publish: status 0 on success, negative on failure
 * (-EAGAIN when Redis is unreachable); offset > 0 where history is kept;
 * local_only: delivered only to this node's subscribers (Redis outage).
 * Runs on the publishing thread, possibly before chan_publish returns. */
typedef void (*chan_publish_cb)(void *ud, int status, uint64_t offset, int local_only);
/* Completion of reads and control: runs on the calling thread. */
typedef void (*chan_history_cb)(void *ud, const chan_history *h);
typedef void (*chan_presence_cb)(void *ud, const chan_presence *p);
typedef void (*chan_status_cb)(void *ud, int status);

typedef struct chan_stats {
    uint64_t channels;      /* channels with at least one subscriber on this node */
    uint64_t subscriptions; /* memberships on this node */
    uint64_t publications;  /* publish() calls accepted */
    uint64_t deliveries;    /* messages handed to local subscribers */
    /* Redis layer (0 in-process) */
    uint64_t redis_connected; /* shards whose connections are all up */
    uint64_t redis_shards;
    uint64_t redis_reconnects;
    uint64_t redis_pending_bytes; /* received from Redis, not yet processed */
    uint64_t bad_messages;        /* malformed pushes dropped */
    uint64_t control_rejected;    /* control messages not signed by a node, stale or replayed */
    /* Django Channels bridge (0 without it) */
    uint64_t django_received;       /* group messages handed to local subscribers */
    uint64_t django_bad;            /* messages from Django dropped (malformed, encrypted...) */
    uint64_t django_forwarded;      /* client publications sent to a Channels channel */
    uint64_t django_forward_failed; /* ... refused (channel full, Redis unreachable) */
} chan_stats;

/* An implementation. Unless it says otherwise a function may be called on
 * any loop thread and must complete on that thread. */
typedef struct chan_layer_ops {
    const char *name;
    /* Starts background work on loop 0 (uv_loop_t *). NULL = nothing. */
    int (*start)(chan_layer *l, void *uv_loop);
    /* Loop 0, at shutdown, after every loop's thread_stop: closes
     * connections and handles. */
    void (*stop)(chan_layer *l);
    /* On loop thread `thread` (every loop, loop 0 included), before it
     * serves anything / when it stops: that loop's own part of the layer
     * (uv_loop_t *). NULL = nothing. */
    int (*thread_start)(chan_layer *l, unsigned thread, void *uv_loop);
    void (*thread_stop)(chan_layer *l, unsigned thread);
    /* Publishes data_json (valid JSON text, not retained) to channel; from:
     * the publishing client's {"user","client","info"} object text (copied),
     * NULL for a backend's publication. */
    void (*publish)(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                    const char *data_json, size_t data_len, const char *from, chan_publish_cb cb,
                    void *ud);
    /* The node gained its first / lost its last subscriber of channel
     * (hash: the layer's hash of its name, to pass along). Called with
     * that channel's registry lock held, in the order the transitions
     * happened: must only queue work. */
    void (*channel_open)(chan_layer *l, const char *channel, uint64_t hash);
    void (*channel_close)(chan_layer *l, const char *channel, uint64_t hash);
    /* Completes subscription s (core.c's chan_sub_complete), on its
     * thread; presence and join are the implementation's business. */
    void (*subscribe)(chan_layer *l, unsigned thread, chan_sub *s);
    /* s leaves (presence, leave push), completed or still pending; called
     * before s is freed; must copy what it keeps. */
    void (*unsubscribe)(chan_layer *l, unsigned thread, chan_sub *s);
    void (*history)(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                    const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud);
    void (*presence)(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                     chan_presence_cb cb, void *ud);
    /* Sends c to every node (this one included). */
    void (*control)(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb,
                    void *ud);
    /* Hands a client publication to a Django Channels channel (see
     * chan_django_forward). NULL: the layer has no Django bridge. */
    void (*django_forward)(chan_layer *l, unsigned thread, const char *target, const char *channel,
                           const char *user, const char *client, const char *data_json,
                           size_t data_len);
    /* Sends a message to a Django Channels channel (chan_django_send).
     * NULL: the layer has no Django bridge. */
    void (*django_send)(chan_layer *l, const char *target, const char *json, size_t len,
                        chan_status_cb cb, void *ud);
    /* 1 while the layer can serve the whole cluster (readyz). Any thread. */
    int (*ready)(chan_layer *l);
    void (*stats)(chan_layer *l, chan_stats *out);
    /* Frees what the implementation added to the layer. */
    void (*destroy)(chan_layer *l);
} chan_layer_ops;

/* Creates the in-process layer. The host struct is copied. */
chan_layer *chan_local_new(const chan_host *host);

/* The Django Channels bridge's settings (cluster mode,
 * docs/integrations/django.md); they mirror channels_redis' CHANNEL_LAYERS
 * CONFIG. */
typedef struct chan_django_config {
    int mode;           /* 1 = RedisPubSubChannelLayer, 2 = RedisChannelLayer */
    const char *prefix; /* its "prefix" ("asgi") */
    int group_expiry;   /* its "group_expiry" in seconds (86400) */
    int expiry;         /* its "expiry" in seconds (60): messages Herald sends */
    int capacity;       /* its "capacity" (100): of the channels Herald sends to */
    size_t max_message; /* largest message taken from Django, as JSON bytes */
} chan_django_config;

/* The Redis layer's settings (strings borrowed for the call). */
typedef struct chan_redis_config {
    const char *urls;   /* comma-separated redis:// URLs: the shards */
    const char *prefix; /* key and topic prefix */
    const char *node_id;
    /* the namespaces, for the publish function Redis runs: name, opts */
    size_t nnamespaces;
    const char *const *ns_names;
    const chan_opts *ns_opts;
    int presence_ttl; /* seconds an entry of a dead node survives */
    /* Secrets every node shares (at least one): control messages carry an
     * HMAC-SHA256 under a key derived from the first; any of them verifies
     * (rotation). */
    const char *const *control_secrets;
    size_t ncontrol_secrets;
    const chan_django_config *django; /* NULL or mode 0: no Django bridge */
} chan_redis_config;

/* Creates the Redis layer; it connects once started on loop 0. Returns
 * NULL with a reason in err (bad URL). */
chan_layer *chan_redis_new(const chan_host *host, const chan_redis_config *cfg, char *err,
                           size_t errlen);

/* The implementation's name ("local", "redis"). */
const char *chan_layer_name(const chan_layer *l);
/* Frees the layer and every remaining membership. After every loop thread
 * has stopped. NULL ok. */
void chan_layer_destroy(chan_layer *l);
int chan_layer_start(chan_layer *l, void *uv_loop);
void chan_layer_stop(chan_layer *l);
/* On loop thread `thread`, every loop (loop 0 after chan_layer_start):
 * starts that loop's own part of the layer on its uv_loop (the Redis
 * layer: its command connections, so a loop's publications and reads go
 * to Redis without a hop through loop 0). Returns 0 or a negative errno. */
int chan_layer_thread_start(chan_layer *l, unsigned thread, void *uv_loop);
/* On loop thread `thread` when it stops (after its connections closed):
 * what it sent still reaches Redis, answers to requests still out are
 * dropped without their callbacks. A no-op for a loop never started. */
void chan_layer_thread_stop(chan_layer *l, unsigned thread);
int chan_layer_ready(chan_layer *l);
/* 1 when every operation completes before it returns (in-process). */
int chan_layer_synchronous(const chan_layer *l);

/* On loop thread `thread`: adds owner to channel and starts the
 * subscription; host->sub.subscribed(owner, req, ...) reports its outcome
 * (possibly before this returns). since: recover from there (NULL = no).
 * Returns the membership handle (owned by the layer, valid until
 * chan_unsubscribe or a failed completion). */
chan_sub *chan_subscribe(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                         const chan_client *who, const chan_pos *since, void *owner, void *req);
/* On the thread that subscribed: removes and frees the membership (a
 * pending completion is reported as -ECANCELED first). */
void chan_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s);
/* The channel of membership s (the layer's copy, valid as long as s). */
const char *chan_sub_channel(const chan_sub *s);
/* Publishes from loop thread `thread` (see ops->publish). */
void chan_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                  const char *data_json, size_t data_len, const char *from, chan_publish_cb cb,
                  void *ud);
void chan_history_read(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                       const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud);
void chan_presence_read(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                        chan_presence_cb cb, void *ud);
void chan_control_send(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb,
                       void *ud);
/* Any thread: routes a push (m->channel set) to every thread with
 * subscribers of its channel. Does not consume the caller's reference. */
void chan_dispatch(chan_layer *l, chan_msg *m);
/* On loop thread `thread`: hands m to that thread's subscribers of
 * m->channel. Does not consume the caller's reference. */
void chan_deliver(chan_layer *l, unsigned thread, chan_msg *m);
/* Sums the counters of every thread (any thread; values are a snapshot). */
void chan_layer_stats(chan_layer *l, chan_stats *out);
/* Requests of loop thread `thread` the layer has not answered yet: a
 * stopping loop waits for them. Any thread. */
unsigned chan_layer_inflight(chan_layer *l, unsigned thread);

/* On loop thread `thread`: hands a client publication accepted in a
 * namespace with `django_channel` to that Channels channel (target) as
 * {"type":"herald.publication","channel","user","client","data"}. Fire
 * and forget: failures are logged and counted. A no-op without a Django
 * bridge. Strings are copied. */
void chan_django_forward(chan_layer *l, unsigned thread, const char *target, const char *channel,
                         const char *user, const char *client, const char *data_json,
                         size_t data_len);
/* Any loop thread: sends json (a JSON object such as a lifecycle event,
 * copied) to Django Channels channel target, in the layer's format (as
 * channel_layer.send() would). cb(ud, 0) once Redis took it, cb(ud, < 0)
 * when it did not (unreachable, the channel full), on loop 0's thread;
 * -ENOTSUP at once without a Django bridge. cb NULL: fire and forget. */
void chan_django_send(chan_layer *l, const char *target, const char *json, size_t len,
                      chan_status_cb cb, void *ud);

/* Number of threads of this node with subscribers of channel (for tests and
 * metrics). Any thread. */
unsigned chan_channel_threads(chan_layer *l, const char *channel);

/*---- Recovery rule (pure) --------------------------------------------------*/

/* Was everything after `since` recovered? top: the stream's position now;
 * pubs: what was read after since.offset, oldest first. */
int chan_recovered(const chan_pos *since, const chan_pos *top, const chan_pub *pubs, size_t n);

/* The same across a change of epoch (a Redis failover or restart, SPEC
 * section 5): pubs were read by a call that also said the offset they
 * follow (`after`) and whether since's position was found in the stream
 * (kept: since's epoch is top's, or the one before it and since is not
 * beyond where it ended). */
typedef enum chan_recovery {
    CHAN_RECOVERY_NONE = 0, /* a gap: take the top, recovered: false */
    CHAN_RECOVERY_FULL,     /* pubs are exactly what since misses: recovered */
    CHAN_RECOVERY_EPOCH,    /* since's tail is lost, but pubs are every entry of
                             * top's epoch (after `after`): recovered: false,
                             * then deliver them */
} chan_recovery;
chan_recovery chan_recovery_across(const chan_pos *since, const chan_pos *top, const chan_pub *pubs,
                                   size_t n, uint64_t after, int kept);

/*---- Channel names ---------------------------------------------------------*/

/* 1..max_len bytes of [A-Za-z0-9_.:@=,-]. Returns 1 if valid. */
int chan_name_valid(const char *name, size_t len, size_t max_len);

#endif
