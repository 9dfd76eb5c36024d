/* Unit tests for the pure half of the Django Channels bridge
 * (channels/django_codec.c): channel <-> group names, msgpack -> JSON with
 * every conversion rule docs/integrations/django.md documents (vectors
 * written by msgpack-python 1.0.3, what channels_redis uses), refusals, the allocation
 * guard in front of msgpack-c, JSON -> msgpack, and a deterministic
 * mutation run over the decoder (a fuzzer's job in miniature, under ASan
 * in ./setup.sh test). */
#include "channels/django.h"
#include "testing.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX (1u << 20)

static size_t unhex(const char *hex, unsigned char *out)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (unsigned char)v;
    }
    return n;
}

/* Decodes hex; returns the JSON (static buffer) or NULL, routes in *m. */
static const char *dec(const char *hex, dj_message *m, char *err, size_t errlen)
{
    static unsigned char buf[4096];
    static char json[4096];
    size_t n = unhex(hex, buf);
    if (dj_decode(buf, n, MAX, m, err, errlen) < 0)
        return NULL;
    snprintf(json, sizeof(json), "%s", m->json);
    return json;
}

static const char *dec1(const char *hex)
{
    dj_message m;
    char err[128];
    const char *j = dec(hex, &m, err, sizeof(err));
    if (!j)
        fprintf(stderr, "  decode failed: %s\n", err);
    dj_message_clear(&m);
    return j;
}

static void test_names(void)
{
    char g[DJ_NAME_MAX], c[300];
    CHECK(dj_group_of_channel("news", g) == 0);
    CHECK_STR(g, "news");
    CHECK(dj_group_of_channel("chat:lobby", g) == 0);
    CHECK_STR(g, "chat..lobby");
    CHECK(dj_group_of_channel("a::b", g) == 0);
    CHECK_STR(g, "a....b");
    CHECK(dj_group_of_channel(":x", g) == 0);
    CHECK_STR(g, "..x");
    CHECK(dj_group_of_channel("user:42", g) == 0);
    CHECK_STR(g, "user..42");
    CHECK(dj_group_of_channel("a.b-c_d", g) == 0);
    CHECK_STR(g, "a.b-c_d");
    /* no group: characters Django refuses, ambiguous dots, too long */
    const char *none[] = {"a@b", "a=b", "a,b", "a..b", "a.:b", "a:.b", ""};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        CHECK(dj_group_of_channel(none[i], g) < 0);
    char longname[120];
    memset(longname, 'x', 99);
    longname[99] = '\0';
    CHECK(dj_group_of_channel(longname, g) == 0);
    longname[99] = 'x';
    longname[100] = '\0';
    CHECK(dj_group_of_channel(longname, g) < 0);
    memset(longname, 'x', 98);
    longname[97] = ':';
    longname[98] = '\0'; /* 97 + 2 = 99 bytes */
    CHECK(dj_group_of_channel(longname, g) == 0);
    memset(longname, 'x', 99);
    longname[98] = ':';
    longname[99] = '\0'; /* 98 + 2 = 100 bytes: too long */
    CHECK(dj_group_of_channel(longname, g) < 0);

    /* the reverse */
    CHECK(dj_channel_of_group("chat..lobby", c, sizeof(c)) == 0);
    CHECK_STR(c, "chat:lobby");
    CHECK(dj_channel_of_group("a....b", c, sizeof(c)) == 0);
    CHECK_STR(c, "a::b");
    CHECK(dj_channel_of_group("a.b", c, sizeof(c)) == 0);
    CHECK_STR(c, "a.b");
    CHECK(dj_channel_of_group("x.", c, sizeof(c)) == 0);
    CHECK_STR(c, "x.");
    CHECK(dj_channel_of_group("a...b", c, sizeof(c)) < 0);
    CHECK(dj_channel_of_group("a:b", c, sizeof(c)) < 0);
    CHECK(dj_channel_of_group("", c, sizeof(c)) < 0);
    CHECK(dj_channel_of_group("abc", c, 3) < 0);

    /* one-to-one: every group a channel maps to maps back to it */
    const char *alphabet = "a.:_-";
    char ch[8];
    int checked = 0;
    for (unsigned code = 0; code < 5 * 5 * 5 * 5 * 5; code++) {
        unsigned v = code;
        for (int i = 0; i < 5; i++, v /= 5)
            ch[i] = alphabet[v % 5];
        ch[5] = '\0';
        if (dj_group_of_channel(ch, g) < 0)
            continue;
        checked++;
        if (dj_channel_of_group(g, c, sizeof(c)) < 0 || strcmp(c, ch)) {
            CHECK(!"round trip");
            fprintf(stderr, "  %s -> %s -> %s\n", ch, g, c);
        }
    }
    CHECK(checked > 100);
    CHECK(dj_channel_name_valid("worker.events"));
    CHECK(dj_channel_name_valid("a-b_c"));
    CHECK(!dj_channel_name_valid("specific.x!y"));
    CHECK(!dj_channel_name_valid("a:b"));
    CHECK(!dj_channel_name_valid(""));
}

static void test_decode_types(void)
{
    CHECK_STR(dec1("82a474797065a96e6577732e6974656da57469746c65a26869"),
              "{\"type\":\"news.item\",\"title\":\"hi\"}");
    CHECK_STR(
        dec1("8aa474797065a178a16efba3626967cfffffffffffffffffa36e6567d38000000000000000a166"
             "cb3ff8000000000000a167cb4000000000000000a174c3a17ac0a16c9301a16190a16d81a16b80"),
        "{\"type\":\"x\",\"n\":-5,\"big\":18446744073709551615,\"neg\":-9223372036854775808,"
        "\"f\":1.5,\"g\":2.0,\"t\":true,\"z\":null,\"l\":[1,\"a\",[]],\"m\":{\"k\":{}}}");
    /* bin is base64; str escapes; UTF-8 passes through */
    CHECK_STR(dec1("82a162c40300ff10a175b368c3a9e282acf09f988020227122205c200a01"),
              "{\"b\":\"AP8Q\",\"u\":\"h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \\\"q\\\" \\\\ "
              "\\n\\u0001\"}");
    /* non-string keys: their JSON text */
    CHECK_STR(dec1("8401a174c0a36e696cfea16dcb3fe0000000000000a166"),
              "{\"1\":\"t\",\"null\":\"nil\",\"-2\":\"m\",\"0.5\":\"f\"}");
    /* shortest floats; NaN and infinities become null */
    CHECK_STR(dec1("84a166cb3fb999999999999aa165cb4341c37937e08000a173cb7ff8000000000000a169cb7ff0"
                   "000000000000"),
              "{\"f\":0.1,\"e\":1e+16,\"s\":null,\"i\":null}");
    /* float32 at its own precision */
    CHECK_STR(dec1("81a3663332ca3dcccccd"), "{\"f32\":0.1}");
    /* bin lengths 1 and 2 (padding) */
    CHECK_STR(dec1("82a161c40161a162c4026162"), "{\"a\":\"YQ==\",\"b\":\"YWI=\"}");
    /* an empty map */
    CHECK_STR(dec1("80"), "{}");
}

static void test_routes(void)
{
    dj_message m;
    char err[128];
    const char *j = dec("82a474797065a167b05f5f617367695f6368616e6e656c5f5f92b1686572616c642e6e302e"
                        "6162216e657773ae686572616c642e6e302e61622178",
                        &m, err, sizeof(err));
    CHECK_STR(j, "{\"type\":\"g\"}");
    CHECK(m.nroutes == 2);
    if (m.nroutes == 2) {
        CHECK_STR(m.routes[0], "herald.n0.ab!news");
        CHECK_STR(m.routes[1], "herald.n0.ab!x");
    }
    dj_message_clear(&m);
    j = dec("82b05f5f617367695f6368616e6e656c5f5fac73706563696669632e782179a474797065a173", &m, err,
            sizeof(err));
    CHECK_STR(j, "{\"type\":\"s\"}"); /* no stray comma where the key was */
    CHECK(m.nroutes == 1 && !strcmp(m.routes[0], "specific.x!y"));
    dj_message_clear(&m);
    /* __asgi_channel__ that is not names */
    CHECK(!dec("81b05f5f617367695f6368616e6e656c5f5f01", &m, err, sizeof(err)));
    CHECK(m.json == NULL && m.routes == NULL);
}

static void refused(const char *hex, const char *why)
{
    dj_message m;
    char err[128] = "";
    const char *j = dec(hex, &m, err, sizeof(err));
    CHECK(j == NULL);
    if (j || !strstr(err, why))
        fprintf(stderr, "  %s: got \"%s\", want \"%s\"\n", hex, j ? j : err, why);
    CHECK(m.json == NULL && m.nroutes == 0);
}

static void test_refusals(void)
{
    refused("", "truncated");
    refused("a474797065", "not a map");   /* a str */
    refused("82a17401", "more elements"); /* two pairs, one given */
    refused("81a174a3ab", "truncated");
    refused("81a17401ff", "extra bytes");   /* trailing byte */
    refused("81a174c1", "0xc1");            /* never-used byte */
    refused("81a174a2ff41", "UTF-8");       /* invalid UTF-8 */
    refused("81a174a3eda080", "UTF-8");     /* a surrogate */
    refused("81a174a2c0af", "UTF-8");       /* overlong */
    refused("81c40161a0", "binary");        /* bin key */
    refused("819101a0", "array");           /* array key */
    refused("81a20061a0", "NUL");           /* NUL in a key */
    refused("81a174d40100", "extension");   /* fixext */
    refused("81a174c7020501", "truncated"); /* ext8 missing a byte */
    refused("ddffffffff", "more elements"); /* 2^32-1 elements, no bytes */
    refused("dfffffffff", "more elements");
    refused("81a174dd00ffffff00", "more elements");
    refused("81a174db7fffffff", "truncated"); /* str32 claiming 2 GiB */
    /* duplicate keys, as given or once converted: refused like Herald
     * refuses them in JSON everywhere */
    refused("82a16101a16102", "twice");         /* {"a":1,"a":2} */
    refused("8201a178a131a179", "twice");       /* {1:"x","1":"y"} */
    refused("82c0a178a46e756c6ca179", "twice"); /* {nil:"x","null":"y"} */
    refused("81a16d82a16b01a16b02", "twice");   /* {"m":{"k":1,"k":2}} */
    CHECK_STR(dec1("82a16101a14102"), "{\"a\":1,\"A\":2}");
    /* deeper than msgpack-c's 32 levels */
    char deep[200] = "81a174";
    for (int i = 0; i < 40; i++)
        strcat(deep, "91");
    strcat(deep, "c0");
    refused(deep, "deeper");
    /* 31 levels inside the map are fine */
    char ok[200] = "81a174";
    for (int i = 0; i < 30; i++)
        strcat(ok, "91");
    strcat(ok, "c0");
    CHECK(dec1(ok) != NULL);
    /* size limit on the JSON */
    unsigned char buf[64];
    size_t n = unhex("81a162c40a00000000000000000000", buf); /* 10 bytes of bin */
    dj_message m;
    char err[128];
    CHECK(dj_decode(buf, n, 16, &m, err, sizeof(err)) < 0 && strstr(err, "larger"));
    CHECK(dj_decode(buf, n, 64, &m, err, sizeof(err)) == 0);
    dj_message_clear(&m);
    CHECK(dj_looks_encrypted("gAAAAABk", 8));
    CHECK(!dj_looks_encrypted("\x82\xa4type", 6));
}

static void test_encode(void)
{
    hr_buf b = {0};
    const char *data = "{\"text\":\"h\\u00e9\",\"n\":[1,-2,2.5,true,false,null],\"o\":{}}";
    CHECK(dj_encode_publication(&b, "chat:lobby", "alice", "n0.7", data, strlen(data)) == 0);
    dj_message m;
    char err[128];
    CHECK(dj_decode(b.data, b.len, MAX, &m, err, sizeof(err)) == 0);
    CHECK_STR(m.json, "{\"type\":\"herald.publication\",\"channel\":\"chat:lobby\",\"user\":"
                      "\"alice\",\"client\":\"n0.7\",\"data\":{\"text\":\"h\xc3\xa9\",\"n\":[1,-2,"
                      "2.5,true,false,null],\"o\":{}}}");
    dj_message_clear(&m);
    hr_buf_reset(&b);
    /* scalars as data; an anonymous user is "" */
    CHECK(dj_encode_publication(&b, "c", NULL, "n0.1", "\"s\"", 3) == 0);
    CHECK(dj_decode(b.data, b.len, MAX, &m, err, sizeof(err)) == 0);
    CHECK_STR(m.json, "{\"type\":\"herald.publication\",\"channel\":\"c\",\"user\":\"\",\"client\":"
                      "\"n0.1\",\"data\":\"s\"}");
    dj_message_clear(&m);
    hr_buf_reset(&b);
    CHECK(dj_encode_publication(&b, "c", "u", "n0.1", "{nope", 5) < 0);
    hr_buf_reset(&b);
}

/* xorshift: the same run every time. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Mutates valid messages (flip, insert, delete, truncate, splice special
 * bytes) and decodes each; success must give valid JSON. */
static void test_mutations(void)
{
    const char *seeds[] = {
        "8aa474797065a178a16efba3626967cfffffffffffffffffa36e6567d38000000000000000a166cb3ff80000"
        "00000000a167cb4000000000000000a174c3a17ac0a16c9301a16190a16d81a16b80",
        "82a162c40300ff10a175b368c3a9e282acf09f988020227122205c200a01",
        "82a474797065a167b05f5f617367695f6368616e6e656c5f5f92b1686572616c642e6e302e6162216e657773"
        "ae686572616c642e6e302e61622178",
        "8401a174c0a36e696cfea16dcb3fe0000000000000a166",
    };
    static const unsigned char special[] = {0xc1, 0xdc, 0xdd, 0xde, 0xdf, 0xdb, 0xc6, 0xc9,
                                            0xd8, 0xff, 0x00, 0x80, 0x90, 0xbf, 0xcb, 0xca};
    unsigned char seed[512], buf[600];
    size_t ok = 0, total = 0;
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        size_t sn = unhex(seeds[s], seed);
        for (int it = 0; it < 25000; it++) {
            size_t n = sn;
            memcpy(buf, seed, sn);
            int edits = 1 + (int)(next() % 4);
            for (int k = 0; k < edits && n > 0; k++) {
                size_t at = next() % n;
                switch (next() % 5) {
                case 0:
                    buf[at] ^= (unsigned char)(1u << (next() % 8));
                    break;
                case 1:
                    buf[at] = special[next() % sizeof(special)];
                    break;
                case 2:
                    if (n < sizeof(buf)) {
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = (unsigned char)next();
                        n++;
                    }
                    break;
                case 3:
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                    break;
                case 4:
                    n = at;
                    break;
                }
            }
            dj_message m;
            char err[128];
            json_error_t je;
            total++;
            if (dj_decode(buf, n, 4096, &m, err, sizeof(err)) == 0) {
                ok++;
                json_t *j =
                    json_loadb(m.json, m.len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &je);
                CHECK(j != NULL && json_is_object(j));
                if (!j)
                    fprintf(stderr, "  not JSON (%s): %s\n", je.text, m.json);
                json_decref(j);
                dj_message_clear(&m);
            }
        }
    }
    fprintf(stderr, "  %zu mutated messages, %zu decoded\n", total, ok);
    CHECK(ok > 0 && ok < total);
}

int main(void)
{
    RUN(test_names);
    RUN(test_decode_types);
    RUN(test_routes);
    RUN(test_refusals);
    RUN(test_encode);
    RUN(test_mutations);
    return TEST_DONE();
}
