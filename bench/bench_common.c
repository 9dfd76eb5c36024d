/* bench_common.c - see bench_common.h. */
#include "bench_common.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

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

/*---- latency histogram -------------------------------------------------------*/

static size_t hist_index(uint64_t v)
{
    if (v < H_SUB)
        return (size_t)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 7;
    return (size_t)(shift + 1) * H_SUB + (size_t)((v >> shift) - H_SUB);
}

static double hist_value(size_t i) /* the middle of bucket i */
{
    if (i < H_SUB)
        return (double)i;
    size_t oct = i / H_SUB, off = i % H_SUB;
    double lo = (double)((H_SUB + off) << (oct - 1));
    return lo + (double)(1ull << (oct - 1)) / 2.0;
}

void hist_add(hist *h, uint64_t v)
{
    size_t i = hist_index(v);
    if (i >= H_BUCKETS)
        i = H_BUCKETS - 1;
    h->b[i]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

void hist_add_n(hist *h, size_t bucket, uint64_t count)
{
    if (bucket < H_BUCKETS)
        h->b[bucket] += count;
}

double hist_pct_ms(const hist *h, double p)
{
    if (!h->n)
        return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return (v > (double)h->max ? (double)h->max : v) / 1e6;
        }
    }
    return (double)h->max / 1e6;
}

/*---- JWT, JSON scanning --------------------------------------------------------*/

void jwt_hs256(char *out, size_t cap, const char *secret, const char *sub, long ttl)
{
    static const char head[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; /* {"alg":"HS256","typ":"JWT"} */
    char claims[256], b64[400];
    long now = (long)time(NULL);
    int n = snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%ld,\"iat\":%ld}", sub,
                     now + ttl, now);
    if (n < 0 || (size_t)n >= sizeof claims)
        n = (int)sizeof claims - 1;
    b64_encode((const uint8_t *)claims, (size_t)n, b64, 1);
    int m = snprintf(out, cap, "%s.%s", head, b64);
    if (m < 0 || (size_t)m >= cap)
        return;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)out, (size_t)m, mac, &maclen);
    char sig[64];
    b64_encode(mac, maclen, sig, 1);
    snprintf(out + m, cap - (size_t)m, ".%s", sig);
}

static const char *skip_blanks(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

const char *json_value(const char *p, const char *end, const char *qkey)
{
    size_t klen = strlen(qkey);
    for (const char *k = p; k < end && (k = memmem(k, (size_t)(end - k), qkey, klen)); k += klen) {
        const char *v = skip_blanks(k + klen, end);
        if (v < end && *v == ':')
            return skip_blanks(v + 1, end);
    }
    return NULL;
}

int json_uint(const char *p, const char *end, const char *qkey, uint64_t *out)
{
    const char *v = json_value(p, end, qkey);
    if (!v || v >= end || *v < '0' || *v > '9')
        return -1;
    uint64_t n = 0;
    while (v < end && *v >= '0' && *v <= '9')
        n = n * 10 + (uint64_t)(*v++ - '0');
    *out = n;
    return 0;
}

int json_str_is(const char *p, const char *end, const char *qkey, const char *want)
{
    const char *v = json_value(p, end, qkey);
    size_t n = strlen(want);
    return v && (size_t)(end - v) >= n && memcmp(v, want, n) == 0;
}

/*---- /proc --------------------------------------------------------------------*/

double proc_cpu_s(int pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}
