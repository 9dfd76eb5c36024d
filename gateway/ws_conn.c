/*
 * ws_conn.c - WebSocket connections (see ws_conn.h): the frames an hr_conn
 * is sent, how they leave (one write per loop iteration, coalesced in the
 * loop's scratch buffer), how messages arrive, and how the connection
 * closes - always with a close frame the peer sees.
 *
 * A connection that negotiated permessage-deflate is sent the message's
 * compressed frame instead, made once per message for every such connection
 * (ws_deflate.c); its compressed client messages reach hr_ws_receive
 * already inflated.
 */
#include "gateway/ws_conn.h"
#include "common/log.h"
#include "common/ws_frame.h"
#include "gateway/proto.h"
#include "gateway/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Seconds a closing connection may wait for its peer to accept the close
 * frame before lws drops the socket. A slow consumer must first read what
 * the kernel already holds for it (its queue is dropped, so waiting costs
 * only those buffers); too short, and it sees 1006 instead of 4008. */
#define HR_CLOSE_BACKSTOP_S 20

static hr_ws_conn *ws_of(hr_conn *c)
{
    return (hr_ws_conn *)c;
}

static hr_ws_conn *pss_conn(hr_pss *pss)
{
    return pss ? (hr_ws_conn *)pss->conn : NULL;
}

static const hr_config *conn_cfg(const hr_ws_conn *c)
{
    return c->c.w->node->cfg;
}

/*---- The connection's frames (hr_conn_ops) ---------------------------------*/

/* The frame of m this connection is sent: the message's compressed frame
 * when the connection negotiated permessage-deflate and there is one (made
 * at enqueue time, so the choice is the same when the frame leaves). */
static const unsigned char *ws_frame(const hr_conn *conn, const chan_msg *m, size_t *flen)
{
    const hr_ws_conn *c = (const hr_ws_conn *)conn;
    const chan_zframe *z = c->pmd.bits ? hr_pmd_frame(m, c->pmd.bits) : NULL;
    if (z) {
        *flen = z->len;
        return z->b;
    }
    return chan_msg_frame(m, flen);
}

static size_t ws_queued(hr_conn *conn, chan_msg *m)
{
    hr_ws_conn *c = ws_of(conn);
    size_t flen;
    if (c->pmd.bits && hr_pmd_prepare(conn->w->pmd, m, conn_cfg(c)->ws_compression_min))
        HR_INC(&conn->w->stats, ws_deflates, 1);
    ws_frame(conn, m, &flen);
    return flen;
}

/* Closing is carried out in the writeable callback (the close frame after
 * what is flushed); lws drops the socket if the peer never lets it out. */
static void ws_closing(hr_conn *c)
{
    lws_callback_on_writable(c->wsi);
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
                    c->close_flush ? HR_CLOSE_BACKSTOP_S * 2 : HR_CLOSE_BACKSTOP_S);
}

/* Never LWS_SET_TIMER_USEC_CANCEL, which lws 4.1.6 does not handle in
 * lws_set_timer_usecs: it schedules the timer in the past, and re-armed
 * from the timer's own callback that spun the loop at 100% CPU, deaf to its
 * sockets (hr_conn_rearm always waits a capped time instead). */
/* lws 4.1.6 only inserts the timer into its sorted list: the loop's own
 * wake-up is set again after lws services something. Armed from another
 * callback of the loop (a backend proxy's answer: a refresh), nothing of
 * lws' runs and the timer waits for whatever lws had scheduled before -
 * a refresh's next deadline was missed by up to 30 s. Waking lws' service
 * makes it look at the list again. */
static void ws_arm(hr_conn *c, int64_t s)
{
    lws_set_timer_usecs(c->wsi, s > 0 ? (lws_usec_t)s * LWS_US_PER_SEC : 1);
    if (!c->w->in_lws)
        lws_cancel_service_pt(c->wsi);
}

/* Metrics of one frame leaving: compressed frames, and the delivery. */
static void frame_sent(hr_ws_conn *c, chan_msg *m, uint64_t now_us)
{
    if (c->pmd.bits && hr_pmd_frame(m, c->pmd.bits))
        HR_INC(&c->c.w->stats, ws_frames_deflated, 1);
    hr_conn_sent(&c->c, m, now_us);
}

/* Coalesces queued frames into the loop's scratch buffer so they leave in
 * one write. A single frame, or one larger than the scratch, is written
 * from the message itself (no copy). Returns the bytes to write and points
 * *out at them; the frames taken are unreferenced by the caller's count. */
static size_t gather(hr_ws_conn *c, unsigned char *scratch, const unsigned char **out,
                     chan_msg **single, uint32_t *nframes, uint64_t now_us)
{
    hr_conn *q = &c->c;
    size_t flen, used = 0;
    const unsigned char *f = ws_frame(q, hr_conn_head(q), &flen);
    *single = NULL;
    if (q->qlen == 1 || flen > HR_SCRATCH) {
        frame_sent(c, hr_conn_head(q), now_us);
        *single = hr_conn_pop(q, flen);
        *out = f;
        *nframes = 1;
        return flen;
    }
    *nframes = 0;
    while (q->qlen) {
        f = ws_frame(q, hr_conn_head(q), &flen);
        if (used + flen > HR_SCRATCH)
            break;
        memcpy(scratch + used, f, flen);
        used += flen;
        frame_sent(c, hr_conn_head(q), now_us);
        chan_msg_unref(hr_conn_pop(q, flen));
        (*nframes)++;
    }
    *out = scratch;
    return used;
}

/* The socket is choked until lws has flushed what it holds of ours. */
static void choke(hr_conn *c)
{
    c->choked = 1;
    lws_callback_on_writable(c->wsi);
}

/* Plain TCP: one send(2); lws_send_pipe_choked would cost a poll(2) per
 * call and lws_write(LWS_WRITE_RAW) is a send with buffering we only need
 * on a short write: then the remainder goes to lws_write, which keeps it
 * and flushes it before anything else it writes (pongs, close), so frames
 * never interleave, and lws never holds more than one partial write of
 * ours. Returns 0, or -1 when the socket failed. */
static int send_plain(hr_conn *c, const unsigned char *buf, size_t len)
{
    ssize_t sent = send(lws_get_socket_fd(c->wsi), buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        sent = 0;
    if (sent < 0)
        return -1;
    if ((size_t)sent == len)
        return 0;
    int rc = lws_write(c->wsi, (unsigned char *)buf + sent, len - (size_t)sent, LWS_WRITE_RAW);
    choke(c);
    return rc < 0 ? -1 : 0;
}

/* TLS: lws encrypts (SSL_write); what the socket does not take it keeps,
 * as above. */
static int send_tls(hr_conn *c, const unsigned char *buf, size_t len)
{
    if (lws_write(c->wsi, (unsigned char *)buf, len, LWS_WRITE_RAW) < 0)
        return -1;
    if (lws_partial_buffered(c->wsi))
        choke(c);
    return 0;
}

/* Sends what is queued (up to the scratch size) in one write. Returns 0,
 * or -1 when the socket failed. */
static int send_queued(hr_ws_conn *c, uint64_t now_us)
{
    hr_worker *w = c->c.w;
    const unsigned char *buf;
    chan_msg *single;
    uint32_t n;
    size_t len = gather(c, w->scratch + LWS_PRE, &buf, &single, &n, now_us);
    int rc = w->node->cfg->tls_cert ? send_tls(&c->c, buf, len) : send_plain(&c->c, buf, len);
    chan_msg_unref(single);
    HR_INC(&w->stats, writes, 1);
    HR_INC(&w->stats, messages_out, n);
    HR_INC(&w->stats, bytes_out, len);
    return rc;
}

/* Sends what is queued, then asks for the writeable callback while more is
 * left (over one scratch's worth) or a close frame waits, unless lws holds
 * a partial write (it calls back by itself). Returns 0, or -1 when the
 * socket failed. */
static int ws_write(hr_conn *c, uint64_t now_us)
{
    if (c->qlen && send_queued(ws_of(c), now_us) < 0)
        return -1;
    if ((c->qlen || c->close_code) && !c->choked)
        lws_callback_on_writable(c->wsi);
    hr_conn_shrink(c);
    return 0;
}

static const hr_conn_ops ws_ops = {
    .transport = "websocket",
    .frame = ws_frame,
    .queued = ws_queued,
    .write = ws_write,
    .closing = ws_closing,
    .arm = ws_arm,
};

/*---- Opening ---------------------------------------------------------------*/

void hr_ws_authenticate(hr_ws_conn *c, auth_identity *id)
{
    char client[160];
    size_t len = 0;
    hr_conn_authenticate(&c->c, id);
    hr_conn_client_id(&c->c, client, sizeof(client));
    char *s = hr_proto_connected(client, c->c.id.sub, c->c.id.exp, &len);
    hr_conn_send_text(&c->c, s, len);
    free(s);
    hr_debug("connected", "client %s user %s", client, c->c.id.sub ? c->c.id.sub : "");
}

/* The connection takes over what the upgrade verified and counted
 * (ws_upgrade.c): the identity, the limit slots, the negotiated
 * compression. */
int hr_ws_established(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_ws_conn *c = hr_calloc(1, sizeof(*c));
    hr_conn_init(&c->c, &ws_ops, w, wsi);
    c->tokens = (float)w->node->cfg->rate_burst;
    c->tokens_ms = (uint32_t)hr_now_ms();
    pss->conn = &c->c;

    hr_wsi_state *st = hr_wsi_state_peek(wsi);
    if (st && st->upgrade_us)
        hr_hist_observe(&w->stats.handshake, hr_now_us() - st->upgrade_us);
    if (st) { /* the connection holds the upgrade's places from now on */
        c->pmd.bits = st->pmd_bits;
        c->c.addr_slot = st->addr_slot;
        c->c.user_slot = st->user_slot;
        st->addr_slot = st->user_slot = NULL;
        c->c.fwd = st->fwd;
        c->c.remote_addr = st->remote_addr;
        st->fwd = NULL;
        st->remote_addr = NULL;
    }
    if (st && st->upgrade_id) {
        hr_ws_authenticate(c, st->upgrade_id);
        free(st->upgrade_id);
        st->upgrade_id = NULL;
    } else {
        hr_conn_rearm(&c->c); /* the connect deadline */
    }
    hr_wsi_state_free(wsi); /* a WebSocket keeps none of it */
    if (w->loop.shutting_down)
        hr_conn_close(&c->c, 1001, "going away", 1);
    return 0;
}

/*---- Receiving -------------------------------------------------------------*/

/* Token bucket: rate_per_sec tokens a second, at most rate_burst saved. */
static int rate_ok(hr_ws_conn *c)
{
    const hr_config *cfg = conn_cfg(c);
    uint32_t now = (uint32_t)hr_now_ms();
    /* unsigned difference: right across the 32-bit wrap */
    c->tokens += (float)((double)(uint32_t)(now - c->tokens_ms) * cfg->rate_per_sec / 1000.0);
    if (c->tokens > (float)cfg->rate_burst)
        c->tokens = (float)cfg->rate_burst;
    c->tokens_ms = now;
    if (c->tokens < 1.0f)
        return 0;
    c->tokens -= 1.0f;
    return 1;
}

static void rx_free(hr_ws_conn *c)
{
    if (c->rx) {
        hr_buf_reset(c->rx);
        free(c->rx);
        c->rx = NULL;
    }
}

/* Protocol violations close through the deferred path with flush, so the
 * replies to commands accepted before the violation still reach the client;
 * input that arrives while closing is ignored. */
void hr_ws_violation(hr_ws_conn *c, int code, const char *reason)
{
    rx_free(c);
    hr_conn_close(&c->c, code, reason, 1);
}

static void complete_message(hr_ws_conn *c, const char *buf, size_t len, hr_ws_handler handle)
{
    HR_INC(&c->c.w->stats, messages_in, 1);
    HR_INC(&c->c.w->stats, bytes_in, len);
    if (!rate_ok(c)) {
        HR_INC(&c->c.w->stats, rate_limit_closes, 1);
        hr_ws_violation(c, 4029, "rate limit exceeded");
        return;
    }
    handle(c, buf, len);
}

int hr_ws_receive(hr_worker *w, struct lws *wsi, hr_pss *pss, const void *in, size_t len,
                  hr_ws_handler handle)
{
    hr_ws_conn *c = pss_conn(pss);
    size_t max = w->node->cfg->max_message;

    if (!c)
        return -1;
    if (c->c.close_code)
        return 0; /* closing: input is ignored */
    if (lws_frame_is_binary(wsi)) {
        hr_ws_violation(c, 1003, "binary frames are not supported");
        return 0;
    }
    size_t have = c->rx ? c->rx->len : 0;
    if (have + len + lws_remaining_packet_payload(wsi) > max) {
        hr_ws_violation(c, 1009, "message too big");
        return 0;
    }
    int last = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
    if (len == 0 && !last)
        return 0;            /* an empty piece (with compression, lws delivers those) */
    if (last && have == 0) { /* the common case: whole, no copy */
        complete_message(c, in, len, handle);
        return 0;
    }
    if (!c->rx)
        c->rx = hr_calloc(1, sizeof(*c->rx));
    hr_buf_append(c->rx, in, len);
    if (!last)
        return 0;
    complete_message(c, c->rx->data, c->rx->len, handle);
    rx_free(c); /* an idle connection keeps no receive buffer */
    return 0;
}

/* For the permessage-deflate extension (ws_deflate.c), which inflates
 * compressed messages before lws hands them to hr_ws_receive. */
static hr_pmd_conn *pmd_conn(struct lws *wsi)
{
    hr_ws_conn *c = pss_conn(lws_wsi_user(wsi));
    return c && c->c.wsi && !c->c.close_code ? &c->pmd : NULL;
}

static void pmd_fail(struct lws *wsi, int code, const char *reason)
{
    hr_ws_conn *c = pss_conn(lws_wsi_user(wsi));
    if (c && !c->c.close_code)
        hr_ws_violation(c, code, reason);
}

static hr_pmd_loop *pmd_loop(struct lws *wsi)
{
    return hr_worker_of(lws_context_user(lws_get_context(wsi)))->pmd;
}

const hr_pmd_host *hr_ws_pmd_host(const hr_config *cfg)
{
    static hr_pmd_host host = {pmd_conn, pmd_loop, pmd_fail, 0};
    host.max_message = cfg->max_message;
    return &host;
}

/*---- Writing and timers ----------------------------------------------------*/

/* The writeable callback: lws has flushed any partial write it held. Sends
 * what is queued, or the close frame once the queue is empty. */
int hr_ws_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_ws_conn *c = pss_conn(pss);
    (void)w;
    if (!c)
        return -1;
    c->c.choked = 0;
    if (c->c.close_code && (!c->c.close_flush || c->c.qlen == 0))
        return hr_ws_close_now(wsi, c->c.close_code, c->c.close_reason);
    return ws_write(&c->c, hr_now_us());
}

int hr_ws_timer(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_ws_conn *c = pss_conn(pss);
    (void)w;
    (void)wsi;
    if (c)
        hr_api_deadline(&c->c); /* the refresh proxy, or hr_conn_deadline */
    return 0;
}

/*---- Closing ---------------------------------------------------------------*/

int hr_ws_close_now(struct lws *wsi, int code, const char *reason)
{
    unsigned char buf[LWS_PRE + HR_WS_CLOSE_MAX], *p = buf + LWS_PRE;
    hr_ws_conn *c = pss_conn(lws_wsi_user(wsi));
    lws_write(wsi, p, hr_ws_close_frame(p, code, reason), LWS_WRITE_RAW);
    if (c)
        c->close_sent = 1;
    return -1;
}

/* Close codes a peer may send (RFC 6455 §7.4.1-2, and 1012-1014 from the
 * IANA registry): 1000-1003, 1007-1014, 3000-4999. */
static int close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int hr_ws_peer_close(struct lws *wsi, hr_pss *pss, const unsigned char *in, size_t len)
{
    hr_ws_conn *c = pss_conn(pss);
    /* lws 4.1.6 answers the unassigned codes below 3000 with 1002 itself
     * (and 1012-1014 too), and hangs up on a reason with an invalid UTF-8
     * byte (hr_ws_dropped answers that); but it echoes a 1-byte payload,
     * codes of 5000 and above, and a reason that ends inside a UTF-8
     * sequence (its check is incremental and the end is never checked). */
    if (len == 1)
        return hr_ws_close_now(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "bad close payload");
    if (len >= 2 && !close_code_valid(((unsigned)in[0] << 8) | in[1]))
        return hr_ws_close_now(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "invalid close code");
    if (len > 2 && !hr_utf8_valid(in + 2, len - 2))
        return hr_ws_close_now(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "close reason not UTF-8");
    if (c) {
        c->peer_closed = 1;
        c->c.peer_code = len >= 2 ? (int)(((unsigned)in[0] << 8) | in[1]) : 1005;
    }
    return 0;
}

/* Sends what is queued straight to the socket, as far as it goes without
 * blocking. Returns 0 when all of it left, -1 when a frame may have been
 * cut short (nothing can follow it then). */
static int flush_direct(hr_ws_conn *c, int fd)
{
    hr_worker *w = c->c.w;
    uint64_t now_us = hr_now_us();
    while (c->c.qlen) {
        const unsigned char *buf;
        chan_msg *single;
        uint32_t n;
        size_t len = gather(c, w->scratch + LWS_PRE, &buf, &single, &n, now_us);
        ssize_t sent = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        chan_msg_unref(single);
        if (sent < 0 || (size_t)sent < len)
            return -1;
        HR_INC(&w->stats, writes, 1);
        HR_INC(&w->stats, messages_out, n);
        HR_INC(&w->stats, bytes_out, len);
    }
    return 0;
}

/* WS_SERVER_DROP_PROTOCOL: lws is closing the connection, and this is the
 * last moment its socket is still open for writing. lws 4.1.6 fails some
 * protocol violations by hanging up without a close frame, with no
 * callback and no close reason set: a control frame over 125 bytes, a
 * 64-bit length with the top bit set, a close reason that is not UTF-8. So
 * when nobody has sent or prepared a close frame (not us, not lws - it sets
 * a close reason for the violations it does answer - and not the peer) and
 * the peer is still there (has not closed its side), the replies queued
 * before the violation go out and then a 1002 close; or the close Herald
 * had decided but not yet written (its backstop timer fired). Writes go
 * straight to the socket: lws holds no partial write of ours (!choked) and
 * none of its own here (it flushes before closing). */
void hr_ws_dropped(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_ws_conn *c = pss_conn(pss);
    unsigned char frame[HR_WS_CLOSE_MAX];
    char peek;

    if (!c || !c->c.wsi || c->close_sent || c->peer_closed || c->c.choked ||
        lws_get_close_length(wsi) > 0)
        return;
    if (w->node->cfg->tls_cert)
        return; /* plaintext bytes must never reach a TLS socket (no close frame then) */
    int fd = lws_get_socket_fd(wsi);
    ssize_t n = recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        return; /* the peer has closed or reset: nobody to tell */
    if (flush_direct(c, fd) < 0)
        return;
    int code = c->c.close_code ? c->c.close_code : LWS_CLOSE_STATUS_PROTOCOL_ERR;
    const char *reason = c->c.close_code ? c->c.close_reason : "protocol error";
    c->close_sent = 1;
    send(fd, frame, hr_ws_close_frame(frame, code, reason), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void hr_ws_closed(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_ws_conn *c = pss_conn(pss);
    if (!c)
        return;
    pss->conn = NULL;
    rx_free(c);
    hr_pmd_conn_clear(w->pmd, &c->pmd, wsi);
    hr_conn_closed(&c->c);
}
