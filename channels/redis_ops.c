/*
 * redis_ops.c - publish, history and presence reads of the Redis layer, on
 * the caller's loop thread: each goes out on that loop's own connection to
 * the channel's shard (redis_loop.c) and is answered there. See
 * redis_internal.h.
 */
#include "redis_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef rd_req req;
#define req_new rd_req_new
#define req_done rd_req_done

/*---- Publish ---------------------------------------------------------------------*/

typedef struct pub_req {
    req q;
    shard *sh;
    int history;
} pub_req;

static void publish_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    pub_req *p = priv;
    chan_publish_cb cb = (chan_publish_cb)(void (*)(void))p->q.cb;
    int status = 0;
    uint64_t offset = 0;
    (void)conn, (void)err;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        status = -EAGAIN;
        if (!rd_reply_check(p->sh, r))
            rd_log_reply_error(p->q.lp->L, "publish", r);
    } else if (r->type == REDIS_REPLY_INTEGER && p->history) {
        offset = r->integer > 0 ? (uint64_t)r->integer : 0;
    }
    if (req_done(&p->q) && cb)
        cb(p->q.ud, status, offset, 0);
    free(p);
}

void rd_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const char *data_json, size_t data_len, const char *from, chan_publish_cb cb,
                void *ud)
{
    redis_layer *L = rd_layer(l);
    rd_loop *lp = &L->loops[thread];
    shard *sh = rd_shard_of(L, channel);
    size_t clen = strlen(channel);
    uint64_t h = chan_hash(channel, clen); /* once for the whole way */
    if (!rd_route_up(lp, sh, channel)) {
        if (o->history_size) {
            if (cb)
                cb(ud, -EAGAIN, 0, 0);
        } else { /* this node's subscribers only */
            chan_msg *m = chan_msg_publication_h(channel, h, data_json, data_len, 0, from);
            chan_dispatch(l, m);
            chan_msg_unref(m);
            if (cb)
                cb(ud, 0, 0, 1);
        }
        return;
    }
    pub_req *p = (pub_req *)req_new(lp, (void *)cb, ud, sizeof(*p));
    /* the text Redis will publish (for history channels: without the
     * offset it will insert), built once: kept for its way back when this
     * node has subscribers (redis_own.c), before it is sent */
    int history = o->history_size > 0, local = chan_channel_mask(l, channel, h) != 0;
    chan_msg *m =
        !history || local ? chan_msg_publication_h(channel, h, data_json, data_len, 0, from) : NULL;
    int rc;
    p->history = history;
    p->sh = sh;
    if (local)
        rd_own_push(&L->own[lp->index * (unsigned)L->nshards + (unsigned)sh->index], m,
                    history ? (uint32_t)chan_publication_offset_at(clen, data_len) : 0);
    if (p->history) {
        const char *argv[8];
        size_t lens[8];
        char *key;
        int argc = rd_fcall(L, argv, L->f_publish, channel, &key);
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        lens[argc] = clen;
        argv[argc++] = channel;
        lens[argc] = data_len;
        argv[argc++] = data_json;
        if (from) {
            lens[argc] = strlen(from);
            argv[argc++] = from;
        }
        rc = rd_lconn_cmd(lp, sh, channel, publish_reply, p, argc, argv, lens);
        free(key);
    } else {
        char *topic = rd_topic(L, channel);
        const char *cmd = rd_publish_cmd(L);
        const char *argv[3] = {cmd, topic, chan_msg_payload(m)};
        size_t lens[3] = {strlen(cmd), strlen(topic), m->len};
        rc = rd_lconn_cmd(lp, sh, channel, publish_reply, p, 3, argv, lens);
        free(topic);
    }
    chan_msg_unref(m);
    if (rc < 0) {
        req_done(&p->q);
        free(p);
        if (cb)
            cb(ud, rc, 0, 0);
    }
}

/*---- History ---------------------------------------------------------------------*/

/* A read: its shard, for READONLY. */
typedef struct read_req {
    req q;
    shard *sh;
} read_req;

static void history_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    req *q = priv;
    chan_history h = {0};
    chan_pub *pubs = NULL;
    (void)conn, (void)err;
    if (!rd_reply_check(((read_req *)q)->sh, r))
        rd_log_reply_error(q->lp->L, "history read", r);
    if (rd_parse_history(r, &h.top, &pubs, &h.npubs) < 0)
        h.status = -EAGAIN;
    h.pubs = pubs;
    if (req_done(q))
        ((chan_history_cb)(void (*)(void))q->cb)(q->ud, &h);
    rd_pubs_free(pubs, h.npubs);
    free(q);
}

void rd_history(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud)
{
    redis_layer *L = rd_layer(l);
    rd_loop *lp = &L->loops[thread];
    shard *sh = rd_shard_of(L, channel);
    chan_history fail = {.status = -EAGAIN};
    if (limit < 0 || limit > o->history_size)
        limit = o->history_size;
    if (!rd_route_up(lp, sh, channel)) {
        cb(ud, &fail);
        return;
    }
    read_req *rq = (read_req *)req_new(lp, (void *)cb, ud, sizeof(*rq));
    req *q = &rq->q;
    rq->sh = sh;
    rd_history_args a;
    rd_history_argv(L, &a, channel, since ? (int64_t)since->offset : -1, limit, 0, NULL);
    int rc = rd_lconn_cmd(lp, sh, channel, history_reply, q, a.argc, a.argv, NULL);
    rd_history_args_free(&a);
    if (rc < 0) {
        req_done(q);
        free(rq);
        cb(ud, &fail);
    }
}

/*---- Presence --------------------------------------------------------------------*/

static void presence_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    req *q = priv;
    chan_presence p = {0};
    hr_buf b = {0};
    (void)conn, (void)err;
    if (!rd_reply_check(((read_req *)q)->sh, r))
        rd_log_reply_error(q->lp->L, "presence read", r);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        p.status = -EAGAIN;
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
        p.clients = b.data;
        p.len = b.len;
    }
    if (req_done(q))
        ((chan_presence_cb)(void (*)(void))q->cb)(q->ud, &p);
    hr_buf_reset(&b);
    free(q);
}

void rd_presence(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                 chan_presence_cb cb, void *ud)
{
    redis_layer *L = rd_layer(l);
    rd_loop *lp = &L->loops[thread];
    shard *sh = rd_shard_of(L, channel);
    chan_presence fail = {.status = -EAGAIN};
    (void)o;
    if (!rd_route_up(lp, sh, channel)) {
        cb(ud, &fail);
        return;
    }
    read_req *rq = (read_req *)req_new(lp, (void *)cb, ud, sizeof(*rq));
    req *q = &rq->q;
    rq->sh = sh;
    const char *argv[6];
    char *key;
    int argc = rd_fcall(L, argv, L->f_presence, channel, &key);
    argv[argc++] = channel;
    int rc = rd_lconn_cmd(lp, sh, channel, presence_reply, q, argc, argv, NULL);
    free(key);
    if (rc < 0) {
        req_done(q);
        free(rq);
        cb(ud, &fail);
    }
}
