/*
 * redis_own.c - a node's own publications, recognised when they come back
 * from Redis so they are not JSON-parsed again (redis_internal.h). Pure:
 * no I/O; unit tested (tests/unit/channels/redis_own.c).
 *
 * Every publication goes through Redis and comes back on the home's
 * subscriber connection (one order for every node). Before this, the home
 * parsed and checked each one (chan_msg_parse_push), the node's own
 * included, although the node had built that very text from JSON the
 * gateway had already checked. Now the loop that publishes keeps the
 * message it built, before sending it, in a ring of its own per shard
 * (single producer: that loop; single consumer: the home), and the home
 * takes it back when a text on the channel's topic is byte for byte the
 * same:
 *   - plain channels: the text is the message's payload exactly, and the
 *     message itself is dispatched (its channel hash included: no hashing
 *     on the way back either);
 *   - history channels: Redis' function inserts ,"offset":O (O > 0, digits
 *     without a leading zero, within 63 bits) where chan_publication_offset_at
 *     says; the rest must be the same bytes, and a message is made from
 *     the text with that offset.
 * Anything else is parsed as before. Anyone allowed to PUBLISH may write
 * on the topic: a text is trusted only when it is one the node built
 * (parsing an identical text would give the same message), never because
 * of what it claims.
 *
 * Order. Redis runs one connection's commands in order and delivers a
 * topic's messages to a subscriber in the order it ran them, so a loop's
 * publications come back in the order they entered its ring. A text that
 * matches entry k shows that entries before it will never come back (their
 * channel had no subscriber on Redis' side any more, their connection
 * died before Redis ran them): they are dropped. Entries nobody takes
 * within RD_OWN_STALE_US are dropped by the home's tick; a full ring
 * registers nothing more (the texts are then parsed).
 */
#include "redis_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* How far into a ring the home looks for a text: the publications one
 * loop has in flight to one shard, as a rule a handful. */
#define SCAN_MAX 32

int rd_own_match(const chan_msg *m, uint32_t split, const char *text, size_t len, uint64_t *offset)
{
    static const char key[] = ",\"offset\":";
    const char *p = chan_msg_payload(m);
    *offset = 0;
    if (!split)
        return len == m->len && !memcmp(text, p, len);
    size_t klen = sizeof(key) - 1, rest = m->len - split;
    if (split > m->len || len <= m->len + klen || memcmp(text, p, split) ||
        memcmp(text + split, key, klen))
        return 0;
    size_t i = split + klen, digits = len - m->len - klen;
    if (digits > 19 || text[i] == '0' || memcmp(text + i + digits, p + split, rest))
        return 0;
    uint64_t v = 0;
    for (size_t k = 0; k < digits; k++) {
        char c = text[i + k];
        if (c < '0' || c > '9')
            return 0;
        v = v * 10 + (uint64_t)(c - '0');
    }
    if (v == 0 || v > (uint64_t)INT64_MAX)
        return 0;
    *offset = v;
    return 1;
}

int rd_own_push(rd_own_ring *r, chan_msg *m, uint32_t split)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (tail - head == RD_OWN_RING)
        return -ENOSPC;
    r->e[tail % RD_OWN_RING] = (rd_own){chan_msg_ref(m), split};
    atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
    return 0;
}

/* Drops the entries before index `to` (consumer). */
static void pop_to(rd_own_ring *r, size_t head, size_t to)
{
    for (size_t i = head; i < to; i++) {
        chan_msg_unref(r->e[i % RD_OWN_RING].m);
        r->e[i % RD_OWN_RING].m = NULL;
    }
    atomic_store_explicit(&r->head, to, memory_order_release);
}

chan_msg *rd_own_take(rd_own_ring *r, const char *channel, size_t clen, const char *text,
                      size_t len)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t end = tail - head > SCAN_MAX ? head + SCAN_MAX : tail;
    for (size_t i = head; i < end; i++) {
        rd_own *e = &r->e[i % RD_OWN_RING];
        uint64_t offset;
        if (strlen(e->m->channel) != clen || memcmp(e->m->channel, channel, clen) ||
            !rd_own_match(e->m, e->split, text, len, &offset))
            continue;
        chan_msg *m = e->split
                          ? chan_msg_for_channel_h(text, len, e->m->channel, e->m->hash, offset)
                          : chan_msg_ref(e->m);
        pop_to(r, head, i + 1);
        m->born_us = hr_now_us(); /* latency counts from its arrival, as a parsed one's */
        return m;
    }
    return NULL;
}

void rd_own_expire(rd_own_ring *r, uint64_t now_us)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire), to = head;
    while (to < tail) {
        uint64_t born = r->e[to % RD_OWN_RING].m->born_us;
        if (now_us > born && now_us - born <= RD_OWN_STALE_US)
            break;
        to++;
    }
    if (to != head)
        pop_to(r, head, to);
}

void rd_own_clear(rd_own_ring *r)
{
    pop_to(r, atomic_load(&r->head), atomic_load(&r->tail));
}
