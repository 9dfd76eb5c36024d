/*
 * redis_topo.h - the foundations of Redis high availability for the Redis
 * channel layer (SPEC section 5, "High availability"): Redis Cluster routing
 * (pure), an asynchronous RESP connection on a libuv loop that carries
 * sharded pub/sub, Sentinel discovery and following, and a Redis Cluster
 * topology manager. Internal to channels/; nothing outside the Redis layer
 * includes it.
 *
 * Why not hiredis' async API: hiredis 0.14.1 (Debian 12) knows neither
 * Sentinel nor Cluster, aborts the process on SSUBSCRIBE (its async
 * reply matching knows only SUBSCRIBE/PSUBSCRIBE), and its libuv adapter
 * drops connect errors. chan_rconn keeps hiredis' protocol parser
 * (redisReader) and command formatter (redisFormatCommandArgv), which are
 * pure and well fuzzed, and does its own I/O on a uv_tcp_t.
 *
 * Threads: every object here belongs to the libuv loop it was created on;
 * its functions are called on that loop's thread only, and every callback
 * runs there. Nothing blocks: names are resolved on libuv's thread pool,
 * connects and replies have deadlines.
 *
 * How the Redis layer is meant to use them (the integration step, see
 * docs/internals/redis-ha.md and channels/redis_internal.h):
 *
 *   - Configuration: hr_redis_targets_parse (common.h) instead of
 *     hr_redis_urls_parse. A HR_REDIS_DIRECT target is today's shard.
 *   - Sentinel shard: chan_sentinel_start per shard. Its `master` callback
 *     with host == NULL means "the master is changing": the shard goes
 *     down exactly as in an outage (readyz 503, plain channels local,
 *     history channels unavailable). With an address it connects the
 *     shard's chan_rconn connections there (user/password/db from the
 *     target's `node`), loads the function library, resubscribes and
 *     recovers as after an outage, applying the epoch rule for streams
 *     that lost their tail. A command answered READONLY, or a lost shard
 *     connection, calls chan_sentinel_recheck.
 *   - Cluster: one chan_rcluster for the whole layer. Every command goes
 *     through chan_rcluster_command with the channel's tagged key
 *     (chan_tagged_key), so FCALL <fn>_publish 1 <p>:ch:{C} C DATA runs
 *     where all of C's keys live. Channels are subscribed with
 *     chan_rcluster_ssubscribe(<p>:ch:{C}); its `subscribed` callback
 *     (active 0/1) replaces the SUBSCRIBE confirmations: 1 after 0 is
 *     "renewed after an outage" (recover history, tell subscribers), 0 is
 *     "down" for that channel only. The function library goes in the
 *     config's `init` commands, so every master gets it on connect
 *     (after a failover and on new nodes too).
 *   - The layer's connections are chan_rconn already: the home's (loop 0)
 *     per shard, and each loop thread's own command connection per shard
 *     (the objects are per loop, not shared); in Cluster mode each loop
 *     would own a chan_rcluster for its commands.
 */
#ifndef HR_CHANNELS_REDIS_TOPO_H
#define HR_CHANNELS_REDIS_TOPO_H

#include "common/common.h"
#include "common/redis_url.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/*---- Logging ----------------------------------------------------------------*/

/* Levels as gateway/log.h's HR_LOG_*; event is a short stable name
 * ("sentinel_lied"), msg a sentence. Strings are borrowed for the call. */
enum { CHAN_RLOG_DEBUG = 0, CHAN_RLOG_INFO, CHAN_RLOG_WARN, CHAN_RLOG_ERROR };
typedef void (*chan_rlog_fn)(void *ud, int level, const char *event, const char *msg);
/* Formats a line and hands it to fn, or prints "herald: <msg>" on stderr
 * when fn is NULL. */
void chan_rlog(chan_rlog_fn fn, void *ud, int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The delay before retry number `attempt` (0, 1, ...): exponential from
 * 100 ms to 5 s with full jitter (AWS' "exponential backoff and jitter"),
 * so nodes that lost Redis together do not come back together. */
uint64_t chan_backoff_ms(unsigned attempt);

/*---- Redis Cluster routing (pure, redis_slots.c) ----------------------------*/

#define CHAN_SLOTS 16384
/* Nodes one slot map may name (16384 slots need at most that many masters;
 * a bound keeps a hostile reply from growing the map without end). */
#define CHAN_MAX_NODES 16384

/* CRC16 (XMODEM) of n bytes: the cluster specification's key hash. */
uint16_t chan_crc16(const void *p, size_t n);
/* The slot of a key: CRC16 of its hash tag (the bytes between the first
 * '{' and the first '}' after it, if not empty) or of the whole key,
 * modulo 16384. */
int chan_key_slot(const char *key, size_t len);

/* Hash-tag naming. In cluster mode every key and topic of channel C
 * carries the tag {C}: "<prefix>:<kind>:{C}" (kinds as in
 * redis_internal.h: ch, history, history-meta, presence, presence-exp), so
 * they all hash to chan_channel_slot(C) and one Function call can touch
 * them all. Channel names cannot contain braces (chan_name_valid); the
 * prefix must not either (chan_tag_prefix_valid), or its brace would
 * become the tag.
 * Returns a malloc'ed string (caller frees); aborts on OOM. */
char *chan_tagged_key(const char *prefix, const char *kind, const char *channel);
/* 1 if prefix can precede a hash tag (no '{' or '}'). */
int chan_tag_prefix_valid(const char *prefix);
/* The slot of every tagged key of channel. */
int chan_channel_slot(const char *channel);

/* A node of a slot map. */
typedef struct chan_slot_node {
    char *host; /* where to connect (never empty) */
    int port;
    char *id;   /* node id, "" when the reply gave none */
    int master; /* -1: a master; else the index of its master in nodes[] */
} chan_slot_node;

/* Which master serves each slot, and the replicas. */
typedef struct chan_slotmap {
    int16_t owner[CHAN_SLOTS]; /* index into nodes[] of the slot's master, -1: none */
    chan_slot_node *nodes;
    size_t nnodes;
    size_t nmasters;
} chan_slotmap;

/* Builds a map from a CLUSTER SLOTS reply (r borrowed). An endpoint given
 * as NULL or "" means default_host (the host the reply came from); "?"
 * (unknown endpoint) leaves those slots without a master. Returns a new
 * map (free with chan_slotmap_free) or NULL with a reason in err for a
 * malformed or self-contradicting reply. */
chan_slotmap *chan_slotmap_from_slots(const redisReply *r, const char *default_host, char *err,
                                      size_t errlen);
/* The same from a CLUSTER SHARDS reply (Redis 7, RESP2 form: each shard a
 * flat [key, value, ...] array). */
chan_slotmap *chan_slotmap_from_shards(const redisReply *r, const char *default_host, char *err,
                                       size_t errlen);
void chan_slotmap_free(chan_slotmap *m);
/* The master serving slot, or NULL (borrowed from m). */
const chan_slot_node *chan_slotmap_master(const chan_slotmap *m, int slot);
/* The index of the node at host:port, or -1. */
int chan_slotmap_find(const chan_slotmap *m, const char *host, int port);
/* Slots without a master. */
int chan_slotmap_uncovered(const chan_slotmap *m);
/* 1 if every slot has the same master address in both maps. */
int chan_slotmap_same(const chan_slotmap *a, const chan_slotmap *b);
/* Records what a MOVED said (slot now at host:port) until the next full
 * read. Returns 0, or -1 for a bad address. */
int chan_slotmap_move(chan_slotmap *m, int slot, const char *host, int port);

/* A redirection error: "MOVED <slot> <host>:<port>" or "ASK ...". host ""
 * means the host of the connection that got it (Redis 7 may omit it). */
typedef struct chan_redirect {
    int ask; /* 1: ASK (this command only, after ASKING); 0: MOVED */
    int slot;
    char host[256];
    int port;
} chan_redirect;

/* Parses an error reply's text (len bytes, not NUL-terminated). Returns 1
 * for a well-formed MOVED or ASK, 0 for anything else. */
int chan_redirect_parse(const char *err, size_t len, chan_redirect *out);

/*---- An asynchronous RESP connection (redis_conn.c) -------------------------*/

/* One TCP connection to one Redis server, on one libuv loop: hiredis'
 * parser and formatter, libuv's I/O. Commands are pipelined (everything
 * sent in one loop iteration leaves in one write) and answered in order
 * through per-command callbacks. A connection opened with `pubsub` also
 * carries pub/sub, sharded pub/sub included: (S|P)SUBSCRIBE and
 * (S|P)UNSUBSCRIBE confirmations and messages come through ops->push.
 *
 * A connection is never reused after it ends: the owner opens a new one
 * (reconnect policy, backoff and where to go are the owner's business). */
typedef struct chan_rconn chan_rconn;

/* The answer to one command: r is the reply, borrowed for the call (an
 * error reply is REDIS_REPLY_ERROR with Redis' own text in r->str, e.g.
 * "MOVED 3999 10.0.0.2:6379" or "WRONGPASS ..."), or NULL when the
 * connection ended before it came, with the reason in err. A command
 * that subscribes is answered once all of its confirmations are in (r is
 * the last one). */
typedef void (*chan_rconn_reply_fn)(chan_rconn *c, void *priv, const redisReply *r,
                                    const char *err);

/* A pub/sub push: a message, or a subscription change. Strings point into
 * the reply, valid for the call; not NUL-terminated (use the lengths). */
typedef struct chan_rpush {
    const char *kind;    /* "message", "smessage", "pmessage", "subscribe", "ssubscribe",
                          * "psubscribe", "unsubscribe", "sunsubscribe", "punsubscribe" */
    int message;         /* 1: a message (payload set); 0: a subscription change */
    const char *channel; /* NULL in a confirmation that names none */
    size_t channel_len;
    const char *pattern; /* pmessage and p(un)subscribe */
    size_t pattern_len;
    const char *payload;
    size_t len;
    long long count; /* subscription changes: the server's count after it */
    /* Subscription changes: 1 when it answers one of our commands, 0 when
     * the server changed it by itself (Redis 7 sends sunsubscribe to every
     * subscriber of a shard channel whose slot the node loses: migrated
     * away or demoted by a failover). */
    int solicited;
} chan_rpush;

typedef struct chan_rconn_ops {
    /* Connected, and AUTH / SELECT / CLIENT SETNAME succeeded: commands
     * issued so far are sent now. */
    void (*ready)(chan_rconn *c, void *ud);
    /* The connection ended (could not connect, setup refused, lost, no
     * reply in time, protocol error): why says so, with Redis' own error
     * text where it gave one. Every command still waiting was answered
     * (r NULL) first. Called once; never after chan_rconn_close. The
     * owner still calls chan_rconn_close (from here is fine). */
    void (*closed)(chan_rconn *c, void *ud, const char *why);
    /* A pub/sub push (pubsub connections only; NULL: ignored). */
    void (*push)(chan_rconn *c, void *ud, const chan_rpush *p);
} chan_rconn_ops;

typedef struct chan_rconn_config {
    const char *host; /* name or address: names are resolved on libuv's thread pool */
    int port;
    const char *user, *password; /* AUTH [user] password when password != NULL */
    int db;                      /* SELECT when != 0 */
    const char *client_name;     /* CLIENT SETNAME (no spaces), or NULL */
    int pubsub;                  /* pushes expected: see above */
    unsigned connect_timeout_ms; /* name + connect + setup; 0 = 2000 */
    unsigned reply_timeout_ms;   /* the oldest command waits at most this; 0 = forever */
    const chan_rconn_ops *ops;
    void *ud;
} chan_rconn_config;

/* Starts connecting (strings copied). Never NULL: every failure, an
 * unresolvable name included, comes later through ops->closed. The
 * returned connection is the caller's: end it with chan_rconn_close. */
chan_rconn *chan_rconn_open(uv_loop_t *loop, const chan_rconn_config *cfg);
/* Queues a command (argv copied; lens NULL = strlen). Commands given
 * before the connection is ready wait for the setup to succeed (so none
 * runs unauthenticated or on the wrong database). cb may be NULL. Returns
 * 0, or -1 when the connection has ended or the command is refused here:
 * a subscribe family command on a connection without `pubsub`, or an
 * (S|P)UNSUBSCRIBE without channels (its replies cannot be matched). cb
 * is not called after -1. */
int chan_rconn_command(chan_rconn *c, chan_rconn_reply_fn cb, void *priv, int argc,
                       const char **argv, const size_t *lens);
/* Starts writing what was queued now, instead of just before the loop
 * next waits (where everything queued in one iteration leaves in one
 * write): for a command that must reach the server before something else
 * this loop is about to send elsewhere. Does nothing before the connection
 * is ready or while a write is in flight (the queue then leaves when it
 * ends). Errors are reported later, through ops->closed, as always. */
void chan_rconn_flush(chan_rconn *c);
/* Ends the connection and frees it (at once, or once libuv has let go of
 * its handles). Commands still waiting are answered with r NULL before it
 * returns; ops->closed is not called. Safe from inside any of c's
 * callbacks; c must not be used afterwards. NULL ok. */
void chan_rconn_close(chan_rconn *c);
/* 1 once ops->ready ran, until the connection ends. */
int chan_rconn_ready(const chan_rconn *c);
/* "host:port" as configured (borrowed, lives as long as c). */
const char *chan_rconn_peer(const chan_rconn *c);
/* The setup command ("AUTH", "SELECT", "CLIENT SETNAME") Redis refused,
 * which ended the connection, with Redis' own text in *text (text may be
 * NULL); NULL when none was refused. For ops->closed, where it tells a
 * refusal (credentials, database) from a lost connection. */
const char *chan_rconn_refused(const chan_rconn *c, const char **text);
/* Commands sent or queued and not answered yet. */
size_t chan_rconn_waiting(const chan_rconn *c);
/* Bytes the server has sent that are not processed yet (kernel socket
 * buffer + parser buffer): what Redis' client-output-buffer-limit would
 * count against us. */
size_t chan_rconn_unread(const chan_rconn *c);

/*---- Sentinel discovery and following (redis_sentinel.c) --------------------*/

/* Finds the master that a set of sentinels name, checks it, and follows it
 * through failovers:
 *   1. asks the sentinels in order (starting with the last one that
 *      answered well) SENTINEL get-master-addr-by-name NAME; one that is
 *      unreachable, refuses (a wrong sentinel password: its own text is
 *      logged), does not know NAME or names a bad address is skipped;
 *   2. checks the named node with ROLE (the master's credentials): a node
 *      that says it is a replica means that sentinel is stale or lying,
 *      and the next one is asked; when no sentinel gives a master, the
 *      round is tried again after a backoff (100 ms doubling to 5 s, full
 *      jitter);
 *   3. keeps a pub/sub connection to one sentinel, subscribed to
 *      +switch-master (moving to the next sentinel when it is lost, and
 *      asking again once subscribed, in case a switch was missed), and
 *      asks again every poll_ms anyway.
 * The owner hears `master(host, port)` once a master is checked, and
 * `master(NULL, 0)` as soon as that master is known to be gone
 * (+switch-master, or chan_sentinel_recheck). */
typedef struct chan_sentinel chan_sentinel;

typedef struct chan_sentinel_config {
    const hr_redis_addr *sentinels; /* host and port of each (copied) */
    int nsentinels;
    const char *master_name;
    const char *sentinel_user, *sentinel_password; /* the sentinels' own, or NULL */
    const char *user, *password;                   /* the master's (for ROLE), or NULL */
    const char *client_name;                       /* CLIENT SETNAME, or NULL */
    unsigned connect_timeout_ms;                   /* each connection; 0 = 2000 */
    unsigned poll_ms;                              /* ask again this often; 0 = 10000 */
    /* The checked master (host borrowed for the call), or NULL: the master
     * reported before is gone; another report follows once one is found.
     * The owner may call chan_sentinel_recheck or _stop from here. */
    void (*master)(void *ud, const char *host, int port);
    chan_rlog_fn log; /* NULL: lines on stderr */
    void *ud;
} chan_sentinel_config;

/* Starts discovery on loop (config copied). Returns the follower (the
 * caller's; end it with chan_sentinel_stop), or NULL when the config has
 * no sentinel or no master name. */
chan_sentinel *chan_sentinel_start(uv_loop_t *loop, const chan_sentinel_config *cfg);
/* The owner's connection to the master failed, or it answered READONLY:
 * the master is reported gone (master(NULL, 0), if one was reported) and
 * discovery starts again; the same master may be reported back. */
void chan_sentinel_recheck(chan_sentinel *s);
/* The master reported last, or NULL (port in *port). Borrowed. */
const char *chan_sentinel_master(const chan_sentinel *s, int *port);
/* Stops and frees (once libuv has closed its timers). No callback runs
 * afterwards. Safe from inside `master`. NULL ok. */
void chan_sentinel_stop(chan_sentinel *s);

/*---- Redis Cluster topology (redis_cluster.c) --------------------------------*/

/* Keeps the slot map of a Redis Cluster and routes commands and sharded
 * subscriptions by it:
 *   - reads CLUSTER SLOTS from a seed or known node (the next one when it
 *     fails, with backoff), again every refresh_ms, after a MOVED, after a
 *     lost connection and when a node unsubscribes us by itself;
 *   - one command connection and one pub/sub connection per node (opened
 *     when first needed; command connections to every master at once, so
 *     readiness means every master is reachable and initialised);
 *   - a command goes to the master of its key's slot; MOVED updates the
 *     map at once, schedules a full read and retries at the named node;
 *     ASK retries there once after ASKING; TRYAGAIN (a multi-key command
 *     during a migration) retries after 50 ms; at most 5 redirections.
 *     A command whose connection is lost is answered with r NULL, never
 *     retried: it may have run;
 *   - wanted shard channels are SSUBSCRIBEd at their slot's master, one
 *     SSUBSCRIBE per slot with all its channels (a Redis requirement),
 *     pipelined; when the owner changes (failover, migration: Redis then
 *     unsubscribes us by itself), the connection is lost, or SSUBSCRIBE
 *     is answered MOVED, the channel is reported inactive and subscribed
 *     again where the new map says (after Redis unsubscribed us: a map
 *     read sent after that, so one move is one inactive/active pair).
 * Not handled: TLS, replicas for reads, nodes announced by hostname only
 * through CLUSTER SHARDS (CLUSTER SLOTS carries the preferred endpoint). */
typedef struct chan_rcluster chan_rcluster;

/* A command's answer: r borrowed for the call (an error reply carries
 * Redis' text; MOVED/ASK/TRYAGAIN never reach here unless the redirection
 * limit was hit), or NULL with err when it could not be delivered or
 * answered (then it may or may not have run). */
typedef void (*chan_rcluster_reply_fn)(void *priv, const redisReply *r, const char *err);

/* A command given as argv (lens NULL = strlen). */
typedef struct chan_rcmd {
    int argc;
    const char *const *argv;
    const size_t *lens;
} chan_rcmd;

typedef struct chan_rcluster_config {
    const hr_redis_addr *seeds; /* host and port of each (copied) */
    int nseeds;
    const char *user, *password; /* every node's */
    const char *client_name;     /* CLIENT SETNAME, or NULL */
    unsigned connect_timeout_ms; /* 0 = 2000 */
    unsigned reply_timeout_ms;   /* command connections; 0 = 5000 */
    unsigned refresh_ms;         /* read the map this often anyway; 0 = 10000 */
    /* Commands every new command connection to a master runs before any
     * other (e.g. FUNCTION LOAD REPLACE <library>), copied. One refused
     * (Redis' text is logged) ends that connection: the node is not ready
     * and is tried again later. */
    const chan_rcmd *init;
    int ninit;
    /* A new slot map (borrowed for the call); not called when a read gave
     * the same owners again. */
    void (*map)(void *ud, const chan_slotmap *m);
    /* 1: every slot has a master whose command connection is up and
     * initialised; 0: not any more. Called on changes only. */
    void (*ready)(void *ud, int ready);
    /* A wanted shard channel is now subscribed at its slot's master
     * (active 1), or no longer is (0: a message may have been missed;
     * it is being subscribed again). */
    void (*subscribed)(void *ud, const char *channel, int active);
    /* An smessage of a wanted channel (borrowed for the call). */
    void (*message)(void *ud, const char *channel, const char *payload, size_t len);
    chan_rlog_fn log; /* NULL: lines on stderr */
    void *ud;
} chan_rcluster_config;

/* Starts reading the map (config copied). The manager is the caller's:
 * end it with chan_rcluster_stop. NULL when there is no seed. */
chan_rcluster *chan_rcluster_start(uv_loop_t *loop, const chan_rcluster_config *cfg);
/* Routes a command by the slot of key (key NULL: slot 0's master, for
 * commands of no key such as PUBLISH). argv is copied. Returns 0 (cb runs
 * exactly once, later), or -1 when no map is known yet or the slot's
 * master is unreachable for now (cb never runs). */
int chan_rcluster_command(chan_rcluster *cl, const char *key, size_t keylen,
                          chan_rcluster_reply_fn cb, void *priv, int argc, const char **argv,
                          const size_t *lens);
/* The same, routed to the master of `slot` (0..16383). */
int chan_rcluster_command_slot(chan_rcluster *cl, int slot, chan_rcluster_reply_fn cb, void *priv,
                               int argc, const char **argv, const size_t *lens);
/* Wants / no longer wants the shard channel (copied). `subscribed`
 * reports when it is active; nothing is reported after sunsubscribe. */
void chan_rcluster_ssubscribe(chan_rcluster *cl, const char *channel);
void chan_rcluster_sunsubscribe(chan_rcluster *cl, const char *channel);
/* As the last `ready` call said. */
int chan_rcluster_ready(const chan_rcluster *cl);
/* 1 if the master of slot is known and its command connection is up and
 * initialised now: a command for the slot goes out at once. */
int chan_rcluster_slot_ready(const chan_rcluster *cl, int slot);
/* The current map, or NULL before the first read. Borrowed: valid until
 * control returns to the loop. */
const chan_slotmap *chan_rcluster_map(const chan_rcluster *cl);
/* Stops and frees (once libuv has closed its timers): connections close,
 * commands waiting are answered with r NULL before it returns, nothing
 * else is called afterwards. NULL ok. */
void chan_rcluster_stop(chan_rcluster *cl);

#endif
