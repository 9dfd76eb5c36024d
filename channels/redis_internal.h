/*
 * redis_internal.h - what the files of the Redis channel layer (cluster
 * mode) share. Not for use outside channels/redis*.c.
 *
 *   redis.c          the layer: creation, the ops table, start/stop, the
 *                    periodic tick, the function library, tasks between
 *                    threads
 *   redis_shard.c    a shard's connections: connect, setup, readiness,
 *                    reconnect with backoff
 *   redis_subs.c     channels on Redis: SUBSCRIBE/UNSUBSCRIBE, subscriptions,
 *                    incoming pushes, recovery after an outage
 *   redis_ops.c      publish, history and presence reads
 *   redis_control.c  control messages: signed, checked, sent
 *
 * Where it runs. Everything here that touches Redis runs on loop 0 (the
 * layer's home), on chan_rconn connections (redis_topo.h) of loop 0's
 * libuv loop. Other loop threads reach it through host->call, and answers go
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
 *
 * Names: rd_ for functions shared between these files (dj_ is the Django
 * bridge's, django.h).
 */
#ifndef HR_CHANNELS_REDIS_INTERNAL_H
#define HR_CHANNELS_REDIS_INTERNAL_H

#include "django.h"
#include "layer_internal.h"
#include "redis_topo.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
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
typedef struct rd_retired rd_retired;

/* One channel's state on the home thread. */
typedef struct rchan {
    char *name;
    uint64_t hash; /* chan_hash(name) */
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
    chan_rconn *cmd, *sub;
    int cmd_ready, sub_ready, up;
    int was_up;       /* has been up before: a reconnect, not the first connect */
    int setup_failed; /* AUTH & co. refused since the shard was last up (said once) */
    unsigned attempt;
    uv_timer_t retry;
    uv_timer_t connect_timer;
    chan_tab channels; /* channel -> rchan */
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
    rd_retired *retired; /* command connections let go of, answering what they were sent */
    /* control messages: HMAC-SHA256 keys (the first signs), and the nonces
     * seen within the window (home thread) */
    unsigned char (*ctl_keys)[32];
    size_t nctl_keys;
    hr_map *ctl_seen;       /* nonce -> expiry (wall ms), home thread */
    uint64_t err_logged_ms; /* rd_log_reply_error's limit, home thread */
    size_t ctl_sweep_at;
    uint64_t ctl_logged_ms;
    /* any thread (metrics, readyz) */
    atomic_ullong control_rejected;
    atomic_int shards_up;
    atomic_ullong reconnects;
    atomic_ullong pending_bytes;
    atomic_ullong bad_messages;
    /* the Django Channels bridge (django.h), NULL without one */
    dj_bridge *django;
};

/*---- Tasks between threads ---------------------------------------------------*/

/* Runs fn on the home thread (loop 0). */
typedef struct home_task {
    chan_task task;
    redis_layer *L;
    void (*fn)(redis_layer *L, struct home_task *t);
    char *channel;
    uint64_t hash; /* chan_hash(channel), where known */
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

static inline redis_layer *rd_layer(chan_layer *l)
{
    return (redis_layer *)l;
}

/*---- redis.c ----------------------------------------------------------------*/

/* Logs an error reply in Redis' own words, at most once a second. Home
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
/* Tasks: rd_home_task_new makes one that runs fn on the home thread
 * (rd_to_home); a request (rd_request_new, rd_channel_request) is counted
 * in its thread's inflight and goes back there with rd_to_caller, where
 * its answer runs. */
void rd_task_free(home_task *t);
void rd_home_run(chan_task *ct);
void rd_home_discard(chan_task *ct);
void rd_answer_run(chan_task *ct);
home_task *rd_home_task_new(redis_layer *L, void (*fn)(redis_layer *, home_task *));
void rd_to_home(redis_layer *L, home_task *t);
void rd_to_caller(redis_layer *L, home_task *t);
home_task *rd_request_new(redis_layer *L, unsigned thread, void (*fn)(redis_layer *, home_task *),
                          void (*answer)(home_task *), void *cb, void *ud);
home_task *rd_channel_request(redis_layer *L, unsigned thread,
                              void (*fn)(redis_layer *, home_task *), void (*answer)(home_task *),
                              void *cb, void *ud, const char *channel, const chan_opts *o);

/*---- redis_shard.c (home thread) ----------------------------------------------*/

/* Sends a command on the shard's cmd connection (argv copied; cb may be
 * NULL). Returns 0 (cb runs exactly once), or -1 when there is no
 * connection (cb never runs). */
int rd_cmd(shard *sh, chan_rconn_reply_fn cb, void *priv, int argc, const char **argv,
           const size_t *lens);
/* Sends a (UN)SUBSCRIBE on the shard's sub connection; its error replies
 * are logged (rd_sub_cmd_reply), confirmations come to rd_sub_push.
 * Returns 0, or -1 when there is no connection. */
int rd_sub_cmd(shard *sh, int argc, const char **argv);
/* Starts connecting the shard. */
void rd_shard_connect(shard *sh);
/* At the layer's stop: closes the shard's timers and connections (the cmd
 * connection after answering what it was sent, within 2 s). */
void rd_shard_stop(shard *sh);

/* Recomputes `up` after a connection changed state. */
void rd_shard_update_up(shard *sh);
/* Samples the bytes the subscriber connections have not read yet. */
void rd_sample_pending(redis_layer *L);

/*---- redis_subs.c (home thread) -----------------------------------------------*/

void rd_rchan_free(void *p);
/* Brings Redis in line with what the node wants of c. */
void rd_rchan_sync(rchan *c);
void rd_presence_send(redis_layer *L, rchan *c, const char *client, const char *entry);
/* Answers c's waiting subscriptions (up: proceed; else as in an outage). */
void rd_run_waiters(redis_layer *L, rchan *c, int up);
/* Delivers what was held back while c was recovering. */
void rd_dispatch_held(redis_layer *L, rchan *c);
/* The subscriber connection's pushes (messages, confirmations), and the
 * answers to its commands. */
void rd_sub_push(chan_rconn *c, void *ud, const chan_rpush *p);
void rd_sub_cmd_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err);
/* Parses an FCALL <fn>_history reply. Returns 0, or -1 (nothing to free). */
int rd_parse_history(const redisReply *r, chan_pos *top, chan_pub **pubs, size_t *n);
/* Sends FCALL <fn>_history. Returns 0, or -1 when the shard is down. */
int rd_send_history(redis_layer *L, shard *sh, const char *channel, int64_t since, int64_t limit,
                    chan_rconn_reply_fn cb, void *priv);
/* Periodic: keeps the history metas of subscribed channels alive, and
 * refreshes this node's presence entries. */
void rd_touch_history(redis_layer *L);
void rd_refresh_presence(redis_layer *L);
/* ops */
void rd_subscribe(chan_layer *l, unsigned thread, chan_sub *s);
void rd_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s);
void rd_channel_open(chan_layer *l, const char *channel, uint64_t h);
void rd_channel_close(chan_layer *l, const char *channel, uint64_t h);

/*---- redis_ops.c ----------------------------------------------------------------*/

void rd_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const char *data_json, size_t data_len, const char *from, chan_publish_cb cb,
                void *ud);
void rd_history(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud);
void rd_presence(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                 chan_presence_cb cb, void *ud);

/*---- redis_control.c --------------------------------------------------------------*/

/* A message on the control topic (home thread): obeyed if signed, fresh
 * and new. */
void rd_control_receive(redis_layer *L, const char *payload, size_t len);
void rd_control(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb, void *ud);

#endif
