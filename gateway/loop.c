/*
 * loop.c - one event-loop thread: libuv, a libwebsockets context on it, the
 * thread's own listening socket, its inbox and timers (see loop.h).
 */
#include "gateway/loop.h"
#include "common/common.h"
#include "common/log.h"

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

/* Connections accepted per readiness callback before other work runs. */
#define HR_ACCEPT_BATCH 64

/*---- Inbox -----------------------------------------------------------------*/

/* The wake-up is sent under the inbox lock: the loop closes its async
 * handle under the same lock, so a post never touches a closed handle. */
void hr_loop_post(hr_loop *l, const hr_post_type *type, int code, void *p)
{
    hr_inbox *in = &l->inbox;
    pthread_mutex_lock(&in->mu);
    if (l->closing) {
        pthread_mutex_unlock(&in->mu);
        if (type->discard)
            type->discard(p);
        return;
    }
    if (in->n == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 64;
        in->items = hr_realloc(in->items, in->cap * sizeof(*in->items));
    }
    in->items[in->n++] = (hr_post){type, code, p};
    if (in->n == 1)
        uv_async_send(&in->wake);
    pthread_mutex_unlock(&in->mu);
}

/* Takes everything posted so far in one swap, then runs it without the
 * lock, so posting threads never wait for fan-out. A shutting-down loop
 * may have run its last awaited answer: it checks whether it is done. */
static void inbox_drain(uv_async_t *a)
{
    hr_loop *l = a->data;
    hr_inbox *in = &l->inbox;
    pthread_mutex_lock(&in->mu);
    hr_post *items = in->items;
    size_t n = in->n, cap = in->cap;
    in->items = in->spare;
    in->cap = in->spare_cap;
    in->n = 0;
    pthread_mutex_unlock(&in->mu);

    HR_INC(l->stats, inbox_wakeups, 1);
    for (size_t i = 0; i < n; i++)
        items[i].type->run(l, items[i].p, items[i].code);
    in->spare = items; /* only this thread touches the spare */
    in->spare_cap = cap;
    if (l->shutting_down)
        hr_loop_maybe_done(l);
}

void hr_loop_close_inbox(hr_loop *l)
{
    pthread_mutex_lock(&l->inbox.mu);
    if (!l->closing) {
        l->closing = 1;
        uv_close((uv_handle_t *)&l->inbox.wake, NULL);
    }
    pthread_mutex_unlock(&l->inbox.mu);
}

/* Frees what is still queued once the loop has stopped for good. */
static void inbox_free(hr_inbox *in)
{
    for (size_t i = 0; i < in->n; i++)
        if (in->items[i].type->discard)
            in->items[i].type->discard(in->items[i].p);
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
 * still run here), then the stop hook and our own handles close, and
 * uv_run returns once nothing is left. */
static void loop_stop(hr_loop *l)
{
    if (l->stopped)
        return;
    l->stopped = 1;
    stop_listening(l);
    /* With a foreign loop, destruction finishes in lws' handle-close
     * callbacks; hr_loop_run completes it once uv_run has returned. */
    if (l->ctx)
        lws_context_destroy(l->ctx);
    close_handle((uv_handle_t *)&l->grace);
    close_handle((uv_handle_t *)&l->lag);
    close_handle((uv_handle_t *)&l->flush);
    l->h->stopped(l);
}

static void grace_expired(uv_timer_t *t)
{
    hr_loop *l = t->data;
    hr_warn("shutdown", "grace period over on loop %u with work still open", l->index);
    loop_stop(l);
}

void hr_loop_maybe_done(hr_loop *l)
{
    if (l->shutting_down && !l->stopped && !l->h->busy(l))
        loop_stop(l);
}

/* Stops accepting, lets the hook close the clients, and bounds the wait
 * with the grace timer. */
void hr_loop_shutdown(hr_loop *l)
{
    if (l->shutting_down)
        return;
    l->shutting_down = 1;
    stop_listening(l);
    l->h->shutdown(l);
    hr_loop_maybe_done(l);
    if (l->stopped)
        return;
    uv_timer_start(&l->grace, grace_expired, (uint64_t)l->cfg->shutdown_grace_ms, 0);
}

/* Runs after each iteration's I/O callbacks (lws events, the inbox). */
static void on_check(uv_check_t *h)
{
    hr_loop *l = h->data;
    l->h->flush(l);
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
    /* One protocol serves HTTP and WebSocket, so clients that offer no
     * Sec-WebSocket-Protocol (browsers usually don't) land on it too. The
     * rx buffer bounds one RECEIVE callback, not a message: the WebSocket
     * code reassembles. tx_packet_size must be set: when it is 0, lws 4.1
     * caps every send at rx_buffer_size + LWS_PRE + 4 bytes and copies the
     * rest into its buffered-out list, which with a small rx buffer turned
     * one coalesced write into hundreds. */
    loop->protocols[0] = (struct lws_protocols){
        "herald", loop->h->callback, loop->h->pss_size, loop->h->rx_buffer, 0,
        NULL,     loop->h->tx_packet};
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = loop->protocols; /* lws keeps the pointer: it lives with the loop */
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
    info.extensions = loop->h->extensions; /* permessage-deflate (ws_deflate.c) */
    if (loop->cfg->tls_cert) {
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
        info.ssl_cert_filepath = loop->cfg->tls_cert;
        info.ssl_private_key_filepath = loop->cfg->tls_key;
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
    atomic_store_explicit(&loop->stats->loop_lag_us,
                          now > loop->lag_due ? (long long)(now - loop->lag_due) : 0,
                          memory_order_relaxed);
    loop->lag_due = now + HR_LAG_PERIOD_MS * 1000;
}

/* Handles initialised here are closed by loop_stop (or hr_loop_fini for a
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
    return 0;
}

int hr_loop_init(hr_loop *loop, unsigned index, const hr_config *cfg, int *port,
                 const hr_loop_handlers *h, hr_counters *stats)
{
    static pthread_once_t lws_log_once = PTHREAD_ONCE_INIT;
    pthread_once(&lws_log_once, route_lws_log);
    loop->index = index;
    loop->cfg = cfg;
    loop->h = h;
    loop->stats = stats;
    loop->listen_fd = -1;
    pthread_mutex_init(&loop->inbox.mu, NULL);
    /* Port 0: loop 0 binds whatever port the system picks (nothing to
     * probe), the other loops then share that one. */
    if (index == 0 && *port != 0 && listen_socket(cfg, *port, 1) < 0) {
        hr_error("listen", "cannot listen on %s:%d: %s", cfg->listen_host, *port, strerror(errno));
        return -1;
    }
    if (init_handles(loop) < 0 || !(loop->ctx = create_context(loop)) ||
        !(loop->vhost = lws_get_vhost_by_name(loop->ctx, "herald"))) {
        hr_error("listen", "cannot start event loop %u", index);
        return -1;
    }
    if ((loop->listen_fd = listen_socket(cfg, *port, 0)) < 0) {
        hr_error("listen", "cannot listen on %s:%d: %s", cfg->listen_host, *port, strerror(errno));
        return -1;
    }
    if (*port == 0 && (*port = bound_port(loop->listen_fd)) <= 0) {
        hr_error("listen", "cannot read the port chosen for %s:0: %s", cfg->listen_host,
                 strerror(errno));
        return -1;
    }
    uv_poll_init(&loop->uv, &loop->listen_poll, loop->listen_fd);
    loop->listen_poll.data = loop;
    uv_poll_start(&loop->listen_poll, UV_READABLE, on_accept);
    return 0;
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
    if (loop->h->started)
        loop->h->started(loop);
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

void hr_loop_join(hr_loop *loop)
{
    if (loop->started) {
        pthread_join(loop->thread, NULL);
        loop->started = 0;
    }
}

void hr_loop_fini(hr_loop *loop)
{
    if (loop->uv_ready) {
        loop_stop(loop); /* a loop that never ran: close what was opened */
        hr_loop_close_inbox(loop);
        uv_run(&loop->uv, UV_RUN_DEFAULT);
        finish_context(loop);
        if (uv_loop_close(&loop->uv) != 0)
            hr_warn("shutdown", "loop %u closed with handles still open", loop->index);
        loop->uv_ready = 0;
    }
    inbox_free(&loop->inbox);
}
