/*
 * fuzz_redis_push.c - what a node accepts from a Redis pub/sub topic: anything
 * a client of that Redis publishes on <p>:ch:<channel>, checked by
 * chan_msg_parse_push (channels/channels.h), or recognised as one of the
 * node's own publications (rd_own_match, channels/redis_own.c), which skips
 * the parse. The first byte picks the channel the topic names; the rest is
 * the payload.
 *
 * Invariants: an accepted push is framed exactly (header + payload = the
 * input bytes), names the topic's channel, and its payload is a JSON
 * object; a refusal says why. A payload taken for one of the node's own
 * publications (of that channel: plain or history, with or without "from")
 * is one the parser accepts too, with the same offset: the shortcut never
 * lets through what the parser would refuse.
 */
#include "fuzz.h"
#include "channels/channels.h"
#include "channels/redis_internal.h"

#include <jansson.h>
#include <string.h>

#define NCH 4
#define NOWN 4

static const char *const channels[NCH] = {"news", "chat:room", "user:42", "a"};
static chan_msg *own[NCH][NOWN];
static uint32_t split[NCH][NOWN];

/* What this node would have built for each channel: plain and history
 * publications of {"a":1}, from a client and from a backend. */
static void init_own(void)
{
    static const char data[] = "{\"a\":1}", from[] = "{\"user\":\"u\",\"client\":\"n.1\"}";
    for (int c = 0; c < NCH; c++)
        for (int k = 0; k < NOWN; k++) {
            own[c][k] =
                chan_msg_publication(channels[c], data, sizeof(data) - 1, 0, k & 1 ? from : NULL);
            split[c][k] =
                k & 2 ? (uint32_t)chan_publication_offset_at(strlen(channels[c]), sizeof(data) - 1)
                      : 0;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[160] = "";
    if (size == 0)
        return 0;
    if (!own[0][0])
        init_own();
    int ci = data[0] % NCH;
    const char *channel = channels[ci];
    const char *json = (const char *)data + 1;
    size_t len = size - 1;
    chan_msg *m = chan_msg_parse_push(json, len, channel, err, sizeof(err));
    for (int k = 0; k < NOWN; k++) {
        uint64_t offset;
        if (rd_own_match(own[ci][k], split[ci][k], json, len, &offset))
            FUZZ_ASSERT(m && m->offset == offset && (split[ci][k] != 0) == (offset != 0));
    }
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
