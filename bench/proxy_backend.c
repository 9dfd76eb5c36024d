/* herald-proxy-backend - the application backend of the proxy benchmarks
 * (bench/run.py proxy-connect): the least a backend can do, so that what
 * is measured is Herald's side of a proxied connect, not the backend.
 *
 * HTTP/1.1 with keep-alive (and pipelining), one thread, epoll
 * (edge-triggered), non-blocking sockets. POST /connect answers
 * {"result":{"user":"<the bench_user cookie>"}} (herald-loadgen --auth
 * cookie sends Cookie: bench_user=bench-<tag>-<n>), or an "unauthorized"
 * error without one; POST /refresh, /subscribe, /publish answer
 * {"result":{}} (refresh: an expire_at an hour ahead); POST /rpc
 * {"result":{"data":null}}. GET /healthz answers 200, GET /stats
 * {"requests":N,"connections":M} (connections accepted: Herald's pool at
 * work shows as M far below the number of proxied connects). Requests
 * without the X-Herald-Proxy-Key of --key (when given) get 403.
 *
 *   herald-proxy-backend --listen 127.0.0.1:PORT [--key KEY]
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD 16384
#define MAX_BODY (1 << 20)

typedef struct pconn {
    int fd;
    hr_buf in, out;
} pconn;

static struct {
    const char *key;
    unsigned long long requests, connections;
    int stop;
} G;

static void on_signal(int sig)
{
    (void)sig;
    G.stop = 1;
}

static void respond(pconn *c, int status, const char *body)
{
    char head[256];
    const char *reason = status == 200 ? "OK" : status == 403 ? "Forbidden" : "Not Found";
    size_t blen = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, reason, blen);
    hr_buf_append(&c->out, head, (size_t)n);
    hr_buf_append(&c->out, body, blen);
}

/* The value of cookie `name` in a Cookie header value (not NUL-terminated). */
static const char *cookie_value(const char *v, size_t vlen, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    const char *end = v + vlen, *p = v;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *semi = memchr(p, ';', (size_t)(end - p));
        if (!semi)
            semi = end;
        if (eq && eq < semi && (size_t)(eq - p) == nlen && !memcmp(p, name, nlen)) {
            *len = (size_t)(semi - eq - 1);
            return eq + 1;
        }
        p = semi;
    }
    return NULL;
}

/* One complete request: method and path from the request line, the head
 * [p, eoh) for its headers. */
static void handle(pconn *c, const char *p, const char *eoh)
{
    char method[8] = "", path[64] = "";
    sscanf(p, "%7s %63s", method, path);
    G.requests++;
    if (!strcmp(method, "GET")) {
        if (!strcmp(path, "/healthz")) {
            respond(c, 200, "{}");
        } else if (!strcmp(path, "/stats")) {
            char body[128];
            snprintf(body, sizeof body, "{\"requests\":%llu,\"connections\":%llu}", G.requests,
                     G.connections);
            respond(c, 200, body);
        } else {
            respond(c, 404, "{}");
        }
        return;
    }
    size_t klen = 0;
    const char *k = http_header(p, eoh + 2, "X-Herald-Proxy-Key", &klen);
    if (G.key && (!k || klen != strlen(G.key) || memcmp(k, G.key, klen))) {
        respond(c, 403, "{}");
        return;
    }
    if (!strcmp(path, "/connect")) {
        size_t vlen = 0, ulen = 0;
        const char *v = http_header(p, eoh + 2, "Cookie", &vlen);
        const char *u = v ? cookie_value(v, vlen, "bench_user", &ulen) : NULL;
        char body[256];
        if (!u || ulen == 0 || ulen > 128) {
            respond(c, 200, "{\"error\":{\"code\":\"unauthorized\",\"message\":\"no cookie\"}}");
            return;
        }
        for (size_t i = 0; i < ulen; i++) /* a user name of the loadgen's own making */
            if (u[i] == '"' || u[i] == '\\' || (unsigned char)u[i] < 0x20) {
                respond(c, 200, "{\"error\":{\"code\":\"bad_request\",\"message\":\"user\"}}");
                return;
            }
        snprintf(body, sizeof body, "{\"result\":{\"user\":\"%.*s\"}}", (int)ulen, u);
        respond(c, 200, body);
    } else if (!strcmp(path, "/refresh")) {
        char body[64];
        snprintf(body, sizeof body, "{\"result\":{\"expire_at\":%ld}}", (long)time(NULL) + 3600);
        respond(c, 200, body);
    } else if (!strcmp(path, "/subscribe") || !strcmp(path, "/publish")) {
        respond(c, 200, "{\"result\":{}}");
    } else if (!strcmp(path, "/rpc")) {
        respond(c, 200, "{\"result\":{\"data\":null}}");
    } else {
        respond(c, 404, "{}");
    }
}

/* Handles every complete request in c->in; -1 when the input is not HTTP
 * we can read (the connection is closed). */
static int process(pconn *c)
{
    for (;;) {
        char *p = hr_buf_head(&c->in);
        size_t n = hr_buf_pending(&c->in);
        char *eoh = n ? memmem(p, n, "\r\n\r\n", 4) : NULL;
        if (!eoh)
            return n > MAX_HEAD ? -1 : 0;
        size_t clen = 0, vlen = 0;
        const char *v = http_header(p, eoh + 2, "Content-Length", &vlen);
        if (v)
            clen = strtoul(v, NULL, 10);
        if (clen > MAX_BODY)
            return -1;
        size_t total = (size_t)(eoh + 4 - p) + clen;
        if (n < total)
            return 0;
        handle(c, p, eoh);
        hr_buf_consume(&c->in, total);
    }
}

static void conn_close(int ep, pconn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    hr_buf_reset(&c->in);
    hr_buf_reset(&c->out);
    free(c);
}

/* Writes what is pending; 0, or -1 on a write error. */
static int flush_out(pconn *c)
{
    while (hr_buf_pending(&c->out)) {
        ssize_t w = write(c->fd, hr_buf_head(&c->out), hr_buf_pending(&c->out));
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        hr_buf_consume(&c->out, (size_t)w);
    }
    return 0;
}

static void on_readable(int ep, pconn *c)
{
    for (;;) {
        hr_buf_reserve(&c->in, 16384);
        ssize_t r = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
        if (r > 0) {
            c->in.len += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EAGAIN)
            break;
        conn_close(ep, c); /* EOF or an error */
        return;
    }
    if (process(c) < 0 || flush_out(c) < 0)
        conn_close(ep, c);
}

int main(int argc, char **argv)
{
    const char *listen_at = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen"))
            listen_at = argv[i + 1];
        else if (!strcmp(argv[i], "--key"))
            G.key = argv[i + 1];
    }
    const char *colon = listen_at ? strrchr(listen_at, ':') : NULL;
    if (!colon || (argc - 1) % 2) {
        fprintf(stderr, "usage: herald-proxy-backend --listen HOST:PORT [--key KEY]\n");
        return 2;
    }
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - listen_at), listen_at);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "herald-proxy-backend: %s is not an IPv4 address\n", host);
        return 2;
    }
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
        perror("herald-proxy-backend: bind/listen");
        return 1;
    }
    set_nonblock(lfd);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction st = {.sa_handler = on_signal};
    sigaction(SIGTERM, &st, NULL);
    sigaction(SIGINT, &st, NULL);
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event evs[256];
    while (!G.stop) {
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            pconn *c = evs[i].data.ptr;
            if (!c) { /* the listener */
                int fd;
                while ((fd = accept(lfd, NULL, NULL)) >= 0) {
                    set_nonblock(fd);
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    pconn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    G.connections++;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                                             .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & EPOLLIN) {
                on_readable(ep, c);
            } else if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                conn_close(ep, c);
            } else if (evs[i].events & EPOLLOUT && flush_out(c) < 0) {
                conn_close(ep, c);
            }
        }
    }
    printf("{\"requests\":%llu,\"connections\":%llu}\n", G.requests, G.connections);
    return 0;
}
