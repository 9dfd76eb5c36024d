/*
 * fuzz_redis_push.c - what a node accepts from a Redis pub/sub topic
 * (chan_msg_parse_push, channels/channels.h): anything a client of that
 * Redis publishes on <p>:ch:<channel>. The first byte picks the channel
 * the topic names; the rest is the payload.
 *
 * Invariants: an accepted push is framed exactly (header + payload = the
 * input bytes), names the topic's channel, and its payload is a JSON
 * object; a refusal says why.
 */
#include "fuzz.h"
#include "channels/channels.h"

#include <jansson.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const channels[] = {"news", "chat:room", "user:42", "a"};
    char err[160] = "";
    if (size == 0)
        return 0;
    const char *channel = channels[data[0] % 4];
    const char *json = (const char *)data + 1;
    size_t len = size - 1;
    chan_msg *m = chan_msg_parse_push(json, len, channel, err, sizeof(err));
    if (!m) {
        FUZZ_ASSERT(err[0]);
        return 0;
    }
    size_t flen;
    const unsigned char *frame = chan_msg_frame(m, &flen);
    FUZZ_ASSERT(m->len == len && flen == m->hdr + len && frame[0] == 0x81);
    FUZZ_ASSERT(!memcmp(chan_msg_payload(m), json, len));
    FUZZ_ASSERT(m->channel && !strcmp(m->channel, channel));
    json_t *o = json_loadb(json, len, 0, NULL);
    FUZZ_ASSERT(json_is_object(o));
    json_decref(o);
    chan_msg_unref(m);
    return 0;
}
