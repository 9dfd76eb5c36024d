/*
 * rest_channels.c - the backend's channel routes (SPEC §4): publish and
 * broadcast, server-side membership (Django Channels' group_add and
 * group_discard), presence, history, and disconnecting a user's sockets.
 * Each is the REST form of an operation of api.h.
 */
#include "gateway/rest.h"
#include "gateway/api.h"
#include "gateway/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Publish and broadcast --------------------------------------------------*/

/* The body's "data" as JSON text (malloc'ed), or NULL after answering
 * 422/400. */
static char *body_data(hr_http_req *req, json_t *o)
{
    json_t *data = json_object_get(o, "data");
    if (!data) {
        hr_http_problem(req, 422, "missing \"data\"");
        return NULL;
    }
    if (hr_json_too_deep(data, HR_MAX_DATA_DEPTH)) {
        _Static_assert(HR_MAX_DATA_DEPTH == 64, "the problem detail says 64");
        hr_http_problem(req, 400, "\"data\" nests deeper than 64 levels");
        return NULL;
    }
    return json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
}

void hr_rest_publish(hr_http_req *req)
{
    char err[128];
    json_t *o = hr_rest_body(req);
    if (!o)
        return;
    const char *channel =
        hr_rest_channel_member(req, json_object_get(o, "channel"), err, sizeof(err));
    char *text = NULL;
    if (!channel)
        hr_http_problem(req, 422, err);
    else if ((text = body_data(req, o)) != NULL)
        hr_api_publish(req->w, NULL, channel, text, strlen(text), hr_rest_answer,
                       hr_rest_hold(req));
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

static void broadcast_done(void *ud, const hr_result *r)
{
    broadcast_item *it = ud;
    broadcast *b = it->b;
    json_t *entry = json_array_get(b->responses, it->index);
    if (r->err)
        json_object_set_new(entry, "error", hr_result_error_json(r));
    else
        json_object_set(entry, "result", r->value);
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
        hr_result bad = {.err = -EINVAL, .message = err};
        json_object_set_new(entry, "error", hr_result_error_json(&bad));
        return;
    }
    broadcast_item *it = hr_malloc(sizeof(*it));
    *it = (broadcast_item){b, i};
    b->pending++;
    hr_api_publish(b->req->w, NULL, channel, text, strlen(text), broadcast_done, it);
}

void hr_rest_broadcast(hr_http_req *req)
{
    json_t *o = hr_rest_body(req);
    if (!o)
        return;
    json_t *chans = json_object_get(o, "channels");
    char *text = NULL;
    if (!json_is_array(chans) || json_array_size(chans) == 0 || json_array_size(chans) > 1000) {
        hr_http_problem(req, 422, "\"channels\" must be an array of 1 to 1000 channel names");
    } else if ((text = body_data(req, o)) != NULL) {
        broadcast *b = hr_calloc(1, sizeof(*b));
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

void hr_rest_user_disconnect(hr_http_req *req)
{
    hr_api_disconnect(req->w, req->params[0], hr_rest_answer, hr_rest_hold(req));
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
        hr_api_members(req->w, CHAN_CTL_MEMBER_ADD, channel, user, hr_rest_answer,
                       hr_rest_hold(req));
    json_decref(o);
}

void hr_rest_member_remove(hr_http_req *req)
{
    const char *channel = hr_rest_path_channel(req);
    if (channel)
        hr_api_members(req->w, CHAN_CTL_MEMBER_REMOVE, channel, req->params[1], hr_rest_answer,
                       hr_rest_hold(req));
}

/*---- Presence and history -------------------------------------------------*/

void hr_rest_presence(hr_http_req *req)
{
    const char *channel = hr_rest_path_channel(req);
    if (channel)
        hr_api_presence(req->w, NULL, channel, hr_rest_answer, hr_rest_hold(req));
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
    hr_api_history(req->w, NULL, channel, has_since == 0 ? &since : NULL,
                   has_limit == 0 ? (int64_t)limit : -1, hr_rest_answer, hr_rest_hold(req));
}
