/* conn.c - a client connection, whatever carries it (see conn.h). */
#include "gateway/conn.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* The connections of one user on one loop: how a disconnect finds them
 * without walking every connection. */
typedef struct user_conns {
    lws_dll2_owner_t conns;
} user_conns;

/* Ring slots kept once a burst has drained; bigger rings are freed. */
#define HR_RING_KEEP 64
/* The deadline never lies further ahead than this; it re-arms on waking.
 * This keeps the arithmetic in range for any `exp` a token may carry. */
#define HR_TIMER_MAX_S 3600

static const hr_config *conn_cfg(const hr_conn *c)
{
    return c->w->node->cfg;
}

static void subs_end(hr_conn *c);

/*---- Life ------------------------------------------------------------------*/

void hr_conn_init(hr_conn *c, const hr_conn_ops *ops, hr_worker *w, struct lws *wsi)
{
    c->ops = ops;
    c->w = w;
    c->wsi = wsi;
    c->refs = 1;
    lws_dll2_add_tail(&c->in_loop, &w->conns);
    HR_INC(&w->stats, connections, 1);
    HR_INC(&w->stats, connections_total, 1);
}

void hr_conn_ref(hr_conn *c)
{
    c->refs++;
}

void hr_conn_unref(hr_conn *c)
{
    if (--c->refs)
        return;
    free(c->fwd);
    free(c->remote_addr);
    free(c->reason_own);
    free(c);
}

void hr_conn_event(hr_worker *w, json_t *event)
{
    if (event && w->node->events)
        hr_events_emit(w->node->events, event, &w->stats);
    else
        json_decref(event);
}

void hr_conn_sub_event(hr_conn *c, int subscribed, const char *channel)
{
    char client[160];
    if (!c->w->node->events || !c->authed)
        return;
    hr_conn_client_id(c, client, sizeof(client));
    hr_conn_event(c->w, hr_event_subscription(subscribed, client, c->id.sub, channel));
}

/* herald.connect / herald.disconnect: the client id is formatted only
 * when there is a hub to tell. */
static void lifecycle(hr_conn *c, int connected)
{
    char client[160];
    if (!c->w->node->events)
        return;
    hr_conn_client_id(c, client, sizeof(client));
    const char *node = c->w->node->cfg->node_id;
    if (connected) {
        hr_conn_event(c->w, hr_event_connect(client, c->id.sub, c->ops->transport, node));
    } else {
        uint64_t now = hr_now_ms();
        int code = c->close_code ? c->close_code : c->peer_code ? c->peer_code : 1006;
        hr_conn_event(c->w, hr_event_disconnect(client, c->id.sub, code,
                                                now > c->authed_ms ? now - c->authed_ms : 0, node));
    }
}

void hr_conn_client_id(const hr_conn *c, char *buf, size_t len)
{
    hr_node_client_id(c->w->node, c->client_n, buf, len);
}

chan_client hr_conn_who(const hr_conn *c, char *buf, size_t len, char **info)
{
    hr_conn_client_id(c, buf, len);
    *info = c->id.info ? json_dumps(c->id.info, JSON_COMPACT) : NULL;
    return (chan_client){buf, c->id.sub ? c->id.sub : "", *info};
}

/* The user index (w->by_user) serves disconnect-by-user and the members
 * API only, so it is built the first time one of them asks (from the
 * worker's connections) and kept up from then on: a node that never uses
 * them saves a map entry and a list head per user (~110 bytes per
 * connection). */
static void user_index_add(hr_worker *w, hr_conn *c)
{
    hr_map *idx = w->by_user;
    size_t len = strlen(c->id.sub);
    user_conns *u = hr_map_get(idx, c->id.sub, len);
    if (!u) {
        u = hr_calloc(1, sizeof(*u));
        hr_map_put(idx, c->id.sub, len, u);
    }
    lws_dll2_add_tail(&c->in_user, &u->conns);
}

static int index_one(struct lws_dll2 *d, void *user)
{
    hr_conn *c = lws_container_of(d, hr_conn, in_loop);
    if (c->authed && c->id.sub)
        user_index_add(user, c);
    return 0;
}

static hr_map *user_index(hr_worker *w)
{
    if (!w->by_user) {
        w->by_user = hr_map_new(NULL);
        lws_dll2_foreach_safe(&w->conns, w, index_one);
    }
    return w->by_user;
}

static void user_index_remove(hr_conn *c)
{
    hr_map *idx = c->w->by_user;
    if (!idx || !c->in_user.owner)
        return;
    size_t len = strlen(c->id.sub);
    user_conns *u = hr_map_get(idx, c->id.sub, len);
    lws_dll2_remove(&c->in_user);
    if (u && u->conns.count == 0) {
        hr_map_del(idx, c->id.sub, len);
        free(u);
    }
}

/*---- Deadlines ---------------------------------------------------------------*/

/* Wheel slots: one a second, a turn longer than the longest wait. */
#define HR_WHEEL_SLOTS 4096

/* The wheel's time: whole seconds of the loop's clock. */
static uint32_t deadline_now(hr_worker *w)
{
    return (uint32_t)(uv_now(&w->loop.uv) / 1000);
}

/* Seconds a closing connection may wait for its peer to accept the close
 * frame before its socket is dropped. A slow consumer must first read what
 * the kernel already holds for it (its queue is dropped, so waiting costs
 * only those buffers); too short, and it sees 1006 instead of 4008. A
 * close that flushes the queue first gets twice as long. It is kept on the
 * wheel, not as an lws timeout: lws_set_timeout inserts into lws' sorted
 * timer list behind every other closing connection's, so closing 19,000
 * connections at shutdown was quadratic (seconds of CPU). */
#define HR_CLOSE_BACKSTOP_S 20

static void deadline_fired(hr_wheel_entry *e, void *ud)
{
    hr_conn *c = lws_container_of(e, hr_conn, deadline);
    (void)ud;
    if (c->close_code) /* the backstop: the peer never took the close */
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    else if (c->ops->deadline)
        c->ops->deadline(c);
    else
        hr_conn_deadline(c);
}

void hr_conn_deadline(hr_conn *c)
{
    if (!c->authed)
        hr_conn_close(c, 4001, "connect timeout", 1);
    else if (c->id.exp > 0 && (int64_t)time(NULL) >= c->id.exp)
        hr_conn_close(c, 4001, "token expired", 1);
    else
        hr_conn_rearm(c); /* refreshed meanwhile, or a capped wait */
}

/* Wakes at the next whole second of the loop's clock while any deadline
 * is armed; an idle loop is not woken. */
static void deadline_tick(uv_timer_t *t);
static void deadline_schedule(hr_worker *w)
{
    if (w->deadline_closed)
        return;
    if (w->deadlines.count == 0)
        uv_timer_stop(&w->deadline_tick);
    else if (!uv_is_active((uv_handle_t *)&w->deadline_tick))
        uv_timer_start(&w->deadline_tick, deadline_tick, 1000 - uv_now(&w->loop.uv) % 1000, 0);
}

/* Arms c's deadline s seconds from now. The tick timer stops while the
 * wheel is empty, so the wheel's clock may be far behind: it is brought
 * to the present first (nothing is armed, nothing fires). */
static void deadline_arm(hr_conn *c, uint32_t s)
{
    hr_worker *w = c->w;
    uint32_t now = deadline_now(w);
    if (w->deadlines.count == 0)
        hr_wheel_advance(&w->deadlines, now, deadline_fired, NULL);
    hr_wheel_arm(&w->deadlines, &c->deadline, now + s + 1);
    deadline_schedule(w);
}

static void deadline_tick(uv_timer_t *t)
{
    hr_worker *w = t->data;
    hr_wheel_advance(&w->deadlines, deadline_now(w), deadline_fired, NULL);
    deadline_schedule(w);
}

void hr_conn_worker_init(hr_worker *w)
{
    hr_wheel_init(&w->deadlines, HR_WHEEL_SLOTS, deadline_now(w));
    uv_timer_init(&w->loop.uv, &w->deadline_tick);
    w->deadline_tick.data = w;
    uv_unref((uv_handle_t *)&w->deadline_tick); /* never keeps a stopped loop alive */
}

void hr_conn_worker_stop(hr_worker *w)
{
    if (!w->deadline_closed && w->deadline_tick.loop) {
        w->deadline_closed = 1;
        uv_close((uv_handle_t *)&w->deadline_tick, NULL);
    }
}

void hr_conn_worker_free(hr_worker *w)
{
    hr_wheel_fini(&w->deadlines);
}

/* The connection's one deadline: the connect deadline before
 * authentication, the token's expiry after it. The delay is computed in
 * seconds and capped, so no `exp` a signed token carries can overflow it
 * (an overflow once fired the timer in a tight loop). It fires at the
 * first whole second of the loop's clock after the delay: never early. */
void hr_conn_arm(hr_conn *c, uint32_t s)
{
    if (!c->close_code)
        deadline_arm(c, s);
}

void hr_conn_rearm(hr_conn *c)
{
    int64_t s;
    if (c->close_code) {
        return; /* closing: the backstop stays */
    } else if (!c->authed) {
        s = conn_cfg(c)->connect_timeout;
    } else if (c->id.exp > 0) {
        int64_t now = (int64_t)time(NULL);
        s = c->id.exp > now ? c->id.exp - now : 0;
    } else {
        s = HR_TIMER_MAX_S; /* no expiry: a capped wait that re-arms */
    }
    if (s > HR_TIMER_MAX_S)
        s = HR_TIMER_MAX_S;
    deadline_arm(c, (uint32_t)s);
}

void hr_conn_authenticate(hr_conn *c, auth_identity *id)
{
    c->id = *id;
    memset(id, 0, sizeof(*id));
    c->authed = 1;
    hr_conn_number(c);
    if (c->id.sub && c->w->by_user)
        user_index_add(c->w, c);
    c->authed_ms = hr_now_ms();
    hr_conn_rearm(c);
    lifecycle(c, 1);
}

uint64_t hr_conn_new_number(hr_node *node)
{
    return atomic_fetch_add(&node->next_client, 1) + 1;
}

void hr_conn_number(hr_conn *c)
{
    if (!c->client_n)
        c->client_n = hr_conn_new_number(c->w->node);
}

char *hr_conn_peer_address(hr_node *node, struct lws *wsi)
{
    char addr[64] = "";
    hr_addr_policy whole = node->addrs; /* the address itself, not its network */
    whole.v4bits = 32;
    whole.v6bits = 128;
    /* every hop a trusted proxy (the client runs on one): the peer */
    if (hr_client_address(&whole, wsi, addr, sizeof(addr)) != 1)
        lws_get_peer_simple(wsi, addr, sizeof(addr));
    return hr_strdup(addr);
}

int hr_conn_user_slot(hr_node *node, const char *sub, hr_slot **slot)
{
    return hr_limit_take(node->conns_per_user, sub, node->cfg->max_conns_per_user, slot);
}

void hr_conn_closed(hr_conn *c)
{
    hr_worker *w = c->w;
    subs_end(c);
    hr_conn_drop_queue(c);
    free(c->q);
    c->q = NULL;
    c->qcap = 0;
    if (c->authed)
        lifecycle(c, 0);
    user_index_remove(c);
    hr_wheel_disarm(&w->deadlines, &c->deadline);
    deadline_schedule(w);
    hr_slot_release(c->addr_slot);
    hr_slot_release(c->user_slot);
    auth_identity_clear(&c->id);
    lws_dll2_remove(&c->in_loop);
    HR_INC(&w->stats, connections, -1);
    c->wsi = NULL;
    hr_conn_unref(c);
    hr_loop_maybe_done(&w->loop);
}

/*---- Subscriptions ---------------------------------------------------------*/

/* Up to this many subscriptions are searched in order (a strcmp each);
 * beyond, a hash map. */
#define HR_SUBS_ARRAY 16

static int sub_is(const chan_sub *s, const char *channel)
{
    return !strcmp(chan_sub_channel(s), channel);
}

chan_sub *hr_conn_sub_get(const hr_conn *c, const char *channel)
{
    if (c->subcap == HR_SUBS_MAP)
        return hr_map_get(c->subs.map, channel, strlen(channel));
    if (c->subcap == 0)
        return c->nsubs && sub_is(c->subs.one, channel) ? c->subs.one : NULL;
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (sub_is(c->subs.arr[i], channel))
            return c->subs.arr[i];
    return NULL;
}

/* The array has grown past HR_SUBS_ARRAY: its entries move to a map. */
static void subs_to_map(hr_conn *c)
{
    hr_map *m = hr_map_new(NULL);
    for (uint32_t i = 0; i < c->nsubs; i++) {
        const char *ch = chan_sub_channel(c->subs.arr[i]);
        hr_map_put(m, ch, strlen(ch), c->subs.arr[i]);
    }
    free(c->subs.arr);
    c->subs.map = m;
    c->subcap = HR_SUBS_MAP;
}

void hr_conn_sub_put(hr_conn *c, chan_sub *s)
{
    if (c->subcap == 0 && c->nsubs == 0) {
        c->subs.one = s;
        c->nsubs = 1;
        return;
    }
    if (c->subcap == 0) {
        chan_sub **a = hr_malloc(4 * sizeof(*a));
        a[0] = c->subs.one;
        c->subs.arr = a;
        c->subcap = 4;
    }
    if (c->subcap != HR_SUBS_MAP && c->nsubs == c->subcap) {
        if (c->subcap >= HR_SUBS_ARRAY) {
            subs_to_map(c);
        } else {
            c->subcap *= 2;
            c->subs.arr = hr_realloc(c->subs.arr, c->subcap * sizeof(*c->subs.arr));
        }
    }
    if (c->subcap == HR_SUBS_MAP) {
        const char *ch = chan_sub_channel(s);
        hr_map_put(c->subs.map, ch, strlen(ch), s);
    } else {
        c->subs.arr[c->nsubs] = s;
    }
    c->nsubs++;
}

chan_sub *hr_conn_sub_del(hr_conn *c, const char *channel)
{
    chan_sub *s = NULL;
    if (c->subcap == HR_SUBS_MAP) {
        if ((s = hr_map_del(c->subs.map, channel, strlen(channel))))
            c->nsubs--;
        return s;
    }
    if (c->subcap == 0) {
        if (!c->nsubs || !sub_is(c->subs.one, channel))
            return NULL;
        s = c->subs.one;
        c->subs.one = NULL;
        c->nsubs = 0;
        return s;
    }
    for (uint32_t i = 0; i < c->nsubs; i++) {
        if (sub_is(c->subs.arr[i], channel)) {
            s = c->subs.arr[i];
            c->subs.arr[i] = c->subs.arr[--c->nsubs];
            break;
        }
    }
    if (s && c->nsubs == 0) { /* back to none: no array kept */
        free(c->subs.arr);
        c->subs.one = NULL;
        c->subcap = 0;
    }
    return s;
}

/* Ends every subscription (the connection is gone). */
/* The event first: the channel's name belongs to s. */
static void sub_end(hr_conn *c, chan_sub *s)
{
    hr_conn_sub_event(c, 0, chan_sub_channel(s));
    chan_unsubscribe(c->w->node->layer, c->w->index, s);
}

static void subs_end(hr_conn *c)
{
    if (c->subcap == HR_SUBS_MAP) {
        const char *key;
        void *val;
        for (size_t it = 0; hr_map_next(c->subs.map, &it, &key, NULL, &val);)
            sub_end(c, val);
        hr_map_free(c->subs.map);
    } else if (c->subcap == 0) {
        if (c->nsubs)
            sub_end(c, c->subs.one);
    } else {
        for (uint32_t i = 0; i < c->nsubs; i++)
            sub_end(c, c->subs.arr[i]);
        free(c->subs.arr);
    }
    c->subs.one = NULL;
    c->nsubs = c->subcap = 0;
}

/*---- Outbound queue --------------------------------------------------------*/

void hr_conn_drop_queue(hr_conn *c)
{
    while (c->qlen) {
        size_t flen;
        c->ops->frame(c, hr_conn_head(c), &flen);
        chan_msg_unref(hr_conn_pop(c, flen));
    }
}

/* Rings start with two slots: most sockets never hold more than a reply
 * and a publication, and an idle connection keeps its ring. */
static void queue_grow(hr_conn *c)
{
    uint32_t ncap = c->qcap ? c->qcap * 2 : 2;
    chan_msg **nq = hr_malloc(ncap * sizeof(*nq));
    for (uint32_t i = 0; i < c->qlen; i++)
        nq[i] = c->q[(c->qhead + i) % c->qcap];
    free(c->q);
    c->q = nq;
    c->qcap = ncap;
    c->qhead = 0;
}

void hr_conn_shrink(hr_conn *c)
{
    if (c->qlen == 0 && c->qcap > HR_RING_KEEP) {
        free(c->q);
        c->q = NULL;
        c->qcap = c->qhead = 0;
    }
}

void hr_conn_close(hr_conn *c, int code, const char *reason, int flush)
{
    if (!c->wsi || c->close_code)
        return;
    c->close_code = code;
    c->close_flush = flush;
    c->close_reason = reason;
    if (!flush)
        hr_conn_drop_queue(c);
    c->ops->closing(c);
    /* the backstop replaces the connection's deadline */
    deadline_arm(c, flush ? HR_CLOSE_BACKSTOP_S * 2 : HR_CLOSE_BACKSTOP_S);
}

void hr_conn_close_copy(hr_conn *c, int code, const char *reason, int flush)
{
    if (!c->wsi || c->close_code)
        return;
    free(c->reason_own);
    /* a close frame holds 123 bytes of reason; cut at a character boundary */
    size_t n = strlen(reason);
    if (n > 123) {
        n = 123;
        while (n && ((unsigned char)reason[n] & 0xc0) == 0x80)
            n--;
    }
    c->reason_own = hr_strndup(reason, n);
    hr_conn_close(c, code, c->reason_own, flush);
}

static void slow_consumer(hr_conn *c)
{
    char client[160];
    HR_INC(&c->w->stats, slow_consumer_closes, 1);
    hr_conn_client_id(c, client, sizeof(client));
    hr_warn("slow_consumer", "client %s: outbound queue over %zu bytes, closing 4008",
            c->authed ? client : "(unauthenticated)", conn_cfg(c)->out_queue_bytes);
    hr_conn_close(c, 4008, "slow consumer", 0);
}

/* Puts c on its loop's pending-write list (once; the list holds a
 * reference): hr_conn_flush_pending writes it when this loop iteration's
 * callbacks are done, as Redis' handleClientsWithPendingWrites does -
 * no writeable request, so no epoll_ctl, and one write however many
 * frames were queued meanwhile. */
static void mark_pending(hr_conn *c)
{
    hr_worker *w = c->w;
    if (c->pending)
        return;
    c->pending = 1;
    c->refs++;
    if (w->npending == w->cappending) {
        w->cappending = w->cappending ? w->cappending * 2 : 256;
        w->pending = hr_realloc(w->pending, w->cappending * sizeof(*w->pending));
    }
    w->pending[w->npending++] = c;
}

void hr_conn_enqueue(hr_conn *c, chan_msg *m)
{
    if (!c->wsi || c->close_code)
        return;
    size_t flen = c->ops->queued(c, m);
    if (c->qbytes + flen > conn_cfg(c)->out_queue_bytes) {
        slow_consumer(c);
        return;
    }
    if (c->qlen == c->qcap)
        queue_grow(c);
    c->q[(c->qhead + c->qlen) % c->qcap] = chan_msg_ref(m);
    c->qlen++;
    c->qbytes += flen;
    if (!c->choked)
        mark_pending(c);
}

void hr_conn_deliver(void *owner, chan_msg *m)
{
    hr_conn_enqueue(owner, m);
}

void hr_conn_send_text(hr_conn *c, const char *json, size_t len)
{
    chan_msg *m = chan_msg_new(json, len);
    hr_conn_enqueue(c, m);
    chan_msg_unref(m);
}

void hr_conn_send_json(hr_conn *c, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    hr_conn_send_text(c, s, strlen(s));
    free(s);
}

/* The namespace index of a publication, computed once per message (any
 * thread may store it first; they store the same value). */
static int msg_namespace(const hr_config *cfg, chan_msg *m)
{
    int ns = atomic_load_explicit(&m->tag, memory_order_relaxed);
    if (ns < 0) {
        ns = hr_ns_index(cfg, hr_config_namespace(cfg, m->channel));
        atomic_store_explicit(&m->tag, ns, memory_order_relaxed);
    }
    return ns;
}

/* Publications only (not replies): latency and deliveries per namespace. */
void hr_conn_sent(hr_conn *c, chan_msg *m, uint64_t now_us)
{
    hr_worker *w = c->w;
    if (!m->channel)
        return;
    hr_hist_observe(&w->stats.delivery, now_us > m->born_us ? now_us - m->born_us : 0);
    HR_ADD1(&w->stats.ns_deliveries[msg_namespace(w->node->cfg, m)], 1);
}

/*---- A worker's connections ------------------------------------------------*/

void hr_conn_flush_pending(hr_worker *w)
{
    size_t n = w->npending;
    hr_conn **list = w->pending;
    uint64_t now_us = n ? hr_now_us() : 0; /* one clock read per pass, not per socket */
    /* writing never marks a connection pending, so the list is stable */
    for (size_t i = 0; i < n; i++) {
        hr_conn *c = list[i];
        c->pending = 0;
        if (c->wsi && !c->close_code && !c->choked && c->qlen && c->ops->write(c, now_us) < 0)
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        hr_conn_unref(c);
    }
    w->npending = 0;
}

typedef struct each_args {
    void (*fn)(hr_conn *c, void *ud);
    void *ud;
} each_args;

static int each_one(struct lws_dll2 *d, void *user)
{
    each_args *a = user;
    a->fn(lws_container_of(d, hr_conn, in_user), a->ud);
    return 0;
}

void hr_conn_each_of_user(hr_worker *w, const char *sub, void (*fn)(hr_conn *c, void *ud), void *ud)
{
    user_conns *u = hr_map_get(user_index(w), sub, strlen(sub));
    each_args a = {fn, ud};
    if (u)
        lws_dll2_foreach_safe(&u->conns, &a, each_one);
}

typedef struct close_args {
    int code;
    const char *reason;
    size_t n;
} close_args;

static void close_for_disconnect(hr_conn *c, void *ud)
{
    close_args *a = ud;
    hr_conn_close(c, a->code, a->reason, 0);
    a->n++;
}

size_t hr_conn_disconnect_user(hr_worker *w, const char *sub, int code, const char *reason)
{
    close_args a = {code, reason, 0};
    hr_conn_each_of_user(w, sub, close_for_disconnect, &a);
    return a.n;
}

static int close_for_shutdown(struct lws_dll2 *d, void *user)
{
    (void)user;
    hr_conn_close(lws_container_of(d, hr_conn, in_loop), 1001, "going away", 1);
    return 0;
}

void hr_conn_shutdown_all(hr_worker *w)
{
    lws_dll2_foreach_safe(&w->conns, NULL, close_for_shutdown);
}

/*---- Admission (every transport) -------------------------------------------*/

int hr_conn_origin_allowed(const hr_config *cfg, struct lws *wsi)
{
    char origin[512];
    if (cfg->nallowed_origins == 0)
        return 1;
    if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
        return 0;
    for (size_t i = 0; i < cfg->nallowed_origins; i++)
        if (!strcmp(cfg->allowed_origins[i], origin))
            return 1;
    return 0;
}

int hr_conn_admit_address(hr_node *node, struct lws *wsi, hr_slot **slot)
{
    const hr_config *cfg = node->cfg;
    char addr[64];
    if (cfg->handshake_rate <= 0 && cfg->max_conns_per_address <= 0)
        return 0;
    if (!hr_client_address(&node->addrs, wsi, addr, sizeof(addr)))
        return 0; /* a trusted proxy's own request: no client to count */
    if (cfg->handshake_rate > 0 &&
        auth_throttle_admit(node->handshakes, addr, (int64_t)hr_now_ms()))
        return -EUSERS;
    hr_slot *s;
    if (hr_limit_take(node->conns_per_addr, addr, cfg->max_conns_per_address, &s) < 0)
        return -EUSERS;
    if (s)
        *slot = s;
    return 0;
}

/*---- Writing bytes (every transport) ---------------------------------------*/

/* The socket is choked until lws has flushed what it holds of ours. */
static void choke(hr_conn *c)
{
    c->choked = 1;
    lws_callback_on_writable(c->wsi);
}

/* Plain TCP: one send(2); lws_send_pipe_choked would cost a poll(2) per
 * call and lws_write(LWS_WRITE_RAW) is a send with buffering we only need
 * on a short write: then the remainder goes to lws_write, which keeps it
 * and flushes it before anything else it writes (pongs, close), so frames
 * never interleave, and lws never holds more than one partial write of
 * ours. */
static int send_plain(hr_conn *c, const unsigned char *buf, size_t len)
{
    ssize_t sent = send(lws_get_socket_fd(c->wsi), buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        sent = 0;
    if (sent < 0)
        return -1;
    if ((size_t)sent == len)
        return 0;
    int rc = lws_write(c->wsi, (unsigned char *)buf + sent, len - (size_t)sent, LWS_WRITE_RAW);
    choke(c);
    return rc < 0 ? -1 : 0;
}

/* TLS: lws encrypts (SSL_write); what the socket does not take it keeps,
 * as above. */
static int send_tls(hr_conn *c, const unsigned char *buf, size_t len)
{
    if (lws_write(c->wsi, (unsigned char *)buf, len, LWS_WRITE_RAW) < 0)
        return -1;
    if (lws_partial_buffered(c->wsi))
        choke(c);
    return 0;
}

int hr_conn_write_bytes(hr_conn *c, const unsigned char *buf, size_t len)
{
    return conn_cfg(c)->tls_cert ? send_tls(c, buf, len) : send_plain(c, buf, len);
}
