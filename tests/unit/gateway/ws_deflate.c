/* Unit tests for permessage-deflate's pure parts (gateway/ws_deflate.c):
 * offer negotiation, the compressed frame, bounded inflation. zlib itself
 * is the reference on the other side. */
#include "gateway/ws_deflate.h"
#include "testing.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char tail4[4] = {0x00, 0x00, 0xff, 0xff};

/*---- zlib as the peer ------------------------------------------------------*/

/* What a client sends: raw deflate, sync flush, trailer removed. `keep`
 * (NULL: a fresh stream) is a stream kept across messages (context
 * takeover); finish ends the stream with a final block instead. */
static unsigned char *peer_deflate(z_stream *keep, const void *in, size_t len, size_t *out_len,
                                   int finish)
{
    z_stream fresh, *z = keep;
    if (!z) {
        memset(&fresh, 0, sizeof(fresh));
        deflateInit2(&fresh, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        z = &fresh;
    }
    size_t cap = deflateBound(z, (uLong)len) + 64;
    unsigned char *out = malloc(cap);
    z->next_in = (unsigned char *)in;
    z->avail_in = (uInt)len;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    deflate(z, finish ? Z_FINISH : Z_SYNC_FLUSH);
    *out_len = cap - z->avail_out;
    if (!finish && *out_len >= 4 && !memcmp(out + *out_len - 4, tail4, 4))
        *out_len -= 4;
    if (!keep)
        deflateEnd(z);
    return out;
}

/* What a client does with a frame's payload: append the trailer, inflate. */
static unsigned char *peer_inflate(const unsigned char *in, size_t len, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    inflateInit2(&z, -15);
    unsigned char *buf = malloc(len + 4);
    memcpy(buf, in, len);
    memcpy(buf + len, tail4, 4);
    size_t cap = 1 << 22;
    unsigned char *out = malloc(cap);
    z.next_in = buf;
    z.avail_in = (uInt)(len + 4);
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_SYNC_FLUSH);
    *out_len = rc == Z_OK || rc == Z_STREAM_END ? cap - z.avail_out : (size_t)-1;
    inflateEnd(&z);
    free(buf);
    return out;
}

/* Text that compresses to about half: random hex digits. */
static char *hex_text(size_t n, unsigned seed)
{
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        s[i] = "0123456789abcdef"[(seed >> 16) & 15];
    }
    return s;
}

/*---- Negotiation -----------------------------------------------------------*/

static int accepts(const char *offers, int offer, int bits)
{
    hr_pmd_params p = {0, 0};
    return hr_pmd_negotiate(offers, &p) == 1 && p.offer == offer && p.server_bits == bits;
}

static int refuses(const char *offers)
{
    hr_pmd_params p = {0, 0};
    return hr_pmd_negotiate(offers, &p) == 0;
}

static void test_negotiate(void)
{
    /* what browsers and python3-websockets send */
    CHECK(accepts("permessage-deflate", 1, 15));
    CHECK(accepts("permessage-deflate; client_max_window_bits", 1, 15));
    CHECK(accepts("permessage-deflate; client_max_window_bits=10; server_no_context_takeover; "
                  "client_no_context_takeover",
                  1, 15));
    CHECK(accepts("permessage-deflate;client_no_context_takeover", 1, 15));
    CHECK(accepts(" permessage-deflate ;  client_max_window_bits = 12 ", 1, 15));
    /* the client limits Herald's window */
    CHECK(accepts("permessage-deflate; server_max_window_bits=10", 1, 10));
    CHECK(accepts("permessage-deflate; server_max_window_bits=8", 1, 8));
    CHECK(accepts("permessage-deflate; server_max_window_bits=15", 1, 15));
    /* values RFC 7692 does not allow, parameters it does not know, repeats */
    CHECK(refuses("permessage-deflate; server_max_window_bits"));
    CHECK(refuses("permessage-deflate; server_max_window_bits=16"));
    CHECK(refuses("permessage-deflate; server_max_window_bits=7"));
    CHECK(refuses("permessage-deflate; server_max_window_bits=08"));
    CHECK(refuses("permessage-deflate; client_max_window_bits=9x"));
    CHECK(refuses("permessage-deflate; server_no_context_takeover=1"));
    CHECK(refuses("permessage-deflate; unknown"));
    CHECK(refuses("permessage-deflate; client_no_context_takeover; client_no_context_takeover"));
    CHECK(refuses("x-webkit-deflate-frame"));
    CHECK(refuses("Permessage-Deflate")); /* lws compares names exactly */
    /* other extensions around it; the first acceptable offer wins */
    CHECK(accepts("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits", 1, 15));
    CHECK(accepts("permessage-deflate; foo, permessage-deflate; server_max_window_bits=9", 2, 9));
    CHECK(accepts("permessage-deflate; client_max_window_bits, permessage-deflate", 1, 15));
    /* lws 4.1.6 would read on past a bare accepted offer and hang up at
     * the next one of the same name: no compression for such a header */
    CHECK(refuses("permessage-deflate, permessage-deflate; client_max_window_bits"));
    CHECK(accepts("permessage-deflate, x-other", 1, 15));
    /* what lws' tokenizer reads differently: quoted values, tabs */
    CHECK(refuses("permessage-deflate; client_max_window_bits=\"10\""));
    CHECK(refuses("permessage-deflate;\tclient_max_window_bits"));
    /* syntax errors */
    CHECK(refuses(""));
    CHECK(refuses(","));
    CHECK(refuses("permessage-deflate;"));
    CHECK(refuses("permessage-deflate; =1"));
    CHECK(refuses("permessage-deflate; client_max_window_bits="));
    CHECK(refuses("permessage-deflate client_max_window_bits"));
    CHECK(refuses("permessage-deflate,, x"));
}

static void test_response(void)
{
    char buf[128];
    hr_pmd_params p = {1, 15};
    CHECK(hr_pmd_response(&p, buf, sizeof(buf)) == strlen(buf));
    CHECK_STR(buf, "; server_no_context_takeover; client_no_context_takeover");
    p.server_bits = 10;
    hr_pmd_response(&p, buf, sizeof(buf));
    CHECK_STR(
        buf, "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10");
}

/*---- Outbound frames -------------------------------------------------------*/

/* Checks one compressed frame: FIN|RSV1|text, the length, and a payload
 * that a fresh inflater (the client's, with the trailer put back) turns
 * back into the text. */
static void check_frame(const chan_zframe *f, const char *text, size_t len, size_t hdr_len)
{
    const unsigned char *b = f->b;
    size_t plen = 0, hdr = 2, got;
    CHECK(f->len > 0);
    CHECK(b[0] == 0xc1);
    CHECK((b[1] & 0x80) == 0); /* servers do not mask */
    if ((b[1] & 0x7f) < 126) {
        plen = b[1] & 0x7f;
    } else if ((b[1] & 0x7f) == 126) {
        plen = (size_t)b[2] << 8 | b[3];
        hdr = 4;
    } else {
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | b[2 + i];
        hdr = 10;
    }
    CHECK(hdr == hdr_len);
    CHECK(hdr + plen == f->len);
    /* the smallest encoding of the length (RFC 6455 §5.2) */
    CHECK(hdr == 2 ? plen < 126 : hdr == 4 ? plen >= 126 && plen <= 0xffff : plen > 0xffff);
    unsigned char *out = peer_inflate(b + hdr, plen, &got);
    CHECK(got == len && !memcmp(out, text, len));
    free(out);
}

static void test_deflate_frames(void)
{
    hr_pmd_codec z;
    memset(&z, 0, sizeof(z));
    /* a chat message: 2-byte header */
    const char *chat =
        "{\"push\":\"message\",\"channel\":\"chat:1\",\"data\":{\"text\":\"hello hello "
        "hello hello hello hello hello hello hello hello hello hello\"}}";
    size_t clen = strlen(chat);
    chan_zframe *f = hr_pmd_deflate(&z, (const unsigned char *)chat, clen, clen + 2);
    check_frame(f, chat, clen, 2);
    CHECK(f->len < clen);
    free(f);
    /* 4- and 10-byte headers */
    char *t = hex_text(20000, 1);
    f = hr_pmd_deflate(&z, (const unsigned char *)t, 20000, 20000 + 4);
    check_frame(f, t, 20000, 4);
    free(f);
    free(t);
    t = hex_text(300000, 2);
    f = hr_pmd_deflate(&z, (const unsigned char *)t, 300000, 300000 + 10);
    check_frame(f, t, 300000, 10);
    free(f);
    free(t);
    /* every message stands alone (server_no_context_takeover): the second
     * of two identical messages inflates with a fresh stream */
    f = hr_pmd_deflate(&z, (const unsigned char *)chat, clen, clen + 2);
    check_frame(f, chat, clen, 2);
    free(f);
    /* incompressible, or too short to gain: len 0, the plain frame goes */
    unsigned char noise[600];
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < sizeof(noise); i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        noise[i] = (unsigned char)(x >> 32);
    }
    f = hr_pmd_deflate(&z, noise, sizeof(noise), sizeof(noise) + 4);
    CHECK(f->len == 0);
    free(f);
    f = hr_pmd_deflate(&z, (const unsigned char *)"{}", 2, 4);
    CHECK(f->len == 0);
    free(f);
    hr_pmd_codec_free(&z);
}

static void test_frame_choice(void)
{
    /* a client that limits Herald's window to 2^9 bytes gets compressed
     * frames of messages no longer than that (deflate then never reaches
     * further back) */
    hr_pmd_codec z;
    memset(&z, 0, sizeof(z));
    char *t = hex_text(600, 3);
    chan_msg *m = chan_msg_new(t, 600);
    CHECK(hr_pmd_frame(m, 15) == NULL); /* none made yet */
    hr_pmd_loop *p = hr_pmd_loop_new();
    hr_pmd_prepare(p, m, 1000); /* under the threshold: none made */
    CHECK(atomic_load(&m->zframe) == NULL);
    hr_pmd_prepare(p, m, 256);
    const chan_zframe *zf = hr_pmd_frame(m, 15);
    CHECK(zf != NULL);
    hr_pmd_prepare(p, m, 256); /* made once */
    CHECK(hr_pmd_frame(m, 15) == zf);
    CHECK(hr_pmd_frame(m, 10) == zf);  /* 600 <= 1024 */
    CHECK(hr_pmd_frame(m, 9) == NULL); /* 600 > 512 */
    chan_msg_unref(m);
    hr_pmd_loop_free(p);
    hr_pmd_codec_free(&z);
    free(t);
}

/*---- Inbound messages ------------------------------------------------------*/

static void test_inflate(void)
{
    hr_pmd_codec z;
    memset(&z, 0, sizeof(z));
    const unsigned char *out;
    size_t olen, clen;
    const char *msg =
        "{\"id\":1,\"op\":\"publish\",\"channel\":\"a\",\"data\":\"aaaaaaaaaaaaaaaa\"}";
    unsigned char *c = peer_deflate(NULL, msg, strlen(msg), &clen, 0);
    CHECK(hr_pmd_inflate(&z, c, clen, 65536, &out, &olen) == HR_PMD_OK);
    CHECK(olen == strlen(msg) && !memcmp(out, msg, olen));
    /* again: the stream is reset between messages */
    CHECK(hr_pmd_inflate(&z, c, clen, 65536, &out, &olen) == HR_PMD_OK);
    CHECK(olen == strlen(msg) && !memcmp(out, msg, olen));
    /* exactly max is fine, one byte less is not */
    CHECK(hr_pmd_inflate(&z, c, clen, strlen(msg), &out, &olen) == HR_PMD_OK);
    CHECK(hr_pmd_inflate(&z, c, clen, strlen(msg) - 1, &out, &olen) == HR_PMD_TOO_BIG);
    free(c);

    /* a final block (BFINAL) instead of a sync flush */
    c = peer_deflate(NULL, msg, strlen(msg), &clen, 1);
    CHECK(hr_pmd_inflate(&z, c, clen, 65536, &out, &olen) == HR_PMD_OK);
    CHECK(olen == strlen(msg) && !memcmp(out, msg, olen));
    free(c);

    /* the empty message, and no bytes at all */
    c = peer_deflate(NULL, "", 0, &clen, 0);
    CHECK(hr_pmd_inflate(&z, c, clen, 65536, &out, &olen) == HR_PMD_OK && olen == 0);
    free(c);
    CHECK(hr_pmd_inflate(&z, NULL, 0, 65536, &out, &olen) == HR_PMD_OK && olen == 0);

    /* not deflate */
    const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0x12, 0x34};
    CHECK(hr_pmd_inflate(&z, junk, sizeof(junk), 65536, &out, &olen) == HR_PMD_BAD);
    hr_pmd_codec_free(&z);
}

static void test_inflate_bomb(void)
{
    /* 64 MB of spaces compress to ~64 KB; inflating stops at max + 1 and
     * the codec never holds more than that */
    size_t n = 64u << 20, clen;
    char *spaces = malloc(n);
    memset(spaces, ' ', n);
    unsigned char *c = peer_deflate(NULL, spaces, n, &clen, 0);
    free(spaces);
    CHECK(clen < 100000);
    hr_pmd_codec z;
    memset(&z, 0, sizeof(z));
    const unsigned char *out;
    size_t olen;
    CHECK(hr_pmd_inflate(&z, c, clen, 65536, &out, &olen) == HR_PMD_TOO_BIG);
    CHECK(z.icap <= 65536 + 1);
    free(c);
    hr_pmd_codec_free(&z);
}

static void test_inflate_needs_no_context(void)
{
    /* Herald answers client_no_context_takeover and inflates every message
     * alone: a client that kept its context anyway (its second message
     * refers back into the first) is refused, never misread */
    z_stream keep;
    memset(&keep, 0, sizeof(keep));
    deflateInit2(&keep, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    const char *msg =
        "{\"id\":1,\"op\":\"publish\",\"channel\":\"room\",\"data\":\"the same words\"}";
    size_t l1, l2, olen;
    unsigned char *c1 = peer_deflate(&keep, msg, strlen(msg), &l1, 0);
    unsigned char *c2 = peer_deflate(&keep, msg, strlen(msg), &l2, 0);
    deflateEnd(&keep);
    CHECK(l2 < l1); /* it did refer back */
    hr_pmd_codec z;
    memset(&z, 0, sizeof(z));
    const unsigned char *out;
    CHECK(hr_pmd_inflate(&z, c1, l1, 65536, &out, &olen) == HR_PMD_OK);
    CHECK(hr_pmd_inflate(&z, c2, l2, 65536, &out, &olen) == HR_PMD_BAD);
    free(c1);
    free(c2);
    hr_pmd_codec_free(&z);
}

int main(void)
{
    RUN(test_negotiate);
    RUN(test_response);
    RUN(test_deflate_frames);
    RUN(test_frame_choice);
    RUN(test_inflate);
    RUN(test_inflate_bomb);
    RUN(test_inflate_needs_no_context);
    return TEST_DONE();
}
