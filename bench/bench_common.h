/* bench_common.h - small pieces shared by herald-loadgen (both modes) and
 * herald-refserver: monotonic time, base64, the WebSocket accept key, a
 * latency histogram, HS256 JWTs, a JSON key scanner and /proc readers. No
 * I/O except set_nonblock() and the /proc readers. The byte buffer (hr_buf)
 * and WebSocket framing (hr_ws_frame_*) are Herald's own, from common/. */
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

/*---- latency histogram -------------------------------------------------------*/

/* Log-linear histogram of nanosecond values: 128 sub-buckets per power of
 * two, so any percentile is within 0.8% of the true value. */
#define H_SUB 128
#define H_BUCKETS (58 * H_SUB)
typedef struct hist {
    uint64_t n, max;
    double sum;
    uint64_t b[H_BUCKETS];
} hist;

void hist_add(hist *h, uint64_t v);
void hist_add_n(hist *h, size_t bucket, uint64_t count); /* merging: raw bucket counts */
double hist_pct_ms(const hist *h, double p);             /* nearest rank, in ms */

/*---- JWT, JSON scanning --------------------------------------------------------*/

/* Writes an HS256 JWT {"sub","exp","iat"} (exp = now + ttl) signed with
 * `secret` into out (512 bytes are enough for a sub of up to 100 bytes). */
void jwt_hs256(char *out, size_t cap, const char *secret, const char *sub, long ttl);

/* The value of key `qkey` (quotes included, e.g. "\"s\"") in [p, end): the
 * first occurrence followed by a colon, blanks allowed around it. NULL when
 * absent. A scan, not a parser: for the benchmarks' own payloads. */
const char *json_value(const char *p, const char *end, const char *qkey);
/* The unsigned integer value of qkey; -1 when absent or not a number. */
int json_uint(const char *p, const char *end, const char *qkey, uint64_t *out);
/* Whether the string value of qkey is `want` (quotes included). */
int json_str_is(const char *p, const char *end, const char *qkey, const char *want);

/*---- /proc --------------------------------------------------------------------*/

double proc_cpu_s(int pid); /* utime + stime of every thread, in seconds; -1 if unknown */
long proc_rss_kb(int pid);  /* VmRSS; -1 if unknown */

#endif
