/* Unit tests for common/ws_frame.c: headers of every length class, masks,
 * close frames, and the parser's verdicts on short and malformed input. */
#include "common/ws_frame.h"
#include "testing.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

static void header_lengths(void)
{
    unsigned char h[HR_WS_HDR_MAX];
    hr_ws_frame f;
    const uint64_t lens[] = {0, 125, 126, 0xffff, 0x10000, (uint64_t)1 << 40};
    const size_t want[] = {2, 2, 4, 4, 10, 10};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t n = hr_ws_frame_header(h, HR_WS_OP_TEXT, lens[i], NULL);
        CHECK(n == want[i]);
        CHECK(h[0] == 0x81 && !(h[1] & 0x80));
        CHECK(hr_ws_frame_parse(h, n, &f, 0) == (int)n);
        CHECK(f.len == lens[i] && f.fin && f.opcode == HR_WS_OP_TEXT && !f.masked && !f.rsv1);
        /* one byte short: more is needed, whatever the length class */
        CHECK(hr_ws_frame_parse(h, n - 1, &f, 0) == 0);
    }
}

static void masked(void)
{
    const unsigned char key[4] = {1, 2, 3, 4};
    unsigned char buf[HR_WS_HDR_MAX + 5];
    size_t h = hr_ws_frame_header(buf, HR_WS_OP_TEXT, 5, key);
    CHECK(h == 6 && (buf[1] & 0x80) && !memcmp(buf + 2, key, 4));
    memcpy(buf + h, "hello", 5);
    hr_ws_mask(buf + h, 5, key, 0);
    CHECK(memcmp(buf + h, "hello", 5) != 0);
    hr_ws_frame f;
    CHECK(hr_ws_frame_parse(buf, h + 5, &f, 0) == (int)h);
    CHECK(f.masked && !memcmp(f.mask, key, 4) && f.len == 5);
    hr_ws_mask(buf + h, 2, f.mask, 0); /* in two pieces: the phase carries on */
    hr_ws_mask(buf + h + 2, 3, f.mask, 2);
    CHECK(!memcmp(buf + h, "hello", 5));
}

static void close_frames(void)
{
    unsigned char p[HR_WS_CLOSE_MAX];
    char reason[200];
    memset(reason, 'r', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    size_t n = hr_ws_close_frame(p, 4008, "slow consumer");
    CHECK(n == 2 + 2 + 13 && p[0] == 0x88 && p[1] == 15 && p[2] == 0x0f && p[3] == 0xa8);
    CHECK(!memcmp(p + 4, "slow consumer", 13));
    n = hr_ws_close_frame(p, 1000, reason); /* cut to fit a control frame */
    CHECK(n == HR_WS_CLOSE_MAX && p[1] == 125);
}

static void malformed(void)
{
    hr_ws_frame f;
    unsigned char rsv1[] = {0xc1, 0x00}, rsv2[] = {0xa1, 0x00};
    unsigned char top[10] = {0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1};
    CHECK(hr_ws_frame_parse(rsv1, 2, &f, 0) == -EPROTO);
    CHECK(hr_ws_frame_parse(rsv1, 2, &f, 1) == 2 && f.rsv1);
    CHECK(hr_ws_frame_parse(rsv2, 2, &f, 1) == -EPROTO);
    CHECK(hr_ws_frame_parse(top, sizeof(top), &f, 0) == -EPROTO);
    CHECK(hr_ws_frame_parse(top, 1, &f, 0) == 0);
    CHECK(hr_ws_frame_parse(NULL, 0, &f, 0) == 0);
}

int main(void)
{
    RUN(header_lengths);
    RUN(masked);
    RUN(close_frames);
    RUN(malformed);
    return TEST_DONE();
}
