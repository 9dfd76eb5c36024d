/*
 * fuzz_redis_slots.c - what a Redis Cluster node tells Herald about the
 * cluster (channels/redis_slots.c): CLUSTER SLOTS and CLUSTER SHARDS
 * replies, as RESP bytes parsed by hiredis' redisReader the way a
 * connection reads them, and MOVED/ASK error texts. The first byte picks
 * the parser (0: SLOTS, 1: SHARDS, 2: a redirect); the rest is the input.
 *
 * Invariants: an accepted map points every slot at a master or at nothing,
 * every node has a host and a port in 1-65535, every replica's master is a
 * master, nmasters counts them, the node count stays bounded, and a map is
 * the same as itself; a refusal says why. An accepted redirect has a slot
 * in 0-16383, a port in 1-65535, a host without spaces, and formatting it
 * again parses back to the same redirect.
 */
#include "fuzz.h"
#include "channels/redis_topo.h"

#include <stdio.h>
#include <string.h>

static void check_map(const chan_slotmap *m)
{
    size_t masters = 0;
    FUZZ_ASSERT(m->nnodes <= CHAN_MAX_NODES);
    for (size_t i = 0; i < m->nnodes; i++) {
        const chan_slot_node *n = &m->nodes[i];
        FUZZ_ASSERT(n->host && n->host[0] && n->id);
        FUZZ_ASSERT(n->port >= 1 && n->port <= 65535);
        FUZZ_ASSERT(n->master < (int)m->nnodes);
        if (n->master < 0)
            masters++;
        else
            FUZZ_ASSERT(m->nodes[n->master].master == -1);
        FUZZ_ASSERT(chan_slotmap_find(m, n->host, n->port) == (int)i);
    }
    FUZZ_ASSERT(masters == m->nmasters);
    for (int s = 0; s < CHAN_SLOTS; s++) {
        FUZZ_ASSERT(m->owner[s] >= -1 && m->owner[s] < (int)m->nnodes);
        FUZZ_ASSERT(m->owner[s] < 0 || m->nodes[m->owner[s]].master == -1);
    }
    FUZZ_ASSERT(chan_slotmap_same(m, m));
}

/* hiredis reserves an array's element vector as soon as it reads the
 * count (up to 2^31 entries, lazily committed memory in a normal build);
 * libFuzzer's malloc limit would report that as a crash of this target.
 * Counts of a million and more are skipped: they are hiredis' business. */
static int huge_count(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d[i] != '*' && d[i] != '$')
            continue;
        size_t k = i + 1;
        while (k < n && d[k] >= '0' && d[k] <= '9')
            k++;
        if (k - i - 1 >= 7)
            return 1;
    }
    return 0;
}

static void fuzz_map(int shards, const uint8_t *d, size_t n)
{
    redisReader *rd = redisReaderCreate();
    if (huge_count(d, n))
        goto out;
    redisReaderFeed(rd, (const char *)d, n);
    for (int k = 0; k < 4; k++) {
        void *r = NULL;
        char err[160] = "";
        if (redisReaderGetReply(rd, &r) != REDIS_OK || !r)
            break;
        chan_slotmap *m = shards ? chan_slotmap_from_shards(r, "10.0.0.1", err, sizeof(err))
                                 : chan_slotmap_from_slots(r, "10.0.0.1", err, sizeof(err));
        if (m) {
            check_map(m);
            chan_slotmap_free(m);
        } else {
            FUZZ_ASSERT(err[0]);
        }
        freeReplyObject(r);
    }
out:
    redisReaderFree(rd);
}

static void fuzz_redirect(const uint8_t *d, size_t n)
{
    chan_redirect a, b;
    char again[320];
    if (!chan_redirect_parse((const char *)d, n, &a))
        return;
    FUZZ_ASSERT(a.slot >= 0 && a.slot < CHAN_SLOTS && a.port >= 1 && a.port <= 65535);
    FUZZ_ASSERT(strlen(a.host) < sizeof(a.host));
    for (const char *c = a.host; *c; c++)
        FUZZ_ASSERT((unsigned char)*c > ' ');
    int len = snprintf(again, sizeof(again), "%s %d %s:%d", a.ask ? "ASK" : "MOVED", a.slot, a.host,
                       a.port);
    FUZZ_ASSERT(chan_redirect_parse(again, (size_t)len, &b) == 1);
    FUZZ_ASSERT(a.ask == b.ask && a.slot == b.slot && a.port == b.port);
    FUZZ_ASSERT(!strcmp(a.host, b.host) || (a.host[0] == '[' && strlen(a.host) > 2));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_map(0, data + 1, size - 1);
        break;
    case 1:
        fuzz_map(1, data + 1, size - 1);
        break;
    default:
        fuzz_redirect(data + 1, size - 1);
    }
    return 0;
}
