/* bench_common.h - small pieces shared by herald-loadgen and herald-refserver:
 * monotonic time, base64, the WebSocket accept key, an HTTP header lookup.
 * No I/O except set_nonblock(). The byte buffer (hr_buf) and WebSocket
 * framing (hr_ws_frame_*) are Herald's own, from common/. */
#ifndef HERALD_BENCH_COMMON_H
#define HERALD_BENCH_COMMON_H

#include "common/common.h"
#include "common/ws_frame.h"

#include <stddef.h>
#include <stdint.h>

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

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA1(key + GUID)).
 * out gets 28 characters and a NUL. */
void ws_accept_key(const char *key, size_t keylen, char out[29]);

/*---- tiny HTTP helpers -----------------------------------------------------*/

/* The value of header `name` (case-insensitive) in the header block
 * [p, end), with its length in *vlen; NULL when absent. */
const char *http_header(const char *p, const char *end, const char *name, size_t *vlen);

#endif
