/*
 * hash.c - SipHash-2-4 and the process's hash key (see common.h, "Hashing").
 *
 * Written from the description in J.-P. Aumasson and D. J. Bernstein,
 * "SipHash: a fast short-input PRF" (2012). hr_map used unkeyed FNV-1a, and
 * map keys are chosen by clients (channel names, ids): anyone can compute
 * FNV collisions offline, fill one probe chain and turn every lookup into a
 * linear scan. With a secret per-process key the attacker cannot predict
 * where a key lands. 2-4 rather than Redis' 1-3: it is the variant the paper
 * analyses and gives vectors for, and keys here are short, so the extra
 * compression round costs little.
 */
#include "common/common.h"
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

/* The paper's SipRound: two ARX half-rounds over the four state words. */
#define SIPROUND(v0, v1, v2, v3)                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* SipHash reads keys and message words little-endian whatever the host. */
static uint64_t load_le64(const unsigned char *p)
{
    uint64_t w = 0;
    for (int i = 7; i >= 0; i--)
        w = w << 8 | p[i];
    return w;
}

uint64_t hr_siphash24(const unsigned char key[16], const void *p, size_t n)
{
    const unsigned char *m = p;
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    /* "somepseudorandomlygeneratedbytes", as the paper initialises. */
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
    uint64_t v3 = k1 ^ 0x7465646279746573ULL;

    /* Compression: c = 2 rounds per 8-byte word. */
    size_t full = n & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t w = load_le64(m + i);
        v3 ^= w;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        v0 ^= w;
    }
    /* The last word: the 0-7 remaining bytes, little-endian, with the
     * message length mod 256 in the top byte, so messages differing only in
     * trailing zero bytes hash differently. */
    uint64_t last = (uint64_t)(n & 0xff) << 56;
    for (size_t i = 0; i < (n & 7); i++)
        last |= (uint64_t)m[full + i] << (8 * i);
    v3 ^= last;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    v0 ^= last;

    /* Finalisation: d = 4 rounds. */
    v2 ^= 0xff;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

/*---- The process key -------------------------------------------------------*/

/* Written once under pthread_once and read-only afterwards. pthread_once
 * makes the write visible to every thread that passes through it, and
 * hr_hash passes through it on every call, so no reader can see a partly
 * written key, whichever thread created the first map. */
static unsigned char process_key[16];
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

static void process_key_init(void)
{
    hr_random_bytes(process_key, sizeof(process_key));
}

/* flags 0: the urandom pool, blocking only until it is first seeded (early
 * boot), never later. */
void hr_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* a fixed fallback would silently bring predictable keys, ids and
             * tokens; there is no caller that could do better */
            hr_fatal("random", "getrandom failed (%s)", r < 0 ? strerror(errno) : "no bytes");
        }
        got += (size_t)r;
    }
}

void hr_random_hex(char *out, size_t nbytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[64];
    while (nbytes) {
        size_t k = nbytes < sizeof(raw) ? nbytes : sizeof(raw);
        hr_random_bytes(raw, k);
        for (size_t i = 0; i < k; i++) {
            *out++ = digits[raw[i] >> 4];
            *out++ = digits[raw[i] & 15];
        }
        nbytes -= k;
    }
    *out = '\0';
}

uint64_t hr_hash(const void *p, size_t n)
{
    pthread_once(&process_key_once, process_key_init);
    return hr_siphash24(process_key, p, n);
}
