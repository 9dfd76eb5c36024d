/*
 * ws_deflate.h - permessage-deflate (RFC 7692) on Herald's WebSocket
 * connections, compressed once per message instead of once per connection.
 *
 * Outbound. Herald answers every offer it accepts with
 * server_no_context_takeover, so each message is compressed on its own
 * (raw deflate, Z_SYNC_FLUSH, the trailing 00 00 ff ff dropped) and the same
 * compressed frame serves every connection that negotiated the extension:
 * the first loop thread that needs it makes it and attaches it to the
 * chan_msg (compare and swap; a loser frees its copy). Connections without
 * the extension get the plain frame of the same message.
 *
 * Inbound. Herald also answers client_no_context_takeover (RFC 7692
 * §7.1.1.2 lets a server add it to any offer), so every client message is
 * compressed on its own too and one inflate state per loop thread serves
 * every connection: a connection keeps no compression state, and a message
 * is inflated whole, into at most max_message (+1) bytes, once all of it has
 * arrived. See README "libwebsockets 4.1.6 and library pitfalls" for how
 * this sits on lws' extension hooks.
 *
 * The pure functions (offer parsing, framing, bounded inflate) do no I/O
 * and are unit-tested and fuzzed; the rest runs on a loop thread.
 */
#ifndef HR_WS_DEFLATE_H
#define HR_WS_DEFLATE_H

#include "channels/channels.h"
#include "common/common.h"

#include <errno.h>
#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

/*---- Negotiation (pure) ----------------------------------------------------*/

/* What Herald accepted of a client's offer. */
typedef struct hr_pmd_params {
    int offer;       /* which permessage-deflate offer of the header (1 = the first) */
    int server_bits; /* the client's server_max_window_bits, 15 when not offered */
} hr_pmd_params;

/* Picks the first permessage-deflate offer in a Sec-WebSocket-Extensions
 * value that Herald can accept (RFC 7692 §7: known parameters, each once,
 * window bits 8-15) and fills p. Returns 1, or 0 when no offer can be
 * accepted (or lws 4.1.6 could not take the accepted one: see ws_deflate.c). */
int hr_pmd_negotiate(const char *offers, hr_pmd_params *p);
/* The response's parameters, to follow "permessage-deflate" in the
 * Sec-WebSocket-Extensions response: "; server_no_context_takeover;
 * client_no_context_takeover" (and the client's server_max_window_bits when
 * it offered one). Writes at most len bytes including the NUL; returns the
 * length without it. */
size_t hr_pmd_response(const hr_pmd_params *p, char *buf, size_t len);

/*---- Compression (pure) ----------------------------------------------------*/

/* One thread's deflate and inflate streams and their buffers (a few hundred
 * KB, allocated on first use). Zero-initialise; hr_pmd_codec_free frees. */
typedef struct hr_pmd_codec {
    z_stream def, inf;
    int def_ready, inf_ready;
    unsigned char *dbuf; /* deflate output */
    size_t dcap;
    unsigned char *ibuf; /* inflate output: the last inflated message */
    size_t icap;
} hr_pmd_codec;

void hr_pmd_codec_free(hr_pmd_codec *z);

/* Compresses a text message's payload into a final text frame with RSV1
 * set. Returns a malloc'ed frame (the caller owns it); its len is 0 when
 * the compressed frame would not be shorter than plain_len, the plain
 * frame's length. */
chan_zframe *hr_pmd_deflate(hr_pmd_codec *z, const unsigned char *payload, size_t len,
                            size_t plain_len);

/* 0 or a negative errno value, named. */
typedef enum hr_pmd_status {
    HR_PMD_OK = 0,              /* inflated */
    HR_PMD_TOO_BIG = -EMSGSIZE, /* more than max bytes (inflating stopped at max + 1) */
    HR_PMD_BAD = -EINVAL,       /* not a valid deflate stream */
} hr_pmd_status;

/* Inflates one whole compressed message (as sent: without 00 00 ff ff) into
 * the codec's buffer, producing at most max + 1 bytes. On HR_PMD_OK *out
 * points at *outlen bytes that stay valid until the next call. */
hr_pmd_status hr_pmd_inflate(hr_pmd_codec *z, const unsigned char *in, size_t len, size_t max,
                             const unsigned char **out, size_t *outlen);

/* Inflate output kept between messages; a bigger buffer is freed by
 * hr_pmd_trim once its message has been handled. */
#define HR_PMD_KEEP (256 * 1024)
void hr_pmd_trim(hr_pmd_codec *z);

/* Most compressed bytes a message may take for max bytes of text: deflate
 * can grow incompressible input a little. */
static inline size_t hr_pmd_max_compressed(size_t max)
{
    return max + (max >> 3) + 64;
}

/*---- On a loop thread ------------------------------------------------------*/

/* A loop's compression state (loop.c creates it when HERALD_WS_COMPRESSION
 * is on). */
typedef struct hr_pmd_loop {
    hr_pmd_codec codec;
    /* wsi -> the bytes so far of a compressed message that did not arrive
     * in one piece (few connections are ever in this map) */
    hr_map *msgs;
} hr_pmd_loop;

hr_pmd_loop *hr_pmd_loop_new(void);
void hr_pmd_loop_free(hr_pmd_loop *p);

/* What a connection keeps: three bytes inside hr_conn, no allocation. */
typedef struct hr_pmd_conn {
    uint8_t bits;  /* 0: not negotiated; else the client's server_max_window_bits */
    uint8_t state; /* where its inbound messages are (ws_deflate.c) */
    uint8_t flags;
} hr_pmd_conn;

/* Drops what the connection had received of a compressed message (at
 * close). */
void hr_pmd_conn_clear(hr_pmd_loop *p, hr_pmd_conn *pc, struct lws *wsi);

/* What the extension's callbacks need of the WebSocket connections, which
 * sit above this module (ws.c gives it; every function is called on the
 * connection's loop thread). */
typedef struct hr_pmd_host {
    /* wsi's connection state, or NULL when it has none or is closing */
    hr_pmd_conn *(*conn)(struct lws *wsi);
    /* the compression state of wsi's loop, NULL when compression is off */
    hr_pmd_loop *(*loop)(struct lws *wsi);
    /* closes wsi's connection with code after a bad compressed message
     * (reason: static storage) */
    void (*fail)(struct lws *wsi, int code, const char *reason);
    size_t max_message; /* HERALD_MAX_MESSAGE: the most an inflated message may take */
} hr_pmd_host;

/* The vhost's extension list (lws_context_creation_info.extensions), whose
 * callbacks reach the connections through host (static storage, borrowed
 * for the process' life). */
const struct lws_extension *hr_pmd_extensions(const hr_pmd_host *host);

/* LWS_CALLBACK_ADD_HEADERS of an upgrade: adds Herald's parameters to the
 * Sec-WebSocket-Extensions line lws wrote. Returns 0, or -1 to fail the
 * handshake. */
int hr_pmd_add_headers(struct lws *wsi, struct lws_process_html_args *args);

/* Makes m's compressed frame if it is at least min bytes long and has none
 * yet (any loop thread; the first one wins). Returns 1 when it compressed
 * (metrics), else 0. */
int hr_pmd_prepare(hr_pmd_loop *p, chan_msg *m, size_t min);

/* The compressed frame of m for a connection that negotiated window `bits`,
 * or NULL when it gets the plain frame: none was made, it did not pay, or m
 * is longer than the client's window (with no context takeover, deflate
 * never looks further back than the message's own start). */
static inline const chan_zframe *hr_pmd_frame(const chan_msg *m, unsigned bits)
{
    const chan_zframe *z = atomic_load_explicit(&((chan_msg *)m)->zframe, memory_order_acquire);
    if (!z || !z->len || (bits < 15 && m->len > ((size_t)1 << bits)))
        return NULL;
    return z;
}

#endif
