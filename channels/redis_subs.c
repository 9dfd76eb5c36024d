/*
 * redis_subs.c - channels on Redis (home thread, loop 0): one SUBSCRIBE per
 * channel per node on the shard's `sub` connection, subscriptions
 * completed once the channel is active (with the stream position and, on
 * request, what was missed), incoming pushes, and recovery after an
 * outage. A subscription is asked for on its loop (rd_subscribe), served
 * here, and answered on its loop, where its presence entry and join go out
 * (redis_loop.c). See redis_internal.h.
 *
 * Why one file of ~820 lines: subscribing, the pushes that arrive while a
 * subscription completes, and recovery after an outage share one state
 * per channel (rchan) and its transitions; split, each part would need the
 * others' invariants.
 */
#include "redis_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Channel state -------------------------------------------------------------*/

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
        c->name = hr_strndup(channel, len);
        c->hash = h;
        c->sh = sh;
        chan_tab_put(&sh->channels, channel, len, h, c);
    }
    return c;
}

/* Forgets a channel nobody wants once Redis has answered everything. */
static void rchan_maybe_drop(rchan *c)
{
    if (c->wanted || c->inflight || c->waiters || c->recovering || c->hreads || c->hqueue)
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
    if (c->sh->L->mode == HR_REDIS_CLUSTER) {
        rd_cluster_sync(c);
        return;
    }
    if (!c->sh->up)
        return;
    if (c->wanted && !c->on_redis)
        send_subscribe(c, 1);
    else if (!c->wanted && c->on_redis)
        send_subscribe(c, 0);
}

/*---- A channel's first and last subscriber on this node -----------------------------*/

/* Loop -> home, queued under the registry stripe's lock (so in the order
 * the transitions happened). */
typedef struct open_task {
    chan_task task;
    redis_layer *L;
    int open;
    uint64_t hash;
    char channel[];
} open_task;

/* Cluster-wide occupancy (chan_host.occupancy): the node joins or leaves
 * the set of nodes with subscribers of the channel, and the one whose
 * change made it non-empty / empty reports it. A node that dies without
 * leaving stays in the set until it comes back and its last subscriber of
 * the channel leaves. */
static const char occupy_script[] =
    "if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 "
    "then return 1 end return 0";
static const char vacate_script[] =
    "if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 "
    "then return 1 end return 0";

typedef struct occ_req {
    rd_req q;
    int open;
    char channel[];
} occ_req;

static void occ_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    occ_req *o = priv;
    redis_layer *L = o->q.lp->L;
    (void)conn, (void)err;
    rd_log_reply_error(L, "channel occupancy", r);
    if (rd_req_done(&o->q) && r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        L->base.host.occupancy(L->base.host.ud, o->channel, o->open);
    free(o);
}

static void occupancy(redis_layer *L, const char *channel, int open)
{
    if (!L->base.host.occupancy)
        return;
    size_t len = strlen(channel);
    char *key = hr_malloc(strlen(L->prefix) + 11 + len);
    sprintf(key, "%s:occupied:%s", L->prefix, channel);
    occ_req *o = (occ_req *)rd_req_new(&L->loops[0], NULL, NULL, sizeof(*o) + len + 1);
    o->open = open;
    memcpy(o->channel, channel, len + 1);
    const char *script = open ? occupy_script : vacate_script;
    const char *argv[5] = {"EVAL", script, "1", key, L->node_id};
    if (rd_lconn_cmd(&L->loops[0], rd_shard_of(L, channel), key, occ_reply, o, 5, argv, NULL) < 0) {
        rd_req_done(&o->q);
        free(o);
    }
    free(key);
}

static void open_run(chan_task *ct)
{
    open_task *t = (open_task *)ct;
    redis_layer *L = t->L;
    rchan *c = rchan_get(L, t->channel, t->hash, t->open);
    if (t->open) {
        c->wanted = 1;
        dj_channel_open(L->django, t->channel); /* first: see dj_bridge_up */
        rd_rchan_sync(c);
        occupancy(L, t->channel, 1);
    } else if (c) {
        c->wanted = 0;
        dj_channel_close(L->django, t->channel);
        c->have_last = 0;
        rd_rchan_sync(c);
        occupancy(L, t->channel, 0);
        rchan_maybe_drop(c);
    }
    free(t);
}

static void open_discard(chan_task *ct)
{
    free(ct);
}

static void channel_task(chan_layer *l, const char *channel, uint64_t h, int open)
{
    size_t len = strlen(channel);
    open_task *t = hr_malloc(sizeof(*t) + len + 1);
    t->task = (chan_task){open_run, open_discard};
    t->L = rd_layer(l);
    t->open = open;
    t->hash = h;
    memcpy(t->channel, channel, len + 1);
    rd_to_home(t->L, &t->task);
}

void rd_channel_open(chan_layer *l, const char *channel, uint64_t h)
{
    channel_task(l, channel, h, 1);
}

void rd_channel_close(chan_layer *l, const char *channel, uint64_t h)
{
    channel_task(l, channel, h, 0);
}

/*---- Subscriptions ---------------------------------------------------------------*/

/* Loop -> home -> loop: one subscription to complete. */
struct sub_task {
    chan_task task;
    redis_layer *L;
    unsigned thread;
    chan_sub *s; /* held (chan_sub_hold) until the answer ran on `thread` */
    char *channel;
    uint64_t hash;
    chan_opts opts;
    int has_since;
    chan_pos since;
    chan_sub_result r; /* the answer */
    chan_pub *pubs;
    sub_task *next; /* a channel's waiters */
};

static void sub_task_free(sub_task *t)
{
    rd_pubs_free(t->pubs, t->r.npubs);
    free(t->channel);
    free(t);
}

/* On the subscriber's loop: presence and join go out (on the loop's own
 * connection) before the subscriber hears the answer, so its own `join`
 * arrives after its subscribe reply and its next command sees its entry. */
static void sub_answer_run(chan_task *ct)
{
    sub_task *t = (sub_task *)ct;
    redis_layer *L = t->L;
    chan_sub *s = t->s;
    if (s->impl == t)
        s->impl = NULL;
    if (t->r.status == 0 && !s->removed)
        rd_loop_member_add(&L->loops[t->thread], s);
    t->r.pubs = t->pubs;
    chan_sub_complete(&L->base, s, &t->r);
    chan_sub_release(s);
    chan_inflight(&L->base, t->thread, -1);
    sub_task_free(t);
}

/* The loop stopped: it freed its subscriptions' owners, not the layer's
 * records, which chan_layer_destroy frees. */
static void sub_task_discard(chan_task *ct)
{
    sub_task *t = (sub_task *)ct;
    chan_inflight(&t->L->base, t->thread, -1);
    sub_task_free(t);
}

static void sub_answer(redis_layer *L, sub_task *t)
{
    t->task = (chan_task){sub_answer_run, sub_task_discard};
    rd_to_loop(L, t->thread, &t->task);
}

/* Parses an FCALL history reply: [epoch, top, offset, data, from, ...]
 * (from "" for a backend's publication). */
int rd_parse_history(const redisReply *r, chan_pos *top, chan_pub **pubs, size_t *n)
{
    return rd_parse_history_after(r, top, pubs, n, NULL, NULL);
}

int rd_parse_history_after(const redisReply *r, chan_pos *top, chan_pub **pubs, size_t *n,
                           uint64_t *after, int *kept)
{
    *pubs = NULL;
    *n = 0;
    size_t trailer = after ? 2 : 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 + trailer ||
        (r->elements - 2 - trailer) % 3 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return -EPROTO;
    if (after) {
        const redisReply *a = r->element[r->elements - 2], *k = r->element[r->elements - 1];
        if (a->type != REDIS_REPLY_STRING || k->type != REDIS_REPLY_STRING)
            return -EPROTO;
        *after = strtoull(a->str, NULL, 10);
        *kept = !strcmp(k->str, "1");
    }
    snprintf(top->epoch, sizeof(top->epoch), "%s", r->element[0]->str);
    top->offset = strtoull(r->element[1]->str, NULL, 10);
    size_t k = (r->elements - 2 - trailer) / 3;
    *pubs = hr_calloc(k ? k : 1, sizeof(**pubs));
    for (size_t i = 0; i < k; i++) {
        const redisReply *o = r->element[2 + 3 * i], *d = r->element[3 + 3 * i],
                         *f = r->element[4 + 3 * i];
        if (o->type != REDIS_REPLY_STRING || d->type != REDIS_REPLY_STRING ||
            f->type != REDIS_REPLY_STRING) {
            rd_pubs_free(*pubs, *n);
            *pubs = NULL;
            *n = 0;
            return -EPROTO;
        }
        (*pubs)[i].offset = strtoull(o->str, NULL, 10);
        (*pubs)[i].data = hr_strndup(d->str, d->len);
        (*pubs)[i].from = f->len ? hr_strndup(f->str, f->len) : NULL;
        (*n)++;
    }
    return 0;
}

void rd_history_argv(redis_layer *L, rd_history_args *a, const char *channel, int64_t since,
                     int64_t limit, int create, const char *epoch)
{
    snprintf(a->since, sizeof(a->since), "%lld", (long long)since);
    snprintf(a->limit, sizeof(a->limit), "%lld", (long long)limit);
    a->argc = rd_fcall(L, a->argv, L->f_history, channel, &a->key);
    a->argv[a->argc++] = channel;
    a->argv[a->argc++] = a->since;
    a->argv[a->argc++] = a->limit;
    if (create || epoch)
        a->argv[a->argc++] = create ? "1" : "0";
    if (epoch)
        a->argv[a->argc++] = epoch;
}

void rd_history_args_free(rd_history_args *a)
{
    free(a->key);
    a->key = NULL;
}

/*
 * History reads, batched per channel. Each subscriber of a history
 * channel needs the stream's position and, resuming with `since`, what it
 * missed: one FCALL. While a channel's read is in flight, its next
 * subscribers wait for it to come back and then share one read (hqueue):
 * after a node restarts, a room's clients come back within the same
 * seconds, and Redis then answers one read per channel per round trip
 * rather than one per client. The shared read starts at the lowest
 * position of the batch; each subscriber gets the entries after its own.
 * The stream holds at most history_size entries (XADD MAXLEN), so a read
 * of history_size from the lowest position holds everyone's. Only
 * positions in the epoch the node last saw are batched: across an epoch
 * change the function decides per position (functions.lua), so those
 * subscribers read alone, as does one whose batch finds the epoch changed.
 */

/* Empties a list kept newest first (*list) and returns it oldest first. */
static sub_task *take_oldest_first(sub_task **list)
{
    sub_task *t = *list, *rev = NULL;
    *list = NULL;
    while (t) {
        sub_task *n = t->next;
        t->next = rev;
        rev = t;
        t = n;
    }
    return rev;
}

static void rebase(redis_layer *L, rchan *c, const chan_pos *top);
static void sub_route(redis_layer *L, rchan *c, sub_task *t);
static void read_alone(redis_layer *L, rchan *c, sub_task *t);

/* A history read of a batch of subscribers (next-linked, oldest first). */
typedef struct hread {
    redis_layer *L;
    char *channel;
    uint64_t hash;
    sub_task *tasks;
    int trailer;   /* an epoch was sent: the reply ends with AFTER, KEPT */
    uint64_t from; /* the offset the read starts after (with trailer) */
    char epoch[CHAN_EPOCH_MAX];
} hread;

/* The node's view of the stream from a reply's top (a first baseline, or
 * a new epoch its subscribers are told of). */
static void note_top(redis_layer *L, rchan *c, const chan_pos *top)
{
    if (!c->have_last) {
        c->last = *top; /* the node's baseline for recovery after an outage */
        c->have_last = 1;
    } else if (!c->recovering && strcmp(c->last.epoch, top->epoch)) {
        /* the stream got a new epoch (functions.lua's fence) that this
         * node's subscribers have not heard of: they are told now */
        rebase(L, c, top);
    }
}

/* A read of c's came back: the next batch goes out. */
static void read_done(redis_layer *L, rchan *c);

static void sub_history_reply(chan_rconn *conn, void *priv, const redisReply *reply,
                              const char *err)
{
    sub_task *t = priv;
    redis_layer *L = t->L;
    rchan *c = rchan_get(L, t->channel, t->hash, 0);
    (void)conn, (void)err;
    if (!c || !rd_reply_check(c->sh, reply))
        rd_log_reply_error(L, "history read", reply);
    t->r.history = 1;
    uint64_t after = 0;
    int kept = 0;
    if (rd_parse_history_after(reply, &t->r.pos, &t->pubs, &t->r.npubs,
                               t->has_since ? &after : NULL, &kept) < 0) {
        t->r.status = -EAGAIN;
    } else {
        /* a client resuming across a failover recovers when the function
         * found its position in the previous epoch (functions.lua) */
        t->r.recovered =
            t->has_since && chan_recovery_across(&t->since, &t->r.pos, t->pubs, t->r.npubs, after,
                                                 kept) == CHAN_RECOVERY_FULL;
        if (c)
            note_top(L, c, &t->r.pos);
    }
    sub_answer(L, t);
    if (c)
        read_done(L, c);
}

/* Reads for t alone: its position, and with `since` what it missed. */
static void read_alone(redis_layer *L, rchan *c, sub_task *t)
{
    rd_history_args a;
    rd_history_argv(L, &a, c->name, t->has_since ? (int64_t)t->since.offset : -1,
                    t->has_since ? (int64_t)c->opts.history_size : 0, 1,
                    t->has_since ? t->since.epoch : NULL);
    c->hreads++; /* first: a reply may come before rd_cmd returns */
    int rc = rd_cmd(c->sh, c->name, sub_history_reply, t, a.argc, a.argv, NULL);
    rd_history_args_free(&a);
    if (rc < 0) {
        c->hreads--;
        t->r.status = -EAGAIN;
        sub_answer(L, t);
    }
}

static void hread_free(hread *h)
{
    free(h->channel);
    free(h);
}

/* Copies the entries of pubs[0..n) after offset `after` for one member of
 * a batch (its own to free). Returns how many. */
static size_t pubs_after(const chan_pub *pubs, size_t n, uint64_t after, chan_pub **out)
{
    size_t i = 0, k;
    while (i < n && pubs[i].offset <= after)
        i++;
    *out = hr_calloc(n - i ? n - i : 1, sizeof(**out));
    for (k = 0; i < n; i++, k++) {
        (*out)[k].offset = pubs[i].offset;
        (*out)[k].data = hr_strdup(pubs[i].data);
        (*out)[k].from = pubs[i].from ? hr_strdup(pubs[i].from) : NULL;
    }
    return k;
}

/* One member's answer from a batch's reply. Returns 0, or -1 when the
 * reply does not speak for its position (the epoch moved: read alone). */
static int batch_answer(sub_task *t, const hread *h, const chan_pos *top, const chan_pub *pubs,
                        size_t n, uint64_t after, int kept)
{
    t->r.history = 1;
    t->r.pos = *top;
    if (!t->has_since)
        return 0; /* only the position */
    if (!kept || after != h->from || strcmp(top->epoch, h->epoch))
        return -1;
    t->r.npubs = pubs_after(pubs, n, t->since.offset, &t->pubs);
    t->r.recovered = chan_recovery_across(&t->since, top, t->pubs, t->r.npubs, t->since.offset,
                                          1) == CHAN_RECOVERY_FULL;
    return 0;
}

static void batch_reply(chan_rconn *conn, void *priv, const redisReply *reply, const char *err)
{
    hread *h = priv;
    redis_layer *L = h->L;
    rchan *c = rchan_get(L, h->channel, h->hash, 0);
    chan_pos top;
    chan_pub *pubs;
    size_t n;
    uint64_t after = 0;
    int kept = 0;
    (void)conn, (void)err;
    if (!c || !rd_reply_check(c->sh, reply))
        rd_log_reply_error(L, "history read", reply);
    int ok = rd_parse_history_after(reply, &top, &pubs, &n, h->trailer ? &after : NULL, &kept) == 0;
    if (ok && c)
        note_top(L, c, &top);
    if (!h->trailer)
        kept = 1, after = h->from;
    for (sub_task *t = h->tasks, *next; t; t = next) {
        next = t->next;
        t->next = NULL;
        if (!ok) {
            t->r.status = -EAGAIN;
        } else if (batch_answer(t, h, &top, pubs, n, after, kept) < 0) {
            if (c) {
                read_alone(L, c, t);
                continue;
            }
            t->r.status = -EAGAIN;
        }
        sub_answer(L, t);
    }
    if (ok)
        rd_pubs_free(pubs, n);
    hread_free(h);
    if (c)
        read_done(L, c);
}

/* Sends one read for the batch `tasks` (next-linked, oldest first, at
 * least two): from the lowest `since` of the batch in epoch, or only the
 * position when none has one. */
static void read_batch(redis_layer *L, rchan *c, sub_task *tasks, const char *epoch)
{
    hread *h = hr_calloc(1, sizeof(*h));
    h->L = L;
    h->channel = hr_strdup(c->name);
    h->hash = c->hash;
    h->tasks = tasks;
    snprintf(h->epoch, sizeof(h->epoch), "%s", epoch);
    for (sub_task *t = tasks; t; t = t->next)
        if (t->has_since && (!h->trailer || t->since.offset < h->from)) {
            h->trailer = 1;
            h->from = t->since.offset;
        }
    rd_history_args a;
    rd_history_argv(L, &a, c->name, h->trailer ? (int64_t)h->from : -1,
                    h->trailer ? (int64_t)c->opts.history_size : 0, 1,
                    h->trailer ? h->epoch : NULL);
    c->hreads++; /* first: a reply may come before rd_cmd returns */
    int rc = rd_cmd(c->sh, c->name, batch_reply, h, a.argc, a.argv, NULL);
    rd_history_args_free(&a);
    if (rc == 0)
        return;
    c->hreads--;
    for (sub_task *t = tasks, *next; t; t = next) {
        next = t->next;
        t->next = NULL;
        t->r.status = -EAGAIN;
        sub_answer(L, t);
    }
    hread_free(h);
}

/* The queued subscribers of c go out: those resuming in the epoch the
 * node knows (and those without a position) in one read, the others each
 * alone. */
static void read_queued(redis_layer *L, rchan *c)
{
    sub_task *t, *batch = NULL, **tail = &batch;
    size_t nbatch = 0;
    if (!c->wanted || !c->confirmed) {
        /* the channel went down, moved or was left meanwhile: its queue
         * goes where a new subscription would (a read before the SUBSCRIBE
         * is confirmed again could miss what is published in between) */
        for (t = take_oldest_first(&c->hqueue); t;) {
            sub_task *n = t->next;
            t->next = NULL;
            if (c->wanted) {
                sub_route(L, c, t);
            } else {
                t->r.status = -EAGAIN;
                sub_answer(L, t);
            }
            t = n;
        }
        return;
    }
    for (t = take_oldest_first(&c->hqueue); t;) {
        sub_task *n = t->next;
        t->next = NULL;
        if (!t->has_since || (c->have_last && !strcmp(t->since.epoch, c->last.epoch))) {
            *tail = t;
            tail = &t->next;
            nbatch++;
        } else {
            read_alone(L, c, t);
        }
        t = n;
    }
    if (nbatch == 1)
        read_alone(L, c, batch);
    else if (nbatch > 1)
        read_batch(L, c, batch, c->have_last ? c->last.epoch : "");
}

static void read_done(redis_layer *L, rchan *c)
{
    if (c->hreads > 0)
        c->hreads--;
    if (!c->hreads && c->hqueue)
        read_queued(L, c);
    rchan_maybe_drop(c);
}

/* The channel is active on Redis: answer at once, or read the stream
 * (after the SUBSCRIBE was confirmed, so nothing published meanwhile is
 * missed: it is held back on the subscriber until the answer); while a
 * read of the channel is in flight, wait to share the next one. */
static void sub_proceed(redis_layer *L, rchan *c, sub_task *t)
{
    if (!t->opts.history_size) {
        sub_answer(L, t);
        return;
    }
    if (c->hreads > 0) {
        t->next = c->hqueue;
        c->hqueue = t;
        return;
    }
    read_alone(L, c, t);
}

/* While Redis is away a plain channel is served locally (and subscribed
 * again on reconnect); a history channel cannot give a position. */
static void sub_down(redis_layer *L, sub_task *t)
{
    t->r.status = t->opts.history_size ? -EAGAIN : 0;
    sub_answer(L, t);
}

static void sub_run(chan_task *ct)
{
    sub_task *t = (sub_task *)ct;
    redis_layer *L = t->L;
    rchan *c = rchan_get(L, t->channel, t->hash, 1);
    if (!c->wanted) { /* cannot happen: the open was queued first */
        t->r.status = -EAGAIN;
        sub_answer(L, t);
        return;
    }
    c->opts = t->opts; /* every subscriber of a channel has its namespace's */
    sub_route(L, c, t);
}

/* A wanted channel's subscription: unavailable while its shard (slot) is
 * down, served once its SUBSCRIBE is confirmed, until then waiting. */
static void sub_route(redis_layer *L, rchan *c, sub_task *t)
{
    if (L->mode == HR_REDIS_CLUSTER ? !rd_cluster_chan_up(L, c->name) : !c->sh->up) {
        /* a plain channel is served locally meanwhile: its subscribers
         * hear when it is on Redis again (a shard coming up does that for
         * every channel; a cluster does it per channel) */
        if (L->mode == HR_REDIS_CLUSTER && !c->opts.history_size && !c->confirmed)
            c->renew = 1;
        sub_down(L, t);
    } else if (c->confirmed) {
        sub_proceed(L, c, t);
    } else {
        t->next = c->waiters;
        c->waiters = t;
    }
}

void rd_run_waiters(redis_layer *L, rchan *c, int up)
{
    for (sub_task *t = take_oldest_first(&c->waiters); t;) {
        sub_task *n = t->next;
        if (up)
            sub_proceed(L, c, t);
        else
            sub_down(L, t);
        t = n;
    }
}

void rd_subscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    redis_layer *L = rd_layer(l);
    sub_task *t = hr_calloc(1, sizeof(*t));
    t->task = (chan_task){sub_run, sub_task_discard};
    t->L = L;
    t->thread = thread;
    t->s = s;
    t->channel = hr_strdup(s->channel);
    t->hash = s->hash;
    t->opts = s->opts;
    t->has_since = s->has_since;
    t->since = s->since;
    s->impl = t;
    chan_sub_hold(s);
    chan_inflight(l, thread, 1);
    rd_to_home(L, &t->task);
}

/* On the subscriber's loop: its presence entry and leave, if it was
 * announced (a pending subscription never was: its answer will find it
 * removed). */
void rd_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    rd_loop_member_remove(&rd_layer(l)->loops[thread], s);
}

/*---- Incoming pushes -----------------------------------------------------------*/

static void deliver_push(redis_layer *L, rchan *c, chan_msg *m)
{
    if (m->offset) {
        if (c->have_last && m->offset <= c->last.offset)
            return; /* already delivered by a recovery read */
        c->last.offset = m->offset;
    }
    chan_dispatch(&L->base, m);
}

/* One of this node's own publications, taken back (redis_own.c), or NULL. */
static chan_msg *own_take(redis_layer *L, shard *sh, const char *channel, size_t clen,
                          const char *payload, size_t len)
{
    for (unsigned t = 0; t < L->base.host.nthreads; t++) {
        chan_msg *m = rd_own_take(&L->own[t * (unsigned)L->nshards + (unsigned)sh->index], channel,
                                  clen, payload, len);
        if (m)
            return m;
    }
    return NULL;
}

/* A message on channel's topic (channel: clen bytes, not NUL-terminated).
 * The node's own publications come with their message and the channel's
 * hash; anyone else's text is hashed once and checked. */
void rd_on_message(redis_layer *L, shard *sh, const char *channel, size_t clen, const char *payload,
                   size_t len)
{
    char err[160];
    chan_msg *m = own_take(L, sh, channel, clen, payload, len);
    uint64_t h = m ? m->hash : chan_hash(channel, clen); /* once for the whole way */
    rchan *c = chan_tab_get(&sh->channels, channel, clen, h);
    if (!c || !c->wanted) {
        chan_msg_unref(m);
        return; /* a late message after UNSUBSCRIBE */
    }
    if (!m)
        m = chan_msg_parse_push_h(payload, len, c->name, h, err, sizeof(err));
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

/*---- Recovery after an outage --------------------------------------------------*/

/* Home -> a loop with subscribers of the channel: it was renewed. */
typedef struct renew_task {
    chan_task task;
    redis_layer *L;
    unsigned thread;
    uint64_t hash;
    chan_sub_result r;
    char channel[];
} renew_task;

static void renew_run(chan_task *ct)
{
    renew_task *t = (renew_task *)ct;
    chan_notify_resubscribed(&t->L->base, t->thread, t->channel, t->hash, &t->r);
    free(t);
}

static void renew_discard(chan_task *ct)
{
    free(ct);
}

/* Tells every thread with subscribers of c that their subscription was
 * renewed, after what was recovered has been dispatched (same inboxes, so
 * it arrives after it). */
static void notify_renewed(redis_layer *L, rchan *c, int recovered)
{
    uint64_t mask = chan_channel_mask(&L->base, c->name, c->hash);
    size_t len = strlen(c->name);
    for (unsigned th = 0; mask; th++, mask >>= 1) {
        if (!(mask & 1))
            continue;
        renew_task *t = hr_calloc(1, sizeof(*t) + len + 1);
        t->task = (chan_task){renew_run, renew_discard};
        t->L = L;
        t->thread = th;
        t->hash = c->hash;
        memcpy(t->channel, c->name, len + 1);
        t->r.resubscribed = 1;
        t->r.history = c->opts.history_size > 0;
        t->r.pos = c->last;
        t->r.recovered = recovered;
        rd_to_loop(L, th, &t->task);
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

/* A new baseline for c after a gap (what is gone is gone): the stream's
 * top, or just before the first publication held back meanwhile (held
 * ones came after the subscription was renewed, so from there on nothing
 * is missing). Subscribers are told (recovered: false) before the held
 * publications reach them: their filters then take the new baseline, and
 * a new epoch's offsets, which may repeat old ones, are delivered. */
static void rebase(redis_layer *L, rchan *c, const chan_pos *top)
{
    c->last = *top;
    if (c->nheld && c->held[0]->offset && c->held[0]->offset - 1 < c->last.offset)
        c->last.offset = c->held[0]->offset - 1;
    notify_renewed(L, c, 0);
}

static void recovery_reply(chan_rconn *conn, void *priv, const redisReply *reply, const char *err)
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
    rd_reply_check(sh, reply);
    if (!c)
        return;
    c->recovering = 0;
    uint64_t after = 0;
    int kept = 0;
    int ok = rd_parse_history_after(reply, &top, &pubs, &n, &after, &kept) == 0;
    /* across a new epoch (a failover, a restart: functions.lua's fence) */
    chan_recovery how =
        ok ? chan_recovery_across(&c->last, &top, pubs, n, after, kept) : CHAN_RECOVERY_NONE;
    int recovered = how == CHAN_RECOVERY_FULL;
    if (recovered) /* the node's position was in the previous epoch, and kept */
        memcpy(c->last.epoch, top.epoch, sizeof(c->last.epoch));
    if (how == CHAN_RECOVERY_EPOCH) {
        /* the function gave every entry written since the epoch began:
         * subscribers lost the old epoch's tail (recovered: false, at the
         * new epoch's base) but none of what was published after */
        c->last = top;
        c->last.offset = after;
        notify_renewed(L, c, 0);
        for (size_t i = 0; i < n; i++) {
            chan_msg *m = chan_msg_publication_h(
                c->name, c->hash, pubs[i].data, strlen(pubs[i].data), pubs[i].offset, pubs[i].from);
            deliver_push(L, c, m);
            chan_msg_unref(m);
        }
        rd_dispatch_held(L, c);
    } else if (recovered) {
        for (size_t i = 0; i < n; i++) {
            chan_msg *m = chan_msg_publication_h(
                c->name, c->hash, pubs[i].data, strlen(pubs[i].data), pubs[i].offset, pubs[i].from);
            deliver_push(L, c, m);
            chan_msg_unref(m);
        }
        rd_dispatch_held(L, c);
        notify_renewed(L, c, 1);
    } else if (ok) {
        rebase(L, c, &top);
        rd_dispatch_held(L, c);
    } else { /* unreadable: subscribers reload; the node keeps its position */
        notify_renewed(L, c, 0);
        rd_dispatch_held(L, c);
    }
    rd_pubs_free(pubs, n);
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
    rd_history_args a;
    rd_history_argv(L, &a, c->name, (int64_t)c->last.offset, c->opts.history_size, 1,
                    c->last.epoch);
    int rc = rd_cmd(c->sh, c->name, recovery_reply, q, a.argc, a.argv, NULL);
    rd_history_args_free(&a);
    if (rc < 0) {
        free(q);
        notify_renewed(L, c, 0);
        return;
    }
    c->recovering = 1;
}

/*---- The subscriber connection ---------------------------------------------------*/

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

/* Redis Cluster: c's shard channel is subscribed at its slot's master
 * (active 1), or no longer (0: lost with its node's connection, or its
 * slot moved; the manager subscribes it again where the map says). */
void rd_rchan_active(redis_layer *L, rchan *c, int active)
{
    if (!active) {
        c->confirmed = 0;
        if (c->was_active && c->wanted)
            c->renew = c->have_last || c->opts.history_size == 0;
        if (c->recovering) { /* its read may never come back */
            c->recovering = 0;
            rd_dispatch_held(L, c);
        }
        return;
    }
    c->confirmed = 1;
    c->was_active = 1;
    if (c->renew)
        renew_channel(L, c);
    rd_run_waiters(L, c, 1);
    rchan_maybe_drop(c);
}

/* A (UN)SUBSCRIBE of c's topic was confirmed. */
static void rchan_confirmed(redis_layer *L, rchan *c)
{
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

void rd_sub_push(chan_rconn *conn, void *ud, const chan_rpush *p)
{
    shard *sh = ud;
    redis_layer *L = sh->L;
    const char *topic = p->channel, *channel = NULL;
    size_t tlen = p->channel_len, clen = 0;
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
            rd_on_message(L, sh, channel, clen, p->payload, p->len);
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
    if (c)
        rchan_confirmed(L, c);
}

/*---- Periodic work ---------------------------------------------------------------*/

/* Keeps the history meta of every channel this node has subscribers of
 * alive (<fn>_touch: EXPIRE ... GT, which creates nothing): a stream must
 * not be born again, its offsets starting over, under a live subscriber. */
void rd_touch_history(redis_layer *L)
{
    const char *fn = L->f_touch;
    for (int i = 0; i < L->nshards; i++) {
        shard *sh = &L->shards[i];
        const char *key;
        void *val;
        const char **argv = NULL;
        size_t argc = 0;
        if (!sh->up && L->mode != HR_REDIS_CLUSTER)
            continue;
        for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);) {
            rchan *c = val;
            if (!c->wanted || c->opts.history_size <= 0)
                continue;
            if (L->mode == HR_REDIS_CLUSTER) { /* one channel, one slot, per call */
                const char *a[6];
                char *k;
                int n = rd_fcall(L, a, fn, c->name, &k);
                a[n++] = c->name;
                if (rd_cluster_chan_up(L, c->name))
                    rd_cmd(sh, c->name, NULL, NULL, n, a, NULL);
                free(k);
                continue;
            }
            if (argc % 256 == 0)
                argv = hr_realloc(argv, (argc + 3 + 256) * sizeof(*argv));
            argv[3 + argc++] = c->name;
            if (argc == 200) { /* a few hundred names per call */
                argv[0] = "FCALL", argv[1] = fn, argv[2] = "0";
                rd_cmd(sh, NULL, NULL, NULL, (int)argc + 3, argv, NULL);
                argc = 0;
            }
        }
        if (argc) {
            argv[0] = "FCALL", argv[1] = fn, argv[2] = "0";
            rd_cmd(sh, NULL, NULL, NULL, (int)argc + 3, argv, NULL);
        }
        free(argv);
    }
}
