/* client.c - the client end of a load generator's socket (see client.h). */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

int bc_fault(int err)
{
    switch (err) {
    case -ECONNREFUSED:
        return BC_HTTP_STATUS;
    case -EACCES:
        return BC_BAD_ACCEPT;
    case -EPROTO:
        return BC_BAD_FRAME;
    case -E2BIG:
        return BC_TOO_BIG;
    default:
        return BC_BAD_HTTP;
    }
}

void bc_tally(int *keys, int *counts, int *n, int cap, int v)
{
    for (int i = 0; i < *n; i++) {
        if (keys[i] == v) {
            counts[i]++;
            return;
        }
    }
    if (*n < cap) {
        keys[*n] = v;
        counts[(*n)++] = 1;
    } else {
        counts[cap - 1]++;
    }
}

int bc_connect(const char *host, int port, int src_first, int src_count, uint32_t i)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (src_count > 0) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr =
            htonl(0x7f000000u | (uint32_t)(src_first + (int)(i % (uint32_t)src_count)));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
            goto fail;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

int bc_connect_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    return err;
}

int bc_send(int fd, hr_buf *out)
{
    while (hr_buf_pending(out) > 0) {
        ssize_t n = send(fd, hr_buf_head(out), hr_buf_pending(out), MSG_NOSIGNAL);
        if (n > 0)
            hr_buf_consume(out, (size_t)n);
        else if (n < 0 && errno == EINTR)
            continue;
        else
            return n < 0 && errno != EAGAIN ? -errno : 0;
    }
    return 0;
}

void bc_ws_frame(hr_buf *out, uint64_t *rng, int opcode, const void *p, size_t n)
{
    uint64_t r = rng_next(rng);
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    hr_buf_reserve(out, n + HR_WS_HDR_MAX);
    uint8_t *dst = (uint8_t *)out->data + out->len;
    size_t h = hr_ws_frame_header(dst, opcode, n, mask);
    memcpy(dst + h, p, n);
    hr_ws_mask(dst + h, n, mask, 0);
    out->len += h + n;
}

size_t bc_upgrade_request(char *req, size_t cap, const char *target, const char *host, int port,
                          int deflate, const char *extra, uint64_t *rng, char accept[29])
{
    uint8_t raw[16];
    uint64_t r1 = rng_next(rng), r2 = rng_next(rng);
    memcpy(raw, &r1, 8);
    memcpy(raw + 8, &r2, 8);
    char key[25];
    b64_encode(raw, sizeof raw, key, 0);
    ws_accept_key(key, strlen(key), accept);
    int n = snprintf(req, cap,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s\r\n",
                     target, host, port, key, extra ? extra : "",
                     deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                               "client_max_window_bits\r\n"
                             : "");
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

int bc_upgrade_response(const char *p, size_t n, size_t max_head, const char accept[28],
                        int *status, int *pmd)
{
    const char *eoh = memmem(p, n, "\r\n\r\n", 4);
    if (!eoh)
        return n > max_head ? -EMSGSIZE : 0;
    *status = n > 12 ? atoi(p + 9) : 0;
    if (*status != 101)
        return -ECONNREFUSED;
    size_t vlen = 0;
    const char *v = http_header(p, eoh + 2, "Sec-WebSocket-Accept", &vlen);
    if (!v || vlen != 28 || memcmp(v, accept, 28) != 0)
        return -EACCES;
    v = http_header(p, eoh + 2, "Sec-WebSocket-Extensions", &vlen);
    *pmd = v && vlen >= 18 && !memcmp(v, "permessage-deflate", 18);
    return (int)(eoh + 4 - p);
}

int bc_http_response(const char *p, size_t n, size_t max_head, int *status)
{
    const char *eoh = memmem(p, n, "\r\n\r\n", 4);
    if (!eoh)
        return n > max_head ? -EMSGSIZE : 0;
    size_t vlen = 0;
    const char *cl = http_header(p, eoh + 2, "Content-Length", &vlen);
    if (!cl || n < 13)
        return -EBADMSG;
    size_t total = (size_t)(eoh + 4 - p) + (size_t)strtoul(cl, NULL, 10);
    if (total > n)
        return 0;
    *status = atoi(p + 9);
    return (int)total;
}

int bc_ws_message(hr_buf *msg, const hr_ws_frame *f, uint8_t *p, size_t max, const char **m,
                  size_t *mn)
{
    size_t n = (size_t)f->len;
    if (f->fin && hr_buf_pending(msg) == 0) {
        *m = (const char *)p;
        *mn = n;
        return 1;
    }
    if (hr_buf_pending(msg) + n > max)
        return -E2BIG;
    hr_buf_append(msg, p, n);
    if (!f->fin)
        return 0;
    *m = hr_buf_head(msg);
    *mn = hr_buf_pending(msg);
    return 1;
}

int bc_ws_close_reply(hr_buf *out, uint64_t *rng, const uint8_t *p, size_t n)
{
    int code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
    uint8_t reply[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    bc_ws_frame(out, rng, HR_WS_OP_CLOSE, reply, n >= 2 ? 2 : 0);
    return code;
}

int bc_ws_next(uint8_t *p, size_t n, size_t max, int rsv1_ok, hr_ws_frame *f)
{
    int r = hr_ws_frame_parse(p, n, f, rsv1_ok);
    if (r < 0)
        return -EPROTO;
    if (r > 0 && f->len > max)
        return -E2BIG;
    if (r == 0 || f->hdrlen + f->len > n)
        return 0;
    if (f->masked)
        hr_ws_mask(p + f->hdrlen, (size_t)f->len, f->mask, 0);
    return (int)(f->hdrlen + f->len);
}

void bc_feed(void *conn, const int *fd, hr_buf *in, uint8_t *p, size_t n, bc_input_fn input,
             uint64_t now)
{
    if (hr_buf_pending(in) == 0) {
        size_t used = input(conn, p, n, now);
        if (*fd >= 0 && used < n)
            hr_buf_append(in, p + used, n - used);
        return;
    }
    hr_buf_append(in, p, n);
    size_t used = input(conn, (uint8_t *)hr_buf_head(in), hr_buf_pending(in), now);
    if (*fd >= 0)
        hr_buf_consume(in, used);
}

int bc_read(void *conn, const int *fd, hr_buf *in, uint32_t ev, uint8_t *buf, size_t cap, int reads,
            bc_input_fn input, uint64_t now)
{
    int short_ok = ev && !(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
    for (int i = 0; i < reads && *fd >= 0; i++) {
        ssize_t n = recv(*fd, buf, cap, 0);
        if (n > 0) {
            bc_feed(conn, fd, in, buf, (size_t)n, input, now);
            if (short_ok && (size_t)n < cap)
                return 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        return n == 0 ? -EPIPE : -errno;
    }
    return *fd >= 0;
}

size_t bc_pad_payload(char *buf, size_t cap, int n, size_t size)
{
    size_t pad = size > (size_t)n + 2 ? size - (size_t)n - 2 : 0;
    if (pad > cap - (size_t)n - 3)
        pad = cap - (size_t)n - 3;
    memset(buf + n, 'x', pad);
    memcpy(buf + (size_t)n + pad, "\"}", 3);
    return (size_t)n + pad + 2;
}

int bc_fd_limit(unsigned long long need, unsigned long long *limit)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need && rl.rlim_max >= need) {
        rl.rlim_cur = need;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    *limit = (unsigned long long)rl.rlim_cur;
    return rl.rlim_cur < need ? -EMFILE : 0;
}
