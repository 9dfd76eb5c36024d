/*
 * client.c - the network side of `herald publish` and `herald tail` (see
 * cli.h): small blocking HTTP/1.1 and WebSocket clients over plain TCP.
 */
#include "cli/cli.h"
#include "common/common.h"
#include "common/ws_frame.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int hr_cli_target_parse(const hr_config *cfg, const char *url, hr_cli_target *t)
{
    const char *hp = url;
    if (!url) {
        const char *h = cfg->listen_host;
        if (!strcmp(h, "0.0.0.0") || !*h)
            h = "127.0.0.1";
        else if (!strcmp(h, "::"))
            h = "::1";
        if (cfg->listen_port == 0) {
            /* the server's port is chosen when it starts: only it knows */
            fprintf(stderr, "herald: the listen port is 0 (chosen by the system at start-up); "
                            "pass --url http://HOST:PORT with the port from its \"listening\" "
                            "log line\n");
            return -1;
        }
        snprintf(t->host, sizeof(t->host), "%s", h);
        snprintf(t->port, sizeof(t->port), "%d", cfg->listen_port);
        return 0;
    }
    if (!strncmp(hp, "http://", 7))
        hp += 7;
    else if (strstr(hp, "://")) {
        fprintf(stderr, "herald: --url must be http://HOST:PORT (no TLS in the CLI)\n");
        return -1;
    }
    const char *end = hp + strcspn(hp, "/");
    const char *colon = NULL;
    if (*hp == '[') {
        const char *close = memchr(hp, ']', (size_t)(end - hp));
        if (!close) {
            fprintf(stderr, "herald: bad --url\n");
            return -1;
        }
        snprintf(t->host, sizeof(t->host), "%.*s", (int)(close - hp - 1), hp + 1);
        colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = memchr(hp, ':', (size_t)(end - hp));
        snprintf(t->host, sizeof(t->host), "%.*s", (int)((colon ? colon : end) - hp), hp);
    }
    snprintf(t->port, sizeof(t->port), "%.*s", colon ? (int)(end - colon - 1) : 2,
             colon ? colon + 1 : "80");
    if (!t->host[0] || !t->port[0]) {
        fprintf(stderr, "herald: bad --url\n");
        return -1;
    }
    return 0;
}

static int dial(const hr_cli_target *t)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai, *p;
    int fd = -1, rc = getaddrinfo(t->host, t->port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "herald: %s:%s: %s\n", t->host, t->port, gai_strerror(rc));
        return -1;
    }
    for (p = ai; p && fd < 0; p = p->ai_next) {
        fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, p->ai_addr, p->ai_addrlen) < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        fprintf(stderr, "herald: cannot connect to %s:%s: %s\n", t->host, t->port, strerror(errno));
    return fd;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads the response head into b (up to the blank line); returns the
 * status, or -1. What follows the head stays in b after *head_len. */
static int read_head(int fd, hr_buf *b, size_t *head_len)
{
    char chunk[4096];
    for (;;) {
        char *end = b->data ? memmem(b->data, b->len, "\r\n\r\n", 4) : NULL;
        if (end) {
            *head_len = (size_t)(end - b->data) + 4;
            int status = 0;
            return sscanf(b->data, "HTTP/1.%*d %d", &status) == 1 ? status : -1;
        }
        if (b->len > 65536)
            return -1;
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        hr_buf_append(b, chunk, (size_t)n);
    }
}

/*---- herald publish --------------------------------------------------------*/

int hr_cli_http_publish(const hr_config *cfg, const hr_cli_target *t, const char *channel,
                        const char *json)
{
    json_error_t jerr;
    json_t *data = json_loads(json, JSON_DECODE_ANY, &jerr);
    if (!data) {
        fprintf(stderr, "herald publish: the data is not JSON: %s\n", jerr.text);
        return 2;
    }
    if (!cfg->napi_keys) {
        json_decref(data);
        fprintf(stderr, "herald publish: needs an API key (HERALD_API_KEY or --api-key)\n");
        return 2;
    }
    json_t *o = json_pack("{s:s, s:o}", "channel", channel, "data", data);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    hr_buf req = {0}, resp = {0};
    hr_buf_printf(&req,
                  "POST /api/v1/publish HTTP/1.1\r\nHost: %s:%s\r\nX-API-Key: %s\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n\r\n%s",
                  t->host, t->port, cfg->api_keys[0], strlen(body), body);
    free(body);
    int fd = dial(t), rc = 1;
    size_t head = 0;
    if (fd >= 0 && write_all(fd, req.data, req.len) == 0) {
        int status = read_head(fd, &resp, &head);
        char chunk[4096];
        ssize_t n;
        while ((n = recv(fd, chunk, sizeof(chunk), 0)) > 0) /* Connection: close */
            hr_buf_append(&resp, chunk, (size_t)n);
        if (status < 0) {
            fprintf(stderr, "herald publish: no HTTP answer from %s:%s\n", t->host, t->port);
        } else {
            FILE *out = status / 100 == 2 ? stdout : stderr;
            fprintf(out, "%.*s\n", (int)(resp.len - head), resp.data + head);
            rc = status / 100 == 2 ? 0 : 1;
        }
    }
    if (fd >= 0)
        close(fd);
    hr_buf_reset(&req);
    hr_buf_reset(&resp);
    return rc;
}

/*---- herald tail -----------------------------------------------------------*/

/* Sends one masked text frame (clients must mask, RFC 6455 §5.3). */
static int ws_send_text(int fd, const char *text)
{
    size_t len = strlen(text);
    unsigned char key[4], *frame = hr_malloc(HR_WS_HDR_MAX + len);
    hr_random_bytes(key, sizeof(key));
    size_t h = hr_ws_frame_header(frame, HR_WS_OP_TEXT, len, key);
    memcpy(frame + h, text, len);
    hr_ws_mask(frame + h, len, key, 0);
    int rc = write_all(fd, frame, h + len);
    free(frame);
    return rc;
}

/* Reads one frame, first from the bytes already in `in` (what followed the
 * handshake, or the previous frame), then from fd; *op receives the opcode.
 * Returns the malloc'ed payload (NUL-terminated) or NULL when the
 * connection ended or sent a frame that is malformed or over 64 MiB. */
static char *ws_read_frame(int fd, hr_buf *in, int *op, size_t *plen)
{
    for (;;) {
        hr_ws_frame f;
        int h = hr_ws_frame_parse((const unsigned char *)in->data, in->len, &f, 0);
        if (h < 0 || (h > 0 && f.len > (64u << 20)))
            return NULL;
        if (h > 0 && in->len - (size_t)h >= f.len) {
            char *payload = hr_strndup(in->data + h, (size_t)f.len);
            size_t used = (size_t)h + (size_t)f.len;
            memmove(in->data, in->data + used, in->len - used);
            in->len -= used;
            *op = f.opcode;
            *plen = (size_t)f.len;
            return payload;
        }
        char chunk[4096];
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        hr_buf_append(in, chunk, (size_t)n);
    }
}

int hr_cli_ws_tail(const hr_cli_target *t, const char *token, const char *channel)
{
    unsigned char rnd[16];
    char key[32], sub[512];
    hr_random_bytes(rnd, sizeof(rnd));
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t k = 0;
    for (size_t i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)rnd[i] << 16 | (uint32_t)rnd[i + 1] << 8 | rnd[i + 2];
        for (int s = 18; s >= 0; s -= 6)
            key[k++] = b64[(v >> s) & 63];
    }
    key[k++] = b64[rnd[15] >> 2];
    key[k++] = b64[(rnd[15] & 3) << 4];
    key[k++] = '=';
    key[k++] = '=';
    key[k] = '\0';

    int fd = dial(t);
    if (fd < 0)
        return 1;
    hr_buf req = {0}, resp = {0};
    hr_buf_printf(&req,
                  "GET /ws HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                  "Authorization: Bearer %s\r\n\r\n",
                  t->host, t->port, key, token);
    size_t head = 0;
    int status = write_all(fd, req.data, req.len) == 0 ? read_head(fd, &resp, &head) : -1;
    hr_buf_reset(&req);
    if (status != 101) {
        fprintf(stderr, "herald tail: the upgrade was refused (HTTP %d)\n", status);
        close(fd);
        hr_buf_reset(&resp);
        return 1;
    }
    memmove(resp.data, resp.data + head, resp.len - head);
    resp.len -= head;
    snprintf(sub, sizeof(sub), "{\"id\":1,\"op\":\"subscribe\",\"channel\":\"%s\"}", channel);
    int rc = ws_send_text(fd, sub) == 0 ? 0 : 1;
    for (int op; rc == 0;) {
        size_t plen;
        char *p = ws_read_frame(fd, &resp, &op, &plen);
        if (!p) {
            fprintf(stderr, "herald tail: the connection ended\n");
            rc = 1;
            break;
        }
        if (op == HR_WS_OP_CLOSE) {
            unsigned code = plen >= 2 ? ((unsigned char)p[0] << 8 | (unsigned char)p[1]) : 1005;
            fprintf(stderr, "herald tail: closed by the server (%u)\n", code);
            free(p);
            rc = code == 1000 || code == 1001 ? 0 : 1;
            break;
        }
        json_t *m = op == HR_WS_OP_TEXT ? json_loads(p, 0, NULL) : NULL;
        const char *push = json_string_value(json_object_get(m, "push"));
        json_t *err = json_object_get(m, "error");
        if (err) {
            fprintf(stderr, "herald tail: %s\n",
                    json_string_value(json_object_get(err, "message")));
            rc = 1;
        } else if (push && strcmp(push, "connected")) {
            printf("%s\n", p); /* message, join, leave, subscribed ... */
            fflush(stdout);
        } else if (json_object_get(m, "result")) {
            /* on stderr, so stdout stays one push per line: a script (or
             * the docs) can wait for this before it publishes */
            fprintf(stderr, "herald tail: subscribed to %s\n", channel);
        }
        json_decref(m);
        free(p);
    }
    close(fd);
    hr_buf_reset(&resp);
    return rc;
}
