/*
 * node.h - the gateway process: one node (process-wide state) and its loops
 * (one event loop per thread).
 *
 * Loops. Each loop thread runs a libuv loop (epoll) with its own
 * libwebsockets context (lws 4.1 serves one thread per context) and its own
 * SO_REUSEPORT listening socket on the shared port: the kernel spreads new
 * connections over the threads, and a connection lives on the thread that
 * accepted it until it closes. Loop 0 runs on the main thread and also owns
 * signals and node-wide timers.
 *
 * Inboxes. Anything that crosses threads - publications, user-store
 * completions, "disconnect user X", shutdown - is posted to the target
 * loop's inbox (a locked vector and a uv_async_t). The loop drains it in one
 * swap per wake-up, so a burst of posts costs one wake-up.
 *
 * Who may touch what: hr_node fields are set before the loops start and
 * read-only afterwards, except those marked "locked" or "atomic". hr_loop
 * fields belong to their thread, except the inbox (locked) and the
 * counters (atomics read by /metrics on any thread).
 */
#ifndef HR_NODE_H
#define HR_NODE_H

#include "auth/auth.h"
#include "channels/channels.h"
#include "common/common.h"
#include "gateway/config.h"
#include "gateway/creds.h"
#include "gateway/limits.h"
#include "gateway/metrics.h"
#include "gateway/wsi.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

typedef struct hr_loop hr_loop;

typedef struct hr_node {
    const hr_config *cfg;
    auth_jwt_config jwt;
    auth_service *users; /* user store + Argon2id on worker threads */
    chan_layer *layer;
    hr_loop **loops;
    unsigned nloops;
    int port; /* the port listened on: cfg->listen_port, or for 0 the one the
               * system chose when loop 0 bound it (set before other loops) */

    hr_creds *creds;            /* verifies credentials; holds the revocations */
    auth_throttle *logins;      /* failed logins per username (locked inside) */
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
} hr_node;

/*---- Inbox -----------------------------------------------------------------*/

typedef enum hr_post_kind {
    HR_POST_DELIVER,    /* p: chan_msg* (one reference, dropped after delivery) */
    HR_POST_AUTH_DONE,  /* p: auth_job* */
    HR_POST_DISCONNECT, /* p: malloc'ed user id; code: close code */
    HR_POST_SHUTDOWN,
    HR_POST_CALL,         /* p: chan_task* (the channel layer's work for this loop) */
    HR_POST_CONTROL,      /* p: hr_control* (server-side membership, disconnects) */
    HR_POST_LOOP_STOPPED, /* to loop 0: another loop has stopped */
} hr_post_kind;

/* A control message copied for one loop. */
typedef struct hr_control {
    chan_control_op op;
    int code;
    char *user;
    char *channel;
} hr_control;

typedef struct hr_post {
    hr_post_kind kind;
    int code;
    void *p;
} hr_post;

typedef struct hr_inbox {
    pthread_mutex_t mu;
    hr_post *items; /* locked */
    size_t n, cap;  /* locked */
    hr_post *spare; /* the loop's: swapped with items on each drain */
    size_t spare_cap;
    uv_async_t wake;
} hr_inbox;

/*---- A loop ----------------------------------------------------------------*/

struct hr_loop {
    hr_node *node;
    unsigned index;
    hr_counters stats; /* atomics: summed at scrape time */
    hr_inbox inbox;    /* any thread posts; the loop drains */

    /* the loop thread's own */
    uv_loop_t uv;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    int listen_fd;
    uv_poll_t listen_poll;
    uv_timer_t grace;
    uv_timer_t lag;              /* measures how late it fires: the loop's lag */
    uint64_t lag_due;            /* hr_now_us() when it should fire next */
    uv_signal_t sigterm, sigint; /* loop 0 only */
    uv_timer_t reload;           /* loop 0 only: retries a failed revocation reload */
    pthread_t thread;
    int started;                      /* a thread runs this loop (joined at exit) */
    int uv_ready;                     /* uv loop initialised */
    int stopped;                      /* lws context destroyed, handles closing */
    int closing;                      /* locked by inbox.mu: posts are discarded */
    int layer_started, home_finished; /* loop 0: the channel layer's home */

    lws_dll2_owner_t conns; /* every WebSocket connection of this loop */
    lws_dll2_owner_t reqs;  /* every HTTP request in progress */
    hr_map *by_user;        /* user id -> hr_user_conns: the user's connections here */
    int shutting_down;

    unsigned char *scratch; /* LWS_PRE + HR_SCRATCH bytes: one write per socket burst */
    hr_conn **pending;      /* connections with frames to write this iteration */
    size_t npending, cappending;
    uv_check_t flush;      /* writes them after the iteration's callbacks */
    auth_reply_to auth_to; /* user-store completions come back to this loop */

    /* backend proxy calls (proxy_call.h); NULL when no proxy is configured */
    struct hr_proxy_client *proxy;
    struct hr_pmd_loop *pmd; /* permessage-deflate (ws_deflate.c), NULL when off */
};

/* Bytes of frames coalesced into one write. */
#define HR_SCRATCH 65536
/* Request header bytes lws keeps while parsing (room for long JWTs). */
#define HR_MAX_HEADER_DATA 16384

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

/*---- Node (node.c) ---------------------------------------------------------*/

/* Starts the node: user store, JWT keys, channel layer, then the loop
 * threads (loop 0 on the calling thread). Returns 0, or -1 (logged) with
 * whatever started torn down by hr_node_destroy. */
int hr_node_init(hr_node *node, const hr_config *cfg);
/* Runs loop 0 until every loop has shut down; joins the others. Returns the
 * process exit code. */
int hr_node_run(hr_node *node);
/* Frees everything hr_node_init created. */
void hr_node_destroy(hr_node *node);

/* Starts the graceful shutdown of every loop (from any thread). */
void hr_node_shutdown(hr_node *node);
void hr_control_free(hr_control *c);
/* Frees what a post owns when it is not run (its loop stopped). */
void hr_post_discard(hr_post_kind kind, void *p);
/* Posts to one loop's inbox (any thread); the loop owns p afterwards. */
void hr_node_post(hr_loop *loop, hr_post_kind kind, int code, void *p);
/* Closes every connection of user_id on every loop of this node with code
 * (4003). Any thread. */
void hr_node_disconnect_user(hr_node *node, const char *user_id, int code);
/* Loop 0's reload timer fired: reads the revocations again. */
void hr_node_reload_revocations(uv_timer_t *t);

/* The client id of connection number n: "<node>.<n>" into buf. */
void hr_node_client_id(const hr_node *node, uint64_t n, char *buf, size_t len);

/*---- Loop (loop.c) ---------------------------------------------------------*/

/* Creates loop `index` (not yet running). Returns NULL (logged) on failure. */
hr_loop *hr_loop_new(hr_node *node, unsigned index);
/* Runs the loop on the calling thread until it has shut down. */
void hr_loop_run(hr_loop *loop);
/* Starts a thread that runs the loop. Returns 0 or -1. */
int hr_loop_start_thread(hr_loop *loop);
/* Frees a loop that has stopped (or never ran). */
void hr_loop_free(hr_loop *loop);
/* Loop thread: once shutting down and the last connection closed, stops
 * the loop. */
void hr_loop_maybe_done(hr_loop *loop);
/* Loop thread: starts this loop's graceful shutdown (stop accepting, close
 * sockets with 1001, grace timer). */
void hr_loop_begin_shutdown(hr_loop *loop);

#endif
