/*
 * ws_frame.h - WebSocket frame headers (RFC 6455 §5.2), without any I/O.
 *
 * One implementation of the wire format for everything in the repository
 * that frames or reads WebSocket frames: the channel layer's pre-framed
 * messages (channels/msg.c), the gateway's close frames, the `herald tail`
 * client (cli/) and the benchmark tools (bench/). Pure: unit tested
 * (tests/unit/common/ws_frame.c).
 */
#ifndef HR_WS_FRAME_H
#define HR_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define HR_WS_OP_CONT 0x0
#define HR_WS_OP_TEXT 0x1
#define HR_WS_OP_BINARY 0x2
#define HR_WS_OP_CLOSE 0x8
#define HR_WS_OP_PING 0x9
#define HR_WS_OP_PONG 0xA

/* Longest frame header: 2 bytes, a 64-bit length and a mask. A server's
 * (unmasked) header takes at most 10. */
#define HR_WS_HDR_MAX 14
/* A close frame: 2 header bytes, a 2-byte code and at most 123 bytes of
 * reason (control frames carry at most 125 bytes). */
#define HR_WS_CLOSE_MAX (2 + 125)

/* Writes the header of a final (FIN) frame with opcode and len payload
 * bytes into hdr (HR_WS_HDR_MAX bytes of room); with a mask (client to
 * server frames) the 4 mask bytes follow and the MASK bit is set. Returns
 * the header's length. */
size_t hr_ws_frame_header(unsigned char *hdr, int opcode, uint64_t len, const unsigned char *mask);

/* Writes an unmasked close frame with code and reason (cut to 123 bytes)
 * into p (HR_WS_CLOSE_MAX bytes of room). Returns the frame's length. */
size_t hr_ws_close_frame(unsigned char *p, int code, const char *reason);

/* A parsed frame header. */
typedef struct hr_ws_frame {
    int fin, opcode, masked;
    int rsv1;              /* compressed (permessage-deflate), when allowed */
    unsigned char mask[4]; /* when masked */
    uint64_t len;          /* payload length */
    size_t hdrlen;         /* bytes before the payload */
} hr_ws_frame;

/* Parses the frame header at p[0..n). Returns its length (f filled) when it
 * is complete, 0 when more bytes are needed, or -EPROTO when it is malformed:
 * RSV2/RSV3 set, RSV1 set unless rsv1_ok (permessage-deflate negotiated), or
 * a 64-bit length with the top bit set. The payload may still be incomplete:
 * check hdrlen + len against n. */
int hr_ws_frame_parse(const unsigned char *p, size_t n, hr_ws_frame *f, int rsv1_ok);

/* XORs p[0..n) with mask, starting at mask byte `phase` (in place). */
void hr_ws_mask(unsigned char *p, size_t n, const unsigned char mask[4], size_t phase);

#endif
