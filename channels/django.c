/*
 * django.c - the Django Channels bridge (django.h): the Redis side.
 *
 * Groups. A Herald channel C with subscribers on this node is Django group
 * dj_group_of_channel(C) ("chat:lobby" is "chat..lobby"); a channel without
 * a group name is simply not bridged. The bridge hears the node's "first /
 * last local subscriber" transitions from redis_subs.c
 * (dj_channel_open/close),
 * so a group nobody on this node subscribes to costs nothing:
 *   pubsub  one SUBSCRIBE <p>__group__<G> per group per node, on the first
 *           shard's subscriber connection (next to Herald's own topics),
 *           UNSUBSCRIBE when the last subscriber leaves;
 *   redis   the node is a Channels channel of its own: its member name in
 *           group G is "herald.<node>.<random>!<G>", so every group this
 *           node joins writes into one sorted set, the node's inbox
 *           "<p>herald.<node>.<random>!", and __asgi_channel__ in each
 *           message says which group it was for. ZADD into <p>:group:<G>
 *           when the first subscriber arrives, again every group_expiry/4
 *           (channels_redis drops members older than group_expiry), ZREM
 *           when the last leaves and at shutdown (with the inbox). The inbox
 *           is read on a connection of its own with BZPOPMIN (chan_rconn,
 *           asynchronous: the loop never waits), drained with ZPOPMIN in
 *           batches.
 *           The random part keeps two processes that share a node id from
 *           stealing each other's messages.
 * Each message becomes {"push":"message","channel":C,"data":<the message
 * as JSON>} for every local subscriber of C (django_codec.c converts).
 * Messages from Django carry no offset and are not kept in history.
 *
 * The other way. chan_django_forward (any loop thread) posts a client
 * publication to the home thread, which sends it in the layer's format:
 * pubsub: PUBLISH <name>; redis: what channels_redis' send() does, atomically
 * in one script (drop expired entries, refuse at capacity, ZADD, EXPIRE).
 *
 * Connections. The bridge borrows the first shard's `cmd` and `sub`
 * connections while the shard is up (redis_shard.c tells it:
 * dj_bridge_up/down),
 * so it reconnects when Herald does and never on its own, except for its
 * inbox reader, which it reopens a second after losing it.
 *
 * Errors. Anything malformed, encrypted or unconvertible from Django is
 * dropped, counted (herald_django_bad_messages_total) and logged, at most
 * one line per second so a flood cannot flood the log.
 */
#include "django.h"
#include "layer_internal.h"
#include "redis_topo.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <uv.h>

#define TICK_MS 1000
/* BZPOPMIN's timeout; a reader that has heard nothing for this plus
 * READER_SLACK_S is presumed dead (a peer gone without a FIN). */
#define BLOCK_S 5
#define READER_SLACK_S 10
#define READER_CONNECT_MS 1500
#define READER_RETRY_MS 1000
#define BATCH "128"
#define STR_(x) #x
#define STR(x) STR_(x)

typedef struct dj_group {
    char *channel;
    char group[DJ_NAME_MAX];
    int wanted;   /* the node has subscribers of channel */
    int on_redis; /* SUBSCRIBE or ZADD sent and not undone */
} dj_group;

struct dj_bridge {
    chan_layer *layer;
    dj_mode mode;
    char *prefix;        /* Channels' prefix */
    char *group_topic;   /* pubsub: "<p>__group__" */
    char *group_key;     /* redis: "<p>:group:" */
    char *member_prefix; /* redis: "herald.<node>.<random>!" */
    char *inbox;         /* redis: "<p>herald.<node>.<random>!" */
    char *conn_name;     /* CLIENT SETNAME of the inbox reader */
    int group_expiry, expiry, capacity;
    size_t max_message;
    /* home thread */
    uv_loop_t *uv;
    uv_timer_t tick;
    int started, stopping, up;
    chan_rconn *cmd, *sub; /* the first shard's, while up */
    const hr_redis_addr *addr;
    chan_rconn *reader; /* the inbox reader (redis mode) */
    int reader_connected;
    uint64_t reader_retry_at;
    uint64_t renew_at;
    hr_map *groups; /* channel -> dj_group */
    uint64_t log_at;
    unsigned log_suppressed;
    /* any thread */
    atomic_ullong received, bad, forwarded, forward_failed;
};

/*---- Small helpers -----------------------------------------------------------*/

/* At most one line per second; the lines held back are counted in the
 * next one. */
__attribute__((format(printf, 2, 3))) static void dj_log(dj_bridge *b, const char *fmt, ...)
{
    uint64_t now = hr_now_ms();
    if (b->log_at && now - b->log_at < 1000) {
        b->log_suppressed++;
        return;
    }
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (b->log_suppressed)
        chan_log(b->layer, CHAN_LOG_WARN, "django",
                 "django: %s (and %u more such lines in the last second)", msg, b->log_suppressed);
    else
        chan_log(b->layer, CHAN_LOG_WARN, "django", "django: %s", msg);
    b->log_at = now;
    b->log_suppressed = 0;
}

static void bad(dj_bridge *b, const char *where, const char *why)
{
    atomic_fetch_add(&b->bad, 1);
    dj_log(b, "dropped a message from %s: %s", where, why);
}

/* Wall-clock seconds, as channels_redis scores its sorted sets. */
static double wall_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = hr_malloc(la + lb + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static void send_cmd(chan_rconn *c, chan_rconn_reply_fn fn, void *priv, int argc, const char **argv,
                     const size_t *lens)
{
    if (c)
        chan_rconn_command(c, fn, priv, argc, argv, lens);
}

/*---- Delivery ------------------------------------------------------------------*/

/* Hands a decoded message to this node's subscribers of channel. */
static void deliver(dj_bridge *b, const char *channel, const dj_message *m)
{
    dj_group *g = hr_map_get(b->groups, channel, strlen(channel));
    if (!g || !g->wanted)
        return; /* late: the last subscriber has left */
    chan_msg *msg = chan_msg_publication(channel, m->json, m->len, 0, NULL);
    chan_dispatch(b->layer, msg);
    chan_msg_unref(msg);
    atomic_fetch_add(&b->received, 1);
}

/* A message on the first shard's subscriber connection that is not
 * Herald's: the pubsub layer's group topics (topic: tlen bytes). */
void dj_bridge_message(dj_bridge *b, const char *topic, size_t tlen, const char *data, size_t len)
{
    char channel[DJ_NAME_MAX * 2], group[DJ_NAME_MAX + 1], err[160];
    size_t plen = b ? strlen(b->group_topic) : 0;
    if (!b || b->mode != DJ_PUBSUB || tlen <= plen || tlen - plen >= sizeof(group) ||
        memcmp(topic, b->group_topic, plen))
        return;
    memcpy(group, topic + plen, tlen - plen);
    group[tlen - plen] = '\0';
    if (dj_channel_of_group(group, channel, sizeof(channel)) < 0)
        return;
    dj_message m;
    if (dj_decode(data, len, b->max_message, &m, err, sizeof(err)) < 0) {
        char where[sizeof(group) + 64];
        snprintf(where, sizeof(where), "%s%s", b->group_topic, group);
        bad(b, where, err);
        return;
    }
    deliver(b, channel, &m);
    dj_message_clear(&m);
}

/* One entry of the node's inbox: 12 random bytes, then the message, whose
 * __asgi_channel__ lists the member names it is for. */
static void on_inbox_entry(dj_bridge *b, const char *data, size_t len)
{
    char channel[DJ_NAME_MAX * 2], err[160];
    if (len < 12) {
        bad(b, b->inbox, "shorter than channels_redis' 12-byte prefix");
        return;
    }
    data += 12;
    len -= 12;
    if (dj_looks_encrypted(data, len)) {
        bad(b, b->inbox,
            "the message is encrypted (symmetric_encryption_keys): Herald cannot read "
            "encrypted Channels layers");
        return;
    }
    dj_message m;
    if (dj_decode(data, len, b->max_message, &m, err, sizeof(err)) < 0) {
        bad(b, b->inbox, err);
        return;
    }
    size_t plen = strlen(b->member_prefix);
    int routed = 0;
    for (size_t i = 0; i < m.nroutes; i++) {
        if (strncmp(m.routes[i], b->member_prefix, plen) ||
            dj_channel_of_group(m.routes[i] + plen, channel, sizeof(channel)) < 0)
            continue;
        deliver(b, channel, &m);
        routed = 1;
    }
    if (!routed)
        bad(b, b->inbox, "__asgi_channel__ names none of this node's group memberships");
    dj_message_clear(&m);
}

/*---- Groups --------------------------------------------------------------------*/

static void group_join(dj_bridge *b, dj_group *g)
{
    if (b->mode == DJ_PUBSUB) {
        char *topic = concat(b->group_topic, g->group);
        const char *argv[2] = {"SUBSCRIBE", topic};
        send_cmd(b->sub, NULL, NULL, 2, argv, NULL); /* messages: dj_bridge_message */
        free(topic);
    } else {
        char *key = concat(b->group_key, g->group), *member = concat(b->member_prefix, g->group);
        char score[32], ttl[16];
        snprintf(score, sizeof(score), "%.6f", wall_now());
        snprintf(ttl, sizeof(ttl), "%d", b->group_expiry);
        const char *zadd[4] = {"ZADD", key, score, member};
        /* the group key lives max(its TTL, group_expiry): never shortened
         * under the Django project's own members */
        const char *nx[4] = {"EXPIRE", key, ttl, "NX"}, *gt[4] = {"EXPIRE", key, ttl, "GT"};
        send_cmd(b->cmd, NULL, NULL, 4, zadd, NULL);
        send_cmd(b->cmd, NULL, NULL, 4, nx, NULL);
        send_cmd(b->cmd, NULL, NULL, 4, gt, NULL);
        free(key);
        free(member);
    }
    g->on_redis = 1;
}

static void group_leave(dj_bridge *b, dj_group *g)
{
    if (b->mode == DJ_PUBSUB) {
        char *topic = concat(b->group_topic, g->group);
        const char *argv[2] = {"UNSUBSCRIBE", topic};
        send_cmd(b->sub, NULL, NULL, 2, argv, NULL);
        free(topic);
    } else {
        char *key = concat(b->group_key, g->group), *member = concat(b->member_prefix, g->group);
        const char *argv[3] = {"ZREM", key, member};
        send_cmd(b->cmd, NULL, NULL, 3, argv, NULL);
        free(key);
        free(member);
    }
    g->on_redis = 0;
}

static void group_free(void *p)
{
    dj_group *g = p;
    free(g->channel);
    free(g);
}

/* Brings Redis in line with what the node wants; forgets a group that
 * needs nothing any more. */
static void group_sync(dj_bridge *b, dj_group *g)
{
    if (b->up) {
        if (g->wanted && !g->on_redis)
            group_join(b, g);
        else if (!g->wanted && g->on_redis)
            group_leave(b, g);
    }
    if (!g->wanted && !g->on_redis)
        group_free(hr_map_del(b->groups, g->channel, strlen(g->channel)));
}

void dj_channel_open(dj_bridge *b, const char *channel)
{
    char group[DJ_NAME_MAX];
    if (!b || b->stopping || dj_group_of_channel(channel, group) < 0)
        return; /* no Django name: not bridged, no cost */
    size_t len = strlen(channel);
    dj_group *g = hr_map_get(b->groups, channel, len);
    if (!g) {
        g = hr_calloc(1, sizeof(*g));
        g->channel = hr_strdup(channel);
        memcpy(g->group, group, sizeof(group));
        hr_map_put(b->groups, channel, len, g);
    }
    g->wanted = 1;
    group_sync(b, g);
}

void dj_channel_close(dj_bridge *b, const char *channel)
{
    dj_group *g = b ? hr_map_get(b->groups, channel, strlen(channel)) : NULL;
    if (!g)
        return;
    g->wanted = 0;
    group_sync(b, g);
}

/* Re-adds every membership, so channels_redis' group_expiry never drops a
 * node that still has subscribers. */
static void renew_groups(dj_bridge *b)
{
    const char *key;
    void *val;
    for (size_t it = 0; hr_map_next(b->groups, &it, &key, NULL, &val);) {
        dj_group *g = val;
        if (g->wanted && g->on_redis)
            group_join(b, g);
    }
}

static uint64_t renew_period_ms(const dj_bridge *b)
{
    uint64_t ms = (uint64_t)b->group_expiry * 1000 / 4;
    return ms < 1000 ? 1000 : ms > 3600000 ? 3600000 : ms;
}

/*---- The inbox reader (redis mode) ---------------------------------------------*/

static void reader_next(dj_bridge *b, int block);

/* Lets the reader go; the commands it was waiting for are answered (r
 * NULL) on a connection that is not b->reader any more, and ignored. */
static void reader_drop(dj_bridge *b, uint64_t retry_ms)
{
    chan_rconn *c = b->reader;
    b->reader = NULL;
    b->reader_connected = 0;
    b->reader_retry_at = b->uv ? uv_now(b->uv) + retry_ms : 0;
    chan_rconn_close(c);
}

/* The answer to a pop (block: BZPOPMIN, else ZPOPMIN). */
static void reader_answer(dj_bridge *b, chan_rconn *c, const redisReply *r, int block)
{
    if (c != b->reader || !r)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        dj_log(b, "reading %s failed: %s", b->inbox, r->str);
        reader_drop(b, READER_RETRY_MS);
        return;
    }
    if (block) { /* BZPOPMIN: nil on timeout, else [key, member, score] */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            on_inbox_entry(b, r->element[1]->str, r->element[1]->len);
            if (c == b->reader)
                reader_next(b, 0);
        } else {
            reader_next(b, 1);
        }
        return;
    }
    /* ZPOPMIN key N: [member, score, member, score, ...] */
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    for (size_t i = 0; i < n; i++)
        if (r->element[2 * i]->type == REDIS_REPLY_STRING)
            on_inbox_entry(b, r->element[2 * i]->str, r->element[2 * i]->len);
    if (c == b->reader)
        reader_next(b, n < (size_t)atoi(BATCH));
}

static void reader_popped(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    (void)err;
    reader_answer(priv, c, r, 0);
}

static void reader_waited(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    (void)err;
    reader_answer(priv, c, r, 1);
}

/* Drains the inbox in batches; when it is empty, waits on it (BZPOPMIN
 * blocks this connection only: chan_rconn calls back when it answers). */
static void reader_next(dj_bridge *b, int block)
{
    if (block) {
        const char *argv[3] = {"BZPOPMIN", b->inbox, STR(BLOCK_S)};
        send_cmd(b->reader, reader_waited, b, 3, argv, NULL);
    } else {
        const char *argv[3] = {"ZPOPMIN", b->inbox, BATCH};
        send_cmd(b->reader, reader_popped, b, 3, argv, NULL);
    }
}

static void reader_ready(chan_rconn *c, void *ud)
{
    dj_bridge *b = ud;
    if (c != b->reader)
        return;
    b->reader_connected = 1;
    reader_next(b, 0);
}

/* The reader's connection ended: it could not connect (within
 * READER_CONNECT_MS), its setup was refused, it was lost, or a pop went
 * unanswered long after its timeout (a peer gone without a FIN). Opened
 * again READER_RETRY_MS later. */
static void reader_closed(chan_rconn *c, void *ud, const char *why)
{
    dj_bridge *b = ud;
    const char *text, *refused = chan_rconn_refused(c, &text);
    if (c != b->reader) {
        chan_rconn_close(c);
        return;
    }
    if (refused)
        dj_log(b, "setting up the inbox reader failed: %s", text);
    else if (b->reader_connected)
        dj_log(b, "the inbox reader's connection closed: %s", why);
    reader_drop(b, READER_RETRY_MS);
}

static void reader_open(dj_bridge *b)
{
    static const chan_rconn_ops ops = {reader_ready, reader_closed, NULL};
    chan_rconn_config cfg = {
        .host = b->addr->host,
        .port = b->addr->port,
        .user = b->addr->user,
        .password = b->addr->password,
        .db = b->addr->db,
        .client_name = b->conn_name,
        .connect_timeout_ms = READER_CONNECT_MS,
        .reply_timeout_ms = (BLOCK_S + READER_SLACK_S) * 1000,
        .ops = &ops,
        .ud = b,
    };
    b->reader = chan_rconn_open(b->uv, &cfg);
    b->reader_connected = 0;
}

/*---- Periodic work -------------------------------------------------------------*/

static void on_tick(uv_timer_t *t)
{
    dj_bridge *b = t->data;
    uint64_t now = uv_now(b->uv);
    if (!b->up || b->mode != DJ_REDIS)
        return;
    if (now >= b->renew_at) {
        renew_groups(b);
        b->renew_at = now + renew_period_ms(b);
    }
    if (!b->reader && now >= b->reader_retry_at)
        reader_open(b);
}

/*---- Life cycle (home thread) --------------------------------------------------*/

dj_bridge *dj_bridge_new(chan_layer *l, const chan_django_config *cfg, const char *herald_prefix,
                         const char *node_id, char *err, size_t errlen)
{
    if (cfg->mode != DJ_PUBSUB && cfg->mode != DJ_REDIS) {
        snprintf(err, errlen, "unknown Django Channels layer");
        return NULL;
    }
    dj_bridge *b = hr_calloc(1, sizeof(*b));
    char rnd[13], buf[200];
    b->layer = l;
    b->mode = cfg->mode;
    b->prefix = hr_strdup(cfg->prefix ? cfg->prefix : "asgi");
    b->group_expiry = cfg->group_expiry > 0 ? cfg->group_expiry : 86400;
    b->expiry = cfg->expiry > 0 ? cfg->expiry : 60;
    b->capacity = cfg->capacity > 0 ? cfg->capacity : 100;
    b->max_message = cfg->max_message ? cfg->max_message : 1 << 20;
    b->group_topic = concat(b->prefix, "__group__");
    b->group_key = concat(b->prefix, ":group:");
    hr_random_hex(rnd, 6);
    snprintf(buf, sizeof(buf), "herald.%s.%s!", node_id, rnd);
    b->member_prefix = hr_strdup(buf);
    b->inbox = concat(b->prefix, b->member_prefix);
    b->conn_name = hr_redis_key(herald_prefix, node_id, "django");
    for (char *p = b->conn_name; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = '_';
    b->groups = hr_map_new(group_free);
    atomic_init(&b->received, 0);
    atomic_init(&b->bad, 0);
    atomic_init(&b->forwarded, 0);
    atomic_init(&b->forward_failed, 0);
    return b;
}

void dj_bridge_free(dj_bridge *b)
{
    if (!b)
        return;
    hr_map_free(b->groups);
    free(b->prefix);
    free(b->group_topic);
    free(b->group_key);
    free(b->member_prefix);
    free(b->inbox);
    free(b->conn_name);
    free(b);
}

void dj_bridge_start(dj_bridge *b, void *uv_loop)
{
    if (!b)
        return;
    b->uv = uv_loop;
    uv_timer_init(b->uv, &b->tick);
    b->tick.data = b;
    uv_timer_start(&b->tick, on_tick, TICK_MS, TICK_MS);
    b->started = 1;
    chan_log(b->layer, CHAN_LOG_INFO, "django", "django: bridging %s layer (prefix \"%s\")%s%s",
             b->mode == DJ_PUBSUB ? "RedisPubSubChannelLayer" : "RedisChannelLayer", b->prefix,
             b->mode == DJ_REDIS ? ", this node's channel " : "",
             b->mode == DJ_REDIS ? b->member_prefix : "");
}

void dj_bridge_up(dj_bridge *b, struct chan_rconn *cmd, struct chan_rconn *sub,
                  const hr_redis_addr *addr)
{
    if (!b || b->stopping)
        return;
    b->cmd = cmd;
    b->sub = sub;
    b->addr = addr;
    b->up = 1;
    /* pubsub: the subscriptions died with the old connection; redis: the
     * memberships may have survived in Redis (a network cut) or not (a
     * restart) - ZADD the wanted ones again, ZREM the others */
    const char *key;
    void *val;
    for (size_t it = 0; hr_map_next(b->groups, &it, &key, NULL, &val);) {
        dj_group *g = val;
        if (b->mode == DJ_PUBSUB || g->wanted)
            g->on_redis = 0;
    }
    for (size_t it = 0; hr_map_next(b->groups, &it, &key, NULL, &val);) {
        dj_group *g = val;
        if (g->wanted)
            group_sync(b, g);
    }
    for (int again = 1; again;) { /* group_sync may delete: restart the walk */
        again = 0;
        for (size_t it = 0; hr_map_next(b->groups, &it, &key, NULL, &val);) {
            dj_group *g = val;
            if (!g->wanted) {
                group_sync(b, g);
                again = 1;
                break;
            }
        }
    }
    if (b->mode == DJ_REDIS) {
        b->renew_at = uv_now(b->uv) + renew_period_ms(b);
        reader_drop(b, 0);
        reader_open(b);
    }
}

void dj_bridge_down(dj_bridge *b)
{
    if (!b || !b->up)
        return;
    b->up = 0;
    b->cmd = b->sub = NULL;
    if (b->mode == DJ_REDIS)
        reader_drop(b, 0);
}

void dj_bridge_stop(dj_bridge *b)
{
    if (!b || b->stopping)
        return;
    b->stopping = 1;
    if (b->up && b->mode == DJ_REDIS) {
        const char *key;
        void *val;
        for (size_t it = 0; hr_map_next(b->groups, &it, &key, NULL, &val);) {
            dj_group *g = val;
            if (g->on_redis)
                group_leave(b, g);
        }
        const char *del[2] = {"DEL", b->inbox};
        send_cmd(b->cmd, NULL, NULL, 2, del, NULL);
    }
    b->up = 0;
    b->cmd = b->sub = NULL;
    reader_drop(b, 0);
    if (b->started)
        uv_close((uv_handle_t *)&b->tick, NULL);
}

void dj_bridge_stats(dj_bridge *b, chan_stats *out)
{
    if (!b)
        return;
    out->django_received += atomic_load(&b->received);
    out->django_bad += atomic_load(&b->bad);
    out->django_forwarded += atomic_load(&b->forwarded);
    out->django_forward_failed += atomic_load(&b->forward_failed);
}

/*---- Client publications to a Channels channel ---------------------------------*/

typedef struct fwd_task {
    chan_task task;
    dj_bridge *b;
    char *target, *channel, *user, *client, *data;
    size_t len;
    int whole;         /* data is the whole message (dj_send), not a publication's */
    chan_status_cb cb; /* dj_send's: the outcome, on the home thread */
    void *ud;
} fwd_task;

static void fwd_free(fwd_task *t)
{
    free(t->target);
    free(t->channel);
    free(t->user);
    free(t->client);
    free(t->data);
    free(t);
}

/* The task's outcome to dj_send's caller, then the task goes. */
static void fwd_end(fwd_task *t, int status)
{
    if (t->cb)
        t->cb(t->ud, status);
    fwd_free(t);
}

static void fwd_failed(dj_bridge *b, const char *target, const char *why)
{
    atomic_fetch_add(&b->forward_failed, 1);
    dj_log(b, "a message for Channels channel %s was not sent: %s", target, why);
}

/* channels_redis' send(): expired entries out, ChannelFull at capacity,
 * ZADD scored by time, EXPIRE - here in one step. */
static const char send_script[] =
    "local now = tonumber(ARGV[2])\n"
    "local expiry = tonumber(ARGV[3])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(now) - expiry)\n"
    "if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[4]) then return 0 end\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('EXPIRE', KEYS[1], expiry)\n"
    "return 1\n";

static void fwd_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    fwd_task *t = priv;
    dj_bridge *b = t->b;
    (void)c;
    if (!r)
        fwd_failed(b, t->target, err ? err : "the Redis connection closed");
    else if (r->type == REDIS_REPLY_ERROR)
        fwd_failed(b, t->target, r->str);
    else if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        fwd_failed(b, t->target,
                   b->mode == DJ_PUBSUB ? "no Django process is receiving on it"
                                        : "the channel is full (capacity)");
    else {
        atomic_fetch_add(&b->forwarded, 1);
        fwd_end(t, 0);
        return;
    }
    fwd_end(t, -1);
}

static void fwd_run(chan_task *ct)
{
    fwd_task *t = (fwd_task *)ct;
    dj_bridge *b = t->b;
    hr_buf body = {0};
    if (!b->up || !b->cmd) {
        fwd_failed(b, t->target, "Redis is unreachable");
        fwd_end(t, -1);
        return;
    }
    if (b->mode == DJ_REDIS) {
        unsigned char rnd[12];
        hr_random_bytes(rnd, sizeof(rnd));
        hr_buf_append(&body, rnd, sizeof(rnd));
    }
    if (t->whole
            ? dj_encode_json(&body, t->data, t->len) < 0
            : dj_encode_publication(&body, t->channel, t->user, t->client, t->data, t->len) < 0) {
        fwd_failed(b, t->target, "the data is not JSON");
        hr_buf_reset(&body);
        fwd_end(t, -1);
        return;
    }
    if (b->mode == DJ_PUBSUB) {
        const char *argv[3] = {"PUBLISH", t->target, body.data};
        size_t lens[3] = {7, strlen(t->target), body.len};
        if (chan_rconn_command(b->cmd, fwd_reply, t, 3, argv, lens) < 0) {
            fwd_failed(b, t->target, "Redis is unreachable");
            fwd_end(t, -1);
        }
    } else {
        char *key = concat(b->prefix, t->target);
        char now[32], expiry[16], cap[16];
        snprintf(now, sizeof(now), "%.6f", wall_now());
        snprintf(expiry, sizeof(expiry), "%d", b->expiry);
        snprintf(cap, sizeof(cap), "%d", b->capacity);
        const char *argv[8] = {"EVAL", send_script, "1", key, body.data, now, expiry, cap};
        size_t lens[8] = {4,           sizeof(send_script) - 1, 1,          strlen(key), body.len,
                          strlen(now), strlen(expiry),          strlen(cap)};
        if (chan_rconn_command(b->cmd, fwd_reply, t, 8, argv, lens) < 0) {
            fwd_failed(b, t->target, "Redis is unreachable");
            fwd_end(t, -1);
        }
        free(key);
    }
    hr_buf_reset(&body);
}

static void fwd_discard(chan_task *ct)
{
    fwd_end((fwd_task *)ct, -1);
}

void dj_forward(dj_bridge *b, const char *target, const char *channel, const char *user,
                const char *client, const char *data_json, size_t data_len)
{
    if (!b)
        return;
    chan_layer *l = b->layer;
    fwd_task *t = hr_calloc(1, sizeof(*t));
    t->task = (chan_task){fwd_run, fwd_discard};
    t->b = b;
    t->target = hr_strdup(target);
    t->channel = hr_strdup(channel);
    t->user = hr_strdup(user ? user : "");
    t->client = hr_strdup(client);
    t->data = hr_strndup(data_json, data_len);
    t->len = data_len;
    l->host.call(l->host.ud, 0, &t->task);
}

void dj_send(dj_bridge *b, const char *target, const char *json, size_t len, chan_status_cb cb,
             void *ud)
{
    if (!b) {
        if (cb)
            cb(ud, -ENOTSUP);
        return;
    }
    fwd_task *t = hr_calloc(1, sizeof(*t));
    t->task = (chan_task){fwd_run, fwd_discard};
    t->b = b;
    t->target = hr_strdup(target);
    t->data = hr_strndup(json, len);
    t->len = len;
    t->whole = 1;
    t->cb = cb;
    t->ud = ud;
    b->layer->host.call(b->layer->host.ud, 0, &t->task);
}
