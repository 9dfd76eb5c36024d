/*
 * redis_ops.c - publish, history and presence reads of the Redis layer: a
 * request from a loop thread runs on the home thread and is answered back
 * on its own. See redis_internal.h.
 */
#include "redis_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Publish, reads, control ---------------------------------------------------*/

static void publish_answer(home_task *t)
{
    chan_publish_cb cb = (chan_publish_cb)(void (*)(void))t->cb;
    if (cb)
        cb(t->ud, t->status, t->offset, t->local_only);
}

static void publish_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    home_task *t = priv;
    (void)conn, (void)err;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        t->status = -EAGAIN;
        rd_log_reply_error(t->L, "publish", r);
    } else if (r->type == REDIS_REPLY_INTEGER) {
        t->offset = r->integer > 0 ? (uint64_t)r->integer : 0;
    }
    if (!t->opts.history_size)
        t->offset = 0;
    rd_to_caller(t->L, t);
}

static void home_publish(redis_layer *L, home_task *t)
{
    shard *sh = rd_shard_of(L, t->channel);
    if (!sh->up) {
        if (t->opts.history_size) {
            t->status = -EAGAIN;
        } else { /* this node's subscribers only */
            chan_msg *m = chan_msg_publication(t->channel, t->data, t->len, 0, t->from);
            chan_dispatch(&L->base, m);
            chan_msg_unref(m);
            t->local_only = 1;
        }
        rd_to_caller(L, t);
        return;
    }
    int rc;
    if (t->opts.history_size) {
        char *fn;
        if (asprintf(&fn, "%s_publish", L->fn) < 0)
            abort();
        const char *argv[6] = {"FCALL", fn, "0", t->channel, t->data, t->from};
        size_t lens[6] = {
            5, strlen(fn), 1, strlen(t->channel), t->len, t->from ? strlen(t->from) : 0};
        rc = rd_cmd(sh, publish_reply, t, t->from ? 6 : 5, argv, lens);
        free(fn);
    } else {
        size_t len;
        char *text = chan_publication_text(t->channel, t->data, t->len, 0, t->from, &len);
        char *topic = rd_topic(L, t->channel);
        const char *argv[3] = {"PUBLISH", topic, text};
        size_t lens[3] = {7, strlen(topic), len};
        rc = rd_cmd(sh, publish_reply, t, 3, argv, lens);
        free(topic);
        free(text);
    }
    if (rc < 0) {
        t->status = -EAGAIN;
        rd_to_caller(L, t);
    }
}

void rd_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const char *data_json, size_t data_len, const char *from, chan_publish_cb cb,
                void *ud)
{
    redis_layer *L = rd_layer(l);
    home_task *t =
        rd_channel_request(L, thread, home_publish, publish_answer, (void *)cb, ud, channel, o);
    t->data = hr_strndup(data_json, data_len);
    t->len = data_len;
    t->from = from ? hr_strdup(from) : NULL;
    rd_to_home(L, t);
}

static void history_answer(home_task *t)
{
    t->hist.pubs = t->pubs;
    ((chan_history_cb)(void (*)(void))t->cb)(t->ud, &t->hist);
}

static void history_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    home_task *t = priv;
    (void)conn, (void)err;
    rd_log_reply_error(t->L, "history read", r);
    if (rd_parse_history(r, &t->hist.top, &t->pubs, &t->hist.npubs) < 0)
        t->hist.status = -EAGAIN;
    rd_to_caller(t->L, t);
}

static void home_history(redis_layer *L, home_task *t)
{
    shard *sh = rd_shard_of(L, t->channel);
    int64_t limit = t->limit;
    if (limit < 0 || limit > t->opts.history_size)
        limit = t->opts.history_size;
    if (!sh->up || rd_send_history(L, sh, t->channel, t->has_since ? (int64_t)t->since.offset : -1,
                                   limit, history_reply, t) < 0) {
        t->hist.status = -EAGAIN;
        rd_to_caller(L, t);
    }
}

void rd_history(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud)
{
    redis_layer *L = rd_layer(l);
    home_task *t =
        rd_channel_request(L, thread, home_history, history_answer, (void *)cb, ud, channel, o);
    t->limit = limit;
    if (since) {
        t->has_since = 1;
        t->since = *since;
    }
    rd_to_home(L, t);
}

static void presence_answer(home_task *t)
{
    chan_presence p = {.status = t->status, .clients = t->text, .len = t->text_len};
    ((chan_presence_cb)(void (*)(void))t->cb)(t->ud, &p);
}

static void presence_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    home_task *t = priv;
    hr_buf b = {0};
    (void)conn, (void)err;
    rd_log_reply_error(t->L, "presence read", r);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        t->status = -EAGAIN;
    } else {
        hr_buf_append(&b, "[", 1);
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING)
                continue;
            if (b.len > 1)
                hr_buf_append(&b, ",", 1);
            hr_buf_append(&b, r->element[i]->str, r->element[i]->len);
        }
        hr_buf_append(&b, "]", 1);
        t->text = hr_strndup(b.data, b.len);
        t->text_len = b.len;
        hr_buf_reset(&b);
    }
    rd_to_caller(t->L, t);
}

static void home_presence(redis_layer *L, home_task *t)
{
    shard *sh = rd_shard_of(L, t->channel);
    char *fn;
    if (asprintf(&fn, "%s_presence", L->fn) < 0)
        abort();
    const char *argv[4] = {"FCALL", fn, "0", t->channel};
    if (!sh->up || rd_cmd(sh, presence_reply, t, 4, argv, NULL) < 0) {
        t->status = -EAGAIN;
        rd_to_caller(L, t);
    }
    free(fn);
}

void rd_presence(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                 chan_presence_cb cb, void *ud)
{
    redis_layer *L = rd_layer(l);
    rd_to_home(L, rd_channel_request(L, thread, home_presence, presence_answer, (void *)cb, ud,
                                     channel, o));
}
