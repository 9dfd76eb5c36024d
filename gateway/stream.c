/*
 * stream.c - Server-Sent Events and HTTP streaming connections (see
 * stream.h).
 *
 * Why one file of ~1,000 lines: both listen-only transports share every
 * part - the request's checks and the connect proxy before the response
 * head, the framing of SSE events and NDJSON lines, the recovery id, the
 * keep-alive and the probe lws 4.1.6 makes necessary (see client_gone) -
 * and differ only in a few format strings; split by job, each piece would
 * be read beside the others anyway.
 */
#include "gateway/stream.h"
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

/*---- Opening ---------------------------------------------------------------*/

/* Queues a push this connection alone is sent, with its frame made here:
 * pos_offset is the position it stands for (a `subscribed` followed by
 * recovered publications stands for the position before them). */
static void send_push(hr_stream_conn *s, json_t *o, const char *channel, const char *epoch,
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
    hr_conn_enqueue(&s->c, m);
    chan_msg_unref(m);
    free(j);
    json_decref(o);
}

/* A subscription's answer: the `subscribed` event, then what was
 * recovered, as the messages they were. */
static void subscribed(void *ud, const hr_result *r)
{
    hr_stream_conn *s = ud;
    if (r->err == -ECANCELED)
        return; /* the connection is going */
    if (r->err == -EACCES) {
        /* the subscribe proxy refused (the namespace rules allowed it
         * before the stream started): a stream's channels are all or
         * nothing, as they were then; 1013 would bring the client back
         * every `retry` to be refused again */
        hr_conn_close(&s->c, 4003, "not allowed to subscribe", 1);
        return;
    }
    if (r->err) {
        /* the layer is unavailable: the client reconnects (retry) and
         * recovers then */
        hr_conn_close(&s->c, 1013, "try again later", 1);
        return;
    }
    const char *ch = json_string_value(json_object_get(r->value, "channel"));
    const char *epoch = json_string_value(json_object_get(r->value, "epoch"));
    json_t *pubs = json_object_get(r->value, "publications");
    json_t *top = json_object_get(r->value, "offset");
    uint64_t pos = json_is_integer(top) ? (uint64_t)json_integer_value(top) : 0;
    json_t *first = json_array_get(pubs, 0);
    if (first)
        pos = (uint64_t)json_integer_value(json_object_get(first, "offset")) - 1;
    json_t *o = json_pack("{s:s, s:s}", "push", "subscribed", "channel", ch);
    const char *k;
    json_t *v;
    json_object_foreach(r->value, k, v)
    {
        if (strcmp(k, "channel") && strcmp(k, "publications"))
            json_object_set(o, k, v);
    }
    send_push(s, o, ch, epoch && strlen(epoch) < CHAN_EPOCH_MAX ? epoch : NULL, pos);
    size_t i;
    json_array_foreach(pubs, i, v)
    {
        json_t *p = json_pack("{s:s, s:s, s:O, s:O}", "push", "message", "channel", ch, "data",
                              json_object_get(v, "data"), "offset", json_object_get(v, "offset"));
        json_t *from = json_object_get(v, "from");
        if (from)
            json_object_set(p, "from", from);
        send_push(s, p, ch, NULL, 0);
    }
}

/* The request's channels: every ?channel=, then the exact names of the
 * token's `channels` claim, without repeats. Returns the count (names in
 * a map, values unused), or answers 400 and returns -1. */
static int request_channels(hr_http_req *req, const auth_identity *id, hr_map *out)
{
    size_t max = req->node->cfg->max_channel_len;
    char buf[300];
    for (int i = 0;; i++) {
        int flen = lws_hdr_fragment_length(req->wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen <= 0 &&
            lws_hdr_copy_fragment(req->wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            break;
        if (flen >= (int)sizeof(buf)) {
            char *big = hr_malloc((size_t)flen + 1);
            int is_ch =
                lws_hdr_copy_fragment(req->wsi, big, flen + 1, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0 &&
                !strncmp(big, "channel=", 8);
            free(big);
            if (is_ch) {
                hr_http_problem(req, 400, "invalid channel name: too long");
                return -1;
            }
            continue;
        }
        if (lws_hdr_copy_fragment(req->wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            break;
        if (strncmp(buf, "channel=", 8))
            continue;
        const char *ch = buf + 8;
        if (!chan_name_valid(ch, strlen(ch), max)) {
            char detail[400];
            snprintf(detail, sizeof(detail),
                     "invalid channel name \"%s\": 1-%zu bytes of [A-Za-z0-9_.:@=,-]", ch, max);
            hr_http_problem(req, 400, detail);
            return -1;
        }
        hr_map_put(out, ch, strlen(ch), out);
    }
    for (size_t i = 0; i < id->nchannels; i++) {
        const char *ch = id->channels[i];
        if (!strchr(ch, '*') && chan_name_valid(ch, strlen(ch), max))
            hr_map_put(out, ch, strlen(ch), out);
    }
    return (int)hr_map_count(out);
}

/* Where the client says it was: Last-Event-ID or ?last_event_id= (SSE),
 * ?since= (NDJSON). Returns 0 with *pos (NULL: nowhere), or answers 400
 * and returns -1. */
static int request_positions(hr_http_req *req, int sse, hr_map **pos)
{
    char *buf = hr_malloc(HR_STREAM_TOKEN_MAX + 2);
    const char *v = NULL;
    int rc = 0;
    *pos = NULL;
    if (sse && lws_hdr_custom_length(req->wsi, "last-event-id:", 14) > 0) {
        if (lws_hdr_custom_copy(req->wsi, buf, HR_STREAM_TOKEN_MAX + 2, "last-event-id:", 14) < 0)
            rc = -EINVAL;
        else
            v = buf;
    } else {
        v = lws_get_urlarg_by_name(req->wsi, sse ? "last_event_id=" : "since=", buf,
                                   HR_STREAM_TOKEN_MAX + 2);
    }
    if (!rc && v)
        rc = hr_stream_token_parse(v, req->node->cfg->max_channel_len, pos);
    free(buf);
    if (rc < 0)
        hr_http_problem(req, 400,
                        sse ? "Last-Event-ID is not a position Herald handed out"
                            : "since is not a position Herald handed out (an \"id\" of a line)");
    return rc;
}

/* How a stream comes to be opened: what the connect proxy (SPEC §8) said
 * and what was prepared for it. While the proxy is asked, it is the
 * request's waiting state (req held, its response head not written). */
typedef struct stream_via {
    hr_http_req *req; /* while asking: a reference (hr_http_ref) */
    int sse;
    uint64_t client_n;     /* the number the proxy was told, 0: a new one */
    hr_proxy_headers *fwd; /* with a proxy: what its calls forward (taken by the conn) */
    char *remote_addr;     /* ... and the client's address (taken by the conn) */
    hr_slot *addr_slot;    /* admitted before asking (taken by the conn) */
    int admitted;          /* addr_slot was decided */
    int proxy_authed;      /* the connect proxy's identity: refreshed by it */
    char *const *channels; /* the connect proxy's channels (borrowed) */
    size_t nchannels;
} stream_via;

static void via_clear(stream_via *v)
{
    free(v->fwd);
    free(v->remote_addr);
    hr_slot_release(v->addr_slot);
    *v = (stream_via){0};
}

/* Who the request is: its JWT (header, or ?token=), else anonymous where
 * that is on. Returns 0 with req->id set, 1 when the connect proxy decides
 * (no JWT, or HERALD_PROXY_CONNECT_PRECEDENCE=proxy), or answers 401 and
 * returns -1. */
static int request_identity(hr_http_req *req)
{
    const hr_config *cfg = req->node->cfg;
    if (hr_creds_proxy_decides(cfg)) {
        /* the backend decides every connection (an Authorization header
         * reaches it as a forwarded header): no JWT is checked */
        auth_identity_clear(&req->id);
        req->cred = -ENOENT;
        return 1;
    }
    if (req->cred == -ENOENT)
        req->cred = hr_creds_from_request(req->node->creds, req->wsi, HR_CREDS_QUERY, &req->id,
                                          &req->w->stats, req->cred_err, sizeof(req->cred_err));
    if (req->cred == -EPERM) {
        hr_http_problem(req, 401, req->cred_err[0] ? req->cred_err : "invalid credentials");
        return -1;
    }
    if (req->cred == 0 && !req->id.sub) {
        hr_http_problem(req, 401, "stream clients authenticate with a JWT");
        return -1;
    }
    if (req->cred == 0)
        return 0;
    if (cfg->proxy_connect_url)
        return 1; /* no JWT: the backend authenticates the request's cookies */
    if (cfg->allow_anonymous) {
        req->id.anonymous = 1;
        return 0;
    }
    hr_http_problem(req, 401, "a JWT is required: Authorization: Bearer <jwt> or ?token=<jwt>");
    return -1;
}

/* Opens the stream of req as req->id, with v's channels and state (v is
 * left to the caller to clear; what the connection took is NULL in it). */
static void stream_open(hr_http_req *req, stream_via *v)
{
    hr_worker *w = req->w;
    const hr_config *cfg = req->node->cfg;
    int sse = v->sse;
    hr_map *chans = hr_map_new(NULL), *since = NULL;
    hr_slot *user_slot = NULL;
    char origin[512], detail[400];
    int has_origin = lws_hdr_copy(req->wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) > 0;

    if (request_channels(req, &req->id, chans) < 0 || request_positions(req, sse, &since) < 0)
        goto out;
    /* the connect proxy's channels: subscriptions like the request's own,
     * checked the same way */
    for (size_t i = 0; i < v->nchannels; i++)
        hr_map_put(chans, v->channels[i], strlen(v->channels[i]), chans);
    if (hr_map_count(chans) > (size_t)cfg->max_subscriptions) {
        snprintf(detail, sizeof(detail), "too many channels: at most %d", cfg->max_subscriptions);
        hr_http_problem(req, 400, detail);
        goto out;
    }
    const char *key;
    size_t klen;
    void *val;
    for (size_t it = 0; hr_map_next(chans, &it, &key, &klen, &val);) {
        if (!auth_can_subscribe(hr_config_namespace(cfg, key), &req->id, key)) {
            snprintf(detail, sizeof(detail), "not allowed to subscribe to %.*s", (int)klen, key);
            hr_http_problem(req, 403, detail);
            goto out;
        }
    }
    if (!v->admitted && hr_conn_admit_address(req->node, req->wsi, &v->addr_slot) < 0) {
        req->retry_after = 1;
        hr_http_problem(req, 429, "too many connections or handshakes from this address");
        goto out;
    }
    if (req->id.sub && hr_conn_user_slot(req->node, req->id.sub, &user_slot) < 0) {
        req->retry_after = 1;
        hr_http_problem(req, 429, "too many connections for this user");
        goto out;
    }
    struct lws *wsi = req->wsi;
    hr_pss *pss = lws_wsi_user(wsi);
    if (hr_http_stream_start(req, sse ? "text/event-stream" : "application/x-ndjson",
                             has_origin ? origin : NULL) < 0) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        goto out;
    }
    /* the request is done with (freed when its last reference goes): from
     * here on, the connection */
    hr_stream_conn *s = hr_calloc(1, sizeof(*s));
    hr_conn_init(&s->c, sse ? &sse_ops : &ndjson_ops, w, wsi);
    HR_INC(&w->stats, stream_connections, 1);
    pss->conn = &s->c;
    s->sse = sse;
    s->tls = cfg->tls_cert != NULL;
    s->c.addr_slot = v->addr_slot;
    s->c.user_slot = user_slot;
    s->c.client_n = v->client_n; /* 0: numbered when authenticated */
    s->c.fwd = v->fwd;
    s->c.remote_addr = v->remote_addr;
    s->c.proxy_authed = v->proxy_authed;
    v->addr_slot = user_slot = NULL;
    v->fwd = NULL;
    v->remote_addr = NULL;
    s->ping_us = hr_now_us() + (uint64_t)cfg->sse_ping * 1000000u;
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
    char client[160];
    size_t len = 0;
    hr_conn_authenticate(&s->c, &req->id); /* arms the deadline; herald.connect */
    program(s);                            /* the keep-alive and the probe */
    hr_conn_client_id(&s->c, client, sizeof(client));
    char *cj = hr_proto_connected(client, s->c.id.sub ? s->c.id.sub : "", s->c.id.exp, &len);
    hr_conn_send_text(&s->c, cj, len);
    free(cj);
    hr_debug("connected", "client %s user %s (%s)", client, s->c.id.sub ? s->c.id.sub : "",
             s->c.ops->transport);
    for (size_t it = 0; hr_map_next(chans, &it, &key, &klen, &val);) {
        const chan_pos *p = since ? hr_map_get(since, key, klen) : NULL;
        hr_api_subscribe(&s->c, key, p, subscribed, s);
    }
    if (w->loop.shutting_down)
        hr_conn_close(&s->c, 1001, "going away", 1);
out:
    hr_slot_release(user_slot);
    hr_map_free(chans);
    hr_map_free(since);
}

/* A refusal of the connect proxy, before the stream starts: an RFC 9457
 * problem with what the client needs to tell the cases apart - the
 * backend's error code (403), its disconnect's close code and reason
 * (403: a refusal, not worth retrying), or "unavailable" (503 with
 * Retry-After: try again later, as close 1013 says to a WebSocket). */
static void proxy_refused(hr_http_req *req, const hr_proxy_answer *a)
{
    int status = a->outcome == HR_PROXY_UNAVAILABLE ? 503 : 403;
    const char *detail = "the backend is unavailable";
    if (a->outcome == HR_PROXY_ERROR)
        detail = a->message && *a->message ? a->message : "refused by the backend";
    else if (a->outcome == HR_PROXY_DISCONNECT)
        detail = a->reason && *a->reason ? a->reason : "disconnected by the backend";
    json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title",
                          hr_http_status_title(status), "status", status, "detail", detail);
    if (a->outcome == HR_PROXY_ERROR) {
        json_object_set_new(o, "code", json_string(a->code));
    } else if (a->outcome == HR_PROXY_DISCONNECT) {
        json_object_set_new(o, "code", json_string("disconnected"));
        json_object_set_new(o, "close_code", json_integer(a->close_code));
    } else {
        json_object_set_new(o, "code", json_string(hr_err_code(-EAGAIN)));
        req->retry_after = 1;
    }
    char *j = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (j)
        hr_http_respond(req, status, "application/problem+json", j, strlen(j));
    else
        hr_http_problem(req, status, "refused by the backend"); /* a message not UTF-8 */
    free(j);
}

/* The connect proxy's answer: the stream opens as the backend's user
 * with its channels, or the request is refused. */
static void proxy_answered(void *ud, hr_proxy_answer *a)
{
    stream_via *v = ud;
    hr_http_req *req = v->req;
    if (!req->wsi) {
        ; /* the client left meanwhile */
    } else if (a->outcome == HR_PROXY_RESULT && hr_proxy_answer_identity(a, &req->id) == 0) {
        req->cred = 0;
        v->proxy_authed = 1;
        v->channels = a->channels;
        v->nchannels = a->nchannels;
        stream_open(req, v);
    } else {
        proxy_refused(req, a);
    }
    via_clear(v);
    hr_http_unref(req);
    free(v);
}

static void stream_start(hr_http_req *req, int sse)
{
    hr_worker *w = req->w;
    const hr_config *cfg = req->node->cfg;
    stream_via v = {.sse = sse};

    if (lws_get_network_wsi(req->wsi) != req->wsi) {
        /* an HTTP/2 stream (loop.c offers only http/1.1): the stream's bytes
         * go straight to the socket, which would break h2's framing */
        hr_http_problem(req, 505, "streams need HTTP/1.1");
        return;
    }
    if (!hr_conn_origin_allowed(cfg, req->wsi)) {
        hr_http_problem(req, 403, "origin not allowed");
        return;
    }
    int how = request_identity(req);
    if (how < 0)
        return;
    if (w->proxy) {
        /* the request's headers go with the header table: what the backend
         * proxy's calls forward is kept now (SPEC §8) */
        v.fwd = hr_creds_forwarded(cfg, req->wsi);
        v.remote_addr = hr_conn_peer_address(req->node, req->wsi);
    }
    if (how == 0) {
        stream_open(req, &v);
        via_clear(&v);
        return;
    }
    /* The connect proxy: the request's own channels and position checked
     * and the address admitted first (the backend is not asked about a
     * request that fails anyway), then the response waits for its answer -
     * the request is held and its rx flow is off meanwhile (http.c, as
     * for an answer a worker gives), nothing blocks the loop. */
    hr_map *chans = hr_map_new(NULL), *since = NULL;
    int bad = request_channels(req, &req->id, chans) < 0 || request_positions(req, sse, &since) < 0;
    hr_map_free(chans);
    hr_map_free(since);
    if (bad) {
        via_clear(&v);
        return;
    }
    if (hr_conn_admit_address(req->node, req->wsi, &v.addr_slot) < 0) {
        req->retry_after = 1;
        hr_http_problem(req, 429, "too many connections or handshakes from this address");
        via_clear(&v);
        return;
    }
    v.admitted = 1;
    v.req = req;
    v.client_n = hr_conn_new_number(req->node);
    hr_http_ref(req);
    stream_via *p = hr_malloc(sizeof(*p));
    *p = v;
    hr_api_connect_ask(w, p->client_n, sse ? sse_ops.transport : ndjson_ops.transport,
                       p->remote_addr, p->fwd, proxy_answered, p);
}

void hr_stream_sse(hr_http_req *req)
{
    stream_start(req, 1);
}

void hr_stream_ndjson(hr_http_req *req)
{
    stream_start(req, 0);
}
