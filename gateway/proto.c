/* proto.c - parse client commands and build replies (see proto.h). */
#include "gateway/proto.h"
#include "channels/channels.h"

#include <inttypes.h>

#define HR_STR_(x) #x
#define HR_STR(x) HR_STR_(x)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    hr_op op;
} op_table[] = {
    {"connect", HR_OP_CONNECT}, {"subscribe", HR_OP_SUBSCRIBE}, {"unsubscribe", HR_OP_UNSUBSCRIBE},
    {"publish", HR_OP_PUBLISH}, {"presence", HR_OP_PRESENCE},   {"history", HR_OP_HISTORY},
    {"refresh", HR_OP_REFRESH}, {"ping", HR_OP_PING},           {"rpc", HR_OP_RPC},
};

/* Length of the well-formed UTF-8 character at p (a NUL-terminated
 * string), or 0: a truncated sequence, a stray continuation byte, an
 * overlong form, a surrogate or a value above U+10FFFF. */
static size_t utf8_char(const unsigned char *p)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len = p[0] < 0x80             ? 1
                 : (p[0] & 0xe0) == 0xc0 ? 2
                 : (p[0] & 0xf0) == 0xe0 ? 3
                 : (p[0] & 0xf8) == 0xf0 ? 4
                                         : 0;
    uint32_t c = len == 1 ? p[0] : len ? p[0] & (0x7f >> len) : 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    if (len == 0 || c < min_cp[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return len;
}

/* The message becomes a JSON string, which must be valid UTF-8 or jansson
 * refuses it and the command would get no reply at all: a "%.60s" cut can
 * end inside a multi-byte character of the client's text, and jansson's
 * error text quotes the client's bytes as they came. Every byte that is
 * not part of a well-formed character becomes '?'. */
static void utf8_scrub(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_char(p);
        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
}

static int fail(hr_proto_error *err, const char *code, const char *fmt, const char *arg)
{
    err->code = code;
    snprintf(err->message, sizeof(err->message), fmt, arg);
    utf8_scrub(err->message);
    return -1;
}

/* Reads "id": a positive integer. Absent -> 0 with no error (the caller
 * decides); present but wrong -> -1. */
static int read_id(json_t *root, hr_cmd *cmd, hr_proto_error *err)
{
    json_t *id = json_object_get(root, "id");
    if (!id)
        return fail(err, HR_ERR_BAD_REQUEST, "%s", "missing \"id\"");
    if (!json_is_integer(id) || json_integer_value(id) <= 0)
        return fail(err, HR_ERR_BAD_REQUEST, "%s", "\"id\" must be a positive integer");
    cmd->id = json_integer_value(id);
    return 0;
}

/* A string member that becomes a C string: one holding \u0000 (accepted
 * in data, see hr_proto_parse) would be cut short, so it is no string. */
static const char *cstr(json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

int hr_json_too_deep(const json_t *v, int max)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (max <= 0)
        return 1;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (hr_json_too_deep(json_array_get(v, i), max - 1))
                return 1;
        return 0;
    }
    const char *k;
    json_t *m;
    json_object_foreach((json_t *)v, k, m)
    {
        if (hr_json_too_deep(m, max - 1))
            return 1;
    }
    return 0;
}

static int read_op(json_t *root, hr_cmd *cmd, hr_proto_error *err)
{
    const char *op = cstr(json_object_get(root, "op"));
    if (!op)
        return fail(err, HR_ERR_BAD_REQUEST, "%s", "missing or non-string \"op\"");
    for (size_t i = 0; i < sizeof(op_table) / sizeof(op_table[0]); i++) {
        if (!strcmp(op, op_table[i].name)) {
            cmd->op = op_table[i].op;
            return 0;
        }
    }
    return fail(err, HR_ERR_BAD_REQUEST, "unknown op \"%.60s\"", op);
}

static int read_channel(json_t *root, size_t max_len, hr_cmd *cmd, hr_proto_error *err)
{
    json_t *ch = json_object_get(root, "channel");
    if (!json_is_string(ch))
        return fail(err, HR_ERR_BAD_REQUEST, "%s", "missing or non-string \"channel\"");
    if (!chan_name_valid(json_string_value(ch), json_string_length(ch), max_len))
        return fail(err, HR_ERR_BAD_REQUEST, "%s",
                    "invalid channel name: 1-255 bytes of [A-Za-z0-9_.:@=,-]");
    cmd->channel = json_string_value(ch);
    return 0;
}

/* `token` is required for refresh and optional for connect (anonymous). */
static int read_token(json_t *root, int required, hr_cmd *cmd, hr_proto_error *err)
{
    json_t *t = json_object_get(root, "token");
    if (!t && !required)
        return 0;
    if (!cstr(t))
        return fail(err, HR_ERR_BAD_REQUEST, "%s", "missing or non-string \"token\"");
    cmd->token = json_string_value(t);
    return 0;
}

/* since: {"offset": <int >= 0>, "epoch": <string>} */
static int read_since(json_t *root, hr_cmd *cmd, hr_proto_error *err)
{
    json_t *s = json_object_get(root, "since");
    if (!s)
        return 0;
    json_t *off = json_object_get(s, "offset"), *ep = json_object_get(s, "epoch");
    if (!json_is_object(s) || !json_is_integer(off) || json_integer_value(off) < 0 ||
        (ep && !cstr(ep)))
        return fail(err, HR_ERR_BAD_REQUEST, "%s",
                    "\"since\" must be {\"offset\": int >= 0, \"epoch\": string}");
    cmd->has_since = 1;
    cmd->since_offset = (uint64_t)json_integer_value(off);
    cmd->since_epoch = json_string_value(ep);
    return 0;
}

static int read_limit(json_t *root, hr_cmd *cmd, hr_proto_error *err)
{
    json_t *l = json_object_get(root, "limit");
    cmd->limit = -1;
    if (!l)
        return 0;
    if (!json_is_integer(l) || json_integer_value(l) < 0)
        return fail(err, HR_ERR_BAD_REQUEST, "%s", "\"limit\" must be an integer >= 0");
    cmd->limit = json_integer_value(l);
    return 0;
}

/* Reads the arguments each op needs; unknown extra members are ignored so
 * newer clients can talk to older servers. */
static int read_args(json_t *root, size_t max_channel_len, hr_cmd *cmd, hr_proto_error *err)
{
    switch (cmd->op) {
    case HR_OP_CONNECT:
        /* data: for the connect proxy (SPEC §8), bounded like a publication's */
        if ((cmd->data = json_object_get(root, "data")) &&
            hr_json_too_deep(cmd->data, HR_MAX_DATA_DEPTH))
            return fail(err, HR_ERR_BAD_REQUEST, "%s",
                        "\"data\" nests deeper than " HR_STR(HR_MAX_DATA_DEPTH) " levels");
        return read_token(root, 0, cmd, err);
    case HR_OP_RPC:
        if (!(cmd->method = cstr(json_object_get(root, "method"))) || !cmd->method[0] ||
            strlen(cmd->method) > 255)
            return fail(err, HR_ERR_BAD_REQUEST, "%s",
                        "missing \"method\" (a string of 1 to 255 bytes)");
        cmd->data = json_object_get(root, "data");
        if (cmd->data && hr_json_too_deep(cmd->data, HR_MAX_DATA_DEPTH))
            return fail(err, HR_ERR_BAD_REQUEST, "%s",
                        "\"data\" nests deeper than " HR_STR(HR_MAX_DATA_DEPTH) " levels");
        return 0;
    case HR_OP_REFRESH:
        return read_token(root, 1, cmd, err);
    case HR_OP_PUBLISH:
        cmd->data = json_object_get(root, "data");
        if (!cmd->data)
            return fail(err, HR_ERR_BAD_REQUEST, "%s", "missing \"data\"");
        if (hr_json_too_deep(cmd->data, HR_MAX_DATA_DEPTH))
            return fail(err, HR_ERR_BAD_REQUEST, "%s",
                        "\"data\" nests deeper than " HR_STR(HR_MAX_DATA_DEPTH) " levels");
        return read_channel(root, max_channel_len, cmd, err);
    case HR_OP_SUBSCRIBE:
        if (read_channel(root, max_channel_len, cmd, err) < 0)
            return -1;
        return read_since(root, cmd, err);
    case HR_OP_HISTORY:
        if (read_channel(root, max_channel_len, cmd, err) < 0 || read_limit(root, cmd, err) < 0)
            return -1;
        return read_since(root, cmd, err);
    case HR_OP_UNSUBSCRIBE:
    case HR_OP_PRESENCE:
        return read_channel(root, max_channel_len, cmd, err);
    case HR_OP_PING:
        return 0;
    }
    return fail(err, HR_ERR_INTERNAL, "%s", "unhandled op");
}

int hr_proto_parse(const char *buf, size_t len, size_t max_channel_len, hr_cmd *cmd,
                   hr_proto_error *err)
{
    json_error_t jerr;
    memset(cmd, 0, sizeof(*cmd));
    cmd->limit = -1;
    /* JSON_REJECT_DUPLICATES: an ambiguous command is refused, not guessed.
     * JSON_ALLOW_NUL: "\u0000" is valid JSON, and data holding it is
     * published and delivered like any other (REST, Redis and Django take
     * it too); members that become C strings refuse it (cstr). */
    cmd->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!cmd->root)
        return fail(err, HR_ERR_BAD_REQUEST, "invalid JSON: %.120s", jerr.text);
    if (!json_is_object(cmd->root))
        return fail(err, HR_ERR_BAD_REQUEST, "%s", "a command must be a JSON object");
    if (read_id(cmd->root, cmd, err) < 0 || read_op(cmd->root, cmd, err) < 0)
        return -1;
    return read_args(cmd->root, max_channel_len, cmd, err);
}

void hr_cmd_clear(hr_cmd *cmd)
{
    json_decref(cmd->root);
    memset(cmd, 0, sizeof(*cmd));
}

/* Dumps a reply object; on success *len is the text length. */
static char *dump(json_t *o, size_t *len)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s && len)
        *len = strlen(s);
    return s;
}

char *hr_proto_result(int64_t id, json_t *result, size_t *len)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "id", json_integer(id));
        json_object_set_new(o, "result", result ? json_incref(result) : json_object());
    }
    return dump(o, len);
}

char *hr_proto_error_reply(int64_t id, const char *code, const char *message, size_t *len)
{
    json_t *o = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
    if (o && id > 0)
        json_object_set_new(o, "id", json_integer(id));
    return dump(o, len);
}

char *hr_proto_connected(const char *client, const char *user, int64_t expires_at, size_t *len)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:o}", "push", "connected", "client", client, "user",
                          user ? user : "", "expires_at",
                          expires_at > 0 ? json_integer(expires_at) : json_null());
    return dump(o, len);
}
