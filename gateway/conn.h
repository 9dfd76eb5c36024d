/*
 * conn.h - a client connection, whatever carries it: who it is (identity,
 * client id), what it subscribed to, what it is sent (a bounded queue of
 * references to messages serialised once) and how it ends (a close decided
 * once, carried out by the transport).
 *
 * WebSocket connections (ws_conn.c) are the transport today; the
 * listen-only SSE and HTTP-streaming connections of SPEC §9 are meant to be
 * the same object with their own framing and writing behind the ops table:
 * subscriptions, presence, the members and disconnect APIs, the queue bound
 * and the slow-consumer close then hold for them as they are.
 *
 * Queue discipline. Everything a connection is sent - replies, pushes,
 * publications - is queued as a reference to a chan_msg, so a publication
 * fanned out to N sockets is N pointer pushes, not N copies. Bytes leave
 * after the loop iteration's callbacks (hr_conn_flush_pending), all that
 * is queued in one write. When the queued bytes would exceed the
 * configured bound, the queue is dropped at once (memory stays bounded
 * however slow the peer) and the connection closes 4008.
 *
 * Closing is always deferred: code that decides a connection must close
 * records the code (hr_conn_close) and the transport sends its close
 * later. Nothing frees a connection in the middle of fan-out: a connection
 * is refcounted, and one whose socket is gone (wsi NULL) only waits for
 * its last reference.
 *
 * Memory. An idle connection costs lws' own state, this struct (inside the
 * transport's) and its identity; the subscription map and the queue ring
 * are allocated on first use, and the client id is formatted when needed.
 *
 * Threads: a connection belongs to its worker's loop thread.
 */
#ifndef HR_CONN_H
#define HR_CONN_H

#include "gateway/node.h"

/* What a transport does for its connections. */
typedef struct hr_conn_ops {
    const char *transport; /* "websocket" ("sse", "stream"): lifecycle events, the connect proxy */
    /* The bytes c is sent for m (the WebSocket frame, compressed or not):
     * the same answer every time it is asked. */
    const unsigned char *(*frame)(const hr_conn *c, const chan_msg *m, size_t *len);
    /* m is about to be queued on c: makes what frame() will need (a
     * compressed frame, once per message) and returns frame()'s length,
     * which counts against the queue's bound. One call per delivery. */
    size_t (*queued)(hr_conn *c, chan_msg *m);
    /* Writes what is queued (after the loop iteration, the connection not
     * closing and not choked). Returns 0, or -1 when the socket failed
     * (it is then dropped). */
    int (*write)(hr_conn *c, uint64_t now_us);
    /* hr_conn_close decided the close (close_code set; with close_flush,
     * what is queued goes first): the transport sends it. */
    void (*closing)(hr_conn *c);
    /* c's deadline passed and it is not closing: the transport may ask the
     * backend first (the refresh proxy); NULL means hr_conn_deadline. */
    void (*deadline)(hr_conn *c);
} hr_conn_ops;

/* The fields every delivery and write touch come first: one cache line. */
struct hr_conn {
    const hr_conn_ops *ops;
    hr_worker *w;
    struct lws *wsi; /* NULL once closed; the struct lives on while refs > 0 */
    int refs;        /* 1 for the socket + 1 per pending asynchronous operation */
    unsigned authed : 1;
    unsigned close_flush : 1;  /* send what is queued before the close */
    unsigned pending : 1;      /* on the loop's pending-write list */
    unsigned choked : 1;       /* the transport holds a partial write: it calls back */
    unsigned proxy_authed : 1; /* authenticated by the connect proxy: refreshed by it */
    unsigned proxy_busy : 1;   /* a connect or refresh proxy call is out for it */
    int close_code;            /* != 0: closing with this code */
    int peer_code;             /* the code of the peer's close (1005: none given) */
    /* outbound queue: a ring of message references, allocated on first use */
    uint32_t qhead, qlen, qcap;
    chan_msg **q;
    size_t qbytes;

    const char *close_reason; /* static storage */
    lws_dll2_t in_loop;       /* w->conns */
    lws_dll2_t in_user;       /* the user's connections on this loop (w->by_user) */
    uint64_t client_n;        /* client id "<node>.<client_n>" */
    auth_identity id;
    /* The subscriptions (hr_conn_sub_*): most connections hold one or a
     * few, so one is held inline, a few in an array searched in order,
     * and only many in a hash map (an empty map alone costs 552 bytes). */
    union {
        chan_sub *one;  /* subcap 0 */
        chan_sub **arr; /* subcap > 0: that many slots */
        hr_map *map;    /* subcap HR_SUBS_MAP: channel name -> chan_sub* */
    } subs;
    uint32_t nsubs, subcap;
    hr_wheel_entry deadline; /* on w->deadlines: the connect timeout, then the token's expiry */

    /* the backend proxy (SPEC §8): NULL when no proxy is configured */
    hr_proxy_headers *fwd; /* the handshake's headers every proxy call forwards */
    char *remote_addr;     /* the client's address (the connect proxy's remote_addr) */
    char *reason_own;      /* a backend's close reason: close_reason points here */
    uint64_t authed_ms;    /* when it was authenticated: herald.disconnect's duration_ms */

    hr_slot *addr_slot; /* this connection's count in the per-address table */
    hr_slot *user_slot; /* ... and in the per-user table */
};

/*---- Life ------------------------------------------------------------------*/

/* Sets up c (zeroed, inside the transport's struct, freed with free(c)
 * once the last reference goes: c must be the struct's first member) for
 * the socket wsi on worker w, with one reference (the socket's), and
 * counts it. */
void hr_conn_init(hr_conn *c, const hr_conn_ops *ops, hr_worker *w, struct lws *wsi);
void hr_conn_ref(hr_conn *c);
void hr_conn_unref(hr_conn *c);
/* The transport's socket is gone (on its loop thread): every subscription
 * ends, the queue, identity and limit slots go, the socket's reference is
 * dropped, and a stopping loop hears it may be done. */
void hr_conn_closed(hr_conn *c);

/* Takes ownership of *id's contents (id is left cleared): the connection
 * is authenticated as that identity from now on, gets its client number,
 * and its deadline becomes the token's expiry. Emits herald.connect. */
void hr_conn_authenticate(hr_conn *c, auth_identity *id);
/* Gives c its client number now, if it has none (a connect proxy call
 * names the client before it is authenticated). */
void hr_conn_number(hr_conn *c);
/* A new client number on node, for a connection that does not exist yet
 * (a stream asking the connect proxy: set client_n before authenticating). */
uint64_t hr_conn_new_number(hr_node *node);
/* The client's address on wsi as the connect proxy is told it (the
 * address, not its network; through trusted proxies, the first untrusted
 * hop). malloc'ed, the caller frees it. */
char *hr_conn_peer_address(hr_node *node, struct lws *wsi);
/* Counts one more connection of user sub on the node: 0 with *slot to
 * release (hr_slot_release), or -EUSERS when the user holds the maximum. */
int hr_conn_user_slot(hr_node *node, const char *sub, hr_slot **slot);
/* Who c is for the channel layer (presence, join/leave): client id into
 * buf, and *info a malloc'ed JSON text of the identity's info (or NULL),
 * which the caller frees after use. */
chan_client hr_conn_who(const hr_conn *c, char *buf, size_t len, char **info);
/* "<node>.<n>" into buf. */
void hr_conn_client_id(const hr_conn *c, char *buf, size_t len);

/* Arms the connection's one deadline anew (at the start, after a token
 * refresh): when it passes, an unauthenticated connection closes (4001
 * "connect timeout"), an expired one too (4001 "token expired"). Deadlines
 * are kept in whole seconds on the worker's timer wheel (common/wheel.h),
 * not as lws timers: they fire up to a second late, and arming one costs
 * the same however many connections the loop holds. */
void hr_conn_rearm(hr_conn *c);

/* c's next deadline in s seconds (up to one late), whatever its token
 * says; nothing while it is closing. */
void hr_conn_arm(hr_conn *c, uint32_t s);

/* What a passed deadline means for c: close 4001 (never authenticated, or
 * its token expired) or arm the next one. */
void hr_conn_deadline(hr_conn *c);

/*---- Subscriptions ---------------------------------------------------------*/

#define HR_SUBS_MAP UINT32_MAX

/* The membership of c in channel, or NULL. */
chan_sub *hr_conn_sub_get(const hr_conn *c, const char *channel);
/* Adds s (not yet held by c; the layer owns it) under its channel. */
void hr_conn_sub_put(hr_conn *c, chan_sub *s);
/* Removes and returns c's membership in channel (the caller unsubscribes
 * it or knows the layer dropped it), or NULL. */
chan_sub *hr_conn_sub_del(hr_conn *c, const char *channel);

/*---- Sending ---------------------------------------------------------------*/

/* Queues a reference to m (never a copy); over the bound, the queue is
 * dropped and the connection closes 4008. Nothing happens once closing. */
void hr_conn_enqueue(hr_conn *c, chan_msg *m);
/* chan_sub_ops.deliver: hr_conn_enqueue for the layer (owner: c). */
void hr_conn_deliver(void *owner, chan_msg *m);
/* Queues JSON text c owns nothing of (copied). */
void hr_conn_send_text(hr_conn *c, const char *json, size_t len);
/* Queues o (serialised; o's reference is taken). */
void hr_conn_send_json(hr_conn *c, json_t *o);

/* Decides that c closes with code and reason (static storage): with
 * flush, what is queued is sent first, else it is dropped. The first
 * decision wins; the transport carries it out (ops->closing), and the
 * connection's deadline becomes a backstop (20 s, 40 s with flush) after
 * which the socket is dropped if the peer never took the close. */
void hr_conn_close(hr_conn *c, int code, const char *reason, int flush);

/* hr_conn_close with a reason c keeps a copy of (a backend's; cut to
 * fit a close frame). */
void hr_conn_close_copy(hr_conn *c, int code, const char *reason, int flush);

/* herald.subscribe or herald.unsubscribe of c for channel. */
void hr_conn_sub_event(hr_conn *c, int subscribed, const char *channel);

/* Queues a lifecycle event (events.h; the reference is taken) when the
 * node has an event hub, else drops it. NULL ok (not UTF-8). */
void hr_conn_event(hr_worker *w, json_t *event);

/* For transports writing the queue: the head message (qlen > 0), taking
 * it off the queue with its frame's length flen (the caller owns the
 * returned reference), dropping all of it, and a delivery's metrics when
 * its bytes leave. */
static inline chan_msg *hr_conn_head(const hr_conn *c)
{
    return c->q[c->qhead];
}
static inline chan_msg *hr_conn_pop(hr_conn *c, size_t flen)
{
    chan_msg *m = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    c->qbytes -= flen;
    return m;
}
void hr_conn_drop_queue(hr_conn *c);
void hr_conn_sent(hr_conn *c, chan_msg *m, uint64_t now_us);
/* An idle connection keeps no big ring once a burst has drained. */
void hr_conn_shrink(hr_conn *c);
/* Writes buf (len bytes, borrowed) to c's socket at once: one send(2) on
 * plain TCP, SSL_write through lws with TLS. What the socket does not take
 * lws keeps and flushes first; c is then choked until the transport's
 * writeable callback. Returns 0, or -1 when the socket failed. Only for a
 * byte stream lws does not frame itself (WebSocket frames Herald made, an
 * HTTP/1.1 response body without a length). */
int hr_conn_write_bytes(hr_conn *c, const unsigned char *buf, size_t len);

/*---- Admission (every transport) -------------------------------------------*/

/* Is the request's Origin in HERALD_ALLOWED_ORIGINS (unset: any)? */
int hr_conn_origin_allowed(const hr_config *cfg, struct lws *wsi);
/* Handshakes per address (a token bucket: handshake_rate at once, then
 * handshake_rate a second), then connections per address, for requests
 * whose client address is known (see hr_client_address). Returns 0, with
 * *slot set to the place taken (or left alone when none is counted), or
 * -EUSERS to refuse. The caller releases *slot (hr_slot_release) or hands
 * it to the connection (addr_slot). */
int hr_conn_admit_address(hr_node *node, struct lws *wsi, hr_slot **slot);

/*---- A worker's connections (the server's hooks) ---------------------------*/

/* Writes, once each, every connection that was queued something since the
 * last call (the loop calls it after each iteration's callbacks). */
void hr_conn_flush_pending(hr_worker *w);
/* Closes every connection of user sub on w with code and reason (static
 * storage), dropping their queues. Returns how many. */
size_t hr_conn_disconnect_user(hr_worker *w, const char *sub, int code, const char *reason);
/* Calls fn(c, ud) for every connection of user sub on w (fn may close c). */
void hr_conn_each_of_user(hr_worker *w, const char *sub, void (*fn)(hr_conn *c, void *ud),
                          void *ud);
/* Starts closing every connection of w with 1001 after flushing. */
void hr_conn_shutdown_all(hr_worker *w);
/* The worker's deadline wheel and its one libuv timer: set up before the
 * loop serves (w->loop.uv initialised), the timer closed when the loop has
 * stopped, the wheel freed with the worker. */
void hr_conn_worker_init(hr_worker *w);
void hr_conn_worker_stop(hr_worker *w);
void hr_conn_worker_free(hr_worker *w);

#endif
