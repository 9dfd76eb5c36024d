/* Unit tests for channels/redis_own.c: a node's own publications,
 * recognised byte for byte when they come back from Redis, never because
 * of what a text claims. */
#include "channels/redis_internal.h"
#include "common/common.h"
#include "testing.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FROM "{\"user\":\"alice\",\"client\":\"n0.1\",\"info\":{}}"

/* The text Redis' publish function makes for a history channel. */
static char *redis_text(const char *channel, const char *data, uint64_t offset, const char *from,
                        size_t *len)
{
    return chan_publication_text(channel, data, strlen(data), offset, from, len);
}

static uint32_t split_of(const char *channel, const char *data)
{
    return (uint32_t)chan_publication_offset_at(strlen(channel), strlen(data));
}

/* Plain channels: exactly the payload, nothing else. */
static void test_match_plain(void)
{
    chan_msg *m = chan_msg_publication("news", "{\"a\":1}", 7, 0, FROM);
    uint64_t off = 99;
    const char *p = chan_msg_payload(m);
    CHECK(rd_own_match(m, 0, p, m->len, &off) && off == 0);
    char *t = hr_strndup(p, m->len);
    t[m->len - 3] ^= 1; /* one byte differs */
    CHECK(!rd_own_match(m, 0, t, m->len, &off));
    CHECK(!rd_own_match(m, 0, p, m->len - 1, &off)); /* shorter */
    free(t);
    size_t len;
    char *other = redis_text("news", "{\"a\":1}", 0, NULL, &len); /* no "from": a backend's */
    CHECK(!rd_own_match(m, 0, other, len, &off));
    free(other);
    chan_msg_unref(m);
}

/* History channels: the payload with ,"offset":O where Redis puts it. */
static void test_match_history(void)
{
    const char *data = "[1,\"x\",{\"b\":null}]";
    const char *froms[2] = {FROM, NULL};
    for (int f = 0; f < 2; f++) {
        chan_msg *m = chan_msg_publication("chat:r", data, strlen(data), 0, froms[f]);
        uint32_t split = split_of("chat:r", data);
        uint64_t offs[4] = {1, 42, 100000000000000ull, (uint64_t)INT64_MAX};
        for (int i = 0; i < 4; i++) {
            size_t len;
            char *t = redis_text("chat:r", data, offs[i], froms[f], &len);
            uint64_t off = 0;
            CHECK(rd_own_match(m, split, t, len, &off) && off == offs[i]);
            free(t);
        }
        /* what a Redis function never writes, and forgeries: refused */
        const char *bad[] = {",\"offset\":0",
                             ",\"offset\":042",
                             ",\"offset\":-1",
                             ",\"offset\":1x",
                             ",\"offset\":",
                             ",\"offset\":9223372036854775808",
                             ",\"offset\":99999999999999999999",
                             ",\"offsex\":1",
                             " ,\"offset\":1"};
        const char *p = chan_msg_payload(m);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            hr_buf b = {0};
            hr_buf_append(&b, p, split);
            hr_buf_append(&b, bad[i], strlen(bad[i]));
            hr_buf_append(&b, p + split, m->len - split);
            uint64_t off = 0;
            int ok = rd_own_match(m, split, b.data, b.len, &off);
            if (ok)
                fprintf(stderr, "matched %s\n", bad[i]);
            CHECK(!ok);
            hr_buf_reset(&b);
        }
        /* the offset elsewhere, or other data around it */
        size_t len;
        char *t = redis_text("chat:r", "[1,\"x\",{\"b\":true}]", 7, froms[f], &len);
        uint64_t off;
        CHECK(!rd_own_match(m, split, t, len, &off));
        free(t);
        CHECK(!rd_own_match(m, split, p, m->len, &off)); /* no offset at all */
        chan_msg_unref(m);
    }
}

static chan_msg *plain(const char *channel, const char *data)
{
    return chan_msg_publication(channel, data, strlen(data), 0, NULL);
}

/* The ring: taken back in order, earlier entries that will never come back
 * dropped with the match, a full ring keeps nothing more, stale entries
 * expire; what is taken is the message built (plain) or one with the
 * offset (history), channel hash set. */
static void test_ring(void)
{
    rd_own_ring *r = hr_calloc(1, sizeof(*r));
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    chan_msg *a = plain("a", "1"), *b = plain("b", "2"), *c = plain("a", "3");
    CHECK(rd_own_push(r, a, 0) == 0 && rd_own_push(r, b, 0) == 0 && rd_own_push(r, c, 0) == 0);
    /* a foreign text on a: not ours, nothing dropped */
    size_t len;
    char *t = redis_text("a", "4", 0, NULL, &len);
    CHECK(rd_own_take(r, "a", 1, t, len) == NULL);
    free(t);
    CHECK(atomic_load(&r->tail) - atomic_load(&r->head) == 3);
    /* c comes back: a and b, sent before it, never will */
    chan_msg *got = rd_own_take(r, "a", 1, chan_msg_payload(c), c->len);
    CHECK(got == c && got->hash == chan_hash("a", 1));
    CHECK(atomic_load(&r->head) == 3);
    chan_msg_unref(got);
    /* the same text again is not ours any more */
    CHECK(rd_own_take(r, "a", 1, chan_msg_payload(c), c->len) == NULL);
    /* the channel must be the topic's */
    CHECK(rd_own_push(r, a, 0) == 0);
    CHECK(rd_own_take(r, "b", 1, chan_msg_payload(a), a->len) == NULL);
    CHECK(rd_own_take(r, "ab", 2, chan_msg_payload(a), a->len) == NULL);
    got = rd_own_take(r, "a", 1, chan_msg_payload(a), a->len);
    CHECK(got == a);
    chan_msg_unref(got);
    /* history: a new message with Redis' text and its offset */
    chan_msg *h = chan_msg_publication("h:x", "{}", 2, 0, FROM);
    CHECK(rd_own_push(r, h, split_of("h:x", "{}")) == 0);
    t = redis_text("h:x", "{}", 17, FROM, &len);
    got = rd_own_take(r, "h:x", 3, t, len);
    CHECK(got && got != h && got->offset == 17 && got->len == len &&
          !memcmp(chan_msg_payload(got), t, len) && !strcmp(got->channel, "h:x") &&
          got->hash == chan_hash("h:x", 3));
    chan_msg_unref(got);
    free(t);
    /* full */
    int pushed = 0;
    while (rd_own_push(r, b, 0) == 0)
        pushed++;
    CHECK(pushed == RD_OWN_RING && rd_own_push(r, b, 0) == -ENOSPC);
    /* expiry: everything older than RD_OWN_STALE_US goes, nothing younger */
    rd_own_expire(r, b->born_us + RD_OWN_STALE_US);
    CHECK(atomic_load(&r->tail) - atomic_load(&r->head) == RD_OWN_RING);
    rd_own_expire(r, b->born_us + RD_OWN_STALE_US + 1);
    CHECK(atomic_load(&r->tail) == atomic_load(&r->head));
    CHECK(atomic_load(&b->refs) == 1); /* the ring let go of every reference */
    CHECK(rd_own_push(r, c, 0) == 0);
    rd_own_clear(r);
    CHECK(atomic_load(&c->refs) == 1);
    chan_msg_unref(a);
    chan_msg_unref(b);
    chan_msg_unref(c);
    chan_msg_unref(h);
    free(r);
}

int main(void)
{
    RUN(test_match_plain);
    RUN(test_match_history);
    RUN(test_ring);
    return TEST_DONE();
}
