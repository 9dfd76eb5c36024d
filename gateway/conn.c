/* conn.c - a client connection, whatever carries it (see conn.h). */
#include "gateway/conn.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void user_index_add(hr_conn *c)
{
    hr_map *idx = c->w->by_user;
    size_t len = strlen(c->id.sub);
    user_conns *u = hr_map_get(idx, c->id.sub, len);
    if (!u) {
        u = hr_calloc(1, sizeof(*u));
        hr_map_put(idx, c->id.sub, len, u);
    }
    lws_dll2_add_tail(&c->in_user, &u->conns);
}

static void user_index_remove(hr_conn *c)
{
    if (!c->authed || !c->id.sub)
        return;
    hr_map *idx = c->w->by_user;
    size_t len = strlen(c->id.sub);
    user_conns *u = hr_map_get(idx, c->id.sub, len);
    lws_dll2_remove(&c->in_user);
    if (u && u->conns.count == 0) {
        hr_map_del(idx, c->id.sub, len);
        free(u);
    }
}

/* The connection's one deadline: the connect deadline before
 * authentication, the token's expiry after it. The delay is computed in
 * seconds and capped, so no `exp` a signed token carries can overflow it
 * (an overflow once fired the timer in a tight loop). */
void hr_conn_rearm(hr_conn *c)
{
    int64_t s;
    if (!c->authed) {
        s = conn_cfg(c)->connect_timeout;
    } else if (c->id.exp > 0) {
        int64_t now = (int64_t)time(NULL);
        s = c->id.exp > now ? c->id.exp - now : 0;
    } else {
        s = HR_TIMER_MAX_S; /* no expiry: a capped wait that re-arms */
    }
    if (s > HR_TIMER_MAX_S)
        s = HR_TIMER_MAX_S;
    c->ops->arm(c, s);
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

void hr_conn_authenticate(hr_conn *c, auth_identity *id)
{
    c->id = *id;
    memset(id, 0, sizeof(*id));
    c->authed = 1;
    hr_conn_number(c);
    if (c->id.sub)
        user_index_add(c);
    c->authed_ms = hr_now_ms();
    hr_conn_rearm(c);
    lifecycle(c, 1);
}

void hr_conn_number(hr_conn *c)
{
    if (!c->client_n)
        c->client_n = atomic_fetch_add(&c->w->node->next_client, 1) + 1;
}

int hr_conn_user_slot(hr_node *node, const char *sub, hr_slot **slot)
{
    return hr_limit_take(node->conns_per_user, sub, node->cfg->max_conns_per_user, slot);
}

void hr_conn_closed(hr_conn *c)
{
    hr_worker *w = c->w;
    const char *key;
    void *val;
    if (c->subs) {
        for (size_t it = 0; hr_map_next(c->subs, &it, &key, NULL, &val);) {
            chan_unsubscribe(w->node->layer, w->index, val);
            hr_conn_sub_event(c, 0, key);
        }
        hr_map_free(c->subs);
        c->subs = NULL;
    }
    hr_conn_drop_queue(c);
    free(c->q);
    c->q = NULL;
    c->qcap = 0;
    if (c->authed)
        lifecycle(c, 0);
    user_index_remove(c);
    hr_slot_release(c->addr_slot);
    hr_slot_release(c->user_slot);
    auth_identity_clear(&c->id);
    lws_dll2_remove(&c->in_loop);
    HR_INC(&w->stats, connections, -1);
    c->wsi = NULL;
    hr_conn_unref(c);
    hr_loop_maybe_done(&w->loop);
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
    user_conns *u = hr_map_get(w->by_user, sub, strlen(sub));
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
