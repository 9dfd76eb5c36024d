/* herald-loadgen - WebSocket/REST load generator for Herald and herald-refserver.
 *
 * One process, one epoll loop, thousands of client connections. Roles:
 *   subscribers  connect (JWT in ?token=), subscribe to channel(s), measure
 *                delivery latency and detect loss, duplicates and reordering;
 *   publishers   WebSocket `publish` ops or REST POST /api/v1/publish on
 *                keep-alive connections (pipelined up to the window);
 *   idle         connect, authenticate, hold.
 * Phases: CONNECT (a concurrency window of handshakes in flight) -> PUBLISH
 * (paced or flat out) -> DRAIN (wait for the last deliveries) -> HOLD -> END.
 * Prints exactly one JSON line on stdout; diagnostics go to stderr.
 *
 * Why one file of ~2,000 lines: one event loop and its connection state
 * machine, whose phases share every counter; the pieces other tools share
 * are bench_common.c and Herald's common/. (scenario.c repeats much of
 * the client connection code below; a client connection module shared by
 * both would remove that.)
 *
 * Payload `data` = {"p":publisher,"s":seq,"t":send ns (CLOCK_MONOTONIC),"x":pad}, or with
 * --payload chat a ~1 KB chat event {"p","s","t","type","id","room","author",...}.
 * --deflate 1: every WebSocket connection offers permessage-deflate and
 * inflates compressed frames; the wire bytes of each delivery are counted.
 * --sub-transport sse|stream: subscribers are listen-only HTTP streams
 * instead (GET /sse or /stream, channels and token in the URL, SPEC §9):
 * ready once `connected` and a `subscribed` per channel arrived; the JSON of
 * each event's data: line (or each NDJSON line) is handled as a WebSocket
 * text message would be.
 * Publication s of publisher p goes to channel (p + s) % channels, so every
 * receiver knows which sequence numbers it must see on each channel: the
 * stream (subscriber, channel, publisher) must carry s0, s0+M, s0+2M, ...
 *
 * Flow control: a publication stays "in flight" until it is acknowledged AND
 * every local subscriber of its channel has received it. --window bounds the
 * publications in flight per publisher, so flat-out mode measures the server's
 * rate without piling megabytes into its queues (Herald closes a connection
 * whose outbound queue exceeds 1 MiB with 4008). */
#include "bench_common.h"
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

/* The id of --auth cookie's connect command: no publisher's window reaches it. */
#define CONNECT_ID 4000000000u
#define CONNECT_ID_STR "4000000000"
#define RBUF_SIZE (256 * 1024)
#define MAX_MESSAGE (1 << 20) /* largest server message we accept */
#define MAX_HTTP_HEAD 16384   /* largest HTTP response head */
#define READS_PER_EVENT 16    /* then yield to other connections */
#define TICK_NS 20000000ull   /* housekeeping period: 20 ms */
#define MAX_CLOSE_CODES 32
#define MAX_RECONNECTS 100000  /* REST reconnections per run */
#define QUIET_NS 1000000000ull /* drain: 1 s without input after a window timeout */

/*---- options ---------------------------------------------------------------*/

#define MAX_PORTS 16
#define MAX_PIDS 16

enum proto { PROTO_HERALD, PROTO_NCHAN };

typedef struct opts {
    const char *host, *secret, *api_key, *prefix, *ready_file, *tag;
    const char *ports_s, *pub_ports_s, *server_pids_s, *proto_s, *sub_path, *pub_path;
    const char *payload_s, *sub_transport_s, *auth_s;
    int deflate, chat; /* offer permessage-deflate; --payload chat */
    int sub_stream;    /* --sub-transport: 0 ws, 1 sse, 2 stream (NDJSON) */
    int cookie_auth;   /* --auth cookie: no JWT, a Cookie header and {"op":"connect"} */
    int port, src_count, src_first;
    int proto;                            /* enum proto */
    int nports, npub_ports, nserver_pids; /* parsed from the lists above */
    int ports[MAX_PORTS], pub_ports[MAX_PORTS], server_pids[MAX_PIDS];
    int subs, ws_pubs, rest_pubs, idle;
    int channels, sub_channels, size, window, concurrency;
    int pub_id_base, pub_total;
    long count, ttl;
    double rate, duration, connect_timeout, hold, timeout;
    int stall_ms, window_timeout_ms, settle_ms;
    int test_drop, test_dup, test_reorder, verbose;
} opts;

static opts O = {
    .host = "127.0.0.1",
    .port = 8080,
    .src_count = 8,
    .src_first = 2,
    .prefix = "bench.",
    .sub_path = "/sub/",
    .pub_path = "/pub/",
    .channels = 1,
    .sub_channels = 1,
    .size = 100,
    .window = 16,
    .concurrency = 256,
    .ttl = 3600,
    .connect_timeout = 60,
    .timeout = 300,
    .stall_ms = 5000,
    .window_timeout_ms = 5000,
};

/*---- statistics --------------------------------------------------------------*/

/* Error kinds, reported by name in "errors" when non-zero. */
enum err {
    /* after the failures client.c reports (bc_fault, BC_FAULT_NAMES) */
    E_SOCKET = BC_NFAULTS,
    E_HANDSHAKE_TIMEOUT,
    E_EOF_HANDSHAKE,
    E_MASKED_FRAME,
    E_BINARY,
    E_BAD_PUSH,
    E_UNEXPECTED_CHANNEL,
    E_MISROUTED,
    E_SUBSCRIBE,
    E_PUBLISH,
    E_REST_STATUS,
    E_UNKNOWN_REPLY,
    E_OOM,
    E_INFLATE,
    E_NO_DEFLATE,
    E_N
};
static const char *const err_names[E_N] = {
    BC_FAULT_NAMES,
    [E_SOCKET] = "socket",
    [E_HANDSHAKE_TIMEOUT] = "handshake_timeout",
    [E_EOF_HANDSHAKE] = "eof_handshake",
    [E_MASKED_FRAME] = "masked_frame",
    [E_BINARY] = "binary_frame",
    [E_BAD_PUSH] = "bad_push",
    [E_UNEXPECTED_CHANNEL] = "unexpected_channel",
    [E_MISROUTED] = "misrouted",
    [E_SUBSCRIBE] = "subscribe_error",
    [E_PUBLISH] = "publish_error",
    [E_REST_STATUS] = "rest_status",
    [E_UNKNOWN_REPLY] = "unknown_reply",
    [E_OOM] = "oom",
    [E_INFLATE] = "inflate",
    [E_NO_DEFLATE] = "deflate_not_negotiated",
};

/*---- state -----------------------------------------------------------------*/

enum role { R_SUB, R_PUB, R_REST, R_IDLE };
enum cstate {
    S_NEW,
    S_CONNECTING,
    S_UPGRADING,
    S_AWAIT_CONNECTED,
    S_SUBSCRIBING,
    S_READY,
    S_CLOSED
};
enum phase { P_CONNECT, P_SETTLE, P_PUBLISH, P_DRAIN, P_HOLD, P_END };

typedef struct conn {
    int fd;
    uint8_t role, state, dirty, more, buried, in_handshake;
    uint8_t redialing;   /* REST: reopened after the server closed it */
    uint8_t pmd;         /* permessage-deflate negotiated */
    uint32_t ridx;       /* index within its role */
    uint32_t pending;    /* subscribe replies still awaited */
    int port;            /* the server port this connection goes to */
    uint64_t t_open;     /* connect() called */
    hr_buf in, out, msg; /* unparsed input, unsent output, fragmented message */
    char accept[29];     /* the Sec-WebSocket-Accept we expect */
} conn;

/* One in-flight publication: complete once acked and delivered locally. */
typedef struct pubslot {
    uint64_t t_sent;
    uint32_t remaining; /* local deliveries still expected */
    uint8_t acked;
} pubslot;

typedef struct publisher {
    conn *c;
    uint32_t gid;        /* publisher id in the payload */
    uint32_t next_seq;   /* next sequence number to send */
    uint32_t oldest;     /* oldest publication not complete */
    uint32_t rest_acked; /* REST: responses so far (they come in request order) */
    int dead;
    pubslot *slots; /* window entries, by seq % window */
} publisher;

/* Receiver state of one (subscriber, channel slot, publisher) stream. */
typedef struct stream {
    uint32_t next; /* next sequence number expected */
    uint64_t seen; /* bit i: seq next - M*(i+1) arrived (anti-replay window) */
} stream;

static struct lg {
    int ep;
    enum phase phase;
    conn *conns;
    int total, opened, ready, failed, inflight;
    publisher *pubs;
    int npubs, rr; /* local publishers, round-robin cursor */
    stream *streams;
    uint32_t *fanout0, *fanout; /* subscribers per channel: at start / still open */
    conn **dirty, **more, **grave, **redial;
    int ndirty, nmore, ngrave, nredial;
    uint8_t *rbuf;
    uint64_t rng;
    volatile sig_atomic_t stop, usr1;

    uint64_t t_start, t_first_open, t_last_hs, t_connect_done;
    uint64_t t_pub_start, t_pub_end, t_last_rx, t_last_delivery, t_last_ack, t_measure_end;
    uint64_t t_hold_end, t_next_tick, t_settle_end;
    double cpu0, cpu1; /* summed over --server-pid */
    double pid_cpu0[MAX_PIDS], pid_cpu1[MAX_PIDS];
    long rss_kb;
    int stalled, timed_out, connect_timed_out;

    /* publications */
    uint64_t published, acked, pub_errors, window_timeouts, expected;
    uint64_t rest_reconnects, rest_resent;
    /* deliveries */
    uint64_t received, dups, stale, reordered, gaps, test_count;
    uint64_t received_by_port[MAX_PORTS]; /* deliveries per --ports entry */
    /* bytes on the wire: the frame(s) of the message being dispatched, and
     * the sum over deliveries; compressed deliveries; pmd connections */
    uint64_t cur_wire, wire_bytes, deflated;
    int cur_deflated, pmd_conns;
    z_stream inf;
    int inf_ready;
    uint8_t *inf_buf;
    hist lat, ack, hs;
    uint64_t errors[E_N];
    int close_codes[MAX_CLOSE_CODES], close_counts[MAX_CLOSE_CODES], nclose;
    uint64_t closed_eof, closed_reset, closed_by_role[4];
    int http_status[8], http_status_n[8], nhttp;
    int conn_errno[8], conn_errno_n[8], nerrno;
    stream *held; /* --test-reorder: the stream of the delivery held back */
    uint64_t held_seq;
} G;

/* The publisher a publishing connection drives: WebSocket ones first. */
static publisher *publisher_of(const conn *c)
{
    return &G.pubs[c->role == R_PUB ? c->ridx : (uint32_t)O.ws_pubs + c->ridx];
}

static void err_add(enum err e)
{
    G.errors[e]++;
}

/*---- JWT (HS256, minted locally) --------------------------------------------*/

/* Writes an HS256 JWT {"sub","exp","iat"} signed with --secret into out. */
static void mint_jwt(char *out, size_t cap, const char *sub)
{
    jwt_hs256(out, cap, O.secret, sub, O.ttl);
}

/*---- output path -------------------------------------------------------------*/

static void conn_lost(conn *c, const char *why, int code);

/* Marks c for flush_dirty(): output is sent once per loop iteration, so the
 * commands of one iteration share a send() (the server sees them together). */
static void mark_dirty(conn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        G.dirty[G.ndirty++] = c;
    }
}

static size_t input(void *conn_, uint8_t *p, size_t n, uint64_t now);

/* A failed send means the server closed, but the answers it sent before
 * closing may still wait in our receive buffer: a server that answers
 * a pipelined POST 503 and closes (Herald) has usually answered the requests
 * before it, and our next request's send() fails with EPIPE before we read
 * them. Reads them first, so a REST publisher does not resend requests that
 * were answered (each such resend was a duplicate delivery). */
static void conn_flush(conn *c)
{
    if (bc_send(c->fd, &c->out) >= 0)
        return;
    uint64_t now = now_ns();
    int r = 1;
    while (r > 0 && c->state != S_CLOSED)
        r = bc_read(c, &c->fd, &c->in, 0, G.rbuf, RBUF_SIZE, READS_PER_EVENT, input, now);
    conn_lost(c, r == -EPIPE ? "eof" : "reset", 0);
}

static void flush_dirty(void)
{
    for (int i = 0; i < G.ndirty; i++) {
        conn *c = G.dirty[i];
        c->dirty = 0;
        if (c->state != S_CLOSED && c->state > S_CONNECTING)
            conn_flush(c);
    }
    G.ndirty = 0;
}

static int queue_bytes(conn *c, const void *p, size_t n)
{
    hr_buf_append(&c->out, p, n);
    mark_dirty(c);
    return 0;
}

/* Queues one masked client frame. */
static void ws_send(conn *c, int opcode, const void *p, size_t n)
{
    bc_ws_frame(&c->out, &G.rng, opcode, p, n);
    mark_dirty(c);
}

/*---- connection lifecycle ------------------------------------------------------*/

static void conn_ready(conn *c);

static void record_close_code(int code)
{
    bc_tally(G.close_codes, G.close_counts, &G.nclose, MAX_CLOSE_CODES, code);
}

/* Drops a subscriber from the live fan-out, so windows stop waiting for it. */
static void sub_gone(conn *c)
{
    for (int t = 0; t < O.sub_channels; t++) {
        uint32_t ch = (uint32_t)(((uint64_t)c->ridx * O.sub_channels + t) % O.channels);
        if (G.fanout[ch] > 0)
            G.fanout[ch]--;
    }
}

/* A server may close a keep-alive connection (after N requests, or when it
 * does not take pipelining): like a real client, reconnect and resend. */
static int may_redial(void)
{
    return (G.phase == P_PUBLISH || G.phase == P_DRAIN) && G.rest_reconnects < MAX_RECONNECTS;
}

/* Closes c because of the server or the network. why: "eof", "reset", "close"
 * (a close frame with `code`), "fail" (handshake failed, error already
 * counted) or "timeout". Buffers are freed later (bury()), since the caller
 * may still be walking them. */
static void conn_lost(conn *c, const char *why, int code)
{
    if (c->state == S_CLOSED)
        return;
    int was_ready = c->state == S_READY;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = S_CLOSED;
    if (!strcmp(why, "close"))
        record_close_code(code);
    else if (!strcmp(why, "eof"))
        G.closed_eof++;
    else if (!strcmp(why, "reset"))
        G.closed_reset++;
    if (c->in_handshake) {
        c->in_handshake = 0;
        G.inflight--;
    }
    if (was_ready)
        G.closed_by_role[c->role]++; /* established, then closed */
    int redial = 0;
    if (!was_ready && c->redialing) {
        publisher_of(c)->dead = 1; /* the reconnection failed: give up */
    } else if (!was_ready) {
        G.failed++;
    } else if (c->role == R_SUB) {
        sub_gone(c);
    } else if (c->role == R_REST && may_redial()) {
        redial = 1;
    } else if (c->role == R_PUB || c->role == R_REST) {
        publisher_of(c)->dead = 1;
    }
    if (!c->buried) {
        c->buried = 1;
        G.grave[G.ngrave++] = c;
    }
    if (redial)
        G.redial[G.nredial++] = c;
}

static void bury(void)
{
    for (int i = 0; i < G.ngrave; i++) {
        hr_buf_reset(&G.grave[i]->in);
        hr_buf_reset(&G.grave[i]->out);
        hr_buf_reset(&G.grave[i]->msg);
    }
    G.ngrave = 0;
}

/* Closes c after a failure a bc_* function reported (err), counted; status:
 * the HTTP status of a refused upgrade. */
static void conn_fail(conn *c, int err, int status)
{
    err_add((enum err)bc_fault(err));
    if (err == -ECONNREFUSED)
        bc_tally(G.http_status, G.http_status_n, &G.nhttp, 8, status);
    conn_lost(c, "fail", 0);
}

static void count_errno(int e)
{
    bc_tally(G.conn_errno, G.conn_errno_n, &G.nerrno, 8, e);
    err_add(E_SOCKET);
}

static void conn_open(conn *c, uint32_t i, uint64_t now)
{
    c->t_open = now;
    c->in_handshake = 1;
    G.inflight++;
    if (!G.t_first_open)
        G.t_first_open = now;
    /* from 127.0.0.<src_first + i % src_count>: each source address has
     * its own ephemeral ports, so 19,000 connections never run out */
    int fd = bc_connect(O.host, c->port, O.src_first, O.src_count, i);
    if (fd < 0) {
        count_errno(-fd);
        conn_lost(c, "fail", 0);
        return;
    }
    c->fd = fd;
    c->state = S_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    epoll_ctl(G.ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* The channel subscriber c listens to (--proto nchan: one per connection). */
static uint64_t sub_channel(const conn *c, int t)
{
    return ((uint64_t)c->ridx * O.sub_channels + t) % O.channels;
}

/* Whether c is a listen-only stream subscriber (--sub-transport sse|stream). */
static int is_stream(const conn *c)
{
    return O.sub_stream && c->role == R_SUB;
}

/* GET /sse or /stream with the subscriber's channels and token. */
static void send_stream_request(conn *c)
{
    char sub[64], token[512], req[8192];
    snprintf(sub, sizeof sub, "bench-%s-%ld", O.tag, (long)(c - G.conns));
    mint_jwt(token, sizeof token, sub);
    int n =
        snprintf(req, sizeof req, "GET %s?token=%s", O.sub_stream == 1 ? "/sse" : "/stream", token);
    for (int t = 0; t < O.sub_channels && n < (int)sizeof req - 600; t++)
        n += snprintf(req + n, sizeof req - (size_t)n, "&channel=%s%llu", O.prefix,
                      (unsigned long long)sub_channel(c, t));
    n += snprintf(req + n, sizeof req - (size_t)n, " HTTP/1.1\r\nHost: %s:%d\r\n\r\n", O.host,
                  c->port);
    c->state = S_UPGRADING;
    queue_bytes(c, req, (size_t)n);
}

static void send_upgrade(conn *c)
{
    char sub[64], token[512], target[768], req[1024];
    if (is_stream(c)) {
        send_stream_request(c);
        return;
    }
    if (O.proto == PROTO_NCHAN) { /* the channel is in the path; no auth */
        snprintf(target, sizeof target, "%s%s%llu", O.sub_path, O.prefix,
                 (unsigned long long)sub_channel(c, 0));
    } else if (O.cookie_auth) { /* the connect proxy's business: the user is in a cookie */
        snprintf(target, sizeof target, "/ws");
    } else {
        snprintf(sub, sizeof sub, "bench-%s-%ld", O.tag, (long)(c - G.conns));
        mint_jwt(token, sizeof token, sub);
        snprintf(target, sizeof target, "/ws?token=%s", token);
    }
    char cookie[128] = "";
    if (O.cookie_auth)
        snprintf(cookie, sizeof cookie, "Cookie: bench_user=bench-%s-%ld\r\n", O.tag,
                 (long)(c - G.conns));
    size_t n = bc_upgrade_request(req, sizeof req, target, O.host, c->port, O.deflate, cookie,
                                  &G.rng, c->accept);
    c->state = S_UPGRADING;
    queue_bytes(c, req, n);
}

/* The TCP connection completed (or failed): REST connections are ready at
 * once, WebSocket connections start their upgrade. */
static void on_connected(conn *c)
{
    int err = bc_connect_error(c->fd);
    if (err) {
        count_errno(err);
        conn_lost(c, "fail", 0);
        return;
    }
    if (c->role == R_REST) {
        c->state = S_READY;
        conn_ready(c);
    } else {
        send_upgrade(c);
    }
}

/* The handshake is complete: 101 received, then {"push":"connected"}. */
static void handshake_done(conn *c, uint64_t now)
{
    hist_add(&G.hs, now - c->t_open);
    G.t_last_hs = now;
    c->in_handshake = 0;
    G.inflight--;
    if (c->role != R_SUB || O.proto == PROTO_NCHAN) {
        c->state = S_READY; /* nchan: the upgrade to /sub/<channel> subscribed it */
        conn_ready(c);
        return;
    }
    c->state = S_SUBSCRIBING;
    c->pending = (uint32_t)O.sub_channels;
    if (is_stream(c))
        return; /* the channels were in the URL: a `subscribed` event each */
    for (int t = 0; t < O.sub_channels; t++) {
        char cmd[512];
        uint64_t ch = sub_channel(c, t);
        int n = snprintf(cmd, sizeof cmd, "{\"id\":%d,\"op\":\"subscribe\",\"channel\":\"%s%llu\"}",
                         t + 1, O.prefix, (unsigned long long)ch);
        ws_send(c, HR_WS_OP_TEXT, cmd, (size_t)n);
    }
}

static void rest_resend(publisher *p, uint64_t now);

static void conn_ready(conn *c)
{
    uint64_t now = now_ns();
    if (c->in_handshake) { /* REST: no WebSocket handshake */
        c->in_handshake = 0;
        G.inflight--;
        if (!c->redialing)
            G.t_last_hs = now;
    }
    if (c->redialing) {
        c->redialing = 0;
        rest_resend(publisher_of(c), now);
        return;
    }
    G.ready++;
}

/*---- payload parsing -----------------------------------------------------------*/

/* The channel index of a push: "channel":"<prefix><n>". */
static int push_channel(const char *p, const char *end, uint64_t *ch)
{
    const char *v = json_value(p, end, "\"channel\"");
    size_t plen = strlen(O.prefix);
    if (!v || (size_t)(end - v) < plen + 2 || *v != '"' || memcmp(v + 1, O.prefix, plen) != 0)
        return -1;
    const char *d = v + 1 + plen, *k = d;
    uint64_t n = 0;
    while (k < end && *k >= '0' && *k <= '9')
        n = n * 10 + (uint64_t)(*k++ - '0');
    if (k == d || k >= end || *k != '"')
        return -1;
    *ch = n;
    return 0;
}

enum mkind { M_OTHER, M_MESSAGE, M_CONNECTED, M_REPLY_OK, M_REPLY_ERR, M_SUBSCRIBED };

/* What a server text message is: a fast path for the usual compact form,
 * then a scan that allows any key order and blanks. */
static enum mkind classify(const char *p, size_t n, uint64_t *id)
{
    static const char fast[] = "{\"push\":\"message\",";
    const char *end = p + n;
    if (n > sizeof fast && !memcmp(p, fast, sizeof fast - 1))
        return M_MESSAGE;
    if (json_value(p, end, "\"push\"")) {
        if (json_str_is(p, end, "\"push\"", "\"message\""))
            return M_MESSAGE;
        if (json_str_is(p, end, "\"push\"", "\"subscribed\""))
            return M_SUBSCRIBED;
        return json_str_is(p, end, "\"push\"", "\"connected\"") ? M_CONNECTED : M_OTHER;
    }
    if (json_uint(p, end, "\"id\"", id) == 0) {
        if (json_value(p, end, "\"error\""))
            return M_REPLY_ERR;
        if (json_value(p, end, "\"result\""))
            return M_REPLY_OK;
    }
    return M_OTHER;
}

/*---- publications: window, acks, pacing --------------------------------------*/

static uint32_t pub_channel(uint32_t gid, uint32_t seq)
{
    return (uint32_t)(((uint64_t)gid + seq) % (uint64_t)O.channels);
}

static int pub_complete(const pubslot *s)
{
    return s->acked && s->remaining == 0;
}

/* Advances the window past every complete publication. */
static void pub_settle(publisher *p)
{
    while (p->oldest != p->next_seq && pub_complete(&p->slots[p->oldest % O.window]))
        p->oldest++;
}

static int pub_in_window(const publisher *p, uint32_t seq)
{
    return seq - p->oldest < p->next_seq - p->oldest;
}

static void on_ack(publisher *p, uint32_t seq, int ok, uint64_t now)
{
    if (!pub_in_window(p, seq))
        return; /* already settled by a window timeout */
    pubslot *s = &p->slots[seq % O.window];
    if (s->acked)
        return;
    s->acked = 1;
    hist_add(&G.ack, now - s->t_sent);
    G.t_last_ack = now;
    if (ok) {
        G.acked++;
    } else {
        G.pub_errors++;
        G.expected -= G.fanout0[pub_channel(p->gid, seq)];
        s->remaining = 0; /* refused: nobody will receive it */
    }
    pub_settle(p);
}

/* A local subscriber received (gid, seq): one delivery fewer to wait for. */
static void on_credit(uint64_t gid, uint64_t seq)
{
    if (gid < (uint64_t)O.pub_id_base || gid >= (uint64_t)O.pub_id_base + (uint64_t)G.npubs)
        return;
    publisher *p = &G.pubs[gid - (uint64_t)O.pub_id_base];
    if (!pub_in_window(p, (uint32_t)seq))
        return;
    pubslot *s = &p->slots[seq % (uint64_t)O.window];
    if (s->remaining > 0 && --s->remaining == 0)
        pub_settle(p);
}

/* A chat event of about 1 KB (the push around it adds ~50 bytes): what a
 * real application sends, unlike the padding, which compresses to nothing.
 * Each message differs (sequence, time) so no two compress alike. */
static size_t build_chat(char *buf, size_t cap, uint32_t gid, uint32_t seq, uint64_t t)
{
    int n = snprintf(
        buf, cap,
        "{\"p\":%u,\"s\":%u,\"t\":%llu,\"type\":\"chat.message\","
        "\"id\":\"01HV6Z5W3K9Q2M7YB8T%07u\",\"room\":\"room-42\","
        "\"author\":{\"id\":\"u_%u\",\"name\":\"Alice Martin\","
        "\"avatar\":\"https://cdn.example.com/avatars/u_%u/64.png\"},"
        "\"text\":\"Hey everyone, the release notes for 2.4 are up. Please take a look at the "
        "migration section before Thursday's deploy, especially if you maintain one of the "
        "plugins that use the old settings API: the compatibility shim goes away in 2.5, and "
        "the new API needs a config change on your side. Ping me if anything is unclear. "
        "(#%u)\",\"client_msg_id\":\"c7f1e2a4-9b3d-4e8f-a6c5-%012u\","
        "\"mentions\":[{\"id\":\"u_1002\",\"name\":\"Bob\"},{\"id\":\"u_1003\",\"name\":"
        "\"Carol\"}],\"attachments\":[{\"kind\":\"link\",\"url\":"
        "\"https://docs.example.com/releases/2.4#migration\",\"title\":\"Release 2.4: "
        "migration guide\"}],\"reactions\":{\"thumbs_up\":3,\"eyes\":1},\"thread\":"
        "{\"id\":\"t_5521\",\"replies\":12,\"last_reply_at\":\"2026-11-22T10:41:07Z\"},"
        "\"sent_at\":\"2026-11-22T10:42:13.%03uZ\",\"edited\":false,\"pinned\":false,"
        "\"lang\":\"en\"}",
        gid, seq, (unsigned long long)t, seq, 80000 + gid, 80000 + gid, seq, seq,
        (unsigned)(t / 1000000 % 1000));
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static size_t build_data(char *buf, size_t cap, uint32_t gid, uint32_t seq, uint64_t t)
{
    if (O.chat)
        return build_chat(buf, cap, gid, seq, t);
    int n = snprintf(buf, cap, "{\"p\":%u,\"s\":%u,\"t\":%llu,\"x\":\"", gid, seq,
                     (unsigned long long)t);
    return bc_pad_payload(buf, cap, n, (size_t)O.size);
}

static void send_ws_publish(publisher *p, uint32_t seq, uint32_t ch, const char *data, size_t dn)
{
    static char msg[66000];
    int n = snprintf(msg, sizeof msg,
                     "{\"id\":%u,\"op\":\"publish\",\"channel\":\"%s%u\",\"data\":%.*s}", seq + 1,
                     O.prefix, ch, (int)dn, data);
    ws_send(p->c, HR_WS_OP_TEXT, msg, (size_t)n);
}

static void send_rest_publish(publisher *p, uint32_t ch, const char *data, size_t dn)
{
    static char body[66000], req[67000];
    if (O.proto == PROTO_NCHAN) { /* the body is the message; the channel is in the path */
        int n = snprintf(req, sizeof req,
                         "POST %s%s%u HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/json\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%.*s",
                         O.pub_path, O.prefix, ch, O.host, p->c->port, dn, (int)dn, data);
        queue_bytes(p->c, req, (size_t)n);
        return;
    }
    int bn = snprintf(body, sizeof body, "{\"channel\":\"%s%u\",\"data\":%.*s}", O.prefix, ch,
                      (int)dn, data);
    int n = snprintf(req, sizeof req,
                     "POST /api/v1/publish HTTP/1.1\r\nHost: %s:%d\r\nX-API-Key: %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     O.host, p->c->port, O.api_key ? O.api_key : "", bn, body);
    queue_bytes(p->c, req, (size_t)n);
}

/* After a reconnection: sends again, in order, every request that got no
 * response (responses map to requests by order). Each keeps its first send
 * time, so latency includes the detour; a server that had processed one
 * without answering shows up as a duplicate delivery. */
static void rest_resend(publisher *p, uint64_t now)
{
    static char data[65536];
    for (uint32_t seq = p->rest_acked; seq != p->next_seq; seq++) {
        uint64_t t = pub_in_window(p, seq) ? p->slots[seq % O.window].t_sent : now;
        size_t dn = build_data(data, sizeof data, p->gid, seq, t);
        send_rest_publish(p, pub_channel(p->gid, seq), data, dn);
        G.rest_resent++;
    }
}

/* Reopens the REST connections the server closed this iteration; called after
 * bury(), so their old buffers are gone. */
static void redial_closed(uint64_t now)
{
    for (int i = 0; i < G.nredial; i++) {
        conn *c = G.redial[i];
        c->buried = 0;
        c->redialing = 1;
        c->state = S_NEW;
        G.rest_reconnects++;
        conn_open(c, (uint32_t)(c - G.conns), now);
    }
    G.nredial = 0;
}

/* Sends publication next_seq of p and opens its window slot. */
static void pub_send(publisher *p, uint64_t now)
{
    static char data[65536];
    uint32_t seq = p->next_seq, ch = pub_channel(p->gid, seq);
    size_t dn = build_data(data, sizeof data, p->gid, seq, now);
    if (p->c->role == R_PUB)
        send_ws_publish(p, seq, ch, data, dn);
    else
        send_rest_publish(p, ch, data, dn);
    pubslot *s = &p->slots[seq % O.window];
    s->t_sent = now;
    s->acked = 0;
    s->remaining = G.fanout[ch];
    p->next_seq++;
    G.published++;
    G.expected += G.fanout0[ch];
    G.t_pub_end = now;
}

static int pub_can_send(const publisher *p)
{
    return !p->dead && p->c->state == S_READY && p->next_seq - p->oldest < (uint32_t)O.window;
}

/* Sends up to `budget` publications, round-robin over publishers with room
 * in their window. Returns how many were sent. */
static uint64_t publish_round(uint64_t budget, uint64_t now)
{
    uint64_t sent = 0;
    int idle_turns = 0;
    while (sent < budget && idle_turns < G.npubs) {
        publisher *p = &G.pubs[G.rr];
        G.rr = (G.rr + 1) % G.npubs;
        if (!pub_can_send(p)) {
            idle_turns++;
            continue;
        }
        idle_turns = 0;
        pub_send(p, now);
        sent++;
    }
    return sent;
}

static int publishing_over(uint64_t now)
{
    if (O.count > 0 && G.published >= (uint64_t)O.count)
        return 1;
    if (O.duration > 0 && now >= G.t_pub_start + (uint64_t)(O.duration * 1e9))
        return 1;
    for (int i = 0; i < G.npubs; i++)
        if (!G.pubs[i].dead)
            return 0;
    return 1; /* every publisher connection is gone */
}

/* Paced mode: publications due by now = rate x elapsed (the first at t=0);
 * flat-out mode: as many as the windows allow. */
static void publish_some(uint64_t now)
{
    uint64_t limit = O.count > 0 ? (uint64_t)O.count : UINT64_MAX;
    if (O.rate > 0) {
        uint64_t due = (uint64_t)((double)(now - G.t_pub_start) / 1e9 * O.rate) + 1;
        if (due < limit)
            limit = due;
    }
    if (limit > G.published)
        publish_round(limit - G.published, now);
}

/* Publications in flight: sent, not yet acknowledged and delivered locally. */
static uint64_t in_flight(void)
{
    uint64_t n = 0;
    for (int i = 0; i < G.npubs; i++)
        if (!G.pubs[i].dead)
            n += G.pubs[i].next_seq - G.pubs[i].oldest;
    return n;
}

/* Settles publications stuck longer than --window-timeout-ms, so one lost
 * reply or delivery cannot stop a publisher for the rest of the run. Only
 * while the server keeps answering (something arrived after the send): a
 * silent server leaves them in flight, and tick() reports the stall. */
static void window_timeouts(uint64_t now)
{
    uint64_t limit = (uint64_t)O.window_timeout_ms * 1000000ull;
    for (int i = 0; i < G.npubs; i++) {
        publisher *p = &G.pubs[i];
        while (p->oldest != p->next_seq) {
            pubslot *s = &p->slots[p->oldest % O.window];
            if (now - s->t_sent < limit || G.t_last_rx <= s->t_sent)
                break;
            s->acked = 1;
            s->remaining = 0;
            G.window_timeouts++;
            pub_settle(p);
        }
    }
}

/*---- deliveries: latency, loss, duplicates, reordering ------------------------*/

/* Checks seq against the stream's expectation (bc_seq_check: a publisher's
 * numbers on one channel go up by the number of channels) and counts it:
 * gaps (lost unless they turn up later), a late arrival filling one,
 * duplicates, "stale" (duplicate or very late). */
static void stream_check(stream *st, uint64_t seq)
{
    uint64_t m = (uint64_t)O.channels, skipped;
    switch (bc_seq_check(&st->seen, st->next, seq, m, &skipped)) {
    case BC_SEQ_NEXT:
        G.gaps += skipped;
        st->next = (uint32_t)(seq + m);
        break;
    case BC_SEQ_LATE:
        G.reordered++;
        G.gaps--;
        break;
    case BC_SEQ_DUP:
        G.dups++;
        break;
    case BC_SEQ_STALE:
        G.stale++;
        break;
    }
}

/* The test modes (--test-drop, --test-dup, --test-reorder N) act on every
 * Nth delivery, to show that the detectors below fire. */
static int test_hit(int every)
{
    return every > 0 && ++G.test_count % (uint64_t)every == 0;
}

static void delivered(conn *c, uint64_t ch, uint64_t gid, uint64_t seq, uint64_t ts, uint64_t now);

/* Herald: {"push":"message","channel":C,"data":{"p","s","t","x"}}. */
static void on_delivery(conn *c, const char *p, size_t n, uint64_t now)
{
    const char *end = p + n;
    const char *data = json_value(p, end, "\"data\"");
    uint64_t ch, gid, seq, ts;
    if (push_channel(p, end, &ch) < 0 || !data || json_uint(data, end, "\"p\"", &gid) < 0 ||
        json_uint(data, end, "\"s\"", &seq) < 0 || json_uint(data, end, "\"t\"", &ts) < 0) {
        err_add(E_BAD_PUSH);
        return;
    }
    delivered(c, ch, gid, seq, ts, now);
}

/* nchan: the frame is the published body {"p","s","t","x"}, on the channel
 * the connection subscribed to with its URL. */
static void on_nchan_delivery(conn *c, const char *p, size_t n, uint64_t now)
{
    const char *end = p + n;
    uint64_t gid, seq, ts;
    if (json_uint(p, end, "\"p\"", &gid) < 0 || json_uint(p, end, "\"s\"", &seq) < 0 ||
        json_uint(p, end, "\"t\"", &ts) < 0) {
        err_add(E_BAD_PUSH);
        return;
    }
    delivered(c, sub_channel(c, 0), gid, seq, ts, now);
}

static void delivered(conn *c, uint64_t ch, uint64_t gid, uint64_t seq, uint64_t ts, uint64_t now)
{
    G.t_last_delivery = now;
    on_credit(gid, seq); /* flow control sees every delivery, test drops too */
    if (test_hit(O.test_drop))
        return; /* pretend it never arrived */
    G.received++;
    G.received_by_port[c->ridx % (uint32_t)O.nports]++;
    G.wire_bytes += G.cur_wire;
    G.deflated += (uint64_t)G.cur_deflated;
    hist_add(&G.lat, now > ts ? now - ts : 0);
    uint64_t k = (uint64_t)O.sub_channels, m = (uint64_t)O.channels;
    uint64_t slot = (ch % m + m - ((uint64_t)c->ridx * k) % m) % m;
    if (ch >= m || slot >= k) {
        err_add(E_UNEXPECTED_CHANNEL);
        return;
    }
    if ((gid + seq) % m != ch) {
        err_add(E_MISROUTED);
        return;
    }
    if (gid >= (uint64_t)O.pub_total)
        return; /* a publisher we do not track */
    stream *st = &G.streams[((uint64_t)c->ridx * k + slot) * (uint64_t)O.pub_total + gid];
    if (!G.held && test_hit(O.test_reorder)) {
        G.held = st; /* checked after the next delivery of the same stream */
        G.held_seq = seq;
        return;
    }
    stream_check(st, seq);
    if (G.held == st) {
        G.held = NULL;
        stream_check(st, G.held_seq);
    }
    if (test_hit(O.test_dup)) {
        G.received++;
        stream_check(st, seq);
    }
}

/*---- messages ------------------------------------------------------------------*/

static void on_reply(conn *c, uint64_t id, int ok, uint64_t now)
{
    if (id == CONNECT_ID) { /* --auth cookie: the connect's reply follows `connected` */
        if (!ok)
            err_add(E_UNKNOWN_REPLY);
        return;
    }
    if (c->role == R_SUB && c->state == S_SUBSCRIBING) {
        if (!ok)
            err_add(E_SUBSCRIBE);
        if (--c->pending == 0) {
            c->state = S_READY;
            conn_ready(c);
        }
    } else if (c->role == R_PUB && id >= 1) {
        if (!ok)
            err_add(E_PUBLISH);
        on_ack(publisher_of(c), (uint32_t)(id - 1), ok, now);
    } else {
        err_add(E_UNKNOWN_REPLY);
    }
}

static void dispatch(conn *c, const char *p, size_t n, uint64_t now)
{
    uint64_t id = 0;
    if (O.proto == PROTO_NCHAN) {
        if (c->role == R_SUB && c->state == S_READY)
            on_nchan_delivery(c, p, n, now);
        return;
    }
    enum mkind kind = classify(p, n, &id);
    switch (kind) {
    case M_MESSAGE:
        on_delivery(c, p, n, now);
        break;
    case M_CONNECTED:
        if (c->state == S_AWAIT_CONNECTED)
            handshake_done(c, now);
        break;
    case M_REPLY_OK:
    case M_REPLY_ERR:
        on_reply(c, id, kind == M_REPLY_OK, now);
        break;
    case M_SUBSCRIBED: /* a stream's answer to a channel of its URL */
        if (is_stream(c) && c->state == S_SUBSCRIBING)
            on_reply(c, 0, 1, now);
        break;
    default:
        break;
    }
}

/*---- Listen-only stream input (--sub-transport) --------------------------------*/

/* The head of a stream's 200 response; its body follows. */
static size_t stream_head_input(conn *c, const char *p, size_t n, uint64_t now)
{
    (void)now;
    const char *e = NULL;
    for (size_t i = 3; i < n && i < MAX_HTTP_HEAD; i++)
        if (!memcmp(p + i - 3, "\r\n\r\n", 4)) {
            e = p + i + 1;
            break;
        }
    if (!e) {
        if (n >= MAX_HTTP_HEAD)
            conn_fail(c, BC_BAD_HTTP, 0);
        return 0;
    }
    int status = n > 12 && !memcmp(p, "HTTP/1.", 7) ? atoi(p + 9) : 0;
    if (status != 200) {
        conn_fail(c, BC_HTTP_STATUS, status);
        return 0;
    }
    c->state = S_AWAIT_CONNECTED;
    return (size_t)(e - p);
}

/* SSE events (their data: line) or NDJSON lines, each dispatched as a
 * WebSocket text message; what is not complete yet stays for the next read. */
static size_t stream_input(conn *c, const char *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (off < n && c->state != S_CLOSED) {
        const char *line = p + off, *nl = memchr(line, '\n', n - off);
        if (!nl)
            break;
        size_t len = (size_t)(nl - line);
        off += len + 1;
        /* wire bytes of a delivery: the line; for SSE also "event: message\n"
         * before it and the blank line after (bench channels keep no
         * history, so no id: line) */
        if (O.sub_stream == 2) {
            G.cur_wire = len + 1;
            if (len)
                dispatch(c, line, len, now);
        } else if (len > 6 && !memcmp(line, "data: ", 6)) {
            G.cur_wire = len + 1 + 16;
            dispatch(c, line + 6, len - 6, now);
        }
    }
    return off;
}

/*---- WebSocket input ------------------------------------------------------------*/

static void on_close_frame(conn *c, const uint8_t *p, size_t n)
{
    int code = bc_ws_close_reply(&c->out, &G.rng, p, n);
    conn_flush(c);
    conn_lost(c, "close", code);
}

/* A compressed message (RFC 7692): raw deflate without its 00 00 ff ff,
 * each message on its own (Herald answers server_no_context_takeover).
 * Returns the text (valid until the next call) or NULL. */
static const char *inflate_msg(const uint8_t *p, size_t n, size_t *out)
{
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    if (!G.inf_ready) {
        if (inflateInit2(&G.inf, -15) != Z_OK || !(G.inf_buf = malloc(MAX_MESSAGE)))
            return NULL;
        G.inf_ready = 1;
    } else {
        inflateReset(&G.inf);
    }
    G.inf.next_out = G.inf_buf;
    G.inf.avail_out = MAX_MESSAGE;
    G.inf.next_in = (uint8_t *)p;
    G.inf.avail_in = (uInt)n;
    int rc = inflate(&G.inf, Z_SYNC_FLUSH);
    if (rc == Z_OK || rc == Z_BUF_ERROR) {
        G.inf.next_in = (uint8_t *)tail;
        G.inf.avail_in = sizeof tail;
        rc = inflate(&G.inf, Z_SYNC_FLUSH);
    }
    if ((rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) || G.inf.avail_in)
        return NULL;
    *out = MAX_MESSAGE - G.inf.avail_out;
    return (const char *)G.inf_buf;
}

/* A frame for c (bc_frame_fn). */
static void on_frame(void *vc, const hr_ws_frame *f, uint8_t *p, uint64_t now)
{
    conn *c = vc;
    size_t n = (size_t)f->len;
    if (f->masked) /* RFC 6455 5.1: servers must not mask */
        err_add(E_MASKED_FRAME);
    switch (f->opcode) {
    case HR_WS_OP_TEXT:
    case HR_WS_OP_CONT: {
        /* Herald never fragments what it compresses */
        int whole = f->fin && hr_buf_pending(&c->msg) == 0;
        if (f->rsv1 && !whole) {
            err_add(E_INFLATE);
            conn_lost(c, "fail", 0);
            return;
        }
        const char *m;
        size_t mn;
        int r = bc_ws_message(&c->msg, f, p, MAX_MESSAGE, &m, &mn);
        if (r <= 0) {
            if (r < 0)
                conn_fail(c, r, 0);
            return;
        }
        G.cur_wire = whole ? f->hdrlen + n : mn; /* parts: payload only, headers not kept */
        G.cur_deflated = f->rsv1;
        if (f->rsv1 && !(m = inflate_msg(p, n, &mn))) {
            err_add(E_INFLATE);
            conn_lost(c, "fail", 0);
            return;
        }
        dispatch(c, m, mn, now);
        if (!whole && c->state != S_CLOSED)
            hr_buf_consume(&c->msg, hr_buf_pending(&c->msg));
        return;
    }
    case HR_WS_OP_CLOSE:
        on_close_frame(c, p, n);
        return;
    case HR_WS_OP_PING:
        ws_send(c, HR_WS_OP_PONG, p, n);
        return;
    case HR_WS_OP_BINARY:
        err_add(E_BINARY);
        return;
    default:
        return;
    }
}

/* Handles every complete frame in p[0..n); returns the bytes consumed. */
static size_t ws_input(conn *c, uint8_t *p, size_t n, uint64_t now)
{
    int err;
    size_t used = bc_ws_frames(c, &c->fd, p, n, MAX_MESSAGE, c->pmd, on_frame, now, &err);
    if (err < 0)
        conn_fail(c, err, 0);
    return used;
}

/*---- HTTP input: upgrade response, REST responses ------------------------------*/

static size_t upgrade_input(conn *c, const char *p, size_t n, uint64_t now)
{
    int status = 0, pmd = 0;
    int r = bc_upgrade_response(p, n, MAX_HTTP_HEAD, c->accept, &status, &pmd);
    if (r <= 0) {
        if (r < 0)
            conn_fail(c, r, status);
        return 0;
    }
    if (O.deflate) {
        c->pmd = (uint8_t)pmd;
        if (c->pmd)
            G.pmd_conns++;
        else
            err_add(E_NO_DEFLATE);
    }
    c->state = S_AWAIT_CONNECTED;
    if (O.proto == PROTO_NCHAN) /* no {"push":"connected"}: ready at the 101 */
        handshake_done(c, now);
    else if (O.cookie_auth) { /* no token: Herald asks its connect proxy */
        static const char cmd[] = "{\"id\":" CONNECT_ID_STR ",\"op\":\"connect\"}";
        ws_send(c, HR_WS_OP_TEXT, cmd, sizeof cmd - 1);
    }
    return (size_t)r;
}

static void on_rest_response(conn *c, int status, uint64_t now)
{
    publisher *p = publisher_of(c);
    /* Herald answers 200; nchan 201 (delivered to subscribers) or 202 (none) */
    int ok = O.proto == PROTO_NCHAN ? status == 201 || status == 202 : status == 200;
    if (!ok) {
        err_add(E_REST_STATUS);
        bc_tally(G.http_status, G.http_status_n, &G.nhttp, 8, status);
    }
    on_ack(p, p->rest_acked++, ok, now);
}

/* Parses pipelined responses (Content-Length bodies only). */
static size_t rest_input(conn *c, const char *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (off < n && c->state != S_CLOSED) {
        int status = 0, r = bc_http_response(p + off, n - off, MAX_HTTP_HEAD, &status);
        if (r <= 0) {
            if (r < 0)
                conn_fail(c, r, 0);
            break;
        }
        on_rest_response(c, status, now);
        off += (size_t)r;
    }
    return off;
}

static size_t input(void *conn_, uint8_t *p, size_t n, uint64_t now)
{
    conn *c = conn_;
    G.t_last_rx = now;
    size_t used = 0;
    if (is_stream(c)) {
        if (c->state == S_UPGRADING)
            used = stream_head_input(c, (const char *)p, n, now);
        if (c->state == S_CLOSED || c->state < S_AWAIT_CONNECTED)
            return used;
        return used + stream_input(c, (const char *)p + used, n - used, now);
    }
    if (c->state == S_UPGRADING)
        used = upgrade_input(c, (const char *)p, n, now);
    if (c->state == S_CLOSED || c->state < S_AWAIT_CONNECTED)
        return used;
    if (c->role == R_REST)
        return used + rest_input(c, (const char *)p + used, n - used, now);
    return used + ws_input(c, p + used, n - used, now);
}

/* Reads what c has. ev: the epoll flags that woke it (0: unknown). */
static void on_readable(conn *c, uint32_t ev, uint64_t now)
{
    int r = bc_read(c, &c->fd, &c->in, ev, G.rbuf, RBUF_SIZE, READS_PER_EVENT, input, now);
    if (r < 0) {
        if (c->in_handshake)
            err_add(E_EOF_HANDSHAKE);
        conn_lost(c, r == -EPIPE ? "eof" : "reset", 0);
    } else if (r > 0 && !c->more) {
        /* still readable: resume next iteration (edge-triggered, no new event) */
        c->more = 1;
        G.more[G.nmore++] = c;
    }
}

static void on_event(conn *c, uint32_t ev, uint64_t now)
{
    if (c->state == S_CLOSED)
        return;
    if (c->state == S_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        on_connected(c);
        if (c->state == S_CLOSED)
            return;
    }
    if (ev & EPOLLOUT)
        conn_flush(c);
    if (c->state != S_CLOSED && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        on_readable(c, ev, now);
}

/* Resumes connections that were still readable after READS_PER_EVENT reads.
 * Ones that stay readable are appended after the snapshot (G.more holds
 * 2 x total entries) and moved to the front for the next iteration. */
static void continue_reads(uint64_t now)
{
    int n = G.nmore;
    for (int i = 0; i < n; i++) {
        conn *c = G.more[i];
        c->more = 0;
        if (c->state != S_CLOSED)
            on_readable(c, 0, now); /* flags unknown: read until EAGAIN */
    }
    memmove(G.more, G.more + n, (size_t)(G.nmore - n) * sizeof *G.more);
    G.nmore -= n;
}

/*---- server process sampling ----------------------------------------------------*/

/* The sum over every --server-pid (the nodes of a cluster, their Redis);
 * each one's own figure is kept in per[] for the report. -1 if any is
 * unknown. */
static double server_cpu(double *per)
{
    if (O.nserver_pids == 0)
        return -1;
    double sum = 0;
    for (int i = 0; i < O.nserver_pids; i++) {
        per[i] = proc_cpu_s(O.server_pids[i]);
        if (per[i] < 0)
            return -1;
        sum += per[i];
    }
    return sum;
}

static long server_rss_kb(void)
{
    if (O.nserver_pids == 0)
        return -1;
    long sum = 0;
    for (int i = 0; i < O.nserver_pids; i++) {
        long kb = proc_rss_kb(O.server_pids[i]);
        if (kb < 0)
            return -1;
        sum += kb;
    }
    return sum;
}

/*---- phases ----------------------------------------------------------------------*/

static int role_of(int i)
{
    if (i < O.subs)
        return R_SUB;
    if (i < O.subs + O.ws_pubs)
        return R_PUB;
    if (i < O.subs + O.ws_pubs + O.rest_pubs)
        return R_REST;
    return R_IDLE;
}

static void connect_more(uint64_t now)
{
    while (G.opened < G.total && G.inflight < O.concurrency) {
        conn_open(&G.conns[G.opened], (uint32_t)G.opened, now);
        G.opened++;
    }
}

static void write_ready_file(void)
{
    if (!O.ready_file)
        return;
    FILE *f = fopen(O.ready_file, "w");
    if (f) {
        fprintf(f, "%d %d\n", G.ready, G.failed);
        fclose(f);
    }
}

static void start_publish_or_hold(uint64_t now)
{
    if (G.npubs > 0 && (O.count > 0 || O.duration > 0)) {
        G.phase = P_PUBLISH;
        G.t_pub_start = now;
        G.t_last_rx = now;
        G.cpu0 = server_cpu(G.pid_cpu0);
        return;
    }
    G.phase = O.hold > 0 ? P_HOLD : P_END;
    G.t_hold_end = now + (uint64_t)(O.hold * 1e9);
}

/* Fan-out per channel is counted from the subscribers that are ready now:
 * that is what a perfect server would deliver each publication to. */
static void connect_done(uint64_t now)
{
    G.t_connect_done = now;
    for (int i = 0; i < O.subs; i++) {
        if (G.conns[i].state != S_READY)
            continue;
        for (int t = 0; t < O.sub_channels; t++)
            G.fanout0[((uint64_t)i * O.sub_channels + t) % O.channels]++;
    }
    memcpy(G.fanout, G.fanout0, sizeof *G.fanout * (size_t)O.channels);
    write_ready_file();
    if (O.verbose)
        fprintf(stderr, "loadgen: %d ready, %d failed in %.2fs\n", G.ready, G.failed,
                (double)(now - G.t_start) / 1e9);
    if (O.settle_ms > 0) { /* e.g. until every node's Redis SUBSCRIBE is in */
        G.phase = P_SETTLE;
        G.t_settle_end = now + (uint64_t)O.settle_ms * 1000000ull;
        return;
    }
    start_publish_or_hold(now);
}

/* Fails connections whose handshake is older than the connect timeout. */
static void handshake_timeouts(uint64_t now, int all)
{
    uint64_t limit = (uint64_t)(O.connect_timeout * 1e9);
    for (int i = 0; i < G.opened; i++) {
        conn *c = &G.conns[i];
        if (c->state != S_CLOSED && c->state != S_READY && (all || now - c->t_open > limit)) {
            err_add(E_HANDSHAKE_TIMEOUT);
            conn_lost(c, "timeout", 0);
        }
    }
}

/* The connect phase ends when every connection is ready or failed, or at
 * twice --connect-timeout overall (each handshake also has its own bound,
 * counted from its connect(), since they start over time). */
static void connect_phase_check(uint64_t now)
{
    int pending = G.ready + G.failed < G.total;
    if (pending && now - G.t_start < (uint64_t)(O.connect_timeout * 1e9) * 2)
        return;
    if (pending) {
        G.connect_timed_out = 1;
        for (int i = G.opened; i < G.total; i++)
            G.conns[i].state = S_CLOSED, G.failed++;
        G.opened = G.total;
        handshake_timeouts(now, 1);
    }
    connect_done(now);
}

static void finish_measure(uint64_t now)
{
    if (G.held) { /* --test-reorder: check the delivery still held back */
        stream_check(G.held, G.held_seq);
        G.held = NULL;
    }
    uint64_t last = G.t_last_delivery > G.t_last_ack ? G.t_last_delivery : G.t_last_ack;
    G.t_measure_end = last > G.t_pub_start ? last : now;
    G.cpu1 = server_cpu(G.pid_cpu1);
    G.rss_kb = server_rss_kb();
    G.phase = O.hold > 0 ? P_HOLD : P_END;
    G.t_hold_end = now + (uint64_t)(O.hold * 1e9);
}

static void tick(uint64_t now)
{
    if (G.phase == P_CONNECT)
        handshake_timeouts(now, 0);
    if (G.phase == P_PUBLISH || G.phase == P_DRAIN)
        window_timeouts(now);
    if ((G.phase == P_PUBLISH || G.phase == P_DRAIN) && in_flight() > 0 &&
        now - G.t_last_rx > (uint64_t)O.stall_ms * 1000000ull) {
        G.stalled = 1; /* the server stopped answering: report, do not wait */
        if (O.verbose)
            fprintf(stderr, "loadgen: stalled (%llu in flight)\n", (unsigned long long)in_flight());
        finish_measure(now);
    }
}

/* Once a window timeout has given up on a publication, its deliveries may
 * still be on their way (a slow server, not a lossy one): wait for a quiet
 * period before counting them as lost. */
static int drained(uint64_t now)
{
    return G.window_timeouts == 0 || now - G.t_last_rx > QUIET_NS;
}

static void step(uint64_t now)
{
    switch (G.phase) {
    case P_CONNECT:
        connect_more(now);
        connect_phase_check(now);
        break;
    case P_SETTLE:
        if (now >= G.t_settle_end)
            start_publish_or_hold(now);
        break;
    case P_PUBLISH:
        if (publishing_over(now)) {
            G.phase = P_DRAIN;
            break;
        }
        publish_some(now);
        break;
    case P_DRAIN: /* bounded: window timeouts or the stall check end it */
        if (in_flight() == 0 && drained(now))
            finish_measure(now);
        break;
    case P_HOLD:
        if (now >= G.t_hold_end || G.usr1)
            G.phase = P_END;
        break;
    case P_END:
        break;
    }
}

/*---- report -----------------------------------------------------------------------*/

static double secs(uint64_t a, uint64_t b)
{
    return b > a ? (double)(b - a) / 1e9 : 0;
}

static double per_s(double n, double s)
{
    return s > 0 ? n / s : 0;
}

static void json_hist(FILE *f, const char *prefix, const hist *h)
{
    fprintf(f,
            "\"%sp50_ms\":%.3f,\"%sp90_ms\":%.3f,\"%sp99_ms\":%.3f,\"%sp999_ms\":%.3f,"
            "\"%smax_ms\":%.3f,\"%smean_ms\":%.3f",
            prefix, hist_pct_ms(h, 50), prefix, hist_pct_ms(h, 90), prefix, hist_pct_ms(h, 99),
            prefix, hist_pct_ms(h, 99.9), prefix, (double)h->max / 1e6, prefix,
            h->n ? h->sum / (double)h->n / 1e6 : 0);
}

static void json_table(FILE *f, const char *name, const int *k, const int *v, int n, int err)
{
    fprintf(f, ",\"%s\":{", name);
    for (int i = 0; i < n; i++) {
        const char *en = err ? strerrorname_np(k[i]) : NULL;
        if (en)
            fprintf(f, "%s\"%s\":%d", i ? "," : "", en, v[i]);
        else
            fprintf(f, "%s\"%d\":%d", i ? "," : "", k[i], v[i]);
    }
    fputc('}', f);
}

static void json_conns(FILE *f)
{
    double ce = secs(G.t_first_open, G.t_last_hs);
    fprintf(f,
            "\"conns\":{\"subs\":%d,\"ws_pubs\":%d,\"rest_pubs\":%d,\"idle\":%d,\"total\":%d,"
            "\"ready\":%d,\"failed\":%d,\"timed_out\":%s},",
            O.subs, O.ws_pubs, O.rest_pubs, O.idle, G.total, G.ready, G.failed,
            G.connect_timed_out ? "true" : "false");
    fprintf(f, "\"connect\":{\"completed\":%llu,\"elapsed_s\":%.4f,\"rate\":%.1f,",
            (unsigned long long)G.hs.n, ce, per_s((double)G.hs.n, ce));
    json_hist(f, "", &G.hs);
    fputs("},", f);
}

static void json_publish(FILE *f, double ms)
{
    fprintf(f,
            "\"publish\":{\"mode\":\"%s\",\"rate_target\":%.2f,\"window\":%d,\"size\":%d,"
            "\"sent\":%llu,\"acked\":%llu,\"errors\":%llu,\"unsettled\":%llu,"
            "\"window_timeouts\":%llu,\"reconnects\":%llu,\"resent\":%llu,\"send_s\":%.4f,"
            "\"rate\":%.1f,",
            O.rate > 0 ? "paced" : "flat", O.rate, O.window, O.size,
            (unsigned long long)G.published, (unsigned long long)G.acked,
            (unsigned long long)G.pub_errors, (unsigned long long)in_flight(),
            (unsigned long long)G.window_timeouts, (unsigned long long)G.rest_reconnects,
            (unsigned long long)G.rest_resent, secs(G.t_pub_start, G.t_pub_end),
            per_s((double)G.acked, ms));
    json_hist(f, "ack_", &G.ack);
    fputs("},", f);
}

static void json_delivery(FILE *f, double ms)
{
    uint64_t unique = G.received - G.dups - G.stale;
    int local = G.npubs > 0 && O.subs > 0;
    fprintf(f, "\"delivery\":{\"expected\":");
    if (local)
        fprintf(f, "%llu,\"lost\":%lld", (unsigned long long)G.expected,
                (long long)G.expected - (long long)unique);
    else
        fputs("null,\"lost\":null", f);
    fprintf(f,
            ",\"received\":%llu,\"unique\":%llu,\"gaps\":%llu,\"dups\":%llu,\"stale\":%llu,"
            "\"reordered\":%llu,\"rate\":%.1f,",
            (unsigned long long)G.received, (unsigned long long)unique, (unsigned long long)G.gaps,
            (unsigned long long)G.dups, (unsigned long long)G.stale,
            (unsigned long long)G.reordered, per_s((double)G.received, ms));
    json_hist(f, "", &G.lat);
    fputs(",\"received_by_port\":{", f);
    for (int i = 0; i < O.nports; i++)
        fprintf(f, "%s\"%d\":%llu", i ? "," : "", O.ports[i],
                (unsigned long long)G.received_by_port[i]);
    fputs("}},", f);
}

/* Prints `"key":value` pairs, commas between them. */
static void json_pair(FILE *f, int *first, const char *key, unsigned long long v)
{
    fprintf(f, "%s\"%s\":%llu", *first ? "" : ",", key, v);
    *first = 0;
}

static void json_closes(FILE *f)
{
    int first = 1;
    char key[16];
    fputs("\"closes\":{", f);
    for (int i = 0; i < G.nclose; i++) {
        snprintf(key, sizeof key, "%d", G.close_codes[i]);
        json_pair(f, &first, key, (unsigned long long)G.close_counts[i]);
    }
    if (G.closed_eof)
        json_pair(f, &first, "eof", G.closed_eof);
    if (G.closed_reset)
        json_pair(f, &first, "reset", G.closed_reset);
    fprintf(f, "},\"closed_by_role\":{\"sub\":%llu,\"pub\":%llu,\"idle\":%llu},",
            (unsigned long long)G.closed_by_role[R_SUB],
            (unsigned long long)(G.closed_by_role[R_PUB] + G.closed_by_role[R_REST]),
            (unsigned long long)G.closed_by_role[R_IDLE]);
}

static void json_errors(FILE *f)
{
    int first = 1;
    fputs("\"errors\":{", f);
    for (int e = 0; e < E_N; e++)
        if (G.errors[e])
            json_pair(f, &first, err_names[e], G.errors[e]);
    fputc('}', f);
    json_table(f, "http_statuses", G.http_status, G.http_status_n, G.nhttp, 0);
    json_table(f, "socket_errors", G.conn_errno, G.conn_errno_n, G.nerrno, 1);
}

static void report(uint64_t now)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    double ms = secs(G.t_pub_start, G.t_measure_end);
    fprintf(f, "{\"tag\":\"%s\",\"target\":\"%s:%d\",", O.tag, O.host, O.port);
    json_conns(f);
    json_publish(f, ms);
    json_delivery(f, ms);
    fprintf(f, "\"measure_s\":%.4f,\"server_cpu_s\":", ms);
    if (G.cpu0 >= 0 && G.cpu1 >= 0 && G.t_pub_start)
        fprintf(f, "%.3f", G.cpu1 - G.cpu0);
    else
        fputs("null", f);
    fputs(",\"server_cpu_by_pid\":{", f);
    for (int i = 0; i < O.nserver_pids && G.cpu0 >= 0 && G.cpu1 >= 0 && G.t_pub_start; i++)
        fprintf(f, "%s\"%d\":%.3f", i ? "," : "", O.server_pids[i], G.pid_cpu1[i] - G.pid_cpu0[i]);
    fprintf(f, "},\"server_rss_kb\":%ld,", G.rss_kb);
    fprintf(f,
            "\"wire\":{\"deflate_offered\":%s,\"deflate_conns\":%d,\"bytes\":%llu,"
            "\"per_delivery\":%.1f,\"deflated\":%llu},",
            O.deflate ? "true" : "false", G.pmd_conns, (unsigned long long)G.wire_bytes,
            G.received ? (double)G.wire_bytes / (double)G.received : 0,
            (unsigned long long)G.deflated);
    json_closes(f);
    json_errors(f);
    fprintf(f, ",\"stalled\":%s,\"timed_out\":%s,\"interrupted\":%s,\"elapsed_s\":%.3f}",
            G.stalled ? "true" : "false", G.timed_out ? "true" : "false", G.stop ? "true" : "false",
            secs(G.t_start, now));
    fclose(f);
    puts(buf);
    fflush(stdout);
    free(buf);
}

/*---- command line -------------------------------------------------------------------*/

static void usage(FILE *f)
{
    fputs(
        "usage: herald-loadgen [options]\n"
        "target:   --host IP (127.0.0.1) --port N (8080) --src N (8 source addresses\n"
        "          127.0.0.<src-first>.., 0 = none) --src-first N (2)\n"
        "          --ports P1,P2.. (subscriber/idle i goes to P[i % n]; default --port)\n"
        "          --pub-ports P1,.. (publisher j goes to P[j % n]; default --ports)\n"
        "protocol: --proto herald|nchan (herald): nchan = WebSocket subscribers on\n"
        "          <sub-path><channel> (/sub/), REST publishers POST the bare payload to\n"
        "          <pub-path><channel> (/pub/), 201/202 = accepted; --sub-channels 1\n"
        "auth:     --secret S (HS256 JWT secret) --api-key K (REST) --ttl S (3600) --tag S\n"
        "          --auth jwt|cookie (jwt: a JWT in ?token=; cookie: no JWT, the header\n"
        "          Cookie: bench_user=bench-<tag>-<n> and {\"op\":\"connect\"}, for a\n"
        "          Herald whose connect proxy answers them)\n"
        "roles:    --subs N --ws-pubs N --rest-pubs N --idle N\n"
        "channels: --channels M (1) --sub-channels K (1, per subscriber) --prefix S (bench.)\n"
        "publish:  --count N (total) --duration S --rate R (per s, 0 = flat out)\n"
        "          --window W (16 in flight per publisher) --size B (100, data bytes)\n"
        "          --pub-id-base N --pub-total N (publishers to track, default local)\n"
        "          --payload pad|chat (pad: {p,s,t,x} padded to --size; chat: a ~1 KB\n"
        "          chat event, --size ignored)\n"
        "          --deflate 1 (WebSocket connections offer permessage-deflate)\n"
        "          --sub-transport ws|sse|stream (subscribers: WebSocket, GET /sse, GET /stream)\n"
        "timing:   --concurrency C (256 handshakes in flight) --connect-timeout S (60)\n"
        "          --hold S (after publishing; SIGUSR1 ends it) --timeout S (300 overall)\n"
        "          --stall-ms (5000: no answer while publications are in flight)\n"
        "          --window-timeout-ms (5000: give up on one lost reply or delivery)\n"
        "          --settle-ms (0: pause between the last handshake and publishing)\n"
        "measure:  --server-pid PID[,PID..] (CPU and RSS, summed: nodes + Redis)\n"
        "          --ready-file PATH\n"
        "tests:    --test-drop N / --test-dup N / --test-reorder N (every Nth delivery)\n"
        "          -v (progress on stderr)\n"
        "scenario: --scenario FILE: a JSON scenario over several processes\n"
        "          (herald-loadgen --scenario x --help lists its keys)\n",
        f);
}

/* Every option takes a value: 's' string, 'i' int, 'l' long, 'd' double. */
typedef struct optdef {
    const char *name;
    char type;
    void *ptr;
} optdef;

static const optdef optdefs[] = {
    {"host", 's', &O.host},
    {"port", 'i', &O.port},
    {"src", 'i', &O.src_count},
    {"src-first", 'i', &O.src_first},
    {"secret", 's', &O.secret},
    {"api-key", 's', &O.api_key},
    {"ttl", 'l', &O.ttl},
    {"tag", 's', &O.tag},
    {"subs", 'i', &O.subs},
    {"ws-pubs", 'i', &O.ws_pubs},
    {"rest-pubs", 'i', &O.rest_pubs},
    {"idle", 'i', &O.idle},
    {"channels", 'i', &O.channels},
    {"sub-channels", 'i', &O.sub_channels},
    {"prefix", 's', &O.prefix},
    {"count", 'l', &O.count},
    {"duration", 'd', &O.duration},
    {"rate", 'd', &O.rate},
    {"window", 'i', &O.window},
    {"size", 'i', &O.size},
    {"pub-id-base", 'i', &O.pub_id_base},
    {"pub-total", 'i', &O.pub_total},
    {"concurrency", 'i', &O.concurrency},
    {"connect-timeout", 'd', &O.connect_timeout},
    {"hold", 'd', &O.hold},
    {"timeout", 'd', &O.timeout},
    {"stall-ms", 'i', &O.stall_ms},
    {"window-timeout-ms", 'i', &O.window_timeout_ms},
    {"settle-ms", 'i', &O.settle_ms},
    {"server-pid", 's', &O.server_pids_s},
    {"ports", 's', &O.ports_s},
    {"pub-ports", 's', &O.pub_ports_s},
    {"proto", 's', &O.proto_s},
    {"sub-path", 's', &O.sub_path},
    {"pub-path", 's', &O.pub_path},
    {"ready-file", 's', &O.ready_file},
    {"test-drop", 'i', &O.test_drop},
    {"test-dup", 'i', &O.test_dup},
    {"test-reorder", 'i', &O.test_reorder},
    {"payload", 's', &O.payload_s},
    {"deflate", 'i', &O.deflate},
    {"sub-transport", 's', &O.sub_transport_s},
    {"auth", 's', &O.auth_s},
};
#define NOPTS (sizeof optdefs / sizeof *optdefs)
#define OPT_BASE 256

static void set_opt(const optdef *d, const char *a)
{
    switch (d->type) {
    case 's':
        *(const char **)d->ptr = a;
        break;
    case 'i':
        *(int *)d->ptr = atoi(a);
        break;
    case 'l':
        *(long *)d->ptr = atol(a);
        break;
    default:
        *(double *)d->ptr = atof(a);
        break;
    }
}

/* Parses "a,b,c" into out[]; returns the count, or -1 (bad number, too many). */
static int parse_int_list(const char *s, int *out, int cap)
{
    int n = 0;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 0x7fffffff || n == cap || (*end && *end != ','))
            return -1;
        out[n++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return n;
}

static int parse_lists(void)
{
    if (O.ports_s) {
        O.nports = parse_int_list(O.ports_s, O.ports, MAX_PORTS);
    } else {
        O.ports[0] = O.port;
        O.nports = 1;
    }
    if (O.pub_ports_s) {
        O.npub_ports = parse_int_list(O.pub_ports_s, O.pub_ports, MAX_PORTS);
    } else if (O.nports > 0) {
        memcpy(O.pub_ports, O.ports, sizeof O.ports);
        O.npub_ports = O.nports;
    }
    O.nserver_pids = O.server_pids_s ? parse_int_list(O.server_pids_s, O.server_pids, MAX_PIDS) : 0;
    if (O.nports < 1 || O.npub_ports < 1 || O.nserver_pids < 0) {
        fprintf(stderr,
                "herald-loadgen: --ports, --pub-ports, --server-pid: up to %d positive "
                "numbers, comma-separated\n",
                MAX_PORTS);
        return -1;
    }
    O.port = O.ports[0];
    if (!O.proto_s || !strcmp(O.proto_s, "herald")) {
        O.proto = PROTO_HERALD;
    } else if (!strcmp(O.proto_s, "nchan")) {
        O.proto = PROTO_NCHAN;
    } else {
        fprintf(stderr, "herald-loadgen: --proto is herald or nchan\n");
        return -1;
    }
    return 0;
}

static int check_opts(void)
{
    const char *why = NULL;
    if (parse_lists() < 0)
        return -1;
    if (O.subs < 0 || O.ws_pubs < 0 || O.rest_pubs < 0 || O.idle < 0)
        why = "negative connection count";
    else if (O.channels < 1 || O.sub_channels < 1 || O.sub_channels > O.channels)
        why = "need 1 <= --sub-channels <= --channels";
    else if (O.window < 1 || O.window > 65536)
        why = "--window must be 1..65536";
    else if (O.size < 0 || O.size > 60000)
        why = "--size must be 0..60000";
    else if (O.payload_s && strcmp(O.payload_s, "pad") && strcmp(O.payload_s, "chat"))
        why = "--payload is pad or chat";
    else if (O.deflate && O.proto != PROTO_HERALD)
        why = "--deflate: Herald only";
    else if (O.sub_transport_s && strcmp(O.sub_transport_s, "ws") &&
             strcmp(O.sub_transport_s, "sse") && strcmp(O.sub_transport_s, "stream"))
        why = "--sub-transport is ws, sse or stream";
    else if (O.sub_transport_s && strcmp(O.sub_transport_s, "ws") &&
             (O.proto != PROTO_HERALD || O.deflate))
        why = "--sub-transport sse|stream: Herald, without --deflate";
    else if (O.proto == PROTO_NCHAN && (O.ws_pubs > 0 || O.idle > 0 || O.sub_channels != 1))
        why = "--proto nchan: subscribers on one channel each and REST publishers only";
    else if (O.auth_s && strcmp(O.auth_s, "jwt") && strcmp(O.auth_s, "cookie"))
        why = "--auth is jwt or cookie";
    else if (O.auth_s && !strcmp(O.auth_s, "cookie") && O.proto != PROTO_HERALD)
        why = "--auth cookie: Herald only";
    else if (O.proto == PROTO_HERALD && O.subs + O.ws_pubs + O.idle > 0 && !O.secret &&
             !(O.auth_s && !strcmp(O.auth_s, "cookie")))
        why = "--secret is required for WebSocket connections";
    else if (O.concurrency < 1 || O.timeout <= 0 || O.connect_timeout <= 0)
        why = "--concurrency, --timeout and --connect-timeout must be positive";
    else if (O.ws_pubs + O.rest_pubs > 0 && O.count <= 0 && O.duration <= 0)
        why = "publishers need --count or --duration";
    if (why)
        fprintf(stderr, "herald-loadgen: %s\n", why);
    O.chat = O.payload_s && !strcmp(O.payload_s, "chat");
    O.sub_stream = !O.sub_transport_s || !strcmp(O.sub_transport_s, "ws") ? 0
                   : !strcmp(O.sub_transport_s, "sse")                    ? 1
                                                                          : 2;
    O.cookie_auth = O.auth_s && !strcmp(O.auth_s, "cookie");
    return why ? -1 : 0;
}

static int parse_args(int argc, char **argv)
{
    struct option lo[NOPTS + 2];
    for (size_t i = 0; i < NOPTS; i++)
        lo[i] = (struct option){optdefs[i].name, required_argument, NULL, OPT_BASE + (int)i};
    lo[NOPTS] = (struct option){"help", no_argument, NULL, 'h'};
    lo[NOPTS + 1] = (struct option){0};
    int c;
    while ((c = getopt_long(argc, argv, "hv", lo, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            exit(0);
        } else if (c == 'v') {
            O.verbose = 1;
        } else if (c >= OPT_BASE && c < OPT_BASE + (int)NOPTS) {
            set_opt(&optdefs[c - OPT_BASE], optarg);
        } else {
            usage(stderr);
            return -1;
        }
    }
    if (!O.tag) {
        static char tag[32];
        snprintf(tag, sizeof tag, "%d", (int)getpid());
        O.tag = tag;
    }
    if (O.pub_total < O.pub_id_base + O.ws_pubs + O.rest_pubs)
        O.pub_total = O.pub_id_base + O.ws_pubs + O.rest_pubs;
    return check_opts();
}

/*---- setup and main loop ------------------------------------------------------------*/

/* Every socket is a descriptor: refuse a run the fd limit cannot hold rather
 * than failing half-way through with EMFILE. */
static int check_fd_limit(void)
{
    unsigned long long need = (unsigned long long)G.total + 32, limit;
    if (bc_fd_limit(need, &limit) < 0) {
        fprintf(stderr,
                "herald-loadgen: %d connections need %llu descriptors, limit is %llu: "
                "split them over several processes\n",
                G.total, need, limit);
        return -1;
    }
    return 0;
}

static int alloc_state(void)
{
    size_t nstreams = (size_t)O.subs * (size_t)O.sub_channels * (size_t)O.pub_total;
    if (nstreams > (1u << 26)) {
        fprintf(stderr, "herald-loadgen: %zu receive streams is too many\n", nstreams);
        return -1;
    }
    G.conns = calloc((size_t)G.total + 1, sizeof *G.conns);
    G.dirty = calloc((size_t)G.total + 1, sizeof *G.dirty);
    G.more = calloc(2 * (size_t)G.total + 1, sizeof *G.more);
    G.grave = calloc((size_t)G.total + 1, sizeof *G.grave);
    G.redial = calloc((size_t)G.total + 1, sizeof *G.redial);
    G.pubs = calloc((size_t)G.npubs + 1, sizeof *G.pubs);
    G.streams = calloc(nstreams + 1, sizeof *G.streams);
    G.fanout0 = calloc((size_t)O.channels, sizeof *G.fanout0);
    G.fanout = calloc((size_t)O.channels, sizeof *G.fanout);
    G.rbuf = malloc(RBUF_SIZE);
    if (!G.conns || !G.dirty || !G.more || !G.grave || !G.redial || !G.pubs || !G.streams ||
        !G.fanout0 || !G.fanout || !G.rbuf)
        return -1;
    for (int i = 0; i < G.total; i++) {
        conn *c = &G.conns[i];
        int first[] = {0, O.subs, O.subs + O.ws_pubs, O.subs + O.ws_pubs + O.rest_pubs};
        c->fd = -1;
        c->role = (uint8_t)role_of(i);
        c->ridx = (uint32_t)(i - first[c->role]);
        if (c->role == R_PUB || c->role == R_REST) { /* publisher k of all */
            uint32_t k = c->role == R_PUB ? c->ridx : (uint32_t)O.ws_pubs + c->ridx;
            c->port = O.pub_ports[k % (uint32_t)O.npub_ports];
        } else {
            c->port = O.ports[c->ridx % (uint32_t)O.nports];
        }
    }
    return 0;
}

/* Stream (sub, slot, publisher) expects first the smallest seq with
 * (publisher + seq) % M == channel of the slot. */
static void init_streams(void)
{
    uint64_t m = (uint64_t)O.channels;
    for (int i = 0; i < O.subs; i++)
        for (int t = 0; t < O.sub_channels; t++) {
            uint64_t ch = ((uint64_t)i * O.sub_channels + t) % m;
            for (int j = 0; j < O.pub_total; j++) {
                stream *st = &G.streams[((size_t)i * O.sub_channels + t) * O.pub_total + j];
                st->next = (uint32_t)((ch + m - (uint64_t)j % m) % m);
            }
        }
}

static int init_publishers(void)
{
    for (int i = 0; i < G.npubs; i++) {
        publisher *p = &G.pubs[i];
        p->c = &G.conns[O.subs + i];
        p->gid = (uint32_t)(O.pub_id_base + i);
        p->slots = calloc((size_t)O.window, sizeof *p->slots);
        if (!p->slots)
            return -1;
    }
    return 0;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        G.usr1 = 1;
    else
        G.stop = 1;
}

static void install_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int poll_timeout_ms(void)
{
    if (G.nmore > 0)
        return 0;
    if (G.phase == P_PUBLISH && O.rate > 0)
        return 1; /* pacing resolution */
    return 10;
}

static void run(void)
{
    struct epoll_event evs[1024];
    while (G.phase != P_END && !G.stop) {
        uint64_t now = now_ns();
        if (now - G.t_start > (uint64_t)(O.timeout * 1e9)) {
            G.timed_out = 1;
            if (G.phase == P_PUBLISH || G.phase == P_DRAIN)
                finish_measure(now);
            break;
        }
        step(now);
        if (now >= G.t_next_tick) {
            tick(now);
            G.t_next_tick = now + TICK_NS;
        }
        flush_dirty();
        int n = epoll_wait(G.ep, evs, 1024, poll_timeout_ms());
        now = now_ns();
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events, now);
        continue_reads(now);
        flush_dirty();
        bury();
        redial_closed(now);
    }
    if (G.stop && (G.phase == P_PUBLISH || G.phase == P_DRAIN))
        finish_measure(now_ns());
}

int scenario_main(int argc, char **argv); /* scenario.c: --scenario FILE */

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--scenario"))
            return scenario_main(argc, argv);
    if (parse_args(argc, argv) < 0)
        return 2;
    G.total = O.subs + O.ws_pubs + O.rest_pubs + O.idle;
    G.npubs = O.ws_pubs + O.rest_pubs;
    G.rng = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    if (check_fd_limit() < 0)
        return 2;
    if (alloc_state() < 0 || init_publishers() < 0) {
        fprintf(stderr, "herald-loadgen: out of memory\n");
        return 2;
    }
    init_streams();
    install_signals();
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    G.t_start = now_ns();
    G.cpu0 = G.cpu1 = -1;
    G.rss_kb = -1;
    run();
    report(now_ns());
    return 0;
}
