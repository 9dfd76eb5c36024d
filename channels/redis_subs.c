/*
 * redis_subs.c - channels on Redis (home thread): one SUBSCRIBE per channel
 * per node, subscriptions completed once the channel is active (with the
 * stream position and, on request, what was missed), presence and
 * join/leave, incoming pushes, and recovery after an outage. See
 * redis_internal.h.
 */
#include "redis_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Channel state (home thread) --------------------------------------------*/

static void held_drop(rchan *c)
{
    for (size_t i = 0; i < c->nheld; i++)
        chan_msg_unref(c->held[i]);
    free(c->held);
    c->held = NULL;
    c->nheld = c->capheld = 0;
}

void rd_rchan_free(void *p)
{
    rchan *c = p;
    held_drop(c);
    hr_map_free(c->members);
    free(c->name);
    free(c);
}

static rchan *rchan_get(redis_layer *L, const char *channel, uint64_t h, int create)
{
    shard *sh = rd_shard_of(L, channel);
    size_t len = strlen(channel);
    rchan *c = chan_tab_get(&sh->channels, channel, len, h);
    if (!c && create) {
        c = hr_calloc(1, sizeof(*c));
        c->name = hr_strdup(channel);
        c->hash = h;
        c->sh = sh;
        c->members = hr_map_new(free);
        chan_tab_put(&sh->channels, channel, len, h, c);
    }
    return c;
}

/* Forgets a channel nobody wants once Redis has answered everything. */
static void rchan_maybe_drop(rchan *c)
{
    if (c->wanted || c->inflight || c->waiters || hr_map_count(c->members) || c->recovering)
        return;
    rd_rchan_free(chan_tab_del(&c->sh->channels, c->name, strlen(c->name), c->hash));
}

static void send_subscribe(rchan *c, int subscribe)
{
    shard *sh = c->sh;
    char *topic = rd_topic(sh->L, c->name);
    const char *argv[2] = {subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE", topic};
    if (rd_sub_cmd(sh, 2, argv) == 0) {
        c->on_redis = subscribe;
        c->inflight++;
        c->confirmed = 0;
    }
    free(topic);
}

/* Brings Redis in line with what the node wants. */
void rd_rchan_sync(rchan *c)
{
    if (!c->sh->up)
        return;
    if (c->wanted && !c->on_redis)
        send_subscribe(c, 1);
    else if (!c->wanted && c->on_redis)
        send_subscribe(c, 0);
}

/*---- Subscriptions -----------------------------------------------------------*/

struct sub_job {
    home_task t; /* t.channel, t.thread; answered on t.thread */
    chan_sub *s;
    atomic_int cancelled;
    char *user, *info;
    chan_sub_result r;
    sub_job *next;
};

static void sub_job_answer(home_task *t)
{
    sub_job *j = (sub_job *)t;
    chan_layer *l = &t->L->base;
    if (j->s->impl == j)
        j->s->impl = NULL;
    j->r.pubs = t->pubs;
    j->r.npubs = t->hist.npubs;
    chan_sub_complete(l, j->s, &j->r);
    chan_sub_release(j->s);
    free(j->user);
    free(j->info);
}

static void sub_job_discard(chan_task *ct)
{
    sub_job *j = (sub_job *)ct;
    /* the loop stopped: it freed its subscriptions' owners, not the
     * layer's records, which chan_layer_destroy frees */
    free(j->user);
    free(j->info);
    rd_home_discard(ct);
}

static char *presence_entry(const char *client, const char *user, const char *info)
{
    json_t *i = info ? json_loads(info, 0, NULL) : NULL;
    json_t *o = json_pack("{s:s, s:s, s:o}", "client", client, "user", user ? user : "", "info",
                          i ? i : json_object());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        abort();
    return s;
}

static void publish_topic(redis_layer *L, shard *sh, const char *channel, const char *text,
                          size_t len)
{
    char *topic = rd_topic(L, channel);
    const char *argv[3] = {"PUBLISH", topic, text};
    size_t lens[3] = {7, strlen(topic), len};
    rd_cmd(sh, NULL, NULL, 3, argv, lens);
    free(topic);
}

void rd_presence_send(redis_layer *L, rchan *c, const char *client, const char *entry)
{
    char ttl[16];
    char *fn;
    snprintf(ttl, sizeof(ttl), "%d", L->presence_ttl);
    if (asprintf(&fn, "%s_presence_set", L->fn) < 0)
        abort();
    const char *argv[7] = {"FCALL", fn, "0", c->name, ttl, client, entry};
    rd_cmd(c->sh, NULL, NULL, 7, argv, NULL);
    free(fn);
}

static void presence_del(redis_layer *L, rchan *c, const char *client)
{
    char *hk, *zk;
    hk = hr_redis_key(L->prefix, "presence", c->name);
    zk = hr_redis_key(L->prefix, "presence-exp", c->name);
    const char *a1[3] = {"HDEL", hk, client}, *a2[3] = {"ZREM", zk, client};
    rd_cmd(c->sh, NULL, NULL, 3, a1, NULL);
    rd_cmd(c->sh, NULL, NULL, 3, a2, NULL);
    free(hk);
    free(zk);
}

/* The subscription is complete on Redis' side: presence and join go out
 * before the answer travels, so the joiner's own `join` arrives after its
 * subscribe reply. */
static void sub_job_finish(redis_layer *L, rchan *c, sub_job *j)
{
    home_task *t = &j->t;
    if (j->r.status == 0 && !atomic_load(&j->cancelled) && t->client &&
        (t->opts.presence || t->opts.join_leave)) {
        size_t klen = strlen(t->client);
        char *entry = presence_entry(t->client, j->user, j->info);
        free(hr_map_del(c->members, t->client, klen));
        hr_map_put(c->members, t->client, klen, entry);
        if (t->opts.presence && c->sh->up)
            rd_presence_send(L, c, t->client, entry);
        if (t->opts.join_leave && c->sh->up) {
            size_t len;
            char *txt = chan_join_leave_text(1, c->name, t->client, j->user, &len);
            publish_topic(L, c->sh, c->name, txt, len);
            free(txt);
        }
    }
    t->task = (chan_task){rd_answer_run, sub_job_discard};
    rd_to_caller(L, t);
}

/* Parses an FCALL history reply: [epoch, top, offset, data, from, ...]
 * (from "" for a backend's publication). */
int rd_parse_history(const redisReply *r, chan_pos *top, chan_pub **pubs, size_t *n)
{
    *pubs = NULL;
    *n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || (r->elements - 2) % 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return -1;
    snprintf(top->epoch, sizeof(top->epoch), "%s", r->element[0]->str);
    top->offset = strtoull(r->element[1]->str, NULL, 10);
    size_t k = (r->elements - 2) / 3;
    *pubs = hr_calloc(k ? k : 1, sizeof(**pubs));
    for (size_t i = 0; i < k; i++) {
        const redisReply *o = r->element[2 + 3 * i], *d = r->element[3 + 3 * i],
                         *f = r->element[4 + 3 * i];
        if (o->type != REDIS_REPLY_STRING || d->type != REDIS_REPLY_STRING ||
            f->type != REDIS_REPLY_STRING) {
            rd_pubs_free(*pubs, *n);
            *pubs = NULL;
            *n = 0;
            return -1;
        }
        (*pubs)[i].offset = strtoull(o->str, NULL, 10);
        (*pubs)[i].data = hr_strndup(d->str, d->len);
        (*pubs)[i].from = f->len ? hr_strndup(f->str, f->len) : NULL;
        (*n)++;
    }
    return 0;
}

int rd_send_history(redis_layer *L, shard *sh, const char *channel, int64_t since, int64_t limit,
                    chan_rconn_reply_fn cb, void *priv)
{
    char *fn, s[24], lim[24];
    if (asprintf(&fn, "%s_history", L->fn) < 0)
        abort();
    snprintf(s, sizeof(s), "%lld", (long long)since);
    snprintf(lim, sizeof(lim), "%lld", (long long)limit);
    const char *argv[6] = {"FCALL", fn, "0", channel, s, lim};
    int rc = rd_cmd(sh, cb, priv, 6, argv, NULL);
    free(fn);
    return rc;
}

static void sub_history_reply(chan_rconn *conn, void *priv, const redisReply *reply,
                              const char *err)
{
    sub_job *j = priv;
    redis_layer *L = j->t.L;
    rchan *c = rchan_get(L, j->t.channel, j->t.hash, 0);
    (void)conn, (void)err;
    rd_log_reply_error(L, "history read", reply);
    j->r.history = 1;
    if (rd_parse_history(reply, &j->r.pos, &j->t.pubs, &j->t.hist.npubs) < 0) {
        j->r.status = -EAGAIN;
    } else {
        j->r.recovered =
            j->t.has_since && chan_recovered(&j->t.since, &j->r.pos, j->t.pubs, j->t.hist.npubs);
        if (c && !c->have_last) {
            c->last = j->r.pos; /* the node's baseline for recovery after an outage */
            c->have_last = 1;
        }
    }
    if (c)
        sub_job_finish(L, c, j);
    else
        rd_to_caller(L, &j->t); /* cannot happen: a waiting job keeps its channel */
}

/* The channel is active on Redis: answer at once, or read the stream. */
static void sub_job_proceed(redis_layer *L, rchan *c, sub_job *j)
{
    if (!j->t.opts.history_size) {
        sub_job_finish(L, c, j);
        return;
    }
    if (rd_send_history(L, c->sh, c->name, j->t.has_since ? (int64_t)j->t.since.offset : -1,
                        j->t.has_since ? (int64_t)c->opts.history_size : 0, sub_history_reply,
                        j) < 0) {
        j->r.status = -EAGAIN;
        sub_job_finish(L, c, j);
    }
}

/* While Redis is away a plain channel is served locally (and subscribed
 * again on reconnect); a history channel cannot give a position. */
static void sub_job_down(redis_layer *L, rchan *c, sub_job *j)
{
    j->r.status = j->t.opts.history_size ? -EAGAIN : 0;
    sub_job_finish(L, c, j);
}

static void home_subscribe(redis_layer *L, home_task *t)
{
    sub_job *j = (sub_job *)t;
    rchan *c = rchan_get(L, t->channel, t->hash, 1);
    if (!c->wanted) { /* cannot happen: the open was queued first */
        j->r.status = -EAGAIN;
        sub_job_finish(L, c, j);
        return;
    }
    c->opts = t->opts; /* every subscriber of a channel has its namespace's */
    if (!c->sh->up) {
        sub_job_down(L, c, j);
    } else if (c->confirmed) {
        sub_job_proceed(L, c, j);
    } else {
        j->next = c->waiters;
        c->waiters = j;
    }
}

void rd_run_waiters(redis_layer *L, rchan *c, int up)
{
    sub_job *j = c->waiters, *rev = NULL;
    c->waiters = NULL;
    while (j) { /* oldest first */
        sub_job *n = j->next;
        j->next = rev;
        rev = j;
        j = n;
    }
    for (j = rev; j;) {
        sub_job *n = j->next;
        if (up)
            sub_job_proceed(L, c, j);
        else
            sub_job_down(L, c, j);
        j = n;
    }
}

void rd_subscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    redis_layer *L = rd_layer(l);
    sub_job *j = hr_calloc(1, sizeof(*j));
    home_task *t = &j->t;
    t->task = (chan_task){rd_home_run, rd_home_discard};
    t->L = L;
    t->fn = home_subscribe;
    t->thread = thread;
    t->answer = sub_job_answer;
    t->channel = hr_strdup(s->channel);
    t->hash = s->hash;
    t->opts = s->opts;
    t->has_since = s->has_since;
    t->since = s->since;
    if (s->client) {
        t->client = hr_strdup(s->client);
        j->user = hr_strdup(s->user);
        j->info = s->info ? hr_strdup(s->info) : NULL;
    }
    atomic_init(&j->cancelled, 0);
    j->s = s;
    s->impl = j;
    chan_sub_hold(s);
    chan_inflight(l, thread, 1);
    rd_to_home(L, t);
}

/* On the subscriber's thread. Presence and leave are the home thread's. */
static void home_unsubscribe(redis_layer *L, home_task *t)
{
    rchan *c = rchan_get(L, t->channel, t->hash, 0);
    char *entry = c && t->client ? hr_map_del(c->members, t->client, strlen(t->client)) : NULL;
    if (entry) {
        if (t->opts.presence && c->sh->up)
            presence_del(L, c, t->client);
        if (t->opts.join_leave && c->sh->up) {
            json_t *o = json_loads(entry, 0, NULL);
            size_t len;
            char *txt = chan_join_leave_text(0, c->name, t->client,
                                             json_string_value(json_object_get(o, "user")), &len);
            publish_topic(L, c->sh, c->name, txt, len);
            free(txt);
            json_decref(o);
        }
        free(entry);
    }
    if (c)
        rchan_maybe_drop(c);
    rd_task_free(t);
}

void rd_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    redis_layer *L = rd_layer(l);
    (void)thread;
    sub_job *pending = s->impl;
    if (pending)
        atomic_store(&pending->cancelled, 1);
    if (!s->client)
        return;
    home_task *t = rd_home_task_new(L, home_unsubscribe);
    t->channel = hr_strdup(s->channel);
    t->hash = s->hash;
    t->client = hr_strdup(s->client);
    t->opts = s->opts;
    rd_to_home(L, t);
}

static void home_open(redis_layer *L, home_task *t)
{
    rchan *c = rchan_get(L, t->channel, t->hash, 1);
    c->wanted = 1;
    dj_channel_open(L->django, t->channel); /* first: see dj_bridge_up */
    rd_rchan_sync(c);
    rd_task_free(t);
}

static void home_close(redis_layer *L, home_task *t)
{
    rchan *c = rchan_get(L, t->channel, t->hash, 0);
    if (c) {
        c->wanted = 0;
        dj_channel_close(L->django, t->channel);
        c->have_last = 0;
        rd_rchan_sync(c);
        rchan_maybe_drop(c);
    }
    rd_task_free(t);
}

/* Under a registry stripe lock: only queue. */
void rd_channel_open(chan_layer *l, const char *channel, uint64_t h)
{
    home_task *t = rd_home_task_new(rd_layer(l), home_open);
    t->channel = hr_strdup(channel);
    t->hash = h;
    rd_to_home(rd_layer(l), t);
}

void rd_channel_close(chan_layer *l, const char *channel, uint64_t h)
{
    home_task *t = rd_home_task_new(rd_layer(l), home_close);
    t->channel = hr_strdup(channel);
    t->hash = h;
    rd_to_home(rd_layer(l), t);
}

/*---- Incoming pushes (home thread) ---------------------------------------------*/

static void deliver_push(redis_layer *L, rchan *c, chan_msg *m)
{
    if (m->offset) {
        if (c->have_last && m->offset <= c->last.offset)
            return; /* already delivered by a recovery read */
        c->last.offset = m->offset;
    }
    chan_dispatch(&L->base, m);
}

/* A message on channel's topic (channel: clen bytes, not NUL-terminated). */
static void on_message(redis_layer *L, shard *sh, const char *channel, size_t clen,
                       const char *payload, size_t len)
{
    char err[160];
    uint64_t h = chan_hash(channel, clen); /* once for the whole way */
    rchan *c = chan_tab_get(&sh->channels, channel, clen, h);
    if (!c || !c->wanted)
        return; /* a late message after UNSUBSCRIBE */
    chan_msg *m = chan_msg_parse_push_h(payload, len, c->name, h, err, sizeof(err));
    if (!m) {
        atomic_fetch_add(&L->bad_messages, 1);
        chan_log(&L->base, CHAN_LOG_WARN, "redis_bad_push",
                 "dropped a malformed push on %s:ch:%s: %s", L->prefix, c->name, err);
        return;
    }
    if (c->recovering) {
        if (c->nheld == c->capheld) {
            c->capheld = c->capheld ? c->capheld * 2 : 16;
            c->held = hr_realloc(c->held, c->capheld * sizeof(*c->held));
        }
        c->held[c->nheld++] = m;
        return;
    }
    deliver_push(L, c, m);
    chan_msg_unref(m);
}

/*---- Recovery after an outage (home thread) ----------------------------------*/

typedef struct renew_task {
    chan_task task;
    redis_layer *L;
    unsigned thread;
    char *channel;
    uint64_t hash;
    chan_sub_result r;
} renew_task;

static void renew_run(chan_task *ct)
{
    renew_task *t = (renew_task *)ct;
    chan_notify_resubscribed(&t->L->base, t->thread, t->channel, t->hash, &t->r);
    free(t->channel);
    free(t);
}

static void renew_discard(chan_task *ct)
{
    renew_task *t = (renew_task *)ct;
    free(t->channel);
    free(t);
}

/* Tells every thread with subscribers of c that their subscription was
 * renewed, after what was recovered has been dispatched (same inboxes, so
 * it arrives after it). */
static void notify_renewed(redis_layer *L, rchan *c, int recovered)
{
    uint64_t mask = chan_channel_mask(&L->base, c->name, c->hash);
    for (unsigned th = 0; mask; th++, mask >>= 1) {
        if (!(mask & 1))
            continue;
        renew_task *t = hr_calloc(1, sizeof(*t));
        t->task = (chan_task){renew_run, renew_discard};
        t->L = L;
        t->thread = th;
        t->channel = hr_strdup(c->name);
        t->hash = c->hash;
        t->r.resubscribed = 1;
        t->r.history = c->opts.history_size > 0;
        t->r.pos = c->last;
        t->r.recovered = recovered;
        L->base.host.call(L->base.host.ud, th, &t->task);
    }
}

void rd_dispatch_held(redis_layer *L, rchan *c)
{
    for (size_t i = 0; i < c->nheld; i++)
        deliver_push(L, c, c->held[i]);
    held_drop(c);
}

/* A recovery read in flight: its channel, by name (the channel may be
 * gone when the answer comes). */
typedef struct recovery_req {
    shard *sh;
    uint64_t hash;
    char name[];
} recovery_req;

static void recovery_reply(chan_rconn *conn, void *priv, const redisReply *reply,
                           const char *err)
{
    recovery_req *q = priv;
    shard *sh = q->sh;
    redis_layer *L = sh->L;
    rchan *c = chan_tab_get(&sh->channels, q->name, strlen(q->name), q->hash);
    chan_pos top;
    chan_pub *pubs;
    size_t n;
    (void)conn, (void)err;
    free(q);
    if (!c)
        return;
    c->recovering = 0;
    int ok = rd_parse_history(reply, &top, &pubs, &n) == 0;
    int recovered = ok && chan_recovered(&c->last, &top, pubs, n);
    for (size_t i = 0; ok && recovered && i < n; i++) {
        chan_msg *m = chan_msg_publication_h(c->name, c->hash, pubs[i].data,
                                             strlen(pubs[i].data), pubs[i].offset, pubs[i].from);
        deliver_push(L, c, m);
        chan_msg_unref(m);
    }
    if (ok && !recovered)
        c->last = top; /* a new baseline: what is gone is gone */
    rd_pubs_free(pubs, n);
    rd_dispatch_held(L, c);
    notify_renewed(L, c, recovered);
    rchan_maybe_drop(c);
}

/* The channel is active on Redis again after an outage. */
static void renew_channel(redis_layer *L, rchan *c)
{
    c->renew = 0;
    if (c->opts.history_size <= 0 || !c->have_last) {
        notify_renewed(L, c, 0);
        return;
    }
    size_t len = strlen(c->name);
    recovery_req *q = hr_malloc(sizeof(*q) + len + 1);
    q->sh = c->sh;
    q->hash = c->hash;
    memcpy(q->name, c->name, len + 1);
    if (rd_send_history(L, c->sh, c->name, (int64_t)c->last.offset, c->opts.history_size,
                        recovery_reply, q) < 0) {
        free(q);
        notify_renewed(L, c, 0);
        return;
    }
    c->recovering = 1;
}

/*---- The subscriber connection's replies ---------------------------------------*/

void rd_sub_cmd_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    shard *sh = priv;
    (void)err;
    if (c == sh->sub && r && r->type == REDIS_REPLY_ERROR)
        rd_log_reply_error(sh->L, "SUBSCRIBE", r);
}

/* 1 if topic (tlen bytes) is "<p>:ch:<channel>"; *channel points into it. */
static int channel_topic(redis_layer *L, const char *topic, size_t tlen, const char **channel,
                         size_t *clen)
{
    size_t plen = strlen(L->prefix);
    if (tlen <= plen + 4 || memcmp(topic, L->prefix, plen) || memcmp(topic + plen, ":ch:", 4))
        return 0;
    *channel = topic + plen + 4;
    *clen = tlen - plen - 4;
    return 1;
}

void rd_sub_push(chan_rconn *conn, void *ud, const chan_rpush *p)
{
    shard *sh = ud;
    redis_layer *L = sh->L;
    const char *topic = p->channel, *channel;
    size_t tlen = p->channel_len, clen;
    if (conn != sh->sub || !topic) /* a connection shard_down let go of */
        return;
    int control = tlen == strlen(L->control_topic) && !memcmp(topic, L->control_topic, tlen);
    int ours = !control && channel_topic(L, topic, tlen, &channel, &clen);
    if (p->message) {
        if (strcmp(p->kind, "message"))
            return;
        if (control)
            rd_control_receive(L, p->payload, p->len);
        else if (ours)
            on_message(L, sh, channel, clen, p->payload, p->len);
        else if (sh->index == 0)
            dj_bridge_message(L->django, topic, tlen, p->payload, p->len);
        return;
    }
    if (control) {
        if (!strcmp(p->kind, "subscribe") && !sh->sub_ready) {
            sh->sub_ready = 1;
            rd_shard_update_up(sh);
        }
        return;
    }
    if (!ours)
        return; /* the Django bridge's group topics */
    rchan *c = chan_tab_get(&sh->channels, channel, clen, chan_hash(channel, clen));
    if (!c)
        return;
    if (c->inflight > 0)
        c->inflight--;
    if (c->inflight == 0 && c->wanted && c->on_redis) {
        c->confirmed = 1;
        if (c->renew)
            renew_channel(L, c);
        rd_run_waiters(L, c, 1);
    }
    rchan_maybe_drop(c);
}

/*---- Periodic work (home thread) -------------------------------------------*/

/* Keeps the history meta of every channel this node has subscribers of
 * alive (<fn>_touch: EXPIRE ... GT, which creates nothing): a stream must
 * not be born again, its offsets starting over, under a live subscriber. */
void rd_touch_history(redis_layer *L)
{
    for (int i = 0; i < L->nshards; i++) {
        shard *sh = &L->shards[i];
        const char *key;
        void *val;
        const char **argv = NULL;
        size_t argc = 0;
        char *fn;
        if (!sh->up)
            continue;
        if (asprintf(&fn, "%s_touch", L->fn) < 0)
            abort();
        for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);) {
            rchan *c = val;
            if (!c->wanted || c->opts.history_size <= 0 || c->opts.history_ttl <= 0)
                continue;
            if (argc % 256 == 0)
                argv = hr_realloc(argv, (argc + 3 + 256) * sizeof(*argv));
            argv[3 + argc++] = c->name;
            if (argc == 200) { /* a few hundred names per call */
                argv[0] = "FCALL", argv[1] = fn, argv[2] = "0";
                rd_cmd(sh, NULL, NULL, (int)argc + 3, argv, NULL);
                argc = 0;
            }
        }
        if (argc) {
            argv[0] = "FCALL", argv[1] = fn, argv[2] = "0";
            rd_cmd(sh, NULL, NULL, (int)argc + 3, argv, NULL);
        }
        free(argv);
        free(fn);
    }
}

void rd_refresh_presence(redis_layer *L)
{
    for (int i = 0; i < L->nshards; i++) {
        shard *sh = &L->shards[i];
        const char *key, *ck;
        void *val, *entry;
        if (!sh->up)
            continue;
        for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);) {
            rchan *c = val;
            if (!c->opts.presence)
                continue;
            for (size_t jt = 0; hr_map_next(c->members, &jt, &ck, NULL, &entry);)
                rd_presence_send(L, c, ck, entry);
        }
    }
}
