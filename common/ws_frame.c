/* ws_frame.c - WebSocket frame headers (see ws_frame.h). */
#include "common/ws_frame.h"

#include <errno.h>
#include <string.h>

size_t hr_ws_frame_header(unsigned char *hdr, int opcode, uint64_t len, const unsigned char *mask)
{
    size_t n = 0;
    unsigned char mbit = mask ? 0x80 : 0;
    hdr[n++] = (unsigned char)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        hdr[n++] = (unsigned char)(mbit | len);
    } else if (len <= 0xffff) {
        hdr[n++] = mbit | 126;
        hdr[n++] = (unsigned char)(len >> 8);
        hdr[n++] = (unsigned char)len;
    } else {
        hdr[n++] = mbit | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            hdr[n++] = (unsigned char)(len >> shift);
    }
    if (mask) {
        memcpy(hdr + n, mask, 4);
        n += 4;
    }
    return n;
}

size_t hr_ws_close_frame(unsigned char *p, int code, const char *reason)
{
    size_t n = strlen(reason);
    if (n > 123)
        n = 123;
    size_t h = hr_ws_frame_header(p, HR_WS_OP_CLOSE, n + 2, NULL);
    p[h] = (unsigned char)(code >> 8);
    p[h + 1] = (unsigned char)code;
    memcpy(p + h + 2, reason, n);
    return h + 2 + n;
}

int hr_ws_frame_parse(const unsigned char *p, size_t n, hr_ws_frame *f, int rsv1_ok)
{
    if (n < 2)
        return 0;
    if (p[0] & (rsv1_ok ? 0x30 : 0x70))
        return -EPROTO; /* a reserved bit no negotiated extension uses */
    f->fin = (p[0] & 0x80) != 0;
    f->rsv1 = (p[0] & 0x40) != 0;
    f->opcode = p[0] & 0x0f;
    f->masked = (p[1] & 0x80) != 0;
    uint64_t len = p[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        if (len >> 63)
            return -EPROTO;
        h = 10;
    }
    if (f->masked) {
        if (n < h + 4)
            return 0;
        memcpy(f->mask, p + h, 4);
        h += 4;
    }
    f->len = len;
    f->hdrlen = h;
    return (int)h;
}

void hr_ws_mask(unsigned char *p, size_t n, const unsigned char mask[4], size_t phase)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(i + phase) & 3];
}
