/*
 * stream.c - the connection of a Server-Sent Events or HTTP streaming
 * response (see stream.h): the text frame made once per message, the
 * recovery token, writing around lws 4.1.6, the keep-alive and the probe
 * that tells a gone client (see client_gone). Both transports share every
 * part and differ only in a few format strings. How a stream opens - the
 * request's checks and the connect proxy - is stream_open.c's.
 */
#include "gateway/stream_internal.h"
#include "common/log.h"
#include "gateway/api.h"
#include "gateway/proto.h"
#include "gateway/ws_conn.h" /* HR_SCRATCH: the loop's scratch buffer */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Seconds between checks that the client is still there (see probe). */
#define HR_STREAM_PROBE_S 5
/* ... and while its rx flow is on (a write pending, a close waiting): a
 * client that sends anything then would make the loop spin (see "Reading
 * and writing"), so it is looked for often, and dropped. */
#define HR_STREAM_RX_PROBE_US 100000u
/* What a reconnecting EventSource waits (SPEC §9: retry: 2000). */
#define HR_SSE_RETRY "retry: 2000\n\n"

/* A history channel's position as the client has seen it. */
typedef struct stream_pos {
    char epoch[CHAN_EPOCH_MAX];
    uint64_t offset;
} stream_pos;

typedef struct hr_stream_conn {
    hr_conn c;             /* first: hr_conn * and hr_stream_conn * convert */
    unsigned sse : 1;      /* text/event-stream, else NDJSON */
    unsigned ping_due : 1; /* a keep-alive waits to be written */
    unsigned tls : 1;      /* written from the writeable callback only (h2 too) */
    hr_map *pos;           /* history channel -> stream_pos*, NULL until the first */
    uint64_t ping_us;      /* the next keep-alive */
    uint64_t probe_us;     /* the next check that the client is there */
} hr_stream_conn;

static hr_stream_conn *st_of(hr_conn *c)
{
    return (hr_stream_conn *)c;
}

/*---- A message's text frame, made once ------------------------------------*/

enum { K_OTHER, K_MESSAGE, K_SUBSCRIBED, K_UNSUBSCRIBED, K_RAW };

/* Stored on the message (chan_msg.tframe), shared by every stream
 * connection it goes to: b holds "event: <name>\ndata: <json>\n" with the
 * JSON's line breaks (whitespace in valid JSON) turned into spaces, so the
 * JSON at json_at is one line for NDJSON too. What moves a position is
 * read once here. K_RAW: b is written as it is (SSE only). */
typedef struct tframe {
    size_t len, json_at, json_len; /* json_len: up to and with the closing '}' */
    uint64_t offset;               /* K_MESSAGE: its offset; K_SUBSCRIBED: the position */
    int kind;
    int has_pos; /* K_SUBSCRIBED of a history channel (epoch set) */
    char epoch[CHAN_EPOCH_MAX];
    const char *channel; /* inside b, after the frame; NULL when none */
    unsigned char b[];
} tframe;

static int kind_of(const char *push)
{
    if (!strcmp(push, "message"))
        return K_MESSAGE;
    if (!strcmp(push, "subscribed"))
        return K_SUBSCRIBED;
    if (!strcmp(push, "unsubscribed"))
        return K_UNSUBSCRIBED;
    return K_OTHER;
}

/* An event name as SSE carries it: the push's name when it is a plain
 * word, else "message". */
static const char *event_name(const char *push)
{
    if (!push || !*push || strlen(push) > 32 ||
        strspn(push, "abcdefghijklmnopqrstuvwxyz_") != strlen(push))
        return "message";
    return push;
}

static tframe *tframe_build(const char *event, const char *json, size_t len, int kind,
                            const char *channel, const char *epoch, uint64_t offset)
{
    static const char p1[] = "event: ", p2[] = "\ndata: ";
    size_t el = strlen(event), cl = channel ? strlen(channel) + 1 : 0;
    while (len && strchr(" \t\r\n", json[len - 1]))
        len--; /* NDJSON appends after the closing brace */
    size_t flen = sizeof(p1) - 1 + el + sizeof(p2) - 1 + len + 1;
    tframe *t = hr_calloc(1, sizeof(*t) + flen + cl);
    unsigned char *w = t->b;
    memcpy(w, p1, sizeof(p1) - 1), w += sizeof(p1) - 1;
    memcpy(w, event, el), w += el;
    memcpy(w, p2, sizeof(p2) - 1), w += sizeof(p2) - 1;
    t->json_at = (size_t)(w - t->b);
    for (size_t i = 0; i < len; i++)
        *w++ = json[i] == '\n' || json[i] == '\r' ? ' ' : (unsigned char)json[i];
    *w++ = '\n';
    t->len = flen;
    t->json_len = len;
    t->kind = kind;
    t->offset = offset;
    if (epoch) {
        snprintf(t->epoch, sizeof(t->epoch), "%s", epoch);
        t->has_pos = 1;
    }
    if (channel) {
        memcpy(w, channel, cl);
        t->channel = (const char *)w;
    }
    return t;
}

/* The frame of m, from its text: a publication, join or leave of the
 * layer starts {"push":"<name>" (msg.c); anything else - the pushes a
 * connection is sent alone, a backend's push in another key order - is
 * parsed, once. */
static tframe *tframe_parse(const chan_msg *m)
{
    static const char pre[] = "{\"push\":\"";
    const char *p = chan_msg_payload(m);
    char name[33];
    if (m->channel && m->len > sizeof(pre) && !memcmp(p, pre, sizeof(pre) - 1)) {
        const char *q = p + sizeof(pre) - 1, *e = memchr(q, '"', m->len - (sizeof(pre) - 1));
        if (e && (size_t)(e - q) < sizeof(name)) {
            memcpy(name, q, (size_t)(e - q));
            name[e - q] = '\0';
            int k = kind_of(name);
            return tframe_build(event_name(name), p, m->len, k, m->channel, NULL,
                                k == K_MESSAGE ? m->offset : 0);
        }
    }
    json_t *o = json_loadb(p, m->len, JSON_ALLOW_NUL, NULL);
    const char *push = json_string_value(json_object_get(o, "push"));
    const char *ch = json_string_value(json_object_get(o, "channel"));
    const char *epoch = json_string_value(json_object_get(o, "epoch"));
    json_t *off = json_object_get(o, "offset");
    uint64_t offset =
        json_is_integer(off) && json_integer_value(off) > 0 ? (uint64_t)json_integer_value(off) : 0;
    int k = push ? kind_of(push) : K_OTHER;
    tframe *t = tframe_build(
        event_name(push), p, m->len, k, m->channel ? m->channel : ch,
        k == K_SUBSCRIBED && epoch && strlen(epoch) < CHAN_EPOCH_MAX ? epoch : NULL, offset);
    json_decref(o);
    return t;
}

/* Publishes t as m's frame unless another thread was first. */
static const tframe *tframe_set(chan_msg *m, tframe *t)
{
    void *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&m->tframe, &expected, t, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        free(t);
        return expected;
    }
    return t;
}

static const tframe *tframe_of(chan_msg *m)
{
    const tframe *t = atomic_load_explicit(&m->tframe, memory_order_acquire);
    return t ? t : tframe_set(m, tframe_parse(m));
}

/*---- The recovery token ----------------------------------------------------*/

/* <channel>~<epoch>~<offset>, joined by '!': neither character is in a
 * channel name or an epoch, and neither needs escaping in a URL or JSON. */
static size_t token_build(const hr_stream_conn *s, char *out, size_t cap)
{
    size_t used = 0;
    const char *key;
    size_t klen;
    void *val;
    out[0] = '\0';
    if (!s->pos)
        return 0;
    for (size_t it = 0; hr_map_next(s->pos, &it, &key, &klen, &val);) {
        const stream_pos *p = val;
        int n = snprintf(out + used, cap - used, "%s%.*s~%s~%" PRIu64, used ? "!" : "", (int)klen,
                         key, p->epoch, p->offset);
        if (n < 0 || (size_t)n >= cap - used) {
            out[0] = '\0'; /* too long to hand out: the next reconnect starts afresh */
            return 0;
        }
        used += (size_t)n;
    }
    return used;
}

int hr_stream_token_parse(const char *token, size_t max_channel_len, hr_map **out)
{
    *out = NULL;
    if (!*token)
        return 0;
    if (strlen(token) > HR_STREAM_TOKEN_MAX)
        return -EINVAL;
    hr_map *m = hr_map_new(free);
    for (const char *p = token; *p;) {
        size_t n = strcspn(p, "!");
        const char *t1 = memchr(p, '~', n),
                   *t2 = t1 ? memchr(t1 + 1, '~', n - (size_t)(t1 + 1 - p)) : NULL;
        const char *num = t2 ? t2 + 1 : NULL, *end = p + n;
        size_t elen = t2 ? (size_t)(t2 - t1 - 1) : 0;
        uint64_t off = 0;
        int ok = t2 && chan_name_valid(p, (size_t)(t1 - p), max_channel_len) && elen > 0 &&
                 elen < CHAN_EPOCH_MAX && num < end && (size_t)(end - num) <= 19 &&
                 strspn(num, "0123456789") >= (size_t)(end - num);
        if (ok) {
            for (const char *d = num; d < end; d++)
                off = off * 10 + (uint64_t)(*d - '0');
        }
        if (!ok || hr_map_get(m, p, (size_t)(t1 - p))) {
            hr_map_free(m);
            return -EINVAL;
        }
        chan_pos *pos = hr_calloc(1, sizeof(*pos));
        memcpy(pos->epoch, t1 + 1, elen);
        pos->offset = off;
        hr_map_put(m, p, (size_t)(t1 - p), pos);
        p = *end ? end + 1 : end;
        if (*end && !*p) { /* a trailing '!' */
            hr_map_free(m);
            return -EINVAL;
        }
    }
    *out = m;
    return 0;
}

/* What writing t does to the connection's positions. Idempotent (a
 * message whose event did not fit this write is applied again at the
 * next). Returns 1 when the token changed. */
static int pos_apply(hr_stream_conn *s, const tframe *t)
{
    stream_pos *p;
    if (!t->channel)
        return 0;
    size_t cl = strlen(t->channel);
    switch (t->kind) {
    case K_SUBSCRIBED:
        if (!t->has_pos)
            return 0;
        if (!s->pos)
            s->pos = hr_map_new(free);
        if (!(p = hr_map_get(s->pos, t->channel, cl))) {
            p = hr_calloc(1, sizeof(*p));
            hr_map_put(s->pos, t->channel, cl, p);
        }
        snprintf(p->epoch, sizeof(p->epoch), "%s", t->epoch);
        p->offset = t->offset;
        return 1;
    case K_MESSAGE:
        if (!t->offset || !s->pos || !(p = hr_map_get(s->pos, t->channel, cl)))
            return 0;
        p->offset = t->offset;
        return 1;
    case K_UNSUBSCRIBED:
        if (!s->pos || !(p = hr_map_del(s->pos, t->channel, cl)))
            return 0;
        free(p);
        return 1;
    default:
        return 0;
    }
}

/*---- Framing and writing (hr_conn_ops) -------------------------------------*/

/* The shared bytes of m for this connection (what counts against the
 * queue's bound): the SSE event without its id, or the NDJSON line. */
static const unsigned char *st_frame(const hr_conn *c, const chan_msg *m, size_t *len)
{
    const tframe *t = atomic_load_explicit(&((chan_msg *)m)->tframe, memory_order_acquire);
    if (((const hr_stream_conn *)c)->sse || t->kind == K_RAW) {
        *len = t->kind == K_RAW && !((const hr_stream_conn *)c)->sse ? 0 : t->len;
        return t->b;
    }
    *len = t->json_len + 1;
    return t->b + t->json_at;
}

static size_t st_queued(hr_conn *c, chan_msg *m)
{
    size_t len;
    tframe_of(m);
    st_frame(c, m, &len);
    return len;
}

/* Writes the event of t with token (has_id: an id goes with it) into out,
 * or only measures it (out NULL). */
static size_t event_write(const hr_stream_conn *s, const tframe *t, int has_id, const char *token,
                          size_t tlen, unsigned char *out)
{
    size_t n;
    if (t->kind == K_RAW) {
        if (out && s->sse)
            memcpy(out, t->b, t->len);
        return s->sse ? t->len : 0;
    }
    if (s->sse) {
        n = t->len + (has_id ? 5 + tlen : 0) + 1;
        if (out) {
            memcpy(out, t->b, t->len);
            out += t->len;
            if (has_id) {
                memcpy(out, "id: ", 4);
                memcpy(out + 4, token, tlen);
                out[4 + tlen] = '\n';
                out += 5 + tlen;
            }
            *out = '\n';
        }
        return n;
    }
    const unsigned char *json = t->b + t->json_at;
    size_t jl = t->json_len;
    int obj = has_id && jl >= 2 && json[jl - 1] == '}';
    n = obj ? jl - 1 + (jl > 2 ? 1 : 0) + 6 + tlen + 2 + 1 : jl + 1;
    if (out) {
        if (!obj) {
            memcpy(out, json, jl);
            out[jl] = '\n';
        } else {
            memcpy(out, json, jl - 1);
            out += jl - 1;
            if (jl > 2)
                *out++ = ',';
            memcpy(out, "\"id\":\"", 6);
            memcpy(out + 6, token, tlen);
            memcpy(out + 6 + tlen, "\"}\n", 3);
        }
    }
    return n;
}

static const char sse_ping[] = ": ping\n\n", ndjson_ping[] = "{\"push\":\"ping\"}\n";

/* Moves queued events (and a keep-alive that is due) into out, at most cap
 * bytes; an event larger than cap alone goes into *heap (LWS_PRE bytes of
 * headroom, the caller frees it). Returns the bytes to write, which start
 * at *start. */
static size_t gather(hr_stream_conn *s, unsigned char *out, size_t cap, unsigned char **heap,
                     const unsigned char **start, uint32_t *nev, uint64_t now_us)
{
    hr_conn *c = &s->c;
    char token[HR_STREAM_TOKEN_MAX + 1];
    size_t used = 0;
    *heap = NULL;
    *start = out;
    *nev = 0;
    if (s->ping_due) {
        const char *p = s->sse ? sse_ping : ndjson_ping;
        size_t pl = strlen(p);
        memcpy(out, p, pl);
        used = pl;
        s->ping_due = 0;
    }
    while (c->qlen) {
        chan_msg *m = hr_conn_head(c);
        const tframe *t = atomic_load_explicit(&m->tframe, memory_order_acquire);
        int has_id = pos_apply(s, t);
        size_t tlen = has_id ? token_build(s, token, sizeof(token)) : 0;
        size_t n = event_write(s, t, has_id, token, tlen, NULL), flen;
        unsigned char *dst = out + used;
        if (used + n > cap) {
            if (used)
                break; /* the rest at the next write */
            *heap = hr_malloc(LWS_PRE + n);
            dst = *heap + LWS_PRE;
            *start = dst;
        }
        event_write(s, t, has_id, token, tlen, dst);
        used += n;
        st_frame(c, m, &flen);
        hr_conn_sent(c, m, now_us);
        chan_msg_unref(hr_conn_pop(c, flen));
        (*nev)++;
        if (*heap)
            break;
    }
    return used;
}

/*
 * Reading and writing, around lws 4.1.6. lws does not read an HTTP
 * connection whose transaction is still going (state DOING_TRANSACTION),
 * and the loop is level-triggered: a stream socket that became readable -
 * its client closed it, or sent anything - made the loop spin at 100% CPU.
 * So a stream's rx flow is off (as for a request a worker holds, http.c).
 * But with rx flow off lws services no POLLOUT either: no writeable
 * callback, and a partial write it keeps would never be flushed (and its
 * POLLOUT would spin). So rx flow is on only while lws holds a partial
 * write of ours (choked) or a close waits for its writeable callback; the
 * rest of the time bytes leave with one send(2) (hr_conn_write_bytes) and
 * the connection itself checks that its client is still there (see
 * client_gone).
 */

static void program(hr_stream_conn *s);

/* Waits for the writeable callback, which needs rx flow on. */
static void want_writeable(hr_conn *c)
{
    lws_rx_flow_control(c->wsi, 1);
    lws_callback_on_writable(c->wsi);
}

/* Writes what is queued (and a due keep-alive), a scratch's worth per
 * send, until the queue is empty or the socket takes no more. Returns 0,
 * or -1 when the socket failed. */
static int stream_send(hr_stream_conn *s, uint64_t now_us)
{
    hr_conn *c = &s->c;
    hr_worker *w = c->w;
    int rc = 0;
    while (rc == 0 && !c->choked && (c->qlen || s->ping_due)) {
        unsigned char *heap;
        const unsigned char *buf;
        uint32_t n;
        size_t len = gather(s, w->scratch + LWS_PRE, HR_SCRATCH, &heap, &buf, &n, now_us);
        rc = len ? hr_conn_write_bytes(c, buf, len) : 0;
        free(heap);
        HR_INC(&w->stats, writes, 1);
        HR_INC(&w->stats, messages_out, n);
        HR_INC(&w->stats, bytes_out, len);
    }
    if (c->choked) {
        lws_rx_flow_control(c->wsi, 1); /* for its writeable callback */
        program(s);                     /* and the quick probe while it is on */
    }
    hr_conn_shrink(c);
    return rc;
}

static int st_write(hr_conn *c, uint64_t now_us)
{
    return stream_send(st_of(c), now_us);
}

/* Carried out in the writeable callback: what is queued (with flush), the
 * close event, then the connection ends. */
static void st_closing(hr_conn *c)
{
    want_writeable(c);
    program(st_of(c)); /* the backstop is conn.c's, on the wheel */
}

/* One lws timer per socket serves the keep-alive and the probe (the
 * connection's deadline is on conn.c's wheel): it is set for whichever
 * comes first. Never LWS_SET_TIMER_USEC_CANCEL (lws 4.1.6 schedules it in
 * the past). */
static void program(hr_stream_conn *s)
{
    uint64_t now = hr_now_us(), next = s->ping_us < s->probe_us ? s->ping_us : s->probe_us;
    if ((s->c.choked || s->c.close_code) && now + HR_STREAM_RX_PROBE_US < next)
        next = now + HR_STREAM_RX_PROBE_US;
    lws_set_timer_usecs(s->c.wsi, next > now ? (lws_usec_t)(next - now) : 1);
    if (!s->c.w->in_lws) /* armed from a proxy's answer: lws must look again (ws_conn.c) */
        lws_cancel_service_pt(s->c.wsi);
}

static const hr_conn_ops sse_ops = {
    .transport = "sse",
    .frame = st_frame,
    .queued = st_queued,
    .write = st_write,
    .closing = st_closing,
    .deadline = hr_api_deadline, /* the refresh proxy may extend the session */
};

static const hr_conn_ops ndjson_ops = {
    .transport = "stream",
    .frame = st_frame,
    .queued = st_queued,
    .write = st_write,
    .closing = st_closing,
    .deadline = hr_api_deadline, /* the refresh proxy may extend the session */
};

int hr_stream_owns(const hr_pss *pss)
{
    return pss && pss->conn && (pss->conn->ops == &sse_ops || pss->conn->ops == &ndjson_ops);
}

/*---- The protocol callback's events ----------------------------------------*/

/* The stream's last event: why it ends, as the WebSocket close code. */
static void write_close_event(hr_stream_conn *s)
{
    hr_conn *c = &s->c;
    json_t *o = json_pack("{s:s, s:i, s:s}", "push", "close", "code", c->close_code, "reason",
                          c->close_reason ? c->close_reason : "");
    char *j = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    unsigned char buf[LWS_PRE + 512], *p = buf + LWS_PRE;
    int n = snprintf((char *)p, sizeof(buf) - LWS_PRE,
                     s->sse ? "event: close\ndata: %s\n\n" : "%s\n", j);
    free(j);
    if (n <= 0 || (size_t)n >= sizeof(buf) - LWS_PRE)
        return;
    if (s->tls)
        lws_write(c->wsi, p, (size_t)n, LWS_WRITE_RAW);
    else
        send(lws_get_socket_fd(c->wsi), p, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

int hr_stream_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_stream_conn *s = (hr_stream_conn *)pss->conn;
    (void)w;
    s->c.choked = 0;
    if (s->c.close_code && (!s->c.close_flush || s->c.qlen == 0)) {
        write_close_event(s);
        return -1; /* the response ends with the connection */
    }
    if (!s->c.close_code)
        lws_rx_flow_control(wsi, 0); /* applied when this callback returns */
    int rc = stream_send(s, hr_now_us());
    if (s->c.close_code && !s->c.choked)
        lws_callback_on_writable(wsi); /* flushing before the close */
    return rc;
}

/*
 * Is the client still there? lws 4.1.6 does not read an HTTP connection
 * whose transaction is still going (state DOING_TRANSACTION): a stream's
 * socket that became readable - the client closed it, or sent anything -
 * made the level-triggered loop spin at 100% CPU. So the stream's rx flow
 * is off (as for a request a worker holds, http.c) and the connection
 * looks itself, every HR_STREAM_PROBE_S seconds and when a write fails:
 * end of file means the client is gone. On plain TCP, whatever the client
 * sent is read and dropped (lws holds none of it: the request was read
 * whole); with TLS the bytes are only peeked (they are the TLS session's),
 * and an alert record (close_notify) counts as gone. Returns 1 when gone.
 */
static int client_gone(hr_stream_conn *s)
{
    int fd = lws_get_socket_fd(s->c.wsi);
    unsigned char buf[512];
    for (int i = 0; i < 8; i++) {
        ssize_t n = recv(fd, buf, s->tls ? 1 : sizeof(buf),
                         s->tls ? MSG_PEEK | MSG_DONTWAIT : MSG_DONTWAIT);
        if (n == 0)
            return 1;
        if (n < 0)
            return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        if (s->tls)
            return buf[0] == 0x15; /* a TLS alert */
    }
    return 0; /* a client that keeps sending is dropped at the next probe */
}

int hr_stream_timer(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_stream_conn *s = (hr_stream_conn *)pss->conn;
    uint64_t now = hr_now_us();
    (void)wsi;
    if (s->c.choked || s->c.close_code) {
        /* rx flow is on: anything readable now spins the loop until read */
        char b;
        ssize_t n = recv(lws_get_socket_fd(s->c.wsi), &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return -1; /* a listen-only client sent something, or left */
    } else if (now >= s->probe_us) {
        s->probe_us = now + HR_STREAM_PROBE_S * 1000000u;
        if (client_gone(s))
            return -1; /* lws closes the connection: hr_stream_closed */
    }
    if (now >= s->ping_us) {
        s->ping_us = now + (uint64_t)w->node->cfg->sse_ping * 1000000u;
        if (!s->c.close_code) {
            s->ping_due = 1;
            if (!s->c.choked && stream_send(s, now) < 0)
                lws_set_timeout(s->c.wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        }
    }
    program(s);
    return 0;
}

void hr_stream_closed(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_stream_conn *s = (hr_stream_conn *)pss->conn;
    (void)w;
    (void)wsi;
    pss->conn = NULL;
    hr_map_free(s->pos);
    s->pos = NULL;
    HR_INC(&s->c.w->stats, stream_connections, -1);
    hr_conn_closed(&s->c);
}

/*---- A new connection (stream_open.c) --------------------------------------*/

/* Queues a push this connection alone is sent, with its frame made here:
 * pos_offset is the position it stands for (a `subscribed` followed by
 * recovered publications stands for the position before them). */
void hr_stream_send_push(hr_conn *c, json_t *o, const char *channel, const char *epoch,
                         uint64_t pos_offset)
{
    char *j = json_dumps(o, JSON_COMPACT);
    const char *push = json_string_value(json_object_get(o, "push"));
    int k = kind_of(push);
    chan_msg *m = chan_msg_new(j, strlen(j));
    json_t *off = json_object_get(o, "offset");
    uint64_t offset = k == K_SUBSCRIBED      ? pos_offset
                      : json_is_integer(off) ? (uint64_t)json_integer_value(off)
                                             : 0;
    tframe_set(m, tframe_build(push, j, strlen(j), k, channel, epoch, offset));
    hr_conn_enqueue(c, m);
    chan_msg_unref(m);
    free(j);
    json_decref(o);
}

hr_conn *hr_stream_conn_new(hr_worker *w, struct lws *wsi, int sse, int tls)
{
    hr_stream_conn *s = hr_calloc(1, sizeof(*s));
    hr_conn_init(&s->c, sse ? &sse_ops : &ndjson_ops, w, wsi);
    HR_INC(&w->stats, stream_connections, 1);
    ((hr_pss *)lws_wsi_user(wsi))->conn = &s->c;
    s->sse = sse;
    s->tls = tls;
    s->ping_us = hr_now_us() + (uint64_t)w->node->cfg->sse_ping * 1000000u;
    s->probe_us = hr_now_us() + HR_STREAM_PROBE_S * 1000000u;
    /* the request's header table (up to HR_MAX_HEADER_DATA bytes) is not
     * needed any more: an idle stream keeps only its connection */
    lws_http_headers_detach(wsi);
    if (lws_partial_buffered(wsi)) { /* the headers first */
        s->c.choked = 1;
        want_writeable(&s->c);
    } else {
        lws_rx_flow_control(wsi, 0); /* see "Reading and writing" */
    }
    if (sse) {
        chan_msg *m = chan_msg_new("", 0);
        tframe *t = tframe_build("", "", 0, K_RAW, NULL, NULL, 0);
        t->len = strlen(HR_SSE_RETRY);
        tframe *r = hr_realloc(t, sizeof(*t) + t->len);
        memcpy(r->b, HR_SSE_RETRY, r->len);
        tframe_set(m, r);
        hr_conn_enqueue(&s->c, m);
        chan_msg_unref(m);
    }
    return &s->c;
}

void hr_stream_conn_started(hr_conn *c)
{
    program(st_of(c));
}

const char *hr_stream_transport(int sse)
{
    return sse ? sse_ops.transport : ndjson_ops.transport;
}
