/* scenario.c - herald-loadgen --scenario FILE: a whole client population,
 * over several processes, from one JSON file.
 *
 * A scenario describes C WebSocket connections spread over the nodes of a
 * cluster (connection g on node g % nodes, its socket bound to source
 * address 127.0.0.<src_first + g % src_count> before connect), chat rooms of
 * N subscribers (connection g is in room g / N), personal channels
 * (user:<id>, subscribed by one connection of that user each), publications
 * paced per channel through REST (POST /api/v1/publish on the keep-alive
 * connections of the channel's node) or through `FCALL herald_publish` on
 * the channel's Redis shard, a fraction of the channels with history, and
 * whether clients reconnect as herald.js does (exponential backoff with
 * full jitter, resubscribing history channels with `since`). usage()
 * lists every key; bench/README.md explains the numbers.
 *
 * Processes. One process holds at most ~19,900 sockets here (descriptor
 * limit), so the parent forks `procs` workers: worker k owns connection g
 * when g % procs == k and publishes channel c when c % procs == k. The
 * parent only coordinates, over one socketpair per worker, in text lines:
 *   worker -> parent  R <ready> <failed>           connect phase over
 *   parent -> worker  G <t0> <t_end>              publish in [t0, t_end)
 *   worker -> parent  P <n> {<ch> <accepted>}...   its channels' counts
 *   parent -> worker  A <n> {<ch> <accepted>}...   every channel's count
 *   worker -> parent  F <json>                     the worker's report
 * and reads the servers' CPU (/proc) at t0 and t_end, so rates and CPU
 * per delivery cover one steady interval. CLOCK_MONOTONIC is system-wide,
 * so every process shares t0 and the payloads' timestamps.
 *
 * Loss and order. Publication k of channel c carries
 * {"c":c,"s":k,"t":<send ns>,"x":<padding>}. A channel has at most one
 * publication in flight (the next waits for the acknowledgement), so its
 * order is its publish order, and every subscription must see s = 0, 1,
 * 2, ... in order, each once. At the end every worker knows every
 * channel's accepted count: lost = accepted - distinct received, per
 * subscription that was ready when publishing began.
 *
 * Bounded: every phase has a deadline, the parent kills workers that pass
 * `timeout`, and a worker whose parent goes away exits.
 *
 * (Why one file of ~2,500 lines: the worker - connections, publishing,
 * checks - and the parent - coordination, merged report - share the
 * scenario's types and the line protocol above; the sockets' code is
 * client.c's, shared with loadgen.c.) */
#include "bench_common.h"
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_NODES 32
#define MAX_SHARDS 16
#define MAX_PROCS 64
#define RBUF_SIZE (256 * 1024)
#define MAX_MESSAGE (4 << 20) /* a subscribe reply may carry 100 publications */
#define MAX_HTTP_HEAD 16384
#define READS_PER_EVENT 16
#define TICK_NS 100000000ull /* housekeeping: handshake timeouts, drain check */
#define MAX_CODES 32

int scenario_main(int argc, char **argv);

/*---- the scenario ---------------------------------------------------------------*/

enum proto { PROTO_HERALD, PROTO_NCHAN };

typedef struct endpoint {
    int port, pid;
} endpoint;

static struct scen {
    const char *name, *proto_s, *host, *secret, *api_key, *prefix, *hist_ns, *fcall;
    const char *sub_path, *pub_path, *events_file;
    int proto;
    endpoint nodes[MAX_NODES], redis[MAX_SHARDS];
    int nnodes, nredis;
    int procs, src_first, src_count;
    int conns, rooms, room_size, personal;
    double history_fraction, fcall_fraction, room_rate, personal_rate;
    double duration, connect_timeout, drain_timeout, ack_timeout, timeout;
    int size, concurrency, rest_conns, settle_ms;
    int reconnect, backoff_base_ms, backoff_max_ms, stable_ms, reconnect_timeout_ms;
    int test_drop, test_dup;
    long ttl;
    int verbose;
} S = {
    .name = "scenario",
    .host = "127.0.0.1",
    .prefix = "s.",
    .hist_ns = "h",
    .fcall = "herald_publish",
    .sub_path = "/sub/",
    .pub_path = "/pub/",
    .procs = 1,
    .src_first = 2,
    .src_count = 64,
    .room_size = 10,
    .room_rate = 1.0,
    .personal_rate = 1.0,
    .duration = 20,
    .connect_timeout = 180,
    .drain_timeout = 30,
    .ack_timeout = 15,
    .timeout = 560,
    .size = 100,
    .concurrency = 200,
    .rest_conns = 8,
    .backoff_base_ms = 500, /* herald.js' defaults */
    .backoff_max_ms = 20000,
    .stable_ms = 10000,
    .reconnect_timeout_ms = 10000,
    .ttl = 3600,
};

/* Total WebSocket connections: with nchan a connection is one channel, so
 * each personal channel gets its own connection (beside its user's room). */
static int ws_total(void)
{
    return S.conns + (S.proto == PROTO_NCHAN ? S.personal : 0);
}

static int nchannels(void)
{
    return S.rooms + S.personal;
}

/*---- channels: names, properties, schedule --------------------------------------*/

static uint64_t mix64(uint64_t x) /* splitmix64's finalizer */
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static double unit(uint64_t h) /* [0, 1) */
{
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

static int ch_personal(uint32_t c)
{
    return c >= (uint32_t)S.rooms;
}

/* History and FCALL are drawn independently per room (hashes, not strides,
 * so that the two never line up), personal channels are plain. */
static int ch_history(uint32_t c)
{
    return !ch_personal(c) && unit(mix64(c ^ 0x68697374ull)) < S.history_fraction;
}

static int ch_fcall(uint32_t c)
{
    return S.proto == PROTO_HERALD && S.nredis > 0 &&
           unit(mix64(c ^ 0x6663616cull)) < S.fcall_fraction;
}

static double ch_rate(uint32_t c)
{
    return ch_personal(c) ? S.personal_rate : S.room_rate;
}

/* Room r: "<prefix>r<r>", or "<hist_ns>:<prefix>r<r>" with history;
 * personal channel c: "user:<prefix>u<c>", whose user is "<prefix>u<c>".
 * Every name ends with the channel's number. */
static int ch_name(uint32_t c, char *buf, size_t cap)
{
    if (ch_personal(c))
        return snprintf(buf, cap, "user:%su%u", S.prefix, c);
    if (ch_history(c))
        return snprintf(buf, cap, "%s:%sr%u", S.hist_ns, S.prefix, c);
    return snprintf(buf, cap, "%sr%u", S.prefix, c);
}

/* Herald: FNV-1a 64 of the name modulo the shards (README, Cluster mode);
 * nchan (bench/scale.py's configuration): by the last decimal digit. */
static int ch_shard(uint32_t c)
{
    if (S.nredis <= 1)
        return 0;
    if (S.proto == PROTO_NCHAN)
        return (int)((c % 10) % (uint32_t)S.nredis);
    char name[160];
    int n = ch_name(c, name, sizeof name);
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++)
        h = (h ^ (uint8_t)name[i]) * 0x100000001b3ull;
    return (int)(h % (uint64_t)S.nredis);
}

static int ch_rest_node(uint32_t c)
{
    return (int)(c % (uint32_t)S.nnodes);
}

/* Publication k of channel c is due at t0 + (k + phase_c) / rate: channels
 * are spread evenly over each second instead of publishing together. */
static uint64_t ch_due(uint32_t c, uint32_t k, uint64_t t0)
{
    double r = ch_rate(c);
    if (r <= 0)
        return UINT64_MAX;
    double phase = unit(mix64((uint64_t)c * 0x51ed27ull + 17));
    return t0 + (uint64_t)(((double)k + phase) / r * 1e9);
}

/* The stride between the connections that hold a personal channel. */
static int personal_stride(void)
{
    return S.personal > 0 ? (S.conns / S.personal > 0 ? S.conns / S.personal : 1) : 1;
}

/* The channels connection g subscribes to (at most 2) and its node. */
static int conn_channels(int g, uint32_t out[2], int *node)
{
    int n = 0, stride = personal_stride();
    if (g >= S.conns) { /* nchan: the personal channel's own connection */
        int k = g - S.conns;
        out[n++] = (uint32_t)(S.rooms + k);
        *node = (k * stride) % S.nnodes;
        return n;
    }
    *node = g % S.nnodes;
    if (g < S.rooms * S.room_size)
        out[n++] = (uint32_t)(g / S.room_size);
    if (S.proto == PROTO_HERALD && S.personal > 0 && g % stride == 0 && g / stride < S.personal)
        out[n++] = (uint32_t)(S.rooms + g / stride);
    return n;
}

/* The JWT subject of connection g: the owner of its personal channel, if any. */
static void conn_user(int g, char *buf, size_t cap)
{
    uint32_t ch[2];
    int node, n = conn_channels(g, ch, &node);
    for (int i = 0; i < n; i++)
        if (ch_personal(ch[i])) {
            snprintf(buf, cap, "%su%u", S.prefix, ch[i]);
            return;
        }
    snprintf(buf, cap, "%sc%d", S.prefix, g);
}

/*---- a min-heap of (time, index) ---------------------------------------------------*/

typedef struct hent {
    uint64_t key;
    uint32_t val;
} hent;

typedef struct heap {
    hent *a;
    size_t n, cap;
} heap;

static int heap_push(heap *h, uint64_t key, uint32_t val)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 1024;
        hent *a = realloc(h->a, cap * sizeof *a);
        if (!a)
            return -1;
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && h->a[(i - 1) / 2].key > key) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = (hent){key, val};
    return 0;
}

static hent heap_pop(heap *h)
{
    hent top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = l;
        if (l >= h->n)
            break;
        if (l + 1 < h->n && h->a[l + 1].key < h->a[l].key)
            m = l + 1;
        if (h->a[m].key >= last.key)
            break;
        h->a[i] = h->a[m];
        i = m;
    }
    if (h->n > 0)
        h->a[i] = last;
    return top;
}

/*---- worker state -------------------------------------------------------------------*/

enum kind { K_WS, K_REST, K_REDIS };
enum cstate {
    C_NEW,
    C_CONNECTING,
    C_UPGRADING,
    C_AWAIT_CONNECTED,
    C_SUBSCRIBING,
    C_READY,
    C_DOWN, /* closed; reconnects when its retry time comes */
    C_DEAD  /* closed for good */
};
enum phase { P_CONNECT, P_WAIT_GO, P_PUBLISH, P_ACKS, P_WAIT_COUNTS, P_DRAIN, P_END };

/* One subscription's receive state. */
typedef struct sstream {
    uint32_t next;     /* next sequence number expected */
    uint32_t unique;   /* distinct publications received */
    uint64_t seen;     /* bit i: next - 1 - i arrived (anti-replay window) */
    int64_t offset;    /* history: the last offset received (-1: none yet) */
    const char *epoch; /* history: the epoch this subscriber was told (interned) */
    uint8_t recovered_false;
} sstream;

/* A FIFO of channels: those waiting for an idle REST connection to their
 * node, and those whose FCALL replies a Redis connection awaits. */
typedef struct cqueue {
    uint32_t *a;
    uint32_t head, len, cap;
} cqueue;

typedef struct sconn {
    int fd;
    uint8_t kind, state, node, nsubs, pending, dirty, more, buried, in_hs;
    uint8_t ever_ready, counted, idle; /* idle: REST, on its node's idle stack */
    uint32_t g;                        /* WS: global connection index; REST: node; REDIS: shard */
    uint32_t attempt;
    uint64_t t_open, t_ready, t_down, t_hs;
    hr_buf in, out, msg;
    char accept[29];
    uint32_t ch[2];
    sstream st[2];
    /* publishing: REST: the channel in flight (UINT32_MAX: idle);
     * REDIS: the channels whose FCALL replies are awaited */
    uint32_t cur;
    cqueue fifo;
} sconn;

/* A channel this worker publishes. */
typedef struct pchan {
    uint32_t next;     /* next sequence number */
    uint32_t accepted; /* acknowledged */
    uint32_t refused, uncertain;
    uint8_t inflight; /* sent or queued for a REST connection */
    uint64_t t_sent;
} pchan;

enum err {
    /* first, the failures client.c reports (bc_fault) */
    E_HTTP_STATUS = BC_HTTP_STATUS,
    E_BAD_ACCEPT = BC_BAD_ACCEPT,
    E_BAD_HTTP = BC_BAD_HTTP,
    E_BAD_FRAME = BC_BAD_FRAME,
    E_TOO_BIG = BC_TOO_BIG,
    E_SOCKET = BC_NFAULTS,
    E_HANDSHAKE_TIMEOUT,
    E_BAD_PUSH,
    E_UNEXPECTED_CHANNEL,
    E_SUBSCRIBE,
    E_REST_STATUS,
    E_REDIS_ERROR,
    E_BAD_REPLY,
    E_OOM,
    E_N
};
static const char *const err_names[E_N] = {
    [E_SOCKET] = "socket",
    [E_HTTP_STATUS] = "http_status",
    [E_BAD_ACCEPT] = "bad_accept",
    [E_HANDSHAKE_TIMEOUT] = "handshake_timeout",
    [E_BAD_FRAME] = "bad_frame",
    [E_TOO_BIG] = "too_big",
    [E_BAD_PUSH] = "bad_push",
    [E_UNEXPECTED_CHANNEL] = "unexpected_channel",
    [E_SUBSCRIBE] = "subscribe_error",
    [E_REST_STATUS] = "rest_status",
    [E_REDIS_ERROR] = "redis_error",
    [E_BAD_HTTP] = "bad_http",
    [E_BAD_REPLY] = "bad_reply",
    [E_OOM] = "oom",
};

static struct worker {
    int proc, ep, ctl;
    enum phase phase;
    hr_buf ctl_in;
    sconn *ws, *rest, *redis;
    int nws, nrest, nredis_conns;
    sconn **dirty, **more, **grave;
    int ndirty, nmore, ngrave, nconns_all;
    uint8_t *rbuf;
    uint64_t rng;

    pchan *pc;
    heap pubq, retry;
    cqueue waitq[MAX_NODES];
    uint32_t *idle_rest[MAX_NODES]; /* stacks of idle REST connection indexes */
    int nidle_rest[MAX_NODES];
    uint32_t *accepted_all;
    char **epoch;
    int inflight_hs, opened, ndead;
    uint64_t pub_inflight; /* publications sent or queued, not yet answered */

    uint64_t t_start, t0, t_end, t_first_open, t_last_hs, t_drain_end, t_acks_end, t_next_tick;
    int ready, failed;

    /* publications */
    uint64_t scheduled, sent, acked, refused, uncertain, late;
    uint64_t sent_rest, sent_fcall, rest_reconnects;
    uint64_t sent_by_shard[MAX_SHARDS], sent_by_node[MAX_NODES];
    hist lag, ack, hs, sub, lat, recovery, resync;
    /* deliveries */
    uint64_t received, in_window, recovered_deliveries, gaps, dups, stale, reordered, test_n;
    uint64_t by_node[MAX_NODES];
    /* reconnection */
    uint64_t disconnects, attempts, recovered_conns, not_recovered, resub_errors, epoch_changes;
    uint64_t first_down, last_recovered;
    uint64_t errors[E_N];
    int codes[MAX_CODES], code_n[MAX_CODES], ncodes;
    int statuses[8], status_n[8], nstatus;
    int errnos[8], errno_n[8], nerrno;
    uint64_t closed_eof, closed_reset;
} W;

static void err_add(enum err e)
{
    W.errors[e]++;
}

/* Returns 0, or -ENOMEM (counted; v is not queued). */
static int cq_push(cqueue *q, uint32_t v)
{
    if (q->len == q->cap) {
        uint32_t cap = q->cap ? 2 * q->cap : 256;
        uint32_t *a = malloc(cap * sizeof *a);
        if (!a) {
            err_add(E_OOM);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < q->len; i++)
            a[i] = q->a[(q->head + i) % q->cap];
        free(q->a);
        q->a = a;
        q->head = 0;
        q->cap = cap;
    }
    q->a[(q->head + q->len++) % q->cap] = v;
    return 0;
}

static uint32_t cq_pop(cqueue *q)
{
    uint32_t v = q->a[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return v;
}

static int in_window(uint64_t t)
{
    return W.t0 && t >= W.t0 && t < W.t_end;
}

/*---- output ---------------------------------------------------------------------------*/

static void conn_down(sconn *c, const char *why, int code, uint64_t now);

static void mark_dirty(sconn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        W.dirty[W.ndirty++] = c;
    }
}

static void conn_flush(sconn *c)
{
    if (bc_send(c->fd, &c->out) < 0)
        conn_down(c, "reset", 0, now_ns());
}

static void flush_dirty(void)
{
    for (int i = 0; i < W.ndirty; i++) {
        sconn *c = W.dirty[i];
        c->dirty = 0;
        if (c->fd >= 0 && c->state > C_CONNECTING && c->state < C_DOWN)
            conn_flush(c);
    }
    W.ndirty = 0;
}

static void queue_bytes(sconn *c, const void *p, size_t n)
{
    hr_buf_append(&c->out, p, n);
    mark_dirty(c);
}

static void ws_send(sconn *c, int opcode, const void *p, size_t n)
{
    bc_ws_frame(&c->out, &W.rng, opcode, p, n);
    mark_dirty(c);
}

/*---- connections -----------------------------------------------------------------------*/

/* Closes c after a failure a bc_* function reported (err), counted; status:
 * the HTTP status of a refused upgrade. */
static void conn_fail(sconn *c, int err, int status, uint64_t now)
{
    err_add((enum err)bc_fault(err));
    if (err == -ECONNREFUSED)
        bc_tally(W.statuses, W.status_n, &W.nstatus, 8, status);
    conn_down(c, "fail", 0, now);
}

static void count_errno(int e)
{
    bc_tally(W.errnos, W.errno_n, &W.nerrno, 8, e);
    err_add(E_SOCKET);
}

static int conn_port(const sconn *c)
{
    return c->kind == K_REDIS ? S.redis[c->g].port : S.nodes[c->node].port;
}

static void conn_open(sconn *c, uint32_t src, uint64_t now)
{
    c->t_open = now;
    c->buried = 0;
    if (c->kind == K_WS) {
        c->in_hs = 1;
        W.inflight_hs++;
        W.attempts++;
    }
    if (!W.t_first_open)
        W.t_first_open = now;
    /* Redis connections keep 127.0.0.1: protected mode refuses other sources. */
    int fd =
        bc_connect(S.host, conn_port(c), S.src_first, c->kind == K_REDIS ? 0 : S.src_count, src);
    if (fd < 0) {
        count_errno(-fd);
        conn_down(c, "fail", 0, now);
        return;
    }
    c->fd = fd;
    c->state = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void bury(void)
{
    for (int i = 0; i < W.ngrave; i++) {
        sconn *c = W.grave[i];
        hr_buf_reset(&c->in);
        hr_buf_reset(&c->out);
        hr_buf_reset(&c->msg);
    }
    W.ngrave = 0;
}

/* herald.js' schedule: a delay drawn uniformly from
 * [0, min(max, base * 2^attempt)), attempt counted from 0 and reset once a
 * connection stayed up stable_ms. */
static uint64_t backoff_ns(uint32_t attempt)
{
    double cap = (double)S.backoff_base_ms * pow(2.0, attempt > 30 ? 30 : attempt);
    if (cap > S.backoff_max_ms)
        cap = S.backoff_max_ms;
    return (uint64_t)(unit(rng_next(&W.rng)) * cap * 1e6);
}

static int may_reconnect(void)
{
    return S.reconnect && W.phase < P_END;
}

static void pub_acked(uint32_t ch, int ok, int uncertain, uint64_t now);

/* Closes c because of the server or the network: why is "eof", "reset",
 * "close" (close frame with `code`), "fail" or "timeout". WebSocket
 * clients reconnect when the scenario says so; REST and Redis connections
 * are reopened (what they had in flight is uncertain). Buffers are freed
 * by bury(), as the caller may still be reading them. */
static void conn_down(sconn *c, const char *why, int code, uint64_t now)
{
    if (c->state == C_DOWN || c->state == C_DEAD)
        return;
    int was_ready = c->state == C_READY;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (!strcmp(why, "close"))
        bc_tally(W.codes, W.code_n, &W.ncodes, MAX_CODES, code);
    else if (!strcmp(why, "eof"))
        W.closed_eof++;
    else if (!strcmp(why, "reset"))
        W.closed_reset++;
    if (c->in_hs) {
        c->in_hs = 0;
        W.inflight_hs--;
    }
    if (!c->buried) {
        c->buried = 1;
        W.grave[W.ngrave++] = c;
    }
    c->state = C_DOWN;
    if (c->kind == K_REST) {
        if (c->cur != UINT32_MAX) {
            uint32_t ch = c->cur;
            c->cur = UINT32_MAX;
            pub_acked(ch, 0, 1, now);
        }
        W.rest_reconnects++;
        heap_push(&W.retry, now + 100000000ull, (uint32_t)(c - W.rest) | 0x40000000u);
        return;
    }
    if (c->kind == K_REDIS) {
        while (c->fifo.len > 0) {
            uint32_t ch = cq_pop(&c->fifo);
            pub_acked(ch, 0, 1, now);
        }
        heap_push(&W.retry, now + 100000000ull, (uint32_t)(c - W.redis) | 0x80000000u);
        return;
    }
    if (c->ever_ready && !c->t_down) {
        c->t_down = now; /* the outage of this client starts */
        W.disconnects++;
        if (!W.first_down || now < W.first_down)
            W.first_down = now;
    }
    if (!may_reconnect()) {
        c->state = C_DEAD;
        W.ndead++;
        return;
    }
    if (was_ready && now - c->t_ready >= (uint64_t)S.stable_ms * 1000000ull)
        c->attempt = 0;
    heap_push(&W.retry, now + backoff_ns(c->attempt++), (uint32_t)(c - W.ws));
}

/*---- WebSocket: handshake, subscriptions -------------------------------------------------*/

static void send_upgrade(sconn *c)
{
    char target[768], req[1200], name[160];
    if (S.proto == PROTO_NCHAN) {
        ch_name(c->ch[0], name, sizeof name);
        snprintf(target, sizeof target, "%s%s", S.sub_path, name);
    } else {
        char sub[96], token[512];
        conn_user((int)c->g, sub, sizeof sub);
        jwt_hs256(token, sizeof token, S.secret, sub, S.ttl);
        snprintf(target, sizeof target, "/ws?token=%s", token);
    }
    size_t n =
        bc_upgrade_request(req, sizeof req, target, S.host, conn_port(c), 0, NULL, &W.rng, c->accept);
    c->state = C_UPGRADING;
    queue_bytes(c, req, n);
}

static void send_subscribe(sconn *c, int slot)
{
    char name[160], cmd[512];
    uint32_t ch = c->ch[slot];
    ch_name(ch, name, sizeof name);
    sstream *st = &c->st[slot];
    int n;
    if (ch_history(ch) && c->ever_ready && st->offset >= 0 && st->epoch)
        n = snprintf(cmd, sizeof cmd,
                     "{\"id\":%d,\"op\":\"subscribe\",\"channel\":\"%s\",\"since\":"
                     "{\"offset\":%lld,\"epoch\":\"%s\"}}",
                     slot + 1, name, (long long)st->offset, st->epoch);
    else
        n = snprintf(cmd, sizeof cmd, "{\"id\":%d,\"op\":\"subscribe\",\"channel\":\"%s\"}",
                     slot + 1, name);
    ws_send(c, HR_WS_OP_TEXT, cmd, (size_t)n);
}

/* Every subscription of c is confirmed: the first time, c is ready; after
 * a reconnection, c has recovered. */
static void conn_subscribed(sconn *c, uint64_t now)
{
    c->state = C_READY;
    c->t_ready = now;
    if (c->nsubs > 0)
        hist_add(&W.sub, now - c->t_hs);
    if (!c->ever_ready) {
        c->ever_ready = 1;
        W.ready++;
        W.t_last_hs = now;
        return;
    }
    if (c->t_down) {
        hist_add(&W.recovery, now - c->t_down);
        hist_add(&W.resync, now - c->t_open); /* the attempt that worked, to recovered */
        c->t_down = 0;
        W.recovered_conns++;
        if (now > W.last_recovered)
            W.last_recovered = now;
    }
}

static void handshake_done(sconn *c, uint64_t now)
{
    hist_add(&W.hs, now - c->t_open);
    c->t_hs = now;
    c->in_hs = 0;
    W.inflight_hs--;
    if (S.proto == PROTO_NCHAN) { /* the upgrade to /sub/<channel> subscribed it */
        conn_subscribed(c, now);
        return;
    }
    c->state = C_SUBSCRIBING;
    c->pending = c->nsubs;
    for (int i = 0; i < c->nsubs; i++)
        send_subscribe(c, i);
    if (c->nsubs == 0)
        conn_subscribed(c, now);
}

/*---- deliveries ---------------------------------------------------------------------------*/

static int test_hit(int every)
{
    return every > 0 && ++W.test_n % (uint64_t)every == 0;
}

/* In order: advance. Ahead: the skipped ones are gaps (until they turn up).
 * Behind: a duplicate if already seen in the 64-deep window, else a late
 * arrival filling a gap; older than the window: stale. */
static void stream_check(sstream *st, uint32_t seq)
{
    if (seq >= st->next) {
        uint64_t g = seq - st->next;
        W.gaps += g;
        st->seen = (g + 1 >= 64 ? 0 : st->seen << (g + 1)) | 1;
        st->next = seq + 1;
        st->unique++;
        return;
    }
    uint64_t d = (uint64_t)(st->next - seq - 1);
    if (d >= 64) {
        W.stale++;
    } else if (st->seen & (1ull << d)) {
        W.dups++;
    } else {
        st->seen |= 1ull << d;
        st->unique++;
        W.reordered++;
        W.gaps--;
    }
}

static void deliver(sconn *c, int slot, uint64_t seq, uint64_t ts, int64_t offset, int live,
                    uint64_t now)
{
    if (test_hit(S.test_drop))
        return; /* pretend it never arrived: lost must rise */
    sstream *st = &c->st[slot];
    if (offset > st->offset)
        st->offset = offset;
    if (live) {
        W.received++;
        hist_add(&W.lat, now > ts ? now - ts : 0);
        if (in_window(now)) {
            W.in_window++;
            W.by_node[c->node]++;
        }
    } else {
        W.recovered_deliveries++;
    }
    stream_check(st, (uint32_t)seq);
    if (test_hit(S.test_dup)) {
        W.received++;
        stream_check(st, (uint32_t)seq);
    }
}

/* The trailing number of a channel name (every name ends with its channel). */
static int name_channel(const char *p, size_t n, uint32_t *ch)
{
    size_t i = n;
    while (i > 0 && p[i - 1] >= '0' && p[i - 1] <= '9')
        i--;
    if (i == n || n - i > 9)
        return -1;
    uint64_t v = 0;
    for (size_t k = i; k < n; k++)
        v = v * 10 + (uint64_t)(p[k] - '0');
    *ch = (uint32_t)v;
    return 0;
}

static int slot_of(const sconn *c, uint32_t ch)
{
    for (int i = 0; i < c->nsubs; i++)
        if (c->ch[i] == ch)
            return i;
    return -1;
}

/* {"push":"message","channel":C,"data":{"c","s","t","x"},"offset":O?} */
static void on_push_message(sconn *c, const char *p, size_t n, uint64_t now)
{
    const char *end = p + n, *v = json_value(p, end, "\"channel\"");
    const char *q = v && v < end && *v == '"' ? memchr(v + 1, '"', (size_t)(end - v - 1)) : NULL;
    uint32_t ch;
    if (!q || name_channel(v + 1, (size_t)(q - v - 1), &ch) < 0) {
        err_add(E_BAD_PUSH);
        return;
    }
    int slot = slot_of(c, ch);
    const char *data = json_value(p, end, "\"data\"");
    uint64_t seq, ts, dc, off = 0;
    if (slot < 0) {
        err_add(E_UNEXPECTED_CHANNEL);
        return;
    }
    if (!data || json_uint(data, end, "\"s\"", &seq) < 0 ||
        json_uint(data, end, "\"t\"", &ts) < 0 || json_uint(data, end, "\"c\"", &dc) < 0 ||
        dc != ch) {
        err_add(E_BAD_PUSH);
        return;
    }
    int64_t offset = json_uint(p, end, "\"offset\"", &off) == 0 ? (int64_t)off : -1;
    deliver(c, slot, seq, ts, offset, 1, now);
}

/* nchan: the frame is the published body, on the connection's channel. */
static void on_nchan_frame(sconn *c, const char *p, size_t n, uint64_t now)
{
    const char *end = p + n;
    uint64_t seq, ts, dc;
    if (json_uint(p, end, "\"s\"", &seq) < 0 || json_uint(p, end, "\"t\"", &ts) < 0 ||
        json_uint(p, end, "\"c\"", &dc) < 0) {
        err_add(E_BAD_PUSH);
        return;
    }
    if (dc != c->ch[0]) {
        err_add(E_UNEXPECTED_CHANNEL);
        return;
    }
    deliver(c, 0, seq, ts, -1, 1, now);
}

/* The channel's epoch as last told to any subscriber here, interned: each
 * subscription keeps the one it was told (a client's own memory), and old
 * strings are never freed, as subscriptions may still point at them. */
static const char *set_epoch(uint32_t ch, const char *e)
{
    if (W.epoch[ch] && !strcmp(W.epoch[ch], e))
        return W.epoch[ch];
    if (W.epoch[ch]) {
        W.epoch_changes++;
        if (S.verbose && W.epoch_changes <= 10)
            fprintf(stderr, "loadgen[%d]: channel %u: epoch %s -> %s\n", W.proc, ch, W.epoch[ch],
                    e);
    }
    W.epoch[ch] = strdup(e);
    return W.epoch[ch];
}

/* A subscribe reply: {"id":1|2,"result":{"channel","offset"?,"epoch"?,
 * "recovered"?,"publications"?:[{"offset","data"}]}} or an error. */
static void on_reply(sconn *c, const char *p, size_t n, uint64_t now)
{
    json_t *j = json_loadb(p, n, 0, NULL);
    json_int_t id = j ? json_integer_value(json_object_get(j, "id")) : 0;
    int slot = (int)id - 1;
    if (!j || slot < 0 || slot >= c->nsubs || c->state != C_SUBSCRIBING) {
        err_add(E_BAD_REPLY);
        json_decref(j);
        return;
    }
    json_t *res = json_object_get(j, "result");
    sstream *st = &c->st[slot];
    uint32_t ch = c->ch[slot];
    if (!json_is_object(res)) {
        err_add(E_SUBSCRIBE);
        if (S.verbose && W.errors[E_SUBSCRIBE] <= 3)
            fprintf(stderr, "loadgen[%d]: subscribe refused: %.*s\n", W.proc,
                    (int)(n > 300 ? 300 : n), p);
        json_decref(j);
        if (c->ever_ready) { /* e.g. unavailable: herald.js would try again later */
            W.resub_errors++;
            conn_down(c, "fail", 0, now);
        }
        return;
    }
    const char *epoch = json_string_value(json_object_get(res, "epoch"));
    if (epoch)
        st->epoch = set_epoch(ch, epoch);
    json_t *rec = json_object_get(res, "recovered");
    if (json_is_false(rec) && c->ever_ready)
        st->recovered_false = 1, W.not_recovered++;
    size_t i;
    json_t *pub;
    json_array_foreach(json_object_get(res, "publications"), i, pub)
    {
        json_t *d = json_object_get(pub, "data");
        json_int_t s = json_integer_value(json_object_get(d, "s"));
        json_int_t off = json_integer_value(json_object_get(pub, "offset"));
        if (json_integer_value(json_object_get(d, "c")) != (json_int_t)ch) {
            err_add(E_BAD_PUSH);
            continue;
        }
        deliver(c, slot, (uint64_t)s, 0, (int64_t)off, 0, now);
    }
    json_t *off = json_object_get(res, "offset");
    if (json_is_integer(off) && json_integer_value(off) > st->offset)
        st->offset = json_integer_value(off);
    json_decref(j);
    if (--c->pending == 0)
        conn_subscribed(c, now);
}

static void dispatch(sconn *c, const char *p, size_t n, uint64_t now)
{
    static const char fast[] = "{\"push\":\"message\",";
    if (S.proto == PROTO_NCHAN) {
        if (c->state == C_READY)
            on_nchan_frame(c, p, n, now);
        return;
    }
    const char *end = p + n;
    if ((n > sizeof fast && !memcmp(p, fast, sizeof fast - 1)) ||
        json_str_is(p, end, "\"push\"", "\"message\"")) {
        on_push_message(c, p, n, now);
    } else if (json_str_is(p, end, "\"push\"", "\"connected\"")) {
        if (c->state == C_AWAIT_CONNECTED)
            handshake_done(c, now);
    } else if (!json_value(p, end, "\"push\"") && json_value(p, end, "\"id\"")) {
        on_reply(c, p, n, now);
    }
}

static void on_close_frame(sconn *c, const uint8_t *p, size_t n, uint64_t now)
{
    int code = bc_ws_close_reply(&c->out, &W.rng, p, n);
    conn_flush(c);
    conn_down(c, "close", code, now);
}

static void on_frame(sconn *c, const hr_ws_frame *f, uint8_t *p, uint64_t now)
{
    size_t n = (size_t)f->len;
    switch (f->opcode) {
    case HR_WS_OP_TEXT:
    case HR_WS_OP_CONT: {
        int whole = f->fin && hr_buf_pending(&c->msg) == 0;
        const char *m;
        size_t mn;
        int r = bc_ws_message(&c->msg, f, p, MAX_MESSAGE, &m, &mn);
        if (r <= 0) {
            if (r < 0)
                conn_fail(c, r, 0, now);
            return;
        }
        dispatch(c, m, mn, now);
        if (!whole && c->fd >= 0)
            hr_buf_consume(&c->msg, hr_buf_pending(&c->msg));
        return;
    }
    case HR_WS_OP_CLOSE:
        on_close_frame(c, p, n, now);
        return;
    case HR_WS_OP_PING:
        ws_send(c, HR_WS_OP_PONG, p, n);
        return;
    default:
        return;
    }
}

static size_t ws_input(sconn *c, uint8_t *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (off < n && c->fd >= 0) {
        hr_ws_frame f;
        int r = bc_ws_next(p + off, n - off, MAX_MESSAGE, 0, &f);
        if (r < 0) {
            conn_fail(c, r, 0, now);
            break;
        }
        if (r == 0)
            break;
        uint8_t *payload = p + off + f.hdrlen;
        off += (size_t)r;
        on_frame(c, &f, payload, now);
    }
    return off;
}

static size_t upgrade_input(sconn *c, const char *p, size_t n, uint64_t now)
{
    int status = 0, pmd = 0;
    int r = bc_upgrade_response(p, n, MAX_HTTP_HEAD, c->accept, &status, &pmd);
    if (r <= 0) {
        if (r < 0)
            conn_fail(c, r, status, now);
        return 0;
    }
    c->state = C_AWAIT_CONNECTED;
    if (S.proto == PROTO_NCHAN) /* no {"push":"connected"}: ready at the 101 */
        handshake_done(c, now);
    return (size_t)r;
}

/*---- publishing -------------------------------------------------------------------------------*/

static size_t build_data(char *buf, size_t cap, uint32_t ch, uint32_t seq, uint64_t t)
{
    int n = snprintf(buf, cap, "{\"c\":%u,\"s\":%u,\"t\":%llu,\"x\":\"", ch, seq,
                     (unsigned long long)t);
    return bc_pad_payload(buf, cap, n, (size_t)S.size);
}

static void rest_send(sconn *r, uint32_t ch, uint64_t now)
{
    static char data[65536], body[66000], req[67000];
    char name[160];
    pchan *p = &W.pc[ch];
    ch_name(ch, name, sizeof name);
    size_t dn = build_data(data, sizeof data, ch, p->next, now);
    int n;
    if (S.proto == PROTO_NCHAN) {
        n = snprintf(req, sizeof req,
                     "POST %s%s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/json\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%.*s",
                     S.pub_path, name, S.host, conn_port(r), dn, (int)dn, data);
    } else {
        int bn =
            snprintf(body, sizeof body, "{\"channel\":\"%s\",\"data\":%.*s}", name, (int)dn, data);
        n = snprintf(req, sizeof req,
                     "POST /api/v1/publish HTTP/1.1\r\nHost: %s:%d\r\nX-API-Key: %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     S.host, conn_port(r), S.api_key ? S.api_key : "", bn, body);
    }
    r->cur = ch;
    queue_bytes(r, req, (size_t)n);
    W.sent_rest++;
}

static void fcall_send(sconn *r, uint32_t ch, uint64_t now)
{
    static char data[65536], cmd[67000];
    char name[160];
    pchan *p = &W.pc[ch];
    int nl = ch_name(ch, name, sizeof name);
    size_t dn = build_data(data, sizeof data, ch, p->next, now);
    int n = snprintf(cmd, sizeof cmd,
                     "*5\r\n$5\r\nFCALL\r\n$%zu\r\n%s\r\n$1\r\n0\r\n$%d\r\n%s\r\n$%zu\r\n%.*s\r\n",
                     strlen(S.fcall), S.fcall, nl, name, dn, (int)dn, data);
    if (cq_push(&r->fifo, ch) < 0)
        return;
    queue_bytes(r, cmd, (size_t)n);
    W.sent_fcall++;
}

/* Sends channel ch's next publication on r (REST) or its shard's Redis
 * connection; the sequence number is taken here, at the actual send. */
static void pub_send(uint32_t ch, sconn *rest, uint64_t now)
{
    pchan *p = &W.pc[ch];
    uint64_t due = ch_due(ch, p->next, W.t0);
    hist_add(&W.lag, now > due ? now - due : 0);
    if (now > due + 1000000000ull)
        W.late++; /* a second or more behind its schedule */
    p->t_sent = now;
    if (rest) {
        rest_send(rest, ch, now);
    } else {
        int sh = ch_shard(ch);
        fcall_send(&W.redis[sh], ch, now);
    }
    if (in_window(now)) {
        W.sent_by_shard[ch_shard(ch)]++;
        if (rest)
            W.sent_by_node[rest->node]++;
    }
    p->next++;
    W.sent++;
}

/* Channel ch's next publication is due: on an idle REST connection of its
 * node (or after the ones already waiting), or down its shard's pipeline. */
static void pub_due(uint32_t ch, uint64_t now)
{
    pchan *p = &W.pc[ch];
    if (ch_fcall(ch)) {
        sconn *r = &W.redis[ch_shard(ch)];
        if (r->state == C_DOWN || r->state == C_DEAD) { /* reopening: try again soon */
            heap_push(&W.pubq, now + 100000000ull, ch);
            return;
        }
        p->inflight = 1;
        W.pub_inflight++;
        pub_send(ch, NULL, now);
        return;
    }
    p->inflight = 1;
    W.pub_inflight++;
    int node = ch_rest_node(ch);
    while (W.nidle_rest[node] > 0 && W.waitq[node].len == 0) {
        sconn *r = &W.rest[W.idle_rest[node][--W.nidle_rest[node]]];
        r->idle = 0;
        if (r->state == C_READY) { /* a closed one rejoins when reopened */
            pub_send(ch, r, now);
            return;
        }
    }
    cq_push(&W.waitq[node], ch);
}

/* The next publication of ch goes into the schedule if due before t_end. */
static void pub_schedule(uint32_t ch)
{
    uint64_t due = ch_due(ch, W.pc[ch].next, W.t0);
    if (due < W.t_end)
        heap_push(&W.pubq, due, ch);
}

/* An acknowledgement (ok), a refusal, or a connection lost with the
 * publication in flight (uncertain: it may or may not have been published). */
static void pub_acked(uint32_t ch, int ok, int uncertain, uint64_t now)
{
    pchan *p = &W.pc[ch];
    if (!p->inflight)
        return;
    p->inflight = 0;
    W.pub_inflight--;
    if (uncertain) {
        p->uncertain++;
        W.uncertain++;
    } else {
        hist_add(&W.ack, now - p->t_sent);
        if (ok) {
            p->accepted++;
            W.acked++;
        } else {
            p->refused++;
            W.refused++;
        }
    }
    if (W.phase == P_PUBLISH)
        pub_schedule(ch);
}

/* A REST connection is free: it takes the next waiting channel of its node. */
static void rest_idle(sconn *r, uint64_t now)
{
    cqueue *q = &W.waitq[r->node];
    if (W.phase == P_PUBLISH && q->len > 0) {
        pub_send(cq_pop(q), r, now);
        return;
    }
    if (!r->idle) {
        r->idle = 1;
        W.idle_rest[r->node][W.nidle_rest[r->node]++] = (uint32_t)(r - W.rest);
    }
}

/* Complete HTTP responses (Content-Length bodies): one per request, in order. */
static size_t rest_input(sconn *r, const char *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (off < n && r->fd >= 0) {
        int status = 0, len = bc_http_response(p + off, n - off, MAX_HTTP_HEAD, &status);
        if (len <= 0) {
            if (len < 0)
                conn_fail(r, len, 0, now);
            break;
        }
        size_t total = (size_t)len;
        int ok = S.proto == PROTO_NCHAN ? status == 201 || status == 202 : status == 200;
        if (!ok) {
            err_add(E_REST_STATUS);
            bc_tally(W.statuses, W.status_n, &W.nstatus, 8, status);
        }
        off += total;
        if (r->cur == UINT32_MAX) {
            err_add(E_BAD_HTTP); /* a response to nothing */
            continue;
        }
        uint32_t ch = r->cur;
        r->cur = UINT32_MAX;
        pub_acked(ch, ok, 0, now);
        rest_idle(r, now);
    }
    return off;
}

/* RESP replies to FCALL, in order: an integer (the offset, 0 without
 * history) or an error. */
static size_t redis_input(sconn *r, const char *p, size_t n, uint64_t now)
{
    size_t off = 0;
    while (off < n && r->fd >= 0) {
        const char *h = p + off, *eol = memmem(h, n - off, "\r\n", 2);
        if (!eol)
            break;
        size_t used = (size_t)(eol + 2 - h);
        int ok = h[0] == ':' || h[0] == '+';
        if (h[0] == '$') { /* a bulk string: skip its body */
            long blen = atol(h + 1);
            if (blen > 0) {
                if (n - off < used + (size_t)blen + 2)
                    break;
                used += (size_t)blen + 2;
            }
            ok = 1;
        } else if (h[0] != ':' && h[0] != '+' && h[0] != '-') {
            err_add(E_BAD_REPLY);
            conn_down(r, "fail", 0, now);
            break;
        }
        if (!ok) {
            err_add(E_REDIS_ERROR);
            if (S.verbose && W.errors[E_REDIS_ERROR] <= 3)
                fprintf(stderr, "loadgen[%d]: redis: %.*s\n", W.proc,
                        (int)(eol - h > 200 ? 200 : eol - h), h);
        }
        off += used;
        if (r->fifo.len == 0) {
            err_add(E_BAD_REPLY);
            continue;
        }
        uint32_t ch = cq_pop(&r->fifo);
        pub_acked(ch, ok, 0, now);
    }
    return off;
}

/*---- input -------------------------------------------------------------------------------------*/

static size_t input(void *conn, uint8_t *p, size_t n, uint64_t now)
{
    sconn *c = conn;
    if (c->kind == K_REST)
        return rest_input(c, (const char *)p, n, now);
    if (c->kind == K_REDIS)
        return redis_input(c, (const char *)p, n, now);
    size_t used = 0;
    if (c->state == C_UPGRADING)
        used = upgrade_input(c, (const char *)p, n, now);
    if (c->fd < 0 || c->state < C_AWAIT_CONNECTED)
        return used;
    return used + ws_input(c, p + used, n - used, now);
}

static void on_readable(sconn *c, uint32_t ev, uint64_t now)
{
    int r = bc_read(c, &c->fd, &c->in, ev, W.rbuf, RBUF_SIZE, READS_PER_EVENT, input, now);
    if (r < 0) {
        conn_down(c, r == -EPIPE ? "eof" : "reset", 0, now);
    } else if (r > 0 && !c->more) {
        c->more = 1;
        W.more[W.nmore++] = c;
    }
}

static void on_connected(sconn *c, uint64_t now)
{
    int err = bc_connect_error(c->fd);
    if (err) {
        count_errno(err);
        conn_down(c, "fail", 0, now);
        return;
    }
    if (c->kind == K_WS) {
        send_upgrade(c);
        return;
    }
    c->state = C_READY; /* REST, Redis: usable at once */
    if (hr_buf_pending(&c->out))
        mark_dirty(c);
    if (c->kind == K_REST && c->cur == UINT32_MAX && W.t0 && W.phase == P_PUBLISH)
        rest_idle(c, now);
}

static void on_event(sconn *c, uint32_t ev, uint64_t now)
{
    if (c->fd < 0)
        return;
    if (c->state == C_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        on_connected(c, now);
        if (c->fd < 0)
            return;
    }
    if (ev & EPOLLOUT)
        conn_flush(c);
    if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        on_readable(c, ev, now);
}

static void continue_reads(uint64_t now)
{
    int n = W.nmore;
    for (int i = 0; i < n; i++) {
        sconn *c = W.more[i];
        c->more = 0;
        if (c->fd >= 0)
            on_readable(c, 0, now);
    }
    memmove(W.more, W.more + n, (size_t)(W.nmore - n) * sizeof *W.more);
    W.nmore -= n;
}

/*---- the worker's phases ------------------------------------------------------------------*/

static void ctl_send(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = write(W.ctl, s, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = W.ctl, .events = POLLOUT};
            poll(&pf, 1, 1000);
            continue;
        }
        if (k <= 0)
            exit(3); /* the parent is gone */
        s += k;
        n -= (size_t)k;
    }
}

/* Reconnects (WS) and reopenings (REST, Redis) whose time has come. */
static void run_retries(uint64_t now)
{
    while (W.retry.n > 0 && W.retry.a[0].key <= now) {
        uint32_t v = heap_pop(&W.retry).val;
        if (v & 0x80000000u) {
            sconn *r = &W.redis[v & 0x3fffffffu];
            if (r->state == C_DOWN && W.phase < P_END)
                conn_open(r, v & 0x3fffffffu, now);
        } else if (v & 0x40000000u) {
            sconn *r = &W.rest[v & 0x3fffffffu];
            if (r->state == C_DOWN && W.phase < P_END)
                conn_open(r, v & 0x3fffffffu, now);
        } else {
            sconn *c = &W.ws[v];
            if (c->state == C_DOWN && may_reconnect())
                conn_open(c, c->g, now);
        }
    }
}

static void open_more(uint64_t now)
{
    while (W.opened < W.nws && W.inflight_hs < S.concurrency) {
        sconn *c = &W.ws[W.opened++];
        conn_open(c, c->g, now);
    }
}

static void handshake_timeouts(uint64_t now)
{
    uint64_t first = (uint64_t)(S.connect_timeout * 1e9);
    uint64_t again = (uint64_t)S.reconnect_timeout_ms * 1000000ull;
    for (int i = 0; i < W.nws; i++) {
        sconn *c = &W.ws[i];
        if (c->state >= C_CONNECTING && c->state < C_READY &&
            now - c->t_open > (c->ever_ready ? again : first)) {
            err_add(E_HANDSHAKE_TIMEOUT);
            conn_down(c, "timeout", 0, now);
        }
    }
}

static void connect_phase(uint64_t now)
{
    open_more(now);
    int pending = W.ready + W.ndead < W.nws;
    int expired = now - W.t_start > (uint64_t)(S.connect_timeout * 1e9);
    if (pending && !expired)
        return;
    /* Over: whatever is not ready now is given up (and not counted). */
    for (int i = 0; i < W.nws; i++) {
        sconn *c = &W.ws[i];
        if (c->state != C_READY) {
            if (c->fd >= 0)
                close(c->fd), c->fd = -1;
            if (c->in_hs)
                c->in_hs = 0, W.inflight_hs--;
            c->state = C_DEAD;
            W.failed++;
        }
    }
    /* The publishers' connections open now, not at the start: a server
     * closes idle keep-alive connections, and the connect phase is long. */
    for (int i = 0; i < W.nrest; i++)
        conn_open(&W.rest[i], (uint32_t)(W.proc * 1000 + i), now);
    for (int i = 0; i < W.nredis_conns; i++)
        conn_open(&W.redis[i], (uint32_t)i, now);
    char line[64];
    int n = snprintf(line, sizeof line, "R %d %d\n", W.ready, W.failed);
    ctl_send(line, (size_t)n);
    W.phase = P_WAIT_GO;
}

static void start_publishing(uint64_t t0, uint64_t t_end)
{
    W.t0 = t0;
    W.t_end = t_end;
    for (int i = 0; i < W.nws; i++)
        W.ws[i].counted = W.ws[i].state == C_READY;
    for (uint32_t ch = (uint32_t)W.proc; ch < (uint32_t)nchannels(); ch += (uint32_t)S.procs) {
        for (uint32_t k = 0; ch_due(ch, k, t0) < t_end; k++)
            W.scheduled++;
        pub_schedule(ch);
    }
    W.phase = P_PUBLISH;
    for (int i = 0; i < W.nrest; i++)
        if (W.rest[i].state == C_READY && W.rest[i].cur == UINT32_MAX)
            rest_idle(&W.rest[i], now_ns());
}

static void publish_phase(uint64_t now)
{
    if (now >= W.t_end) {
        /* Everything scheduled before t_end goes out, however late. */
        for (size_t n = W.pubq.n; n > 0 && W.pubq.n > 0; n--)
            pub_due(heap_pop(&W.pubq).val, now); /* (one retried later is dropped) */
        /* Over: what waits for a REST connection is not sent at all. */
        for (int n = 0; n < S.nnodes; n++)
            while (W.waitq[n].len > 0) {
                W.pc[cq_pop(&W.waitq[n])].inflight = 0;
                W.pub_inflight--;
            }
        W.phase = P_ACKS;
        W.t_acks_end = now + (uint64_t)(S.ack_timeout * 1e9);
        return;
    }
    while (W.pubq.n > 0 && W.pubq.a[0].key <= now)
        pub_due(heap_pop(&W.pubq).val, now);
}

static void send_counts(void)
{
    hr_buf b = {0};
    char tmp[64];
    int n = 0;
    for (uint32_t ch = (uint32_t)W.proc; ch < (uint32_t)nchannels(); ch += (uint32_t)S.procs)
        n += W.pc[ch].accepted > 0;
    int k = snprintf(tmp, sizeof tmp, "P %d", n);
    hr_buf_append(&b, tmp, (size_t)k);
    for (uint32_t ch = (uint32_t)W.proc; ch < (uint32_t)nchannels(); ch += (uint32_t)S.procs) {
        if (!W.pc[ch].accepted)
            continue;
        k = snprintf(tmp, sizeof tmp, " %u %u", ch, W.pc[ch].accepted);
        hr_buf_append(&b, tmp, (size_t)k);
    }
    hr_buf_append(&b, "\n", 1);
    ctl_send(hr_buf_head(&b), hr_buf_pending(&b));
    hr_buf_reset(&b);
}

static void acks_phase(uint64_t now)
{
    if (W.pub_inflight > 0 && now < W.t_acks_end)
        return;
    for (uint32_t ch = (uint32_t)W.proc; ch < (uint32_t)nchannels(); ch += (uint32_t)S.procs)
        if (W.pc[ch].inflight) /* no answer within ack_timeout */
            W.pc[ch].inflight = 0, W.pc[ch].uncertain++, W.uncertain++;
    send_counts();
    W.phase = P_WAIT_COUNTS;
}

/* Every counted subscription has every accepted publication. */
static int drain_complete(void)
{
    for (int i = 0; i < W.nws; i++) {
        sconn *c = &W.ws[i];
        if (!c->counted)
            continue;
        for (int s = 0; s < c->nsubs; s++)
            if (c->st[s].unique < W.accepted_all[c->ch[s]])
                return 0;
    }
    return 1;
}

/* Reads "<n> {<ch> <count>}..." (the P and A lines) into counts[ch]. */
static void read_counts(char *p, uint32_t *counts)
{
    char *end;
    long n = strtol(p, &end, 10);
    p = end;
    for (long i = 0; i < n; i++) {
        unsigned long ch = strtoul(p, &end, 10);
        p = end;
        unsigned long cnt = strtoul(p, &end, 10);
        p = end;
        if (ch < (unsigned long)nchannels())
            counts[ch] = (uint32_t)cnt;
    }
}

/* "G t0 t_end", "A n ch count ...", "S" (stop). */
static void on_ctl_line(char *line, uint64_t now)
{
    if (line[0] == 'G' && W.phase == P_WAIT_GO) {
        unsigned long long t0, te;
        if (sscanf(line + 1, "%llu %llu", &t0, &te) == 2)
            start_publishing(t0, te);
    } else if (line[0] == 'A' && W.phase == P_WAIT_COUNTS) {
        read_counts(line + 1, W.accepted_all);
        W.phase = P_DRAIN;
        W.t_drain_end = now + (uint64_t)(S.drain_timeout * 1e9);
    } else if (line[0] == 'S') {
        W.phase = P_END;
    }
}

static void on_ctl(uint64_t now)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(W.ctl, buf, sizeof buf);
        if (n > 0) {
            hr_buf_append(&W.ctl_in, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            exit(3); /* the parent is gone: stop at once */
        break;
    }
    char *nl;
    while ((nl = memchr(hr_buf_head(&W.ctl_in), '\n', hr_buf_pending(&W.ctl_in)))) {
        *nl = '\0';
        size_t len = (size_t)(nl - hr_buf_head(&W.ctl_in)) + 1;
        on_ctl_line(hr_buf_head(&W.ctl_in), now);
        hr_buf_consume(&W.ctl_in, len);
    }
}

static void tick(uint64_t now)
{
    if (W.phase < P_END)
        handshake_timeouts(now);
    if (W.phase == P_DRAIN && (now >= W.t_drain_end || drain_complete()))
        W.phase = P_END;
}

/*---- the worker's report ------------------------------------------------------------------*/

static void json_hist_raw(hr_buf *b, const char *name, const hist *h)
{
    char tmp[96];
    int n = snprintf(tmp, sizeof tmp, "\"%s\":{\"n\":%llu,\"max\":%llu,\"sum\":%.0f,\"b\":[", name,
                     (unsigned long long)h->n, (unsigned long long)h->max, h->sum);
    hr_buf_append(b, tmp, (size_t)n);
    int first = 1;
    for (size_t i = 0; i < H_BUCKETS; i++) {
        if (!h->b[i])
            continue;
        n = snprintf(tmp, sizeof tmp, "%s%zu,%llu", first ? "" : ",", i,
                     (unsigned long long)h->b[i]);
        hr_buf_append(b, tmp, (size_t)n);
        first = 0;
    }
    hr_buf_append(b, "]}", 2);
}

static void bprintf(hr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(hr_buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        hr_buf_append(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void json_u64_array(hr_buf *b, const char *name, const uint64_t *v, int n)
{
    bprintf(b, "\"%s\":[", name);
    for (int i = 0; i < n; i++)
        bprintf(b, "%s%llu", i ? "," : "", (unsigned long long)v[i]);
    hr_buf_append(b, "]", 1);
}

static void send_report(void)
{
    /* Loss per counted subscription, split by kind of channel. */
    uint64_t expected = 0, unique = 0, lost_hist = 0, lost_plain = 0, lost_personal = 0, extra = 0;
    uint64_t subs = 0, incomplete = 0, down_at_end = 0;
    for (int i = 0; i < W.nws; i++) {
        sconn *c = &W.ws[i];
        if (c->counted && c->state != C_READY)
            down_at_end++;
        for (int s = 0; c->counted && s < c->nsubs; s++) {
            uint32_t ch = c->ch[s], acc = W.accepted_all[ch], u = c->st[s].unique;
            subs++;
            expected += acc;
            unique += u;
            if (u > acc) {
                extra += u - acc;
                continue;
            }
            if (u < acc) {
                incomplete++;
                uint64_t l = acc - u;
                if (ch_personal(ch))
                    lost_personal += l;
                else if (ch_history(ch))
                    lost_hist += l;
                else
                    lost_plain += l;
            }
        }
    }
    hr_buf b = {0};
    bprintf(&b, "F {\"proc\":%d,\"conns\":%d,\"ready\":%d,\"failed\":%d,\"subs_counted\":%llu,",
            W.proc, W.nws, W.ready, W.failed, (unsigned long long)subs);
    bprintf(&b, "\"t_first_open\":%llu,\"t_last_hs\":%llu,", (unsigned long long)W.t_first_open,
            (unsigned long long)W.t_last_hs);
    bprintf(&b,
            "\"scheduled\":%llu,\"sent\":%llu,\"acked\":%llu,\"refused\":%llu,\"uncertain\":%llu,"
            "\"late\":%llu,\"sent_rest\":%llu,\"sent_fcall\":%llu,\"rest_reconnects\":%llu,",
            (unsigned long long)W.scheduled, (unsigned long long)W.sent,
            (unsigned long long)W.acked, (unsigned long long)W.refused,
            (unsigned long long)W.uncertain, (unsigned long long)W.late,
            (unsigned long long)W.sent_rest, (unsigned long long)W.sent_fcall,
            (unsigned long long)W.rest_reconnects);
    json_u64_array(&b, "sent_by_shard", W.sent_by_shard, S.nredis > 0 ? S.nredis : 1);
    hr_buf_append(&b, ",", 1);
    json_u64_array(&b, "sent_by_node", W.sent_by_node, S.nnodes);
    bprintf(&b,
            ",\"expected\":%llu,\"unique\":%llu,\"received\":%llu,\"in_window\":%llu,"
            "\"recovered_deliveries\":%llu,\"lost_history\":%llu,\"lost_plain\":%llu,"
            "\"lost_personal\":%llu,\"extra\":%llu,\"incomplete_subs\":%llu,\"gaps\":%llu,"
            "\"dups\":%llu,\"stale\":%llu,\"reordered\":%llu,",
            (unsigned long long)expected, (unsigned long long)unique,
            (unsigned long long)W.received, (unsigned long long)W.in_window,
            (unsigned long long)W.recovered_deliveries, (unsigned long long)lost_hist,
            (unsigned long long)lost_plain, (unsigned long long)lost_personal,
            (unsigned long long)extra, (unsigned long long)incomplete, (unsigned long long)W.gaps,
            (unsigned long long)W.dups, (unsigned long long)W.stale,
            (unsigned long long)W.reordered);
    json_u64_array(&b, "by_node", W.by_node, S.nnodes);
    bprintf(&b,
            ",\"disconnects\":%llu,\"attempts\":%llu,\"recovered_conns\":%llu,"
            "\"not_recovered\":%llu,\"resub_errors\":%llu,\"epoch_changes\":%llu,"
            "\"down_at_end\":%llu,\"first_down\":%llu,\"last_recovered\":%llu,",
            (unsigned long long)W.disconnects, (unsigned long long)W.attempts,
            (unsigned long long)W.recovered_conns, (unsigned long long)W.not_recovered,
            (unsigned long long)W.resub_errors, (unsigned long long)W.epoch_changes,
            (unsigned long long)down_at_end, (unsigned long long)W.first_down,
            (unsigned long long)W.last_recovered);
    json_hist_raw(&b, "lat", &W.lat);
    hr_buf_append(&b, ",", 1);
    json_hist_raw(&b, "hs", &W.hs);
    hr_buf_append(&b, ",", 1);
    json_hist_raw(&b, "sub", &W.sub);
    hr_buf_append(&b, ",", 1);
    json_hist_raw(&b, "resync", &W.resync);
    hr_buf_append(&b, ",", 1);
    json_hist_raw(&b, "ack", &W.ack);
    hr_buf_append(&b, ",", 1);
    json_hist_raw(&b, "lag", &W.lag);
    hr_buf_append(&b, ",", 1);
    json_hist_raw(&b, "recovery", &W.recovery);
    hr_buf_append(&b, ",\"closes\":{", 11);
    for (int i = 0; i < W.ncodes; i++)
        bprintf(&b, "%s\"%d\":%d", i ? "," : "", W.codes[i], W.code_n[i]);
    bprintf(&b, "%s\"eof\":%llu,\"reset\":%llu},\"http_statuses\":{", W.ncodes ? "," : "",
            (unsigned long long)W.closed_eof, (unsigned long long)W.closed_reset);
    for (int i = 0; i < W.nstatus; i++)
        bprintf(&b, "%s\"%d\":%d", i ? "," : "", W.statuses[i], W.status_n[i]);
    hr_buf_append(&b, "},\"socket_errors\":{", 19);
    for (int i = 0; i < W.nerrno; i++) {
        const char *en = strerrorname_np(W.errnos[i]);
        bprintf(&b, "%s\"%s\":%d", i ? "," : "", en ? en : "?", W.errno_n[i]);
    }
    hr_buf_append(&b, "},\"errors\":{", 12);
    int first = 1;
    for (int e = 0; e < E_N; e++)
        if (W.errors[e]) {
            bprintf(&b, "%s\"%s\":%llu", first ? "" : ",", err_names[e],
                    (unsigned long long)W.errors[e]);
            first = 0;
        }
    hr_buf_append(&b, "}}\n", 3);
    ctl_send(hr_buf_head(&b), hr_buf_pending(&b));
    hr_buf_reset(&b);
}

/*---- the worker ---------------------------------------------------------------------------*/

static int worker_init(int proc, int ctl)
{
    W.proc = proc;
    W.ctl = ctl;
    W.rng = now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    W.t_start = now_ns();
    W.nws = 0;
    for (int g = proc; g < ws_total(); g += S.procs)
        W.nws++;
    int rest_needed = 0;
    for (uint32_t ch = (uint32_t)proc; ch < (uint32_t)nchannels(); ch += (uint32_t)S.procs)
        rest_needed |= !ch_fcall(ch) && ch_rate(ch) > 0;
    W.nrest = rest_needed ? S.nnodes * S.rest_conns : 0;
    W.nredis_conns = S.proto == PROTO_HERALD && S.fcall_fraction > 0 ? S.nredis : 0;
    W.nconns_all = W.nws + W.nrest + W.nredis_conns;
    W.ws = calloc((size_t)W.nws + 1, sizeof *W.ws);
    W.rest = calloc((size_t)W.nrest + 1, sizeof *W.rest);
    W.redis = calloc((size_t)S.nredis + 1, sizeof *W.redis);
    W.dirty = calloc((size_t)W.nconns_all + 1, sizeof *W.dirty);
    W.more = calloc(2 * (size_t)W.nconns_all + 1, sizeof *W.more);
    W.grave = calloc(2 * (size_t)W.nconns_all + 1, sizeof *W.grave);
    W.pc = calloc((size_t)nchannels() + 1, sizeof *W.pc);
    W.accepted_all = calloc((size_t)nchannels() + 1, sizeof *W.accepted_all);
    W.epoch = calloc((size_t)nchannels() + 1, sizeof *W.epoch);
    W.rbuf = malloc(RBUF_SIZE);
    if (!W.ws || !W.rest || !W.redis || !W.dirty || !W.more || !W.grave || !W.pc ||
        !W.accepted_all || !W.epoch || !W.rbuf)
        return -1;
    for (int g = proc, i = 0; g < ws_total(); g += S.procs, i++) {
        sconn *c = &W.ws[i];
        int node;
        c->fd = -1;
        c->kind = K_WS;
        c->g = (uint32_t)g;
        c->nsubs = (uint8_t)conn_channels(g, c->ch, &node);
        c->node = (uint8_t)node;
        c->cur = UINT32_MAX;
        c->st[0].offset = c->st[1].offset = -1;
    }
    for (int n = 0; n < S.nnodes && W.nrest; n++) {
        W.idle_rest[n] = calloc((size_t)S.rest_conns + 1, sizeof **W.idle_rest);
        if (!W.idle_rest[n])
            return -1;
    }
    W.ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < W.nrest; i++) {
        sconn *r = &W.rest[i];
        r->fd = -1;
        r->kind = K_REST;
        r->node = (uint8_t)(i % S.nnodes);
        r->g = (uint32_t)i;
        r->cur = UINT32_MAX;
    }
    for (int i = 0; i < W.nredis_conns; i++) {
        sconn *r = &W.redis[i];
        r->fd = -1;
        r->kind = K_REDIS;
        r->g = (uint32_t)i;
        r->cur = UINT32_MAX;
    }
    set_nonblock(ctl);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, ctl, &ev);
    return 0;
}

static int poll_timeout_ms(uint64_t now)
{
    if (W.nmore > 0)
        return 0;
    uint64_t next = now + 20000000ull;
    if (W.phase == P_PUBLISH && W.pubq.n > 0 && W.pubq.a[0].key < next)
        next = W.pubq.a[0].key;
    if (W.retry.n > 0 && W.retry.a[0].key < next)
        next = W.retry.a[0].key;
    return next > now ? (int)((next - now + 999999) / 1000000) : 0;
}

static int worker_main(int proc, int ctl)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN); /* the parent decides */
    if (worker_init(proc, ctl) < 0) {
        fprintf(stderr, "loadgen[%d]: out of memory\n", proc);
        return 2;
    }
    struct epoll_event evs[1024];
    while (W.phase != P_END) {
        uint64_t now = now_ns();
        switch (W.phase) {
        case P_CONNECT:
            connect_phase(now);
            break;
        case P_PUBLISH:
            publish_phase(now);
            break;
        case P_ACKS:
            acks_phase(now);
            break;
        default:
            break;
        }
        run_retries(now);
        if (now >= W.t_next_tick) {
            tick(now);
            W.t_next_tick = now + TICK_NS;
        }
        flush_dirty();
        int n = epoll_wait(W.ep, evs, 1024, poll_timeout_ms(now));
        now = now_ns();
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr)
                on_ctl(now);
            else
                on_event(evs[i].data.ptr, evs[i].events, now);
        }
        continue_reads(now);
        flush_dirty();
        bury();
    }
    send_report();
    return 0;
}

/*---- the parent ---------------------------------------------------------------------------*/

typedef struct child {
    pid_t pid;
    int fd;
    hr_buf in;
    int got_r, got_p, got_f, dead;
    int ready, failed;
    json_t *report;
} child;

static child K[MAX_PROCS];
static volatile sig_atomic_t P_stop;
static uint32_t *P_accepted;
static uint64_t P_t0, P_tend;

static void on_parent_signal(int sig)
{
    (void)sig;
    P_stop = 1;
}

static void event_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void event_line(const char *fmt, ...)
{
    if (!S.events_file)
        return;
    FILE *f = fopen(S.events_file, "a");
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static void child_line(child *k, char *line)
{
    if (line[0] == 'R') {
        sscanf(line + 1, "%d %d", &k->ready, &k->failed);
        k->got_r = 1;
    } else if (line[0] == 'P') {
        read_counts(line + 1, P_accepted);
        k->got_p = 1;
    } else if (line[0] == 'F') {
        json_error_t e;
        k->report = json_loads(line + 2, 0, &e);
        if (!k->report)
            fprintf(stderr, "loadgen: worker report unreadable: %s\n", e.text);
        k->got_f = 1;
    }
}

/* Reads what the workers said, for up to ms milliseconds; notes the dead. */
static void parent_poll(int ms)
{
    struct pollfd pf[MAX_PROCS];
    for (int i = 0; i < S.procs; i++)
        pf[i] = (struct pollfd){.fd = K[i].dead ? -1 : K[i].fd, .events = POLLIN};
    if (poll(pf, (nfds_t)S.procs, ms) <= 0)
        return;
    char buf[65536];
    for (int i = 0; i < S.procs; i++) {
        if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t n = read(K[i].fd, buf, sizeof buf);
        if (n <= 0) {
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            K[i].dead = 1;
            continue;
        }
        hr_buf_append(&K[i].in, buf, (size_t)n);
        char *nl;
        while ((nl = memchr(hr_buf_head(&K[i].in), '\n', hr_buf_pending(&K[i].in)))) {
            *nl = '\0';
            size_t len = (size_t)(nl - hr_buf_head(&K[i].in)) + 1;
            child_line(&K[i], hr_buf_head(&K[i].in));
            hr_buf_consume(&K[i].in, len);
        }
    }
}

static void parent_send_all(const char *s, size_t n)
{
    for (int i = 0; i < S.procs; i++) {
        const char *p = s;
        size_t left = n;
        while (left > 0 && !K[i].dead) {
            ssize_t k = write(K[i].fd, p, left);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                K[i].dead = 1;
                break;
            }
            p += k;
            left -= (size_t)k;
        }
    }
}

/* Waits until every live worker has set *flag (offset into child), the
 * deadline passes or a stop is asked; returns 1 when all did. */
static int parent_wait(size_t flag_off, uint64_t deadline)
{
    for (;;) {
        int all = 1;
        for (int i = 0; i < S.procs; i++)
            all &= *(int *)((char *)&K[i] + flag_off) != 0;
        if (all)
            return 1;
        for (int i = 0; i < S.procs; i++)
            if (K[i].dead && !*(int *)((char *)&K[i] + flag_off))
                return 0;
        uint64_t now = now_ns();
        if (now >= deadline || P_stop)
            return 0;
        uint64_t left = (deadline - now) / 1000000;
        parent_poll(left > 200 ? 200 : (int)left + 1);
    }
}

/* Polls until `until` (CLOCK_MONOTONIC), still reading the workers. */
static void parent_sleep_until(uint64_t until)
{
    for (;;) {
        uint64_t now = now_ns();
        if (now >= until || P_stop)
            return;
        uint64_t left = (until - now) / 1000000;
        parent_poll(left > 50 ? 50 : (int)left);
    }
}

typedef struct sample {
    double cpu[MAX_NODES + MAX_SHARDS];
    long rss[MAX_NODES + MAX_SHARDS];
    double workers_cpu; /* the loadgen's own worker processes */
} sample;

static void take_sample(sample *s)
{
    for (int i = 0; i < S.nnodes; i++) {
        s->cpu[i] = S.nodes[i].pid > 0 ? proc_cpu_s(S.nodes[i].pid) : -1;
        s->rss[i] = S.nodes[i].pid > 0 ? proc_rss_kb(S.nodes[i].pid) : -1;
    }
    for (int i = 0; i < S.nredis; i++) {
        s->cpu[MAX_NODES + i] = S.redis[i].pid > 0 ? proc_cpu_s(S.redis[i].pid) : -1;
        s->rss[MAX_NODES + i] = S.redis[i].pid > 0 ? proc_rss_kb(S.redis[i].pid) : -1;
    }
    s->workers_cpu = 0;
    for (int i = 0; i < S.procs; i++)
        if (K[i].pid > 0)
            s->workers_cpu += proc_cpu_s(K[i].pid);
}

/*---- merging the workers' reports
 * ---------------------------------------------------------------*/

static uint64_t rep_u(const json_t *r, const char *k)
{
    return (uint64_t)json_integer_value(json_object_get(r, k));
}

static uint64_t sum_u(const char *k)
{
    uint64_t s = 0;
    for (int i = 0; i < S.procs; i++)
        if (K[i].report)
            s += rep_u(K[i].report, k);
    return s;
}

static void sum_array(const char *k, uint64_t *out, int n)
{
    memset(out, 0, sizeof *out * (size_t)n);
    for (int i = 0; i < S.procs; i++) {
        json_t *a = K[i].report ? json_object_get(K[i].report, k) : NULL;
        for (int j = 0; j < n && j < (int)json_array_size(a); j++)
            out[j] += (uint64_t)json_integer_value(json_array_get(a, (size_t)j));
    }
}

static void merge_hist(const char *k, hist *h)
{
    memset(h, 0, sizeof *h);
    for (int i = 0; i < S.procs; i++) {
        json_t *o = K[i].report ? json_object_get(K[i].report, k) : NULL;
        if (!o)
            continue;
        h->n += rep_u(o, "n");
        uint64_t mx = rep_u(o, "max");
        if (mx > h->max)
            h->max = mx;
        h->sum += json_number_value(json_object_get(o, "sum"));
        json_t *b = json_object_get(o, "b");
        for (size_t j = 0; j + 1 < json_array_size(b); j += 2)
            hist_add_n(h, (size_t)json_integer_value(json_array_get(b, j)),
                       (uint64_t)json_integer_value(json_array_get(b, j + 1)));
    }
}

static void print_hist(FILE *f, const char *prefix, const hist *h)
{
    fprintf(f,
            "\"%sp50_ms\":%.3f,\"%sp90_ms\":%.3f,\"%sp99_ms\":%.3f,\"%sp999_ms\":%.3f,"
            "\"%smax_ms\":%.3f,\"%smean_ms\":%.3f,\"%scount\":%llu",
            prefix, hist_pct_ms(h, 50), prefix, hist_pct_ms(h, 90), prefix, hist_pct_ms(h, 99),
            prefix, hist_pct_ms(h, 99.9), prefix, (double)h->max / 1e6, prefix,
            h->n ? h->sum / (double)h->n / 1e6 : 0, prefix, (unsigned long long)h->n);
}

/* Sums every worker's table `k` (code -> count) into one JSON object. */
static void print_merged_table(FILE *f, const char *k)
{
    json_t *m = json_object();
    for (int i = 0; i < S.procs; i++) {
        json_t *o = K[i].report ? json_object_get(K[i].report, k) : NULL;
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v)
        {
            json_int_t old = json_integer_value(json_object_get(m, key));
            json_object_set_new(m, key, json_integer(old + json_integer_value(v)));
        }
    }
    char *s = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    fprintf(f, "\"%s\":%s", k, s ? s : "{}");
    free(s);
    json_decref(m);
}

static double secs(uint64_t a, uint64_t b)
{
    return b > a ? (double)(b - a) / 1e9 : 0;
}

static void report(const sample *s0, const sample *sc, const sample *sa, const sample *sb,
                   int timed_out, uint64_t t_begin)
{
    hist lat, hs, ack, lag, rec, sub, resync;
    merge_hist("lat", &lat);
    merge_hist("hs", &hs);
    merge_hist("sub", &sub);
    merge_hist("resync", &resync);
    merge_hist("ack", &ack);
    merge_hist("lag", &lag);
    merge_hist("recovery", &rec);
    uint64_t by_node[MAX_NODES], sent_node[MAX_NODES], sent_shard[MAX_SHARDS];
    sum_array("by_node", by_node, S.nnodes);
    sum_array("sent_by_node", sent_node, S.nnodes);
    sum_array("sent_by_shard", sent_shard, S.nredis > 0 ? S.nredis : 1);
    uint64_t first_open = 0, last_hs = 0, first_down = 0, last_rec = 0;
    int ready = 0, failed = 0, reports = 0;
    int node_conns[MAX_NODES] = {0};
    for (int g = 0; g < ws_total(); g++) {
        uint32_t ch[2];
        int node;
        conn_channels(g, ch, &node);
        node_conns[node]++;
    }
    for (int i = 0; i < S.procs; i++) {
        ready += K[i].ready;
        failed += K[i].failed;
        json_t *r = K[i].report;
        if (!r)
            continue;
        reports++;
        uint64_t v = rep_u(r, "t_first_open");
        if (v && (!first_open || v < first_open))
            first_open = v;
        v = rep_u(r, "t_last_hs");
        if (v > last_hs)
            last_hs = v;
        v = rep_u(r, "first_down");
        if (v && (!first_down || v < first_down))
            first_down = v;
        v = rep_u(r, "last_recovered");
        if (v > last_rec)
            last_rec = v;
    }
    double dur = secs(P_t0, P_tend);
    uint64_t expected = sum_u("expected"), unique = sum_u("unique");
    int nhist = 0, nfcall = 0;
    for (uint32_t c = 0; c < (uint32_t)nchannels(); c++)
        nhist += ch_history(c), nfcall += ch_fcall(c);
    FILE *f = stdout;
    fprintf(f, "{\"scenario\":\"%s\",\"proto\":\"%s\",\"procs\":%d,\"workers_reported\":%d,",
            S.name, S.proto == PROTO_NCHAN ? "nchan" : "herald", S.procs, reports);
    fprintf(f,
            "\"channels\":{\"rooms\":%d,\"room_size\":%d,\"personal\":%d,\"history\":%d,"
            "\"fcall\":%d},",
            S.rooms, S.room_size, S.personal, nhist, nfcall);
    double ce = secs(first_open, last_hs);
    fprintf(f,
            "\"conns\":{\"total\":%d,\"ready\":%d,\"failed\":%d,\"subscriptions\":%llu},"
            "\"connect\":{\"elapsed_s\":%.3f,\"rate\":%.1f,",
            ws_total(), ready, failed, (unsigned long long)sum_u("subs_counted"), ce,
            ce > 0 ? (double)hs.n / ce : 0);
    print_hist(f, "", &hs);
    fputc(',', f);
    print_hist(f, "sub_", &sub);
    uint64_t acked = sum_u("acked");
    fprintf(f,
            "},\"publish\":{\"duration_s\":%.3f,\"scheduled\":%llu,\"sent\":%llu,"
            "\"acked\":%llu,\"refused\":%llu,\"uncertain\":%llu,\"late\":%llu,\"rest\":%llu,"
            "\"fcall\":%llu,\"rest_reconnects\":%llu,\"rate\":%.1f,",
            dur, (unsigned long long)sum_u("scheduled"), (unsigned long long)sum_u("sent"),
            (unsigned long long)acked, (unsigned long long)sum_u("refused"),
            (unsigned long long)sum_u("uncertain"), (unsigned long long)sum_u("late"),
            (unsigned long long)sum_u("sent_rest"), (unsigned long long)sum_u("sent_fcall"),
            (unsigned long long)sum_u("rest_reconnects"), dur > 0 ? (double)acked / dur : 0);
    print_hist(f, "ack_", &ack);
    fputc(',', f);
    print_hist(f, "lag_", &lag);
    uint64_t in_window = sum_u("in_window");
    fprintf(f,
            "},\"delivery\":{\"expected\":%llu,\"unique\":%llu,\"lost\":%lld,"
            "\"lost_history\":%llu,\"lost_plain\":%llu,\"lost_personal\":%llu,\"extra\":%llu,"
            "\"incomplete_subs\":%llu,\"received\":%llu,\"recovered\":%llu,\"gaps\":%llu,"
            "\"dups\":%llu,\"stale\":%llu,\"reordered\":%llu,\"in_window\":%llu,\"rate\":%.1f,",
            (unsigned long long)expected, (unsigned long long)unique,
            (long long)(sum_u("lost_history") + sum_u("lost_plain") + sum_u("lost_personal")),
            (unsigned long long)sum_u("lost_history"), (unsigned long long)sum_u("lost_plain"),
            (unsigned long long)sum_u("lost_personal"), (unsigned long long)sum_u("extra"),
            (unsigned long long)sum_u("incomplete_subs"), (unsigned long long)sum_u("received"),
            (unsigned long long)sum_u("recovered_deliveries"), (unsigned long long)sum_u("gaps"),
            (unsigned long long)sum_u("dups"), (unsigned long long)sum_u("stale"),
            (unsigned long long)sum_u("reordered"), (unsigned long long)in_window,
            dur > 0 ? (double)in_window / dur : 0);
    print_hist(f, "", &lat);
    fprintf(f,
            "},\"reconnect\":{\"disconnects\":%llu,\"attempts\":%llu,\"recovered\":%llu,"
            "\"not_recovered\":%llu,\"resub_errors\":%llu,\"epoch_changes\":%llu,"
            "\"down_at_end\":%llu,\"first_down_ns\":%llu,\"last_recovered_ns\":%llu,"
            "\"all_recovered_s\":%.3f,",
            (unsigned long long)sum_u("disconnects"), (unsigned long long)sum_u("attempts"),
            (unsigned long long)sum_u("recovered_conns"),
            (unsigned long long)sum_u("not_recovered"), (unsigned long long)sum_u("resub_errors"),
            (unsigned long long)sum_u("epoch_changes"), (unsigned long long)sum_u("down_at_end"),
            (unsigned long long)first_down, (unsigned long long)last_rec,
            first_down && last_rec ? secs(first_down, last_rec) : 0);
    print_hist(f, "recovery_", &rec);
    fputc(',', f);
    print_hist(f, "resync_", &resync);
    fprintf(f,
            "},\"window\":{\"t0_ns\":%llu,\"t_end_ns\":%llu,\"loadgen_cpu_s\":%.3f},"
            "\"nodes\":[",
            (unsigned long long)P_t0, (unsigned long long)P_tend,
            sb->workers_cpu - sa->workers_cpu);
    for (int i = 0; i < S.nnodes; i++) {
        double cpu = sa->cpu[i] >= 0 && sb->cpu[i] >= 0 ? sb->cpu[i] - sa->cpu[i] : -1;
        fprintf(f,
                "%s{\"port\":%d,\"pid\":%d,\"conns\":%d,\"deliveries\":%llu,\"rest\":%llu,"
                "\"cpu_s\":",
                i ? "," : "", S.nodes[i].port, S.nodes[i].pid, node_conns[i],
                (unsigned long long)by_node[i], (unsigned long long)sent_node[i]);
        if (cpu >= 0)
            fprintf(f, "%.3f", cpu);
        else
            fputs("null", f);
        fprintf(f, ",\"rss_before_kb\":%ld,\"rss_connected_kb\":%ld,\"rss_end_kb\":%ld}",
                s0->rss[i], sc->rss[i], sb->rss[i]);
    }
    fputs("],\"redis\":[", f);
    for (int i = 0; i < S.nredis; i++) {
        int j = MAX_NODES + i;
        double cpu = sa->cpu[j] >= 0 && sb->cpu[j] >= 0 ? sb->cpu[j] - sa->cpu[j] : -1;
        fprintf(f, "%s{\"port\":%d,\"pid\":%d,\"publications\":%llu,\"cpu_s\":", i ? "," : "",
                S.redis[i].port, S.redis[i].pid, (unsigned long long)sent_shard[i]);
        if (cpu >= 0)
            fprintf(f, "%.3f", cpu);
        else
            fputs("null", f);
        fprintf(f, ",\"rss_before_kb\":%ld,\"rss_end_kb\":%ld}", s0->rss[j], sb->rss[j]);
    }
    fputs("],", f);
    print_merged_table(f, "closes");
    fputc(',', f);
    print_merged_table(f, "http_statuses");
    fputc(',', f);
    print_merged_table(f, "errors");
    fputc(',', f);
    print_merged_table(f, "socket_errors");
    fprintf(f, ",\"timed_out\":%s,\"interrupted\":%s,\"elapsed_s\":%.3f}\n",
            timed_out ? "true" : "false", P_stop ? "true" : "false", secs(t_begin, now_ns()));
    fflush(f);
}

/*---- loading the scenario ---------------------------------------------------------------------*/

typedef struct keydef {
    const char *key;
    char type; /* s string, i int, d double, b bool, l long */
    void *ptr;
} keydef;

static const keydef keydefs[] = {
    {"name", 's', &S.name},
    {"proto", 's', &S.proto_s},
    {"host", 's', &S.host},
    {"secret", 's', &S.secret},
    {"api_key", 's', &S.api_key},
    {"prefix", 's', &S.prefix},
    {"history_namespace", 's', &S.hist_ns},
    {"fcall", 's', &S.fcall},
    {"sub_path", 's', &S.sub_path},
    {"pub_path", 's', &S.pub_path},
    {"events_file", 's', &S.events_file},
    {"procs", 'i', &S.procs},
    {"src_first", 'i', &S.src_first},
    {"src_count", 'i', &S.src_count},
    {"conns", 'i', &S.conns},
    {"rooms", 'i', &S.rooms},
    {"room_size", 'i', &S.room_size},
    {"personal", 'i', &S.personal},
    {"history_fraction", 'd', &S.history_fraction},
    {"fcall_fraction", 'd', &S.fcall_fraction},
    {"room_rate", 'd', &S.room_rate},
    {"personal_rate", 'd', &S.personal_rate},
    {"duration", 'd', &S.duration},
    {"connect_timeout", 'd', &S.connect_timeout},
    {"drain_timeout", 'd', &S.drain_timeout},
    {"ack_timeout", 'd', &S.ack_timeout},
    {"timeout", 'd', &S.timeout},
    {"size", 'i', &S.size},
    {"concurrency", 'i', &S.concurrency},
    {"rest_conns", 'i', &S.rest_conns},
    {"settle_ms", 'i', &S.settle_ms},
    {"reconnect", 'b', &S.reconnect},
    {"backoff_base_ms", 'i', &S.backoff_base_ms},
    {"backoff_max_ms", 'i', &S.backoff_max_ms},
    {"stable_ms", 'i', &S.stable_ms},
    {"reconnect_timeout_ms", 'i', &S.reconnect_timeout_ms},
    {"ttl", 'l', &S.ttl},
    {"test_drop", 'i', &S.test_drop},
    {"test_dup", 'i', &S.test_dup},
    {"verbose", 'b', &S.verbose},
};

static int load_endpoints(json_t *a, endpoint *out, int cap, const char *what)
{
    if (!json_is_array(a) || json_array_size(a) > (size_t)cap) {
        fprintf(stderr,
                "herald-loadgen: \"%s\" must be an array of at most %d {\"port\",\"pid\"}\n", what,
                cap);
        return -1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        json_int_t port = json_integer_value(json_object_get(e, "port"));
        if (port <= 0 || port > 65535) {
            fprintf(stderr, "herald-loadgen: %s[%zu]: no valid \"port\"\n", what, i);
            return -1;
        }
        out[i].port = (int)port;
        out[i].pid = (int)json_integer_value(json_object_get(e, "pid"));
    }
    return (int)json_array_size(a);
}

static int load_scenario(const char *path)
{
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    if (!json_is_object(root)) {
        fprintf(stderr, "herald-loadgen: %s:%d: %s\n", path, e.line,
                root ? "not an object" : e.text);
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!strcmp(key, "nodes")) {
            if ((S.nnodes = load_endpoints(v, S.nodes, MAX_NODES, key)) < 0)
                return -1;
            continue;
        }
        if (!strcmp(key, "redis")) {
            if ((S.nredis = load_endpoints(v, S.redis, MAX_SHARDS, key)) < 0)
                return -1;
            continue;
        }
        if (key[0] == '_')
            continue; /* comments */
        const keydef *d = NULL;
        for (size_t i = 0; i < sizeof keydefs / sizeof *keydefs; i++)
            if (!strcmp(keydefs[i].key, key))
                d = &keydefs[i];
        int ok = d != NULL;
        if (d && d->type == 's' && (ok = json_is_string(v)))
            *(const char **)d->ptr = strdup(json_string_value(v)); /* lives for the run */
        else if (d && d->type == 'i' && (ok = json_is_integer(v)))
            *(int *)d->ptr = (int)json_integer_value(v);
        else if (d && d->type == 'l' && (ok = json_is_integer(v)))
            *(long *)d->ptr = (long)json_integer_value(v);
        else if (d && d->type == 'd' && (ok = json_is_number(v)))
            *(double *)d->ptr = json_number_value(v);
        else if (d && d->type == 'b' && (ok = json_is_boolean(v)))
            *(int *)d->ptr = json_is_true(v);
        if (!ok) {
            fprintf(stderr, "herald-loadgen: %s: key \"%s\" %s\n", path, key,
                    d ? "has the wrong type" : "is unknown");
            return -1;
        }
    }
    json_decref(root);
    const char *why = NULL;
    S.proto = S.proto_s && !strcmp(S.proto_s, "nchan") ? PROTO_NCHAN : PROTO_HERALD;
    if (S.proto_s && strcmp(S.proto_s, "nchan") && strcmp(S.proto_s, "herald"))
        why = "\"proto\" is herald or nchan";
    else if (S.nnodes < 1)
        why = "\"nodes\" is required";
    else if (S.procs < 1 || S.procs > MAX_PROCS)
        why = "\"procs\" must be 1..64";
    else if (S.conns < 0 || S.rooms < 0 || S.personal < 0 || S.room_size < 1)
        why = "negative sizes";
    else if (S.rooms * S.room_size > S.conns)
        why = "rooms x room_size exceeds conns";
    else if (S.personal > S.conns)
        why = "more personal channels than connections";
    else if (S.proto == PROTO_HERALD && S.conns > 0 && !S.secret)
        why = "\"secret\" is required for Herald";
    else if (S.fcall_fraction > 0 && S.proto == PROTO_HERALD && S.nredis < 1)
        why = "\"fcall_fraction\" needs \"redis\"";
    else if (S.duration <= 0 || S.timeout <= 0 || S.connect_timeout <= 0)
        why = "\"duration\", \"timeout\", \"connect_timeout\" must be positive";
    else if (S.size < 40 || S.size > 60000)
        why = "\"size\" must be 40..60000";
    else if (S.rest_conns < 1 || S.concurrency < 1)
        why = "\"rest_conns\" and \"concurrency\" must be positive";
    else if (S.src_first < 1 || S.src_first + (S.src_count > 0 ? S.src_count : 1) > 255)
        why = "source addresses must stay within 127.0.0.1..254";
    if (why) {
        fprintf(stderr, "herald-loadgen: %s: %s\n", path, why);
        return -1;
    }
    return 0;
}

/* Every worker's sockets must fit the descriptor limit: refuse the run
 * rather than fail half-way with EMFILE. */
static int check_fds(void)
{
    unsigned long long limit, need = (unsigned long long)((ws_total() + S.procs - 1) / S.procs +
                                                          S.nnodes * S.rest_conns + S.nredis + 64);
    if (bc_fd_limit(need, &limit) < 0) {
        fprintf(stderr,
                "herald-loadgen: %d connections over %d processes need %llu descriptors each, "
                "the limit is %llu: raise \"procs\"\n",
                ws_total(), S.procs, need, limit);
        return -1;
    }
    return 0;
}

static void scenario_usage(FILE *f)
{
    fputs("usage: herald-loadgen --scenario FILE [-v]\n"
          "FILE is a JSON object (unknown keys are refused; keys starting with _ are comments):\n"
          "  nodes [{port,pid}]  WebSocket/REST endpoints; connection g goes to node g %% n\n"
          "  redis [{port,pid}]  shards, in HERALD_REDIS_URL order (FCALL, CPU per shard)\n"
          "  proto herald|nchan  secret, api_key (Herald), name, host (127.0.0.1)\n"
          "  procs (1)           worker processes; worker k owns connections g %% procs == k\n"
          "  src_first (2), src_count (64): source addresses 127.0.0.<first + g %% count>\n"
          "  conns, rooms, room_size (10): connection g is in room g / room_size\n"
          "  personal            channels user:<prefix>u<c>, each subscribed by one connection\n"
          "  history_fraction, fcall_fraction: shares of rooms with history / published by FCALL\n"
          "  room_rate (1), personal_rate (1): publications per second per channel\n"
          "  duration (20)       publishing time, s; then acks (ack_timeout 15), drain (30)\n"
          "  size (100)          payload bytes; rest_conns (8) per node per process\n"
          "  concurrency (200)   handshakes in flight per process; connect_timeout (180)\n"
          "  settle_ms (0)       pause after the last connection before publishing\n"
          "  reconnect (false)   reconnect like herald.js: backoff_base_ms (500),\n"
          "                      backoff_max_ms (20000), stable_ms (10000), full jitter,\n"
          "                      history channels resubscribed with since;\n"
          "                      reconnect_timeout_ms (10000) per attempt\n"
          "  prefix (s.), history_namespace (h), fcall (herald_publish), sub_path, pub_path\n"
          "  events_file         lines \"connected|go|published|done <CLOCK_MONOTONIC ns>\"\n"
          "  timeout (560)       the whole run; test_drop, test_dup: every Nth delivery\n"
          "Prints one JSON line: conns, connect, publish, delivery (lost, dups, latency),\n"
          "reconnect, per node (CPU over the publishing window, RSS, deliveries) and per shard.\n",
          f);
}

int scenario_main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scenario") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "-v"))
            S.verbose = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            scenario_usage(stdout);
            return 0;
        } else {
            scenario_usage(stderr);
            return 2;
        }
    }
    if (!path || load_scenario(path) < 0 || check_fds() < 0)
        return 2;
    uint64_t t_begin = now_ns();
    P_accepted = calloc((size_t)nchannels() + 1, sizeof *P_accepted);
    if (!P_accepted)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_parent_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sample s0 = {0}, sc = {0}, sa0 = {0}, sb = {0};
    take_sample(&s0);
    for (int i = 0; i < S.procs; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            perror("socketpair");
            return 2;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(sv[0]);
            for (int j = 0; j < i; j++)
                close(K[j].fd);
            _exit(worker_main(i, sv[1]));
        }
        close(sv[1]);
        K[i].pid = pid;
        K[i].fd = sv[0];
    }
    uint64_t deadline = t_begin + (uint64_t)(S.timeout * 1e9);
    int ok = parent_wait(offsetof(child, got_r), deadline);
    int ready = 0;
    for (int i = 0; i < S.procs; i++)
        ready += K[i].ready;
    if (S.verbose)
        fprintf(stderr, "loadgen: %d connections ready after %.1fs\n", ready,
                secs(t_begin, now_ns()));
    take_sample(&sc);
    event_line("connected %llu", (unsigned long long)now_ns());
    if (ok) {
        parent_sleep_until(now_ns() + (uint64_t)S.settle_ms * 1000000ull);
        P_t0 = now_ns() + 50000000ull;
        P_tend = P_t0 + (uint64_t)(S.duration * 1e9);
        char line[96];
        int n = snprintf(line, sizeof line, "G %llu %llu\n", (unsigned long long)P_t0,
                         (unsigned long long)P_tend);
        parent_send_all(line, (size_t)n);
        parent_sleep_until(P_t0);
        take_sample(&sa0);
        event_line("go %llu %llu", (unsigned long long)P_t0, (unsigned long long)P_tend);
        parent_sleep_until(P_tend);
        take_sample(&sb);
        event_line("published %llu", (unsigned long long)now_ns());
        if (S.verbose)
            fprintf(stderr, "loadgen: publishing over\n");
        ok = parent_wait(offsetof(child, got_p), deadline);
    }
    if (ok) {
        hr_buf b = {0};
        char tmp[48];
        int n = 0;
        for (int c = 0; c < nchannels(); c++)
            n += P_accepted[c] > 0;
        int k = snprintf(tmp, sizeof tmp, "A %d", n);
        hr_buf_append(&b, tmp, (size_t)k);
        for (int c = 0; c < nchannels(); c++)
            if (P_accepted[c]) {
                k = snprintf(tmp, sizeof tmp, " %d %u", c, P_accepted[c]);
                hr_buf_append(&b, tmp, (size_t)k);
            }
        hr_buf_append(&b, "\n", 1);
        parent_send_all(hr_buf_head(&b), hr_buf_pending(&b));
        hr_buf_reset(&b);
    } else {
        parent_send_all("S\n", 2); /* a worker died or time ran out: report what there is */
    }
    ok = parent_wait(offsetof(child, got_f), deadline + 20000000000ull) && ok;
    for (int i = 0; i < S.procs; i++) {
        if (!K[i].got_f)
            kill(K[i].pid, SIGKILL);
        waitpid(K[i].pid, NULL, 0);
    }
    event_line("done %llu", (unsigned long long)now_ns());
    if (!P_t0) {
        sa0 = sc;
        sb = sc;
    }
    report(&s0, &sc, &sa0, &sb, !ok && now_ns() >= deadline, t_begin);
    return 0;
}
