/*
 * rest_channels.c - the backend's channel routes (SPEC §4): publish and
 * broadcast, server-side membership (Django Channels' group_add and
 * group_discard), presence, history, and disconnecting a user's sockets.
 */
#include "gateway/rest.h"
#include "common/log.h"
#include "gateway/proto.h"
#include "gateway/ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Publish and broadcast --------------------------------------------------*/

/* The channel's options; counts the publication for its namespace. */
static chan_opts publish_opts(hr_http_req *req, const char *channel)
{
    const auth_namespace *ns = hr_config_namespace(req->node->cfg, channel);
    HR_ADD1(&req->w->stats.ns_publications[hr_ns_index(req->node->cfg, ns)], 1);
    return hr_chan_opts(ns);
}

static json_t *publish_result(int status, uint64_t offset, int local_only)
{
    if (status < 0)
        return json_pack("{s:s, s:s}", "code", HR_ERR_UNAVAILABLE, "message",
                         "the channel layer is unavailable");
    json_t *o = json_object();
    if (offset)
        json_object_set_new(o, "offset", json_integer((json_int_t)offset));
    if (local_only)
        json_object_set_new(o, "local_only", json_true());
    return o;
}

static void publish_done(void *ud, int status, uint64_t offset, int local_only)
{
    hr_http_req *req = ud;
    if (status < 0) {
        req->retry_after = 1;
        hr_http_problem(req, 503, "the channel layer is unavailable");
    } else {
        json_t *r = publish_result(status, offset, local_only);
        hr_http_respond_json(req, 200, r);
        json_decref(r);
    }
    hr_http_unref(req);
}

void hr_rest_publish(hr_http_req *req)
{
    char err[128];
    json_t *o = hr_rest_body(req);
    if (!o)
        return;
    const char *channel =
        hr_rest_channel_member(req, json_object_get(o, "channel"), err, sizeof(err));
    json_t *data = json_object_get(o, "data");
    char *text = channel && data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!channel || !data) {
        hr_http_problem(req, 422, !channel ? err : "missing \"data\"");
    } else if (hr_json_too_deep(data, HR_MAX_DATA_DEPTH)) {
        hr_http_problem(req, 400, "\"data\" nests deeper than 64 levels");
    } else {
        chan_opts co = publish_opts(req, channel);
        hr_http_ref(req);
        chan_publish(req->node->layer, req->w->index, channel, &co, text, strlen(text), NULL,
                     publish_done, req);
    }
    free(text);
    json_decref(o);
}

/* A broadcast completes when every channel's publish has. */
typedef struct broadcast {
    hr_http_req *req;
    json_t *responses; /* array, one entry per channel, filled in order */
    size_t pending;
} broadcast;

typedef struct broadcast_item {
    broadcast *b;
    size_t index;
} broadcast_item;

static void broadcast_finish(broadcast *b)
{
    json_t *o = json_pack("{s:O}", "responses", b->responses);
    hr_http_respond_json(b->req, 200, o);
    json_decref(o);
    json_decref(b->responses);
    hr_http_unref(b->req);
    free(b);
}

static void broadcast_done(void *ud, int status, uint64_t offset, int local_only)
{
    broadcast_item *it = ud;
    broadcast *b = it->b;
    json_t *entry = json_array_get(b->responses, it->index);
    json_object_set_new(entry, status < 0 ? "error" : "result",
                        publish_result(status, offset, local_only));
    free(it);
    if (--b->pending == 0)
        broadcast_finish(b);
}

/* Publishes to one channel, or records why not. */
static void broadcast_one(broadcast *b, size_t i, json_t *ch, const char *text)
{
    char err[128];
    const char *channel = hr_rest_channel_member(b->req, ch, err, sizeof(err));
    json_t *entry = json_object();
    json_array_append_new(b->responses, entry);
    if (json_is_string(ch))
        json_object_set(entry, "channel", ch);
    if (!channel) {
        json_object_set_new(entry, "error",
                            json_pack("{s:s, s:s}", "code", HR_ERR_BAD_REQUEST, "message", err));
        return;
    }
    broadcast_item *it = hr_malloc(sizeof(*it));
    *it = (broadcast_item){b, i};
    b->pending++;
    chan_opts co = publish_opts(b->req, channel);
    chan_publish(b->req->node->layer, b->req->w->index, channel, &co, text, strlen(text), NULL,
                 broadcast_done, it);
}

void hr_rest_broadcast(hr_http_req *req)
{
    json_t *o = hr_rest_body(req);
    if (!o)
        return;
    json_t *chans = json_object_get(o, "channels"), *data = json_object_get(o, "data");
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    broadcast *b = NULL;
    if (!json_is_array(chans) || json_array_size(chans) == 0 || json_array_size(chans) > 1000) {
        hr_http_problem(req, 422, "\"channels\" must be an array of 1 to 1000 channel names");
    } else if (!data) {
        hr_http_problem(req, 422, "missing \"data\"");
    } else if (hr_json_too_deep(data, HR_MAX_DATA_DEPTH)) {
        hr_http_problem(req, 400, "\"data\" nests deeper than 64 levels");
    } else {
        b = hr_calloc(1, sizeof(*b));
        b->responses = json_array();
        b->req = req;
        hr_http_ref(req);
        b->pending = 1; /* held until every channel is started */
        for (size_t i = 0; i < json_array_size(chans); i++)
            broadcast_one(b, i, json_array_get(chans, i), text);
        if (--b->pending == 0)
            broadcast_finish(b);
    }
    free(text);
    json_decref(o);
}

/*---- Membership, disconnects -----------------------------------------------*/

/* The answer to a control message sent to every node. */
static void control_done(void *ud, int status)
{
    hr_http_req *req = ud;
    if (status < 0) {
        req->retry_after = 1;
        hr_http_problem(req, 503, "the channel layer is unavailable");
    } else {
        hr_http_respond(req, 204, "application/json", "", 0);
    }
    hr_http_unref(req);
}

/* Every loop of every node closes the user's sockets on its own thread. */
void hr_rest_user_disconnect(hr_http_req *req)
{
    chan_control c = {.op = CHAN_CTL_DISCONNECT, .user = req->params[0], .code = 4003};
    hr_info("disconnect", "user %s: disconnecting every connection", req->params[0]);
    hr_http_ref(req);
    chan_control_send(req->node->layer, req->w->index, &c, control_done, req);
}

static void member_control(hr_http_req *req, chan_control_op op, const char *channel,
                           const char *user)
{
    chan_control c = {.op = op, .user = user, .channel = channel};
    hr_http_ref(req);
    chan_control_send(req->node->layer, req->w->index, &c, control_done, req);
}

/* Django Channels' group_add: every connection of the user, on every node,
 * joins the channel. */
void hr_rest_member_add(hr_http_req *req)
{
    const char *channel = hr_rest_path_channel(req);
    json_t *o = channel ? hr_rest_body(req) : NULL;
    if (!o)
        return;
    const char *user = json_string_value(json_object_get(o, "user"));
    if (!user || !*user || strlen(user) > 255 ||
        strlen(user) != json_string_length(json_object_get(o, "user")))
        hr_http_problem(req, 422, "\"user\" must be a user id (a non-empty string)");
    else
        member_control(req, CHAN_CTL_MEMBER_ADD, channel, user);
    json_decref(o);
}

void hr_rest_member_remove(hr_http_req *req)
{
    const char *channel = hr_rest_path_channel(req);
    if (channel)
        member_control(req, CHAN_CTL_MEMBER_REMOVE, channel, req->params[1]);
}

/*---- Presence and history -------------------------------------------------*/

static void read_problem(hr_http_req *req, int status, const char *what)
{
    char detail[128];
    if (status == -ENOENT) {
        snprintf(detail, sizeof(detail), "%s is not enabled for this channel's namespace", what);
        hr_http_problem(req, 404, detail);
    } else {
        req->retry_after = 1;
        hr_http_problem(req, 503, "the channel layer is unavailable");
    }
}

static void presence_done(void *ud, const chan_presence *p)
{
    hr_http_req *req = ud;
    if (p->status < 0) {
        read_problem(req, p->status, "presence");
    } else {
        json_t *clients = json_loadb(p->clients, p->len, 0, NULL);
        json_t *o = json_pack("{s:o}", "clients", clients ? clients : json_array());
        hr_http_respond_json(req, 200, o);
        json_decref(o);
    }
    hr_http_unref(req);
}

void hr_rest_presence(hr_http_req *req)
{
    const char *channel = hr_rest_path_channel(req);
    if (!channel)
        return;
    chan_opts co = hr_chan_opts(hr_config_namespace(req->node->cfg, channel));
    hr_http_ref(req);
    chan_presence_read(req->node->layer, req->w->index, channel, &co, presence_done, req);
}

static void history_done(void *ud, const chan_history *h)
{
    hr_http_req *req = ud;
    if (h->status < 0) {
        read_problem(req, h->status, "history");
    } else {
        json_t *o = hr_ws_history_json(h);
        hr_http_respond_json(req, 200, o);
        json_decref(o);
    }
    hr_http_unref(req);
}

/* ?limit=N&since=OFFSET&epoch=E, as the history op's arguments. */
void hr_rest_history(hr_http_req *req)
{
    char ebuf[CHAN_EPOCH_MAX + 8];
    uint64_t limit = 0;
    chan_pos since = {0};
    const char *channel = hr_rest_path_channel(req);
    if (!channel)
        return;
    int has_limit = hr_http_query_uint(req, "limit=", &limit);
    int has_since = hr_http_query_uint(req, "since=", &since.offset);
    if (has_limit == -EINVAL || has_since == -EINVAL || limit > 1000000) {
        hr_http_problem(req, 422, "limit and since must be non-negative integers");
        return;
    }
    const char *epoch =
        req->wsi ? lws_get_urlarg_by_name(req->wsi, "epoch=", ebuf, sizeof(ebuf)) : NULL;
    if (epoch)
        snprintf(since.epoch, sizeof(since.epoch), "%s", epoch);
    chan_opts co = hr_chan_opts(hr_config_namespace(req->node->cfg, channel));
    hr_http_ref(req);
    chan_history_read(req->node->layer, req->w->index, channel, &co, has_since == 0 ? &since : NULL,
                      has_limit == 0 ? (int64_t)limit : -1, history_done, req);
}
