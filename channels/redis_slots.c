/*
 * redis_slots.c - Redis Cluster routing, pure: key slots (CRC16 with hash
 * tags), the slot map read from CLUSTER SLOTS or CLUSTER SHARDS, MOVED and
 * ASK errors, and the hash-tagged names of a channel's keys and topics.
 * No I/O: the replies come parsed (hiredis' redisReader), so tests and the
 * fuzzer (fuzz/fuzz_redis_slots.c) feed bytes straight in. Interface in
 * redis_topo.h.
 */
#include "redis_topo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Key slots -----------------------------------------------------------------*/

/* CRC16-CCITT as Redis Cluster uses it (XMODEM: polynomial 0x1021, initial
 * value 0, no reflection; the cluster specification's "CRC16"). A table
 * would be faster; keys are short and this runs once per command. */
uint16_t chan_crc16(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(b[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int chan_key_slot(const char *key, size_t len)
{
    /* the hash tag: what lies between the first '{' and the first '}'
     * after it, when that is not empty (cluster specification) */
    const char *open = memchr(key, '{', len);
    if (open) {
        const char *rest = open + 1;
        const char *close = memchr(rest, '}', len - (size_t)(rest - key));
        if (close && close > rest)
            return chan_crc16(rest, (size_t)(close - rest)) & (CHAN_SLOTS - 1);
    }
    return chan_crc16(key, len) & (CHAN_SLOTS - 1);
}

int chan_tag_prefix_valid(const char *prefix)
{
    return !strpbrk(prefix, "{}");
}

char *chan_tagged_key(const char *prefix, const char *kind, const char *channel)
{
    char *k;
    if (asprintf(&k, "%s:%s:{%s}", prefix, kind, channel) < 0)
        abort();
    return k;
}

int chan_channel_slot(const char *channel)
{
    return chan_crc16(channel, strlen(channel)) & (CHAN_SLOTS - 1);
}

/*---- The slot map ----------------------------------------------------------------*/

static const redisReply *elem(const redisReply *r, size_t i)
{
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
}

static int is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static int str_is(const redisReply *r, const char *s)
{
    return is_str(r) && r->len == strlen(s) && !memcmp(r->str, s, r->len);
}

/* A port from an integer (CLUSTER SLOTS/SHARDS) or a decimal string. */
static int reply_port(const redisReply *r)
{
    long long v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (is_str(r) && r->len > 0 && r->len < 6 && strspn(r->str, "0123456789") == r->len)
        v = atoll(r->str);
    return v >= 1 && v <= 65535 ? (int)v : -1;
}

static long long reply_int(const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (is_str(r) && r->len > 0 && r->len < 12 && strspn(r->str, "0123456789") == r->len)
        return atoll(r->str);
    return -1;
}

/* Where to connect, from an endpoint field: NULL / "" means "the host this
 * reply came from" (Redis 7's cluster-preferred-endpoint-type); "?" an
 * unknown endpoint (returns NULL: unreachable). Returns a malloc'ed host. */
static char *endpoint_host(const redisReply *r, const char *default_host)
{
    if (!r || r->type == REDIS_REPLY_NIL || (is_str(r) && r->len == 0))
        return default_host && *default_host ? hr_strdup(default_host) : NULL;
    if (!is_str(r) || str_is(r, "?") || memchr(r->str, '\0', r->len) || r->len > 255)
        return NULL;
    return hr_strndup(r->str, r->len);
}

static chan_slotmap *map_new(void)
{
    chan_slotmap *m = hr_calloc(1, sizeof(*m));
    for (int i = 0; i < CHAN_SLOTS; i++)
        m->owner[i] = -1;
    return m;
}

void chan_slotmap_free(chan_slotmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nnodes; i++) {
        free(m->nodes[i].host);
        free(m->nodes[i].id);
    }
    free(m->nodes);
    free(m);
}

int chan_slotmap_find(const chan_slotmap *m, const char *host, int port)
{
    for (size_t i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && !strcmp(m->nodes[i].host, host))
            return (int)i;
    return -1;
}

/* Adds a node (host is taken) or finds it. Returns its index, or -1 when
 * the same address appears with another role or master (an inconsistent
 * reply). */
static int add_node(chan_slotmap *m, char *host, int port, const redisReply *id, int master)
{
    int i = chan_slotmap_find(m, host, port);
    if (i >= 0) {
        free(host);
        return m->nodes[i].master == master ? i : -1;
    }
    if (m->nnodes >= CHAN_MAX_NODES) {
        free(host);
        return -1;
    }
    m->nodes = hr_realloc(m->nodes, (m->nnodes + 1) * sizeof(*m->nodes));
    chan_slot_node *n = &m->nodes[m->nnodes];
    n->host = host;
    n->port = port;
    n->id = is_str(id) ? hr_strndup(id->str, id->len) : hr_strdup("");
    n->master = master;
    if (master < 0)
        m->nmasters++;
    return (int)m->nnodes++;
}

/* Gives slots [lo, hi] to node `owner`. Refuses a slot two masters claim. */
static int assign(chan_slotmap *m, long long lo, long long hi, int owner)
{
    if (lo < 0 || hi >= CHAN_SLOTS || lo > hi)
        return -1;
    for (long long s = lo; s <= hi; s++) {
        if (m->owner[s] >= 0 && m->owner[s] != owner)
            return -1;
        m->owner[s] = (int16_t)owner;
    }
    return 0;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        chan_slotmap_free(m);                                                                      \
        return NULL;                                                                               \
    } while (0)

chan_slotmap *chan_slotmap_from_slots(const redisReply *r, const char *default_host, char *err,
                                      size_t errlen)
{
    chan_slotmap *m = map_new();
    if (!r || r->type != REDIS_REPLY_ARRAY)
        BAD("CLUSTER SLOTS: not an array");
    /* [[start, end, [host, port, id, ...], [replica...]...], ...] */
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *range = r->element[i];
        if (!range || range->type != REDIS_REPLY_ARRAY || range->elements < 3)
            BAD("CLUSTER SLOTS: range %zu is not [start, end, master, ...]", i);
        long long lo = reply_int(range->element[0]), hi = reply_int(range->element[1]);
        const redisReply *mn = range->element[2];
        int port = reply_port(elem(mn, 1));
        if (!mn || mn->type != REDIS_REPLY_ARRAY || mn->elements < 2 || port < 0)
            BAD("CLUSTER SLOTS: range %zu has no master address", i);
        char *host = endpoint_host(mn->element[0], default_host);
        if (!host) /* unknown endpoint: these slots have no reachable master */
            continue;
        int owner = add_node(m, host, port, elem(mn, 2), -1);
        if (owner < 0 || assign(m, lo, hi, owner) < 0)
            BAD("CLUSTER SLOTS: range %zu contradicts another one", i);
        for (size_t k = 3; k < range->elements; k++) {
            const redisReply *rn = range->element[k];
            int rport = reply_port(elem(rn, 1));
            char *rhost = rport > 0 ? endpoint_host(elem(rn, 0), default_host) : NULL;
            if (rhost && add_node(m, rhost, rport, elem(rn, 2), owner) < 0)
                BAD("CLUSTER SLOTS: replica %zu of range %zu contradicts another entry", k - 3, i);
        }
    }
    return m;
}

/* The value after `key` in a RESP2 flattened map [k1, v1, k2, v2, ...]. */
static const redisReply *field(const redisReply *r, const char *key)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (str_is(r->element[i], key))
            return r->element[i + 1];
    return NULL;
}

chan_slotmap *chan_slotmap_from_shards(const redisReply *r, const char *default_host, char *err,
                                       size_t errlen)
{
    chan_slotmap *m = map_new();
    if (!r || r->type != REDIS_REPLY_ARRAY)
        BAD("CLUSTER SHARDS: not an array");
    /* [["slots", [lo, hi, ...], "nodes", [[k, v, ...], ...]], ...] */
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *slots = field(r->element[i], "slots");
        const redisReply *nodes = field(r->element[i], "nodes");
        if (!slots || slots->type != REDIS_REPLY_ARRAY || slots->elements % 2 || !nodes ||
            nodes->type != REDIS_REPLY_ARRAY)
            BAD("CLUSTER SHARDS: shard %zu has no slots or nodes", i);
        int owner = -1;
        for (size_t k = 0; k < nodes->elements; k++) { /* the master first */
            const redisReply *n = nodes->element[k];
            int port = reply_port(field(n, "port"));
            if (!str_is(field(n, "role"), "master") || port < 0)
                continue;
            const redisReply *ep = field(n, "endpoint");
            char *host = endpoint_host(ep ? ep : field(n, "ip"), default_host);
            if (!host)
                break;
            if (owner >= 0) {
                free(host);
                BAD("CLUSTER SHARDS: shard %zu has two masters", i);
            }
            if ((owner = add_node(m, host, port, field(n, "id"), -1)) < 0)
                BAD("CLUSTER SHARDS: shard %zu shares its master with another", i);
        }
        if (owner < 0)
            continue; /* no reachable master: its slots stay unassigned */
        for (size_t k = 0; k < slots->elements; k += 2)
            if (assign(m, reply_int(slots->element[k]), reply_int(slots->element[k + 1]), owner) <
                0)
                BAD("CLUSTER SHARDS: shard %zu has a bad or contested slot range", i);
        for (size_t k = 0; k < nodes->elements; k++) {
            const redisReply *n = nodes->element[k];
            int port = reply_port(field(n, "port"));
            if (str_is(field(n, "role"), "master") || port < 0)
                continue;
            const redisReply *ep = field(n, "endpoint");
            char *host = endpoint_host(ep ? ep : field(n, "ip"), default_host);
            if (host && add_node(m, host, port, field(n, "id"), owner) < 0)
                BAD("CLUSTER SHARDS: a replica of shard %zu contradicts another entry", i);
        }
    }
    return m;
}

#undef BAD

const chan_slot_node *chan_slotmap_master(const chan_slotmap *m, int slot)
{
    if (!m || slot < 0 || slot >= CHAN_SLOTS || m->owner[slot] < 0)
        return NULL;
    return &m->nodes[m->owner[slot]];
}

int chan_slotmap_uncovered(const chan_slotmap *m)
{
    int n = 0;
    for (int i = 0; i < CHAN_SLOTS; i++)
        n += m->owner[i] < 0;
    return n;
}

int chan_slotmap_same(const chan_slotmap *a, const chan_slotmap *b)
{
    if (!a || !b)
        return a == b;
    for (int i = 0; i < CHAN_SLOTS; i++) {
        const chan_slot_node *x = chan_slotmap_master(a, i), *y = chan_slotmap_master(b, i);
        if (!x != !y || (x && (x->port != y->port || strcmp(x->host, y->host))))
            return 0;
    }
    return 1;
}

int chan_slotmap_move(chan_slotmap *m, int slot, const char *host, int port)
{
    if (slot < 0 || slot >= CHAN_SLOTS || !host || !*host || port < 1 || port > 65535)
        return -1;
    int i = chan_slotmap_find(m, host, port);
    if (i >= 0 && m->nodes[i].master >= 0)
        m->nodes[i].master = -1, m->nmasters++; /* a promoted replica */
    if (i < 0 && (i = add_node(m, hr_strdup(host), port, NULL, -1)) < 0)
        return -1;
    m->owner[slot] = (int16_t)i;
    return 0;
}

/*---- MOVED and ASK -------------------------------------------------------------*/

int chan_redirect_parse(const char *err, size_t len, chan_redirect *out)
{
    const char *p = err, *end = err + len;
    memset(out, 0, sizeof(*out));
    if (len > 6 && !memcmp(p, "MOVED ", 6))
        p += 6;
    else if (len > 4 && !memcmp(p, "ASK ", 4))
        out->ask = 1, p += 4;
    else
        return 0;
    long slot = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9' && slot < CHAN_SLOTS)
        slot = slot * 10 + (*p++ - '0');
    if (p == digits || p >= end || *p != ' ' || slot >= CHAN_SLOTS)
        return 0;
    p++;
    /* "host:port", host possibly empty (the same host) or an IPv6 address
     * without brackets: the port follows the last ':' */
    const char *colon = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == ':')
            colon = q;
    if (!colon || (size_t)(colon - p) >= sizeof(out->host) || colon + 1 == end || end - colon > 6)
        return 0;
    long port = 0;
    for (const char *q = colon + 1; q < end; q++) {
        if (*q < '0' || *q > '9')
            return 0;
        port = port * 10 + (*q - '0');
    }
    if (port < 1 || port > 65535)
        return 0;
    for (const char *q = p; q < colon; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            return 0;
    if (colon - p > 2 && p[0] == '[' && colon[-1] == ']')
        p++, colon--; /* a bracketed IPv6 address, should a server send one */
    memcpy(out->host, p, (size_t)(colon - p));
    out->host[colon - p] = '\0';
    out->slot = (int)slot;
    out->port = (int)port;
    return 1;
}
