/* bench_common.h - small pieces shared by herald-loadgen and herald-refserver:
 * a growable byte buffer, monotonic time, base64, WebSocket framing helpers.
 * No I/O except set_nonblock(). */
#ifndef HERALD_BENCH_COMMON_H
#define HERALD_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>

/*---- byte buffer -----------------------------------------------------------*/

/* Bytes [off, len) are pending; [0, off) were consumed. Memory is allocated
 * lazily, so an idle connection with empty buffers costs nothing. */
typedef struct bbuf {
    char *data;
    size_t off, len, cap;
} bbuf;

int bbuf_reserve(bbuf *b, size_t extra); /* room for `extra` more bytes; -1 on OOM */
int bbuf_append(bbuf *b, const void *p, size_t n);
void bbuf_consume(bbuf *b, size_t n); /* drops n pending bytes; resets when empty */
void bbuf_free(bbuf *b);
static inline size_t bbuf_pending(const bbuf *b)
{
    return b->len - b->off;
}
static inline char *bbuf_head(const bbuf *b)
{
    return b->data + b->off;
}

/*---- time, misc ------------------------------------------------------------*/

uint64_t now_ns(void); /* CLOCK_MONOTONIC, shared by every process on the host */
int set_nonblock(int fd);

/* xorshift64*: fast, non-cryptographic (masks, WebSocket keys). */
uint64_t rng_next(uint64_t *state);

/*---- base64 ----------------------------------------------------------------*/

/* Writes the encoding of in[0..n) plus a NUL; url = base64url without padding
 * (JWT), else standard with padding. Returns the length written. `out` must
 * hold 4 * ((n + 2) / 3) + 1 bytes. */
size_t b64_encode(const uint8_t *in, size_t n, char *out, int url);

/*---- WebSocket (RFC 6455) --------------------------------------------------*/

#define WS_OP_CONT 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA
#define WS_MAX_HEADER 14

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA1(key + GUID)).
 * out gets 28 characters and a NUL. */
void ws_accept_key(const char *key, size_t keylen, char out[29]);

/* Writes a FIN frame header for `len` payload bytes into hdr; with a mask
 * (client to server) the 4 mask bytes follow. Returns the header length. */
size_t ws_frame_header(uint8_t *hdr, int opcode, uint64_t len, const uint8_t *mask);

typedef struct ws_frame {
    int fin, opcode, masked;
    int rsv1; /* compressed (permessage-deflate), when allowed */
    uint8_t mask[4];
    uint64_t len;  /* payload length */
    size_t hdrlen; /* bytes before the payload */
} ws_frame;

/* Parses a frame header at p[0..n): 1 when complete (f filled), 0 when more
 * bytes are needed, -1 when malformed (reserved bits, 64-bit length with the
 * top bit set). The payload may still be incomplete: check hdrlen + len. */
int ws_parse_header(const uint8_t *p, size_t n, ws_frame *f);
/* The same, accepting RSV1 (f->rsv1) when permessage-deflate was
 * negotiated (rsv1_ok); RSV2 and RSV3 are still malformed. */
int ws_parse_header_ext(const uint8_t *p, size_t n, ws_frame *f, int rsv1_ok);

/* XORs p[0..n) with the mask, starting at mask byte `phase` (in place). */
void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t phase);

/*---- tiny HTTP helpers -----------------------------------------------------*/

/* The value of header `name` (case-insensitive) in the header block
 * [p, end), with its length in *vlen; NULL when absent. */
const char *http_header(const char *p, const char *end, const char *name, size_t *vlen);

#endif
