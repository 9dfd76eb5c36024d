/*
 * node.h - the gateway process: one node (process-wide state) and its
 * workers, one per loop thread.
 *
 * Workers. Each loop thread runs an hr_loop (loop.h: libuv, its own
 * libwebsockets context and listening socket on the shared port); a worker
 * is that loop plus what the node and the server keep per thread. Loop 0
 * runs on the main thread and also owns the signals, the revocation reloads
 * and the channel layer's home: the layer starts there and stops after the
 * last loop has stopped.
 *
 * The node knows no client. The server (server.c) hands it a table of
 * hooks (hr_server_hooks) - the lws protocol callback, what a subscriber
 * hears, how a user's connections are disconnected or made to join a
 * channel, how clients are closed at shutdown - and the node wires them
 * into its loops and into the channel layer.
 *
 * Who may touch what: hr_node fields are set before the loops start and
 * read-only afterwards, except those marked "locked", "atomic" or "loop 0".
 * A worker's fields belong to its thread, except its counters (atomics
 * read by /metrics on any thread).
 */
#ifndef HR_NODE_H
#define HR_NODE_H

#include "auth/auth.h"
#include "channels/channels.h"
#include "common/common.h"
#include "gateway/config.h"
#include "gateway/creds.h"
#include "gateway/events.h"
#include "gateway/limits.h"
#include "gateway/loop.h"
#include "gateway/metrics.h"
#include "gateway/wsi.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

typedef struct hr_node hr_node;
typedef struct hr_worker hr_worker;

/* What the server gives the node (server.c: hr_server_hooks_for). Every
 * hook runs on the worker's own thread. */
typedef struct hr_server_hooks {
    /* the lws protocol (see hr_loop_handlers) */
    lws_callback_function *callback;
    size_t pss_size, rx_buffer, tx_packet;
    const struct lws_extension *extensions;
    /* The server's part of a worker: set up before its loop starts
     * (0, or -1 logged), stopped when the loop has stopped (its clients are
     * closed by then), freed once the loop is gone. */
    int (*worker_init)(hr_worker *w);
    void (*worker_stop)(hr_worker *w);
    void (*worker_free)(hr_worker *w);
    /* After each loop iteration: write what was queued. */
    void (*flush)(hr_worker *w);
    /* Shutdown: close every client (1001 "going away" after flushing). */
    void (*shutdown)(hr_worker *w);
    /* Clients still open (a stopping loop waits for them). */
    unsigned (*clients)(hr_worker *w);
    /* What a subscriber hears from the channel layer (owner: the client). */
    chan_sub_ops sub;
    /* Server-side membership: the user's connections here join or leave
     * c->channel (c->op CHAN_CTL_MEMBER_ADD or _REMOVE). */
    void (*member)(hr_worker *w, const chan_control *c);
    /* Closes every connection of user here with code. */
    void (*disconnect)(hr_worker *w, const char *user, int code);
} hr_server_hooks;

struct hr_node {
    const hr_config *cfg;
    auth_jwt_config jwt;
    auth_service *users; /* user store + Argon2id on worker threads */
    chan_layer *layer;
    hr_worker **workers;
    unsigned nworkers;
    int port; /* the port listened on: cfg->listen_port, or for 0 the one the
               * system chose when loop 0 bound it (set before other loops) */
    const hr_server_hooks *server;
    hr_loop_handlers handlers; /* what every loop runs: the node's, around the server's */

    hr_creds *creds;       /* verifies credentials; holds the revocations */
    hr_events *events;     /* lifecycle events (SPEC §8), NULL when none are configured; delivered
                            * on loop 0 (server.c) */
    auth_throttle *logins; /* failed logins per username (locked inside) */
    auth_throttle *login_addrs; /* failed logins per client address (locked inside) */

    hr_limit *conns_per_addr;  /* connections per client address (locked inside) */
    hr_limit *conns_per_user;  /* connections per user id (locked inside) */
    auth_throttle *handshakes; /* WebSocket handshakes per address (token bucket) */
    hr_addr_policy addrs;      /* who a request counts as (trusted proxies) */

    atomic_ullong next_client; /* client ids "<node>.<n>", unique across loops */
    atomic_uint loops_live;    /* loops not yet stopped: loop 0 (home of the
                                * channel layer) stops the layer after the last */
    atomic_int shutting_down;

    /* Revocations missed while the control topic was away are reloaded from
     * the store (loop 0), retried until that succeeds; /readyz says 503
     * meanwhile (any thread reads the flag). */
    atomic_int revocations_stale;
    int reload_running, reload_again; /* loop 0 */
    unsigned reload_attempt;          /* loop 0 */

    /* loop 0's own handles and state */
    uv_signal_t sigterm, sigint;
    uv_timer_t reload;                /* retries a failed revocation reload */
    int layer_started, home_finished; /* the channel layer's home */
};

/* One loop thread's share of the node. */
struct hr_worker {
    hr_loop loop; /* first: hr_worker_of() */
    hr_node *node;
    unsigned index;        /* loop.index */
    hr_counters stats;     /* atomics: summed at scrape time */
    auth_reply_to auth_to; /* user-store completions come back to this thread */

    /* the server's (server.c and the modules under it) */
    lws_dll2_owner_t conns; /* every client connection (conn.c) */
    hr_map *by_user;        /* user id -> that user's connections here (conn.c) */
    lws_dll2_owner_t reqs;  /* every HTTP request in progress (http.c) */
    hr_conn **pending;      /* connections with bytes to write this iteration (conn.c) */
    size_t npending, cappending;
    unsigned char *scratch;        /* LWS_PRE + HR_SCRATCH bytes: one write per burst (ws_conn.c) */
    struct hr_pmd_loop *pmd;       /* permessage-deflate (ws_deflate.c), NULL when off */
    struct hr_proxy_client *proxy; /* backend proxy calls (proxy_call.h), NULL when none */
    int in_lws;                    /* > 0 inside the lws protocol callback (server.c) */
};

/* The worker a loop belongs to (every loop of the node is a worker's). */
static inline hr_worker *hr_worker_of(hr_loop *l)
{
    return (hr_worker *)l;
}

/* The channel options of a namespace: what the layer is told, so it never
 * reads the gateway's configuration. */
static inline chan_opts hr_chan_opts(const auth_namespace *ns)
{
    return (chan_opts){ns->presence, ns->join_leave, ns->history_size, ns->history_ttl};
}

/* The metrics index of a namespace of cfg (HR_MAX_NS: "other"). */
static inline int hr_ns_index(const hr_config *cfg, const auth_namespace *ns)
{
    size_t i = ns ? (size_t)(ns - cfg->namespaces) : HR_MAX_NS;
    return i < HR_MAX_NS ? (int)i : HR_MAX_NS;
}

/* Starts the node: user store, JWT keys, channel layer, then the workers
 * with server's hooks (loop 0 on the calling thread). Returns 0, or -1
 * (logged) with whatever started left for hr_node_destroy. */
int hr_node_init(hr_node *node, const hr_config *cfg, const hr_server_hooks *server);
/* Runs loop 0 until every loop has shut down; joins the others. Returns the
 * process exit code. */
int hr_node_run(hr_node *node);
/* Frees everything hr_node_init created. */
void hr_node_destroy(hr_node *node);

/* Starts the graceful shutdown of every loop (any thread). */
void hr_node_shutdown(hr_node *node);
/* Closes every connection of user_id on every loop of this node with code
 * (4003). Any thread. */
void hr_node_disconnect_user(hr_node *node, const char *user_id, int code);
/* The client id of connection number n: "<node>.<n>" into buf. */
void hr_node_client_id(const hr_node *node, uint64_t n, char *buf, size_t len);

#endif
