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
 * How the Redis layer is meant to use them (the integration step; the
 * layer's files are being restructured, see docs/internals/redis-ha.md):
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
 *   - Everything runs on loop 0 today; after the restructure each loop
 *     thread can own its own chan_rconn command connections per shard
 *     (the objects are per loop, not shared).
 */
#ifndef HR_CHANNELS_REDIS_TOPO_H
#define HR_CHANNELS_REDIS_TOPO_H

#include "common/common.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/*---- Logging ----------------------------------------------------------------*/

/* Levels as gateway/log.h's HR_LOG_*; event is a short stable name
 * ("sentinel_lied"), msg a sentence. Strings are borrowed for the call. */
enum { CHAN_RLOG_DEBUG = 0, CHAN_RLOG_INFO, CHAN_RLOG_WARN, CHAN_RLOG_ERROR };
typedef void (*chan_rlog_fn)(void *ud, int level, const char *event, const char *msg);

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
 * carries the tag {C}: "<prefix>:<kind>:{C}" (kinds as in redis.c: ch,
 * history, history-meta, presence, presence-exp), so they all hash to
 * chan_channel_slot(C) and one Function call can touch them all. Channel
 * names cannot contain braces (chan_name_valid); the prefix must not
 * either (chan_tag_prefix_valid), or its brace would become the tag.
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

#endif
