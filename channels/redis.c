/*
 * redis.c - the channel layer of cluster mode: Redis pub/sub carries every
 * publication to every node with subscribers; Redis keeps history, presence
 * and the control channel.
 *
 * Where it runs. Everything here that touches Redis runs on loop 0 (the
 * layer's home): hiredis' async API on loop 0's libuv loop (its libuv
 * adapter). Other loop threads reach it through host->call, and answers go
 * back the same way to the thread that asked, so no Redis state is shared
 * between threads and nothing blocks a loop (host names are resolved on
 * libuv's thread pool).
 *
 * Shards. HERALD_REDIS_URL may list several servers. A channel lives on one
 * of them, chosen by a stable hash of its name (FNV-1a 64 mod the number of
 * shards: every node and every backend computes the same). Each shard has
 * two connections: `cmd` (PUBLISH, FCALL, presence) and `sub` (SUBSCRIBE).
 * The control channel lives on the first shard.
 *
 * Keys and topics, under the prefix <p> (docs/cluster.md):
 *   <p>:ch:<channel>              pub/sub topic: complete push JSON texts
 *   <p>:control                   pub/sub topic: control messages, "<mac> <JSON>"
 *   <p>:history:<channel>         stream: id "<offset>-1", field d = data
 *   <p>:history-meta:<channel>    hash: e = epoch, s = last offset
 *   <p>:presence:<channel>        hash: client id -> {"client","user","info"}
 *   <p>:presence-exp:<channel>    zset: client id -> expiry (unix seconds)
 * and a function library <fn> (the prefix with [^A-Za-z0-9_] as '_'):
 *   FCALL <fn>_publish 0 CHANNEL DATA      -> offset (0 without history)
 *   FCALL <fn>_history 0 CHANNEL SINCE LIMIT
 *   FCALL <fn>_presence 0 CHANNEL
 *   FCALL <fn>_presence_set 0 CHANNEL TTL CLIENT ENTRY [CLIENT ENTRY ...]
 * The publish function is the command a backend with only a Redis client
 * uses: it validates, records history and assigns the offset atomically,
 * then publishes, exactly as a node does.
 *
 * One order. A node never delivers its own publications directly: they come
 * back from the channel's topic like everyone else's, so every subscriber
 * on every node sees the order Redis gave them.
 *
 * Outages. When a shard's connection drops, the shard is down: /readyz
 * says 503, publications to channels without history are delivered to this
 * node's subscribers only (answered with local_only), publications to
 * history channels fail with -EAGAIN (no offset can be assigned), and no
 * work is queued, so memory stays bounded. Reconnection uses exponential
 * backoff with full jitter; then every channel is subscribed again and, for
 * history channels, the node reads what it missed from the stream, delivers
 * it in order, and tells each subscriber whether the stream was recovered.
 */
#include "django.h"
#include "functions_lua.h" /* channels/functions.lua, embedded at build time */
#include "layer_internal.h"
#include "redis_uv.h"

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <linux/sockios.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <uv.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define TICK_MS 1000
/* Ticks between renewals of the history metas of subscribed channels
 * (functions.lua gives them at least 60 s). */
#define TOUCH_TICKS 20
/* A shard not up this long after its connections were opened is torn
 * down and tried again (see on_connect_timeout). */
#define CONNECT_TIMEOUT_MS 1500
/* A control message is obeyed within this many ms of its timestamp (nodes'
 * clocks must agree that well); its nonce is remembered as long. */
#define CONTROL_WINDOW_MS 60000

typedef struct redis_layer redis_layer;
typedef struct shard shard;
typedef struct sub_job sub_job;

/* One channel's state on the home thread. */
typedef struct rchan {
    char *name;
    shard *sh;
    int wanted;    /* the node has subscribers */
    int on_redis;  /* the last (UN)SUBSCRIBE sent was SUBSCRIBE */
    int inflight;  /* (UN)SUBSCRIBE replies still to come */
    int confirmed; /* subscribed on Redis, replies all in */
    sub_job *waiters;
    chan_opts opts; /* of the first subscriber (the namespace's) */
    chan_pos last;  /* the stream position the node has delivered */
    int have_last;
    int recovering; /* reading what an outage cost: live pushes wait */
    int renew;      /* after a reconnect: tell subscribers once confirmed */
    chan_msg **held;
    size_t nheld, capheld;
    hr_map *members; /* client -> presence entry JSON (presence, join/leave) */
} rchan;

struct shard {
    redis_layer *L;
    int index;
    hr_redis_addr addr;
    char ip[64];
    redisAsyncContext *cmd, *sub;
    int cmd_ready, sub_ready, up;
    int was_up;       /* has been up before: a reconnect, not the first connect */
    int setup_failed; /* AUTH & co. refused since the shard was last up (said once) */
    unsigned attempt;
    uv_timer_t retry;
    uv_timer_t connect_timer;
    uv_getaddrinfo_t gai;
    int resolving;
    hr_map *channels; /* channel -> rchan */
};

struct redis_layer {
    chan_layer base;
    /* set at creation, read-only afterwards */
    char *prefix;
    char *fn; /* function library name */
    char *library;
    char *control_topic;
    char *node_id;
    int presence_ttl;
    int nshards;
    shard *shards;
    /* home thread only */
    uv_loop_t *uv;
    uv_timer_t tick;
    unsigned ticks, touch_ticks;
    int stopping;
    /* control messages: HMAC-SHA256 keys (the first signs), and the nonces
     * seen within the window (home thread) */
    unsigned char (*ctl_keys)[32];
    size_t nctl_keys;
    hr_map *ctl_seen;       /* nonce -> expiry (wall ms), home thread */
    uint64_t err_logged_ms; /* log_reply_error's limit, home thread */
    size_t ctl_sweep_at;
    uint64_t ctl_logged_ms;
    /* any thread (metrics, readyz) */
    atomic_ullong control_rejected;
    atomic_int shards_up;
    atomic_ullong reconnects;
    atomic_ullong pending_bytes;
    atomic_ullong bad_messages;
};

static redis_layer *rl(chan_layer *l)
{
    return (redis_layer *)l;
}

/* Logs an error reply in Redis' own words (NOPERM, OOM, ...), at most once
 * a second: a command that fails for every request must not flood the
 * log. Home thread. */
static void log_reply_error(redis_layer *L, const char *what, const redisReply *r)
{
    uint64_t now = hr_now_ms();
    if (!r || r->type != REDIS_REPLY_ERROR || (L->err_logged_ms && now - L->err_logged_ms < 1000))
        return;
    L->err_logged_ms = now;
    fprintf(stderr, "herald: redis %s failed: %s\n", what, r->str);
}

/*---- Shards ------------------------------------------------------------------*/

/* FNV-1a 64: stable across nodes, processes and languages (backends that
 * publish through Redis compute it too). Not for hash tables: a chosen
 * name can only pick its shard, which any name can. */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static shard *shard_of(redis_layer *L, const char *channel)
{
    return &L->shards[fnv1a64(channel) % (uint64_t)L->nshards];
}

static char *topic_of(redis_layer *L, const char *channel)
{
    return hr_redis_key(L->prefix, "ch", channel);
}

/*---- Tasks between threads ---------------------------------------------------*/

/* Runs fn on the home thread (loop 0). */
typedef struct home_task {
    chan_task task;
    redis_layer *L;
    void (*fn)(redis_layer *L, struct home_task *t);
    char *channel;
    /* unsubscribe */
    char *client;
    chan_opts opts;
    /* publish, reads, control */
    unsigned thread;
    char *data;
    size_t len;
    char *from; /* publish: the client's {"user","client","info"}, or NULL */
    int has_since;
    chan_pos since;
    int64_t limit;
    chan_control ctl;
    char *ctl_user, *ctl_channel;
    void *cb;
    void *ud;
    /* answers */
    int status;
    uint64_t offset;
    int local_only;
    chan_history hist;
    chan_pub *pubs;
    char *text;
    size_t text_len;
    void (*answer)(struct home_task *t); /* on `thread` */
} home_task;

static void pubs_free(chan_pub *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        free(p[i].data);
        free(p[i].from);
    }
    free(p);
}

static void home_task_free(home_task *t)
{
    free(t->channel);
    free(t->client);
    free(t->data);
    free(t->from);
    free(t->ctl_user);
    free(t->ctl_channel);
    pubs_free(t->pubs, t->hist.npubs);
    free(t->text);
    free(t);
}

static void home_run(chan_task *ct)
{
    home_task *t = (home_task *)ct;
    t->fn(t->L, t);
}

static void home_discard(chan_task *ct)
{
    home_task *t = (home_task *)ct;
    if (t->answer)
        chan_inflight(&t->L->base, t->thread, -1);
    home_task_free(t);
}

static home_task *home_task_new(redis_layer *L, void (*fn)(redis_layer *, home_task *))
{
    home_task *t = hr_calloc(1, sizeof(*t));
    t->task = (chan_task){home_run, home_discard};
    t->L = L;
    t->fn = fn;
    return t;
}

static void to_home(redis_layer *L, home_task *t)
{
    L->base.host.call(L->base.host.ud, 0, &t->task);
}

/* Sends t back to the thread that asked, where t->answer runs. */
static void answer_run(chan_task *ct)
{
    home_task *t = (home_task *)ct;
    t->answer(t);
    chan_inflight(&t->L->base, t->thread, -1);
    home_task_free(t);
}

static void to_caller(redis_layer *L, home_task *t)
{
    if (t->task.discard == home_discard || t->task.run == home_run)
        t->task = (chan_task){answer_run, home_discard};
    else
        t->task.run = answer_run; /* keeps its own discard */
    L->base.host.call(L->base.host.ud, t->thread, &t->task);
}

/* A request from loop thread `thread` that will be answered there. */
static home_task *request_new(redis_layer *L, unsigned thread,
                              void (*fn)(redis_layer *, home_task *), void (*answer)(home_task *),
                              void *cb, void *ud)
{
    home_task *t = home_task_new(L, fn);
    t->thread = thread;
    t->answer = answer;
    t->cb = cb;
    t->ud = ud;
    chan_inflight(&L->base, thread, 1);
    return t;
}

/* A request about one channel (publish, reads). */
static home_task *channel_request(redis_layer *L, unsigned thread,
                                  void (*fn)(redis_layer *, home_task *),
                                  void (*answer)(home_task *), void *cb, void *ud,
                                  const char *channel, const chan_opts *o)
{
    home_task *t = request_new(L, thread, fn, answer, cb, ud);
    t->channel = hr_strdup(channel);
    t->opts = *o;
    return t;
}

/*---- Channel state (home thread) --------------------------------------------*/

static void held_drop(rchan *c)
{
    for (size_t i = 0; i < c->nheld; i++)
        chan_msg_unref(c->held[i]);
    free(c->held);
    c->held = NULL;
    c->nheld = c->capheld = 0;
}

static void rchan_free(void *p)
{
    rchan *c = p;
    held_drop(c);
    hr_map_free(c->members);
    free(c->name);
    free(c);
}

static rchan *rchan_get(redis_layer *L, const char *channel, int create)
{
    shard *sh = shard_of(L, channel);
    size_t len = strlen(channel);
    rchan *c = hr_map_get(sh->channels, channel, len);
    if (!c && create) {
        c = hr_calloc(1, sizeof(*c));
        c->name = hr_strdup(channel);
        c->sh = sh;
        c->members = hr_map_new(free);
        hr_map_put(sh->channels, channel, len, c);
    }
    return c;
}

/* Forgets a channel nobody wants once Redis has answered everything. */
static void rchan_maybe_drop(rchan *c)
{
    if (c->wanted || c->inflight || c->waiters || hr_map_count(c->members) || c->recovering)
        return;
    rchan_free(hr_map_del(c->sh->channels, c->name, strlen(c->name)));
}

/*---- Sending ---------------------------------------------------------------*/

/* hiredis copies argv into its output buffer: the strings may be freed
 * once this returns. Returns 0, or -1 when the shard is down. */
static int send_argv(redisAsyncContext *ac, redisCallbackFn *fn, void *priv, int argc,
                     const char **argv, const size_t *lens)
{
    if (!ac || redisAsyncCommandArgv(ac, fn, priv, argc, argv, lens) != REDIS_OK)
        return -1;
    return 0;
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);
static void update_up(shard *sh);

static void send_subscribe(rchan *c, int subscribe)
{
    shard *sh = c->sh;
    char *topic = topic_of(sh->L, c->name);
    const char *argv[2] = {subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE", topic};
    if (send_argv(sh->sub, on_sub_reply, sh, 2, argv, NULL) == 0) {
        c->on_redis = subscribe;
        c->inflight++;
        c->confirmed = 0;
    }
    free(topic);
}

/* Brings Redis in line with what the node wants. */
static void rchan_sync(rchan *c)
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
    home_discard(ct);
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
    char *topic = topic_of(L, channel);
    const char *argv[3] = {"PUBLISH", topic, text};
    size_t lens[3] = {7, strlen(topic), len};
    send_argv(sh->cmd, NULL, NULL, 3, argv, lens);
    free(topic);
}

static void presence_send(redis_layer *L, rchan *c, const char *client, const char *entry)
{
    char ttl[16];
    char *fn;
    snprintf(ttl, sizeof(ttl), "%d", L->presence_ttl);
    if (asprintf(&fn, "%s_presence_set", L->fn) < 0)
        abort();
    const char *argv[7] = {"FCALL", fn, "0", c->name, ttl, client, entry};
    send_argv(c->sh->cmd, NULL, NULL, 7, argv, NULL);
    free(fn);
}

static void presence_del(redis_layer *L, rchan *c, const char *client)
{
    char *hk, *zk;
    hk = hr_redis_key(L->prefix, "presence", c->name);
    zk = hr_redis_key(L->prefix, "presence-exp", c->name);
    const char *a1[3] = {"HDEL", hk, client}, *a2[3] = {"ZREM", zk, client};
    send_argv(c->sh->cmd, NULL, NULL, 3, a1, NULL);
    send_argv(c->sh->cmd, NULL, NULL, 3, a2, NULL);
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
            presence_send(L, c, t->client, entry);
        if (t->opts.join_leave && c->sh->up) {
            size_t len;
            char *txt = chan_join_leave_text(1, c->name, t->client, j->user, &len);
            publish_topic(L, c->sh, c->name, txt, len);
            free(txt);
        }
    }
    t->task = (chan_task){answer_run, sub_job_discard};
    to_caller(L, t);
}

/* Parses an FCALL history reply: [epoch, top, offset, data, from, ...]
 * (from "" for a backend's publication). */
static int parse_history(const redisReply *r, chan_pos *top, chan_pub **pubs, size_t *n)
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
            pubs_free(*pubs, *n);
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

static int send_history(redis_layer *L, shard *sh, const char *channel, int64_t since,
                        int64_t limit, redisCallbackFn *cb, void *priv)
{
    char *fn, s[24], lim[24];
    if (asprintf(&fn, "%s_history", L->fn) < 0)
        abort();
    snprintf(s, sizeof(s), "%lld", (long long)since);
    snprintf(lim, sizeof(lim), "%lld", (long long)limit);
    const char *argv[6] = {"FCALL", fn, "0", channel, s, lim};
    int rc = send_argv(sh->cmd, cb, priv, 6, argv, NULL);
    free(fn);
    return rc;
}

static void sub_history_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    sub_job *j = priv;
    redis_layer *L = j->t.L;
    rchan *c = rchan_get(L, j->t.channel, 0);
    (void)ac;
    log_reply_error(L, "history read", reply);
    j->r.history = 1;
    if (parse_history(reply, &j->r.pos, &j->t.pubs, &j->t.hist.npubs) < 0) {
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
        to_caller(L, &j->t); /* cannot happen: a waiting job keeps its channel */
}

/* The channel is active on Redis: answer at once, or read the stream. */
static void sub_job_proceed(redis_layer *L, rchan *c, sub_job *j)
{
    if (!j->t.opts.history_size) {
        sub_job_finish(L, c, j);
        return;
    }
    if (send_history(L, c->sh, c->name, j->t.has_since ? (int64_t)j->t.since.offset : -1,
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
    rchan *c = rchan_get(L, t->channel, 1);
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

static void run_waiters(redis_layer *L, rchan *c, int up)
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

static void redis_subscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    redis_layer *L = rl(l);
    sub_job *j = hr_calloc(1, sizeof(*j));
    home_task *t = &j->t;
    t->task = (chan_task){home_run, home_discard};
    t->L = L;
    t->fn = home_subscribe;
    t->thread = thread;
    t->answer = sub_job_answer;
    t->channel = hr_strdup(s->channel);
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
    to_home(L, t);
}

/* On the subscriber's thread. Presence and leave are the home thread's. */
static void home_unsubscribe(redis_layer *L, home_task *t)
{
    rchan *c = rchan_get(L, t->channel, 0);
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
    home_task_free(t);
}

static void redis_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    redis_layer *L = rl(l);
    (void)thread;
    sub_job *pending = s->impl;
    if (pending)
        atomic_store(&pending->cancelled, 1);
    if (!s->client)
        return;
    home_task *t = home_task_new(L, home_unsubscribe);
    t->channel = hr_strdup(s->channel);
    t->client = hr_strdup(s->client);
    t->opts = s->opts;
    to_home(L, t);
}

static void home_open(redis_layer *L, home_task *t)
{
    rchan *c = rchan_get(L, t->channel, 1);
    c->wanted = 1;
    dj_channel_open(L->base.django, t->channel); /* first: see dj_bridge_up */
    rchan_sync(c);
    home_task_free(t);
}

static void home_close(redis_layer *L, home_task *t)
{
    rchan *c = rchan_get(L, t->channel, 0);
    if (c) {
        c->wanted = 0;
        dj_channel_close(L->base.django, t->channel);
        c->have_last = 0;
        rchan_sync(c);
        rchan_maybe_drop(c);
    }
    home_task_free(t);
}

/* Under a registry stripe lock: only queue. */
static void redis_channel_open(chan_layer *l, const char *channel)
{
    home_task *t = home_task_new(rl(l), home_open);
    t->channel = hr_strdup(channel);
    to_home(rl(l), t);
}

static void redis_channel_close(chan_layer *l, const char *channel)
{
    home_task *t = home_task_new(rl(l), home_close);
    t->channel = hr_strdup(channel);
    to_home(rl(l), t);
}

/*---- Incoming pushes (home thread) ---------------------------------------------*/

static void dispatch_held(redis_layer *L, rchan *c);

static void deliver_push(redis_layer *L, rchan *c, chan_msg *m)
{
    if (m->offset) {
        if (c->have_last && m->offset <= c->last.offset)
            return; /* already delivered by a recovery read */
        c->last.offset = m->offset;
    }
    chan_dispatch(&L->base, m);
}

static void on_message(redis_layer *L, shard *sh, const char *topic, const char *payload,
                       size_t len)
{
    char err[160];
    size_t plen = strlen(L->prefix);
    if (strncmp(topic, L->prefix, plen) || strncmp(topic + plen, ":ch:", 4))
        return;
    const char *channel = topic + plen + 4;
    rchan *c = hr_map_get(sh->channels, channel, strlen(channel));
    if (!c || !c->wanted)
        return; /* a late message after UNSUBSCRIBE */
    chan_msg *m = chan_msg_parse_push(payload, len, channel, err, sizeof(err));
    if (!m) {
        atomic_fetch_add(&L->bad_messages, 1);
        fprintf(stderr, "herald: dropped a malformed push on %s: %s\n", topic, err);
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

/*---- Control messages (home thread) -----------------------------------------*/

/* Wall-clock milliseconds: control messages are stamped by one node and
 * checked by another. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* HMAC-SHA256(key, topic "\n" body) as 64 hex digits into hex[65]: the
 * topic binds a message to its deployment (prefix). */
static void control_mac(const redis_layer *L, const unsigned char key[32], const char *body,
                        size_t len, char hex[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    size_t tlen = strlen(L->control_topic);
    unsigned char *msg = hr_malloc(tlen + 1 + len);
    memcpy(msg, L->control_topic, tlen);
    msg[tlen] = '\n';
    memcpy(msg + tlen + 1, body, len);
    HMAC(EVP_sha256(), key, 32, msg, tlen + 1 + len, mac, &mlen);
    free(msg);
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

/* Logs a refused control message, at most once a second (anyone allowed to
 * publish on the topic could flood the log otherwise). */
static void control_refused(redis_layer *L, const char *why)
{
    uint64_t now = hr_now_ms();
    atomic_fetch_add(&L->control_rejected, 1);
    if (now - L->ctl_logged_ms < 1000 && L->ctl_logged_ms)
        return;
    L->ctl_logged_ms = now;
    fprintf(stderr, "herald: dropped a control message: %s (herald_redis_control_rejected_total)\n",
            why);
}

/* Forgets nonces whose window has passed. */
static void control_sweep(redis_layer *L, int64_t now)
{
    const char *key;
    size_t klen;
    void *val;
    char **dead = NULL;
    size_t ndead = 0;
    for (size_t it = 0; hr_map_next(L->ctl_seen, &it, &key, &klen, &val);) {
        if ((int64_t)(intptr_t)val < now) {
            dead = hr_realloc(dead, (ndead + 1) * sizeof(*dead));
            dead[ndead++] = hr_strndup(key, klen);
        }
    }
    for (size_t i = 0; i < ndead; i++) {
        hr_map_del(L->ctl_seen, dead[i], strlen(dead[i]));
        free(dead[i]);
    }
    free(dead);
}

/* Control messages make nodes add users to channels, disconnect and
 * revoke them: a node obeys only what another node signed with the
 * cluster's secret ("<mac> <JSON>"), stamped within CONTROL_WINDOW_MS of
 * now, and never the same nonce twice. Publishing on the topic is not
 * enough: backends that publish through Redis may. */
static void on_control_message(redis_layer *L, const char *payload, size_t len)
{
    char want[65];
    const char *body = payload + 65;
    size_t blen = len > 65 ? len - 65 : 0;
    int signed_ok = 0;
    if (len <= 65 || payload[64] != ' ') {
        control_refused(L, "not signed");
        return;
    }
    for (size_t i = 0; i < L->nctl_keys; i++) {
        control_mac(L, L->ctl_keys[i], body, blen, want);
        signed_ok |= hr_secure_eq(want, 64, payload, 64);
    }
    if (!signed_ok) {
        control_refused(L, "bad signature (not from a node with this cluster's secret)");
        return;
    }
    json_t *o = json_loadb(body, blen, 0, NULL);
    json_t *ts = json_object_get(o, "ts");
    const char *nonce = json_string_value(json_object_get(o, "nonce"));
    int64_t now = wall_ms();
    if (!json_is_integer(ts) || !nonce || !*nonce || strlen(nonce) > 64) {
        control_refused(L, "no timestamp or nonce");
        json_decref(o);
        return;
    }
    int64_t t = json_integer_value(ts);
    if (t < now - CONTROL_WINDOW_MS || t > now + CONTROL_WINDOW_MS) {
        control_refused(L, "outside the time window (replayed, or the nodes' clocks disagree)");
        json_decref(o);
        return;
    }
    if (hr_map_get(L->ctl_seen, nonce, strlen(nonce))) {
        control_refused(L, "replayed");
        json_decref(o);
        return;
    }
    if (hr_map_count(L->ctl_seen) >= L->ctl_sweep_at) {
        control_sweep(L, now);
        L->ctl_sweep_at = 2 * hr_map_count(L->ctl_seen) + 1024;
    }
    hr_map_put(L->ctl_seen, nonce, strlen(nonce), (void *)(intptr_t)(t + CONTROL_WINDOW_MS + 1));

    const char *op = json_string_value(json_object_get(o, "op"));
    chan_control c = {0};
    c.user = json_string_value(json_object_get(o, "user"));
    c.channel = json_string_value(json_object_get(o, "channel"));
    c.code = (int)json_integer_value(json_object_get(o, "code"));
    c.at = json_integer_value(json_object_get(o, "at"));
    if (op && !strcmp(op, "member_add"))
        c.op = CHAN_CTL_MEMBER_ADD;
    else if (op && !strcmp(op, "member_remove"))
        c.op = CHAN_CTL_MEMBER_REMOVE;
    else if (op && !strcmp(op, "disconnect"))
        c.op = CHAN_CTL_DISCONNECT;
    else if (op && !strcmp(op, "revoke"))
        c.op = CHAN_CTL_REVOKE;
    if (!c.op || !c.user ||
        ((c.op == CHAN_CTL_MEMBER_ADD || c.op == CHAN_CTL_MEMBER_REMOVE) &&
         (!c.channel || !chan_name_valid(c.channel, strlen(c.channel), 255)))) {
        atomic_fetch_add(&L->bad_messages, 1);
        fprintf(stderr, "herald: dropped a malformed control message\n");
    } else {
        L->base.host.control(L->base.host.ud, &c);
    }
    json_decref(o);
}

/*---- Recovery after an outage (home thread) ----------------------------------*/

typedef struct renew_task {
    chan_task task;
    redis_layer *L;
    unsigned thread;
    char *channel;
    chan_sub_result r;
} renew_task;

static void renew_run(chan_task *ct)
{
    renew_task *t = (renew_task *)ct;
    chan_notify_resubscribed(&t->L->base, t->thread, t->channel, &t->r);
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
    uint64_t mask = chan_channel_mask(&L->base, c->name);
    for (unsigned th = 0; mask; th++, mask >>= 1) {
        if (!(mask & 1))
            continue;
        renew_task *t = hr_calloc(1, sizeof(*t));
        t->task = (chan_task){renew_run, renew_discard};
        t->L = L;
        t->thread = th;
        t->channel = hr_strdup(c->name);
        t->r.resubscribed = 1;
        t->r.history = c->opts.history_size > 0;
        t->r.pos = c->last;
        t->r.recovered = recovered;
        L->base.host.call(L->base.host.ud, th, &t->task);
    }
}

static void dispatch_held(redis_layer *L, rchan *c)
{
    for (size_t i = 0; i < c->nheld; i++)
        deliver_push(L, c, c->held[i]);
    held_drop(c);
}

static void recovery_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    shard *sh = ac->data;
    redis_layer *L = sh->L;
    char *channel = priv;
    rchan *c = hr_map_get(sh->channels, channel, strlen(channel));
    chan_pos top;
    chan_pub *pubs;
    size_t n;
    free(channel);
    if (!c)
        return;
    c->recovering = 0;
    int ok = parse_history(reply, &top, &pubs, &n) == 0;
    int recovered = ok && chan_recovered(&c->last, &top, pubs, n);
    for (size_t i = 0; ok && recovered && i < n; i++) {
        chan_msg *m = chan_msg_publication(c->name, pubs[i].data, strlen(pubs[i].data),
                                           pubs[i].offset, pubs[i].from);
        deliver_push(L, c, m);
        chan_msg_unref(m);
    }
    if (ok && !recovered)
        c->last = top; /* a new baseline: what is gone is gone */
    pubs_free(pubs, n);
    dispatch_held(L, c);
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
    char *channel = hr_strdup(c->name);
    if (send_history(L, c->sh, c->name, (int64_t)c->last.offset, c->opts.history_size,
                     recovery_reply, channel) < 0) {
        free(channel);
        notify_renewed(L, c, 0);
        return;
    }
    c->recovering = 1;
}

/*---- The subscriber connection's replies ---------------------------------------*/

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    shard *sh = priv;
    redis_layer *L = sh->L;
    redisReply *r = reply;
    if (ac != sh->sub) /* a connection shard_down let go of */
        return;
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_reply_error(L, "SUBSCRIBE", r);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str, *topic = r->element[1]->str;
    if (!strcmp(kind, "message")) {
        if (!strcmp(topic, L->control_topic))
            on_control_message(L, r->element[2]->str, r->element[2]->len);
        else
            on_message(L, sh, topic, r->element[2]->str, r->element[2]->len);
        return;
    }
    if (!strcmp(topic, L->control_topic)) {
        if (!strcmp(kind, "subscribe") && !sh->sub_ready) {
            sh->sub_ready = 1;
            update_up(sh);
        }
        return;
    }
    size_t plen = strlen(L->prefix);
    if (strncmp(topic, L->prefix, plen) || strncmp(topic + plen, ":ch:", 4))
        return;
    rchan *c = hr_map_get(sh->channels, topic + plen + 4, strlen(topic + plen + 4));
    if (!c)
        return;
    if (c->inflight > 0)
        c->inflight--;
    if (c->inflight == 0 && c->wanted && c->on_redis) {
        c->confirmed = 1;
        if (c->renew)
            renew_channel(L, c);
        run_waiters(L, c, 1);
    }
    rchan_maybe_drop(c);
}

/*---- Connections (home thread) ---------------------------------------------*/

static void shard_connect(shard *sh);
static void shard_down(shard *sh, const char *why);
static void update_up(shard *sh);

static void update_up(shard *sh)
{
    redis_layer *L = sh->L;
    int up = sh->cmd_ready && sh->sub_ready && sh->cmd && sh->sub;
    if (up == sh->up)
        return;
    sh->up = up;
    atomic_fetch_add(&L->shards_up, up ? 1 : -1);
    if (!up) {
        if (sh->index == 0)
            dj_bridge_down(L->base.django);
        return;
    }
    if (sh->index == 0 && sh->was_up) {
        chan_control resync = {.op = CHAN_CTL_RESYNC};
        L->base.host.control(L->base.host.ud, &resync);
    }
    sh->was_up = 1;
    sh->attempt = 0;
    fprintf(stderr, "herald: redis shard %d (%s:%d) is up\n", sh->index, sh->addr.host,
            sh->addr.port);
    /* the Django bridge's subscriptions go out before Herald's on the same
     * connection, so a channel's confirmation implies its group's */
    if (sh->index == 0)
        dj_bridge_up(L->base.django, sh->cmd, sh->sub, &sh->addr, sh->ip);
    /* subscribe again to everything the node wants; announce its
     * presence entries at once (a Redis that restarted empty showed nobody
     * until the next refresh, presence_ttl/3 later) */
    const char *key, *ck;
    void *val, *entry;
    for (size_t it = 0; hr_map_next(sh->channels, &it, &key, NULL, &val);) {
        rchan *c = val;
        if (c->wanted) {
            c->renew = c->renew || c->have_last || c->opts.history_size == 0;
            rchan_sync(c);
        }
        if (c->opts.presence)
            for (size_t jt = 0; hr_map_next(c->members, &jt, &ck, NULL, &entry);)
                presence_send(L, c, ck, entry);
    }
    sh->setup_failed = 0;
}

/* A setup command (AUTH, SELECT, CLIENT SETNAME, <fn>_init) failed: the
 * shard is not usable on these connections, so both go at once and the
 * shard stays down (it was never up: no "up"/"down" flapping while Redis
 * refuses the credentials), retried with backoff; said once per streak,
 * in Redis' own words. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    shard *sh = ac->data;
    redisReply *r = reply;
    const char *what = priv;
    if (!r || r->type != REDIS_REPLY_ERROR || (ac != sh->cmd && ac != sh->sub))
        return;
    if (!sh->setup_failed)
        fprintf(stderr, "herald: redis shard %d (%s:%d): %s: %s (retrying)\n", sh->index,
                sh->addr.host, sh->addr.port,
                !strcmp(what, "AUTH") ? "authentication failed" : what, r->str);
    sh->setup_failed = 1;
    shard_down(sh, r->str);
}

static void on_function_loaded(redisAsyncContext *ac, void *reply, void *priv)
{
    shard *sh = ac->data;
    redisReply *r = reply;
    (void)priv;
    if (!r || ac != sh->cmd) /* a connection shard_down let go of */
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        if (!sh->setup_failed)
            fprintf(stderr, "herald: redis shard %d: FUNCTION LOAD failed: %s (retrying)\n",
                    sh->index, r->str);
        sh->setup_failed = 1;
        shard_down(sh, r->str);
        return;
    }
    sh->cmd_ready = 1;
    update_up(sh);
}

static void send_setup(shard *sh, redisAsyncContext *ac)
{
    hr_redis_setup setup[2];
    char dbbuf[16];
    int n = hr_redis_setup_commands(&sh->addr, setup, dbbuf);
    for (int i = 0; i < n; i++)
        send_argv(ac, on_setup_reply, (void *)setup[i].argv[0], setup[i].argc, setup[i].argv, NULL);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    shard *sh = ac->data;
    redis_layer *L = sh->L;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this; forget it (a context shard_down
         * already let go of is not ours any more) */
        int ours = ac == sh->cmd || ac == sh->sub;
        if (ac == sh->cmd)
            sh->cmd = NULL;
        else if (ac == sh->sub)
            sh->sub = NULL;
        if (ours)
            shard_down(sh, ac->errstr);
        return;
    }
    send_setup(sh, ac);
    /* CLIENT LIST then tells which node and which role each connection has */
    char *name = hr_redis_key(L->prefix, L->node_id, ac == sh->cmd ? "cmd" : "sub");
    for (char *p = name; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = '_';
    const char *setname[3] = {"CLIENT", "SETNAME", name};
    send_argv(ac, on_setup_reply, "CLIENT SETNAME", 3, setname, NULL);
    free(name);
    if (ac == sh->cmd) {
        const char *argv[4] = {"FUNCTION", "LOAD", "REPLACE", L->library};
        send_argv(ac, on_function_loaded, NULL, 4, argv, NULL);
        /* the history epochs' base exists before anyone reads (functions.lua) */
        char *init;
        if (asprintf(&init, "%s_init", L->fn) < 0)
            abort();
        const char *iargv[3] = {"FCALL", init, "0"};
        send_argv(ac, on_setup_reply, "FCALL init", 3, iargv, NULL);
        free(init);
    } else if (sh->index == 0) {
        const char *argv[2] = {"SUBSCRIBE", L->control_topic};
        send_argv(ac, on_sub_reply, sh, 2, argv, NULL);
    } else {
        sh->sub_ready = 1;
        update_up(sh);
    }
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    shard *sh = ac->data;
    (void)status;
    if (ac != sh->cmd && ac != sh->sub)
        return; /* one shard_down already let go of */
    if (ac == sh->cmd)
        sh->cmd = NULL;
    else
        sh->sub = NULL;
    shard_down(sh, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* Full jitter (AWS' "exponential backoff and jitter"): a random delay up
 * to the exponential bound, so nodes that lost Redis together do not come
 * back together. */
static uint64_t backoff_ms(shard *sh)
{
    unsigned shift = sh->attempt < 6 ? sh->attempt : 6;
    uint64_t cap = (uint64_t)BACKOFF_MIN_MS << shift;
    uint32_t r;
    if (cap > BACKOFF_MAX_MS)
        cap = BACKOFF_MAX_MS;
    hr_random_bytes(&r, sizeof(r));
    sh->attempt++;
    return BACKOFF_MIN_MS / 2 + r % cap;
}

static void on_retry(uv_timer_t *t)
{
    shard_connect(t->data);
}

/* Either connection failing takes the shard down: the other one is
 * dropped too, so the shard comes back whole (functions loaded, every
 * channel subscribed again). */
static void shard_down(shard *sh, const char *why)
{
    redis_layer *L = sh->L;
    int was_up = sh->up;
    redisAsyncContext *cmd = sh->cmd, *sub = sh->sub;
    sh->cmd_ready = sh->sub_ready = 0;
    sh->cmd = sh->sub = NULL; /* before hiredis may free them below */
    update_up(sh);
    if (cmd)
        redisAsyncDisconnect(cmd);
    if (sub)
        redisAsyncDisconnect(sub);
    if (was_up)
        fprintf(stderr, "herald: redis shard %d (%s:%d) is down: %s\n", sh->index, sh->addr.host,
                sh->addr.port, why);
    const char *key;
    void *val;
    for (size_t it = 0; hr_map_next(sh->channels, &it, &key, NULL, &val);) {
        rchan *c = val;
        c->on_redis = c->confirmed = 0;
        c->inflight = 0;
        if (c->recovering) {
            c->recovering = 0;
            dispatch_held(L, c);
        }
        run_waiters(L, c, 0);
    }
    if (!L->stopping && !sh->cmd && !sh->sub && !sh->resolving &&
        !uv_is_active((uv_handle_t *)&sh->retry))
        uv_timer_start(&sh->retry, on_retry, backoff_ms(sh), 0);
}

static redisAsyncContext *open_conn(shard *sh)
{
    redisAsyncContext *ac = redisAsyncConnect(sh->ip, sh->addr.port);
    if (!ac)
        return NULL;
    if (ac->err) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = sh;
    chan_redis_uv_attach(ac, sh->L->uv);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

/* A server that accepts but never answers is caught by this deadline (a
 * refused connect reaches on_connect: chan_redis_uv_attach hands poll
 * errors to hiredis, which hiredis' own libuv adapter drops). */
static void on_connect_timeout(uv_timer_t *t)
{
    shard *sh = t->data;
    if (!sh->up && !sh->L->stopping)
        shard_down(sh, "no connection within the deadline");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    shard *sh = req->data;
    sh->resolving = 0;
    if (status == 0 && res)
        uv_ip_name(res->ai_addr, sh->ip, sizeof(sh->ip));
    uv_freeaddrinfo(res);
    if (sh->L->stopping)
        return;
    if (status != 0 || !res) {
        shard_down(sh, "cannot resolve the host name");
        return;
    }
    sh->cmd = open_conn(sh);
    sh->sub = open_conn(sh);
    if (!sh->cmd || !sh->sub)
        shard_down(sh, "cannot connect");
    else
        uv_timer_start(&sh->connect_timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
}

/* Name resolution runs on libuv's thread pool: getaddrinfo may block. */
static void shard_connect(shard *sh)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (sh->L->stopping || sh->resolving || sh->cmd || sh->sub)
        return;
    if (sh->attempt)
        atomic_fetch_add(&sh->L->reconnects, 1);
    sh->gai.data = sh;
    sh->resolving = 1;
    if (uv_getaddrinfo(sh->L->uv, &sh->gai, on_resolved, sh->addr.host, NULL, &hints) != 0) {
        sh->resolving = 0;
        shard_down(sh, "cannot resolve the host name");
    }
}

/*---- Periodic work (home thread) -------------------------------------------*/

/* Keeps the history meta of every channel this node has subscribers of
 * alive (<fn>_touch: EXPIRE ... GT, which creates nothing): a stream must
 * not be born again, its offsets starting over, under a live subscriber. */
static void touch_history(redis_layer *L)
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
        for (size_t it = 0; hr_map_next(sh->channels, &it, &key, NULL, &val);) {
            rchan *c = val;
            if (!c->wanted || c->opts.history_size <= 0 || c->opts.history_ttl <= 0)
                continue;
            if (argc % 256 == 0)
                argv = hr_realloc(argv, (argc + 3 + 256) * sizeof(*argv));
            argv[3 + argc++] = c->name;
            if (argc == 200) { /* a few hundred names per call */
                argv[0] = "FCALL", argv[1] = fn, argv[2] = "0";
                send_argv(sh->cmd, NULL, NULL, (int)argc + 3, argv, NULL);
                argc = 0;
            }
        }
        if (argc) {
            argv[0] = "FCALL", argv[1] = fn, argv[2] = "0";
            send_argv(sh->cmd, NULL, NULL, (int)argc + 3, argv, NULL);
        }
        free(argv);
        free(fn);
    }
}

static void refresh_presence(redis_layer *L)
{
    for (int i = 0; i < L->nshards; i++) {
        shard *sh = &L->shards[i];
        const char *key, *ck;
        void *val, *entry;
        if (!sh->up)
            continue;
        for (size_t it = 0; hr_map_next(sh->channels, &it, &key, NULL, &val);) {
            rchan *c = val;
            if (!c->opts.presence)
                continue;
            for (size_t jt = 0; hr_map_next(c->members, &jt, &ck, NULL, &entry);)
                presence_send(L, c, ck, entry);
        }
    }
}

/* Bytes Redis has sent the subscriber connections that this node has not
 * read yet: what Redis' client-output-buffer-limit would count against us
 * once the socket buffers fill. */
static void sample_pending(redis_layer *L)
{
    uint64_t total = 0;
    for (int i = 0; i < L->nshards; i++) {
        int n = 0;
        redisAsyncContext *ac = L->shards[i].sub;
        if (ac && ioctl(ac->c.fd, SIOCINQ, &n) == 0 && n > 0)
            total += (uint64_t)n;
        if (ac && ac->c.reader)
            total += ac->c.reader->len - ac->c.reader->pos;
    }
    atomic_store(&L->pending_bytes, total);
}

static void on_tick(uv_timer_t *t)
{
    redis_layer *L = t->data;
    unsigned every = (unsigned)(L->presence_ttl * 1000 / 3 / TICK_MS);
    /* history metas live at least 60 s: renewed at least every 20 s,
     * whatever presence_ttl says */
    unsigned touch_every = every && every < TOUCH_TICKS ? every : TOUCH_TICKS;
    sample_pending(L);
    if (++L->ticks >= (every ? every : 1)) {
        L->ticks = 0;
        refresh_presence(L);
    }
    if (++L->touch_ticks >= touch_every) {
        L->touch_ticks = 0;
        touch_history(L);
    }
}

/*---- Publish, reads, control ---------------------------------------------------*/

static void publish_answer(home_task *t)
{
    chan_publish_cb cb = (chan_publish_cb)(void (*)(void))t->cb;
    if (cb)
        cb(t->ud, t->status, t->offset, t->local_only);
}

static void publish_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    home_task *t = priv;
    redisReply *r = reply;
    (void)ac;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        t->status = -EAGAIN;
        log_reply_error(t->L, "publish", r);
    } else if (r->type == REDIS_REPLY_INTEGER) {
        t->offset = r->integer > 0 ? (uint64_t)r->integer : 0;
    }
    if (!t->opts.history_size)
        t->offset = 0;
    to_caller(t->L, t);
}

static void home_publish(redis_layer *L, home_task *t)
{
    shard *sh = shard_of(L, t->channel);
    if (!sh->up) {
        if (t->opts.history_size) {
            t->status = -EAGAIN;
        } else { /* this node's subscribers only */
            chan_msg *m = chan_msg_publication(t->channel, t->data, t->len, 0, t->from);
            chan_dispatch(&L->base, m);
            chan_msg_unref(m);
            t->local_only = 1;
        }
        to_caller(L, t);
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
        rc = send_argv(sh->cmd, publish_reply, t, t->from ? 6 : 5, argv, lens);
        free(fn);
    } else {
        size_t len;
        char *text = chan_publication_text(t->channel, t->data, t->len, 0, t->from, &len);
        char *topic = topic_of(L, t->channel);
        const char *argv[3] = {"PUBLISH", topic, text};
        size_t lens[3] = {7, strlen(topic), len};
        rc = send_argv(sh->cmd, publish_reply, t, 3, argv, lens);
        free(topic);
        free(text);
    }
    if (rc < 0) {
        t->status = -EAGAIN;
        to_caller(L, t);
    }
}

static void redis_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                          const char *data_json, size_t data_len, const char *from,
                          chan_publish_cb cb, void *ud)
{
    redis_layer *L = rl(l);
    home_task *t =
        channel_request(L, thread, home_publish, publish_answer, (void *)cb, ud, channel, o);
    t->data = hr_strndup(data_json, data_len);
    t->len = data_len;
    t->from = from ? hr_strdup(from) : NULL;
    to_home(L, t);
}

static void history_answer(home_task *t)
{
    t->hist.pubs = t->pubs;
    ((chan_history_cb)(void (*)(void))t->cb)(t->ud, &t->hist);
}

static void history_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    home_task *t = priv;
    (void)ac;
    log_reply_error(t->L, "history read", reply);
    if (parse_history(reply, &t->hist.top, &t->pubs, &t->hist.npubs) < 0)
        t->hist.status = -EAGAIN;
    to_caller(t->L, t);
}

static void home_history(redis_layer *L, home_task *t)
{
    shard *sh = shard_of(L, t->channel);
    int64_t limit = t->limit;
    if (limit < 0 || limit > t->opts.history_size)
        limit = t->opts.history_size;
    if (!sh->up || send_history(L, sh, t->channel, t->has_since ? (int64_t)t->since.offset : -1,
                                limit, history_reply, t) < 0) {
        t->hist.status = -EAGAIN;
        to_caller(L, t);
    }
}

static void redis_history(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                          const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud)
{
    redis_layer *L = rl(l);
    home_task *t =
        channel_request(L, thread, home_history, history_answer, (void *)cb, ud, channel, o);
    t->limit = limit;
    if (since) {
        t->has_since = 1;
        t->since = *since;
    }
    to_home(L, t);
}

static void presence_answer(home_task *t)
{
    chan_presence p = {.status = t->status, .clients = t->text, .len = t->text_len};
    ((chan_presence_cb)(void (*)(void))t->cb)(t->ud, &p);
}

static void presence_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    home_task *t = priv;
    redisReply *r = reply;
    hr_buf b = {0};
    (void)ac;
    log_reply_error(t->L, "presence read", r);
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
    to_caller(t->L, t);
}

static void home_presence(redis_layer *L, home_task *t)
{
    shard *sh = shard_of(L, t->channel);
    char *fn;
    if (asprintf(&fn, "%s_presence", L->fn) < 0)
        abort();
    const char *argv[4] = {"FCALL", fn, "0", t->channel};
    if (!sh->up || send_argv(sh->cmd, presence_reply, t, 4, argv, NULL) < 0) {
        t->status = -EAGAIN;
        to_caller(L, t);
    }
    free(fn);
}

static void redis_presence(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                           chan_presence_cb cb, void *ud)
{
    redis_layer *L = rl(l);
    to_home(L,
            channel_request(L, thread, home_presence, presence_answer, (void *)cb, ud, channel, o));
}

static void status_answer(home_task *t)
{
    chan_status_cb cb = (chan_status_cb)(void (*)(void))t->cb;
    if (cb)
        cb(t->ud, t->status);
}

static void status_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    home_task *t = priv;
    redisReply *r = reply;
    (void)ac;
    log_reply_error(t->L, "control message", r);
    if (!r || r->type == REDIS_REPLY_ERROR)
        t->status = -EAGAIN;
    to_caller(t->L, t);
}

static const char *control_op_name(chan_control_op op)
{
    switch (op) {
    case CHAN_CTL_MEMBER_ADD:
        return "member_add";
    case CHAN_CTL_MEMBER_REMOVE:
        return "member_remove";
    case CHAN_CTL_DISCONNECT:
        return "disconnect";
    case CHAN_CTL_REVOKE:
        return "revoke";
    case CHAN_CTL_RESYNC:
        break;
    }
    return "unknown";
}

static void home_control(redis_layer *L, home_task *t)
{
    shard *sh = &L->shards[0];
    json_t *o = json_pack("{s:s, s:s}", "op", control_op_name(t->ctl.op), "user", t->ctl_user);
    if (t->ctl_channel)
        json_object_set_new(o, "channel", json_string(t->ctl_channel));
    if (t->ctl.code)
        json_object_set_new(o, "code", json_integer(t->ctl.code));
    if (t->ctl.at)
        json_object_set_new(o, "at", json_integer(t->ctl.at));
    char nonce[33];
    hr_random_hex(nonce, 16);
    json_object_set_new(o, "ts", json_integer(wall_ms()));
    json_object_set_new(o, "nonce", json_string(nonce));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body)
        abort();
    size_t blen = strlen(body);
    char *text = hr_malloc(65 + blen + 1);
    control_mac(L, L->ctl_keys[0], body, blen, text);
    text[64] = ' ';
    memcpy(text + 65, body, blen + 1);
    free(body);
    const char *argv[3] = {"PUBLISH", L->control_topic, text};
    if (!sh->up || send_argv(sh->cmd, status_reply, t, 3, argv, NULL) < 0) {
        t->status = -EAGAIN;
        to_caller(L, t);
    }
    free(text);
}

static void redis_control(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb,
                          void *ud)
{
    redis_layer *L = rl(l);
    home_task *t = request_new(L, thread, home_control, status_answer, (void *)cb, ud);
    t->ctl = *c;
    t->ctl_user = hr_strdup(c->user ? c->user : "");
    t->ctl_channel = c->channel ? hr_strdup(c->channel) : NULL;
    to_home(L, t);
}

/*---- Life cycle ------------------------------------------------------------*/

static int redis_start(chan_layer *l, void *uv_loop)
{
    redis_layer *L = rl(l);
    L->uv = uv_loop;
    dj_bridge_start(L->base.django, uv_loop);
    uv_timer_init(L->uv, &L->tick);
    L->tick.data = L;
    uv_timer_start(&L->tick, on_tick, TICK_MS, TICK_MS);
    for (int i = 0; i < L->nshards; i++) {
        uv_timer_init(L->uv, &L->shards[i].retry);
        L->shards[i].retry.data = &L->shards[i];
        uv_timer_init(L->uv, &L->shards[i].connect_timer);
        L->shards[i].connect_timer.data = &L->shards[i];
        shard_connect(&L->shards[i]);
    }
    return 0;
}

static void redis_stop(chan_layer *l)
{
    redis_layer *L = rl(l);
    if (!L->uv || L->stopping)
        return;
    L->stopping = 1;
    dj_bridge_stop(L->base.django); /* while the first shard can still take its cleanup */
    uv_close((uv_handle_t *)&L->tick, NULL);
    for (int i = 0; i < L->nshards; i++) {
        shard *sh = &L->shards[i];
        uv_close((uv_handle_t *)&sh->retry, NULL);
        uv_close((uv_handle_t *)&sh->connect_timer, NULL);
        if (sh->resolving)
            uv_cancel((uv_req_t *)&sh->gai);
        redisAsyncContext *cmd = sh->cmd, *sub = sh->sub;
        sh->cmd = sh->sub = NULL;
        if (cmd)
            redisAsyncDisconnect(cmd);
        if (sub)
            redisAsyncDisconnect(sub);
    }
}

static int redis_ready(chan_layer *l)
{
    redis_layer *L = rl(l);
    return atomic_load(&L->shards_up) == L->nshards;
}

static void redis_stats(chan_layer *l, chan_stats *out)
{
    redis_layer *L = rl(l);
    out->redis_shards = (uint64_t)L->nshards;
    out->redis_connected = (uint64_t)atomic_load(&L->shards_up);
    out->redis_reconnects = atomic_load(&L->reconnects);
    out->redis_pending_bytes = atomic_load(&L->pending_bytes);
    out->bad_messages = atomic_load(&L->bad_messages);
    out->control_rejected = atomic_load(&L->control_rejected);
    dj_bridge_stats(L->base.django, out);
}

static void redis_destroy(chan_layer *l)
{
    redis_layer *L = rl(l);
    dj_bridge_free(L->base.django);
    for (int i = 0; i < L->nshards; i++) {
        hr_map_free(L->shards[i].channels);
        hr_redis_addr_clear(&L->shards[i].addr);
    }
    free(L->shards);
    free(L->prefix);
    free(L->fn);
    free(L->library);
    free(L->control_topic);
    free(L->node_id);
    free(L->ctl_keys);
    hr_map_free(L->ctl_seen);
    free(L);
}

static const chan_layer_ops redis_ops = {
    .name = "redis",
    .start = redis_start,
    .stop = redis_stop,
    .publish = redis_publish,
    .channel_open = redis_channel_open,
    .channel_close = redis_channel_close,
    .subscribe = redis_subscribe,
    .unsubscribe = redis_unsubscribe,
    .history = redis_history,
    .presence = redis_presence,
    .control = redis_control,
    .ready = redis_ready,
    .stats = redis_stats,
    .destroy = redis_destroy,
};

/*---- The function library ----------------------------------------------------*/

/* Appends s as a Lua long-bracket-free quoted string. */
static void lua_quote(hr_buf *b, const char *s)
{
    hr_buf_append(b, "'", 1);
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\')
            hr_buf_append(b, "\\", 1);
        hr_buf_append(b, s, 1);
    }
    hr_buf_append(b, "'", 1);
}

/* The library is generated from the configuration: the prefix and every
 * namespace's history settings (so the publish function a backend calls
 * keeps history exactly as the nodes do). Every node loads it with
 * FUNCTION LOAD REPLACE at each (re)connect; nodes of one deployment must
 * share their namespace configuration. */
static char *build_library(const char *fn, const char *prefix, const chan_redis_config *cfg)
{
    hr_buf b = {0};
    int have_default = 0;
    hr_buf_printf(&b, "#!lua name=%s\nlocal P = ", fn);
    lua_quote(&b, prefix);
    hr_buf_printf(&b, "\nlocal NS = {}\n");
    for (size_t i = 0; i < cfg->nnamespaces; i++) {
        hr_buf_printf(&b, "NS[");
        lua_quote(&b, cfg->ns_names[i]);
        hr_buf_printf(&b, "] = {%d, %d}\n", cfg->ns_opts[i].history_size,
                      cfg->ns_opts[i].history_ttl);
        have_default |= cfg->ns_names[i][0] == '\0';
    }
    if (!have_default)
        hr_buf_printf(&b, "NS[''] = {0, 0}\n");
    hr_buf_append(&b, (const char *)hr_functions_lua, hr_functions_lua_len);
    hr_buf_printf(&b,
                  "redis.register_function('%s_publish', publish)\n"
                  "redis.register_function('%s_history', history)\n"
                  "redis.register_function('%s_touch', touch)\n"
                  "redis.register_function('%s_init', init)\n"
                  "redis.register_function('%s_presence', presence)\n"
                  "redis.register_function('%s_presence_set', presence_set)\n",
                  fn, fn, fn, fn, fn, fn);
    char *s = hr_strndup(b.data, b.len);
    hr_buf_reset(&b);
    return s;
}

chan_layer *chan_redis_new(const chan_host *host, const chan_redis_config *cfg, char *err,
                           size_t errlen)
{
    hr_redis_addr *addrs;
    if (!cfg->ncontrol_secrets) {
        snprintf(err, errlen, "cluster mode needs a secret shared by the nodes (control messages)");
        return NULL;
    }
    int n = hr_redis_urls_parse(cfg->urls, &addrs);
    if (n < 0) {
        snprintf(err, errlen, "bad Redis URL: expected redis://[:password@]host:port[/db]");
        return NULL;
    }
    redis_layer *L = hr_calloc(1, sizeof(*L));
    chan_layer_init(&L->base, &redis_ops, host);
    L->prefix = hr_strdup(cfg->prefix && *cfg->prefix ? cfg->prefix : "herald");
    L->fn = hr_strdup(L->prefix);
    for (char *p = L->fn; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    L->library = build_library(L->fn, L->prefix, cfg);
    L->control_topic = hr_redis_key(L->prefix, "control", NULL);
    L->node_id = hr_strdup(cfg->node_id && *cfg->node_id ? cfg->node_id : "node");
    L->presence_ttl = cfg->presence_ttl > 0 ? cfg->presence_ttl : 25;
    /* a key of its own per secret: the JWT secret is not used as-is for a
     * second purpose */
    L->nctl_keys = cfg->ncontrol_secrets;
    L->ctl_keys = hr_calloc(L->nctl_keys, sizeof(*L->ctl_keys));
    for (size_t i = 0; i < L->nctl_keys; i++) {
        static const char label[] = "herald control v1";
        unsigned int mlen = 0;
        const char *sec = cfg->control_secrets[i];
        HMAC(EVP_sha256(), sec, (int)strlen(sec), (const unsigned char *)label, sizeof(label) - 1,
             L->ctl_keys[i], &mlen);
    }
    L->ctl_seen = hr_map_new(NULL);
    L->ctl_sweep_at = 1024;
    L->nshards = n;
    L->shards = hr_calloc((size_t)n, sizeof(*L->shards));
    for (int i = 0; i < n; i++) {
        shard *sh = &L->shards[i];
        sh->L = L;
        sh->index = i;
        sh->addr = addrs[i];
        sh->channels = hr_map_new(rchan_free);
    }
    free(addrs);
    atomic_init(&L->shards_up, 0);
    if (cfg->django && cfg->django->mode &&
        !dj_bridge_new(&L->base, cfg->django, L->prefix, L->node_id, err, errlen)) {
        chan_layer_destroy(&L->base);
        return NULL;
    }
    return &L->base;
}
