/*
 * django.h - the Django Channels bridge of the Redis layer (cluster mode):
 * Herald understands channels_redis 4.0's wire formats, so a Django
 * project's unmodified `channel_layer.group_send(G, msg)` reaches Herald's
 * subscribers of channel G, and client publications of a namespace with
 * `django_channel` reach `channel_layer.receive(NAME)`. Not for use outside
 * channels/.
 *
 * Two parts:
 *  - pure functions (django_codec.c, no I/O, unit tested and fuzzable):
 *    msgpack <-> JSON, channel <-> group names;
 *  - the bridge (django.c): the Redis I/O, driven by the Redis layer
 *    through the few dj_bridge_* calls below, all on the layer's home thread (loop 0)
 *    except where said otherwise.
 *
 * What channels_redis 4.0 puts in Redis (read from its source), prefix <p>
 * (CHANNEL_LAYERS' "prefix", default "asgi"):
 *   RedisPubSubChannelLayer
 *     group_send(G, m)   PUBLISH <p>__group__G msgpack(m)
 *     send(C, m)         PUBLISH C msgpack(m)          (no prefix)
 *   RedisChannelLayer (the default)
 *     group_add(G, C)    ZADD <p>:group:G <now> C; EXPIRE group_expiry
 *     group_send(G, m)   for each member C (members older than group_expiry
 *                        dropped first): ZADD <p><C up to and including
 *                        '!'> <now> <12 random bytes><msgpack(m +
 *                        {"__asgi_channel__": [C, ...]})>, unless that
 *                        sorted set holds `capacity` entries; EXPIRE expiry
 *     send(C, m)         the same into <p>C for a plain C, refused
 *                        (ChannelFull) at capacity
 *     receive            BZPOPMIN on the sorted set
 */
#ifndef HR_CHANNELS_DJANGO_H
#define HR_CHANNELS_DJANGO_H

#include "channels.h"
#include "common/common.h"
#include "common/redis_url.h"

#include <stddef.h>

/*---- Names (pure) ----------------------------------------------------------*/

/* Django group names are 1..99 characters of [A-Za-z0-9_.-]
 * (BaseChannelLayer.MAX_NAME_LENGTH is 100, names must be shorter). */
#define DJ_NAME_MAX 100

/* The Django group name of Herald channel `channel`: the name itself, with
 * every ':' written as "..". Channels with characters Django refuses
 * (@ = ,), with ".." or a '.' next to a ':' (which would make two channels
 * share a group), or whose group name would be 100 bytes or longer have no
 * group: -1. Otherwise 0 and the name in out. */
int dj_group_of_channel(const char *channel, char out[DJ_NAME_MAX]);
/* The reverse: the Herald channel whose group is `group` (NUL-terminated)
 * into out (outlen bytes). -1 when no channel has that group. */
int dj_channel_of_group(const char *group, char *out, size_t outlen);
/* 1 if name is a Channels channel name Herald may send to: 1..99 of
 * [A-Za-z0-9_.-] (no '!': a process-local name is nobody's to send to). */
int dj_channel_name_valid(const char *name);

/*---- Messages (pure) -------------------------------------------------------*/

/* A Channels message read from Redis. */
typedef struct dj_message {
    char *json;    /* the message map as a JSON object, without __asgi_channel__ */
    size_t len;    /* strlen(json) */
    char **routes; /* the strings of __asgi_channel__ (RedisChannelLayer), if any */
    size_t nroutes;
} dj_message;

/* Decodes one msgpack-encoded Channels message: buf[0..len) must hold
 * exactly one map. JSON cannot hold everything msgpack can; the rules:
 *   nil, bool, integers (all 64-bit values, exactly), str (must be UTF-8)
 *                          as themselves
 *   float32/float64        shortest text that reads back as the same value
 *                          (2.0 stays "2.0"); NaN and infinities become null
 *   bin                    a string: standard base64 with padding
 *   map keys               str as is (without NUL); integers, nil, bool and floats as
 *                          their JSON text in a string (as Python's
 *                          json.dumps does); other keys refuse the message
 *   ext                    refuses the message
 * A message whose JSON would exceed max_json bytes is refused, and so is
 * anything malformed, truncated, followed by extra bytes, or nested deeper
 * than msgpack-c's 32 levels. Returns 0 with *out filled (free with
 * dj_message_clear), or -1 with a reason in err. Never reads outside buf;
 * allocates O(len) memory at most. */
int dj_decode(const void *buf, size_t len, size_t max_json, dj_message *out, char *err,
              size_t errlen);
void dj_message_clear(dj_message *m);

/* 1 if buf looks like a Fernet token (what an encrypted RedisChannelLayer
 * stores after its 12 random bytes): base64 text starting "gAAAAA". */
int dj_looks_encrypted(const void *buf, size_t len);

/* Encodes the message a namespace's django_channel receives:
 * {"type": "herald.publication", "channel": C, "user": U, "client": ID,
 *  "data": D} with D converted from JSON text (objects to maps, arrays,
 * strings to str, integers, reals to float64, true/false/null). Appends
 * the msgpack bytes to out. Returns 0, or -1 if data_json is not JSON. */
int dj_encode_publication(hr_buf *out, const char *channel, const char *user, const char *client,
                          const char *data_json, size_t data_len);

/* Encodes a JSON object (json, len bytes: a message such as
 * {"type": "herald.disconnect", ...}) as the layer's msgpack map, appended
 * to out. Returns 0, or -1 if json is not an object. */
int dj_encode_json(hr_buf *out, const char *json, size_t len);

/*---- The bridge (django.c) -------------------------------------------------*/

typedef enum dj_mode { DJ_OFF = 0, DJ_PUBSUB, DJ_REDIS } dj_mode;

typedef struct dj_bridge dj_bridge;
struct chan_rconn; /* redis_topo.h */

/* Creates the bridge of layer l (its home thread drives it). cfg is the
 * chan_redis_config's; herald_prefix and node_id name the connection.
 * Returns NULL with a reason in err. */
dj_bridge *dj_bridge_new(chan_layer *l, const chan_django_config *cfg, const char *herald_prefix,
                         const char *node_id, char *err, size_t errlen);
/* After every connection is gone (the layer's destroy). NULL ok. */
void dj_bridge_free(dj_bridge *b);
/* Home thread, at the layer's start: timers on uv_loop. */
void dj_bridge_start(dj_bridge *b, void *uv_loop);
/* Home thread, at the layer's stop, while shard 0's connections are still
 * open: leaves every group, deletes the node's inbox, closes the bridge's
 * own connection and timers. */
void dj_bridge_stop(dj_bridge *b);
/* Home thread: the first shard is up (cmd and sub connected, borrowed
 * until dj_bridge_down); addr (borrowed as long) says where to open the
 * bridge's own connection. Subscribes or joins again every group the node
 * wants. */
void dj_bridge_up(dj_bridge *b, struct chan_rconn *cmd, struct chan_rconn *sub,
                  const hr_redis_addr *addr);
/* Home thread: a message on the first shard's subscriber connection whose
 * topic (tlen bytes) is not Herald's: the pubsub layer's group topics are
 * delivered, anything else ignored. NULL b ok. */
void dj_bridge_message(dj_bridge *b, const char *topic, size_t tlen, const char *data, size_t len);
/* Home thread: the first shard is down; its connections are not to be
 * touched any more. */
void dj_bridge_down(dj_bridge *b);
/* Home thread: the node gained its first / lost its last subscriber of
 * channel (redis_subs.c, on the home thread). */
void dj_channel_open(dj_bridge *b, const char *channel);
void dj_channel_close(dj_bridge *b, const char *channel);
/* Any loop thread (chan_django_forward through the Redis layer's ops): hands
 * a client publication to Channels channel `target` on the home thread.
 * Fire and forget; strings copied. A no-op for b NULL. */
void dj_forward(dj_bridge *b, const char *target, const char *channel, const char *user,
                const char *client, const char *data_json, size_t data_len);
/* Any loop thread: sends the message json (a JSON object, copied) to
 * Channels channel `target` as channel_layer.send() would; cb(ud, 0 or
 * -1) runs on the home thread once Redis took it or refused it (NULL: fire
 * and forget). A no-op (cb -ENOTSUP at once) for b NULL. */
void dj_send(dj_bridge *b, const char *target, const char *json, size_t len, chan_status_cb cb,
             void *ud);
/* Any thread: adds the bridge's counters to out. */
void dj_bridge_stats(dj_bridge *b, chan_stats *out);

#endif
