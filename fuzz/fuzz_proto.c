/*
 * fuzz_proto.c - the WebSocket command parser (gateway/proto.h): one text
 * frame from a client, as hr_proto_parse gets it.
 *
 * Invariants: a parsed command has a positive id and the fields its op
 * needs; a refused one still yields its error reply, because SPEC §2 wants
 * exactly one reply for every command (a NULL reply would be a command left
 * unanswered); every reply is JSON text that parses back.
 */
#include "fuzz.h"
#include "gateway/proto.h"

#include <string.h>

static void check_reply(char *reply, size_t len)
{
    FUZZ_ASSERT(reply != NULL);
    FUZZ_ASSERT(strlen(reply) == len);
    json_t *back = json_loadb(reply, len, 0, NULL);
    FUZZ_ASSERT(back != NULL);
    json_decref(back);
    free(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hr_cmd cmd;
    hr_proto_error err;
    size_t len = 0;
    if (hr_proto_parse((const char *)data, size, 255, &cmd, &err) < 0) {
        FUZZ_ASSERT(err.code != NULL);
        char *reply = hr_proto_error_reply(cmd.id, err.code, err.message, &len);
        check_reply(reply, len);
    } else {
        FUZZ_ASSERT(cmd.id > 0 && cmd.root != NULL);
        switch (cmd.op) {
        case HR_OP_PUBLISH:
            FUZZ_ASSERT(cmd.data != NULL);
            /* fall through */
        case HR_OP_SUBSCRIBE:
        case HR_OP_UNSUBSCRIBE:
        case HR_OP_PRESENCE:
        case HR_OP_HISTORY:
            FUZZ_ASSERT(cmd.channel && cmd.channel[0] && strlen(cmd.channel) <= 255);
            break;
        case HR_OP_REFRESH:
            FUZZ_ASSERT(cmd.token != NULL);
            break;
        case HR_OP_CONNECT:
        case HR_OP_PING:
            break;
        default:
            FUZZ_ASSERT(!"unknown op accepted");
        }
        char *reply = hr_proto_result(cmd.id, cmd.data, &len);
        check_reply(reply, len);
    }
    hr_cmd_clear(&cmd);
    return 0;
}
