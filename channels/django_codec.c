/*
 * django_codec.c - the pure half of the Django Channels bridge (django.h):
 * channels_redis' msgpack messages to and from JSON, and Herald channel
 * names to and from Django group names. No I/O and no global state, so
 * every rule is unit tested (tests/unit/channels/django_codec.c) and the decoder is
 * fuzzed (tests/fuzz/fuzz_django_decode.c).
 *
 * msgpack-c (Debian's libmsgpack-dev) does the msgpack work: it is the
 * reference C implementation of the format, so Herald reads every type code
 * exactly as msgpack-python (which channels_redis uses) writes them, and
 * packs what Python reads back. One guard sits in front of its unpacker
 * (mp_check below): the unpacker allocates a container's element array from
 * the count in the container's header before reading the elements.
 */
#include "django.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Formats a reason into err (when there is room) and returns -1. */
__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/*---- Names -----------------------------------------------------------------*/

/* Characters Django accepts in group and channel names. */
static int dj_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

/* ':' becomes "..": readable ("chat:lobby" is "chat..lobby"), and one-to-one
 * because the channels that would make a run of dots ambiguous (with "..",
 * ".:" or ":.") have no group. */
int dj_group_of_channel(const char *channel, char out[DJ_NAME_MAX])
{
    size_t n = 0;
    for (const char *p = channel; *p; p++) {
        if (*p == ':') {
            if ((p > channel && p[-1] == '.') || p[1] == '.' || n + 2 >= DJ_NAME_MAX)
                return -1;
            out[n++] = '.';
            out[n++] = '.';
        } else {
            if (!dj_char(*p) || (*p == '.' && p[1] == '.') || n + 1 >= DJ_NAME_MAX)
                return -1;
            out[n++] = *p;
        }
    }
    if (!n)
        return -1;
    out[n] = '\0';
    return 0;
}

/* A lone '.' is a '.', a run of 2k dots is k ':'; an odd run of three or
 * more comes from no channel. */
int dj_channel_of_group(const char *group, char *out, size_t outlen)
{
    size_t len = strlen(group), n = 0;
    if (!len || len >= DJ_NAME_MAX)
        return -1;
    for (size_t i = 0; i < len;) {
        if (!dj_char(group[i]))
            return -1;
        if (group[i] != '.') {
            if (n + 1 >= outlen)
                return -1;
            out[n++] = group[i++];
            continue;
        }
        size_t run = 0;
        while (i + run < len && group[i + run] == '.')
            run++;
        if (run > 1 && run % 2)
            return -1;
        size_t k = run == 1 ? 1 : run / 2;
        if (n + k >= outlen)
            return -1;
        memset(out + n, run == 1 ? '.' : ':', k);
        n += k;
        i += run;
    }
    out[n] = '\0';
    return 0;
}

int dj_channel_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (!len || len >= DJ_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!dj_char(name[i]))
            return 0;
    return 1;
}

/*---- msgpack guard ---------------------------------------------------------*/

static uint64_t be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Walks buf[0..len) as one msgpack value without building anything: every
 * length must fit in the buffer, and after every header the elements still
 * owed must not outnumber the bytes left (each takes one at least). So a
 * value msgpack-c is given declares at most len elements in all, and what
 * it allocates is bounded by the input's size - without the check, the 5
 * bytes dd ff ff ff ff (an array of 2^32 - 1 elements) made it try to
 * allocate 96 GiB (AddressSanitizer aborted; without it, hundreds of MB
 * for smaller counts before it noticed the bytes were missing). Also
 * refuses the unused byte 0xc1 and trailing bytes. Returns 0 or -1. */
static int mp_check(const unsigned char *p, size_t len, char *err, size_t errlen)
{
    const unsigned char *end = p + len;
    uint64_t owed = 1;
    while (owed) {
        if (p >= end)
            return fail(err, errlen, "truncated msgpack");
        unsigned c = *p++;
        uint64_t skip = 0, items = 0;
        size_t lenbytes = 0; /* a length field of this many bytes follows */
        int container = 0, pairs = 0;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool: the byte itself */
        } else if (c <= 0x8f) {
            items = 2u * (c & 0x0f);
        } else if (c <= 0x9f) {
            items = c & 0x0f;
        } else if (c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            switch (c) {
            case 0xc4: case 0xd9: lenbytes = 1; break; /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xc7: lenbytes = 1; skip = 1; break; /* ext8: length, type */
            case 0xc8: lenbytes = 2; skip = 1; break;
            case 0xc9: lenbytes = 4; skip = 1; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xca: case 0xce: case 0xd2: skip = 4; break;
            case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break; /* fixext: type + data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: lenbytes = 2; container = 1; break;
            case 0xdd: lenbytes = 4; container = 1; break;
            case 0xde: lenbytes = 2; container = pairs = 1; break;
            case 0xdf: lenbytes = 4; container = pairs = 1; break;
            default: /* 0xc1 */
                return fail(err, errlen, "invalid msgpack byte 0x%02x", c);
            }
        }
        if (lenbytes) {
            if ((size_t)(end - p) < lenbytes)
                return fail(err, errlen, "truncated msgpack");
            uint64_t n = be(p, lenbytes);
            p += lenbytes;
            if (container)
                items = pairs ? 2 * n : n;
            else
                skip += n;
        }
        if ((uint64_t)(end - p) < skip)
            return fail(err, errlen, "truncated msgpack");
        p += skip;
        owed = owed - 1 + items;
        if (owed > (uint64_t)(end - p))
            return fail(err, errlen, "a msgpack container announces more elements than the "
                                     "message holds");
    }
    if (p != end)
        return fail(err, errlen, "%zu extra bytes after the msgpack message", (size_t)(end - p));
    return 0;
}

/*---- msgpack to JSON -------------------------------------------------------*/

typedef struct emitter {
    hr_buf *b;
    size_t max;
    char *err;
    size_t errlen;
} emitter;

static int put(emitter *e, const void *p, size_t n)
{
    hr_buf_append(e->b, p, n);
    if (e->b->len > e->max)
        return fail(e->err, e->errlen, "the message is larger than %zu bytes as JSON", e->max);
    return 0;
}

static int puts_(emitter *e, const char *s)
{
    return put(e, s, strlen(s));
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0:
 * no overlong forms, no surrogates, nothing above U+10FFFF (WebSocket text
 * frames must be valid UTF-8, or browsers drop the connection). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < k || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return k;
}

static int emit_string(emitter *e, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    if (put(e, "\"", 1) < 0)
        return -1;
    while (i < n) {
        size_t run = i;
        while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i && put(e, s + i, run - i) < 0)
            return -1;
        i = run;
        if (i == n)
            break;
        unsigned c = s[i];
        if (c >= 0x80) {
            size_t k = utf8_len(s + i, n - i);
            if (!k)
                return fail(e->err, e->errlen, "a msgpack str that is not UTF-8");
            if (put(e, s + i, k) < 0)
                return -1;
            i += k;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"': strcpy(esc, "\\\""); break;
        case '\\': strcpy(esc, "\\\\"); break;
        case '\n': strcpy(esc, "\\n"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\t': strcpy(esc, "\\t"); break;
        case '\b': strcpy(esc, "\\b"); break;
        case '\f': strcpy(esc, "\\f"); break;
        default: snprintf(esc, sizeof(esc), "\\u%04x", c); break;
        }
        if (puts_(e, esc) < 0)
            return -1;
        i++;
    }
    return put(e, "\"", 1);
}

static int emit_base64(emitter *e, const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    if (put(e, "\"", 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        q[0] = tab[v >> 18 & 63];
        q[1] = tab[v >> 12 & 63];
        q[2] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        if (put(e, q, 4) < 0)
            return -1;
    }
    return put(e, "\"", 1);
}

/* The shortest %g text that reads back as the same value (as Python's repr
 * does), kept recognisably a float: 2.0 is "2.0", not "2". single: the
 * value was a float32, compared at that precision. Non-finite values have
 * no JSON number: "" (the caller decides). */
static void float_text(double v, int single, char *buf, size_t len)
{
    if (!isfinite(v)) {
        buf[0] = '\0';
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (single ? (float)back == (float)v : back == v)
            break;
    }
    if (!strpbrk(buf, ".eE") && strlen(buf) + 3 <= len)
        strcat(buf, ".0");
}

static int emit_value(emitter *e, const msgpack_object *o);
static int emit_key(emitter *e, const msgpack_object *k);

/* Emits a map key and refuses one already seen in this map (seen: the
 * keys' JSON texts, NULL for a map of one entry). Two msgpack keys can
 * become one JSON key ("1" and 1, "null" and nil), or a map can simply
 * repeat one: Herald refuses JSON with duplicate keys everywhere (REST,
 * WebSocket, Redis' publish function), so such a message is dropped and
 * counted like any other it cannot convert, not passed on. */
static int emit_key_once(emitter *e, const msgpack_object *k, hr_map *seen)
{
    size_t at = e->b->len;
    if (emit_key(e, k) < 0)
        return -1;
    if (!seen)
        return 0;
    const char *text = e->b->data + at;
    size_t len = e->b->len - at;
    if (hr_map_get(seen, text, len))
        return fail(e->err, e->errlen, "a map with the key %.*s twice", (int)(len > 64 ? 64 : len),
                    text);
    hr_map_put(seen, text, len, (void *)1);
    return 0;
}

/* Map keys: JSON has only string keys. Scalars take their JSON text, as
 * json.dumps does with Python dict keys; containers, bin and ext refuse. */
static int emit_key(emitter *e, const msgpack_object *k)
{
    char num[48];
    switch (k->type) {
    case MSGPACK_OBJECT_STR:
        /* valid JSON as \u0000, but many parsers (jansson among them)
         * refuse it in a key */
        if (k->via.str.size && memchr(k->via.str.ptr, '\0', k->via.str.size))
            return fail(e->err, e->errlen, "a map key with a NUL character");
        return emit_string(e, k->via.str.ptr, k->via.str.size);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof(num), "\"%" PRIu64 "\"", k->via.u64);
        return puts_(e, num);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof(num), "\"%" PRId64 "\"", k->via.i64);
        return puts_(e, num);
    case MSGPACK_OBJECT_NIL:
        return puts_(e, "\"null\"");
    case MSGPACK_OBJECT_BOOLEAN:
        return puts_(e, k->via.boolean ? "\"true\"" : "\"false\"");
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        char f[40];
        float_text(k->via.f64, k->type == MSGPACK_OBJECT_FLOAT32, f, sizeof(f));
        if (!f[0])
            snprintf(f, sizeof(f), "%s",
                     isnan(k->via.f64) ? "NaN" : k->via.f64 > 0 ? "Infinity" : "-Infinity");
        snprintf(num, sizeof(num), "\"%s\"", f);
        return puts_(e, num);
    }
    default:
        return fail(e->err, e->errlen, "a map key that is %s",
                    k->type == MSGPACK_OBJECT_BIN     ? "binary"
                    : k->type == MSGPACK_OBJECT_EXT   ? "an extension type"
                    : k->type == MSGPACK_OBJECT_ARRAY ? "an array"
                                                      : "a map");
    }
}

static int emit_value(emitter *e, const msgpack_object *o)
{
    char num[48];
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return puts_(e, "null");
    case MSGPACK_OBJECT_BOOLEAN:
        return puts_(e, o->via.boolean ? "true" : "false");
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof(num), "%" PRIu64, o->via.u64);
        return puts_(e, num);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof(num), "%" PRId64, o->via.i64);
        return puts_(e, num);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        float_text(o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32, num, sizeof(num));
        return puts_(e, num[0] ? num : "null");
    case MSGPACK_OBJECT_STR:
        return emit_string(e, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return emit_base64(e, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT:
        return fail(e->err, e->errlen, "a msgpack extension value (type %d)", o->via.ext.type);
    case MSGPACK_OBJECT_ARRAY:
        if (put(e, "[", 1) < 0)
            return -1;
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if ((i && put(e, ",", 1) < 0) || emit_value(e, &o->via.array.ptr[i]) < 0)
                return -1;
        return put(e, "]", 1);
    case MSGPACK_OBJECT_MAP: {
        hr_map *seen = o->via.map.size > 1 ? hr_map_new(NULL) : NULL;
        int r = put(e, "{", 1);
        for (uint32_t i = 0; r == 0 && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if ((i && put(e, ",", 1) < 0) || emit_key_once(e, &kv->key, seen) < 0 ||
                put(e, ":", 1) < 0 || emit_value(e, &kv->val) < 0)
                r = -1;
        }
        hr_map_free(seen);
        return r < 0 ? -1 : put(e, "}", 1);
    }
    }
    return fail(e->err, e->errlen, "unknown msgpack type %d", (int)o->type);
}

static int is_route_key(const msgpack_object *k)
{
    static const char name[] = "__asgi_channel__";
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == sizeof(name) - 1 &&
           !memcmp(k->via.str.ptr, name, sizeof(name) - 1);
}

static int add_route(dj_message *m, const msgpack_object *s, char *err, size_t errlen)
{
    if (s->type != MSGPACK_OBJECT_STR || !s->via.str.size ||
        memchr(s->via.str.ptr, '\0', s->via.str.size))
        return fail(err, errlen, "__asgi_channel__ holds something other than channel names");
    m->routes = hr_realloc(m->routes, (m->nroutes + 1) * sizeof(*m->routes));
    m->routes[m->nroutes++] = hr_strndup(s->via.str.ptr, s->via.str.size);
    return 0;
}

/* __asgi_channel__ (the member channels a RedisChannelLayer message is for:
 * one name from send(), a list from group_send()) is taken out of the
 * message, as channels_redis' receive does, and returned as routes. */
static int routes_of(dj_message *m, const msgpack_object *v, char *err, size_t errlen)
{
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return add_route(m, v, err, errlen);
    for (uint32_t i = 0; i < v->via.array.size; i++)
        if (add_route(m, &v->via.array.ptr[i], err, errlen) < 0)
            return -1;
    return 0;
}

int dj_decode(const void *buf, size_t len, size_t max_json, dj_message *out, char *err,
              size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (len > max_json)
        return fail(err, errlen, "the message is larger than %zu bytes", max_json);
    if (mp_check(buf, len, err, errlen) < 0)
        return -1;
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    int rc = msgpack_unpack_next(&u, buf, len, &off);
    if (rc != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(&u);
        /* mp_check vouched for the lengths: what is left is depth */
        return fail(err, errlen, "msgpack nested deeper than %d levels", MSGPACK_EMBED_STACK_SIZE);
    }
    const msgpack_object *o = &u.data;
    if (o->type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        return fail(err, errlen, "the message is not a map");
    }
    hr_buf b = {0};
    emitter e = {&b, max_json, err, errlen};
    hr_map *seen = o->via.map.size > 1 ? hr_map_new(NULL) : NULL;
    int first = 1, r = put(&e, "{", 1);
    for (uint32_t i = 0; r == 0 && i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (is_route_key(&kv->key)) {
            r = routes_of(out, &kv->val, err, errlen);
            continue;
        }
        if ((!first && put(&e, ",", 1) < 0) || emit_key_once(&e, &kv->key, seen) < 0 ||
            put(&e, ":", 1) < 0 || emit_value(&e, &kv->val) < 0)
            r = -1;
        first = 0;
    }
    hr_map_free(seen);
    if (r == 0)
        r = put(&e, "}", 1);
    msgpack_unpacked_destroy(&u);
    if (r < 0) {
        hr_buf_reset(&b);
        dj_message_clear(out);
        return -1;
    }
    out->json = hr_strndup(b.data, b.len);
    out->len = b.len;
    hr_buf_reset(&b);
    return 0;
}

void dj_message_clear(dj_message *m)
{
    for (size_t i = 0; i < m->nroutes; i++)
        free(m->routes[i]);
    free(m->routes);
    free(m->json);
    memset(m, 0, sizeof(*m));
}

int dj_looks_encrypted(const void *buf, size_t len)
{
    return len >= 6 && !memcmp(buf, "gAAAAA", 6);
}

/*---- JSON to msgpack -------------------------------------------------------*/

static int pk_write(void *data, const char *buf, size_t len)
{
    hr_buf_append(data, buf, len);
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void pack_json(msgpack_packer *pk, const json_t *v)
{
    const char *key;
    json_t *val;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(v));
        json_object_foreach((json_t *)v, key, val)
        {
            pack_str(pk, key, strlen(key));
            pack_json(pk, val);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        json_array_foreach(v, i, val)
        pack_json(pk, val);
        break;
    case JSON_STRING:
        pack_str(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

int dj_encode_publication(hr_buf *out, const char *channel, const char *user, const char *client,
                          const char *data_json, size_t data_len)
{
    json_t *data = json_loadb(data_json, data_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!data)
        return -1;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, pk_write);
    msgpack_pack_map(&pk, 5);
    const char *fields[4][2] = {{"type", "herald.publication"},
                                {"channel", channel},
                                {"user", user ? user : ""},
                                {"client", client}};
    for (int i = 0; i < 4; i++) {
        pack_str(&pk, fields[i][0], strlen(fields[i][0]));
        pack_str(&pk, fields[i][1], strlen(fields[i][1]));
    }
    pack_str(&pk, "data", 4);
    pack_json(&pk, data);
    json_decref(data);
    return 0;
}

int dj_encode_json(hr_buf *out, const char *json, size_t len)
{
    json_t *v = json_loadb(json, len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, pk_write);
    pack_json(&pk, v);
    json_decref(v);
    return 0;
}
