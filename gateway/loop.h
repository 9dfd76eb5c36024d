/*
 * loop.h - one event-loop thread: a libuv loop (epoll), a libwebsockets
 * context running on it, the thread's own SO_REUSEPORT listening socket,
 * its inbox and its timers.
 *
 * A loop knows no client (as Redis' ae.c knows nothing of Redis' clients):
 * what it runs comes in through a table of handlers - the lws protocol
 * callback, a flush after each iteration, and hooks for start, shutdown
 * and stop - and through posts, each carrying its own type (what runs it,
 * and what frees it if the loop stops first). The node (node.c) owns the
 * loops and fills in the handlers; the server (server.c) behind it knows
 * the clients.
 *
 * Listening. lws 4.1 built with LWS_MAX_SMP 1 only sets SO_REUSEPORT when a
 * context has several service threads, which it cannot have, so one
 * context per thread could not share the port. Each loop binds its own
 * SO_REUSEPORT socket instead, accepts on it and hands the sockets to lws
 * (lws_adopt_socket_vhost): the kernel spreads new connections over the
 * threads, and a connection lives on the thread that accepted it. This also
 * lets shutdown simply stop accepting: lws_context_deprecate() would, but
 * reads freed memory in 4.1.6.
 *
 * Inbox. Anything that crosses threads - publications, user-store
 * completions, "disconnect user X", shutdown - is posted to the target
 * loop's inbox (a locked vector and a uv_async_t). The loop drains it in one
 * swap per wake-up, so a burst of posts costs one wake-up.
 *
 * Who may touch what: a loop's fields belong to its thread, except the
 * inbox (locked) and those hr_loop_init sets (read-only afterwards).
 */
#ifndef HR_LOOP_H
#define HR_LOOP_H

#include "gateway/config.h"
#include "gateway/metrics.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <uv.h>

typedef struct hr_loop hr_loop;

/* What a post is: run on the loop's thread with its pointer and code, or
 * discarded (NULL: nothing to free) when the loop stopped before running
 * it. Types are static descriptions (node.c's). */
typedef struct hr_post_type {
    const char *name;
    void (*run)(hr_loop *l, void *p, int code);
    void (*discard)(void *p);
} hr_post_type;

typedef struct hr_post {
    const hr_post_type *type;
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

/* What runs on a loop. Every hook runs on the loop's thread. */
typedef struct hr_loop_handlers {
    /* The protocol that serves HTTP and WebSocket on the loop's context,
     * with its per-session data size and receive buffer. */
    lws_callback_function *callback;
    size_t pss_size;
    size_t rx_buffer;
    size_t tx_packet; /* lws' tx_packet_size (see loop.c) */
    /* The WebSocket extensions offered (permessage-deflate), or NULL. */
    const struct lws_extension *extensions;
    /* Before the loop serves anything. May be NULL. */
    void (*started)(hr_loop *l);
    /* After each iteration's callbacks: write what they queued. */
    void (*flush)(hr_loop *l);
    /* The graceful shutdown begins: close the clients. */
    void (*shutdown)(hr_loop *l);
    /* Nonzero while a shutting-down loop must keep running (clients still
     * open, answers still expected); the grace timer bounds the wait. */
    int (*busy)(hr_loop *l);
    /* The loop has stopped: its lws context is destroyed (every client's
     * close callback has run) and its own handles are closing. What else
     * runs on it closes here; the hook decides when to close the inbox. */
    void (*stopped)(hr_loop *l);
} hr_loop_handlers;

struct hr_loop {
    /* set by hr_loop_init, read-only afterwards */
    unsigned index;
    const hr_config *cfg;
    const hr_loop_handlers *h;
    hr_counters *stats; /* the owner's (atomics): inbox wake-ups, lag */
    hr_inbox inbox;     /* any thread posts; the loop drains */

    /* the loop thread's own */
    struct lws_protocols protocols[2]; /* the one protocol, and the terminator */
    uv_loop_t uv;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    int listen_fd;
    uv_poll_t listen_poll;
    uv_timer_t grace;
    uv_timer_t lag;   /* measures how late it fires: the loop's lag */
    uint64_t lag_due; /* hr_now_us() when it should fire next */
    uv_check_t flush; /* runs h->flush after each iteration's callbacks */
    pthread_t thread;
    int started;       /* a thread runs this loop (joined at exit) */
    int uv_ready;      /* uv loop initialised */
    int stopped;       /* lws context destroyed, handles closing */
    int closing;       /* locked by inbox.mu: posts are discarded */
    int shutting_down; /* the graceful shutdown has begun */
};

/* Request header bytes lws keeps while parsing (room for long JWTs). */
#define HR_MAX_HEADER_DATA 16384

/* Initialises loop `index` (not yet running) in l, which the caller
 * allocated zeroed: its uv loop, lws context and listening socket on
 * cfg's host and *port. Loop 0 first checks that nobody else holds the
 * port (SO_REUSEPORT would otherwise share it silently); with *port 0 it
 * binds a port the system chooses and stores it in *port for the loops
 * after it. Returns 0, or -1 (logged) with what was opened left for
 * hr_loop_fini. */
int hr_loop_init(hr_loop *l, unsigned index, const hr_config *cfg, int *port,
                 const hr_loop_handlers *h, hr_counters *stats);
/* Runs the loop on the calling thread until it has stopped. */
void hr_loop_run(hr_loop *l);
/* Starts a thread that runs the loop. Returns 0 or -1. */
int hr_loop_start_thread(hr_loop *l);
/* Waits for a loop's thread (none started: returns at once). */
void hr_loop_join(hr_loop *l);
/* Frees what a loop that has stopped (or never ran) still holds, running
 * its stop hook first for one that never ran; discards what is left in its
 * inbox. l itself is the caller's. */
void hr_loop_fini(hr_loop *l);

/* Any thread: queues p for the loop's thread, where type->run(l, p, code)
 * runs; the loop owns p from now on (discarded if it has stopped). */
void hr_loop_post(hr_loop *l, const hr_post_type *type, int code, void *p);
/* Loop thread: posts from now on are discarded. */
void hr_loop_close_inbox(hr_loop *l);

/* Loop thread: starts the graceful shutdown - stop accepting, the shutdown
 * hook, and the grace timer (cfg->shutdown_grace_ms) that bounds it. */
void hr_loop_shutdown(hr_loop *l);
/* Loop thread: once shutting down and not busy, stops the loop. Called by
 * the loop after every inbox drain; a client that closes calls it too. */
void hr_loop_maybe_done(hr_loop *l);

#endif
