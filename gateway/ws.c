/*
 * ws.c - the WebSocket side of the gateway: authentication at the handshake
 * or through `connect`, the command loop of SPEC §2, and each connection's
 * bounded outbound queue.
 *
 * Queue discipline. Everything a connection is sent - replies, pushes,
 * publications - goes through conn_enqueue() as a reference to a pre-framed
 * chan_msg, so a publication fanned out to N sockets is N pointer pushes,
 * not N copies. Bytes leave only in SERVER_WRITEABLE, where everything
 * queued leaves in one write (coalesced in the loop's scratch buffer). When
 * the queued bytes would exceed the configured bound, the queue is dropped
 * at once (memory stays bounded however slow the peer) and the connection
 * closes 4008.
 *
 * A connection that negotiated permessage-deflate is sent the message's
 * compressed frame instead, made once per message for every such connection
 * (ws_deflate.c); its compressed client messages reach hr_ws_receive
 * already inflated.
 *
 * Closing is always deferred: code that decides a connection must close
 * records the code and asks for a writeable callback, which sends the close
 * frame. Nothing frees a connection in the middle of fan-out.
 *
 * Memory. An idle connection costs lws' own state, this struct and its
 * identity; the subscription map and the queue ring are allocated on first
 * use, and the client id is formatted when needed rather than stored.
 */
#include "gateway/ws.h"
#include "gateway/http.h"
#include "common/log.h"
#include "common/ws_frame.h"
#include "gateway/proto.h"
#include "gateway/ws_deflate.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct hr_conn {
    hr_worker *w;
    struct lws *wsi;    /* NULL once closed; the struct lives on while refs > 0 */
    lws_dll2_t in_loop; /* w->conns */
    lws_dll2_t in_user; /* the user's hr_user_conns on this loop */
    int refs;           /* 1 for the socket + 1 per pending asynchronous operation */

    unsigned authed : 1;
    unsigned close_flush : 1; /* send what is queued before the close frame */
    unsigned pending : 1;     /* on the loop's pending-write list */
    unsigned choked : 1;      /* lws holds a partial write: wait for writeable */
    unsigned close_sent : 1;  /* our close frame is on the wire */
    unsigned peer_closed : 1; /* the peer sent a valid close frame (lws echoes it) */
    hr_pmd_conn pmd;          /* permessage-deflate (ws_deflate.c): 3 bytes */
    int close_code;           /* != 0: closing with this code */
    const char *close_reason; /* static storage */
    uint64_t client_n;        /* client id "<node>.<client_n>" */
    auth_identity id;
    hr_map *subs; /* channel name -> chan_sub*; NULL until the first subscribe */

    /* outbound queue: a ring of message references, allocated on first use */
    chan_msg **q;
    uint32_t qhead, qlen, qcap;
    size_t qbytes;

    hr_buf *rx;         /* reassembly of a message that arrived in pieces, else NULL */
    hr_slot *addr_slot; /* this connection's count in the per-address table */
    hr_slot *user_slot; /* ... and in the per-user table */
    float tokens;       /* inbound rate limiter (token bucket) */
    uint32_t tokens_ms; /* when tokens was computed (ms, wraps after 49 days) */
};

/* The connections of one user on one loop: how a disconnect finds them
 * without walking every connection. */
typedef struct hr_user_conns {
    lws_dll2_owner_t conns;
} hr_user_conns;

/* Ring slots kept once a burst has drained; bigger rings are freed. */
#define HR_RING_KEEP 64
/* Seconds a closing connection may wait for its peer to accept the close
 * frame before lws drops the socket. A slow consumer must first read what
 * the kernel already holds for it (its queue is dropped, so waiting costs
 * only those buffers); too short, and it sees 1006 instead of 4008. */
#define HR_CLOSE_BACKSTOP_S 20
/* The expiry timer never sleeps longer than this; it re-arms on waking.
 * This keeps the arithmetic in range for any `exp` a token may carry. */
#define HR_TIMER_MAX_S 3600

static void conn_unref(hr_conn *c)
{
    if (--c->refs == 0)
        free(c);
}

static const hr_config *conn_cfg(const hr_conn *c)
{
    return c->w->node->cfg;
}

/*---- Outbound queue --------------------------------------------------------*/

/* The frame of m this connection is sent: the message's compressed frame
 * when the connection negotiated permessage-deflate and there is one (made
 * at enqueue time, so the choice is the same when the frame leaves). */
static const unsigned char *conn_frame(const hr_conn *c, const chan_msg *m, size_t *flen)
{
    const chan_zframe *z = c->pmd.bits ? hr_pmd_frame(m, c->pmd.bits) : NULL;
    if (z) {
        *flen = z->len;
        return z->b;
    }
    return chan_msg_frame(m, flen);
}

static chan_msg *queue_pop(hr_conn *c)
{
    chan_msg *m = c->q[c->qhead];
    size_t flen;
    conn_frame(c, m, &flen);
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    c->qbytes -= flen;
    return m;
}

static void queue_drop(hr_conn *c)
{
    while (c->qlen)
        chan_msg_unref(queue_pop(c));
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

/* Records that the connection must close with code and asks for the
 * writeable callback that sends the close frame. The first code wins.
 * reason must be static storage. */
static void conn_close(hr_conn *c, int code, const char *reason, int flush)
{
    if (!c->wsi || c->close_code)
        return;
    c->close_code = code;
    c->close_flush = flush;
    c->close_reason = reason;
    if (!flush)
        queue_drop(c);
    lws_callback_on_writable(c->wsi);
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
                    flush ? HR_CLOSE_BACKSTOP_S * 2 : HR_CLOSE_BACKSTOP_S);
}

static void slow_consumer(hr_conn *c)
{
    char client[160];
    HR_INC(&c->w->stats, slow_consumer_closes, 1);
    hr_node_client_id(c->w->node, c->client_n, client, sizeof(client));
    hr_warn("slow_consumer", "client %s: outbound queue over %zu bytes, closing 4008",
            c->authed ? client : "(unauthenticated)", conn_cfg(c)->out_queue_bytes);
    conn_close(c, 4008, "slow consumer", 0);
}

/* Puts c on its loop's pending-write list (once; the list holds a
 * reference): hr_ws_flush_pending writes it when this loop iteration's
 * callbacks are done, as Redis' handleClientsWithPendingWrites does -
 * no writeable request, so no epoll_ctl, and one write however many
 * frames were queued meanwhile. */
static void conn_mark_pending(hr_conn *c)
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

/* Adds a reference to m to the connection's queue. Never copies the bytes. */
static void conn_enqueue(hr_conn *c, chan_msg *m)
{
    size_t flen;
    if (!c->wsi || c->close_code)
        return;
    if (c->pmd.bits && hr_pmd_prepare(c->w->pmd, m, conn_cfg(c)->ws_compression_min))
        HR_INC(&c->w->stats, ws_deflates, 1);
    conn_frame(c, m, &flen);
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
        conn_mark_pending(c);
}

void hr_ws_deliver(void *owner, chan_msg *m)
{
    conn_enqueue(owner, m);
}

/* Queues JSON text we own (freed here). */
static void conn_send_text(hr_conn *c, char *json, size_t len)
{
    chan_msg *m = chan_msg_new(json, len);
    free(json);
    conn_enqueue(c, m);
    chan_msg_unref(m);
}

static void reply_result(hr_conn *c, int64_t id, json_t *result)
{
    size_t len = 0;
    char *s = hr_proto_result(id, result, &len);
    conn_send_text(c, s, len);
}

static void reply_error(hr_conn *c, int64_t id, const char *code, const char *msg)
{
    size_t len = 0;
    char *s = hr_proto_error_reply(id, code, msg, &len);
    conn_send_text(c, s, len);
}

/*---- Authentication --------------------------------------------------------*/

/* Arms the single per-connection timer: the connect deadline before
 * authentication, the token's expiry after it. The delay is computed in
 * seconds and capped before it becomes microseconds, so no `exp` a signed
 * token carries can overflow it (an overflow once fired the timer in a
 * tight loop). */
static void conn_arm_timer(hr_conn *c)
{
    int64_t s;
    if (!c->authed) {
        s = conn_cfg(c)->connect_timeout;
    } else if (c->id.exp > 0) {
        int64_t now = (int64_t)time(NULL);
        s = c->id.exp > now ? c->id.exp - now : 0;
    } else {
        /* no expiry: a capped wait that re-arms, never
         * LWS_SET_TIMER_USEC_CANCEL, which lws 4.1.6 does not handle in
         * lws_set_timer_usecs: it schedules the timer in the past, and
         * re-armed from the timer's own callback that spun the loop at
         * 100% CPU, deaf to its sockets (anonymous connections) */
        s = HR_TIMER_MAX_S;
    }
    if (s > HR_TIMER_MAX_S)
        s = HR_TIMER_MAX_S;
    lws_set_timer_usecs(c->wsi, s > 0 ? (lws_usec_t)s * LWS_US_PER_SEC : 1);
}

static void user_index_add(hr_conn *c)
{
    hr_map *idx = c->w->by_user;
    size_t len = strlen(c->id.sub);
    hr_user_conns *u = hr_map_get(idx, c->id.sub, len);
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
    hr_user_conns *u = hr_map_get(idx, c->id.sub, len);
    lws_dll2_remove(&c->in_user);
    if (u && u->conns.count == 0) {
        hr_map_del(idx, c->id.sub, len);
        free(u);
    }
}

/* Takes ownership of *id's contents (id is left cleared) and sends the
 * `connected` push, which must be the first thing the client receives. */
static void conn_authenticate(hr_conn *c, auth_identity *id)
{
    char client[160];
    size_t len = 0;
    c->id = *id;
    memset(id, 0, sizeof(*id));
    c->authed = 1;
    c->client_n = atomic_fetch_add(&c->w->node->next_client, 1) + 1;
    if (c->id.sub)
        user_index_add(c);
    hr_node_client_id(c->w->node, c->client_n, client, sizeof(client));
    char *s = hr_proto_connected(client, c->id.sub, c->id.exp, &len);
    conn_send_text(c, s, len);
    conn_arm_timer(c);
    hr_debug("connected", "client %s user %s", client, c->id.sub ? c->id.sub : "");
}

/* Counts a connection of user sub; -EUSERS when the user holds the maximum. */
static int user_slot_take(hr_node *node, const char *sub, hr_slot **slot)
{
    return hr_limit_take(node->conns_per_user, sub, node->cfg->max_conns_per_user, slot);
}

static json_t *connect_result(hr_conn *c)
{
    char client[160];
    hr_node_client_id(c->w->node, c->client_n, client, sizeof(client));
    return json_pack("{s:s, s:s, s:o}", "client", client, "user", c->id.sub ? c->id.sub : "",
                     "expires_at", c->id.exp > 0 ? json_integer(c->id.exp) : json_null());
}

/*---- Commands --------------------------------------------------------------*/

static void op_connect(hr_conn *c, const hr_cmd *cmd)
{
    auth_identity id = {0};
    char err[160] = "";

    if (c->authed) {
        reply_error(c, cmd->id, HR_ERR_BAD_REQUEST, "already connected");
        return;
    }
    if (cmd->token) {
        if (hr_creds_verify_jwt(c->w->node->creds, cmd->token, &id, &c->w->stats, err,
                                sizeof(err)) < 0) {
            reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, err[0] ? err : "invalid token");
            conn_close(c, 4001, "unauthorized", 1);
            return;
        }
    } else if (conn_cfg(c)->allow_anonymous) {
        id.anonymous = 1;
    } else {
        reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, "a token is required");
        conn_close(c, 4001, "unauthorized", 1);
        return;
    }
    if (id.sub && user_slot_take(c->w->node, id.sub, &c->user_slot) < 0) {
        auth_identity_clear(&id);
        reply_error(c, cmd->id, HR_ERR_RATE_LIMITED, "too many connections for this user");
        conn_close(c, 4029, "too many connections", 1);
        return;
    }
    conn_authenticate(c, &id);
    json_t *r = connect_result(c);
    reply_result(c, cmd->id, r);
    json_decref(r);
}

/* A client's subscribe command waiting for the layer; server-side joins
 * (members add) pass SERVER_JOIN instead. */
typedef struct sub_req {
    int64_t id;
} sub_req;
static sub_req server_join;
#define SERVER_JOIN (&server_join)

static chan_client conn_client(hr_conn *c, char *client, size_t len, char **info)
{
    hr_node_client_id(c->w->node, c->client_n, client, len);
    *info = c->id.info ? json_dumps(c->id.info, JSON_COMPACT) : NULL;
    return (chan_client){client, c->id.sub ? c->id.sub : "", *info};
}

/* Starts a subscription (the caller checked permissions); the outcome
 * arrives in hr_ws_subscribed. */
static void conn_subscribe(hr_conn *c, const char *channel, const chan_pos *since, void *req)
{
    char client[160], *info;
    chan_client who = conn_client(c, client, sizeof(client), &info);
    chan_opts o = hr_chan_opts(hr_config_namespace(conn_cfg(c), channel));
    if (!c->subs)
        c->subs = hr_map_new(NULL);
    chan_sub *s = chan_subscribe(c->w->node->layer, c->w->index, channel, &o, &who, since, c, req);
    free(info);
    if (s)
        hr_map_put(c->subs, channel, strlen(channel), s);
}

/* [{"offset","data","from"?}]: what a history read returns. Stored data
 * may hold \u0000 (accepted everywhere, so delivered everywhere). */
static json_t *pubs_json(const chan_pub *pubs, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_loads(pubs[i].data, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        json_t *e = json_pack("{s:I, s:o}", "offset", (json_int_t)pubs[i].offset, "data",
                              d ? d : json_null());
        json_t *f = pubs[i].from ? json_loads(pubs[i].from, 0, NULL) : NULL;
        if (f)
            json_object_set_new(e, "from", f);
        json_array_append_new(a, e);
    }
    return a;
}

/* {"channel", and where history is kept "offset","epoch","recovered"
 * (and, for a command, "publications")} */
static json_t *subscribed_json(const char *channel, const chan_sub_result *r, int command)
{
    json_t *o = json_pack("{s:s}", "channel", channel);
    if (r->history) {
        json_object_set_new(o, "offset", json_integer((json_int_t)r->pos.offset));
        json_object_set_new(o, "epoch", json_string(r->pos.epoch));
        json_object_set_new(o, "recovered", json_boolean(r->recovered));
        if (command)
            json_object_set_new(o, "publications", pubs_json(r->pubs, r->npubs));
    }
    return o;
}

static void push_json(hr_conn *c, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    conn_send_text(c, s, strlen(s));
}

/* chan_host.sub.subscribed: the reply to a subscribe command, the
 * `subscribed` push of a server-side join, or after an outage the push
 * saying whether the stream was recovered. */
void hr_ws_subscribed(void *owner, void *req, const char *channel, const chan_sub_result *r)
{
    hr_conn *c = owner;
    sub_req *sr = req != SERVER_JOIN ? req : NULL;
    if (r->status == -ECANCELED) {
        free(sr);
        return;
    }
    if (r->status < 0 && c->subs)
        hr_map_del(c->subs, channel, strlen(channel)); /* the layer dropped it */
    if (sr) {
        if (r->status < 0) {
            reply_error(c, sr->id, HR_ERR_UNAVAILABLE, "the channel layer is unavailable");
        } else {
            json_t *res = subscribed_json(channel, r, 1);
            reply_result(c, sr->id, res);
            json_decref(res);
        }
        free(sr);
    } else if (r->status == 0) {
        json_t *o = subscribed_json(channel, r, 0);
        json_object_set_new(o, "push", json_string("subscribed"));
        push_json(c, o);
    }
}

static void op_subscribe(hr_conn *c, const hr_cmd *cmd)
{
    const hr_config *cfg = conn_cfg(c);
    size_t clen = strlen(cmd->channel);

    if (c->subs && hr_map_get(c->subs, cmd->channel, clen)) {
        json_t *r = json_pack("{s:s}", "channel", cmd->channel);
        reply_result(c, cmd->id, r); /* subscribing twice is not an error */
        json_decref(r);
        return;
    }
    if (!auth_can_subscribe(hr_config_namespace(cfg, cmd->channel), &c->id, cmd->channel)) {
        reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "not allowed to subscribe to this channel");
        return;
    }
    if (c->subs && hr_map_count(c->subs) >= (size_t)cfg->max_subscriptions) {
        reply_error(c, cmd->id, HR_ERR_TOO_LARGE, "too many subscriptions on this connection");
        return;
    }
    chan_pos since = {0};
    if (cmd->has_since) {
        since.offset = cmd->since_offset;
        snprintf(since.epoch, sizeof(since.epoch), "%s", cmd->since_epoch ? cmd->since_epoch : "");
    }
    sub_req *req = hr_malloc(sizeof(*req));
    req->id = cmd->id;
    conn_subscribe(c, cmd->channel, cmd->has_since ? &since : NULL, req);
}

static void conn_unsubscribe(hr_conn *c, const char *channel)
{
    chan_sub *s = c->subs ? hr_map_del(c->subs, channel, strlen(channel)) : NULL;
    if (s)
        chan_unsubscribe(c->w->node->layer, c->w->index, s);
}

static void op_unsubscribe(hr_conn *c, const hr_cmd *cmd)
{
    conn_unsubscribe(c, cmd->channel);
    reply_result(c, cmd->id, NULL);
}

/* A command answered later by the layer holds a reference to the
 * connection, which may close meanwhile. */
typedef struct cmd_ctx {
    hr_conn *c;
    int64_t id;
} cmd_ctx;

static cmd_ctx *cmd_ctx_new(hr_conn *c, int64_t id)
{
    cmd_ctx *p = hr_malloc(sizeof(*p));
    *p = (cmd_ctx){c, id};
    c->refs++;
    return p;
}

/* Returns the live connection of a finished command, or NULL; frees p. */
static hr_conn *cmd_ctx_end(cmd_ctx *p, int64_t *id)
{
    hr_conn *c = p->c;
    *id = p->id;
    free(p);
    if (c->wsi)
        return c;
    conn_unref(c);
    return NULL;
}

static void publish_done(void *ud, int status, uint64_t offset, int local_only)
{
    int64_t id;
    hr_conn *c = cmd_ctx_end(ud, &id);
    if (!c)
        return;
    if (status < 0) {
        reply_error(c, id, HR_ERR_UNAVAILABLE, "the channel layer is unavailable");
    } else {
        json_t *r = json_object();
        if (offset)
            json_object_set_new(r, "offset", json_integer((json_int_t)offset));
        if (local_only)
            json_object_set_new(r, "local_only", json_true());
        reply_result(c, id, r);
        json_decref(r);
    }
    conn_unref(c);
}

/* A publish in a namespace with django_channel: once the layer has
 * accepted the publication (not when it was only delivered locally during
 * a Redis outage), the Channels channel gets it too. Who published is
 * captured now: the connection may be gone by then. */
typedef struct django_pub {
    cmd_ctx *ctx;
    chan_layer *layer;
    unsigned thread;
    const char *target; /* the namespace's django_channel (the config outlives us) */
    char *channel, *user, *client, *data;
    size_t len;
} django_pub;

static void publish_done_django(void *ud, int status, uint64_t offset, int local_only)
{
    django_pub *p = ud;
    if (status == 0 && !local_only)
        chan_django_forward(p->layer, p->thread, p->target, p->channel, p->user, p->client, p->data,
                            p->len);
    publish_done(p->ctx, status, offset, local_only);
    free(p->channel);
    free(p->user);
    free(p->client);
    free(p->data);
    free(p);
}

static void op_publish(hr_conn *c, const hr_cmd *cmd)
{
    int subscribed = c->subs && hr_map_get(c->subs, cmd->channel, strlen(cmd->channel));
    const auth_namespace *ns = hr_config_namespace(conn_cfg(c), cmd->channel);

    if (!auth_can_publish(ns, &c->id, cmd->channel, subscribed)) {
        reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "not allowed to publish to this channel");
        return;
    }
    char *data = json_dumps(cmd->data, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t len = strlen(data);
    /* the server's word on who published, never the data's (SPEC §2) */
    char client[160], *info;
    conn_client(c, client, sizeof(client), &info);
    json_t *fo = json_pack("{s:s, s:s, s:o}", "user", c->id.sub ? c->id.sub : "", "client", client,
                           "info", c->id.info ? json_incref(c->id.info) : json_object());
    char *from = json_dumps(fo, JSON_COMPACT);
    json_decref(fo);
    free(info);
    chan_opts o = hr_chan_opts(ns);
    HR_ADD1(&c->w->stats.ns_publications[hr_ns_index(conn_cfg(c), ns)], 1);
    chan_layer *layer = c->w->node->layer;
    if (ns->django_channel) {
        char client[160];
        hr_node_client_id(c->w->node, c->client_n, client, sizeof(client));
        django_pub *p = hr_malloc(sizeof(*p));
        *p = (django_pub){cmd_ctx_new(c, cmd->id),
                          layer,
                          c->w->index,
                          ns->django_channel,
                          hr_strdup(cmd->channel),
                          hr_strdup(c->id.sub ? c->id.sub : ""),
                          hr_strdup(client),
                          data,
                          len};
        chan_publish(layer, c->w->index, cmd->channel, &o, data, len, from, publish_done_django, p);
        free(from);
        return; /* p owns data */
    }
    chan_publish(layer, c->w->index, cmd->channel, &o, data, len, from, publish_done,
                 cmd_ctx_new(c, cmd->id));
    free(data);
    free(from);
}

/* Presence and history need the right to subscribe to the channel. */
static int may_read(hr_conn *c, const hr_cmd *cmd, chan_opts *o)
{
    const auth_namespace *ns = hr_config_namespace(conn_cfg(c), cmd->channel);
    if (!auth_can_subscribe(ns, &c->id, cmd->channel)) {
        reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "not allowed to read this channel");
        return 0;
    }
    *o = hr_chan_opts(ns);
    return 1;
}

static void read_failed(hr_conn *c, int64_t id, int status, const char *what)
{
    char msg[128];
    if (status == -ENOENT) {
        snprintf(msg, sizeof(msg), "%s is not enabled for this channel's namespace", what);
        reply_error(c, id, HR_ERR_NOT_FOUND, msg);
    } else {
        reply_error(c, id, HR_ERR_UNAVAILABLE, "the channel layer is unavailable");
    }
}

static void presence_done(void *ud, const chan_presence *p)
{
    int64_t id;
    hr_conn *c = cmd_ctx_end(ud, &id);
    if (!c)
        return;
    if (p->status < 0) {
        read_failed(c, id, p->status, "presence");
    } else {
        json_t *clients = json_loadb(p->clients, p->len, 0, NULL);
        json_t *r = json_pack("{s:o}", "clients", clients ? clients : json_array());
        reply_result(c, id, r);
        json_decref(r);
    }
    conn_unref(c);
}

static void op_presence(hr_conn *c, const hr_cmd *cmd)
{
    chan_opts o;
    if (may_read(c, cmd, &o))
        chan_presence_read(c->w->node->layer, c->w->index, cmd->channel, &o, presence_done,
                           cmd_ctx_new(c, cmd->id));
}

/* {"publications":[{"offset","data"}],"offset","epoch"}: also the REST
 * answer (http.c). */
json_t *hr_ws_history_json(const chan_history *h)
{
    return json_pack("{s:o, s:I, s:s}", "publications", pubs_json(h->pubs, h->npubs), "offset",
                     (json_int_t)h->top.offset, "epoch", h->top.epoch);
}

static void history_done(void *ud, const chan_history *h)
{
    int64_t id;
    hr_conn *c = cmd_ctx_end(ud, &id);
    if (!c)
        return;
    if (h->status < 0) {
        read_failed(c, id, h->status, "history");
    } else {
        json_t *r = hr_ws_history_json(h);
        reply_result(c, id, r);
        json_decref(r);
    }
    conn_unref(c);
}

static void op_history(hr_conn *c, const hr_cmd *cmd)
{
    chan_opts o;
    chan_pos since = {0};
    if (!may_read(c, cmd, &o))
        return;
    if (cmd->has_since) {
        since.offset = cmd->since_offset;
        snprintf(since.epoch, sizeof(since.epoch), "%s", cmd->since_epoch ? cmd->since_epoch : "");
    }
    chan_history_read(c->w->node->layer, c->w->index, cmd->channel, &o,
                      cmd->has_since ? &since : NULL, cmd->limit, history_done,
                      cmd_ctx_new(c, cmd->id));
}

static void op_refresh(hr_conn *c, const hr_cmd *cmd)
{
    auth_identity id = {0};
    char err[160] = "";

    if (c->id.anonymous) {
        reply_error(c, cmd->id, HR_ERR_BAD_REQUEST, "anonymous connections have no token");
        return;
    }
    if (hr_creds_verify_jwt(c->w->node->creds, cmd->token, &id, &c->w->stats, err, sizeof(err)) <
        0) {
        reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, err[0] ? err : "invalid token");
        return;
    }
    if (!c->id.sub || strcmp(id.sub, c->id.sub) != 0) {
        auth_identity_clear(&id);
        reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "the token is for another user");
        return;
    }
    /* same sub, so the user index entry (keyed by sub) stays valid */
    auth_identity_clear(&c->id);
    c->id = id;
    conn_arm_timer(c);
    json_t *r = json_pack("{s:I}", "expires_at", (json_int_t)c->id.exp);
    reply_result(c, cmd->id, r);
    json_decref(r);
}

static void dispatch(hr_conn *c, const hr_cmd *cmd)
{
    if (!c->authed && cmd->op != HR_OP_CONNECT) {
        reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, "send connect first");
        return;
    }
    switch (cmd->op) {
    case HR_OP_CONNECT:
        op_connect(c, cmd);
        break;
    case HR_OP_SUBSCRIBE:
        op_subscribe(c, cmd);
        break;
    case HR_OP_UNSUBSCRIBE:
        op_unsubscribe(c, cmd);
        break;
    case HR_OP_PUBLISH:
        op_publish(c, cmd);
        break;
    case HR_OP_REFRESH:
        op_refresh(c, cmd);
        break;
    case HR_OP_PRESENCE:
        op_presence(c, cmd);
        break;
    case HR_OP_HISTORY:
        op_history(c, cmd);
        break;
    case HR_OP_PING:
        reply_result(c, cmd->id, NULL);
        break;
    }
}

static void handle_message(hr_conn *c, const char *buf, size_t len)
{
    hr_cmd cmd;
    hr_proto_error perr;
    if (hr_proto_parse(buf, len, conn_cfg(c)->max_channel_len, &cmd, &perr) < 0)
        reply_error(c, cmd.id, perr.code, perr.message);
    else
        dispatch(c, &cmd);
    hr_cmd_clear(&cmd);
}

/*---- The upgrade -----------------------------------------------------------*/

int hr_ws_close_now(struct lws *wsi, int code, const char *reason)
{
    unsigned char buf[LWS_PRE + HR_WS_CLOSE_MAX], *p = buf + LWS_PRE;
    hr_pss *pss = lws_wsi_user(wsi);
    lws_write(wsi, p, hr_ws_close_frame(p, code, reason), LWS_WRITE_RAW);
    if (pss && pss->conn)
        pss->conn->close_sent = 1;
    return -1;
}

static int origin_allowed(const hr_config *cfg, struct lws *wsi)
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

/* Handshakes per address (a token bucket: handshake_rate at once, then
 * handshake_rate a second), then connections per address, for
 * requests whose client address is known (see hr_client_address). The
 * place taken rides on the wsi until ESTABLISHED (freed with the wsi if
 * the upgrade never completes). Returns -1 to refuse. */
static int admit_address(hr_node *node, struct lws *wsi)
{
    const hr_config *cfg = node->cfg;
    char addr[64];
    if (cfg->handshake_rate <= 0 && cfg->max_conns_per_address <= 0)
        return 0;
    if (!hr_client_address(&node->addrs, wsi, addr, sizeof(addr)))
        return 0; /* a trusted proxy's own request: no client to count */
    if (cfg->handshake_rate > 0 &&
        auth_throttle_admit(node->handshakes, addr, (int64_t)hr_now_ms()))
        return -1;
    hr_slot *s;
    if (hr_limit_take(node->conns_per_addr, addr, cfg->max_conns_per_address, &s) < 0)
        return -1;
    if (s)
        hr_wsi_state_get(wsi)->addr_slot = s;
    return 0;
}

/* Does the comma/space separated list hold token (case-insensitively)? */
static int list_has_token(const char *list, const char *token)
{
    size_t tlen = strlen(token);
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n == tlen && !strncasecmp(p, token, n))
            return 1;
        p += n;
    }
    return 0;
}

/* Sec-WebSocket-Protocol (RFC 6455 §4.2.2 /subprotocol/). lws 4.1.6 binds
 * a client that offers subprotocols to the first one whose name matches one
 * of ours and echoes it; when none matches, when the header does not fit
 * its 128-byte buffer or a name before the match its 64-byte one, it hangs
 * up without any HTTP answer. RFC 6455 would let a server accept without
 * selecting one, but lws cannot be made to (it only binds the default
 * protocol when the header is absent), and a browser that offered
 * subprotocols fails a handshake that selects none anyway. So an offer
 * without "herald" is refused with a 400 that says what Herald speaks.
 * Returns 1 when lws will accept the offer (or there is none). */
static int subprotocol_ok(struct lws *wsi)
{
    char list[128];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) <= 0)
        return 1;
    /* the sizes lws copies into (server-ws.c, lws_process_ws_upgrade) */
    if (lws_hdr_copy(wsi, list, sizeof(list) - 1, WSI_TOKEN_PROTOCOL) <= 0)
        return 0;
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n >= 64)
            return 0;
        if (n == 6 && !strncmp(p, "herald", 6))
            return 1;
        p += n;
    }
    return 0;
}

/* Is the Sec-WebSocket-Key 16 bytes in base64 (RFC 6455 §4.2.1 item 5)? */
static int key_ok(struct lws *wsi)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char key[32];
    return lws_hdr_copy(wsi, key, sizeof(key), WSI_TOKEN_KEY) == 24 && strspn(key, b64) == 22 &&
           !strcmp(key + 22, "==");
}

/* RFC 6455 §4.2.1-2 checks lws 4.1.6 gets wrong: it upgrades any
 * Sec-WebSocket-Version as if it were 13, and hangs up without an HTTP
 * answer on a missing Host, key or "Connection: upgrade" and on a
 * subprotocol offer it cannot match. Each gets its status here instead.
 * Returns 0 when the handshake may proceed, else hr_http_refuse's result. */
static int handshake_refused(struct lws *wsi)
{
    char buf[128];
    int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_VERSION);
    if (n <= 0)
        return hr_http_refuse_hdr(wsi, 400, "Sec-WebSocket-Version is required (13)",
                                  "sec-websocket-version:", "13");
    if (strcmp(buf, "13") != 0)
        return hr_http_refuse_hdr(wsi, 426, "unsupported Sec-WebSocket-Version: Herald speaks 13",
                                  "sec-websocket-version:", "13");
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HOST) <= 0)
        return hr_http_refuse(wsi, 400, "the Host header is required");
    if (!key_ok(wsi))
        return hr_http_refuse(wsi, 400, "Sec-WebSocket-Key must be 16 bytes in base64");
    /* lws reads Connection into 127 bytes; longer, and it hangs up */
    if (lws_hdr_copy(wsi, buf, sizeof(buf) - 1, WSI_TOKEN_CONNECTION) <= 0 ||
        !list_has_token(buf, "upgrade"))
        return hr_http_refuse(wsi, 400, "a WebSocket upgrade needs Connection: Upgrade");
    /* lws reads the offers into 255 bytes; longer, and it hangs up */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_EXTENSIONS) >= 255)
        return hr_http_refuse(wsi, 400, "Sec-WebSocket-Extensions is too long (at most 254 bytes)");
    if (!subprotocol_ok(wsi))
        return hr_http_refuse(wsi, 400,
                              "unsupported Sec-WebSocket-Protocol: Herald speaks only \"herald\" "
                              "(or offer no subprotocol)");
    return 0;
}

/* HTTP_CONFIRM_UPGRADE is the only place lws lets us answer an upgrade with
 * our own status (400, 401, 403, 404, 426, 503), and the session struct does
 * not exist yet, so the verified identity rides on the wsi's opaque pointer
 * until ESTABLISHED (or is freed in WSI_DESTROY). One verification per
 * handshake. */
int hr_ws_confirm_upgrade(hr_worker *w, struct lws *wsi, const char *upgrade)
{
    char uri[64], err[160];
    auth_identity id = {0};
    int refused;

    if (!upgrade || strcasecmp(upgrade, "websocket") != 0)
        return hr_http_refuse(wsi, 400, "only WebSocket upgrades are supported");
    hr_wsi_state_get(wsi)->upgrade_us = hr_now_us();
    if (w->loop.shutting_down)
        return hr_http_refuse(wsi, 503, "the server is shutting down");
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0)
        return hr_http_refuse(wsi, 404, "WebSocket endpoint is /ws");
    if ((refused = handshake_refused(wsi)) != 0)
        return refused;
    if (!origin_allowed(w->node->cfg, wsi))
        return hr_http_refuse(wsi, 403, "origin not allowed");
    if (admit_address(w->node, wsi) < 0)
        return hr_http_refuse(wsi, 429, "too many connections or handshakes from this address");

    int st = hr_creds_from_request(w->node->creds, wsi, HR_CREDS_QUERY, &id, &w->stats, err,
                                   sizeof(err));
    if (st == -EPERM)
        return hr_http_refuse(wsi, 401, err);
    if (st == 0 && !id.sub) {
        auth_identity_clear(&id);
        return hr_http_refuse(wsi, 401, "WebSocket clients authenticate with a JWT");
    }
    if (st == 0) {
        if (user_slot_take(w->node, id.sub, &hr_wsi_state_get(wsi)->user_slot) < 0) {
            auth_identity_clear(&id);
            return hr_http_refuse(wsi, 429, "too many connections for this user");
        }
        auth_identity *kept = hr_malloc(sizeof(*kept));
        *kept = id;
        hr_wsi_state_get(wsi)->upgrade_id = kept;
    }
    return 0;
}

int hr_ws_established(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = hr_calloc(1, sizeof(*c));
    c->w = w;
    c->wsi = wsi;
    c->refs = 1;
    c->tokens = (float)w->node->cfg->rate_burst;
    c->tokens_ms = (uint32_t)hr_now_ms();
    lws_dll2_add_tail(&c->in_loop, &w->conns);
    pss->conn = c;
    HR_INC(&w->stats, connections, 1);
    HR_INC(&w->stats, connections_total, 1);

    hr_wsi_state *st = lws_get_opaque_user_data(wsi);
    if (st && st->upgrade_us)
        hr_hist_observe(&w->stats.handshake, hr_now_us() - st->upgrade_us);
    if (st) { /* the connection holds the upgrade's places from now on */
        c->pmd.bits = st->pmd_bits;
        c->addr_slot = st->addr_slot;
        c->user_slot = st->user_slot;
        st->addr_slot = st->user_slot = NULL;
    }
    if (st && st->upgrade_id) {
        conn_authenticate(c, st->upgrade_id);
        free(st->upgrade_id);
        st->upgrade_id = NULL;
    } else {
        conn_arm_timer(c);
    }
    hr_wsi_state_free(wsi); /* a WebSocket keeps none of it */
    if (w->loop.shutting_down)
        conn_close(c, 1001, "going away", 1);
    return 0;
}

/*---- Receiving -------------------------------------------------------------*/

/* Token bucket: rate_per_sec tokens a second, at most rate_burst saved. */
static int rate_ok(hr_conn *c)
{
    const hr_config *cfg = conn_cfg(c);
    uint32_t now = (uint32_t)hr_now_ms();
    /* unsigned difference: right across the 32-bit wrap */
    c->tokens += (float)((double)(uint32_t)(now - c->tokens_ms) * cfg->rate_per_sec / 1000.0);
    if (c->tokens > (float)cfg->rate_burst)
        c->tokens = (float)cfg->rate_burst;
    c->tokens_ms = now;
    if (c->tokens < 1.0f)
        return 0;
    c->tokens -= 1.0f;
    return 1;
}

/* Protocol violations close through the deferred path with flush, so the
 * replies to commands accepted before the violation still reach the client;
 * input that arrives while closing is ignored. */
static void rx_free(hr_conn *c)
{
    if (c->rx) {
        hr_buf_reset(c->rx);
        free(c->rx);
        c->rx = NULL;
    }
}

static int violation(hr_conn *c, int code, const char *reason)
{
    rx_free(c);
    conn_close(c, code, reason, 1);
    return 0;
}

static void complete_message(hr_conn *c, const char *buf, size_t len)
{
    HR_INC(&c->w->stats, messages_in, 1);
    HR_INC(&c->w->stats, bytes_in, len);
    if (!rate_ok(c)) {
        HR_INC(&c->w->stats, rate_limit_closes, 1);
        violation(c, 4029, "rate limit exceeded");
        return;
    }
    handle_message(c, buf, len);
}

/* For the permessage-deflate extension (ws_deflate.c), which inflates
 * compressed messages before lws hands them to hr_ws_receive. */
static hr_pmd_conn *pmd_conn(struct lws *wsi)
{
    hr_pss *pss = lws_wsi_user(wsi);
    hr_conn *c = pss ? pss->conn : NULL;
    return c && c->wsi && !c->close_code ? &c->pmd : NULL;
}

static void pmd_fail(struct lws *wsi, int code, const char *reason)
{
    hr_pss *pss = lws_wsi_user(wsi);
    if (pss && pss->conn && !pss->conn->close_code)
        violation(pss->conn, code, reason);
}

static hr_pmd_loop *pmd_loop(struct lws *wsi)
{
    return hr_worker_of(lws_context_user(lws_get_context(wsi)))->pmd;
}

const hr_pmd_host *hr_ws_pmd_host(const hr_config *cfg)
{
    static hr_pmd_host host = {pmd_conn, pmd_loop, pmd_fail, 0};
    host.max_message = cfg->max_message;
    return &host;
}

int hr_ws_receive(hr_worker *w, struct lws *wsi, hr_pss *pss, const void *in, size_t len)
{
    hr_conn *c = pss->conn;
    size_t max = w->node->cfg->max_message;

    if (!c)
        return -1;
    if (c->close_code)
        return 0; /* closing: input is ignored */
    if (lws_frame_is_binary(wsi))
        return violation(c, 1003, "binary frames are not supported");
    size_t have = c->rx ? c->rx->len : 0;
    if (have + len + lws_remaining_packet_payload(wsi) > max)
        return violation(c, 1009, "message too big");
    int last = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
    if (len == 0 && !last)
        return 0;            /* an empty piece (with compression, lws delivers those) */
    if (last && have == 0) { /* the common case: whole, no copy */
        complete_message(c, in, len);
        return 0;
    }
    if (!c->rx)
        c->rx = hr_calloc(1, sizeof(*c->rx));
    hr_buf_append(c->rx, in, len);
    if (!last)
        return 0;
    complete_message(c, c->rx->data, c->rx->len);
    rx_free(c); /* an idle connection keeps no receive buffer */
    return 0;
}

/*---- Sending ---------------------------------------------------------------*/

/* Coalesces queued frames into the loop's scratch buffer so they leave in
 * one write. A single frame, or one larger than the scratch, is written
 * from the message itself (no copy). Returns the bytes to write and points
 * *out at them; the frames taken are unreferenced by the caller's count. */
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

/* Metrics of one frame leaving: publications only (not replies), and
 * compressed frames. */
static void frame_sent(hr_conn *c, chan_msg *m, uint64_t now_us)
{
    hr_worker *w = c->w;
    if (c->pmd.bits && hr_pmd_frame(m, c->pmd.bits))
        HR_INC(&w->stats, ws_frames_deflated, 1);
    if (!m->channel)
        return;
    hr_hist_observe(&w->stats.delivery, now_us > m->born_us ? now_us - m->born_us : 0);
    HR_ADD1(&w->stats.ns_deliveries[msg_namespace(w->node->cfg, m)], 1);
}

static size_t gather(hr_conn *c, unsigned char *scratch, const unsigned char **out,
                     chan_msg **single, uint32_t *nframes, uint64_t now_us)
{
    size_t flen, used = 0;
    const unsigned char *f = conn_frame(c, c->q[c->qhead], &flen);
    *single = NULL;
    if (c->qlen == 1 || flen > HR_SCRATCH) {
        frame_sent(c, c->q[c->qhead], now_us);
        *single = queue_pop(c);
        *out = f;
        *nframes = 1;
        return flen;
    }
    *nframes = 0;
    while (c->qlen) {
        f = conn_frame(c, c->q[c->qhead], &flen);
        if (used + flen > HR_SCRATCH)
            break;
        memcpy(scratch + used, f, flen);
        used += flen;
        frame_sent(c, c->q[c->qhead], now_us);
        chan_msg_unref(queue_pop(c));
        (*nframes)++;
    }
    *out = scratch;
    return used;
}

/* The socket is choked until lws has flushed what it holds of ours. */
static void conn_choke(hr_conn *c)
{
    c->choked = 1;
    lws_callback_on_writable(c->wsi);
}

/* Plain TCP: one send(2); lws_send_pipe_choked would cost a poll(2) per
 * call and lws_write(LWS_WRITE_RAW) is a send with buffering we only need
 * on a short write: then the remainder goes to lws_write, which keeps it
 * and flushes it before anything else it writes (pongs, close), so frames
 * never interleave, and lws never holds more than one partial write of
 * ours. Returns 0, or -1 when the socket failed. */
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
    conn_choke(c);
    return rc < 0 ? -1 : 0;
}

/* TLS: lws encrypts (SSL_write); what the socket does not take it keeps,
 * as above. */
static int send_tls(hr_conn *c, const unsigned char *buf, size_t len)
{
    if (lws_write(c->wsi, (unsigned char *)buf, len, LWS_WRITE_RAW) < 0)
        return -1;
    if (lws_partial_buffered(c->wsi))
        conn_choke(c);
    return 0;
}

/* Sends what is queued (up to the scratch size) in one write. Returns 0,
 * or -1 when the socket failed. */
static int conn_send(hr_worker *w, hr_conn *c, uint64_t now_us)
{
    const unsigned char *buf;
    chan_msg *single;
    uint32_t n;
    size_t len = gather(c, w->scratch + LWS_PRE, &buf, &single, &n, now_us);
    int rc = w->node->cfg->tls_cert ? send_tls(c, buf, len) : send_plain(c, buf, len);
    chan_msg_unref(single);
    HR_INC(&w->stats, writes, 1);
    HR_INC(&w->stats, messages_out, n);
    HR_INC(&w->stats, bytes_out, len);
    return rc;
}

/* An idle socket keeps no big ring once a burst has drained. */
static void queue_shrink(hr_conn *c)
{
    if (c->qlen == 0 && c->qcap > HR_RING_KEEP) {
        free(c->q);
        c->q = NULL;
        c->qcap = c->qhead = 0;
    }
}

/* Sends what is queued, then asks for the writeable callback while more is
 * left (over one scratch's worth) or a close frame waits, unless lws holds
 * a partial write (it calls back by itself). Returns 0, or -1 when the
 * socket failed. */
static int conn_flush(hr_worker *w, hr_conn *c, uint64_t now_us)
{
    if (c->qlen && conn_send(w, c, now_us) < 0)
        return -1;
    if ((c->qlen || c->close_code) && !c->choked)
        lws_callback_on_writable(c->wsi);
    queue_shrink(c);
    return 0;
}

void hr_ws_flush_pending(hr_worker *w)
{
    size_t n = w->npending;
    hr_conn **list = w->pending;
    uint64_t now_us = n ? hr_now_us() : 0; /* one clock read per pass, not per socket */
    /* sending never marks a connection pending, so the list is stable */
    for (size_t i = 0; i < n; i++) {
        hr_conn *c = list[i];
        c->pending = 0;
        if (c->wsi && !c->close_code && !c->choked && c->qlen && conn_flush(w, c, now_us) < 0)
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        conn_unref(c);
    }
    w->npending = 0;
}

/* The writeable callback: lws has flushed any partial write it held. Sends
 * what is queued, or the close frame once the queue is empty. */
int hr_ws_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = pss->conn;
    if (!c)
        return -1;
    c->choked = 0;
    if (c->close_code && (!c->close_flush || c->qlen == 0))
        return hr_ws_close_now(wsi, c->close_code, c->close_reason);
    return conn_flush(w, c, hr_now_us());
}

int hr_ws_timer(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = pss->conn;
    (void)w;
    (void)wsi;
    if (!c)
        return 0;
    if (!c->authed)
        conn_close(c, 4001, "connect timeout", 1);
    else if (c->id.exp > 0 && (int64_t)time(NULL) >= c->id.exp)
        conn_close(c, 4001, "token expired", 1);
    else
        conn_arm_timer(c); /* refreshed meanwhile, or a capped wait */
    return 0;
}

/*---- Closing ---------------------------------------------------------------*/

/* Close codes a peer may send (RFC 6455 §7.4.1-2, and 1012-1014 from the
 * IANA registry): 1000-1003, 1007-1014, 3000-4999. */
static int close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* Is s[0..n) well-formed UTF-8 (RFC 3629: no overlong forms, surrogates,
 * code points over U+10FFFF or truncated sequences)? */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], need;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            need = 1, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3, min = 0x10000;
        else
            return 0;
        if (n - i <= need)
            return 0;
        cp = c & (0x3fu >> need);
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

int hr_ws_peer_close(struct lws *wsi, hr_pss *pss, const unsigned char *in, size_t len)
{
    /* lws 4.1.6 answers the unassigned codes below 3000 with 1002 itself
     * (and 1012-1014 too), and hangs up on a reason with an invalid UTF-8
     * byte (hr_ws_dropped answers that); but it echoes a 1-byte payload,
     * codes of 5000 and above, and a reason that ends inside a UTF-8
     * sequence (its check is incremental and the end is never checked). */
    if (len == 1)
        return hr_ws_close_now(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "bad close payload");
    if (len >= 2 && !close_code_valid(((unsigned)in[0] << 8) | in[1]))
        return hr_ws_close_now(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "invalid close code");
    if (len > 2 && !utf8_valid(in + 2, len - 2))
        return hr_ws_close_now(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "close reason not UTF-8");
    if (pss && pss->conn)
        pss->conn->peer_closed = 1;
    return 0;
}

/* Sends what is queued straight to the socket, as far as it goes without
 * blocking. Returns 0 when all of it left, -1 when a frame may have been
 * cut short (nothing can follow it then). */
static int flush_direct(hr_worker *w, hr_conn *c, int fd)
{
    uint64_t now_us = hr_now_us();
    while (c->qlen) {
        const unsigned char *buf;
        chan_msg *single;
        uint32_t n;
        size_t len = gather(c, w->scratch + LWS_PRE, &buf, &single, &n, now_us);
        ssize_t sent = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        chan_msg_unref(single);
        if (sent < 0 || (size_t)sent < len)
            return -1;
        HR_INC(&w->stats, writes, 1);
        HR_INC(&w->stats, messages_out, n);
        HR_INC(&w->stats, bytes_out, len);
    }
    return 0;
}

/* WS_SERVER_DROP_PROTOCOL: lws is closing the connection, and this is the
 * last moment its socket is still open for writing. lws 4.1.6 fails some
 * protocol violations by hanging up without a close frame, with no
 * callback and no close reason set: a control frame over 125 bytes, a
 * 64-bit length with the top bit set, a close reason that is not UTF-8. So
 * when nobody has sent or prepared a close frame (not us, not lws - it sets
 * a close reason for the violations it does answer - and not the peer) and
 * the peer is still there (has not closed its side), the replies queued
 * before the violation go out and then a 1002 close; or the close Herald
 * had decided but not yet written (its backstop timer fired). Writes go
 * straight to the socket: lws holds no partial write of ours (!choked) and
 * none of its own here (it flushes before closing). */
void hr_ws_dropped(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = pss ? pss->conn : NULL;
    unsigned char frame[HR_WS_CLOSE_MAX];
    char peek;

    if (!c || !c->wsi || c->close_sent || c->peer_closed || c->choked ||
        lws_get_close_length(wsi) > 0)
        return;
    if (w->node->cfg->tls_cert)
        return; /* plaintext bytes must never reach a TLS socket (no close frame then) */
    int fd = lws_get_socket_fd(wsi);
    ssize_t n = recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        return; /* the peer has closed or reset: nobody to tell */
    if (flush_direct(w, c, fd) < 0)
        return;
    int code = c->close_code ? c->close_code : LWS_CLOSE_STATUS_PROTOCOL_ERR;
    const char *reason = c->close_code ? c->close_reason : "protocol error";
    c->close_sent = 1;
    send(fd, frame, hr_ws_close_frame(frame, code, reason), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void hr_ws_closed(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = pss->conn;
    const char *key;
    void *val;
    (void)wsi;

    if (!c)
        return;
    pss->conn = NULL;
    if (c->subs) {
        for (size_t it = 0; hr_map_next(c->subs, &it, &key, NULL, &val);)
            chan_unsubscribe(w->node->layer, w->index, val);
        hr_map_free(c->subs);
    }
    queue_drop(c);
    free(c->q);
    rx_free(c);
    hr_pmd_conn_clear(w->pmd, &c->pmd, wsi);
    user_index_remove(c);
    hr_slot_release(c->addr_slot);
    hr_slot_release(c->user_slot);
    auth_identity_clear(&c->id);
    lws_dll2_remove(&c->in_loop);
    HR_INC(&w->stats, connections, -1);
    c->wsi = NULL;
    conn_unref(c);
    hr_loop_maybe_done(&w->loop);
}

static int close_for_disconnect(struct lws_dll2 *d, void *user)
{
    const int *code = ((void **)user)[0];
    const char *reason = ((void **)user)[1];
    conn_close(lws_container_of(d, hr_conn, in_user), *code, reason, 0);
    return 0;
}

size_t hr_ws_disconnect_user(hr_worker *w, const char *sub, int code, const char *reason)
{
    hr_user_conns *u = hr_map_get(w->by_user, sub, strlen(sub));
    if (!u)
        return 0;
    size_t n = u->conns.count;
    void *args[2] = {&code, (void *)reason};
    lws_dll2_foreach_safe(&u->conns, args, close_for_disconnect);
    return n;
}

/* Server-side membership (SPEC §4 members): every connection of sub on
 * this loop joins or leaves channel, with a `subscribed` / `unsubscribed`
 * push. Permissions are the backend's business, not checked here. */
static int member_apply(struct lws_dll2 *d, void *user)
{
    hr_conn *c = lws_container_of(d, hr_conn, in_user);
    const chan_control *ctl = user;
    int has = c->subs && hr_map_get(c->subs, ctl->channel, strlen(ctl->channel));
    if (!c->wsi || c->close_code)
        return 0;
    if (ctl->op == CHAN_CTL_MEMBER_ADD && !has) {
        conn_subscribe(c, ctl->channel, NULL, SERVER_JOIN);
    } else if (ctl->op == CHAN_CTL_MEMBER_REMOVE && has) {
        conn_unsubscribe(c, ctl->channel);
        push_json(c, json_pack("{s:s, s:s}", "push", "unsubscribed", "channel", ctl->channel));
    }
    return 0;
}

void hr_ws_member(hr_worker *w, const chan_control *ctl)
{
    hr_user_conns *u = hr_map_get(w->by_user, ctl->user, strlen(ctl->user));
    if (u)
        lws_dll2_foreach_safe(&u->conns, (void *)ctl, member_apply);
}

static int close_for_shutdown(struct lws_dll2 *d, void *user)
{
    (void)user;
    conn_close(lws_container_of(d, hr_conn, in_loop), 1001, "going away", 1);
    return 0;
}

void hr_ws_shutdown_all(hr_worker *w)
{
    lws_dll2_foreach_safe(&w->conns, NULL, close_for_shutdown);
}
