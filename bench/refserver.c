/* herald-refserver - the plain baseline every Herald figure is reported next to.
 *
 * Deliberately naive, and speaks only what herald-loadgen uses of Herald's
 * protocol: WebSocket upgrade on /ws (any token accepted, then
 * {"push":"connected",...}), the subscribe/unsubscribe/publish/ping ops with
 * Herald's replies, {"push":"message","channel":C,"data":D} fan-out, and
 * POST /api/v1/publish on keep-alive (and pipelined) HTTP/1.1, plus
 * GET /healthz. One thread, epoll (edge-triggered), non-blocking sockets.
 *
 * Fan-out serialises and frames a publication once, then does one write()
 * per subscriber: no batching, no writev, no user-space queue unless the
 * socket is full. A queue over --out-queue bytes (1 MiB, as Herald) closes
 * the connection with 4008, so both servers shed slow consumers alike. */
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
#include <unistd.h>

#include <jansson.h>

#define MAX_HEAD 16384
#define MAX_MESSAGE 65536
#define MAX_BODY (1 << 20)
#define MAX_SUBS 512

/*---- state -------------------------------------------------------------------*/

typedef struct rconn rconn;
typedef struct channel channel;

typedef struct member { /* an entry of channel->m */
    rconn *c;
    uint32_t slot; /* index of this subscription in c->subs */
} member;

typedef struct sub { /* an entry of rconn->subs */
    channel *ch;
    uint32_t pos; /* index of this connection in ch->m */
} sub;

struct channel {
    char *name;
    channel *next; /* hash chain */
    member *m;
    uint32_t n, cap;
};

enum { C_HTTP, C_WS };

struct rconn {
    int fd, state, closing;
    int draining;      /* sending its last bytes, then a lingering close */
    int shut;          /* draining: our side is shut down, waiting for EOF */
    unsigned requests; /* HTTP requests served on this connection */
    uint64_t deadline; /* draining: close anyway at this time */
    size_t head_rem;   /* bytes at the head of `out` ending a frame partly sent */
    unsigned long id;
    hr_buf in, out, msg; /* unparsed input, unsent output, fragmented message */
    sub *subs;
    uint32_t nsubs, capsubs;
};

static struct {
    const char *listen, *api_key;
    size_t out_queue;
    unsigned close_after; /* close keep-alive connections after N requests (0: never) */
    int verbose;
} O = {"127.0.0.1:8090", NULL, 1 << 20, 0, 0};

static struct {
    int ep, lfd;
    channel **buckets;
    size_t nbuckets, nchannels;
    rconn **closing, **draining;
    size_t nclosing, capclosing, ndraining, capdraining;
    unsigned long next_id;
    volatile sig_atomic_t stop;
    uint8_t rbuf[256 * 1024];
} S;

/*---- output ------------------------------------------------------------------*/

#define DRAIN_NS 5000000000ull /* a dropped slow consumer gets 5 s to take its close */

static void close_later(rconn *c);

static int push_ptr(rconn ***arr, size_t *n, size_t *cap, rconn *c)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        rconn **p = realloc(*arr, nc * sizeof *p);
        if (!p)
            return -1;
        *arr = p;
        *cap = nc;
    }
    (*arr)[(*n)++] = c;
    return 0;
}

/* Accounts for `sent` bytes leaving the head of c->out (before they are
 * consumed), so head_rem always says how much of a partly sent frame is
 * left: the queue can then be dropped at a frame boundary. */
static void frames_sent(rconn *c, size_t sent)
{
    const uint8_t *p = (const uint8_t *)hr_buf_head(&c->out);
    size_t left = hr_buf_pending(&c->out);
    while (sent > 0) {
        if (c->head_rem == 0) {
            hr_ws_frame f;
            if (hr_ws_frame_parse(p, left, &f, 0) <= 0)
                return; /* not a frame (HTTP bytes): nothing to track */
            c->head_rem = f.hdrlen + (size_t)f.len;
        }
        size_t d = sent < c->head_rem ? sent : c->head_rem;
        c->head_rem -= d;
        sent -= d;
        p += d;
        left -= d;
    }
}

/* Accepts no more output or input; once the queue is out, shuts our side
 * and waits for the client's EOF (a lingering close: closing with unread
 * input would reset the connection and could destroy responses in flight).
 * sweep_draining() bounds the wait. */
static void drain_and_close(rconn *c)
{
    c->draining = 1;
    c->deadline = now_ns() + DRAIN_NS;
    if (push_ptr(&S.draining, &S.ndraining, &S.capdraining, c) < 0)
        close_later(c);
}

static void shut_when_flushed(rconn *c)
{
    if (c->draining && !c->shut && hr_buf_pending(&c->out) == 0) {
        shutdown(c->fd, SHUT_WR);
        c->shut = 1;
    }
}

/* Slow consumer: keep only the end of the frame already on the wire, queue a
 * 4008 close frame behind it, then drain. */
static void drop_slow_consumer(rconn *c)
{
    uint8_t close4008[HR_WS_CLOSE_MAX];
    c->out.len = c->out.off + c->head_rem;
    hr_buf_append(&c->out, close4008, hr_ws_close_frame(close4008, 4008, ""));
    drain_and_close(c);
}

/* Best effort, for a close frame on a connection being dropped at once. */
static void write_close_frame(rconn *c, int code)
{
    uint8_t f[HR_WS_CLOSE_MAX];
    ssize_t w = write(c->fd, f, hr_ws_close_frame(f, code, ""));
    (void)w;
}

/* One write() per call when nothing is queued; the rest (or everything, when
 * bytes are already waiting) is queued for EPOLLOUT. */
static void conn_write(rconn *c, const void *p, size_t n)
{
    if (c->closing || c->draining)
        return;
    if (hr_buf_pending(&c->out) == 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            close_later(c);
            return;
        }
        if (w > 0 && (size_t)w < n && c->state == C_WS)
            c->head_rem = n - (size_t)w; /* this frame is now partly sent */
        if (w > 0) {
            p = (const char *)p + w;
            n -= (size_t)w;
        }
        if (n > 0)
            hr_buf_append(&c->out, p, n); /* the rest of a frame on the wire is always kept */
        return;
    }
    if (hr_buf_pending(&c->out) + n > O.out_queue && c->state == C_WS)
        drop_slow_consumer(c);
    else
        hr_buf_append(&c->out, p, n);
}

static void conn_flush(rconn *c)
{
    while (!c->closing && hr_buf_pending(&c->out) > 0) {
        ssize_t w = write(c->fd, hr_buf_head(&c->out), hr_buf_pending(&c->out));
        if (w > 0) {
            if (c->state == C_WS)
                frames_sent(c, (size_t)w);
            hr_buf_consume(&c->out, (size_t)w);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            return;
        } else {
            close_later(c);
        }
    }
    shut_when_flushed(c);
}

/* Closes draining connections whose client did not finish in time. */
static void sweep_draining(void)
{
    uint64_t now = now_ns();
    size_t keep = 0;
    for (size_t i = 0; i < S.ndraining; i++) {
        rconn *c = S.draining[i];
        if (c->closing)
            continue; /* closed already: it leaves the list now */
        if (now >= c->deadline)
            close_later(c);
        else
            S.draining[keep++] = c;
    }
    S.ndraining = keep;
}

/* Writes one frame with a single conn_write (partial-frame tracking needs it). */
static void ws_write(rconn *c, int opcode, const void *p, size_t n)
{
    uint8_t hdr[HR_WS_HDR_MAX];
    size_t h = hr_ws_frame_header(hdr, opcode, n, NULL);
    char *buf = malloc(h + n);
    if (!buf) {
        close_later(c);
        return;
    }
    memcpy(buf, hdr, h);
    memcpy(buf + h, p, n);
    conn_write(c, buf, h + n);
    free(buf);
}

/*---- channels ------------------------------------------------------------------*/

static size_t hash_name(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static channel **channel_slot(const char *name)
{
    channel **pp = &S.buckets[hash_name(name) & (S.nbuckets - 1)];
    while (*pp && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void rehash(void)
{
    size_t nb = S.nbuckets * 2;
    channel **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* keep the longer chains */
    for (size_t i = 0; i < S.nbuckets; i++) {
        for (channel *ch = S.buckets[i], *next; ch; ch = next) {
            next = ch->next;
            size_t h = hash_name(ch->name) & (nb - 1);
            ch->next = b[h];
            b[h] = ch;
        }
    }
    free(S.buckets);
    S.buckets = b;
    S.nbuckets = nb;
}

static channel *channel_get(const char *name, int create)
{
    channel **pp = channel_slot(name);
    if (*pp || !create)
        return *pp;
    channel *ch = calloc(1, sizeof *ch);
    if (!ch || !(ch->name = strdup(name))) {
        free(ch);
        return NULL;
    }
    *pp = ch;
    if (++S.nchannels > S.nbuckets)
        rehash();
    return ch;
}

static void channel_drop_if_empty(channel *ch)
{
    if (ch->n > 0)
        return;
    channel **pp = channel_slot(ch->name);
    *pp = ch->next;
    S.nchannels--;
    free(ch->m);
    free(ch->name);
    free(ch);
}

static int grow(void **p, uint32_t *cap, size_t elem)
{
    uint32_t nc = *cap ? *cap * 2 : 4;
    void *q = realloc(*p, nc * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = nc;
    return 0;
}

/* Adds c to ch (once); both sides keep the other's index so removal is O(1). */
static int subscribe(rconn *c, channel *ch)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].ch == ch)
            return 0; /* subscribing twice is fine */
    if (c->nsubs >= MAX_SUBS)
        return -1;
    if ((ch->n == ch->cap && grow((void **)&ch->m, &ch->cap, sizeof *ch->m) < 0) ||
        (c->nsubs == c->capsubs && grow((void **)&c->subs, &c->capsubs, sizeof *c->subs) < 0))
        return -1;
    ch->m[ch->n] = (member){c, c->nsubs};
    c->subs[c->nsubs++] = (sub){ch, ch->n++};
    return 0;
}

/* Removes subscription `slot` of c by swapping the last entries into the
 * holes, fixing the back-references of the entries that moved. */
static void unsubscribe_slot(rconn *c, uint32_t slot)
{
    channel *ch = c->subs[slot].ch;
    uint32_t pos = c->subs[slot].pos;
    member last = ch->m[--ch->n];
    if (pos != ch->n) {
        ch->m[pos] = last;
        last.c->subs[last.slot].pos = pos;
    }
    sub lsub = c->subs[--c->nsubs];
    if (slot != c->nsubs) {
        c->subs[slot] = lsub;
        lsub.ch->m[lsub.pos].slot = slot;
    }
    channel_drop_if_empty(ch);
}

/* Serialises and frames the push once, then one write() per subscriber. */
static void fan_out(const char *channel_name, json_t *data)
{
    channel *ch = channel_get(channel_name, 0);
    if (!ch)
        return;
    char *d = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!d)
        return;
    static const char fmt[] = "{\"push\":\"message\",\"channel\":\"%s\",\"data\":%s}";
    size_t n = sizeof fmt - 1 - 4 + strlen(channel_name) + strlen(d); /* minus the two %s */
    char *frame = malloc(n + HR_WS_HDR_MAX + 1);
    if (frame) {
        size_t h = hr_ws_frame_header((uint8_t *)frame, HR_WS_OP_TEXT, n, NULL);
        int w = snprintf(frame + h, n + 1, fmt, channel_name, d);
        for (uint32_t i = 0; w == (int)n && i < ch->n; i++)
            conn_write(ch->m[i].c, frame, h + n);
    }
    free(frame);
    free(d);
}

/*---- connection lifecycle ------------------------------------------------------*/

/* Closing is deferred to the end of the event batch: a fan-out may still be
 * walking the channel arrays this connection is in. */
static void close_later(rconn *c)
{
    if (c->closing)
        return;
    if (push_ptr(&S.closing, &S.nclosing, &S.capclosing, c) == 0)
        c->closing = 1; /* else retried by the next error */
}

static void conn_free(rconn *c)
{
    while (c->nsubs > 0)
        unsubscribe_slot(c, c->nsubs - 1);
    close(c->fd);
    hr_buf_reset(&c->in);
    hr_buf_reset(&c->out);
    hr_buf_reset(&c->msg);
    free(c->subs);
    free(c);
}

static void reap_closing(void)
{
    for (size_t i = 0; i < S.nclosing; i++)
        conn_free(S.closing[i]);
    S.nclosing = 0;
}

/*---- WebSocket protocol -----------------------------------------------------------*/

static int valid_channel(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 255)
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@=,-") == n;
}

static void reply(rconn *c, json_int_t id, const char *result)
{
    char buf[400];
    int n = snprintf(buf, sizeof buf, "{\"id\":%lld,\"result\":%s}", (long long)id, result);
    ws_write(c, HR_WS_OP_TEXT, buf, (size_t)n);
}

static void reply_error(rconn *c, json_int_t id, const char *code, const char *msg)
{
    char buf[400];
    int n = id > 0 ? snprintf(buf, sizeof buf,
                              "{\"id\":%lld,\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                              (long long)id, code, msg)
                   : snprintf(buf, sizeof buf, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                              code, msg);
    ws_write(c, HR_WS_OP_TEXT, buf, (size_t)n);
}

static void op_subscribe(rconn *c, json_int_t id, const char *name)
{
    channel *ch = channel_get(name, 1);
    if (!ch || subscribe(c, ch) < 0) {
        if (ch)
            channel_drop_if_empty(ch);
        reply_error(c, id, "too_large", "too many subscriptions");
        return;
    }
    char res[300];
    snprintf(res, sizeof res, "{\"channel\":\"%s\"}", name);
    reply(c, id, res);
}

static void op_unsubscribe(rconn *c, json_int_t id, const char *name)
{
    channel *ch = channel_get(name, 0);
    for (uint32_t i = 0; ch && i < c->nsubs; i++) {
        if (c->subs[i].ch == ch) {
            unsubscribe_slot(c, i);
            break;
        }
    }
    reply(c, id, "{}");
}

static void on_command(rconn *c, const char *p, size_t n)
{
    json_t *root = json_loadb(p, n, 0, NULL);
    json_t *jid = json_object_get(root, "id");
    json_int_t id = json_is_integer(jid) ? json_integer_value(jid) : 0;
    const char *op = json_string_value(json_object_get(root, "op"));
    const char *chn = json_string_value(json_object_get(root, "channel"));
    if (!json_is_object(root) || id <= 0 || !op)
        reply_error(c, id, "bad_request", "malformed command");
    else if (!strcmp(op, "ping"))
        reply(c, id, "{}");
    else if (!chn || !valid_channel(chn))
        reply_error(c, id, "bad_request", "invalid channel");
    else if (!strcmp(op, "subscribe"))
        op_subscribe(c, id, chn);
    else if (!strcmp(op, "unsubscribe"))
        op_unsubscribe(c, id, chn);
    else if (!strcmp(op, "publish") && json_object_get(root, "data")) {
        fan_out(chn, json_object_get(root, "data"));
        reply(c, id, "{}");
    } else
        reply_error(c, id, "bad_request", "unknown op or missing data");
    json_decref(root);
}

static void on_ws_frame(rconn *c, const hr_ws_frame *f, uint8_t *p)
{
    size_t n = (size_t)f->len;
    if (f->opcode == HR_WS_OP_TEXT || f->opcode == HR_WS_OP_CONT) {
        if (f->fin && hr_buf_pending(&c->msg) == 0) {
            on_command(c, (const char *)p, n);
        } else if (hr_buf_pending(&c->msg) + n > MAX_MESSAGE) {
            write_close_frame(c, 1009);
            close_later(c);
        } else if (hr_buf_append(&c->msg, p, n), f->fin) {
            on_command(c, hr_buf_head(&c->msg), hr_buf_pending(&c->msg));
            hr_buf_consume(&c->msg, hr_buf_pending(&c->msg));
        }
    } else if (f->opcode == HR_WS_OP_PING) {
        ws_write(c, HR_WS_OP_PONG, p, n);
    } else if (f->opcode == HR_WS_OP_CLOSE) {
        write_close_frame(c, n >= 2 ? (p[0] << 8 | p[1]) : 1000);
        close_later(c);
    } else if (f->opcode == HR_WS_OP_BINARY) {
        write_close_frame(c, 1003);
        close_later(c);
    }
}

/* Handles complete frames in p[0..n); returns the bytes consumed. */
static size_t ws_input(rconn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n && !c->closing) {
        hr_ws_frame f;
        int r = hr_ws_frame_parse(p + off, n - off, &f, 0);
        if (r < 0 || (r > 0 && (!f.masked || f.len > MAX_MESSAGE))) {
            write_close_frame(c, r < 0 || !f.masked ? 1002 : 1009);
            close_later(c);
            break;
        }
        if (r == 0 || f.hdrlen + f.len > n - off)
            break;
        uint8_t *payload = p + off + f.hdrlen;
        hr_ws_mask(payload, (size_t)f.len, f.mask, 0);
        off += f.hdrlen + (size_t)f.len;
        on_ws_frame(c, &f, payload);
    }
    return off;
}

/*---- HTTP ------------------------------------------------------------------------*/

static int last_request(const rconn *c)
{
    return O.close_after > 0 && c->requests >= O.close_after;
}

static void http_respond(rconn *c, int status, const char *reason, const char *body)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "%s\r\n%s",
                     status, reason, strlen(body), last_request(c) ? "Connection: close\r\n" : "",
                     body);
    conn_write(c, buf, (size_t)n);
}

static void upgrade(rconn *c, const char *key, size_t keylen)
{
    char accept[29], buf[512], push[128];
    ws_accept_key(key, keylen, accept);
    int pn = snprintf(push, sizeof push,
                      "{\"push\":\"connected\",\"client\":\"ref.%lu\",\"user\":\"bench\","
                      "\"expires_at\":null}",
                      c->id);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    n += (int)hr_ws_frame_header((uint8_t *)buf + n, HR_WS_OP_TEXT, (uint64_t)pn, NULL);
    memcpy(buf + n, push, (size_t)pn);
    conn_write(c, buf, (size_t)n + (size_t)pn);
    c->state = C_WS;
}

static void rest_publish(rconn *c, const char *head, const char *eoh, const char *body, size_t n)
{
    size_t klen = 0;
    const char *key = http_header(head, eoh, "X-API-Key", &klen);
    if (O.api_key && (!key || klen != strlen(O.api_key) || memcmp(key, O.api_key, klen))) {
        http_respond(c, 401, "Unauthorized", "{\"status\":401}");
        return;
    }
    json_t *root = json_loadb(body, n, 0, NULL);
    const char *chn = json_string_value(json_object_get(root, "channel"));
    json_t *data = json_object_get(root, "data");
    if (!root)
        http_respond(c, 400, "Bad Request", "{\"status\":400}");
    else if (!chn || !valid_channel(chn) || !data)
        http_respond(c, 422, "Unprocessable Content", "{\"status\":422}");
    else {
        fan_out(chn, data);
        http_respond(c, 200, "OK", "{}");
    }
    json_decref(root);
}

/* Serves one request at p (its head ends at eoh). Returns the bytes it
 * used, 0 if its body is incomplete. */
static size_t http_request(rconn *c, const char *p, size_t n, const char *eoh)
{
    size_t head = (size_t)(eoh + 4 - p), vlen = 0;
    const char *cl = http_header(p, eoh + 2, "Content-Length", &vlen);
    size_t body = cl ? strtoul(cl, NULL, 10) : 0;
    if (body > MAX_BODY) {
        http_respond(c, 413, "Content Too Large", "{\"status\":413}");
        close_later(c);
        return n;
    }
    if (head + body > n)
        return 0;
    const char *key = http_header(p, eoh + 2, "Sec-WebSocket-Key", &vlen);
    c->requests++;
    if (!strncmp(p, "GET /ws", 7) && key)
        upgrade(c, key, vlen);
    else if (!strncmp(p, "POST /api/v1/publish ", 21))
        rest_publish(c, p, eoh + 2, p + head, body);
    else if (!strncmp(p, "GET /healthz ", 13))
        http_respond(c, 200, "OK", "{\"status\":\"ok\"}");
    else
        http_respond(c, 404, "Not Found", "{\"status\":404}");
    if (c->state == C_HTTP && last_request(c))
        drain_and_close(c); /* the rest of a pipeline is not served */
    shut_when_flushed(c);
    return head + body;
}

/* Serves every complete (pipelined) request; after an upgrade, the rest of
 * the bytes are WebSocket frames. */
static size_t http_input(rconn *c, char *p, size_t n)
{
    size_t off = 0;
    while (off < n && !c->closing && !c->draining && c->state == C_HTTP) {
        const char *eoh = memmem(p + off, n - off, "\r\n\r\n", 4);
        if (!eoh) {
            if (n - off > MAX_HEAD)
                close_later(c);
            break;
        }
        size_t used = http_request(c, p + off, n - off, eoh);
        if (used == 0)
            break;
        off += used;
    }
    if (c->state == C_WS && !c->closing)
        off += ws_input(c, (uint8_t *)p + off, n - off);
    return off;
}

static size_t conn_input(rconn *c, uint8_t *p, size_t n)
{
    if (c->draining)
        return n; /* discarded until the client's EOF */
    return c->state == C_HTTP ? http_input(c, (char *)p, n) : ws_input(c, p, n);
}

static void on_readable(rconn *c)
{
    while (!c->closing) {
        ssize_t n = read(c->fd, S.rbuf, sizeof S.rbuf);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            close_later(c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            continue;
        }
        if (hr_buf_pending(&c->in) == 0) {
            size_t used = conn_input(c, S.rbuf, (size_t)n);
            if (!c->closing && used < (size_t)n)
                hr_buf_append(&c->in, S.rbuf + used, (size_t)n - used);
        } else {
            hr_buf_append(&c->in, S.rbuf, (size_t)n);
            size_t used = conn_input(c, (uint8_t *)hr_buf_head(&c->in), hr_buf_pending(&c->in));
            if (!c->closing)
                hr_buf_consume(&c->in, used);
        }
    }
}

/*---- listener and loop ------------------------------------------------------------*/

static void on_accept(void)
{
    for (int i = 0; i < 1024; i++) {
        int fd = accept4(S.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && O.verbose)
                perror("refserver: accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        rconn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->id = ++S.next_id;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        epoll_ctl(S.ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static int open_listener(void)
{
    char host[64] = "127.0.0.1";
    const char *colon = strrchr(O.listen, ':');
    if (!colon || (size_t)(colon - O.listen) >= sizeof host)
        return -1;
    if (colon > O.listen) {
        memcpy(host, O.listen, (size_t)(colon - O.listen));
        host[colon - O.listen] = '\0';
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(S.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(S.lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(S.lfd, 4096) < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    return epoll_ctl(S.ep, EPOLL_CTL_ADD, S.lfd, &ev);
}

static void on_signal(int sig)
{
    (void)sig;
    S.stop = 1;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-v")) {
            O.verbose = 1;
            continue;
        }
        if (!v || (strcmp(a, "--listen") && strcmp(a, "--api-key") && strcmp(a, "--out-queue") &&
                   strcmp(a, "--close-after"))) {
            fprintf(stderr, "usage: herald-refserver [--listen HOST:PORT (127.0.0.1:8090)] "
                            "[--api-key K] [--out-queue BYTES (1048576)] [--close-after N] [-v]\n");
            return -1;
        }
        if (!strcmp(a, "--listen"))
            O.listen = v;
        else if (!strcmp(a, "--api-key"))
            O.api_key = v;
        else if (!strcmp(a, "--out-queue"))
            O.out_queue = strtoul(v, NULL, 10);
        else
            O.close_after = (unsigned)strtoul(v, NULL, 10);
        i++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) < 0)
        return 2;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    S.nbuckets = 1024;
    S.buckets = calloc(S.nbuckets, sizeof *S.buckets);
    S.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!S.buckets || open_listener() < 0) {
        fprintf(stderr, "herald-refserver: cannot listen on %s: %s\n", O.listen, strerror(errno));
        return 1;
    }
    static struct epoll_event evs[1024];
    while (!S.stop) {
        int n = epoll_wait(S.ep, evs, 1024, 1000);
        for (int i = 0; i < n; i++) {
            rconn *c = evs[i].data.ptr;
            if (!c) {
                on_accept();
                continue;
            }
            if (!c->closing && (evs[i].events & EPOLLOUT))
                conn_flush(c);
            if (!c->closing && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                on_readable(c);
        }
        sweep_draining(); /* before reaping: the list must not hold freed connections */
        reap_closing();
    }
    return 0;
}
