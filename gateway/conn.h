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
    /* The connection's one deadline: hr_conn_deadline must run in s
     * seconds (s > 0), replacing any earlier one. */
    void (*arm)(hr_conn *c, int64_t s);
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
    hr_map *subs; /* channel name -> chan_sub*; NULL until the first subscribe */

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
/* Counts one more connection of user sub on the node: 0 with *slot to
 * release (hr_slot_release), or -EUSERS when the user holds the maximum. */
int hr_conn_user_slot(hr_node *node, const char *sub, hr_slot **slot);
/* Who c is for the channel layer (presence, join/leave): client id into
 * buf, and *info a malloc'ed JSON text of the identity's info (or NULL),
 * which the caller frees after use. */
chan_client hr_conn_who(const hr_conn *c, char *buf, size_t len, char **info);
/* "<node>.<n>" into buf. */
void hr_conn_client_id(const hr_conn *c, char *buf, size_t len);

/* The transport's timer fired: closes an unauthenticated connection (4001
 * "connect timeout") or an expired one (4001 "token expired"), else arms
 * the next deadline. */
void hr_conn_deadline(hr_conn *c);
/* Arms the deadline anew (after a token refresh). */
void hr_conn_rearm(hr_conn *c);

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
 * decision wins; the transport carries it out (ops->closing). */
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

#endif
