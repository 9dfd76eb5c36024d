/*
 * redis_cluster.c - the Redis Cluster topology manager (see redis_topo.h
 * for the contract): the slot map, a command connection and a sharded
 * pub/sub connection per node, MOVED/ASK/TRYAGAIN, and shard channels
 * kept subscribed at their slot's master through failovers and slot
 * migrations.
 *
 * Nodes are known by "host:port" and kept until the manager stops (a
 * cluster has few), so requests and subscriptions may point at them.
 * Callbacks from a connection we have let go of are recognised by
 * comparing it with the one the node holds (we forget the pointer before
 * closing).
 *
 * Everything that may call back into the owner while we walk our own maps
 * (subscription changes found during a resync) is collected first and
 * reported after the walk, so the owner may (un)subscribe from inside.
 *
 * Why one file of ~970 lines: the slot map, the per-node connections and
 * the shard channels' moves change together on every map read (a move is
 * decided from the map and carried out on the connections), and redis_topo.h
 * is their one interface; the slot parsing that stands apart is in
 * redis_slots.c.
 */
#include "redis_topo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REDIRECTS 5
#define TRYAGAIN_MS 50
#define DEFAULT_REFRESH_MS 10000
#define DEFAULT_REPLY_TIMEOUT_MS 5000
#define LEFT_REREADS 3 /* map reads that may still name a node that left a channel */

typedef struct cnode {
    chan_rcluster *cl;
    char *host;
    int port;
    char *key; /* "host:port" */
    chan_rconn *cmd, *sub;
    int cmd_ready;    /* connected and every init command succeeded */
    int pending_init; /* init replies still to come */
    int is_master;    /* in the current map */
    uint64_t down_until;
    unsigned attempt;
} cnode;

typedef struct schan {
    char *name;
    int slot;
    cnode *at;  /* where it is subscribed, or being subscribed; NULL: nowhere */
    int active; /* confirmed there (and reported) */
    /* The node that unsubscribed it by itself (its slot moved), and the
     * first map read that may say where the slot went: until that read is
     * applied, the channel is not subscribed at that node again. The map
     * still names it, and a master demoted by a failover is now a replica
     * that accepts SSUBSCRIBE, so it would go active there and inactive
     * again when the map is read: two outages for one move. */
    cnode *left;
    unsigned left_read, left_tries;
} schan;

typedef struct creq {
    chan_rcluster *cl;
    chan_rcluster_reply_fn cb;
    void *priv;
    int argc;
    char **argv;
    size_t *lens;
    int slot;
    int redirects;
    int asking;
    char ask_host[256];
    int ask_port;
    cnode *node; /* where it was sent last */
    uint64_t retry_at;
    struct creq *next;
} creq;

struct chan_rcluster {
    uv_loop_t *loop;
    hr_redis_addr *seeds;
    int nseeds;
    char *user, *pass, *client_name;
    unsigned connect_timeout_ms, reply_timeout_ms, refresh_ms;
    chan_rcmd *init;
    int ninit;
    void (*map_cb)(void *ud, const chan_slotmap *m);
    void (*ready_cb)(void *ud, int ready);
    void (*subscribed_cb)(void *ud, const char *channel, int active);
    void (*message_cb)(void *ud, const char *channel, const char *payload, size_t len);
    chan_rlog_fn log;
    void *ud;

    hr_map *nodes; /* "host:port" -> cnode */
    hr_map *chans; /* channel -> schan */
    chan_slotmap *map;
    int ready;

    /* map reads */
    chan_rconn *q;
    char q_host[256]; /* q's host: what an empty endpoint in its answer means */
    int q_next;       /* rotation over seeds and known nodes */
    int reading, read_again;
    unsigned read_attempt;
    unsigned reads_sent, read_applied; /* map reads sent; the last one applied */

    creq *retry_head;
    int stopping, timers;
    uv_timer_t refresh, soon, retry, sync;
};

static void read_map(chan_rcluster *cl);
static void read_soon(chan_rcluster *cl, uint64_t ms);
static void sync_soon(chan_rcluster *cl);
static void update_ready(chan_rcluster *cl);

static void drop(chan_rconn **c)
{
    chan_rconn *old = *c;
    *c = NULL; /* before closing: its callbacks then see it is not ours */
    chan_rconn_close(old);
}

/*---- Nodes ---------------------------------------------------------------------------*/

static void node_free(void *p)
{
    cnode *n = p;
    free(n->host);
    free(n->key);
    free(n);
}

static cnode *node_get(chan_rcluster *cl, const char *host, int port)
{
    char key[300];
    snprintf(key, sizeof(key), "%s:%d", host, port);
    cnode *n = hr_map_get(cl->nodes, key, strlen(key));
    if (!n) {
        n = hr_calloc(1, sizeof(*n));
        n->cl = cl;
        n->host = hr_strdup(host);
        n->port = port;
        n->key = hr_strdup(key);
        hr_map_put(cl->nodes, key, strlen(key), n);
    }
    return n;
}

static int node_down(const cnode *n)
{
    return !n->cmd && n->down_until > uv_now(n->cl->loop);
}

/* A connection to n failed: it is not tried again before a backoff, and
 * the map is read again (the node may have been replaced). */
static void mark_down(cnode *n, const char *what, const char *why)
{
    chan_rcluster *cl = n->cl;
    uint64_t ms = chan_backoff_ms(n->attempt++);
    n->down_until = uv_now(cl->loop) + ms;
    chan_rlog(cl->log, cl->ud, CHAN_RLOG_WARN, "cluster_node_lost",
              "redis cluster: %s connection lost: %s", what, why); /* why names the node */
    read_soon(cl, 0);
}

static chan_rconn *open_conn(cnode *n, int pubsub, const chan_rconn_ops *ops)
{
    chan_rcluster *cl = n->cl;
    chan_rconn_config cfg = {.host = n->host,
                             .port = n->port,
                             .user = cl->user,
                             .password = cl->pass,
                             .client_name = cl->client_name,
                             .pubsub = pubsub,
                             .connect_timeout_ms = cl->connect_timeout_ms,
                             .reply_timeout_ms = pubsub ? 0 : cl->reply_timeout_ms,
                             .ops = ops,
                             .ud = n};
    return chan_rconn_open(cl->loop, &cfg);
}

static void cmd_ready(chan_rconn *c, void *ud)
{
    cnode *n = ud;
    if (c != n->cmd || n->cl->ninit)
        return; /* with init commands, the last one's reply decides */
    n->cmd_ready = 1;
    n->attempt = 0;
    update_ready(n->cl);
}

static void cmd_closed(chan_rconn *c, void *ud, const char *why)
{
    cnode *n = ud;
    if (c != n->cmd || n->cl->stopping)
        return;
    drop(&n->cmd);
    n->cmd_ready = 0;
    n->pending_init = 0;
    mark_down(n, "command", why);
    update_ready(n->cl);
}

static const chan_rconn_ops cmd_ops = {cmd_ready, cmd_closed, NULL};

static void on_init(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    cnode *n = priv;
    chan_rcluster *cl = n->cl;
    (void)err;
    if (c != n->cmd || cl->stopping || !r)
        return; /* a lost connection is reported by cmd_closed */
    if (r->type == REDIS_REPLY_ERROR) {
        chan_rlog(cl->log, cl->ud, CHAN_RLOG_ERROR, "cluster_init_refused",
                  "redis cluster: %s refused an initial command: %s", n->key, r->str);
        drop(&n->cmd);
        n->cmd_ready = 0;
        n->pending_init = 0;
        n->down_until = uv_now(cl->loop) + chan_backoff_ms(n->attempt++);
        update_ready(cl);
        return;
    }
    if (--n->pending_init == 0) {
        n->cmd_ready = 1;
        n->attempt = 0;
        update_ready(cl);
    }
}

/* Opens n's command connection (with the init commands first). */
static void ensure_cmd(cnode *n)
{
    chan_rcluster *cl = n->cl;
    if (n->cmd || node_down(n) || cl->stopping)
        return;
    n->cmd = open_conn(n, 0, &cmd_ops);
    n->cmd_ready = 0;
    n->pending_init = cl->ninit;
    for (int i = 0; i < cl->ninit; i++)
        chan_rconn_command(n->cmd, on_init, n, cl->init[i].argc, (const char **)cl->init[i].argv,
                           cl->init[i].lens);
}

/*---- Readiness -------------------------------------------------------------------------*/

static void update_ready(chan_rcluster *cl)
{
    int ready = cl->map && !cl->stopping && chan_slotmap_uncovered(cl->map) == 0;
    for (size_t i = 0; ready && i < cl->map->nnodes; i++) {
        const chan_slot_node *m = &cl->map->nodes[i];
        if (m->master >= 0)
            continue;
        cnode *n = node_get(cl, m->host, m->port);
        ready = n->cmd_ready;
    }
    if (ready == cl->ready)
        return;
    cl->ready = ready;
    chan_rlog(cl->log, cl->ud, ready ? CHAN_RLOG_INFO : CHAN_RLOG_WARN, "cluster_ready",
              ready ? "redis cluster: every slot's master is reachable"
                    : "redis cluster: not every slot's master is reachable");
    if (cl->ready_cb && !cl->stopping)
        cl->ready_cb(cl->ud, ready);
}

/*---- Commands ----------------------------------------------------------------------------*/

static void req_free(creq *q)
{
    for (int i = 0; i < q->argc; i++)
        free(q->argv[i]);
    free(q->argv);
    free(q->lens);
    free(q);
}

static void req_answer(creq *q, const redisReply *r, const char *err)
{
    if (q->cb)
        q->cb(q->priv, r, err);
    req_free(q);
}

static void on_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err);

/* Sends q where it belongs now. Returns 0, or -1 (q untouched). */
static int req_send(chan_rcluster *cl, creq *q)
{
    cnode *n;
    if (cl->stopping)
        return -1;
    if (q->asking) {
        n = node_get(cl, q->ask_host, q->ask_port);
    } else {
        const chan_slot_node *m = chan_slotmap_master(cl->map, q->slot);
        if (!m)
            return -1;
        n = node_get(cl, m->host, m->port);
    }
    ensure_cmd(n);
    if (!n->cmd)
        return -1;
    if (q->asking) {
        const char *asking[1] = {"ASKING"};
        if (chan_rconn_command(n->cmd, NULL, NULL, 1, asking, NULL) < 0)
            return -1;
    }
    if (chan_rconn_command(n->cmd, on_reply, q, q->argc, (const char **)q->argv, q->lens) < 0)
        return -1;
    q->node = n;
    return 0;
}

static void on_retry(uv_timer_t *t)
{
    chan_rcluster *cl = t->data;
    uint64_t now = uv_now(cl->loop), next = 0;
    creq **pp = &cl->retry_head;
    while (*pp) {
        creq *q = *pp;
        if (q->retry_at > now) {
            next = next && next < q->retry_at ? next : q->retry_at;
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        if (req_send(cl, q) < 0) {
            req_answer(q, NULL, "no reachable node serves the slot");
            if (cl->stopping)
                return; /* the owner stopped us: the list is gone */
        }
    }
    if (cl->retry_head && !cl->stopping)
        uv_timer_start(&cl->retry, on_retry, next > now ? next - now : 1, 0);
}

static void on_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    creq *q = priv;
    chan_rcluster *cl = q->cl;
    (void)c;
    if (!r || r->type != REDIS_REPLY_ERROR || cl->stopping || q->redirects >= MAX_REDIRECTS) {
        req_answer(q, r, err);
        return;
    }
    chan_redirect d;
    if (chan_redirect_parse(r->str, r->len, &d)) {
        const char *host = d.host[0] ? d.host : q->node->host;
        chan_rlog(cl->log, cl->ud, CHAN_RLOG_DEBUG, "cluster_redirect",
                  "redis cluster: %s answered %.*s to %.*s", q->node->key, (int)r->len, r->str,
                  (int)q->lens[0], q->argv[0]);
        q->redirects++;
        if (d.ask) {
            q->asking = 1;
            snprintf(q->ask_host, sizeof(q->ask_host), "%s", host);
            q->ask_port = d.port;
        } else {
            q->asking = 0;
            chan_slotmap_move(cl->map, d.slot, host, d.port);
            read_soon(cl, 0);
        }
        if (req_send(cl, q) < 0)
            req_answer(q, NULL, "cannot reach the node a redirection named");
        return;
    }
    if (r->len >= 8 && !memcmp(r->str, "TRYAGAIN", 8)) {
        q->redirects++;
        q->asking = 0;
        q->retry_at = uv_now(cl->loop) + TRYAGAIN_MS;
        q->next = cl->retry_head;
        cl->retry_head = q;
        if (!uv_is_active((uv_handle_t *)&cl->retry))
            uv_timer_start(&cl->retry, on_retry, TRYAGAIN_MS, 0);
        return;
    }
    if (r->len >= 11 && !memcmp(r->str, "CLUSTERDOWN", 11))
        read_soon(cl, 0);
    req_answer(q, r, NULL);
}

int chan_rcluster_command(chan_rcluster *cl, const char *key, size_t keylen,
                          chan_rcluster_reply_fn cb, void *priv, int argc, const char **argv,
                          const size_t *lens)
{
    return chan_rcluster_command_slot(cl, key ? chan_key_slot(key, keylen) : 0, cb, priv, argc,
                                      argv, lens);
}

int chan_rcluster_command_slot(chan_rcluster *cl, int slot, chan_rcluster_reply_fn cb, void *priv,
                               int argc, const char **argv, const size_t *lens)
{
    if (!cl || cl->stopping || !cl->map || argc < 1 || slot < 0 || slot >= CHAN_SLOTS)
        return -1;
    creq *q = hr_calloc(1, sizeof(*q));
    q->cl = cl;
    q->cb = cb;
    q->priv = priv;
    q->slot = slot;
    q->argc = argc;
    q->argv = hr_calloc((size_t)argc, sizeof(char *));
    q->lens = hr_calloc((size_t)argc, sizeof(size_t));
    for (int i = 0; i < argc; i++) {
        q->lens[i] = lens ? lens[i] : strlen(argv[i]);
        q->argv[i] = hr_strndup(argv[i], q->lens[i]);
    }
    if (req_send(cl, q) < 0) {
        req_free(q);
        return -1;
    }
    return 0;
}

/*---- Shard channels ------------------------------------------------------------------------*/

static void schan_free(void *p)
{
    schan *s = p;
    free(s->name);
    free(s);
}

/* Channels whose state changed, reported once our maps are no longer
 * being walked. */
typedef struct reports {
    char **names;
    int *active;
    size_t n, cap;
} reports;

static void report_add(reports *rp, const char *name, int active)
{
    if (rp->n == rp->cap) {
        rp->cap = rp->cap ? rp->cap * 2 : 16;
        rp->names = hr_realloc(rp->names, rp->cap * sizeof(*rp->names));
        rp->active = hr_realloc(rp->active, rp->cap * sizeof(*rp->active));
    }
    rp->names[rp->n] = hr_strdup(name);
    rp->active[rp->n++] = active;
}

static void report_flush(chan_rcluster *cl, reports *rp)
{
    for (size_t i = 0; i < rp->n; i++) {
        /* still wanted, and still in that state (an earlier report's
         * callback may have changed things) */
        schan *s = hr_map_get(cl->chans, rp->names[i], strlen(rp->names[i]));
        if (s && s->active == rp->active[i] && !cl->stopping && cl->subscribed_cb)
            cl->subscribed_cb(cl->ud, rp->names[i], rp->active[i]);
        free(rp->names[i]);
    }
    free(rp->names);
    free(rp->active);
    memset(rp, 0, sizeof(*rp));
}

/* s is no longer subscribed where it was. */
static void schan_lost(schan *s, reports *rp)
{
    s->at = NULL;
    if (s->active) {
        s->active = 0;
        report_add(rp, s->name, 0);
    }
}

static void sub_closed(chan_rconn *c, void *ud, const char *why)
{
    cnode *n = ud;
    chan_rcluster *cl = n->cl;
    reports rp = {0};
    const char *key;
    void *val;
    if (c != n->sub || cl->stopping)
        return;
    drop(&n->sub);
    for (size_t it = 0; hr_map_next(cl->chans, &it, &key, NULL, &val);) {
        schan *s = val;
        if (s->at == n)
            schan_lost(s, &rp);
    }
    mark_down(n, "pub/sub", why);
    report_flush(cl, &rp);
}

static void sub_push(chan_rconn *c, void *ud, const chan_rpush *p)
{
    cnode *n = ud;
    chan_rcluster *cl = n->cl;
    if (c != n->sub || cl->stopping || !p->channel)
        return;
    schan *s = hr_map_get(cl->chans, p->channel, p->channel_len);
    if (!s || s->at != n)
        return; /* not wanted (any more), or from a node we left */
    if (p->message) {
        if (!strcmp(p->kind, "smessage") && cl->message_cb)
            cl->message_cb(cl->ud, s->name, p->payload, p->len);
    } else if (!strcmp(p->kind, "ssubscribe") && p->solicited) {
        if (!s->active) {
            s->active = 1;
            if (cl->subscribed_cb)
                cl->subscribed_cb(cl->ud, s->name, 1);
        }
    } else if (!strcmp(p->kind, "sunsubscribe") && !p->solicited) {
        /* the node lost the slot (migrated away, or demoted) */
        reports rp = {0};
        chan_rlog(cl->log, cl->ud, CHAN_RLOG_INFO, "cluster_slot_lost",
                  "redis cluster: %s unsubscribed %s (its slot moved)", n->key, s->name);
        schan_lost(s, &rp);
        s->left = n;
        s->left_read = cl->reads_sent + 1; /* a read under way may predate the move */
        s->left_tries = 0;
        read_soon(cl, 0);
        sync_soon(cl);
        report_flush(cl, &rp);
    }
}

static const chan_rconn_ops sub_ops = {NULL, sub_closed, sub_push};

/* One SSUBSCRIBE: its node and channels (all of one slot). */
typedef struct batch {
    chan_rcluster *cl;
    cnode *node;
    char **names;
    size_t n, cap;
} batch;

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->names[i]);
    free(b->names);
    free(b);
}

static void on_ssubscribed(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    batch *b = priv;
    chan_rcluster *cl = b->cl;
    (void)c;
    (void)err;
    if (!r || r->type != REDIS_REPLY_ERROR || cl->stopping) {
        batch_free(b); /* confirmations came as pushes; a loss is sub_closed's */
        return;
    }
    chan_redirect d;
    if (chan_redirect_parse(r->str, r->len, &d) && !d.ask) {
        chan_slotmap_move(cl->map, d.slot, d.host[0] ? d.host : b->node->host, d.port);
        read_soon(cl, 0);
    } else {
        chan_rlog(cl->log, cl->ud, CHAN_RLOG_WARN, "cluster_ssubscribe_refused",
                  "redis cluster: %s refused SSUBSCRIBE: %s", b->node->key, r->str);
        read_soon(cl, chan_backoff_ms(b->node->attempt++));
    }
    for (size_t i = 0; i < b->n; i++) {
        schan *s = hr_map_get(cl->chans, b->names[i], strlen(b->names[i]));
        if (s && s->at == b->node && !s->active)
            s->at = NULL; /* subscribed again at the next sync */
    }
    sync_soon(cl);
    batch_free(b);
}

/* Subscribes every wanted channel at its slot's master: moves those whose
 * master changed, one SSUBSCRIBE per slot. */
static void sync_subs(chan_rcluster *cl)
{
    reports rp = {0};
    hr_map *batches;
    const char *key;
    void *val;
    if (!cl->map || cl->stopping)
        return;
    batches = hr_map_new(NULL);
    for (size_t it = 0; hr_map_next(cl->chans, &it, &key, NULL, &val);) {
        schan *s = val;
        const chan_slot_node *m = chan_slotmap_master(cl->map, s->slot);
        cnode *owner = m ? node_get(cl, m->host, m->port) : NULL;
        if (s->at && s->at != owner) {
            if (s->at->sub) {
                const char *argv[2] = {"SUNSUBSCRIBE", s->name};
                chan_rconn_command(s->at->sub, NULL, NULL, 2, argv, NULL);
            }
            schan_lost(s, &rp);
        }
        if (s->left && cl->read_applied >= s->left_read) {
            if (owner == s->left && s->left_tries++ < LEFT_REREADS) {
                /* read from a node that has not heard of the move yet */
                s->left_read = cl->reads_sent + 1;
                read_soon(cl, chan_backoff_ms(s->left_tries));
            } else {
                s->left = NULL; /* the map after the move (or the slot came back) */
            }
        }
        if (s->at || !owner || node_down(owner) || owner == s->left)
            continue;
        char bkey[320];
        snprintf(bkey, sizeof(bkey), "%s#%d", owner->key, s->slot);
        batch *b = hr_map_get(batches, bkey, strlen(bkey));
        if (!b) {
            b = hr_calloc(1, sizeof(*b));
            b->cl = cl;
            b->node = owner;
            hr_map_put(batches, bkey, strlen(bkey), b);
        }
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 8;
            b->names = hr_realloc(b->names, b->cap * sizeof(*b->names));
        }
        b->names[b->n++] = hr_strdup(s->name);
        s->at = owner;
    }
    for (size_t it = 0; hr_map_next(batches, &it, &key, NULL, &val);) {
        batch *b = val;
        cnode *n = b->node;
        if (!n->sub)
            n->sub = open_conn(n, 1, &sub_ops);
        const char **argv = hr_calloc(b->n + 1, sizeof(char *));
        argv[0] = "SSUBSCRIBE";
        for (size_t i = 0; i < b->n; i++)
            argv[i + 1] = b->names[i];
        if (chan_rconn_command(n->sub, on_ssubscribed, b, (int)b->n + 1, argv, NULL) < 0) {
            for (size_t i = 0; i < b->n; i++) {
                schan *s = hr_map_get(cl->chans, b->names[i], strlen(b->names[i]));
                if (s && s->at == n)
                    s->at = NULL;
            }
            batch_free(b);
        }
        free(argv);
    }
    hr_map_free(batches);
    report_flush(cl, &rp);
}

static void on_sync(uv_timer_t *t)
{
    sync_subs(t->data);
}

/* Batches subscription work of this loop iteration into one pass. */
static void sync_soon(chan_rcluster *cl)
{
    if (!cl->stopping && !uv_is_active((uv_handle_t *)&cl->sync))
        uv_timer_start(&cl->sync, on_sync, 0, 0);
}

void chan_rcluster_ssubscribe(chan_rcluster *cl, const char *channel)
{
    size_t len = strlen(channel);
    if (!cl || cl->stopping || hr_map_get(cl->chans, channel, len))
        return;
    schan *s = hr_calloc(1, sizeof(*s));
    s->name = hr_strdup(channel);
    s->slot = chan_key_slot(channel, len);
    hr_map_put(cl->chans, channel, len, s);
    sync_soon(cl);
}

void chan_rcluster_sunsubscribe(chan_rcluster *cl, const char *channel)
{
    if (!cl || cl->stopping)
        return;
    schan *s = hr_map_del(cl->chans, channel, strlen(channel));
    if (!s)
        return;
    if (s->at && s->at->sub) {
        const char *argv[2] = {"SUNSUBSCRIBE", s->name};
        chan_rconn_command(s->at->sub, NULL, NULL, 2, argv, NULL);
    }
    schan_free(s);
}

/*---- The slot map --------------------------------------------------------------------------*/

static void apply_map(chan_rcluster *cl, chan_slotmap *m)
{
    int changed = !chan_slotmap_same(cl->map, m);
    chan_slotmap_free(cl->map);
    cl->map = m;
    const char *key;
    void *val;
    for (size_t it = 0; hr_map_next(cl->nodes, &it, &key, NULL, &val);)
        ((cnode *)val)->is_master = 0;
    for (size_t i = 0; i < m->nnodes; i++) {
        if (m->nodes[i].master >= 0)
            continue;
        cnode *n = node_get(cl, m->nodes[i].host, m->nodes[i].port);
        n->is_master = 1;
        ensure_cmd(n);
    }
    if (changed) {
        chan_rlog(cl->log, cl->ud, CHAN_RLOG_INFO, "cluster_map",
                  "redis cluster: slot map read: %zu masters, %d slots without one", m->nmasters,
                  chan_slotmap_uncovered(m));
        if (cl->map_cb)
            cl->map_cb(cl->ud, m);
        if (cl->stopping)
            return;
    }
    sync_subs(cl);
    /* connections to nodes that serve no slot any more, once idle */
    for (size_t it = 0; hr_map_next(cl->nodes, &it, &key, NULL, &val);) {
        cnode *n = val;
        const char *ck;
        void *cv;
        int used = 0;
        if (n->is_master)
            continue;
        if (n->cmd && chan_rconn_waiting(n->cmd) == 0) { /* closing runs no callback then */
            drop(&n->cmd);
            n->cmd_ready = 0;
        }
        for (size_t jt = 0; !used && hr_map_next(cl->chans, &jt, &ck, NULL, &cv);)
            used = ((schan *)cv)->at == n;
        if (n->sub && !used)
            drop(&n->sub);
    }
    /* a master that is down is tried again when its backoff ends (the
     * read that follows reconnects it and resubscribes its channels) */
    uint64_t now = uv_now(cl->loop), wait = 0;
    for (size_t it = 0; hr_map_next(cl->nodes, &it, &key, NULL, &val);) {
        cnode *n = val;
        if (n->is_master && node_down(n) && (!wait || n->down_until - now < wait))
            wait = n->down_until - now;
    }
    if (wait)
        read_soon(cl, wait);
    update_ready(cl);
}

static void q_closed(chan_rconn *c, void *ud, const char *why)
{
    chan_rcluster *cl = ud;
    (void)why; /* a read waiting was answered with it first */
    if (c == cl->q)
        drop(&cl->q);
}

static const chan_rconn_ops q_ops = {NULL, q_closed, NULL};

/* Where to read the map: the seeds and every node known, in turn. */
static void q_target(chan_rcluster *cl, const char **host, int *port)
{
    size_t known = hr_map_count(cl->nodes), total = (size_t)cl->nseeds + known;
    size_t k = (size_t)cl->q_next % total;
    if (k < (size_t)cl->nseeds) {
        *host = cl->seeds[k].host;
        *port = cl->seeds[k].port;
        return;
    }
    k -= (size_t)cl->nseeds;
    const char *key;
    void *val;
    for (size_t it = 0; hr_map_next(cl->nodes, &it, &key, NULL, &val);) {
        if (k-- == 0) {
            *host = ((cnode *)val)->host;
            *port = ((cnode *)val)->port;
            return;
        }
    }
    *host = cl->seeds[0].host;
    *port = cl->seeds[0].port;
}

static void on_slots(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    chan_rcluster *cl = priv;
    char why[200];
    if (c != cl->q || cl->stopping)
        return;
    cl->reading = 0;
    chan_slotmap *m = NULL;
    if (r && r->type != REDIS_REPLY_ERROR)
        m = chan_slotmap_from_slots(r, cl->q_host, why, sizeof(why));
    if (!m) {
        chan_rlog(cl->log, cl->ud, CHAN_RLOG_WARN, "cluster_map_read",
                  "redis cluster: cannot read the slot map from %s: %s", chan_rconn_peer(c),
                  !r                             ? err
                  : r->type == REDIS_REPLY_ERROR ? r->str
                                                 : why);
        drop(&cl->q);
        cl->q_next++;
        read_soon(cl, chan_backoff_ms(cl->read_attempt++));
        return;
    }
    cl->read_attempt = 0;
    cl->read_applied = cl->reads_sent;
    apply_map(cl, m);
    if (cl->read_again && !cl->stopping) {
        cl->read_again = 0;
        read_soon(cl, 0);
    }
}

static void read_map(chan_rcluster *cl)
{
    if (cl->stopping)
        return;
    if (cl->reading) {
        cl->read_again = 1; /* something changed while this read was on its way */
        return;
    }
    if (!cl->q) {
        const char *host;
        int port;
        q_target(cl, &host, &port);
        snprintf(cl->q_host, sizeof(cl->q_host), "%s", host);
        chan_rconn_config cfg = {.host = host,
                                 .port = port,
                                 .user = cl->user,
                                 .password = cl->pass,
                                 .client_name = cl->client_name,
                                 .connect_timeout_ms = cl->connect_timeout_ms,
                                 .reply_timeout_ms = cl->reply_timeout_ms,
                                 .ops = &q_ops,
                                 .ud = cl};
        cl->q = chan_rconn_open(cl->loop, &cfg);
    }
    const char *argv[2] = {"CLUSTER", "SLOTS"};
    if (chan_rconn_command(cl->q, on_slots, cl, 2, argv, NULL) < 0) {
        drop(&cl->q);
        cl->q_next++;
        read_soon(cl, chan_backoff_ms(cl->read_attempt++));
        return;
    }
    cl->reading = 1;
    cl->reads_sent++;
}

static void on_soon(uv_timer_t *t)
{
    read_map(t->data);
}

/* Reads the map in ms (0: next loop iteration), unless a read is due
 * sooner or under way (then it is read once more after it). */
static void read_soon(chan_rcluster *cl, uint64_t ms)
{
    if (cl->stopping)
        return;
    if (cl->reading) {
        cl->read_again = 1;
        return;
    }
    if (uv_is_active((uv_handle_t *)&cl->soon) && uv_timer_get_due_in(&cl->soon) <= ms)
        return;
    uv_timer_start(&cl->soon, on_soon, ms, 0);
}

static void on_refresh(uv_timer_t *t)
{
    chan_rcluster *cl = t->data;
    read_map(cl);
    sync_soon(cl); /* channels waiting for a node that was down */
}

/*---- Life cycle ------------------------------------------------------------------------------*/

chan_rcluster *chan_rcluster_start(uv_loop_t *loop, const chan_rcluster_config *cfg)
{
    if (cfg->nseeds < 1)
        return NULL;
    chan_rcluster *cl = hr_calloc(1, sizeof(*cl));
    cl->loop = loop;
    cl->nseeds = cfg->nseeds;
    cl->seeds = hr_calloc((size_t)cl->nseeds, sizeof(*cl->seeds));
    for (int i = 0; i < cl->nseeds; i++) {
        cl->seeds[i].host = hr_strdup(cfg->seeds[i].host);
        cl->seeds[i].port = cfg->seeds[i].port;
    }
    cl->user = cfg->user && cfg->password ? hr_strdup(cfg->user) : NULL;
    cl->pass = cfg->password ? hr_strdup(cfg->password) : NULL;
    cl->client_name = cfg->client_name ? hr_strdup(cfg->client_name) : NULL;
    cl->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 2000;
    cl->reply_timeout_ms = cfg->reply_timeout_ms ? cfg->reply_timeout_ms : DEFAULT_REPLY_TIMEOUT_MS;
    cl->refresh_ms = cfg->refresh_ms ? cfg->refresh_ms : DEFAULT_REFRESH_MS;
    cl->ninit = cfg->ninit;
    cl->init = hr_calloc((size_t)(cl->ninit ? cl->ninit : 1), sizeof(*cl->init));
    for (int i = 0; i < cl->ninit; i++) {
        const chan_rcmd *src = &cfg->init[i];
        char **argv = hr_calloc((size_t)src->argc, sizeof(char *));
        size_t *lens = hr_calloc((size_t)src->argc, sizeof(size_t));
        for (int k = 0; k < src->argc; k++) {
            lens[k] = src->lens ? src->lens[k] : strlen(src->argv[k]);
            argv[k] = hr_strndup(src->argv[k], lens[k]);
        }
        cl->init[i] = (chan_rcmd){src->argc, (const char *const *)argv, lens};
    }
    cl->map_cb = cfg->map;
    cl->ready_cb = cfg->ready;
    cl->subscribed_cb = cfg->subscribed;
    cl->message_cb = cfg->message;
    cl->log = cfg->log;
    cl->ud = cfg->ud;
    cl->nodes = hr_map_new(node_free);
    cl->chans = hr_map_new(schan_free);
    uv_timer_t *timers[4] = {&cl->refresh, &cl->soon, &cl->retry, &cl->sync};
    for (int i = 0; i < 4; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = cl;
    }
    cl->timers = 4;
    uv_timer_start(&cl->refresh, on_refresh, cl->refresh_ms, cl->refresh_ms);
    read_map(cl);
    return cl;
}

int chan_rcluster_ready(const chan_rcluster *cl)
{
    return cl && cl->ready;
}

int chan_rcluster_slot_ready(const chan_rcluster *cl, int slot)
{
    if (!cl || cl->stopping || !cl->map || slot < 0 || slot >= CHAN_SLOTS)
        return 0;
    const chan_slot_node *m = chan_slotmap_master(cl->map, slot);
    if (!m)
        return 0;
    char key[300];
    snprintf(key, sizeof(key), "%s:%d", m->host, m->port);
    const cnode *n = hr_map_get(cl->nodes, key, strlen(key));
    return n && n->cmd_ready;
}

const chan_slotmap *chan_rcluster_map(const chan_rcluster *cl)
{
    return cl ? cl->map : NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
    chan_rcluster *cl = h->data;
    if (--cl->timers)
        return;
    hr_map_free(cl->nodes);
    hr_map_free(cl->chans);
    chan_slotmap_free(cl->map);
    hr_redis_addrs_free(cl->seeds, cl->nseeds);
    for (int i = 0; i < cl->ninit; i++) {
        for (int k = 0; k < cl->init[i].argc; k++)
            free((char *)cl->init[i].argv[k]);
        free((void *)cl->init[i].argv);
        free((void *)cl->init[i].lens);
    }
    free(cl->init);
    free(cl->user);
    free(cl->pass);
    free(cl->client_name);
    free(cl);
}

void chan_rcluster_stop(chan_rcluster *cl)
{
    const char *key;
    void *val;
    if (!cl || cl->stopping)
        return;
    cl->stopping = 1;
    drop(&cl->q);
    /* closing answers the commands waiting (their callbacks run now) */
    for (size_t it = 0; hr_map_next(cl->nodes, &it, &key, NULL, &val);) {
        cnode *n = val;
        drop(&n->cmd);
        drop(&n->sub);
    }
    while (cl->retry_head) {
        creq *q = cl->retry_head;
        cl->retry_head = q->next;
        req_answer(q, NULL, "stopping");
    }
    uv_close((uv_handle_t *)&cl->refresh, on_timer_closed);
    uv_close((uv_handle_t *)&cl->soon, on_timer_closed);
    uv_close((uv_handle_t *)&cl->retry, on_timer_closed);
    uv_close((uv_handle_t *)&cl->sync, on_timer_closed);
}
