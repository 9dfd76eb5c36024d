/* bench_common.c - see bench_common.h. */
#include "bench_common.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/sha.h>

/*---- byte buffer -----------------------------------------------------------*/

int bbuf_reserve(bbuf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    /* Reclaim consumed bytes before growing: buffers are used as FIFOs. */
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int bbuf_append(bbuf *b, const void *p, size_t n)
{
    if (bbuf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void bbuf_consume(bbuf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void bbuf_free(bbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/*---- time, misc ------------------------------------------------------------*/

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/*---- base64 ----------------------------------------------------------------*/

size_t b64_encode(const uint8_t *in, size_t n, char *out, int url)
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char urls[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *t = url ? urls : std;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = t[v >> 18];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = t[(v >> 6) & 63];
        out[o++] = t[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = t[v >> 18];
        out[o++] = t[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = t[(v >> 6) & 63];
        else if (!url)
            out[o++] = '=';
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/*---- WebSocket -------------------------------------------------------------*/

void ws_accept_key(const char *key, size_t keylen, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128];
    if (keylen > sizeof buf - sizeof guid)
        keylen = sizeof buf - sizeof guid;
    memcpy(buf, key, keylen);
    memcpy(buf + keylen, guid, sizeof guid - 1);
    uint8_t digest[SHA_DIGEST_LENGTH];
    SHA1((const uint8_t *)buf, keylen + sizeof guid - 1, digest);
    b64_encode(digest, sizeof digest, out, 0);
}

size_t ws_frame_header(uint8_t *hdr, int opcode, uint64_t len, const uint8_t *mask)
{
    size_t n = 0;
    uint8_t mbit = mask ? 0x80 : 0;
    hdr[n++] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        hdr[n++] = (uint8_t)(mbit | len);
    } else if (len <= 0xffff) {
        hdr[n++] = mbit | 126;
        hdr[n++] = (uint8_t)(len >> 8);
        hdr[n++] = (uint8_t)len;
    } else {
        hdr[n++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            hdr[n++] = (uint8_t)(len >> (8 * i));
    }
    if (mask) {
        memcpy(hdr + n, mask, 4);
        n += 4;
    }
    return n;
}

int ws_parse_header(const uint8_t *p, size_t n, ws_frame *f)
{
    return ws_parse_header_ext(p, n, f, 0);
}

int ws_parse_header_ext(const uint8_t *p, size_t n, ws_frame *f, int rsv1_ok)
{
    if (n < 2)
        return 0;
    if (p[0] & (rsv1_ok ? 0x30 : 0x70))
        return -1; /* RSV bits: no extension was negotiated (that uses them) */
    f->rsv1 = (p[0] & 0x40) != 0;
    f->fin = (p[0] & 0x80) != 0;
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
            return -1;
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
    return 1;
}

void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t phase)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(i + phase) & 3];
}

/*---- HTTP ------------------------------------------------------------------*/

const char *http_header(const char *p, const char *end, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && isspace((unsigned char)ve[-1]))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}
