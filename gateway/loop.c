/*
 * loop.c - one event loop thread (see node.h): a libuv loop, a
 * libwebsockets context running on it, the thread's own listening socket,
 * its inbox, and the protocol callback that routes lws events to ws.c and
 * http.c.
 *
 * Why our own listener: lws 4.1 built with LWS_MAX_SMP 1 only sets
 * SO_REUSEPORT when a context has several service threads, which it cannot
 * have, so one context per thread could not share the port. Each loop binds
 * its own SO_REUSEPORT socket instead, accepts on it and hands the sockets
 * to lws (lws_adopt_socket_vhost). This also lets shutdown simply stop
 * accepting: lws_context_deprecate() would, but reads freed memory in 4.1.6.
 */
#include "gateway/http.h"
#include "gateway/rest.h"
#include "common/log.h"
#include "gateway/node.h"
#include "gateway/proxy_call.h"
#include "gateway/ws.h"

#include <openssl/ssl.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* How often a node sharing a Redis user store looks for users deleted
 * through another node (until the cluster control channel replaces it). */
/* Connections accepted per readiness callback before other work runs. */
#define HR_ACCEPT_BATCH 64

/*---- The protocol callback -------------------------------------------------*/

static int callback_herald(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    hr_loop *loop = lws_context_user(lws_get_context(wsi));
    hr_pss *pss = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return hr_http_request(loop, wsi, pss, in, &hr_rest_routes);
    case LWS_CALLBACK_HTTP_BODY:
        return hr_http_body(loop, wsi, pss, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return hr_http_body_done(loop, wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return hr_http_writeable(loop, wsi, pss);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss)
            hr_http_drop(pss);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return hr_ws_confirm_upgrade(loop, wsi, in);
    case LWS_CALLBACK_ADD_HEADERS:
        return hr_pmd_add_headers(wsi, in);
    case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
        return 0; /* lws_callback_http_dummy refuses every extension */
    case LWS_CALLBACK_ESTABLISHED:
        return hr_ws_established(loop, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return hr_ws_receive(loop, wsi, pss, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return hr_ws_writeable(loop, wsi, pss);
    case LWS_CALLBACK_TIMER:
        return hr_ws_timer(loop, wsi, pss);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return hr_ws_peer_close(wsi, pss, in, len);
    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
        hr_ws_dropped(loop, wsi, pss);
        return 0;
    case LWS_CALLBACK_RAW_ADOPT:
    case LWS_CALLBACK_RAW_RX:
    case LWS_CALLBACK_RAW_WRITEABLE:
    case LWS_CALLBACK_RAW_CLOSE:
        return hr_http_raw(loop, wsi, reason, in, len);
    case LWS_CALLBACK_CLOSED:
        hr_ws_closed(loop, wsi, pss);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        hr_ws_wsi_destroyed(wsi);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* One protocol serves HTTP and WebSocket, so clients that offer no
 * Sec-WebSocket-Protocol (browsers usually don't) land on it too. The rx
 * buffer bounds one RECEIVE callback, not a message: ws.c reassembles.
 * tx_packet_size must be set: when it is 0, lws 4.1 caps every send at
 * rx_buffer_size + LWS_PRE + 4 bytes and copies the rest into its
 * buffered-out list, which with a small rx buffer turned one coalesced
 * write into hundreds. */
static const struct lws_protocols protocols[] = {
    {"herald", callback_herald, sizeof(hr_pss), HR_WS_RX_BUFFER, 0, NULL, HR_SCRATCH + LWS_PRE},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/*---- Inbox -----------------------------------------------------------------*/

static void loop_home_maybe_finish(hr_loop *loop);
static void inbox_close(hr_loop *loop);

static void run_post(hr_loop *loop, const hr_post *p)
{
    switch (p->kind) {
    case HR_POST_DELIVER:
        chan_deliver(loop->node->layer, loop->index, p->p);
        chan_msg_unref(p->p);
        break;
    case HR_POST_AUTH_DONE:
        auth_job_finish(p->p);
        break;
    case HR_POST_DISCONNECT:
        hr_ws_disconnect_user(loop, p->p, p->code,
                              p->code == 4003 ? "disconnected by the server" : "disconnected");
        free(p->p);
        break;
    case HR_POST_SHUTDOWN:
        hr_loop_begin_shutdown(loop);
        break;
    case HR_POST_CALL: {
        chan_task *t = p->p;
        t->run(t);
        hr_loop_maybe_done(loop); /* it may have been the last request in flight */
        break;
    }
    case HR_POST_CONTROL:
        hr_ws_member(loop, p->p);
        hr_control_free(p->p);
        break;
    case HR_POST_LOOP_STOPPED:
        loop_home_maybe_finish(loop);
        break;
    }
}

/* Takes everything posted so far in one swap, then runs it without the
 * lock, so posting threads never wait for fan-out. */
static void inbox_drain(uv_async_t *a)
{
    hr_loop *loop = a->data;
    hr_inbox *in = &loop->inbox;
    pthread_mutex_lock(&in->mu);
    hr_post *items = in->items;
    size_t n = in->n, cap = in->cap;
    in->items = in->spare;
    in->cap = in->spare_cap;
    in->n = 0;
    pthread_mutex_unlock(&in->mu);

    HR_INC(&loop->stats, inbox_wakeups, 1);
    for (size_t i = 0; i < n; i++)
        run_post(loop, &items[i]);
    in->spare = items; /* only this thread touches the spare */
    in->spare_cap = cap;
}

/* User-store completions: from a worker thread to the submitting loop. */
static void post_auth_done(void *ud, auth_job *j)
{
    hr_node_post(ud, HR_POST_AUTH_DONE, 0, j);
}

/* Frees what is still queued once the loop has stopped for good. */
static void inbox_free(hr_inbox *in)
{
    for (size_t i = 0; i < in->n; i++)
        hr_post_discard(in->items[i].kind, in->items[i].p);
    free(in->items);
    free(in->spare);
    pthread_mutex_destroy(&in->mu);
}

/*---- Listening -------------------------------------------------------------*/

/* Binds a non-blocking listening socket with SO_REUSEPORT on listen_host
 * and port_num. Loop 0 first checks that nobody else holds the port:
 * SO_REUSEPORT would otherwise let a second server (same user) share it
 * silently. Returns the fd or -1. */
static int listen_socket(const hr_config *cfg, int port_num, int probe)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", port_num);
    const char *host = strcmp(cfg->listen_host, "0.0.0.0") ? cfg->listen_host : NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    int ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
             (probe || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0) &&
             bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && (probe || listen(fd, 4096) == 0);
    freeaddrinfo(ai);
    if (!ok) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (probe) {
        close(fd);
        return 0;
    }
    return fd;
}

/* The local port of a bound socket, or -1. */
static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    hr_loop *loop = h->data;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < HR_ACCEPT_BATCH; i++) {
        int fd = accept4(loop->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                hr_warn("accept", "accept failed: %s", strerror(errno));
            return;
        }
        /* lws sets TCP_NODELAY only on sockets it accepted itself; without
         * it a response written as headers + body waits ~40 ms for the
         * peer's delayed ACK (Nagle). */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* on failure lws has already closed the socket */
        if (!lws_adopt_socket_vhost(loop->vhost, fd))
            hr_warn("accept", "libwebsockets could not adopt a connection");
    }
}

static void stop_listening(hr_loop *loop)
{
    if (loop->listen_fd < 0)
        return;
    uv_poll_stop(&loop->listen_poll);
    uv_close((uv_handle_t *)&loop->listen_poll, NULL);
    close(loop->listen_fd);
    loop->listen_fd = -1;
}

/*---- Shutdown --------------------------------------------------------------*/

static void close_handle(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

/* Stops the loop for good: lws closes every socket (their CLOSED callbacks
 * still run here), then our own handles close and uv_run returns once
 * nothing is left. Posts from now on are discarded. */
static void loop_stop(hr_loop *loop)
{
    if (loop->stopped)
        return;
    loop->stopped = 1;
    stop_listening(loop);
    /* With a foreign loop, destruction finishes in lws' handle-close
     * callbacks; hr_loop_run completes it once uv_run has returned. */
    if (loop->ctx)
        lws_context_destroy(loop->ctx);
    hr_proxy_client_close(loop->proxy); /* answers calls still out: unavailable */
    loop->proxy = NULL;
    close_handle((uv_handle_t *)&loop->grace);
    close_handle((uv_handle_t *)&loop->lag);
    close_handle((uv_handle_t *)&loop->flush);
    close_handle((uv_handle_t *)&loop->sigterm);
    close_handle((uv_handle_t *)&loop->sigint);
    close_handle((uv_handle_t *)&loop->reload);
    atomic_fetch_sub(&loop->node->loops_live, 1);
    if (loop->index == 0) {
        loop_home_maybe_finish(loop);
    } else {
        inbox_close(loop);
        if (loop->started) /* loop 0 runs until every started loop has stopped */
            hr_node_post(loop->node->loops[0], HR_POST_LOOP_STOPPED, 0, NULL);
    }
}

/* Loop 0 is the channel layer's home: the other loops' requests are served
 * until the last of them has stopped; then the layer closes its
 * connections and loop 0's inbox closes. */
static void loop_home_maybe_finish(hr_loop *loop)
{
    if (!loop->stopped || loop->home_finished || atomic_load(&loop->node->loops_live) != 0)
        return;
    loop->home_finished = 1;
    if (loop->layer_started)
        chan_layer_stop(loop->node->layer);
    inbox_close(loop);
}

/* Posts from now on are discarded. */
static void inbox_close(hr_loop *loop)
{
    pthread_mutex_lock(&loop->inbox.mu);
    loop->closing = 1;
    uv_close((uv_handle_t *)&loop->inbox.wake, NULL);
    pthread_mutex_unlock(&loop->inbox.mu);
}

static void grace_expired(uv_timer_t *t)
{
    hr_loop *loop = t->data;
    hr_warn("shutdown", "grace period over with %u connection(s) still open",
            (unsigned)loop->conns.count);
    loop_stop(loop);
}

/* A loop also waits for the channel layer's answers to its requests, so
 * none is lost with the loop (the grace timer bounds the wait). */
void hr_loop_maybe_done(hr_loop *loop)
{
    if (loop->shutting_down && loop->conns.count == 0 &&
        chan_layer_inflight(loop->node->layer, loop->index) == 0)
        loop_stop(loop);
}

/* Stops accepting, answers HTTP requests on open keep-alive connections
 * with 503, closes every WebSocket with 1001 after flushing its queue, and
 * bounds the wait with the grace timer. */
void hr_loop_begin_shutdown(hr_loop *loop)
{
    if (loop->shutting_down)
        return;
    loop->shutting_down = 1;
    stop_listening(loop);
    if (loop->index == 0)
        hr_info("shutdown", "closing %u connection(s) on loop 0", (unsigned)loop->conns.count);
    hr_ws_shutdown_all(loop);
    hr_loop_maybe_done(loop);
    if (loop->stopped)
        return;
    uv_timer_start(&loop->grace, grace_expired, (uint64_t)loop->node->cfg->shutdown_grace_ms, 0);
}

/* Runs after each iteration's I/O callbacks (lws events, the inbox): every
 * socket that got frames during them is written once. */
static void on_check(uv_check_t *h)
{
    hr_ws_flush_pending(h->data);
}

static void on_signal(uv_signal_t *s, int sig)
{
    hr_loop *loop = s->data;
    (void)sig;
    hr_node_shutdown(loop->node);
}

/*---- Life cycle ------------------------------------------------------------*/

/* libwebsockets logs through this hook; its lines end with '\n'. */
static void lws_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    hr_log(level == LLL_ERR ? HR_LOG_ERROR : HR_LOG_WARN, "lws", "%.*s", (int)n, line);
}

static void route_lws_log(void)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_emit);
}

#define HR_TLS12_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static struct lws_context *create_context(hr_loop *loop)
{
    struct lws_context_creation_info info;
    void *foreign[1] = {&loop->uv};
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.user = loop;
    info.foreign_loops = foreign;
    info.pcontext = &loop->ctx; /* lws NULLs it when destruction is complete */
    info.max_http_header_data = HR_MAX_HEADER_DATA;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN |
                   LWS_SERVER_OPTION_VALIDATE_UTF8 |
                   LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE |
                   LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG;
    /* a request lws cannot parse comes to us as a raw socket instead of
     * getting lws' text/html 403 (http.c, hr_http_raw); without
     * ..._ADOPT_APPLY_LISTEN_ACCEPT_CONFIG this is all these two do */
    info.listen_accept_role = "raw-skt";
    info.listen_accept_protocol = "herald";
    info.vhost_name = "herald";
    info.timeout_secs = 10;
    /* permessage-deflate: Herald's own extension (ws_deflate.c) */
    if (loop->node->cfg->ws_compression)
        info.extensions = hr_pmd_extensions();
    if (loop->node->cfg->tls_cert) {
        /* the vhost gets an SSL_CTX; adopted sockets then start with the
         * TLS handshake (lws_adopt_socket_vhost allows TLS) */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        /* Herald makes no TLS client connections; without this lws 4.1
         * also builds a client SSL_CTX per vhost, loads the system CA
         * store into it and never frees it (LeakSanitizer: ~700 KB). */
        info.options |= LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
        /* ... but with a listen_accept_role it would also bind every adopted
         * socket to that role (raw): under TLS, unparseable requests get
         * lws' own answer instead of ours (docs/limitations.md) */
        info.listen_accept_role = NULL;
        info.listen_accept_protocol = NULL;
        /* TLS 1.2 or newer; for 1.2, forward-secret AEAD suites only
         * (Mozilla's "intermediate" list); 1.3 keeps OpenSSL's defaults */
        info.ssl_options_set =
            SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_CIPHER_SERVER_PREFERENCE;
        info.ssl_cipher_list = HR_TLS12_CIPHERS;
        info.ssl_cert_filepath = loop->node->cfg->tls_cert;
        info.ssl_private_key_filepath = loop->node->cfg->tls_key;
    }
    return lws_create_context(&info);
}

/* How late the lag timer fires: what a callback that ran too long (or a
 * starved thread) cost every socket of the loop. */
#define HR_LAG_PERIOD_MS 500
static void measure_lag(uv_timer_t *t)
{
    hr_loop *loop = t->data;
    uint64_t now = hr_now_us();
    atomic_store_explicit(&loop->stats.loop_lag_us,
                          now > loop->lag_due ? (long long)(now - loop->lag_due) : 0,
                          memory_order_relaxed);
    loop->lag_due = now + HR_LAG_PERIOD_MS * 1000;
}

/* Handles initialised here are closed by loop_stop (or hr_loop_free for a
 * loop that never ran). */
static int init_handles(hr_loop *loop)
{
    if (uv_loop_init(&loop->uv) != 0)
        return -1;
    loop->uv_ready = 1;
    uv_async_init(&loop->uv, &loop->inbox.wake, inbox_drain);
    loop->inbox.wake.data = loop;
    uv_timer_init(&loop->uv, &loop->grace);
    loop->grace.data = loop;
    uv_timer_init(&loop->uv, &loop->lag);
    loop->lag.data = loop;
    loop->lag_due = hr_now_us() + HR_LAG_PERIOD_MS * 1000;
    uv_timer_start(&loop->lag, measure_lag, HR_LAG_PERIOD_MS, HR_LAG_PERIOD_MS);
    uv_unref((uv_handle_t *)&loop->lag); /* it must not keep a stopped loop alive */
    uv_check_init(&loop->uv, &loop->flush);
    loop->flush.data = loop;
    uv_check_start(&loop->flush, on_check);
    uv_unref((uv_handle_t *)&loop->flush); /* it must not keep a stopped loop alive */
    if (loop->index == 0) {
        uv_timer_init(&loop->uv, &loop->reload);
        loop->reload.data = loop->node;
        uv_unref((uv_handle_t *)&loop->reload); /* it must not keep a stopped loop alive */
        uv_signal_init(&loop->uv, &loop->sigterm);
        uv_signal_init(&loop->uv, &loop->sigint);
        loop->sigterm.data = loop->sigint.data = loop;
        uv_signal_start(&loop->sigterm, on_signal, SIGTERM);
        uv_signal_start(&loop->sigint, on_signal, SIGINT);
        /* signal handles must not keep a stopped loop alive */
        uv_unref((uv_handle_t *)&loop->sigterm);
        uv_unref((uv_handle_t *)&loop->sigint);
    }
    return 0;
}

static hr_loop *loop_fail(hr_loop *loop)
{
    hr_loop_free(loop);
    return NULL;
}

hr_loop *hr_loop_new(hr_node *node, unsigned index)
{
    static pthread_once_t lws_log_once = PTHREAD_ONCE_INIT;
    const hr_config *cfg = node->cfg;
    pthread_once(&lws_log_once, route_lws_log);
    hr_loop *loop = hr_calloc(1, sizeof(*loop));
    loop->node = node;
    loop->index = index;
    loop->listen_fd = -1;
    pthread_mutex_init(&loop->inbox.mu, NULL);
    loop->by_user = hr_map_new(NULL);
    loop->scratch = hr_malloc(LWS_PRE + HR_SCRATCH);
    if (cfg->ws_compression)
        loop->pmd = hr_pmd_loop_new();
    loop->auth_to = (auth_reply_to){post_auth_done, loop};
    /* Port 0: loop 0 binds whatever port the system picks (nothing to
     * probe), the other loops then share that one. */
    if (index == 0)
        node->port = cfg->listen_port;
    if (index == 0 && node->port != 0 && listen_socket(cfg, node->port, 1) < 0) {
        hr_error("listen", "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                 strerror(errno));
        return loop_fail(loop);
    }
    if (init_handles(loop) < 0 || !(loop->ctx = create_context(loop)) ||
        !(loop->vhost = lws_get_vhost_by_name(loop->ctx, "herald"))) {
        hr_error("listen", "cannot start event loop %u", index);
        return loop_fail(loop);
    }
    if (hr_proxy_configured(cfg) &&
        !(loop->proxy = hr_proxy_client_new(&loop->uv, cfg, node->nloops, &loop->stats)))
        return loop_fail(loop);
    if ((loop->listen_fd = listen_socket(cfg, node->port, 0)) < 0) {
        hr_error("listen", "cannot listen on %s:%d: %s", cfg->listen_host, node->port,
                 strerror(errno));
        return loop_fail(loop);
    }
    if (node->port == 0 && (node->port = bound_port(loop->listen_fd)) <= 0) {
        hr_error("listen", "cannot read the port chosen for %s:0: %s", cfg->listen_host,
                 strerror(errno));
        return loop_fail(loop);
    }
    uv_poll_init(&loop->uv, &loop->listen_poll, loop->listen_fd);
    loop->listen_poll.data = loop;
    uv_poll_start(&loop->listen_poll, UV_READABLE, on_accept);
    return loop;
}

/* As lws' foreign-loop example does: the destroy started inside the loop
 * is finished by a second call once the loop has stopped, and the loop runs
 * again until lws' last handles have closed. */
static void finish_context(hr_loop *loop)
{
    if (loop->ctx)
        lws_context_destroy(loop->ctx);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
}

void hr_loop_run(hr_loop *loop)
{
    if (loop->index == 0) {
        if (chan_layer_start(loop->node->layer, &loop->uv) == 0)
            loop->layer_started = 1;
        else
            hr_error("channels", "the %s channel layer did not start",
                     chan_layer_name(loop->node->layer));
    }
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    finish_context(loop);
}

static void *loop_thread(void *arg)
{
    hr_loop_run(arg);
    return NULL;
}

/* Loop threads leave signals to loop 0 (libuv's handler writes to loop 0's
 * signal pipe whichever thread the kernel picks). */
int hr_loop_start_thread(hr_loop *loop)
{
    if (pthread_create(&loop->thread, NULL, loop_thread, loop) != 0) {
        hr_error("threads", "cannot start loop thread %u", loop->index);
        return -1;
    }
    loop->started = 1;
    return 0;
}

void hr_loop_free(hr_loop *loop)
{
    if (!loop)
        return;
    if (loop->uv_ready) {
        loop_stop(loop); /* a loop that never ran: close what was opened */
        uv_run(&loop->uv, UV_RUN_DEFAULT);
        finish_context(loop);
        if (uv_loop_close(&loop->uv) != 0)
            hr_warn("shutdown", "loop %u closed with handles still open", loop->index);
    }
    hr_ws_flush_pending(loop); /* drops the references of closed connections */
    hr_http_free_all(loop);
    inbox_free(&loop->inbox);
    hr_map_free(loop->by_user);
    free(loop->pending);
    free(loop->scratch);
    hr_pmd_loop_free(loop->pmd);
    free(loop);
}
