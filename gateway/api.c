/*
 * api.c - the transport-neutral operations (see api.h): rights, the
 * channel layer's calls, and the JSON of their results.
 */
#include "gateway/api.h"
#include "common/log.h"
#include "gateway/proxy_call.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*---- Results ---------------------------------------------------------------*/

const char *hr_err_code(int err)
{
    switch (err) {
    case -EINVAL:
        return "bad_request";
    case -EPERM:
        return "unauthorized";
    case -EACCES:
        return "forbidden";
    case -ENOENT:
        return "not_found";
    case -E2BIG:
        return "too_large";
    case -EUSERS:
        return "rate_limited";
    case -EAGAIN:
        return "unavailable";
    default:
        return "internal";
    }
}

int hr_err_http(int err)
{
    switch (err) {
    case -EINVAL:
        return 400;
    case -EPERM:
        return 401;
    case -EACCES:
        return 403;
    case -ENOENT:
        return 404;
    case -E2BIG:
        return 413;
    case -EUSERS:
        return 429;
    case -EAGAIN:
        return 503;
    default:
        return 500;
    }
}

json_t *hr_result_error_json(const hr_result *r)
{
    return json_pack("{s:s, s:s}", "code", r->code ? r->code : hr_err_code(r->err), "message",
                     r->message ? r->message : "");
}

static void done(hr_result_cb cb, void *ud, int err, const char *message, json_t *value)
{
    hr_result r = {.err = err, .message = message, .value = value};
    cb(ud, &r);
}

static const char unavailable[] = "the channel layer is unavailable";

/* -ENOENT (the namespace keeps none) or unavailable, for a read of what. */
static void read_failed(hr_result_cb cb, void *ud, int status, const char *what)
{
    char msg[128];
    if (status == -ENOENT) {
        snprintf(msg, sizeof(msg), "%s is not enabled for this channel's namespace", what);
        done(cb, ud, -ENOENT, msg, NULL);
    } else {
        done(cb, ud, -EAGAIN, unavailable, NULL);
    }
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
 * (and, for an answer, "publications"); a renewed plain channel has
 * "recovered": false} */
static json_t *subscribed_json(const char *channel, const chan_sub_result *r, int answer)
{
    json_t *o = json_pack("{s:s}", "channel", channel);
    if (r->history) {
        json_object_set_new(o, "offset", json_integer((json_int_t)r->pos.offset));
        json_object_set_new(o, "epoch", json_string(r->pos.epoch));
        json_object_set_new(o, "recovered", json_boolean(r->recovered));
        if (answer)
            json_object_set_new(o, "publications", pubs_json(r->pubs, r->npubs));
    } else if (r->resubscribed) {
        /* a plain channel renewed after a Redis outage or failover: what
         * was published meanwhile is gone, and the client is told so */
        json_object_set_new(o, "recovered", json_false());
    }
    return o;
}

/* An operation waiting for the layer: the caller's callback, and the
 * client connection it holds a reference to (NULL: a backend). */
typedef struct op {
    hr_result_cb cb;
    void *ud;
    hr_conn *c;
} op;

static op *op_new(hr_conn *c, hr_result_cb cb, void *ud)
{
    op *o = hr_malloc(sizeof(*o));
    *o = (op){cb, ud, c};
    if (c)
        hr_conn_ref(c);
    return o;
}

static void op_end(op *o)
{
    if (o->c)
        hr_conn_unref(o->c);
    free(o);
}

/*---- Subscriptions ---------------------------------------------------------*/

/* Server-side joins (members add) pass this instead of an op. */
static char server_join;
#define SERVER_JOIN ((void *)&server_join)

/* Starts a subscription (rights were checked); the outcome arrives in
 * hr_api_subscribed. */
static void start_subscription(hr_conn *c, const char *channel, const chan_pos *since, void *req)
{
    hr_worker *w = c->w;
    char client[160], *info;
    chan_client who = hr_conn_who(c, client, sizeof(client), &info);
    chan_opts o = hr_chan_opts(hr_config_namespace(w->node->cfg, channel));
    chan_sub *s = chan_subscribe(w->node->layer, w->index, channel, &o, &who, since, c, req);
    free(info);
    if (s)
        hr_conn_sub_put(c, s);
}

static void subscribe_proxied(hr_conn *c, const char *channel, const chan_pos *since,
                              hr_result_cb cb, void *ud);

void hr_api_subscribe(hr_conn *c, const char *channel, const chan_pos *since, hr_result_cb cb,
                      void *ud)
{
    const hr_config *cfg = c->w->node->cfg;
    if (hr_conn_sub_get(c, channel)) {
        json_t *r = json_pack("{s:s}", "channel", channel);
        done(cb, ud, 0, NULL, r); /* subscribing twice is not an error */
        json_decref(r);
        return;
    }
    if (!auth_can_subscribe(hr_config_namespace(cfg, channel), &c->id, channel)) {
        done(cb, ud, -EACCES, "not allowed to subscribe to this channel", NULL);
        return;
    }
    if (c->nsubs >= (uint32_t)cfg->max_subscriptions) {
        done(cb, ud, -E2BIG, "too many subscriptions on this connection", NULL);
        return;
    }
    if (hr_config_namespace(cfg, channel)->subscribe_proxy) {
        subscribe_proxied(c, channel, since, cb, ud);
        return;
    }
    /* no reference to c: its subscriptions end (-ECANCELED) before it goes */
    op *o = hr_malloc(sizeof(*o));
    *o = (op){cb, ud, NULL};
    start_subscription(c, channel, since, o);
}

void hr_api_subscribed(void *owner, void *req, const char *channel, const chan_sub_result *r)
{
    hr_conn *c = owner;
    op *o = req != SERVER_JOIN ? req : NULL;
    if (r->status < 0 && r->status != -ECANCELED)
        hr_conn_sub_del(c, channel); /* the layer dropped it */
    if (r->status == 0)
        hr_conn_sub_event(c, 1, channel);
    if (o) {
        if (r->status == -ECANCELED) {
            done(o->cb, o->ud, -ECANCELED, "unsubscribed", NULL);
        } else if (r->status < 0) {
            done(o->cb, o->ud, -EAGAIN, unavailable, NULL);
        } else {
            json_t *v = subscribed_json(channel, r, 1);
            done(o->cb, o->ud, 0, NULL, v);
            json_decref(v);
        }
        free(o);
    } else if (r->status == 0) {
        /* a server-side join, or a renewal after an outage: a push */
        json_t *v = subscribed_json(channel, r, 0);
        json_object_set_new(v, "push", json_string("subscribed"));
        hr_conn_send_json(c, v);
    }
}

void hr_api_unsubscribe(hr_conn *c, const char *channel)
{
    chan_sub *s = hr_conn_sub_del(c, channel);
    if (s) {
        chan_unsubscribe(c->w->node->layer, c->w->index, s);
        hr_conn_sub_event(c, 0, channel);
    }
}

/* Server-side membership (SPEC §4 members): permissions are the backend's
 * business, not checked here. */
static void member_apply(hr_conn *c, void *ud)
{
    const chan_control *ctl = ud;
    int has = hr_conn_sub_get(c, ctl->channel) != NULL;
    if (!c->wsi || c->close_code)
        return;
    if (ctl->op == CHAN_CTL_MEMBER_ADD && !has) {
        start_subscription(c, ctl->channel, NULL, SERVER_JOIN);
    } else if (ctl->op == CHAN_CTL_MEMBER_REMOVE && has) {
        hr_api_unsubscribe(c, ctl->channel);
        hr_conn_send_json(c,
                          json_pack("{s:s, s:s}", "push", "unsubscribed", "channel", ctl->channel));
    }
}

void hr_api_member(hr_worker *w, const chan_control *c)
{
    hr_conn_each_of_user(w, c->user, member_apply, (void *)c);
}

/*---- Publishing ------------------------------------------------------------*/

/* A publication waiting for the layer. In a namespace with django_channel
 * the Channels channel gets a client's publication too, once the layer
 * accepted it (not when it was only delivered locally during an outage):
 * who published is captured now, the connection may be gone by then. */
typedef struct publish_op {
    op base;
    chan_layer *layer;
    unsigned thread;
    const char *target; /* the namespace's django_channel (the config outlives us) */
    char *channel, *user, *client, *data;
    size_t len;
} publish_op;

static void publish_done(void *ud, int status, uint64_t offset, int local_only)
{
    publish_op *p = ud;
    if (status == 0 && !local_only && p->target)
        chan_django_forward(p->layer, p->thread, p->target, p->channel, p->user, p->client, p->data,
                            p->len);
    if (status < 0) {
        done(p->base.cb, p->base.ud, -EAGAIN, unavailable, NULL);
    } else {
        json_t *r = json_object();
        if (offset)
            json_object_set_new(r, "offset", json_integer((json_int_t)offset));
        if (local_only)
            json_object_set_new(r, "local_only", json_true());
        done(p->base.cb, p->base.ud, 0, NULL, r);
        json_decref(r);
    }
    free(p->channel);
    free(p->user);
    free(p->client);
    free(p->data);
    if (p->base.c)
        hr_conn_unref(p->base.c);
    free(p);
}

/* The server's word on who published, never the data's (SPEC §2). */
static char *from_json(hr_conn *c, char *client, size_t len)
{
    hr_conn_client_id(c, client, len);
    json_t *fo = json_pack("{s:s, s:s, s:o}", "user", c->id.sub ? c->id.sub : "", "client", client,
                           "info", c->id.info ? json_incref(c->id.info) : json_object());
    char *from = json_dumps(fo, JSON_COMPACT);
    json_decref(fo);
    return from;
}

static void publish_proxied(hr_conn *c, const char *channel, const char *data, size_t len,
                            hr_result_cb cb, void *ud);

/* The publication, its rights checked (and the backend asked). */
static void publish_now(hr_worker *w, hr_conn *c, const char *channel, const char *data, size_t len,
                        hr_result_cb cb, void *ud)
{
    const hr_config *cfg = w->node->cfg;
    const auth_namespace *ns = hr_config_namespace(cfg, channel);
    char client[160], *from = NULL;
    if (c)
        from = from_json(c, client, sizeof(client));
    chan_opts o = hr_chan_opts(ns);
    HR_ADD1(&w->stats.ns_publications[hr_ns_index(cfg, ns)], 1);
    publish_op *p = hr_calloc(1, sizeof(*p));
    p->base = (op){cb, ud, c};
    if (c) {
        hr_conn_ref(c);
        if (ns->django_channel) { /* a client's publication only */
            p->layer = w->node->layer;
            p->thread = w->index;
            p->target = ns->django_channel;
            p->channel = hr_strdup(channel);
            p->user = hr_strdup(c->id.sub ? c->id.sub : "");
            p->client = hr_strdup(client);
            p->data = hr_strndup(data, len);
            p->len = len;
        }
    }
    chan_publish(w->node->layer, w->index, channel, &o, data, len, from, publish_done, p);
    free(from);
}

void hr_api_publish(hr_worker *w, hr_conn *c, const char *channel, const char *data, size_t len,
                    hr_result_cb cb, void *ud)
{
    const auth_namespace *ns = hr_config_namespace(w->node->cfg, channel);
    if (c) {
        int subscribed = hr_conn_sub_get(c, channel) != NULL;
        if (!auth_can_publish(ns, &c->id, channel, subscribed)) {
            done(cb, ud, -EACCES, "not allowed to publish to this channel", NULL);
            return;
        }
        if (ns->publish_proxy) { /* a client's publication only (SPEC §8) */
            publish_proxied(c, channel, data, len, cb, ud);
            return;
        }
    }
    publish_now(w, c, channel, data, len, cb, ud);
}

/*---- Reads -----------------------------------------------------------------*/

/* Presence and history need the right to subscribe to the channel. */
static int may_read(hr_worker *w, hr_conn *c, const char *channel, chan_opts *o, hr_result_cb cb,
                    void *ud)
{
    const auth_namespace *ns = hr_config_namespace(w->node->cfg, channel);
    if (c && !auth_can_subscribe(ns, &c->id, channel)) {
        done(cb, ud, -EACCES, "not allowed to read this channel", NULL);
        return 0;
    }
    *o = hr_chan_opts(ns);
    return 1;
}

static void presence_done(void *ud, const chan_presence *p)
{
    op *o = ud;
    if (p->status < 0) {
        read_failed(o->cb, o->ud, p->status, "presence");
    } else {
        json_t *clients = json_loadb(p->clients, p->len, 0, NULL);
        json_t *r = json_pack("{s:o}", "clients", clients ? clients : json_array());
        done(o->cb, o->ud, 0, NULL, r);
        json_decref(r);
    }
    op_end(o);
}

void hr_api_presence(hr_worker *w, hr_conn *c, const char *channel, hr_result_cb cb, void *ud)
{
    chan_opts o;
    if (may_read(w, c, channel, &o, cb, ud))
        chan_presence_read(w->node->layer, w->index, channel, &o, presence_done, op_new(c, cb, ud));
}

static void history_done(void *ud, const chan_history *h)
{
    op *o = ud;
    if (h->status < 0) {
        read_failed(o->cb, o->ud, h->status, "history");
    } else {
        json_t *r = json_pack("{s:o, s:I, s:s}", "publications", pubs_json(h->pubs, h->npubs),
                              "offset", (json_int_t)h->top.offset, "epoch", h->top.epoch);
        done(o->cb, o->ud, 0, NULL, r);
        json_decref(r);
    }
    op_end(o);
}

void hr_api_history(hr_worker *w, hr_conn *c, const char *channel, const chan_pos *since,
                    int64_t limit, hr_result_cb cb, void *ud)
{
    chan_opts o;
    if (may_read(w, c, channel, &o, cb, ud))
        chan_history_read(w->node->layer, w->index, channel, &o, since, limit, history_done,
                          op_new(c, cb, ud));
}

/*---- Control: membership, disconnects, revocations -------------------------*/

/* The answer to a control message sent to every node. */
static void control_done(void *ud, int status)
{
    op *o = ud;
    if (status < 0)
        done(o->cb, o->ud, -EAGAIN, unavailable, NULL);
    else
        done(o->cb, o->ud, 0, NULL, NULL);
    op_end(o);
}

void hr_api_members(hr_worker *w, chan_control_op op_, const char *channel, const char *user,
                    hr_result_cb cb, void *ud)
{
    chan_control c = {.op = op_, .user = user, .channel = channel};
    chan_control_send(w->node->layer, w->index, &c, control_done, op_new(NULL, cb, ud));
}

/* Every loop of every node closes the user's sockets on its own thread. */
void hr_api_disconnect(hr_worker *w, const char *user, hr_result_cb cb, void *ud)
{
    chan_control c = {.op = CHAN_CTL_DISCONNECT, .user = user, .code = 4003};
    hr_info("disconnect", "user %s: disconnecting every connection", user);
    chan_control_send(w->node->layer, w->index, &c, control_done, op_new(NULL, cb, ud));
}

typedef struct revoke_op {
    op base;
    hr_node *node;
    char *user;
} revoke_op;

/* A revocation whose control message could not reach the other nodes
 * still holds here; they load revocations from the store when they
 * reconnect. */
static void revoke_sent(void *ud, int status)
{
    revoke_op *r = ud;
    if (status < 0) {
        hr_creds_revoke(r->node->creds, r->user, (int64_t)time(NULL));
        hr_node_disconnect_user(r->node, r->user, 4003);
        hr_warn("revoke", "user %s: revoked on this node only (channel layer unavailable)",
                r->user);
    }
    done(r->base.cb, r->base.ud, 0, NULL, NULL);
    free(r->user);
    free(r);
}

void hr_api_revoke(hr_worker *w, const char *user, hr_result_cb cb, void *ud)
{
    revoke_op *r = hr_malloc(sizeof(*r));
    *r = (revoke_op){{cb, ud, NULL}, w->node, hr_strdup(user)};
    chan_control c = {.op = CHAN_CTL_REVOKE, .user = user, .at = (int64_t)time(NULL)};
    chan_control_send(w->node->layer, w->index, &c, revoke_sent, r);
}

/*---- The backend proxy (SPEC §8) -------------------------------------------*/

static const char backend_unavailable[] = "the backend is unavailable";

/* A proxy call made for client c: the operation's callback, a reference
 * to c (which may close meanwhile), and what the step after the answer
 * needs. */
typedef struct proxy_op {
    op base;
    char *channel;                   /* subscribe, publish */
    chan_pos since;                  /* subscribe */
    int has_since;                   /* subscribe */
    char *data;                      /* publish: as sent */
    size_t len;                      /* publish */
    hr_authenticate_fn authenticate; /* connect */
} proxy_op;

static proxy_op *proxy_op_new(hr_conn *c, hr_result_cb cb, void *ud)
{
    proxy_op *p = hr_calloc(1, sizeof(*p));
    p->base = (op){cb, ud, c};
    hr_conn_ref(c);
    return p;
}

static void proxy_op_free(proxy_op *p)
{
    hr_conn_unref(p->base.c);
    free(p->channel);
    free(p->data);
    free(p);
}

/* Is c still there to act for? */
static int conn_live(const hr_conn *c)
{
    return c->wsi && !c->close_code;
}

/* Starts a call of rq on w's proxy client with the forwarded headers fwd;
 * fn gets the answer (now, with UNAVAILABLE, when the call could not
 * start). */
static void proxy_call(hr_worker *w, const hr_proxy_request *rq, const hr_proxy_headers *fwd,
                       hr_proxy_done_cb fn, void *ud)
{
    hr_proxy_answer now = {0};
    if (!w->proxy)
        hr_proxy_unavailable(&now, "no proxy is configured");
    else if (hr_proxy_call_start(w->proxy, rq, fwd, fn, ud, &now))
        return;
    fn(ud, &now);
    hr_proxy_answer_clear(&now);
}

/* Starts a call of rq for c (named by its client id). */
static void proxy_start(hr_conn *c, hr_proxy_request *rq, hr_proxy_done_cb fn, proxy_op *p)
{
    char client[160];
    hr_conn_client_id(c, client, sizeof(client));
    rq->client = client;
    proxy_call(c->w, rq, c->fwd, fn, p);
}

/* An answer other than a result ends the operation: a backend's error with
 * its code, a disconnect closes c (nothing to answer), else unavailable. */
static void proxy_refused(proxy_op *p, const hr_proxy_answer *a)
{
    hr_result r = {.err = -EAGAIN, .message = backend_unavailable};
    if (a->outcome == HR_PROXY_ERROR) {
        r = (hr_result){.err = -EACCES, .code = a->code, .message = a->message};
    } else if (a->outcome == HR_PROXY_DISCONNECT) {
        r = (hr_result){.err = -ECANCELED, .message = "disconnected"};
        hr_conn_close_copy(p->base.c, a->close_code, a->reason, 1);
    }
    p->base.cb(p->base.ud, &r);
}

/* Whether answer a ended p's operation, answered here: its connection is
 * gone ("closed"), or a is no result (proxy_refused). Else the caller
 * carries on with a's result. */
static int proxy_ended(proxy_op *p, const hr_proxy_answer *a)
{
    if (!conn_live(p->base.c)) {
        done(p->base.cb, p->base.ud, -ECANCELED, "closed", NULL);
        return 1;
    }
    if (a->outcome != HR_PROXY_RESULT) {
        proxy_refused(p, a);
        return 1;
    }
    return 0;
}

/*---- subscribe ----*/

static void subscribe_answered(void *ud, hr_proxy_answer *a)
{
    proxy_op *p = ud;
    hr_conn *c = p->base.c;
    if (proxy_ended(p, a)) {
        /* answered */
    } else if (hr_conn_sub_get(c, p->channel)) {
        json_t *r = json_pack("{s:s}", "channel", p->channel); /* subscribed meanwhile */
        done(p->base.cb, p->base.ud, 0, NULL, r);
        json_decref(r);
    } else if (c->nsubs >= (size_t)c->w->node->cfg->max_subscriptions) {
        done(p->base.cb, p->base.ud, -E2BIG, "too many subscriptions on this connection", NULL);
    } else {
        op *o = hr_malloc(sizeof(*o));
        *o = (op){p->base.cb, p->base.ud, NULL};
        start_subscription(c, p->channel, p->has_since ? &p->since : NULL, o);
    }
    proxy_op_free(p);
}

static void subscribe_proxied(hr_conn *c, const char *channel, const chan_pos *since,
                              hr_result_cb cb, void *ud)
{
    proxy_op *p = proxy_op_new(c, cb, ud);
    p->channel = hr_strdup(channel);
    if (since) {
        p->since = *since;
        p->has_since = 1;
    }
    hr_proxy_request rq = {.kind = HR_PROXY_SUBSCRIBE, .user = c->id.sub, .channel = channel};
    proxy_start(c, &rq, subscribe_answered, p);
}

/*---- publish ----*/

static void publish_answered(void *ud, hr_proxy_answer *a)
{
    proxy_op *p = ud;
    hr_conn *c = p->base.c;
    if (proxy_ended(p, a)) {
        /* answered */
    } else if (a->data) { /* the backend's replacement */
        char *d = json_dumps(a->data, JSON_COMPACT | JSON_ENCODE_ANY);
        publish_now(c->w, c, p->channel, d, strlen(d), p->base.cb, p->base.ud);
        free(d);
    } else {
        publish_now(c->w, c, p->channel, p->data, p->len, p->base.cb, p->base.ud);
    }
    proxy_op_free(p);
}

static void publish_proxied(hr_conn *c, const char *channel, const char *data, size_t len,
                            hr_result_cb cb, void *ud)
{
    proxy_op *p = proxy_op_new(c, cb, ud);
    p->channel = hr_strdup(channel);
    p->data = hr_strndup(data, len);
    p->len = len;
    json_t *d = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    hr_proxy_request rq = {
        .kind = HR_PROXY_PUBLISH, .user = c->id.sub, .channel = channel, .data = d};
    proxy_start(c, &rq, publish_answered, p);
    json_decref(d);
}

/*---- rpc ----*/

static void rpc_answered(void *ud, hr_proxy_answer *a)
{
    proxy_op *p = ud;
    if (!proxy_ended(p, a)) {
        json_t *r = json_pack("{s:O}", "data", a->data ? a->data : json_null());
        done(p->base.cb, p->base.ud, 0, NULL, r);
        json_decref(r);
    }
    proxy_op_free(p);
}

void hr_api_rpc(hr_conn *c, const char *method, const json_t *data, hr_result_cb cb, void *ud)
{
    if (!hr_proxy_url(c->w->node->cfg, HR_PROXY_RPC, method)) {
        done(cb, ud, -ENOENT, "no RPC proxy serves this method", NULL);
        return;
    }
    proxy_op *p = proxy_op_new(c, cb, ud);
    hr_proxy_request rq = {.kind = HR_PROXY_RPC, .user = c->id.sub, .method = method, .data = data};
    proxy_start(c, &rq, rpc_answered, p);
}

/*---- connect ----*/

int hr_api_connect_proxied(hr_worker *w, const char *token)
{
    const hr_config *cfg = w->node->cfg;
    return cfg->proxy_connect_url && (!token || hr_creds_proxy_decides(cfg));
}

static void connect_answered(void *ud, hr_proxy_answer *a)
{
    proxy_op *p = ud;
    hr_conn *c = p->base.c;
    auth_identity id = {0};
    c->proxy_busy = 0;
    if (!conn_live(c)) {
        done(p->base.cb, p->base.ud, -ECANCELED, "closed", NULL);
    } else if (a->outcome == HR_PROXY_ERROR) {
        proxy_refused(p, a);
        hr_conn_close(c, 4003, "disconnected by the server", 1);
    } else if (a->outcome != HR_PROXY_RESULT) {
        proxy_refused(p, a);
        hr_conn_close(c, 1013, "try again later", 1); /* no-op after a disconnect */
    } else if (hr_proxy_answer_identity(a, &id) < 0 ||
               hr_conn_user_slot(c->w->node, id.sub, &c->user_slot) < 0) {
        auth_identity_clear(&id);
        done(p->base.cb, p->base.ud, -EUSERS, "too many connections for this user", NULL);
        hr_conn_close(c, 4029, "too many connections", 1);
    } else {
        char client[160];
        p->authenticate(c, &id); /* the `connected` push goes first */
        c->proxy_authed = 1;
        hr_conn_client_id(c, client, sizeof(client));
        json_t *r = json_pack("{s:s, s:s, s:o}", "client", client, "user", c->id.sub, "expires_at",
                              c->id.exp > 0 ? json_integer(c->id.exp) : json_null());
        done(p->base.cb, p->base.ud, 0, NULL, r);
        json_decref(r);
        /* server-side subscriptions: `subscribed` pushes when the layer answers */
        for (size_t i = 0; i < a->nchannels && conn_live(c); i++) {
            const char *ch = a->channels[i];
            if (!hr_conn_sub_get(c, ch))
                start_subscription(c, ch, NULL, SERVER_JOIN);
        }
    }
    proxy_op_free(p);
}

void hr_api_connect(hr_conn *c, const json_t *data, hr_authenticate_fn authenticate,
                    hr_result_cb cb, void *ud)
{
    if (c->proxy_busy) {
        done(cb, ud, -EINVAL, "a connect is in progress", NULL);
        return;
    }
    proxy_op *p = proxy_op_new(c, cb, ud);
    p->authenticate = authenticate;
    c->proxy_busy = 1;
    hr_conn_number(c); /* the call names the client */
    hr_proxy_request rq = {.kind = HR_PROXY_CONNECT,
                           .transport = c->ops->transport,
                           .remote_addr = c->remote_addr ? c->remote_addr : "",
                           .data = data};
    proxy_start(c, &rq, connect_answered, p);
}

void hr_api_connect_ask(hr_worker *w, uint64_t client_n, const char *transport,
                        const char *remote_addr, const hr_proxy_headers *fwd, hr_proxy_done_cb fn,
                        void *ud)
{
    char client[160];
    hr_node_client_id(w->node, client_n, client, sizeof(client));
    hr_proxy_request rq = {.kind = HR_PROXY_CONNECT,
                           .client = client,
                           .transport = transport,
                           .remote_addr = remote_addr ? remote_addr : ""};
    proxy_call(w, &rq, fwd, fn, ud);
}

/*---- refresh ----*/

/* Tried again after a refresh the backend could not answer: the
 * connection stands meanwhile (a backend outage does not log everyone
 * out). */
#define HR_REFRESH_RETRY_S 10

static void refresh_answered(void *ud, hr_proxy_answer *a)
{
    proxy_op *p = ud;
    hr_conn *c = p->base.c;
    c->proxy_busy = 0;
    if (!conn_live(c)) {
        ;
    } else if (a->outcome == HR_PROXY_RESULT && !a->expired) {
        c->id.exp = a->expire_at; /* 0: for good */
        hr_conn_rearm(c);
    } else if (a->outcome == HR_PROXY_RESULT || a->outcome == HR_PROXY_ERROR) {
        hr_conn_close(c, 4001, "token expired", 1);
    } else if (a->outcome == HR_PROXY_DISCONNECT) {
        hr_conn_close_copy(c, a->close_code, a->reason, 1);
    } else {
        hr_conn_arm(c, HR_REFRESH_RETRY_S);
    }
    proxy_op_free(p);
}

void hr_api_deadline(hr_conn *c)
{
    const hr_config *cfg = c->w->node->cfg;
    if (!c->authed || !c->proxy_authed || !cfg->proxy_refresh_url || c->id.exp <= 0 ||
        (int64_t)time(NULL) < c->id.exp) {
        hr_conn_deadline(c);
        return;
    }
    if (c->proxy_busy)
        return; /* its answer re-arms */
    c->proxy_busy = 1;
    proxy_op *p = proxy_op_new(c, NULL, NULL);
    hr_proxy_request rq = {.kind = HR_PROXY_REFRESH, .user = c->id.sub};
    proxy_start(c, &rq, refresh_answered, p);
}
