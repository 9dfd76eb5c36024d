/*
 * stream_open.c - how an SSE or NDJSON stream opens (see stream.h): the
 * request's checks (credentials, channels and their namespace rules,
 * positions, limits), the connect proxy while the response head is still
 * unwritten, then the connection (stream.c) with its subscriptions. What
 * is refused before the head gets problem+json; after it, a close event.
 */
#include "gateway/stream_internal.h"
#include "common/log.h"
#include "gateway/api.h"
#include "gateway/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A subscription's answer: the `subscribed` event, then what was
 * recovered, as the messages they were. */
static void subscribed(void *ud, const hr_result *r)
{
    hr_conn *c = ud;
    if (r->err == -ECANCELED)
        return; /* the connection is going */
    if (r->err == -EACCES) {
        /* the subscribe proxy refused (the namespace rules allowed it
         * before the stream started): a stream's channels are all or
         * nothing, as they were then; 1013 would bring the client back
         * every `retry` to be refused again */
        hr_conn_close(c, 4003, "not allowed to subscribe", 1);
        return;
    }
    if (r->err) {
        /* the layer is unavailable: the client reconnects (retry) and
         * recovers then */
        hr_conn_close(c, 1013, "try again later", 1);
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
    hr_stream_send_push(c, o, ch, epoch && strlen(epoch) < CHAN_EPOCH_MAX ? epoch : NULL, pos);
    size_t i;
    json_array_foreach(pubs, i, v)
    {
        json_t *p = json_pack("{s:s, s:s, s:O, s:O}", "push", "message", "channel", ch, "data",
                              json_object_get(v, "data"), "offset", json_object_get(v, "offset"));
        json_t *from = json_object_get(v, "from");
        if (from)
            json_object_set(p, "from", from);
        hr_stream_send_push(c, p, ch, NULL, 0);
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
    if (hr_http_stream_start(req, sse ? "text/event-stream" : "application/x-ndjson",
                             has_origin ? origin : NULL) < 0) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        goto out;
    }
    /* the request is done with (freed when its last reference goes): from
     * here on, the connection */
    hr_conn *c = hr_stream_conn_new(w, wsi, sse, cfg->tls_cert != NULL);
    c->addr_slot = v->addr_slot;
    c->user_slot = user_slot;
    c->client_n = v->client_n; /* 0: numbered when authenticated */
    c->fwd = v->fwd;
    c->remote_addr = v->remote_addr;
    c->proxy_authed = v->proxy_authed;
    v->addr_slot = user_slot = NULL;
    v->fwd = NULL;
    v->remote_addr = NULL;
    char client[160];
    size_t len = 0;
    hr_conn_authenticate(c, &req->id); /* arms the deadline; herald.connect */
    hr_stream_conn_started(c);         /* the keep-alive and the probe */
    hr_conn_client_id(c, client, sizeof(client));
    char *cj = hr_proto_connected(client, c->id.sub ? c->id.sub : "", c->id.exp, &len);
    hr_conn_send_text(c, cj, len);
    free(cj);
    hr_debug("connected", "client %s user %s (%s)", client, c->id.sub ? c->id.sub : "",
             c->ops->transport);
    for (size_t it = 0; hr_map_next(chans, &it, &key, &klen, &val);) {
        const chan_pos *p = since ? hr_map_get(since, key, klen) : NULL;
        hr_api_subscribe(c, key, p, subscribed, c);
    }
    if (w->loop.shutting_down)
        hr_conn_close(c, 1001, "going away", 1);
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
    hr_api_connect_ask(w, p->client_n, hr_stream_transport(sse), p->remote_addr, p->fwd,
                       proxy_answered, p);
}

void hr_stream_sse(hr_http_req *req)
{
    stream_start(req, 1);
}

void hr_stream_ndjson(hr_http_req *req)
{
    stream_start(req, 0);
}
