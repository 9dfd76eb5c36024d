/*
 * ws.c - the WebSocket side of the gateway: authentication at the handshake
 * or through `connect`, the command loop of SPEC §2, and each connection's
 * bounded outbound queue.
 *
 * Queue discipline. Everything a connection is sent - replies, pushes,
 * publications - goes through conn_enqueue() as a reference to a pre-framed
 * chan_msg, so a publication fanned out to N sockets is N pointer pushes,
 * not N copies. Bytes leave only in SERVER_WRITEABLE. When the queued bytes
 * would exceed the configured bound, the queue is dropped at once (memory is
 * bounded no matter how slow the peer is) and the connection closes 4008.
 *
 * Closing is always deferred: code that decides a connection must close
 * records the code and asks for a writeable callback, which sends the close
 * frame. Nothing frees a connection in the middle of fan-out.
 */
#include "log.h"
#include "metrics.h"
#include "proto.h"
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct hr_conn {
    hr_server *srv;
    struct lws *wsi; /* NULL once closed; the struct lives on while refs > 0 */
    int refs;        /* 1 for the socket + 1 per pending asynchronous operation */
    hr_conn *prev, *next;

    int authed;
    auth_identity id;
    char client[128];
    hr_map *subs; /* channel name -> chan_sub* */

    /* outbound queue: a ring of message references */
    chan_msg **q;
    size_t qhead, qlen, qcap, qbytes;

    hr_buf rx;     /* reassembly of a fragmented inbound message */
    double tokens; /* inbound rate limiter (token bucket) */
    uint64_t tokens_ms;

    int close_code;  /* != 0: closing with this code */
    int close_flush; /* send what is queued before the close frame */
    char close_reason[64];
};

/* Seconds a closing connection may wait for its peer to accept the close
 * frame before lws drops the socket. */
#define HR_CLOSE_BACKSTOP_S 5
/* Frames written per writeable callback before yielding to other sockets. */
#define HR_WRITE_BATCH 64

static void conn_unref(hr_conn *c)
{
    if (--c->refs == 0)
        free(c);
}

/*---- Outbound queue --------------------------------------------------------*/

static void queue_drop(hr_conn *c)
{
    while (c->qlen) {
        chan_msg_unref(c->q[c->qhead]);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    c->qbytes = 0;
}

static int queue_grow(hr_conn *c)
{
    size_t ncap = c->qcap ? c->qcap * 2 : 16;
    chan_msg **nq = malloc(ncap * sizeof(*nq));
    if (!nq)
        return -1;
    for (size_t i = 0; i < c->qlen; i++)
        nq[i] = c->q[(c->qhead + i) % c->qcap];
    free(c->q);
    c->q = nq;
    c->qcap = ncap;
    c->qhead = 0;
    return 0;
}

/* Records that the connection must close with code and asks for the
 * writeable callback that sends the close frame. The first code wins. */
static void conn_close(hr_conn *c, int code, const char *reason, int flush)
{
    if (!c->wsi || c->close_code)
        return;
    c->close_code = code;
    c->close_flush = flush;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    if (!flush)
        queue_drop(c);
    lws_callback_on_writable(c->wsi);
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
                    flush ? HR_CLOSE_BACKSTOP_S * 2 : HR_CLOSE_BACKSTOP_S);
}

static void slow_consumer(hr_conn *c)
{
    HR_INC(slow_consumer_closes, 1);
    hr_warn("slow_consumer", "client %s: outbound queue over %zu bytes, closing 4008",
            c->authed ? c->client : "(unauthenticated)", c->srv->cfg->out_queue_bytes);
    conn_close(c, 4008, "slow consumer", 0);
}

/* Adds a reference to m to the connection's queue. Never copies the bytes. */
static void conn_enqueue(hr_conn *c, chan_msg *m)
{
    size_t flen;
    if (!c->wsi || c->close_code)
        return;
    chan_msg_frame(m, &flen);
    if (c->qbytes + flen > c->srv->cfg->out_queue_bytes) {
        slow_consumer(c);
        return;
    }
    if (c->qlen == c->qcap && queue_grow(c) < 0) {
        conn_close(c, 1011, "out of memory", 0);
        return;
    }
    c->q[(c->qhead + c->qlen) % c->qcap] = chan_msg_ref(m);
    c->qlen++;
    c->qbytes += flen;
    if (c->qlen == 1)
        lws_callback_on_writable(c->wsi);
}

void hr_ws_deliver(void *owner, chan_msg *m)
{
    conn_enqueue(owner, m);
}

/* Queues JSON text we own (freed here). */
static void conn_send_text(hr_conn *c, char *json, size_t len)
{
    if (!json) {
        conn_close(c, 1011, "out of memory", 0);
        return;
    }
    chan_msg *m = chan_msg_new(json, len);
    free(json);
    if (!m) {
        conn_close(c, 1011, "out of memory", 0);
        return;
    }
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
 * authentication, the token's expiry after it. */
static void conn_arm_timer(hr_conn *c)
{
    lws_usec_t us;
    if (!c->authed) {
        us = (lws_usec_t)c->srv->cfg->connect_timeout * LWS_US_PER_SEC;
    } else if (c->id.exp > 0) {
        int64_t left = c->id.exp - (int64_t)time(NULL);
        us = left > 0 ? (lws_usec_t)left * LWS_US_PER_SEC : 1;
    } else {
        lws_set_timer_usecs(c->wsi, LWS_SET_TIMER_USEC_CANCEL);
        return;
    }
    lws_set_timer_usecs(c->wsi, us);
}

/* Takes ownership of *id's contents (id is left cleared) and sends the
 * `connected` push, which must be the first thing the client receives. */
static void conn_authenticate(hr_conn *c, auth_identity *id)
{
    size_t len = 0;
    c->id = *id;
    memset(id, 0, sizeof(*id));
    c->authed = 1;
    snprintf(c->client, sizeof(c->client), "%s.%llu", c->srv->cfg->node_id,
             (unsigned long long)++c->srv->next_client);
    char *s = hr_proto_connected(c->client, c->id.sub, c->id.exp, &len);
    conn_send_text(c, s, len);
    conn_arm_timer(c);
    hr_debug("connected", "client %s user %s", c->client, c->id.sub ? c->id.sub : "");
}

static json_t *connect_result(hr_conn *c)
{
    return json_pack("{s:s, s:s, s:o}", "client", c->client, "user", c->id.sub ? c->id.sub : "",
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
        if (hr_server_verify_jwt(c->srv, cmd->token, &id, err, sizeof(err)) != HR_CRED_OK) {
            reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, err[0] ? err : "invalid token");
            conn_close(c, 4001, "unauthorized", 1);
            return;
        }
    } else if (c->srv->cfg->allow_anonymous) {
        id.anonymous = 1;
    } else {
        reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, "a token is required");
        conn_close(c, 4001, "unauthorized", 1);
        return;
    }
    conn_authenticate(c, &id);
    json_t *r = connect_result(c);
    reply_result(c, cmd->id, r);
    json_decref(r);
}

static void op_subscribe(hr_conn *c, const hr_cmd *cmd)
{
    const hr_config *cfg = c->srv->cfg;
    size_t clen = strlen(cmd->channel);
    json_t *r;

    if (!hr_map_get(c->subs, cmd->channel, clen)) {
        if (!auth_can_subscribe(hr_config_namespace(cfg, cmd->channel), &c->id, cmd->channel)) {
            reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "not allowed to subscribe to this channel");
            return;
        }
        if (hr_map_count(c->subs) >= (size_t)cfg->max_subscriptions) {
            reply_error(c, cmd->id, HR_ERR_TOO_LARGE, "too many subscriptions on this connection");
            return;
        }
        chan_sub *s = chan_subscribe(c->srv->layer, cmd->channel, c);
        if (!s || hr_map_put(c->subs, cmd->channel, clen, s) < 0) {
            if (s)
                chan_unsubscribe(c->srv->layer, s);
            reply_error(c, cmd->id, HR_ERR_INTERNAL, "out of memory");
            return;
        }
    }
    r = json_pack("{s:s}", "channel", cmd->channel);
    reply_result(c, cmd->id, r);
    json_decref(r);
}

static void op_unsubscribe(hr_conn *c, const hr_cmd *cmd)
{
    chan_sub *s = hr_map_del(c->subs, cmd->channel, strlen(cmd->channel));
    if (s)
        chan_unsubscribe(c->srv->layer, s);
    reply_result(c, cmd->id, NULL);
}

/* A publish may complete after the connection has gone (Redis layer), so
 * the pending operation holds a reference to the connection. */
typedef struct publish_ctx {
    hr_conn *c;
    int64_t id;
} publish_ctx;

static void publish_done(void *ud, int status, uint64_t offset)
{
    publish_ctx *p = ud;
    hr_conn *c = p->c;
    if (c->wsi) {
        if (status < 0) {
            reply_error(c, p->id, HR_ERR_UNAVAILABLE, "the channel layer is unavailable");
        } else {
            json_t *r = offset ? json_pack("{s:I}", "offset", (json_int_t)offset) : NULL;
            reply_result(c, p->id, r);
            json_decref(r);
        }
    }
    conn_unref(c);
    free(p);
}

static void op_publish(hr_conn *c, const hr_cmd *cmd)
{
    int subscribed = hr_map_get(c->subs, cmd->channel, strlen(cmd->channel)) != NULL;
    const auth_namespace *ns = hr_config_namespace(c->srv->cfg, cmd->channel);

    if (!auth_can_publish(ns, &c->id, cmd->channel, subscribed)) {
        reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "not allowed to publish to this channel");
        return;
    }
    char *data = json_dumps(cmd->data, JSON_COMPACT | JSON_ENCODE_ANY);
    publish_ctx *p = malloc(sizeof(*p));
    if (!data || !p) {
        free(data);
        free(p);
        reply_error(c, cmd->id, HR_ERR_INTERNAL, "out of memory");
        return;
    }
    *p = (publish_ctx){c, cmd->id};
    c->refs++;
    HR_INC(publications, 1);
    chan_publish(c->srv->layer, cmd->channel, data, strlen(data), publish_done, p);
    free(data);
}

static void op_refresh(hr_conn *c, const hr_cmd *cmd)
{
    auth_identity id = {0};
    char err[160] = "";

    if (c->id.anonymous) {
        reply_error(c, cmd->id, HR_ERR_BAD_REQUEST, "anonymous connections have no token");
        return;
    }
    if (hr_server_verify_jwt(c->srv, cmd->token, &id, err, sizeof(err)) != HR_CRED_OK) {
        reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, err[0] ? err : "invalid token");
        return;
    }
    if (!c->id.sub || strcmp(id.sub, c->id.sub) != 0) {
        auth_identity_clear(&id);
        reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "the token is for another user");
        return;
    }
    auth_identity_clear(&c->id);
    c->id = id;
    conn_arm_timer(c);
    json_t *r = json_pack("{s:I}", "expires_at", (json_int_t)c->id.exp);
    reply_result(c, cmd->id, r);
    json_decref(r);
}

static void op_not_enabled(hr_conn *c, const hr_cmd *cmd, const char *what)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "%s is not enabled for this channel's namespace", what);
    reply_error(c, cmd->id, HR_ERR_NOT_FOUND, msg);
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
        op_not_enabled(c, cmd, "presence");
        break;
    case HR_OP_HISTORY:
        op_not_enabled(c, cmd, "history");
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
    if (hr_proto_parse(buf, len, c->srv->cfg->max_channel_len, &cmd, &perr) < 0)
        reply_error(c, cmd.id, perr.code, perr.message);
    else
        dispatch(c, &cmd);
    hr_cmd_clear(&cmd);
}

/*---- libwebsockets events --------------------------------------------------*/

/* Closes from inside an lws callback with a close frame carrying code. */
static int close_now(struct lws *wsi, int code, const char *reason)
{
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
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

/* Upgrade requests are checked twice: in HTTP_CONFIRM_UPGRADE, the only
 * place lws lets us answer with our own status (401, 403, 404, 503), and
 * again in FILTER_PROTOCOL_CONNECTION, the first place where the session
 * struct exists to keep the identity in. Verifying a JWT twice costs
 * microseconds and keeps no state between the two callbacks. */
int hr_ws_filter(hr_server *srv, struct lws *wsi, hr_pss *pss, const char *upgrade)
{
    char uri[64], err[160];
    auth_identity id = {0};
    (void)pss; /* not allocated yet at this stage */

    if (!upgrade || strcasecmp(upgrade, "websocket") != 0)
        return hr_server_refuse(wsi, 400, "only WebSocket upgrades are supported");
    if (srv->shutting_down)
        return hr_server_refuse(wsi, 503, "the server is shutting down");
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0)
        return hr_server_refuse(wsi, 404, "WebSocket endpoint is /ws");
    if (!origin_allowed(srv->cfg, wsi))
        return hr_server_refuse(wsi, 403, "origin not allowed");

    hr_cred_status st = hr_server_authenticate(srv, wsi, 1, &id, err, sizeof(err));
    int api_key = st == HR_CRED_OK && !id.sub;
    auth_identity_clear(&id);
    if (st == HR_CRED_BAD)
        return hr_server_refuse(wsi, 401, err);
    if (api_key)
        return hr_server_refuse(wsi, 401, "WebSocket clients authenticate with a JWT");
    return 0;
}

int hr_ws_bind_identity(hr_server *srv, struct lws *wsi, hr_pss *pss)
{
    char err[160];
    auth_identity id = {0};
    hr_cred_status st = hr_server_authenticate(srv, wsi, 1, &id, err, sizeof(err));
    if (st == HR_CRED_NONE)
        return 0;
    if (st == HR_CRED_BAD || !id.sub || !(pss->handshake_id = malloc(sizeof(id)))) {
        auth_identity_clear(&id);
        return -1; /* expired between the two checks, or OOM: hang up */
    }
    *pss->handshake_id = id;
    return 0;
}

int hr_ws_established(hr_server *srv, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = calloc(1, sizeof(*c));
    if (!c || !(c->subs = hr_map_new(NULL))) {
        free(c);
        return -1;
    }
    c->srv = srv;
    c->wsi = wsi;
    c->refs = 1;
    c->tokens = srv->cfg->rate_burst;
    c->tokens_ms = hr_now_ms();
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    pss->conn = c;
    HR_INC(connections, 1);
    HR_INC(connections_total, 1);

    if (pss->handshake_id) {
        conn_authenticate(c, pss->handshake_id);
        free(pss->handshake_id);
        pss->handshake_id = NULL;
    } else {
        conn_arm_timer(c);
    }
    if (srv->shutting_down)
        conn_close(c, 1001, "going away", 1);
    return 0;
}

/* Token bucket: rate_per_sec tokens a second, at most rate_burst saved. */
static int rate_ok(hr_conn *c)
{
    const hr_config *cfg = c->srv->cfg;
    uint64_t now = hr_now_ms();
    c->tokens += (double)(now - c->tokens_ms) * cfg->rate_per_sec / 1000.0;
    if (c->tokens > cfg->rate_burst)
        c->tokens = cfg->rate_burst;
    c->tokens_ms = now;
    if (c->tokens < 1.0)
        return 0;
    c->tokens -= 1.0;
    return 1;
}

/* Protocol violations close through the deferred path with flush, so the
 * replies to commands accepted before the violation still reach the client;
 * input that arrives while closing is ignored. */
static int violation(hr_conn *c, int code, const char *reason)
{
    hr_buf_reset(&c->rx);
    conn_close(c, code, reason, 1);
    return 0;
}

int hr_ws_receive(hr_server *srv, struct lws *wsi, hr_pss *pss, const void *in, size_t len)
{
    hr_conn *c = pss->conn;
    size_t max = srv->cfg->max_message;

    if (!c)
        return -1;
    if (c->close_code)
        return 0; /* closing: input is ignored */
    if (lws_frame_is_binary(wsi))
        return violation(c, 1003, "binary frames are not supported");
    if (c->rx.len + len + lws_remaining_packet_payload(wsi) > max)
        return violation(c, 1009, "message too big");
    if (hr_buf_append(&c->rx, in, len) < 0)
        return violation(c, 1011, "out of memory");
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return 0;

    HR_INC(messages_in, 1);
    HR_INC(bytes_in, c->rx.len);
    if (!rate_ok(c)) {
        HR_INC(rate_limit_closes, 1);
        return violation(c, 4029, "rate limit exceeded");
    }
    handle_message(c, c->rx.data, c->rx.len);
    if (c->rx.cap > 16384)
        hr_buf_reset(&c->rx); /* don't keep a big buffer for one big message */
    else
        c->rx.len = 0;
    return 0;
}

/* Sends queued frames until the socket would block or a batch is done, then
 * asks to be called again if anything is left. */
int hr_ws_writeable(hr_server *srv, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = pss->conn;
    (void)srv;
    if (!c)
        return -1;
    if (c->close_code && (!c->close_flush || c->qlen == 0))
        return close_now(wsi, c->close_code, c->close_reason);

    for (int n = 0; c->qlen && n < HR_WRITE_BATCH; n++) {
        chan_msg *m = c->q[c->qhead];
        size_t flen;
        const unsigned char *frame = chan_msg_frame(m, &flen);
        /* LWS_WRITE_RAW: the frame header was built once per publication;
         * lws copies only the unsent tail of a partial write. */
        if (lws_write(wsi, (unsigned char *)frame, flen, LWS_WRITE_RAW) < (int)flen)
            return -1;
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
        c->qbytes -= flen;
        chan_msg_unref(m);
        HR_INC(messages_out, 1);
        HR_INC(bytes_out, flen);
        if (lws_send_pipe_choked(wsi))
            break;
    }
    if (c->qlen || c->close_code)
        lws_callback_on_writable(wsi);
    return 0;
}

int hr_ws_timer(hr_server *srv, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = pss->conn;
    (void)srv;
    (void)wsi;
    if (!c)
        return 0;
    if (!c->authed)
        conn_close(c, 4001, "connect timeout", 1);
    else if (c->id.exp > 0 && (int64_t)time(NULL) >= c->id.exp)
        conn_close(c, 4001, "token expired", 1);
    else
        conn_arm_timer(c); /* refreshed meanwhile */
    return 0;
}

void hr_ws_closed(hr_server *srv, struct lws *wsi, hr_pss *pss)
{
    hr_conn *c = pss->conn;
    const char *key;
    void *val;
    (void)wsi;

    if (!c)
        return;
    pss->conn = NULL;
    for (size_t it = 0; hr_map_next(c->subs, &it, &key, NULL, &val);)
        chan_unsubscribe(srv->layer, val);
    hr_map_free(c->subs);
    queue_drop(c);
    free(c->q);
    hr_buf_reset(&c->rx);
    auth_identity_clear(&c->id);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    HR_INC(connections, -1);
    c->wsi = NULL;
    conn_unref(c);
    if (srv->shutting_down && srv->nconns == 0)
        srv->done = 1;
}

size_t hr_ws_disconnect_user(hr_server *srv, const char *sub, int code, const char *reason)
{
    size_t n = 0;
    for (hr_conn *c = srv->conns; c; c = c->next)
        if (c->authed && c->id.sub && !strcmp(c->id.sub, sub)) {
            conn_close(c, code, reason, 0);
            n++;
        }
    return n;
}

void hr_ws_shutdown_all(hr_server *srv)
{
    for (hr_conn *c = srv->conns; c; c = c->next)
        conn_close(c, 1001, "going away", 1);
}
