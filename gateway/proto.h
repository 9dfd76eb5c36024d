/*
 * proto.h - the WebSocket message protocol (SPEC §2) without any I/O.
 *
 * hr_proto_parse turns one text frame into a validated command; the reply
 * builders turn results back into JSON text. The parser is fed bytes
 * directly by the unit tests and the fuzzer.
 */
#ifndef HR_PROTO_H
#define HR_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum hr_op {
    HR_OP_CONNECT = 1,
    HR_OP_SUBSCRIBE,
    HR_OP_UNSUBSCRIBE,
    HR_OP_PUBLISH,
    HR_OP_PRESENCE,
    HR_OP_HISTORY,
    HR_OP_REFRESH,
    HR_OP_PING,
    HR_OP_RPC,
} hr_op;

/* Error codes of SPEC §2, as they appear on the wire. */
#define HR_ERR_BAD_REQUEST "bad_request"
#define HR_ERR_UNAUTHORIZED "unauthorized"
#define HR_ERR_FORBIDDEN "forbidden"
#define HR_ERR_NOT_FOUND "not_found"
#define HR_ERR_TOO_LARGE "too_large"
#define HR_ERR_RATE_LIMITED "rate_limited"
#define HR_ERR_UNAVAILABLE "unavailable"
#define HR_ERR_INTERNAL "internal"

/* A parsed command. String fields and `data` point into `root`, which the
 * command owns; hr_cmd_clear releases it. */
typedef struct hr_cmd {
    int64_t id; /* > 0; 0 when the message had no usable id */
    hr_op op;
    const char *channel; /* subscribe, unsubscribe, publish, presence, history */
    const char *token;   /* connect (optional), refresh */
    json_t *data;        /* publish, rpc (absent: null); connect (optional: the connect proxy's) */
    const char *method;  /* rpc */
    int64_t limit;       /* history: -1 = not given */
    int has_since;
    uint64_t since_offset;
    const char *since_epoch;
    json_t *root;
} hr_cmd;

typedef struct hr_proto_error {
    const char *code; /* one of HR_ERR_* */
    char message[160];
} hr_proto_error;

/* How deep published data may nest (arrays and objects), in every mode
 * and on every path (WebSocket, REST, Redis' publish function): pushes
 * carry it one level deeper, and every client's parser must take it. */
#define HR_MAX_DATA_DEPTH 64

/* 1 when v nests deeper than max levels (a scalar is 0, [] is 1). */
int hr_json_too_deep(const json_t *v, int max);

/* Parses one client message. Returns 0 and fills cmd, or -1 and fills err;
 * in both cases cmd->id holds the id if one could be read (so the error
 * reply can carry it) and the caller must call hr_cmd_clear(cmd). Channel
 * names are checked against max_channel_len and the allowed characters. */
int hr_proto_parse(const char *buf, size_t len, size_t max_channel_len, hr_cmd *cmd,
                   hr_proto_error *err);
void hr_cmd_clear(hr_cmd *cmd);

/* Reply builders. Each returns malloc'ed JSON text (caller frees) and its
 * length in *len, or NULL on allocation failure. `result` is borrowed. */
char *hr_proto_result(int64_t id, json_t *result, size_t *len);
char *hr_proto_error_reply(int64_t id, const char *code, const char *message, size_t *len);
/* {"push":"connected","client":..,"user":..,"expires_at":..|null} */
char *hr_proto_connected(const char *client, const char *user, int64_t expires_at, size_t *len);

#endif
