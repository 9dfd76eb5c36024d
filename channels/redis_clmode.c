/*
 * redis_clmode.c - the Redis layer on a Redis Cluster (redis+cluster://,
 * SPEC section 5 "High availability"; see redis_internal.h and
 * docs/internals/redis-ha.md).
 *
 * One logical shard: the cluster shards by slot. Every key and topic of
 * channel C carries the hash tag {C} (rd_key), so the function that
 * records a publication runs in one slot, and publications use sharded
 * pub/sub (SPUBLISH/SSUBSCRIBE): a publication touches only its slot's
 * master, and a node's subscriptions are spread over the masters.
 *
 * Managers (chan_rcluster, redis_topo.h): the home (loop 0) owns one for
 * its commands (subscriptions' stream reads, recovery, history upkeep) and
 * for every channel's sharded subscription plus the control topic's
 * (one SSUBSCRIBE per slot per node, batched, pipelined; resubscribed
 * where the map says after a failover or a slot migration); every other
 * loop owns one for its own commands. FUNCTION LOAD REPLACE is each
 * manager's init command, so every master has the library as soon as a
 * manager talks to it: after a failover and on a new node too.
 *
 * Availability is per slot. The shard is up (readyz 200) while the home's
 * manager has a reachable, initialised master for every slot and the
 * control topic is subscribed. A channel whose slot has no reachable
 * master is in an outage of its own (rd_route_up: plain channels local,
 * history channels unavailable), the others go on; when its subscription
 * comes back (active 1 after 0) it is renewed as after an outage.
 */
#include "redis_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Commands -----------------------------------------------------------------------*/

/* The manager answers (priv, r, err); the layer's callbacks take the
 * connection first (NULL here). */
typedef struct tramp {
    chan_rconn_reply_fn cb;
    void *priv;
} tramp;

static void tramp_reply(void *priv, const redisReply *r, const char *err)
{
    tramp t = *(tramp *)priv;
    free(priv);
    t.cb(NULL, t.priv, r, err);
}

int rd_cluster_slot(redis_layer *L, const char *channel)
{
    if (!channel)
        return chan_key_slot(L->control_topic, strlen(L->control_topic));
    return chan_channel_slot(channel);
}

int rd_cluster_cmd(redis_layer *L, chan_rcluster *cl, const char *channel, chan_rconn_reply_fn cb,
                   void *priv, int argc, const char **argv, const size_t *lens)
{
    tramp *t = NULL;
    if (cb) {
        t = hr_malloc(sizeof(*t));
        t->cb = cb;
        t->priv = priv;
    }
    if (chan_rcluster_command_slot(cl, rd_cluster_slot(L, channel), cb ? tramp_reply : NULL, t,
                                   argc, argv, lens) < 0) {
        free(t);
        return -EAGAIN;
    }
    return 0;
}

int rd_cluster_chan_up(redis_layer *L, const char *channel)
{
    return chan_rcluster_slot_ready(L->cl, rd_cluster_slot(L, channel));
}

/*---- Subscriptions (home) -------------------------------------------------------------*/

void rd_cluster_sync(rchan *c)
{
    redis_layer *L = c->sh->L;
    if (!L->cl || c->wanted == c->on_redis)
        return;
    char *topic = rd_topic(L, c->name);
    if (c->wanted) {
        chan_rcluster_ssubscribe(L->cl, topic); /* `subscribed` says when it is active */
    } else {
        chan_rcluster_sunsubscribe(L->cl, topic);
        c->confirmed = c->was_active = c->renew = 0;
    }
    c->on_redis = c->wanted;
    free(topic);
}

/* "<p>:ch:{C}" -> C (clen bytes, pointing into topic), or 0. */
static int topic_channel(redis_layer *L, const char *topic, size_t tlen, const char **channel,
                         size_t *clen)
{
    size_t plen = strlen(L->prefix);
    if (tlen <= plen + 6 || memcmp(topic, L->prefix, plen) || memcmp(topic + plen, ":ch:{", 5) ||
        topic[tlen - 1] != '}')
        return 0;
    *channel = topic + plen + 5;
    *clen = tlen - plen - 6;
    return 1;
}

static void home_update_up(redis_layer *L);

static void on_subscribed(void *ud, const char *topic, int active)
{
    redis_layer *L = ud;
    shard *sh = &L->shards[0];
    const char *channel;
    size_t clen;
    if (!strcmp(topic, L->control_topic)) {
        if (active && L->control_was_active) {
            /* control messages may have been missed meanwhile */
            chan_control resync = {.op = CHAN_CTL_RESYNC};
            L->base.host.control(L->base.host.ud, &resync);
        }
        L->control_active = active;
        L->control_was_active |= active;
        home_update_up(L);
        return;
    }
    if (!topic_channel(L, topic, strlen(topic), &channel, &clen))
        return;
    rchan *c = chan_tab_get(&sh->channels, channel, clen, chan_hash(channel, clen));
    if (c)
        rd_rchan_active(L, c, active);
}

static void on_smessage(void *ud, const char *topic, const char *payload, size_t len)
{
    redis_layer *L = ud;
    const char *channel;
    size_t clen, tlen = strlen(topic);
    if (!strcmp(topic, L->control_topic))
        rd_control_receive(L, payload, len);
    else if (topic_channel(L, topic, tlen, &channel, &clen))
        rd_on_message(L, &L->shards[0], channel, clen, payload, len);
}

/*---- Readiness (home) -----------------------------------------------------------------*/

static void home_update_up(redis_layer *L)
{
    shard *sh = &L->shards[0];
    int up = L->cl_ready && L->control_active && !L->stopping;
    if (up == sh->up)
        return;
    sh->up = up;
    atomic_store_explicit(&sh->up_seen, up, memory_order_release);
    atomic_fetch_add(&L->shards_up, up ? 1 : -1);
    if (!up) {
        chan_log(&L->base, CHAN_LOG_WARN, "redis_shard_down", "redis cluster is down: %s",
                 L->control_active ? "a slot has no reachable master"
                                   : "the control topic is not subscribed");
        return;
    }
    if (sh->was_up)
        atomic_fetch_add(&L->reconnects, 1);
    sh->was_up = 1;
    chan_log(&L->base, CHAN_LOG_INFO, "redis_shard_up",
             "redis cluster is up: every slot has a reachable master");
    rd_loops_shard_up(L, sh); /* presence entries go out again */
}

static void on_ready(void *ud, int ready)
{
    redis_layer *L = ud;
    shard *sh = &L->shards[0];
    L->cl_ready = ready;
    home_update_up(L);
    if (ready)
        return;
    /* subscriptions waiting for a slot without a reachable master are
     * answered as in an outage rather than held until it is back */
    const char *key;
    void *val;
    size_t n = 0, i = 0;
    for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);)
        n += ((rchan *)val)->waiters && !((rchan *)val)->confirmed;
    if (!n)
        return;
    rchan **down = hr_calloc(n, sizeof(*down));
    for (size_t it = 0; chan_tab_next(&sh->channels, &it, &key, NULL, &val);) {
        rchan *c = val;
        if (c->waiters && !c->confirmed && !rd_cluster_chan_up(L, c->name))
            down[i++] = c;
    }
    for (size_t k = 0; k < i; k++)
        rd_run_waiters(L, down[k], 0); /* cannot free c: it is wanted */
    free(down);
}

/*---- Managers ---------------------------------------------------------------------------*/

static void home_log(void *ud, int level, const char *event, const char *msg)
{
    redis_layer *L = ud;
    chan_log(&L->base, level, event, "%s", msg);
}

static void loop_log(void *ud, int level, const char *event, const char *msg)
{
    rd_loop *lp = ud;
    chan_log(&lp->L->base, level, event, "loop %u: %s", lp->index, msg);
}

static void loop_ready(void *ud, int ready)
{
    rd_loop *lp = ud;
    if (ready) /* its subscribers' presence entries (a new master has none) */
        rd_loop_announce(lp, &lp->L->shards[0]);
}

static chan_rcluster *manager(redis_layer *L, uv_loop_t *uv, const char *role,
                              chan_rcluster_config *cfg)
{
    const hr_redis_target *t = L->shards[0].target;
    const char *load[4] = {"FUNCTION", "LOAD", "REPLACE", L->library};
    chan_rcmd init = {4, load, NULL};
    char *name = rd_conn_name(L, role);
    cfg->seeds = t->hosts;
    cfg->nseeds = t->nhosts;
    cfg->user = t->node.user;
    cfg->password = t->node.password;
    cfg->client_name = name;
    cfg->connect_timeout_ms = CONNECT_TIMEOUT_MS;
    cfg->init = &init;
    cfg->ninit = 1;
    chan_rcluster *cl = chan_rcluster_start(uv, cfg); /* copies the config */
    free(name);
    return cl;
}

void rd_cluster_start(redis_layer *L)
{
    chan_rcluster_config cfg = {
        .ready = on_ready,
        .subscribed = on_subscribed,
        .message = on_smessage,
        .log = home_log,
        .ud = L,
    };
    L->cl = manager(L, L->uv, "cluster", &cfg);
    chan_rcluster_ssubscribe(L->cl, L->control_topic);
}

void rd_cluster_stop(redis_layer *L)
{
    chan_rcluster *cl = L->cl;
    L->cl = NULL; /* before its callbacks run: nothing is sent there any more */
    chan_rcluster_stop(cl);
}

void rd_cluster_loop_start(rd_loop *lp)
{
    char role[24];
    snprintf(role, sizeof(role), "cmd%u", lp->index);
    chan_rcluster_config cfg = {.ready = loop_ready, .log = loop_log, .ud = lp};
    lp->cl = manager(lp->L, lp->uv, role, &cfg);
}

void rd_cluster_loop_stop(rd_loop *lp)
{
    chan_rcluster *cl = lp->cl;
    lp->cl = NULL;
    chan_rcluster_stop(cl);
}
