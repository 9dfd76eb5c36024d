/*
 * ws_conn.h - WebSocket connections (SPEC §2): an hr_conn (conn.h) whose
 * bytes are WebSocket frames - pre-framed once per message, or compressed
 * once per message for connections that negotiated permessage-deflate
 * (ws_deflate.c) - written with one send per loop iteration, and whose
 * messages are reassembled, rate-limited and handed to a handler (the
 * command table, ws_cmd.c). Called by server.c's protocol callback, on
 * the connection's loop thread.
 */
#ifndef HR_WS_CONN_H
#define HR_WS_CONN_H

#include "gateway/conn.h"
#include "gateway/ws_deflate.h"

/* lws hands a message to RECEIVE in pieces of at most this many bytes
 * (ws_conn.c reassembles); it is also what lws allocates per connection for
 * receiving, so it is kept small. */
#define HR_WS_RX_BUFFER 128
/* Bytes of frames coalesced into one write. */
#define HR_SCRATCH 65536

typedef struct hr_ws_conn {
    hr_conn c;                /* first: hr_conn * and hr_ws_conn * convert */
    hr_pmd_conn pmd;          /* permessage-deflate (ws_deflate.c): 3 bytes */
    unsigned close_sent : 1;  /* our close frame is on the wire */
    unsigned peer_closed : 1; /* the peer sent a valid close frame (lws echoes it) */
    hr_buf *rx;               /* reassembly of a message that arrived in pieces, else NULL */
    float tokens;             /* inbound rate limiter (token bucket) */
    uint32_t tokens_ms;       /* when tokens was computed (ms, wraps after 49 days) */
} hr_ws_conn;

/* What runs a complete client message (text, at most max_message bytes). */
typedef void (*hr_ws_handler)(hr_ws_conn *c, const char *msg, size_t len);

/* Authenticates c as *id (taken, see hr_conn_authenticate) and sends the
 * `connected` push, which must be the first thing the client receives. */
void hr_ws_authenticate(hr_ws_conn *c, auth_identity *id);
/* Closes c with code after a protocol violation (reason: static storage):
 * what was queued before it still goes out. */
void hr_ws_violation(hr_ws_conn *c, int code, const char *reason);

/* The protocol callback's WebSocket events. */
int hr_ws_established(hr_worker *w, struct lws *wsi, hr_pss *pss);
int hr_ws_receive(hr_worker *w, struct lws *wsi, hr_pss *pss, const void *in, size_t len,
                  hr_ws_handler handle);
int hr_ws_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss);
int hr_ws_timer(hr_worker *w, struct lws *wsi, hr_pss *pss);
void hr_ws_closed(hr_worker *w, struct lws *wsi, hr_pss *pss);
/* WS_PEER_INITIATED_CLOSE: answers a close payload RFC 6455 forbids (one
 * byte, an invalid code) with 1002 and returns -1; else 0 (lws echoes it). */
int hr_ws_peer_close(struct lws *wsi, hr_pss *pss, const unsigned char *in, size_t len);
/* WS_SERVER_DROP_PROTOCOL: lws is closing the connection; sends the close
 * frame lws would leave out (see ws_conn.c). */
void hr_ws_dropped(hr_worker *w, struct lws *wsi, hr_pss *pss);

/* From inside an lws callback: writes a close frame with code and reason
 * and returns -1 (hang up). lws 4.1 on libuv would otherwise queue the
 * close frame for a writeable callback that never comes once the callback
 * has asked to close, and the peer would see no close frame (1006). */
int hr_ws_close_now(struct lws *wsi, int code, const char *reason);

/* What the permessage-deflate extension needs of the connections
 * (hr_pmd_extensions), for a node running cfg (static storage). */
const hr_pmd_host *hr_ws_pmd_host(const hr_config *cfg);

#endif
