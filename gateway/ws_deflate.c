/*
 * ws_deflate.c - permessage-deflate (RFC 7692), compressed once per message
 * (see ws_deflate.h for the design).
 *
 * How it sits on libwebsockets 4.1.6. lws accepts a WebSocket frame with
 * RSV1 set only when an extension is active on the connection (else it
 * fails it with 1002, "rsv bits"), and an extension becomes active only
 * through its own handshake code, which calls the extension's CONSTRUCT for
 * each offer of that name and echoes only the parameters the client itself
 * offered. lws' built-in permessage-deflate is no use to Herald: it
 * allocates ~300 bytes per connection at the handshake and, once a client
 * sends a compressed message, an inflate state (~7 KB + a 32 KB window) and
 * a 1 KB buffer that it keeps, inflates without any bound (a decompression
 * bomb is inflated to the end, 1 KB per RECEIVE callback), and reads
 * server_no_context_takeover as if it applied to the client's compressor.
 * So Herald registers its own extension under the same name:
 *
 *  - CONSTRUCT parses the offer itself (hr_pmd_negotiate), allocates
 *    nothing, and gives lws an empty option table, so lws writes just
 *    "Sec-WebSocket-Extensions: permessage-deflate"; ADD_HEADERS, which lws
 *    calls right after that line, appends Herald's parameters to it.
 *  - PAYLOAD_RX holds back the bytes of a compressed message until it ends,
 *    then inflates it whole with the loop's inflate stream, into at most
 *    max_message + 1 bytes, and hands lws the text as if it had arrived
 *    uncompressed: lws checks its UTF-8 and ws.c receives one complete
 *    message. Plain messages pass through untouched (see pmd_payload_rx).
 *  - Herald never writes data frames through lws_write (its frames leave
 *    pre-built, see ws.c), so lws' compression side (PAYLOAD_TX) never runs.
 *
 * PAYLOAD_RX's argument and return codes are lws internals (not in its
 * public headers): they are mirrored below for 4.1.6, the version Debian 12
 * ships, and the integration tests exercise them.
 */
#include "gateway/ws_deflate.h"
#include "common/log.h"
#include "gateway/wsi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The WebSocket connections' side (hr_pmd_extensions): set once at start,
 * before any loop runs; read-only afterwards. */
static const hr_pmd_host *pmd_host;

/* Herald's deflate: zlib's default level (the cost is paid once per
 * message, not per subscriber), a 32 KB window, the default memory level. */
#define HR_PMD_LEVEL Z_DEFAULT_COMPRESSION
#define HR_PMD_MEM_LEVEL 8

static const unsigned char trailer[4] = {0x00, 0x00, 0xff, 0xff};

/*---- Negotiation -----------------------------------------------------------*/

static int tchar(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", c);
}

static const char *ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* A token at s: its length (0 if none). */
static size_t token_len(const char *s)
{
    size_t n = 0;
    while (tchar((unsigned char)s[n]))
        n++;
    return n;
}

/* A window-bits value: "8".."15" (RFC 7692 §7.1.2: no leading zeros). */
static int window_bits(const char *v, size_t n)
{
    if (n == 1 && (v[0] == '8' || v[0] == '9'))
        return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + v[1] - '0';
    return 0;
}

typedef struct offer {
    int is_pmd;      /* named permessage-deflate */
    int nparams;     /* parameters given */
    int acceptable;  /* every parameter known, valid and given once */
    int server_bits; /* server_max_window_bits, 15 if absent */
} offer;

/* Parses one extension offer at *sp (up to ',' or the end) and moves *sp
 * past it. Returns -1 on a syntax error (the whole header is refused). */
static int parse_offer(const char **sp, offer *o)
{
    const char *s = ows(*sp);
    size_t n = token_len(s);
    unsigned seen = 0;
    if (n == 0)
        return -1;
    *o = (offer){n == 18 && !strncmp(s, "permessage-deflate", 18), 0, 1, 15};
    s = ows(s + n);
    while (*s == ';') {
        const char *name = ows(s + 1), *val = NULL;
        size_t nlen = token_len(name), vlen = 0;
        if (nlen == 0)
            return -1;
        s = ows(name + nlen);
        if (*s == '=') {
            val = ows(s + 1);
            vlen = token_len(val);
            if (vlen == 0)
                return -1; /* quoted strings never reach here: see hr_pmd_negotiate */
            s = ows(val + vlen);
        }
        o->nparams++;
        unsigned bit = 0;
        if (nlen == 26 && !strncmp(name, "server_no_context_takeover", 26) && !val) {
            bit = 1;
        } else if (nlen == 26 && !strncmp(name, "client_no_context_takeover", 26) && !val) {
            bit = 2;
        } else if (nlen == 22 && !strncmp(name, "server_max_window_bits", 22) && val &&
                   window_bits(val, vlen)) {
            bit = 4;
            o->server_bits = window_bits(val, vlen);
        } else if (nlen == 22 && !strncmp(name, "client_max_window_bits", 22) &&
                   (!val || window_bits(val, vlen))) {
            bit = 8; /* Herald's inflater takes any window: nothing to answer */
        }
        if (!bit || (seen & bit))
            o->acceptable = 0;
        seen |= bit;
    }
    if (*s != ',' && *s != '\0')
        return -1;
    *sp = *s == ',' ? s + 1 : s;
    return 0;
}

/* Matches lws 4.1.6's handshake (server-ws.c, lws_extension_server_handshake):
 * it calls CONSTRUCT for each offer named permessage-deflate, in order,
 * until one is accepted; it stops reading the header after an accepted
 * offer that has parameters, but reads on after one that has none and then
 * hangs up without an answer ("ext mentioned twice") at a later offer of the
 * same name - so such a header gets no compression. Its tokenizer also splits
 * names at tabs and knows no quoted strings: a header with either gets none
 * either (no client has been seen to send them). */
int hr_pmd_negotiate(const char *offers, hr_pmd_params *p)
{
    const char *s = offers;
    int index = 0, chosen = 0, chosen_bare = 0, later_pmd = 0;
    offer o;

    if (strchr(offers, '"') || strchr(offers, '\t'))
        return 0;
    while (*ows(s)) {
        if (parse_offer(&s, &o) < 0)
            return 0;
        if (!o.is_pmd)
            continue;
        index++;
        if (chosen) {
            later_pmd = 1;
        } else if (o.acceptable) {
            chosen = index;
            chosen_bare = o.nparams == 0;
            p->offer = index;
            p->server_bits = o.server_bits;
        }
    }
    return chosen && !(chosen_bare && later_pmd);
}

size_t hr_pmd_response(const hr_pmd_params *p, char *buf, size_t len)
{
    int n = p->server_bits < 15
                ? snprintf(buf, len,
                           "; server_no_context_takeover; client_no_context_takeover"
                           "; server_max_window_bits=%d",
                           p->server_bits)
                : snprintf(buf, len, "; server_no_context_takeover; client_no_context_takeover");
    return n < 0 ? 0 : (size_t)n;
}

/*---- Compression -----------------------------------------------------------*/

void hr_pmd_codec_free(hr_pmd_codec *z)
{
    if (z->def_ready)
        deflateEnd(&z->def);
    if (z->inf_ready)
        inflateEnd(&z->inf);
    free(z->dbuf);
    free(z->ibuf);
    memset(z, 0, sizeof(*z));
}

/* zlib allocation failures follow common.h's policy: abort. */
static void zcheck(int rc)
{
    if (rc != Z_OK)
        abort();
}

chan_zframe *hr_pmd_deflate(hr_pmd_codec *z, const unsigned char *payload, size_t len,
                            size_t plain_len)
{
    if (!z->def_ready) {
        zcheck(deflateInit2(&z->def, HR_PMD_LEVEL, Z_DEFLATED, -15, HR_PMD_MEM_LEVEL,
                            Z_DEFAULT_STRATEGY));
        z->def_ready = 1;
    } else {
        zcheck(deflateReset(&z->def)); /* no context takeover: every message alone */
    }
    /* deflateBound holds for Z_FINISH; a sync flush adds an empty stored
     * block, and the loop below grows the buffer should that not suffice */
    size_t need = deflateBound(&z->def, (uLong)len) + 16;
    if (z->dcap < need) {
        free(z->dbuf);
        z->dcap = need;
        z->dbuf = hr_malloc(z->dcap);
    }
    size_t used = 0;
    z->def.next_in = (unsigned char *)payload;
    z->def.avail_in = (uInt)len;
    for (;;) {
        z->def.next_out = z->dbuf + used;
        z->def.avail_out = (uInt)(z->dcap - used);
        int rc = deflate(&z->def, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            abort(); /* Z_STREAM_ERROR: a bug, not input */
        used = z->dcap - z->def.avail_out;
        if (z->def.avail_in == 0 && z->def.avail_out > 0)
            break; /* all input taken and flushed */
        z->dcap *= 2;
        z->dbuf = hr_realloc(z->dbuf, z->dcap);
    }
    /* RFC 7692 §7.2.1: the flush ends with 00 00 ff ff, which is not sent */
    if (used < 4 || memcmp(z->dbuf + used - 4, trailer, 4) != 0)
        abort();
    used -= 4;

    size_t hdr = used < 126 ? 2 : used <= 0xffff ? 4 : 10;
    if (hdr + used >= plain_len) {
        chan_zframe *none = hr_malloc(sizeof(*none));
        none->len = 0;
        return none;
    }
    chan_zframe *f = hr_malloc(sizeof(*f) + hdr + used);
    unsigned char *h = f->b;
    h[0] = 0xc1; /* FIN | RSV1 (compressed) | text */
    if (hdr == 2) {
        h[1] = (unsigned char)used;
    } else if (hdr == 4) {
        h[1] = 126;
        h[2] = (unsigned char)(used >> 8);
        h[3] = (unsigned char)used;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)used >> (56 - 8 * i));
    }
    memcpy(f->b + hdr, z->dbuf, used);
    f->len = hdr + used;
    return f;
}

/* Makes room for at least `want` output bytes (never more than cap_max). */
static void ibuf_grow(hr_pmd_codec *z, size_t want, size_t cap_max)
{
    size_t ncap = z->icap ? z->icap : 4096;
    while (ncap < want)
        ncap *= 2;
    if (ncap > cap_max)
        ncap = cap_max;
    if (ncap > z->icap) {
        z->ibuf = hr_realloc(z->ibuf, ncap);
        z->icap = ncap;
    }
}

hr_pmd_status hr_pmd_inflate(hr_pmd_codec *z, const unsigned char *in, size_t len, size_t max,
                             const unsigned char **out, size_t *outlen)
{
    size_t cap_max = max + 1, produced = 0;
    int trailer_fed = 0;

    hr_pmd_trim(z); /* the last message's output is no longer needed */
    if (!z->inf_ready) {
        zcheck(inflateInit2(&z->inf, -15)); /* any client window (8-15) */
        z->inf_ready = 1;
    } else {
        zcheck(inflateReset(&z->inf)); /* the client keeps no context either */
    }
    ibuf_grow(z, len * 2 < cap_max ? len * 2 : cap_max, cap_max);
    z->inf.next_in = (unsigned char *)in;
    z->inf.avail_in = (uInt)len;
    for (;;) {
        if (produced == z->icap) {
            if (z->icap >= cap_max)
                return HR_PMD_TOO_BIG; /* max + 1 bytes: over the limit, stop here */
            ibuf_grow(z, z->icap * 2, cap_max);
        }
        z->inf.next_out = z->ibuf + produced;
        z->inf.avail_out = (uInt)(z->icap - produced);
        int rc = inflate(&z->inf, Z_SYNC_FLUSH);
        produced = z->icap - z->inf.avail_out;
        if (produced > max)
            return HR_PMD_TOO_BIG;
        if (rc == Z_STREAM_END)
            break; /* a final block (BFINAL): nothing after it counts */
        if ((rc != Z_OK && rc != Z_BUF_ERROR) ||
            (rc == Z_BUF_ERROR && z->inf.avail_in > 0 && z->inf.avail_out > 0))
            return HR_PMD_BAD;
        if (z->inf.avail_in == 0 && z->inf.avail_out > 0) {
            if (trailer_fed)
                break;
            /* RFC 7692 §7.2.2: append the 00 00 ff ff the sender removed */
            z->inf.next_in = (unsigned char *)trailer;
            z->inf.avail_in = sizeof(trailer);
            trailer_fed = 1;
        }
    }
    *out = z->ibuf;
    *outlen = produced;
    return HR_PMD_OK;
}

void hr_pmd_trim(hr_pmd_codec *z)
{
    if (z->icap > HR_PMD_KEEP) {
        free(z->ibuf);
        z->ibuf = NULL;
        z->icap = 0;
    }
}

/*---- The lws extension -----------------------------------------------------*/

/* lws 4.1.6 internals for LWS_EXT_CB_PAYLOAD_RX (struct
 * lws_ext_pm_deflate_rx_ebufs in lib/roles/ws/private-lib-roles-ws.h, enum
 * pmd_return in lib/core-net/private-lib-core-net.h). */
typedef struct lws_ebufs {
    struct lws_tokens eb_in;  /* the payload chunk lws received */
    struct lws_tokens eb_out; /* what lws validates and hands to RECEIVE */
} lws_ebufs;
enum {
    LWS_PMDR_UNKNOWN = 0,        /* as if there were no extension: the input is delivered */
    LWS_PMDR_EMPTY_NONFINAL = 3, /* input used, nothing to deliver (yet) */
    LWS_PMDR_EMPTY_FINAL = 4,    /* the message ends with eb_out (which may be empty) */
};

/* Does the text end inside a UTF-8 sequence? lws checks the rest of an
 * output incrementally but makes this last check only for return codes
 * that do not fit ours. */
static int utf8_cut(const unsigned char *s, size_t n)
{
    size_t i = n, cont = 0;
    while (i > 0 && cont < 3 && (s[i - 1] & 0xc0) == 0x80)
        i--, cont++;
    if (i == 0)
        return cont > 0;
    unsigned c = s[i - 1];
    size_t need = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    return cont < need;
}

/* Where a connection is in its inbound messages (hr_pmd_conn.state). */
enum { RX_IDLE, RX_PLAIN, RX_DEFLATED, RX_DISCARD };
/* hr_pmd_conn.flags */
#define RX_FRAME_DONE 1 /* the last call used up a compressed frame's payload */
#define RX_HAS_MSG 2    /* the loop's msgs map holds this connection's bytes */

/* A compressed message that needs more than one call: its bytes so far. */
typedef struct pmd_msg {
    hr_buf z;
    const unsigned char *ubuf; /* where lws' own receive buffer holds payload */
} pmd_msg;

static void pmd_msg_free(void *p)
{
    pmd_msg *m = p;
    hr_buf_reset(&m->z);
    free(m);
}

hr_pmd_loop *hr_pmd_loop_new(void)
{
    hr_pmd_loop *p = hr_calloc(1, sizeof(*p));
    p->msgs = hr_map_new(pmd_msg_free);
    return p;
}

void hr_pmd_loop_free(hr_pmd_loop *p)
{
    if (!p)
        return;
    hr_map_free(p->msgs);
    hr_pmd_codec_free(&p->codec);
    free(p);
}

static pmd_msg *msg_get(hr_pmd_loop *p, hr_pmd_conn *pc, struct lws *wsi)
{
    pmd_msg *m = pc->flags & RX_HAS_MSG ? hr_map_get(p->msgs, (char *)&wsi, sizeof(wsi)) : NULL;
    if (!m && (pc->flags & RX_HAS_MSG))
        pc->flags &= (uint8_t)~RX_HAS_MSG;
    return m;
}

static pmd_msg *msg_make(hr_pmd_loop *p, hr_pmd_conn *pc, struct lws *wsi)
{
    pmd_msg *m = msg_get(p, pc, wsi);
    if (!m) {
        m = hr_calloc(1, sizeof(*m));
        hr_map_put(p->msgs, (char *)&wsi, sizeof(wsi), m);
        pc->flags |= RX_HAS_MSG;
    }
    return m;
}

void hr_pmd_conn_clear(hr_pmd_loop *p, hr_pmd_conn *pc, struct lws *wsi)
{
    if (p && (pc->flags & RX_HAS_MSG)) {
        pmd_msg *m = hr_map_del(p->msgs, (char *)&wsi, sizeof(wsi));
        if (m)
            pmd_msg_free(m);
    }
    pc->flags &= (uint8_t)~RX_HAS_MSG;
    pc->state = RX_IDLE;
}

/* The value of the request's Sec-WebSocket-Extensions (lws 4.1.6 hangs up
 * on one of 255 bytes or more before calling us, see ws.c). */
static int offers_of(struct lws *wsi, char *buf, size_t len)
{
    return lws_hdr_copy(wsi, buf, (int)len, WSI_TOKEN_EXTENSIONS) > 0 ? 0 : -1;
}

static int pmd_construct(struct lws *wsi, void *user, void *in)
{
    static const struct lws_ext_options no_options[] = {{NULL, EXTARG_NONE}};
    hr_wsi_state *st = hr_wsi_state_get(wsi);
    hr_pmd_params p;
    char offers[256];

    /* lws calls us once per offer named permessage-deflate until we accept */
    st->pmd_calls++;
    if (offers_of(wsi, offers, sizeof(offers)) < 0 || !hr_pmd_negotiate(offers, &p) ||
        p.offer != st->pmd_calls)
        return 1; /* not this one: lws goes on without the extension */
    st->pmd_bits = (uint8_t)p.server_bits;
    *(void **)user = NULL;                             /* no per-connection state */
    *(const struct lws_ext_options **)in = no_options; /* lws echoes nothing */
    return 0;
}

/* Nothing for lws to deliver now. */
static int swallow(lws_ebufs *eb)
{
    eb->eb_out.token = eb->eb_in.token;
    eb->eb_out.len = 0;
    eb->eb_in.len = 0;
    return LWS_PMDR_EMPTY_NONFINAL;
}

/* The connection closes with code (ws.c); the rest of the message is
 * dropped as it arrives. */
static int fail(hr_pmd_loop *p, hr_pmd_conn *pc, struct lws *wsi, int final, int code,
                const char *why, lws_ebufs *eb)
{
    hr_pmd_conn_clear(p, pc, wsi);
    pc->state = final ? RX_IDLE : RX_DISCARD;
    pmd_host->fail(wsi, code, why);
    return swallow(eb);
}

/* lws 4.1.6 hands a message's payload to PAYLOAD_RX in two ways
 * (lib/roles/ws/server-ws.c, ops-ws.c): payload bytes in bulk, straight from
 * the socket's read buffer (eb_in.len > 0; RECEIVE follows only when we
 * produce output, or for an empty output marked EMPTY_FINAL at the end of
 * the message), and through its byte-wise parser (lws' own receive buffer),
 * which makes one call with no payload when a frame's payload is used up
 * after a bulk call (then without any RECEIVE), one for a frame without
 * payload, and one for a PONG with its payload (then RECEIVE_PONG).
 *
 * A compressed message's bytes are held back until its last frame ends;
 * then it is inflated whole - straight from lws' buffer when it came in one
 * call, the usual case - into at most max_message + 1 bytes and handed to
 * lws as the output, which lws checks as UTF-8 and delivers to RECEIVE as
 * one complete message. Messages without RSV1 pass through untouched. */
static int pmd_payload_rx(struct lws *wsi, lws_ebufs *eb)
{
    hr_pmd_conn *pc = pmd_host->conn(wsi);
    hr_pmd_loop *p = pmd_host->loop(wsi);
    const unsigned char *in = eb->eb_in.token;
    size_t len = eb->eb_in.len > 0 ? (size_t)eb->eb_in.len : 0;
    size_t max = pmd_host->max_message;
    int bulk = len > 0; /* else the byte-wise parser's call */

    if (!pc)
        return swallow(eb); /* closing: what arrives now is ignored (ws.c) anyway */
    if (!pc->bits || !p)
        return LWS_PMDR_UNKNOWN;
    pmd_msg *m = msg_get(p, pc, wsi);
    if (m && len == 0)
        m->ubuf = in; /* only the byte-wise parser calls with no payload */
    if (len == 0 && (pc->flags & RX_FRAME_DONE)) {
        /* the call that follows a compressed frame's last bulk call */
        pc->flags &= (uint8_t)~RX_FRAME_DONE;
        hr_pmd_trim(&p->codec);
        return LWS_PMDR_UNKNOWN;
    }
    pc->flags &= (uint8_t)~RX_FRAME_DONE;
    if (pc->state == RX_DEFLATED && m && bulk && in == m->ubuf)
        return LWS_PMDR_UNKNOWN; /* a PONG between a message's frames: lws' business */

    int final = lws_is_final_fragment(wsi);
    if (pc->state == RX_IDLE) /* RSV1 on a message's first frame marks it compressed */
        pc->state = (lws_get_reserved_bits(wsi) & 0x40) ? RX_DEFLATED : RX_PLAIN;
    if (pc->state == RX_PLAIN) {
        if (final)
            pc->state = RX_IDLE;
        return LWS_PMDR_UNKNOWN;
    }
    if (pc->state == RX_DISCARD) { /* after a failure, until the message ends */
        if (final)
            pc->state = RX_IDLE;
        return swallow(eb);
    }

    /* RX_DEFLATED */
    if (bulk && lws_remaining_packet_payload(wsi) == 0)
        pc->flags |= RX_FRAME_DONE;
    size_t have = m ? m->z.len : 0;
    if (have + len + lws_remaining_packet_payload(wsi) > hr_pmd_max_compressed(max))
        return fail(p, pc, wsi, final, 1009, "message too big", eb);
    if (!final || m) {
        m = msg_make(p, pc, wsi);
        if (len == 0)
            m->ubuf = in;
        else
            hr_buf_append(&m->z, in, len);
        if (!final)
            return swallow(eb);
        in = (const unsigned char *)m->z.data;
        len = m->z.len;
    }

    const unsigned char *text;
    size_t tlen;
    hr_pmd_status st = hr_pmd_inflate(&p->codec, in, len, max, &text, &tlen);
    hr_pmd_conn_clear(p, pc, wsi); /* in (if it was ours) is no longer read */
    if (st == HR_PMD_TOO_BIG)
        return fail(p, pc, wsi, 1, 1009, "message too big", eb);
    if (st == HR_PMD_BAD)
        return fail(p, pc, wsi, 1, 1007, "invalid compressed data", eb);
    if (!lws_frame_is_binary(wsi) && utf8_cut(text, tlen)) /* binary: ws.c closes 1003 */
        return fail(p, pc, wsi, 1, 1007, "invalid UTF-8", eb);
    /* EMPTY_FINAL: lws checks the text's UTF-8 and hands it to RECEIVE
     * (an empty one too) as the whole message */
    eb->eb_out.token = (unsigned char *)text;
    eb->eb_out.len = (int)tlen;
    eb->eb_in.len = 0;
    return LWS_PMDR_EMPTY_FINAL;
}

static int pmd_callback(struct lws_context *context, const struct lws_extension *ext,
                        struct lws *wsi, enum lws_extension_callback_reasons reason, void *user,
                        void *in, size_t len)
{
    (void)context;
    (void)ext;
    (void)len;
    switch (reason) {
    case LWS_EXT_CB_CONSTRUCT:
        return pmd_construct(wsi, user, in);
    case LWS_EXT_CB_PAYLOAD_RX:
        return pmd_payload_rx(wsi, in);
    default:
        return 0; /* no state to set up or free; Herald never sends through lws */
    }
}

const struct lws_extension *hr_pmd_extensions(const hr_pmd_host *host)
{
    static const struct lws_extension exts[] = {
        {"permessage-deflate", pmd_callback, NULL},
        {NULL, NULL, NULL},
    };
    pmd_host = host;
    return exts;
}

/* lws 4.1.6 (handshake_0405) writes "\r\nSec-WebSocket-Extensions:
 * permessage-deflate" for the accepted extension, then "\r\n", then calls
 * ADD_HEADERS with args->p right after that: step back over the "\r\n" and
 * finish the line with Herald's parameters. */
int hr_pmd_add_headers(struct lws *wsi, struct lws_process_html_args *args)
{
    static const char line[] = "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n";
    const size_t n = sizeof(line) - 1;
    hr_wsi_state *st = lws_get_opaque_user_data(wsi);
    hr_pmd_params p = {0, 0};
    char params[128];

    if (!st || !st->pmd_bits)
        return 0;
    p.server_bits = st->pmd_bits;
    size_t plen = hr_pmd_response(&p, params, sizeof(params));
    if (strncmp(args->p - n, line, n) != 0 || plen > (size_t)args->max_len) {
        hr_error("websocket", "permessage-deflate: the handshake response is not what "
                              "libwebsockets 4.1.6 writes; refusing the upgrade");
        return -1;
    }
    args->p -= 2;
    memcpy(args->p, params, plen);
    memcpy(args->p + plen, "\r\n", 2);
    args->p += plen + 2;
    args->max_len -= (int)plen;
    return 0;
}

/*---- Per message -----------------------------------------------------------*/

int hr_pmd_prepare(hr_pmd_loop *p, chan_msg *m, size_t min)
{
    size_t plain;
    if (m->len < min || atomic_load_explicit(&m->zframe, memory_order_acquire))
        return 0;
    chan_msg_frame(m, &plain);
    chan_zframe *z =
        hr_pmd_deflate(&p->codec, (const unsigned char *)chan_msg_payload(m), m->len, plain);
    chan_zframe *expected = NULL;
    /* another loop may have made it meanwhile: keep theirs */
    if (!atomic_compare_exchange_strong_explicit(&m->zframe, &expected, z, memory_order_acq_rel,
                                                 memory_order_acquire))
        free(z);
    return 1;
}
