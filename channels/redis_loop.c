/*
 * redis_loop.c - each loop thread's own part of the Redis layer, touched by
 * that thread only (redis_internal.h):
 *
 *   - a command connection per shard (rd_lconn), so what a loop asks of
 *     Redis - publications, history and presence reads, control messages,
 *     its subscribers' presence entries and join/leave - goes out and is
 *     answered on that loop, without a hop through loop 0 and back. Loop 0
 *     uses its shards' home `cmd` connections (one connection fewer per
 *     shard; with one loop thread the node has exactly its two connections
 *     per shard). A loop's connection opens when the shard first comes up
 *     (or on first use), is opened again with backoff after it was lost,
 *     and only carries commands while the home says the shard is up (the
 *     functions are loaded there; during an outage nothing is queued);
 *   - the presence entries of the loop's subscribers, set when their
 *     subscription completes and before they hear the answer (so their own
 *     next command, on the same connection, sees them), deleted when they
 *     leave, refreshed every presence_ttl/3 and announced again when a
 *     shard comes back, on the same connection as everything else the
 *     subscriber does.
 *
 * Nothing of the subscription state lives here: SUBSCRIBE stays one per
 * channel per node on the home's `sub` connection (SPEC section 5).
 */
#include "redis_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void lconn_open(rd_lconn *lc);
static void announce(rd_loop *lp, shard *sh);

/*---- The loop's connections ----------------------------------------------------*/

static void lconn_ready(chan_rconn *c, void *ud)
{
    rd_lconn *lc = ud;
    if (c != lc->c)
        return;
    lc->attempt = 0;
    /* a connection (re)opened while the shard is up: what the loop's
     * subscribers are present on there goes out again (after a lost
     * connection the shard itself may never have gone down) */
    if (rd_shard_up(lc->sh))
        announce(lc->lp, lc->sh);
}

static void on_retry(uv_timer_t *t)
{
    rd_lconn *lc = t->data;
    if (!lc->c && !lc->lp->stopped && rd_shard_up(lc->sh))
        lconn_open(lc);
}

/* Lost (or never made): the commands it carried were answered (r NULL)
 * before this runs. The first time, a new one opens when next needed (a
 * command, the presence refresh, the shard coming up); after a new one
 * failed too, not before a backoff. */
static void lconn_closed(chan_rconn *c, void *ud, const char *why)
{
    rd_lconn *lc = ud;
    int ours = c == lc->c;
    chan_rconn_close(c);
    if (!ours)
        return;
    lc->c = NULL;
    /* said when the shard is up (during an outage the shard's own line
     * says it all) */
    chan_log(&lc->lp->L->base, rd_shard_up(lc->sh) ? CHAN_LOG_INFO : CHAN_LOG_DEBUG,
             "redis_loop_conn", "loop %u's connection to redis shard %d closed: %s", lc->lp->index,
             lc->sh->index, why);
    if (!lc->lp->stopped && lc->attempt++ > 0)
        uv_timer_start(&lc->retry, on_retry, chan_backoff_ms(lc->attempt - 2), 0);
}

static void lconn_open(rd_lconn *lc)
{
    static const chan_rconn_ops ops = {lconn_ready, lconn_closed, NULL};
    rd_loop *lp = lc->lp;
    char role[24];
    snprintf(role, sizeof(role), "cmd%u", lp->index);
    uv_timer_stop(&lc->retry);
    lc->c = rd_conn_open(lc->sh, lp->uv, role, 0, &ops, lc, &lc->gen);
}

/* The connection to use now, or NULL: loop 0's is the home's. One to a
 * master the sentinels have replaced since it was opened goes (after
 * answering what it carried) and a new one opens at the new address. */
static chan_rconn *lconn_get(rd_loop *lp, shard *sh)
{
    if (lp->stopped || !lp->started)
        return NULL;
    if (lp->index == 0)
        return sh->cmd;
    rd_lconn *lc = &lp->conns[sh->index];
    if (lc->c && lc->gen != atomic_load(&sh->gen)) {
        chan_rconn *old = lc->c;
        lc->c = NULL;
        lc->attempt = 0;
        rd_retire(lp->uv, &lp->retired, old);
    }
    if (!lc->c && !uv_is_active((uv_handle_t *)&lc->retry))
        lconn_open(lc);
    return lc->c;
}

int rd_lconn_cmd(rd_loop *lp, shard *sh, const char *channel, chan_rconn_reply_fn cb, void *priv,
                 int argc, const char **argv, const size_t *lens)
{
    if (lp->L->mode == HR_REDIS_CLUSTER) {
        chan_rcluster *cl = lp->index == 0 ? lp->L->cl : lp->cl;
        if (lp->stopped || !lp->started)
            return -EAGAIN;
        return rd_cluster_cmd(lp->L, cl, channel, cb, priv, argc, argv, lens);
    }
    chan_rconn *c = lconn_get(lp, sh);
    if (!c || chan_rconn_command(c, cb, priv, argc, argv, lens) < 0)
        return -EAGAIN;
    return 0;
}

int rd_route_up(rd_loop *lp, shard *sh, const char *channel)
{
    if (lp->L->mode != HR_REDIS_CLUSTER)
        return rd_shard_up(sh);
    chan_rcluster *cl = lp->index == 0 ? lp->L->cl : lp->cl;
    return chan_rcluster_slot_ready(cl, rd_cluster_slot(lp->L, channel));
}

rd_req *rd_req_new(rd_loop *lp, void *cb, void *ud, size_t size)
{
    rd_req *q = hr_calloc(1, size);
    q->lp = lp;
    q->cb = cb;
    q->ud = ud;
    chan_inflight(&lp->L->base, lp->index, 1);
    return q;
}

int rd_req_done(rd_req *q)
{
    chan_inflight(&q->lp->L->base, q->lp->index, -1);
    return !q->lp->stopped;
}

/*---- Presence entries of the loop's subscribers -----------------------------------*/

static char *presence_entry(const char *client, const char *user, const char *info)
{
    json_t *i = info ? json_loads(info, 0, NULL) : NULL;
    json_t *o = json_pack("{s:s, s:s, s:o}", "client", client, "user", user ? user : "", "info",
                          i ? i : json_object());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        abort(); /* out of memory: common.h's policy */
    return s;
}

/* FCALL <fn>_presence_set for up to PRESENCE_BATCH entries of pc each (one
 * entry: client and entry given). */
#define PRESENCE_BATCH 100

static void presence_set(rd_loop *lp, rd_pchan *pc, const char *client, const char *entry)
{
    redis_layer *L = lp->L;
    char ttl[16], *k;
    const char *argv[7 + 2 * PRESENCE_BATCH];
    int head = rd_fcall(L, argv, L->f_presence_set, pc->name, &k);
    argv[head++] = pc->name;
    argv[head++] = ttl;
    int argc = head;
    snprintf(ttl, sizeof(ttl), "%d", L->presence_ttl);
    if (client) {
        argv[argc++] = client;
        argv[argc++] = entry;
        rd_lconn_cmd(lp, pc->sh, pc->name, NULL, NULL, argc, argv, NULL);
        free(k);
        return;
    }
    const char *key;
    void *val;
    for (size_t it = 0; hr_map_next(pc->members, &it, &key, NULL, &val);) {
        argv[argc++] = key;
        argv[argc++] = val;
        if (argc == head + 2 * PRESENCE_BATCH) {
            rd_lconn_cmd(lp, pc->sh, pc->name, NULL, NULL, argc, argv, NULL);
            argc = head;
        }
    }
    if (argc > head)
        rd_lconn_cmd(lp, pc->sh, pc->name, NULL, NULL, argc, argv, NULL);
    free(k);
}

static void publish_text(rd_loop *lp, rd_pchan *pc, const char *text, size_t len)
{
    char *topic = rd_topic(lp->L, pc->name);
    const char *cmd = rd_publish_cmd(lp->L);
    const char *argv[3] = {cmd, topic, text};
    size_t lens[3] = {strlen(cmd), strlen(topic), len};
    rd_lconn_cmd(lp, pc->sh, pc->name, NULL, NULL, 3, argv, lens);
    free(topic);
}

/* Writes what was queued for pc's channel now (see rd_loop_member_add);
 * in Redis Cluster mode the manager writes in the same loop iteration. */
static void flush_for(rd_loop *lp, rd_pchan *pc)
{
    if (lp->L->mode != HR_REDIS_CLUSTER)
        chan_rconn_flush(lconn_get(lp, pc->sh));
}

static void pchan_free(void *p)
{
    rd_pchan *pc = p;
    hr_map_free(pc->members);
    free(pc);
}

void rd_loop_member_add(rd_loop *lp, chan_sub *s)
{
    if (!s->client || !(s->opts.presence || s->opts.join_leave))
        return;
    size_t len = strlen(s->channel), klen = strlen(s->client);
    rd_pchan *pc = chan_tab_get(&lp->presence, s->channel, len, s->hash);
    if (!pc) {
        pc = hr_calloc(1, sizeof(*pc) + len + 1);
        pc->sh = rd_shard_of(lp->L, s->channel);
        pc->hash = s->hash;
        pc->presence = s->opts.presence;
        pc->members = hr_map_new(free);
        memcpy(pc->name, s->channel, len + 1);
        chan_tab_put(&lp->presence, s->channel, len, s->hash, pc);
    }
    char *entry = presence_entry(s->client, s->user, s->info);
    free(hr_map_del(pc->members, s->client, klen));
    hr_map_put(pc->members, s->client, klen, entry);
    if (!rd_route_up(lp, pc->sh, pc->name))
        return; /* announced when the shard is back */
    if (s->opts.presence)
        presence_set(lp, pc, s->client, entry);
    if (s->opts.join_leave) {
        size_t tlen;
        char *txt = chan_join_leave_text(1, pc->name, s->client, s->user, &tlen);
        publish_text(lp, pc, txt, tlen);
        free(txt);
    }
    /* on its way to Redis before the subscriber hears the answer (written
     * later in this loop iteration), so whoever reads presence after that
     * finds the entry */
    flush_for(lp, pc);
}

void rd_loop_member_remove(rd_loop *lp, chan_sub *s)
{
    if (!s->client || !(s->opts.presence || s->opts.join_leave))
        return;
    size_t len = strlen(s->channel);
    rd_pchan *pc = chan_tab_get(&lp->presence, s->channel, len, s->hash);
    char *entry = pc ? hr_map_del(pc->members, s->client, strlen(s->client)) : NULL;
    if (!entry)
        return; /* still pending: never announced */
    free(entry);
    if (rd_route_up(lp, pc->sh, pc->name)) {
        redis_layer *L = lp->L;
        if (s->opts.presence) {
            char *hk = rd_key(L, "presence", pc->name);
            char *zk = rd_key(L, "presence-exp", pc->name);
            const char *a1[3] = {"HDEL", hk, s->client}, *a2[3] = {"ZREM", zk, s->client};
            rd_lconn_cmd(lp, pc->sh, pc->name, NULL, NULL, 3, a1, NULL);
            rd_lconn_cmd(lp, pc->sh, pc->name, NULL, NULL, 3, a2, NULL);
            free(hk);
            free(zk);
        }
        if (s->opts.join_leave) {
            size_t tlen;
            char *txt = chan_join_leave_text(0, pc->name, s->client, s->user, &tlen);
            publish_text(lp, pc, txt, tlen);
            free(txt);
        }
    }
    if (hr_map_count(pc->members) == 0)
        pchan_free(chan_tab_del(&lp->presence, pc->name, len, pc->hash));
}

/* Every presence entry of the loop's subscribers on shard sh (NULL: on
 * every shard that is up; in Redis Cluster mode, of every channel whose
 * slot's master is reachable). */
static void announce(rd_loop *lp, shard *sh)
{
    const char *key;
    void *val;
    for (size_t it = 0; chan_tab_next(&lp->presence, &it, &key, NULL, &val);) {
        rd_pchan *pc = val;
        if (pc->presence && (sh ? pc->sh == sh : rd_route_up(lp, pc->sh, pc->name)))
            presence_set(lp, pc, NULL, NULL);
    }
}

void rd_loop_announce(rd_loop *lp, shard *sh)
{
    if (!lp->stopped && lp->started)
        announce(lp, sh);
}

/* Entries expire presence_ttl after they were last written: a node that
 * dies leaves its subscribers behind for that long at most. */
static void on_tick(uv_timer_t *t)
{
    announce(t->data, NULL);
}

/* Home -> every loop: shard `index` is up. */
typedef struct up_task {
    chan_task task;
    redis_layer *L;
    unsigned thread;
    int index;
} up_task;

static void up_run(chan_task *ct)
{
    up_task *t = (up_task *)ct;
    rd_loop *lp = &t->L->loops[t->thread];
    shard *sh = &t->L->shards[t->index];
    free(t);
    if (lp->stopped || !lp->started)
        return;
    if (lp->index == 0 || lp->L->mode == HR_REDIS_CLUSTER) {
        announce(lp, sh); /* the home's cmd: up means ready; a cluster's managers route */
        return;
    }
    rd_lconn *lc = &lp->conns[sh->index];
    if (!lc->c)
        lconn_open(lc); /* lconn_ready announces */
    else if (chan_rconn_ready(lc->c))
        announce(lp, sh);
}

static void up_discard(chan_task *ct)
{
    free(ct);
}

void rd_loops_shard_up(redis_layer *L, shard *sh)
{
    for (unsigned th = 0; th < L->base.host.nthreads; th++) {
        up_task *t = hr_calloc(1, sizeof(*t));
        t->task = (chan_task){up_run, up_discard};
        t->L = L;
        t->thread = th;
        t->index = sh->index;
        rd_to_loop(L, th, &t->task);
    }
}

/*---- Life cycle -------------------------------------------------------------------*/

void rd_loop_init(rd_loop *lp, redis_layer *L, unsigned index)
{
    lp->L = L;
    lp->index = index;
    lp->conns = hr_calloc((size_t)L->nshards, sizeof(*lp->conns));
    for (int i = 0; i < L->nshards; i++) {
        lp->conns[i].lp = lp;
        lp->conns[i].sh = &L->shards[i];
    }
    chan_tab_init(&lp->presence);
}

int rd_loop_start(rd_loop *lp, uv_loop_t *uv)
{
    redis_layer *L = lp->L;
    unsigned every = (unsigned)(L->presence_ttl * 1000 / 3 / TICK_MS);
    lp->uv = uv;
    for (int i = 0; i < L->nshards; i++) {
        uv_timer_init(uv, &lp->conns[i].retry);
        lp->conns[i].retry.data = &lp->conns[i];
    }
    uv_timer_init(uv, &lp->tick);
    lp->tick.data = lp;
    uint64_t period = (uint64_t)(every ? every : 1) * TICK_MS;
    uv_timer_start(&lp->tick, on_tick, period, period);
    lp->started = 1;
    if (L->mode == HR_REDIS_CLUSTER && lp->index > 0)
        rd_cluster_loop_start(lp);
    return 0;
}

void rd_loop_stop(rd_loop *lp)
{
    if (!lp->started || lp->stopped)
        return;
    lp->stopped = 1;
    uv_close((uv_handle_t *)&lp->tick, NULL);
    rd_cluster_loop_stop(lp);
    for (int i = 0; i < lp->L->nshards; i++) {
        rd_lconn *lc = &lp->conns[i];
        chan_rconn *c = lc->c;
        lc->c = NULL;
        uv_close((uv_handle_t *)&lc->retry, NULL);
        rd_retire(lp->uv, &lp->retired, c); /* the last leaves and deletions go out */
    }
}

void rd_loop_free(rd_loop *lp)
{
    chan_tab_clear(&lp->presence, pchan_free);
    free(lp->conns);
}
