/* Unit tests for Redis Cluster routing (channels/redis_slots.c): key
 * slots, hash-tagged names, slot maps from CLUSTER SLOTS / CLUSTER SHARDS
 * replies, MOVED/ASK parsing. The expected slots were read from a real
 * redis-server 7.0 cluster node (CLUSTER KEYSLOT), and the replies are the
 * shapes such a node sent (tests/integration/redis_topology.py). */
#include "channels/redis_topo.h"
#include "testing.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* JSON -> RESP2 text (arrays, strings, integers, null as a nil bulk):
 * readable replies for the tests, parsed by hiredis' redisReader as a
 * connection's bytes would be. */
static void resp_of(hr_buf *b, json_t *j)
{
    if (json_is_array(j)) {
        hr_buf_printf(b, "*%zu\r\n", json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            resp_of(b, json_array_get(j, i));
    } else if (json_is_integer(j)) {
        hr_buf_printf(b, ":%lld\r\n", (long long)json_integer_value(j));
    } else if (json_is_string(j)) {
        hr_buf_printf(b, "$%zu\r\n%s\r\n", json_string_length(j), json_string_value(j));
    } else {
        hr_buf_printf(b, "$-1\r\n");
    }
}

static redisReply *reply_of(const char *json)
{
    json_error_t e;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &e);
    if (!j) {
        fprintf(stderr, "bad test JSON: %s\n", e.text);
        abort();
    }
    hr_buf b = {0};
    resp_of(&b, j);
    json_decref(j);
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    redisReaderFeed(rd, b.data, b.len);
    if (redisReaderGetReply(rd, &r) != REDIS_OK || !r)
        abort();
    redisReaderFree(rd);
    hr_buf_reset(&b);
    return r;
}

static void test_crc16_and_slots(void)
{
    CHECK(chan_crc16("123456789", 9) == 0x31C3); /* the XMODEM check value */
    static const struct {
        const char *key;
        int slot;
    } known[] = {
        {"foo", 12182},
        {"bar", 5061},
        {"hello", 866},
        {"123456789", 12739},
        {"somekey", 11058},
        {"", 0},
        {"{}", 15257},
        {"a{}b", 13694},
        {"{a", 10276},
        {"a}b{c}", 7365}, /* tag "c" */
        {"{user1000}.following", 3443},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        int s = chan_key_slot(known[i].key, strlen(known[i].key));
        if (s != known[i].slot)
            fprintf(stderr, "  slot of \"%s\": %d, Redis says %d\n", known[i].key, s,
                    known[i].slot);
        CHECK(s == known[i].slot);
    }
    /* the tag alone decides */
    CHECK(chan_key_slot("{user1000}.followers", 20) == 3443);
    CHECK(chan_key_slot("x{c}y{d}", 8) == chan_key_slot("c", 1));
}

static void test_tagged_names(void)
{
    static const char *const kinds[] = {"ch", "history", "history-meta", "presence",
                                        "presence-exp"};
    char *k = chan_tagged_key("herald", "history", "chat:room");
    CHECK_STR(k, "herald:history:{chat:room}");
    free(k);
    /* every key and topic of a channel lands in one slot: the one a
     * Function call declaring any of them is routed to */
    const char *chans[] = {"news", "chat:room", "user:42", "a", "x.y@z=1,2-3_"};
    for (size_t c = 0; c < sizeof(chans) / sizeof(chans[0]); c++) {
        int slot = chan_channel_slot(chans[c]);
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
            char *key = chan_tagged_key("herald", kinds[i], chans[c]);
            CHECK(chan_key_slot(key, strlen(key)) == slot);
            free(key);
        }
    }
    CHECK(chan_channel_slot("foo") == 12182);
    CHECK(chan_tag_prefix_valid("herald") && chan_tag_prefix_valid("my-app.v2"));
    CHECK(!chan_tag_prefix_valid("my{app}") && !chan_tag_prefix_valid("a}"));
}

/* What a 3 + 3 cluster of redis-server 7.0.15 answered. */
static const char SLOTS[] =
    "[[0, 5460, [\"127.0.0.1\", 52147, \"7c49\", []], [\"127.0.0.1\", 43523, \"e8ff\", []]],"
    " [5461, 10922, [\"127.0.0.1\", 37623, \"b413\", []], [\"127.0.0.1\", 44507, \"8fc7\", []]],"
    " [10923, 16383, [\"127.0.0.1\", 40863, \"e6c3\", []], [\"127.0.0.1\", 36379, \"7619\", []]]]";
static const char SHARDS[] =
    "[[\"slots\", [0, 5460], \"nodes\", ["
    "  [\"id\", \"7c49\", \"port\", 52147, \"ip\", \"127.0.0.1\", \"endpoint\", \"127.0.0.1\","
    "   \"role\", \"master\", \"replication-offset\", 14, \"health\", \"online\"],"
    "  [\"id\", \"e8ff\", \"port\", 43523, \"ip\", \"127.0.0.1\", \"endpoint\", \"127.0.0.1\","
    "   \"role\", \"replica\", \"replication-offset\", 14, \"health\", \"online\"]]],"
    " [\"slots\", [5461, 10922], \"nodes\", ["
    "  [\"id\", \"8fc7\", \"port\", 44507, \"ip\", \"127.0.0.1\", \"endpoint\", \"127.0.0.1\","
    "   \"role\", \"replica\", \"replication-offset\", 14, \"health\", \"online\"],"
    "  [\"id\", \"b413\", \"port\", 37623, \"ip\", \"127.0.0.1\", \"endpoint\", \"127.0.0.1\","
    "   \"role\", \"master\", \"replication-offset\", 14, \"health\", \"online\"]]],"
    " [\"slots\", [10923, 16383], \"nodes\", ["
    "  [\"id\", \"e6c3\", \"port\", 40863, \"ip\", \"127.0.0.1\", \"endpoint\", \"127.0.0.1\","
    "   \"role\", \"master\", \"replication-offset\", 14, \"health\", \"online\"],"
    "  [\"id\", \"7619\", \"port\", 36379, \"ip\", \"127.0.0.1\", \"endpoint\", \"127.0.0.1\","
    "   \"role\", \"replica\", \"replication-offset\", 14, \"health\", \"online\"]]]]";

static void test_slotmap_from_slots(void)
{
    char err[160];
    redisReply *r = reply_of(SLOTS);
    chan_slotmap *m = chan_slotmap_from_slots(r, "10.0.0.9", err, sizeof(err));
    freeReplyObject(r);
    CHECK(m != NULL);
    if (!m)
        return;
    CHECK(m->nnodes == 6 && m->nmasters == 3 && chan_slotmap_uncovered(m) == 0);
    const chan_slot_node *n = chan_slotmap_master(m, 12182);
    CHECK(n && n->port == 40863 && !strcmp(n->host, "127.0.0.1") && !strcmp(n->id, "e6c3"));
    CHECK(chan_slotmap_master(m, 0)->port == 52147 && chan_slotmap_master(m, 5460)->port == 52147);
    CHECK(chan_slotmap_master(m, 5461)->port == 37623);
    CHECK(!chan_slotmap_master(m, -1) && !chan_slotmap_master(m, CHAN_SLOTS));
    int rep = chan_slotmap_find(m, "127.0.0.1", 36379);
    CHECK(rep >= 0 && m->nodes[rep].master == chan_slotmap_find(m, "127.0.0.1", 40863));

    /* the same cluster through CLUSTER SHARDS (master listed second too) */
    r = reply_of(SHARDS);
    chan_slotmap *s = chan_slotmap_from_shards(r, "10.0.0.9", err, sizeof(err));
    freeReplyObject(r);
    CHECK(s && s->nnodes == 6 && s->nmasters == 3 && chan_slotmap_same(m, s));
    rep = s ? chan_slotmap_find(s, "127.0.0.1", 44507) : -1;
    CHECK(rep >= 0 && s->nodes[rep].master == chan_slotmap_find(s, "127.0.0.1", 37623));

    /* what a MOVED says holds until the next read; the maps now differ */
    CHECK(chan_slotmap_move(m, 12182, "127.0.0.1", 36379) == 0);
    CHECK(chan_slotmap_master(m, 12182)->port == 36379 && m->nmasters == 4);
    CHECK(!chan_slotmap_same(m, s));
    CHECK(chan_slotmap_move(m, 1, "10.1.1.1", 7000) == 0 && m->nnodes == 7);
    CHECK(chan_slotmap_move(m, 1, "", 7000) < 0 && chan_slotmap_move(m, CHAN_SLOTS, "h", 1) < 0);
    chan_slotmap_free(m);
    chan_slotmap_free(s);
}

static void test_slotmap_endpoints(void)
{
    char err[160];
    /* NULL and "" endpoints: the host the reply came from; "?": unknown,
     * so its slots have no reachable master; slots nobody claims: none */
    redisReply *r = reply_of("[[0, 99, [null, 7000, \"a\"]], [100, 199, [\"\", 7001]],"
                             " [200, 299, [\"?\", 7002, \"c\"]], [300, 300, [\"h\", \"7003\"],"
                             " [\"?\", 7004], [\"r\", 7005, \"x\", [\"hostname\", \"n\"]]]]");
    chan_slotmap *m = chan_slotmap_from_slots(r, "10.0.0.9", err, sizeof(err));
    freeReplyObject(r);
    CHECK(m != NULL);
    if (!m)
        return;
    CHECK(!strcmp(chan_slotmap_master(m, 0)->host, "10.0.0.9"));
    CHECK(!strcmp(chan_slotmap_master(m, 150)->host, "10.0.0.9") &&
          chan_slotmap_master(m, 150)->port == 7001);
    CHECK(!chan_slotmap_master(m, 250) && chan_slotmap_master(m, 300)->port == 7003);
    CHECK(chan_slotmap_uncovered(m) == CHAN_SLOTS - 201);
    CHECK(m->nnodes == 4 && chan_slotmap_find(m, "r", 7005) >= 0);
    chan_slotmap_free(m);
}

static void test_slotmap_refusals(void)
{
    static const char *const bad_slots[] = {
        "\"OK\"",
        "[[0, 10]]",
        "[[0, 10, [\"h\"]]]",
        "[[0, 10, [\"h\", 0]]]",
        "[[0, 10, [\"h\", 70000]]]",
        "[[10, 0, [\"h\", 1]]]",
        "[[0, 16384, [\"h\", 1]]]",
        "[[-1, 3, [\"h\", 1]]]",
        "[[\"x\", 3, [\"h\", 1]]]",
        "[[0, 10, [\"a\", 1]], [5, 20, [\"b\", 1]]]",              /* two masters of slot 5 */
        "[[0, 10, [\"a\", 1], [\"b\", 2]], [11, 20, [\"b\", 2]]]", /* replica and master */
    };
    char err[160];
    for (size_t i = 0; i < sizeof(bad_slots) / sizeof(bad_slots[0]); i++) {
        redisReply *r = reply_of(bad_slots[i]);
        err[0] = '\0';
        chan_slotmap *m = chan_slotmap_from_slots(r, "h", err, sizeof(err));
        if (m)
            fprintf(stderr, "  accepted: %s\n", bad_slots[i]);
        CHECK(!m && !strncmp(err, "CLUSTER SLOTS", 13));
        chan_slotmap_free(m);
        freeReplyObject(r);
    }
    static const char *const bad_shards[] = {
        "[[\"slots\", [0, 1]]]",
        "[[\"slots\", [0], \"nodes\", []]]",
        "[[\"slots\", [0, 16384], \"nodes\", [[\"port\", 1, \"ip\", \"h\", \"role\", "
        "\"master\"]]]]",
        "[[\"slots\", [0, 1], \"nodes\", [[\"port\", 1, \"ip\", \"h\", \"role\", \"master\"],"
        " [\"port\", 2, \"ip\", \"h\", \"role\", \"master\"]]]]",
    };
    for (size_t i = 0; i < sizeof(bad_shards) / sizeof(bad_shards[0]); i++) {
        redisReply *r = reply_of(bad_shards[i]);
        err[0] = '\0';
        chan_slotmap *m = chan_slotmap_from_shards(r, "h", err, sizeof(err));
        if (m)
            fprintf(stderr, "  accepted: %s\n", bad_shards[i]);
        CHECK(!m && !strncmp(err, "CLUSTER SHARDS", 14));
        chan_slotmap_free(m);
        freeReplyObject(r);
    }
}

static void test_redirects(void)
{
    chan_redirect d;
    const char *e = "MOVED 12182 127.0.0.1:38711";
    CHECK(chan_redirect_parse(e, strlen(e), &d) == 1);
    CHECK(!d.ask && d.slot == 12182 && !strcmp(d.host, "127.0.0.1") && d.port == 38711);
    e = "ASK 1463 127.0.0.1:38301";
    CHECK(chan_redirect_parse(e, strlen(e), &d) == 1 && d.ask && d.slot == 1463);
    e = "MOVED 7 :6380"; /* the same host as the connection */
    CHECK(chan_redirect_parse(e, strlen(e), &d) == 1 && d.host[0] == '\0' && d.port == 6380);
    e = "MOVED 7 ::1:6380";
    CHECK(chan_redirect_parse(e, strlen(e), &d) == 1 && !strcmp(d.host, "::1") && d.port == 6380);
    e = "ASK 0 [fe80::1]:7000";
    CHECK(chan_redirect_parse(e, strlen(e), &d) == 1 && !strcmp(d.host, "fe80::1"));
    static const char *const bad[] = {
        "MOVED",       "MOVED 1",         "MOVED 16384 h:1", "MOVED 1 h",  "MOVED 1 h:0",
        "MOVED x h:1", "MOVED 1 h:70000", "MOVED 1 h:1 x",   "ERR MOVED",  "READONLY no",
        "ASK  1 h:1",  "MOVED 1 h:",      "MOVED 1 a b:1",   "moved 1 h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(chan_redirect_parse(bad[i], strlen(bad[i]), &d) == 0);
    /* the length is respected: no NUL needed */
    CHECK(chan_redirect_parse("MOVED 1 h:12345", 13, &d) == 1 && d.port == 123);
}

int main(void)
{
    RUN(test_crc16_and_slots);
    RUN(test_tagged_names);
    RUN(test_slotmap_from_slots);
    RUN(test_slotmap_endpoints);
    RUN(test_slotmap_refusals);
    RUN(test_redirects);
    return TEST_DONE();
}
