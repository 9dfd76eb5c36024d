/*
 * redis_internal.h - what the files of the Redis channel layer (cluster
 * mode) share. Not for use outside channels/redis*.c.
 *
 *   redis.c          the layer: creation, the ops table, start and stop,
 *                    the periodic tick, the function library
 *   redis_shard.c    a shard's home connections (cmd, sub): connect, setup,
 *                    readiness, reconnect with backoff
 *   redis_loop.c     each loop thread's own command connection per shard,
 *                    and the presence entries of that loop's subscribers
 *   redis_subs.c     channels on Redis (home): SUBSCRIBE/UNSUBSCRIBE,
 *                    subscriptions, incoming pushes, recovery after an
 *                    outage
 *   redis_ops.c      publish, history and presence reads (any loop)
 *   redis_own.c      a node's own publications, taken back without a
 *                    parse when they return from Redis (pure)
 *   redis_control.c  control messages: signed, sent, checked, obeyed
 *
 * Threads. Loop 0 is the layer's home: the shards' connections `cmd`
 * (setup, subscriptions' stream reads, recovery, history upkeep, the
 * Django bridge) and `sub` (one SUBSCRIBE per channel per node, SPEC
 * section 5), every channel's subscription state (rchan) and the control
 * topic live there. Every loop thread also has a command connection of
 * its own to each shard (rd_lconn; loop 0 uses the shard's `cmd`): a
 * publication, a history or presence read, a control message and a
 * subscriber's presence entry and join/leave go out on the caller's loop
 * and are answered there, without a hop through loop 0. Only what a
 * shard's subscriptions need crosses threads, as chan_tasks (one struct
 * per kind): a subscription goes to the home and its answer comes back,
 * a channel's first/last subscriber and the renewals after an outage, and
 * "shard up" to every loop. A shard's state is the home's; other loops
 * read `up` (an atomic) and otherwise keep their own.
 *
 * Shards. HERALD_REDIS_URL may list several servers. A channel lives on one
 * of them, chosen by a stable hash of its name (FNV-1a 64 mod the number of
 * shards: every node and every backend computes the same). The control
 * channel lives on the first shard.
 *
 * How a shard finds its server (HERALD_REDIS_URL's scheme, L->mode;
 * docs/internals/redis-ha.md):
 *   - redis://: `addr` is fixed; every connection opens there.
 *   - redis+sentinel:// (redis_sentinel.c's chan_sentinel per shard, on
 *     the home thread): `addr` is the master the sentinels name, checked
 *     with ROLE. When it changes, the home takes the shard down and
 *     connects again (as after an outage); `gen` moves on, so each loop
 *     drops its connection to the old master before its next command
 *     (rd_shard_open opens at the current address under addr_mu). A lost
 *     home connection, or a READONLY answer on any connection (a demoted
 *     master still taking connections), asks the sentinels again
 *     (rd_reply_check, rd_sentinel_recheck) instead of reconnecting to
 *     the same address blindly.
 *   - redis+cluster:// (redis_clmode.c): one logical shard; the cluster
 *     shards by slot. The home (loop 0) owns a chan_rcluster (redis_topo.h)
 *     for its commands and the channels' sharded subscriptions (SSUBSCRIBE,
 *     one per channel per node, batched per slot), whose `subscribed`
 *     callback replaces the SUBSCRIBE confirmations; every other loop owns
 *     a chan_rcluster for its commands. Commands are routed by the
 *     channel's slot (every key and topic of channel C carries the hash
 *     tag {C}); FUNCTION LOAD is each manager's init command, so every
 *     master has the library (after a failover and on a new node too).
 *     The shard is up while the home's manager is ready (every slot has a
 *     reachable master) and the control topic is subscribed; a channel
 *     whose slot's master is unreachable behaves as in an outage on its
 *     own (rd_route_up), the others go on.
 *
 * Keys and topics, under the prefix <p> (docs/cluster.md); in Redis
 * Cluster mode <channel> is written {<channel>} (rd_key, rd_topic):
 *   <p>:ch:<channel>              pub/sub topic: complete push JSON texts
 *                                 (a shard channel in Redis Cluster)
 *   <p>:control                   pub/sub topic: control messages, "<mac> <JSON>"
 *   <p>:history:<channel>         stream: id "<offset>-1", field d = data
 *   <p>:history-meta:<channel>    hash: e = epoch, s = last offset, r = writer
 *   <p>:presence:<channel>        hash: client id -> {"client","user","info"}
 *   <p>:presence-exp:<channel>    zset: client id -> expiry (unix seconds)
 * and a function library <fn> (the prefix with [^A-Za-z0-9_] as '_'),
 * called with no key, or in Redis Cluster with the two keys it touches
 * declared (rd_fcall: <p>:history-meta:{C} <p>:history:{C}, or for the
 * presence functions <p>:presence:{C} <p>:presence-exp:{C}):
 *   FCALL <fn>_publish 0 CHANNEL DATA      -> offset (0 without history)
 *   FCALL <fn>_history 0 CHANNEL SINCE LIMIT [CREATE [EPOCH]]
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
 * Outages. When a shard's home connection drops, the shard is down: /readyz
 * says 503, publications to channels without history are delivered to this
 * node's subscribers only (answered with local_only), publications to
 * history channels fail with -EAGAIN (no offset can be assigned), and no
 * work is queued, so memory stays bounded. Reconnection uses exponential
 * backoff with full jitter; then every channel is subscribed again and, for
 * history channels, the node reads what it missed from the stream, delivers
 * it in order, and tells each subscriber whether the stream was recovered.
 * A loop's own connection that drops while the shard is up costs only the
 * commands it carried (answered -EAGAIN); it is opened again with backoff.
 *
 * Errors: internal functions return 0 or a negative errno (-EAGAIN: Redis
 * cannot be reached now) and log the details where they happen.
 * Names: rd_ for functions shared between these files (dj_ is the Django
 * bridge's, django.h).
 */
#ifndef HR_CHANNELS_REDIS_INTERNAL_H
#define HR_CHANNELS_REDIS_INTERNAL_H

#include "django.h"
#include "layer_internal.h"
#include "redis_topo.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#define TICK_MS 1000
/* Ticks between renewals of the history metas of subscribed channels
 * (functions.lua gives them at least 60 s). */
#define TOUCH_TICKS 20
/* A shard not up this long after its connections were opened is torn
 * down and tried again; each connection's own deadline is the same. */
#define CONNECT_TIMEOUT_MS 1500
/* A control message is obeyed within this many ms of its timestamp (nodes'
 * clocks must agree that well); its nonce is remembered as long. */
#define CONTROL_WINDOW_MS 60000

typedef struct redis_layer redis_layer;
typedef struct shard shard;
typedef struct sub_task sub_task;
typedef struct rd_loop rd_loop;
typedef struct rd_retired rd_retired;
typedef struct rd_own_ring rd_own_ring;

/* One channel's state on the home thread. */
typedef struct rchan {
    char *name;
    uint64_t hash; /* chan_hash(name) */
    shard *sh;
    int wanted;    /* the node has subscribers */
    int on_redis;  /* the last (UN)SUBSCRIBE sent was SUBSCRIBE */
    int inflight;  /* (UN)SUBSCRIBE replies still to come */
    int confirmed; /* subscribed on Redis, replies all in */
    sub_task *waiters;
    int hreads;       /* history reads in flight for its subscribers */
    sub_task *hqueue; /* subscribers that wait to share the next read (newest first) */
    chan_opts opts;   /* of the first subscriber (the namespace's) */
    chan_pos last;    /* the stream position the node has delivered */
    int have_last;
    int recovering; /* reading what an outage cost: live pushes wait */
    int renew;      /* after a reconnect: tell subscribers once confirmed */
    int was_active; /* Redis Cluster: subscribed before (active 1 after 0 is a renewal) */
    chan_msg **held;
    size_t nheld, capheld;
} rchan;

struct shard {
    redis_layer *L;
    int index;
    /* where the connections go: fixed in redis:// mode; the checked master
     * in redis+sentinel:// mode, written by the home under addr_mu (the
     * home reads it without), `gen` moved on at each change */
    hr_redis_addr addr;
    pthread_mutex_t addr_mu;
    atomic_uint gen;
    /* redis+sentinel:// (home thread) */
    const hr_redis_target *target; /* the shard's URL (L->targets) */
    chan_sentinel *sentinel;
    int have_master;          /* addr is a master the sentinels named and ROLE confirmed */
    atomic_int recheck_asked; /* a READONLY's recheck is on its way home */
    /* home thread */
    chan_rconn *cmd, *sub;
    int cmd_ready, sub_ready, up;
    int was_up;       /* has been up before: a reconnect, not the first connect */
    int setup_failed; /* AUTH & co. refused since the shard was last up (said once) */
    unsigned attempt;
    uv_timer_t retry;
    uv_timer_t connect_timer;
    chan_tab channels; /* channel -> rchan */
    /* any thread: `up` as the loops see it (release/acquire) */
    atomic_int up_seen;
};

/* A loop thread's command connection to one shard. */
typedef struct rd_lconn {
    rd_loop *lp;
    shard *sh;
    chan_rconn *c; /* NULL: none now (loop 0 uses the shard's cmd) */
    unsigned gen;  /* the shard's gen when c was opened */
    unsigned attempt;
    uv_timer_t retry; /* a new connection after a lost one, with backoff */
} rd_lconn;

/* A channel with subscribers on one loop that keep presence or join/leave:
 * their entries, refreshed and announced by that loop. */
typedef struct rd_pchan {
    shard *sh;
    uint64_t hash;
    int presence;    /* the namespace keeps presence (else join/leave only) */
    hr_map *members; /* client -> presence entry JSON */
    char name[];
} rd_pchan;

/* One loop thread's part of the layer: touched on that thread only. */
struct rd_loop {
    redis_layer *L;
    unsigned index;
    uv_loop_t *uv; /* set by thread_start */
    int started, stopped;
    rd_lconn *conns;   /* one per shard */
    chan_rcluster *cl; /* Redis Cluster: the loop's commands (loop 0: the home's, L->cl) */
    chan_tab presence; /* channel -> rd_pchan */
    uv_timer_t tick;   /* presence refresh */
    rd_retired *retired;
};

struct redis_layer {
    chan_layer base;
    /* set at creation, read-only afterwards */
    hr_redis_mode mode;
    hr_redis_target *targets; /* HERALD_REDIS_URL, one per shard */
    char *prefix;
    char *fn; /* function library name */
    char *library;
    /* its functions' names, "<fn>_publish" and so on */
    char *f_publish, *f_history, *f_touch, *f_init, *f_presence, *f_presence_set;
    char *control_topic;
    char *node_id;
    int presence_ttl;
    int nshards;
    shard *shards;
    rd_loop *loops; /* one per loop thread */
    /* own publications: ring [thread * nshards + shard] (redis_own.c) */
    rd_own_ring *own;
    /* home thread only */
    uv_loop_t *uv;
    uv_timer_t tick;
    unsigned touch_ticks;
    int stopping;
    rd_retired *retired; /* command connections let go of, answering what they were sent */
    /* Redis Cluster (home thread): the manager, and the control topic */
    chan_rcluster *cl;
    int cl_ready;
    int control_active, control_was_active;
    /* control messages: HMAC-SHA256 keys (the first signs), and the nonces
     * seen within the window (home thread) */
    unsigned char (*ctl_keys)[32];
    size_t nctl_keys;
    hr_map *ctl_seen; /* nonce -> expiry (wall ms), home thread */
    size_t ctl_sweep_at;
    uint64_t ctl_logged_ms;
    /* any thread (metrics, readyz, log limits) */
    atomic_ullong err_logged_ms; /* rd_log_reply_error's limit */
    atomic_ullong control_rejected;
    atomic_int shards_up;
    atomic_ullong reconnects;
    atomic_ullong pending_bytes;
    atomic_ullong bad_messages;
    /* the Django Channels bridge (django.h), NULL without one */
    dj_bridge *django;
};

static inline redis_layer *rd_layer(chan_layer *l)
{
    return (redis_layer *)l;
}

/* The shard as the loops see it: up, or down (an outage). Any thread. */
static inline int rd_shard_up(shard *sh)
{
    return atomic_load_explicit(&sh->up_seen, memory_order_acquire);
}

/*---- redis.c ----------------------------------------------------------------*/

/* Logs an error reply in Redis' own words, at most once a second. Any
 * thread. */
void rd_log_reply_error(redis_layer *L, const char *what, const redisReply *r);
/* The shard of channel (FNV-1a 64 of the name mod the shard count: stable
 * across nodes and backends, so not the tables' keyed hash; not computed
 * with one shard). */
shard *rd_shard_of(redis_layer *L, const char *channel);
/* "<p>:ch:<channel>" (malloc'ed, caller frees). */
char *rd_topic(redis_layer *L, const char *channel);
/* Frees n publications read from history and the array. NULL ok. */
void rd_pubs_free(chan_pub *p, size_t n);
/* Runs t on the home thread (loop 0) / on loop thread `thread`. */
void rd_to_home(redis_layer *L, chan_task *t);
void rd_to_loop(redis_layer *L, unsigned thread, chan_task *t);
/* "<p>:<kind>:<channel>", or "<p>:<kind>:{<channel>}" in Redis Cluster
 * mode (malloc'ed, caller frees). */
char *rd_key(redis_layer *L, const char *kind, const char *channel);
/* PUBLISH, or SPUBLISH in Redis Cluster mode. */
const char *rd_publish_cmd(const redis_layer *L);
/* Fills argv[0..] with FCALL <fn> <numkeys> [key] for a call about
 * channel: no key, or in Redis Cluster mode the two keys it touches
 * (both in *key, one malloc'ed block: the caller frees it after sending;
 * NULL otherwise). Returns how many were filled (3 or 5). */
int rd_fcall(redis_layer *L, const char **argv, const char *fn, const char *channel, char **key);

/*---- redis_shard.c (home thread) ----------------------------------------------*/

/* Sends a command on the shard's cmd connection (argv copied; cb may be
 * NULL), or in Redis Cluster mode through the home's manager to the
 * master of channel's slot (channel NULL: the control topic's; cb's
 * connection is then NULL). Returns 0 (cb runs exactly once), or -EAGAIN
 * when there is no connection (cb never runs). */
int rd_cmd(shard *sh, const char *channel, chan_rconn_reply_fn cb, void *priv, int argc,
           const char **argv, const size_t *lens);
/* Sends a (UN)SUBSCRIBE on the shard's sub connection; its error replies
 * are logged (rd_sub_cmd_reply), confirmations come to rd_sub_push.
 * Returns 0, or -EAGAIN when there is no connection. */
int rd_sub_cmd(shard *sh, int argc, const char **argv);
/* Opens a connection to where the shard's connections go now (cfg's
 * host, port and credentials are filled in here, under addr_mu; see the
 * top of this file); *gen gets the address' generation. Any thread (on
 * its own loop). */
chan_rconn *rd_shard_open(shard *sh, uv_loop_t *uv, chan_rconn_config *cfg, unsigned *gen);
/* Any thread, with an answer from the shard's Redis: a READONLY error
 * (a demoted master) makes a sentinel-followed shard ask the sentinels
 * again. Returns 1 for READONLY. */
int rd_reply_check(shard *sh, const redisReply *r);
/* Home: starts following the sentinels of every redis+sentinel:// shard. */
void rd_sentinels_start(redis_layer *L);
/* The CLIENT SETNAME of a connection: "<p>:<node>:<role>" (malloc'ed). */
char *rd_conn_name(redis_layer *L, const char *role);
/* Opens a connection on uv to the shard's current address (rd_shard_open),
 * named for role (rd_conn_name), with ops and ud (chan_rconn_config);
 * *gen gets the address generation it was opened at. Returns it (the
 * caller owns it: chan_rconn_close). Owner thread of uv. */
chan_rconn *rd_conn_open(shard *sh, uv_loop_t *uv, const char *role, int pubsub,
                         const chan_rconn_ops *ops, void *ud, unsigned *gen);
/* Starts connecting the shard. */
void rd_shard_connect(shard *sh);
/* Recomputes `up` after a connection changed state. */
void rd_shard_update_up(shard *sh);
/* At the layer's stop: closes the shard's timers and connections (the cmd
 * connection after answering what it was sent, within 2 s). */
void rd_shard_stop(shard *sh);
/* Lets a command connection go once it answered what it was sent (a PING
 * last, at most 2 s; at once when nothing is waiting). On the loop of uv;
 * list is that loop's (closed at its end). */
void rd_retire(uv_loop_t *uv, rd_retired **list, chan_rconn *c);
/* Samples the bytes the subscriber connections have not read yet. */
void rd_sample_pending(redis_layer *L);

/*---- redis_loop.c (each on its loop thread) -------------------------------------*/

void rd_loop_init(rd_loop *lp, redis_layer *L, unsigned index);
int rd_loop_start(rd_loop *lp, uv_loop_t *uv);
/* The loop stops: its connections go once they answered what they were
 * sent; answers to requests still out are dropped unrun (their callers
 * are gone, as with tasks posted to a stopped loop). */
void rd_loop_stop(rd_loop *lp);
void rd_loop_free(rd_loop *lp);
/* Sends a command on lp's connection to sh (opened on first use), or in
 * Redis Cluster mode through lp's manager to the master of channel's slot
 * (channel NULL: the control topic's). Returns 0 (cb runs exactly once,
 * on lp's thread), or -EAGAIN (no connection now: lost and not yet opened
 * again; cb never runs). */
int rd_lconn_cmd(rd_loop *lp, shard *sh, const char *channel, chan_rconn_reply_fn cb, void *priv,
                 int argc, const char **argv, const size_t *lens);
/* 1 if a command about channel (of shard sh) can go out from lp now:
 * the shard is up, or in Redis Cluster mode the channel's slot has a
 * reachable master as lp's manager sees it. */
int rd_route_up(rd_loop *lp, shard *sh, const char *channel);
/* The loop's presence entries on shard sh go out again (its connection
 * was renewed). */
void rd_loop_announce(rd_loop *lp, shard *sh);
/* A request of loop `lp` waiting for Redis' answer: counted in the loop's
 * inflight (a stopping loop waits for it). A loop that stopped meanwhile
 * has freed whoever asked (as tasks posted to a stopped loop are discarded
 * unrun), so the answer is dropped. rd_req_new allocates `size` bytes (a
 * struct that begins with an rd_req); rd_req_done counts the answer and
 * returns 1 if the caller is still there. */
typedef struct rd_req {
    rd_loop *lp;
    void *cb;
    void *ud;
} rd_req;
rd_req *rd_req_new(rd_loop *lp, void *cb, void *ud, size_t size);
int rd_req_done(rd_req *q);
/* Home: the shard came up; every loop announces its presence entries
 * there. */
void rd_loops_shard_up(redis_layer *L, shard *sh);
/* On s's loop, once its subscription is complete on Redis' side: its
 * presence entry and join go out before the subscriber hears the answer.
 * ... and when s leaves (its entry and leave). */
void rd_loop_member_add(rd_loop *lp, chan_sub *s);
void rd_loop_member_remove(rd_loop *lp, chan_sub *s);

/*---- redis_subs.c (home thread) -----------------------------------------------*/

void rd_rchan_free(void *p);
/* Brings Redis in line with what the node wants of c. */
void rd_rchan_sync(rchan *c);
/* Answers c's waiting subscriptions (up: proceed; else as in an outage). */
void rd_run_waiters(redis_layer *L, rchan *c, int up);
/* Delivers what was held back while c was recovering. */
void rd_dispatch_held(redis_layer *L, rchan *c);
/* A message on channel's topic (clen bytes, not NUL-terminated): to the
 * node's subscribers. */
void rd_on_message(redis_layer *L, shard *sh, const char *channel, size_t clen, const char *payload,
                   size_t len);
/* Redis Cluster: c's shard channel became active (1) or not (0). */
void rd_rchan_active(redis_layer *L, rchan *c, int active);
/* The subscriber connection's pushes (messages, confirmations), and the
 * answers to its commands. */
void rd_sub_push(chan_rconn *c, void *ud, const chan_rpush *p);
void rd_sub_cmd_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err);
/* Parses an FCALL <fn>_history reply. Returns 0, or -EPROTO (nothing to
 * free). */
int rd_parse_history(const redisReply *r, chan_pos *top, chan_pub **pubs, size_t *n);
/* The same for a call with EPOCH (rd_history_argv), whose reply ends
 * with the offset the entries follow (*after) and whether the caller's
 * position was found in the stream (*kept: 1) or the entries are the
 * current epoch's since it began (0). */
int rd_parse_history_after(const redisReply *r, chan_pos *top, chan_pub **pubs, size_t *n,
                           uint64_t *after, int *kept);
/* The argv of FCALL <fn>_history 0 CHANNEL SINCE LIMIT [CREATE [EPOCH]]
 * (rd_fcall's form; create: the node subscribes, so a channel without a
 * stream gets its meta and the epoch its first publication will have;
 * epoch: the epoch `since` belongs to, or NULL: a renewal after an
 * outage, when the stream may have a new epoch and the function then
 * gives the new epoch's entries, functions.lua); the buffers hold the
 * numbers and the key; epoch is borrowed until sent.
 * rd_history_args_free after sending. */
typedef struct rd_history_args {
    char since[24], limit[24];
    char *key;
    const char *argv[10];
    int argc;
} rd_history_args;
void rd_history_argv(redis_layer *L, rd_history_args *a, const char *channel, int64_t since,
                     int64_t limit, int create, const char *epoch);
void rd_history_args_free(rd_history_args *a);
/* Periodic: keeps the history metas of subscribed channels alive. */
void rd_touch_history(redis_layer *L);
/* ops */
void rd_subscribe(chan_layer *l, unsigned thread, chan_sub *s);
void rd_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s);
void rd_channel_open(chan_layer *l, const char *channel, uint64_t h);
void rd_channel_close(chan_layer *l, const char *channel, uint64_t h);

/*---- redis_ops.c (any loop) -------------------------------------------------------*/

void rd_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const char *data_json, size_t data_len, const char *from, chan_publish_cb cb,
                void *ud);
void rd_history(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud);
void rd_presence(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                 chan_presence_cb cb, void *ud);

/*---- redis_clmode.c: Redis Cluster mode ----------------------------------------*/

/* Home: starts the home's manager (L->cl). */
void rd_cluster_start(redis_layer *L);
void rd_cluster_stop(redis_layer *L);
/* A loop's own manager (loops other than 0), and its end. */
void rd_cluster_loop_start(rd_loop *lp);
void rd_cluster_loop_stop(rd_loop *lp);
/* A command through manager cl to the master of channel's slot (NULL: the
 * control topic's); cb's connection is NULL. 0 or -EAGAIN as rd_cmd. */
int rd_cluster_cmd(redis_layer *L, chan_rcluster *cl, const char *channel, chan_rconn_reply_fn cb,
                   void *priv, int argc, const char **argv, const size_t *lens);
/* The slot of channel's keys (NULL: the control topic's). */
int rd_cluster_slot(redis_layer *L, const char *channel);
/* Home: brings the manager in line with what the node wants of c. */
void rd_cluster_sync(rchan *c);
/* Home: 1 if a subscription of channel can proceed now. */
int rd_cluster_chan_up(redis_layer *L, const char *channel);

/*---- redis_own.c: a node's own publications (pure) -------------------------------*/

/* Entries of a ring, and how long one waits to be taken back. */
#define RD_OWN_RING 256
#define RD_OWN_STALE_US 5000000

/* A publication this node built and sent: m as built (offset 0); split:
 * 0 for a plain channel (the text is m's payload), else where Redis'
 * function inserts ,"offset":O (chan_publication_offset_at). */
typedef struct rd_own {
    chan_msg *m; /* one reference, the ring's */
    uint32_t split;
} rd_own;

/* One loop's publications to one shard, in the order it sent them: that
 * loop pushes, the home takes. head and tail on cache lines of their own. */
struct rd_own_ring {
    atomic_size_t head; /* the home's */
    char _pad1[64 - sizeof(atomic_size_t)];
    atomic_size_t tail; /* the publishing loop's */
    char _pad2[64 - sizeof(atomic_size_t)];
    rd_own e[RD_OWN_RING];
};

/* 1 if text (len bytes) is what Redis publishes for the publication built
 * as m: m's payload itself (split 0), or m's payload with ,"offset":O
 * inserted at split, O a positive decimal without a leading zero below
 * 2^63 (into *offset). Pure. */
int rd_own_match(const chan_msg *m, uint32_t split, const char *text, size_t len, uint64_t *offset);
/* The publishing loop, before it sends: keeps a reference to m. Returns 0,
 * or -ENOSPC when the ring is full (nothing kept). */
int rd_own_push(rd_own_ring *r, chan_msg *m, uint32_t split);
/* The home, for a text on channel's topic (channel: clen bytes): the
 * message if it is one of the ring's (a new reference, channel hash set,
 * born now; the entries before it are dropped), else NULL. */
chan_msg *rd_own_take(rd_own_ring *r, const char *channel, size_t clen, const char *text,
                      size_t len);
/* The home: drops the entries older than RD_OWN_STALE_US. */
void rd_own_expire(rd_own_ring *r, uint64_t now_us);
/* Drops every entry (no thread uses r any more). */
void rd_own_clear(rd_own_ring *r);

/*---- redis_control.c --------------------------------------------------------------*/

/* A message on the control topic (home thread): obeyed if signed, fresh
 * and new. */
void rd_control_receive(redis_layer *L, const char *payload, size_t len);
/* Any loop: signs c and publishes it on the first shard's control topic. */
void rd_control(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb, void *ud);

#endif
