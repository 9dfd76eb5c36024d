/* Unit tests for the protocol parser, reply builders, channel names and
 * the pre-framed message format. */
#include "channels/channels.h"
#include "gateway/proto.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>

static int parse(const char *s, hr_cmd *c, hr_proto_error *e)
{
    return hr_proto_parse(s, strlen(s), 255, c, e);
}

/* Parses s expecting failure with code; returns the id that was read. */
static int64_t parse_fails(const char *s, const char *code)
{
    hr_cmd c;
    hr_proto_error e = {0};
    int rc = parse(s, &c, &e);
    CHECK(rc == -1);
    if (rc == -1)
        CHECK_STR(e.code, code);
    int64_t id = c.id;
    hr_cmd_clear(&c);
    return id;
}

static void test_valid_commands(void)
{
    hr_cmd c;
    hr_proto_error e;
    CHECK(parse("{\"id\":7,\"op\":\"subscribe\",\"channel\":\"chat:room-1\"}", &c, &e) == 0);
    CHECK(c.id == 7 && c.op == HR_OP_SUBSCRIBE);
    CHECK_STR(c.channel, "chat:room-1");
    hr_cmd_clear(&c);

    CHECK(parse("{\"id\":1,\"op\":\"publish\",\"channel\":\"a\",\"data\":[1,{\"x\":null}]}", &c,
                &e) == 0);
    CHECK(c.op == HR_OP_PUBLISH && json_is_array(c.data));
    hr_cmd_clear(&c);

    CHECK(parse("{\"id\":2,\"op\":\"publish\",\"channel\":\"a\",\"data\":null}", &c, &e) == 0);
    CHECK(json_is_null(c.data));
    hr_cmd_clear(&c);

    CHECK(parse("{\"id\":3,\"op\":\"connect\"}", &c, &e) == 0);
    CHECK(c.op == HR_OP_CONNECT && c.token == NULL);
    hr_cmd_clear(&c);

    CHECK(parse("{\"id\":4,\"op\":\"connect\",\"token\":\"abc\"}", &c, &e) == 0);
    CHECK_STR(c.token, "abc");
    hr_cmd_clear(&c);

    /* the connect proxy's data; rpc (SPEC §8) */
    CHECK(parse("{\"id\":4,\"op\":\"connect\",\"data\":{\"room\":\"l\"}}", &c, &e) == 0);
    CHECK(c.op == HR_OP_CONNECT && json_is_object(c.data) && c.token == NULL);
    hr_cmd_clear(&c);
    CHECK(parse("{\"id\":8,\"op\":\"rpc\",\"method\":\"orders.list\",\"data\":[1]}", &c, &e) == 0);
    CHECK(c.op == HR_OP_RPC && json_is_array(c.data));
    CHECK_STR(c.method, "orders.list");
    hr_cmd_clear(&c);
    CHECK(parse("{\"id\":9,\"op\":\"rpc\",\"method\":\"m\"}", &c, &e) == 0);
    CHECK(c.op == HR_OP_RPC && c.data == NULL); /* null for the backend */
    hr_cmd_clear(&c);
    CHECK(parse_fails("{\"id\":9,\"op\":\"rpc\"}", HR_ERR_BAD_REQUEST) == 9);
    CHECK(parse_fails("{\"id\":9,\"op\":\"rpc\",\"method\":\"\"}", HR_ERR_BAD_REQUEST) == 9);
    CHECK(parse_fails("{\"id\":9,\"op\":\"rpc\",\"method\":7}", HR_ERR_BAD_REQUEST) == 9);

    CHECK(parse("{\"id\":5,\"op\":\"history\",\"channel\":\"a\",\"limit\":10,"
                "\"since\":{\"offset\":3,\"epoch\":\"e1\"}}",
                &c, &e) == 0);
    CHECK(c.limit == 10 && c.has_since && c.since_offset == 3);
    CHECK_STR(c.since_epoch, "e1");
    hr_cmd_clear(&c);

    CHECK(parse("{\"id\":6,\"op\":\"ping\",\"extra\":true}", &c, &e) == 0);
    CHECK(c.op == HR_OP_PING);
    hr_cmd_clear(&c);
}

static void test_malformed(void)
{
    parse_fails("", HR_ERR_BAD_REQUEST);
    parse_fails("not json", HR_ERR_BAD_REQUEST);
    parse_fails("[1,2]", HR_ERR_BAD_REQUEST);
    parse_fails("\"str\"", HR_ERR_BAD_REQUEST);
    parse_fails("{\"op\":\"ping\"}", HR_ERR_BAD_REQUEST);
    parse_fails("{\"id\":0,\"op\":\"ping\"}", HR_ERR_BAD_REQUEST);
    parse_fails("{\"id\":-1,\"op\":\"ping\"}", HR_ERR_BAD_REQUEST);
    parse_fails("{\"id\":\"1\",\"op\":\"ping\"}", HR_ERR_BAD_REQUEST);
    parse_fails("{\"id\":1.5,\"op\":\"ping\"}", HR_ERR_BAD_REQUEST);
    /* the id is kept for the error reply when the rest is wrong */
    CHECK(parse_fails("{\"id\":9,\"op\":\"fly\"}", HR_ERR_BAD_REQUEST) == 9);
    CHECK(parse_fails("{\"id\":9,\"op\":5}", HR_ERR_BAD_REQUEST) == 9);
    CHECK(parse_fails("{\"id\":10,\"op\":\"subscribe\"}", HR_ERR_BAD_REQUEST) == 10);
    CHECK(parse_fails("{\"id\":11,\"op\":\"subscribe\",\"channel\":3}", HR_ERR_BAD_REQUEST) == 11);
    CHECK(parse_fails("{\"id\":12,\"op\":\"publish\",\"channel\":\"a\"}", HR_ERR_BAD_REQUEST) ==
          12);
    CHECK(parse_fails("{\"id\":13,\"op\":\"refresh\"}", HR_ERR_BAD_REQUEST) == 13);
    CHECK(parse_fails("{\"id\":14,\"op\":\"history\",\"channel\":\"a\",\"limit\":-2}",
                      HR_ERR_BAD_REQUEST) == 14);
    CHECK(parse_fails("{\"id\":15,\"op\":\"subscribe\",\"channel\":\"a\",\"since\":5}",
                      HR_ERR_BAD_REQUEST) == 15);
    parse_fails("{\"id\":1,\"id\":2,\"op\":\"ping\"}", HR_ERR_BAD_REQUEST); /* duplicate */
    parse_fails("{\"id\":1,\"op\":\"ping\"", HR_ERR_BAD_REQUEST);           /* truncated */
    parse_fails("{\"id\":1,\"op\":\"p\xffng\"}", HR_ERR_BAD_REQUEST);       /* bad UTF-8 */

    /* deep nesting is refused by the parser's depth limit, not the stack */
    size_t n = 100000;
    char *deep = malloc(n + 1);
    memset(deep, '[', n);
    deep[n] = '\0';
    parse_fails(deep, HR_ERR_BAD_REQUEST);
    free(deep);
}

/* Found by fuzz/fuzz_proto.c: an unknown op of more than 60 bytes was cut
 * inside a multi-byte character, the message was no longer UTF-8, jansson
 * refused to build the error reply, and the command got no reply at all. */
static void test_error_messages_are_utf8(void)
{
    static const char *inputs[] = {
        "{\"id\":3,\"op\":\"x\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
        "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
        "\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}",
        "{\"id\":4,\"op\":\"ping\",\"x\":\xc3\xa9\xc3}", /* jansson quotes the bytes */
        "\xe2\x82",
    };
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        hr_cmd c;
        hr_proto_error e = {0};
        size_t len = 0;
        CHECK(parse(inputs[i], &c, &e) == -1);
        char *reply = hr_proto_error_reply(c.id, e.code, e.message, &len);
        CHECK(reply != NULL && len > 0);
        json_t *back = reply ? json_loads(reply, 0, NULL) : NULL;
        CHECK(json_object_get(back, "error") != NULL);
        json_decref(back);
        free(reply);
        hr_cmd_clear(&c);
    }
}

static void test_channel_names(void)
{
    CHECK(chan_name_valid("a", 1, 255));
    CHECK(chan_name_valid("chat:room_1.x@y=z,w-v", 21, 255));
    CHECK(!chan_name_valid("", 0, 255));
    CHECK(!chan_name_valid("a b", 3, 255));
    CHECK(!chan_name_valid("a/b", 3, 255));
    CHECK(!chan_name_valid("a\"b", 3, 255));
    CHECK(!chan_name_valid("a\0b", 3, 255));
    CHECK(!chan_name_valid("caf\xc3\xa9", 5, 255));
    char big[257];
    memset(big, 'x', sizeof(big));
    CHECK(chan_name_valid(big, 255, 255));
    CHECK(!chan_name_valid(big, 256, 255));
    hr_cmd c;
    hr_proto_error e;
    char cmd[400];
    big[256] = '\0';
    snprintf(cmd, sizeof(cmd), "{\"id\":1,\"op\":\"subscribe\",\"channel\":\"%s\"}", big);
    CHECK(parse(cmd, &c, &e) == -1);
    hr_cmd_clear(&c);
}

/* Decodes the frame header and checks it describes exactly the payload. */
static void check_frame(chan_msg *m, const char *payload)
{
    size_t flen, plen = strlen(payload);
    const unsigned char *f = chan_msg_frame(m, &flen);
    CHECK(f[0] == 0x81);
    size_t hdr = 2, len = f[1] & 0x7f;
    CHECK((f[1] & 0x80) == 0); /* server frames are never masked */
    if (len == 126) {
        len = (size_t)f[2] << 8 | f[3];
        hdr = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | f[2 + i];
        hdr = 10;
    }
    CHECK(len == plen && flen == hdr + plen);
    CHECK(memcmp(f + hdr, payload, plen) == 0);
    CHECK(memcmp(chan_msg_payload(m), payload, plen) == 0);
}

static void test_frames(void)
{
    size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *p = malloc(sizes[i] + 1);
        memset(p, 'a' + (int)(i % 26), sizes[i]);
        p[sizes[i]] = '\0';
        chan_msg *m = chan_msg_new(p, sizes[i]);
        check_frame(m, p);
        CHECK(chan_msg_ref(m) == m);
        chan_msg_unref(m);
        chan_msg_unref(m);
        free(p);
    }
    chan_msg *m = chan_msg_publication("news", "{\"a\":1}", 7, 0, NULL);
    check_frame(m, "{\"push\":\"message\",\"channel\":\"news\",\"data\":{\"a\":1}}");
    chan_msg_unref(m);
    m = chan_msg_publication("chat:x", "\"hi\"", 4, 42, NULL);
    check_frame(m, "{\"push\":\"message\",\"channel\":\"chat:x\",\"data\":\"hi\",\"offset\":42}");
    chan_msg_unref(m);
}

static void test_replies(void)
{
    size_t len;
    char *s = hr_proto_result(3, NULL, &len);
    CHECK_STR(s, "{\"id\":3,\"result\":{}}");
    CHECK(len == strlen(s));
    free(s);
    s = hr_proto_error_reply(4, HR_ERR_FORBIDDEN, "no", &len);
    json_t *o = json_loads(s, 0, NULL);
    CHECK(json_integer_value(json_object_get(o, "id")) == 4);
    CHECK_STR(json_string_value(json_object_get(json_object_get(o, "error"), "code")), "forbidden");
    json_decref(o);
    free(s);
    s = hr_proto_error_reply(0, HR_ERR_BAD_REQUEST, "x", &len);
    CHECK(strstr(s, "\"id\"") == NULL);
    free(s);
    s = hr_proto_connected("n.1", "bob", 0, &len);
    CHECK(strstr(s, "\"expires_at\":null") != NULL);
    CHECK(strstr(s, "\"push\":\"connected\"") != NULL);
    free(s);
}

int main(void)
{
    RUN(test_valid_commands);
    RUN(test_malformed);
    RUN(test_error_messages_are_utf8);
    RUN(test_channel_names);
    RUN(test_frames);
    RUN(test_replies);
    return TEST_DONE();
}
