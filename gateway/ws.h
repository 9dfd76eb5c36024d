/*
 * ws.h - the WebSocket side of the gateway (SPEC §2): the upgrade, the
 * command loop, and each connection's bounded outbound queue. Called by
 * loop.c's protocol callback and inbox, on the connection's loop thread.
 */
#ifndef HR_WS_H
#define HR_WS_H

#include "gateway/node.h"
#include "gateway/ws_deflate.h"

/* lws hands a message to RECEIVE in pieces of at most this many bytes
 * (ws.c reassembles); it is also what lws allocates per connection for
 * receiving, so it is kept small. */
#define HR_WS_RX_BUFFER 128

/* Bytes of frames coalesced into one write. */
#define HR_SCRATCH 65536

/* chan_host.deliver: queues a reference to m on the connection (owner). */
void hr_ws_deliver(void *owner, chan_msg *m);

/* chan_host.sub.subscribed: answers a subscribe command, or pushes
 * `subscribed` for a server-side join or a renewal after an outage. */
void hr_ws_subscribed(void *owner, void *req, const char *channel, const chan_sub_result *r);
/* Applies a members add/remove control to this loop's connections of
 * ctl->user (loop thread). */
void hr_ws_member(hr_worker *w, const chan_control *ctl);
/* The history op's result object (also the REST answer). New reference. */
json_t *hr_ws_history_json(const chan_history *h);

/* HTTP_CONFIRM_UPGRADE: checks path, Origin and credentials once and keeps
 * the verified identity on the wsi until ESTABLISHED. Returns 0 to let the
 * upgrade proceed, >0 after refusing it with an HTTP response. */
int hr_ws_confirm_upgrade(hr_worker *w, struct lws *wsi, const char *upgrade);
int hr_ws_established(hr_worker *w, struct lws *wsi, hr_pss *pss);
int hr_ws_receive(hr_worker *w, struct lws *wsi, hr_pss *pss, const void *in, size_t len);
int hr_ws_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss);
int hr_ws_timer(hr_worker *w, struct lws *wsi, hr_pss *pss);
void hr_ws_closed(hr_worker *w, struct lws *wsi, hr_pss *pss);
/* WS_PEER_INITIATED_CLOSE: answers a close payload RFC 6455 forbids (one
 * byte, an invalid code) with 1002 and returns -1; else 0 (lws echoes it). */
int hr_ws_peer_close(struct lws *wsi, hr_pss *pss, const unsigned char *in, size_t len);
/* WS_SERVER_DROP_PROTOCOL: lws is closing the connection; sends the close
 * frame lws would leave out (see ws.c). */
void hr_ws_dropped(hr_worker *w, struct lws *wsi, hr_pss *pss);
/* What the permessage-deflate extension needs of the connections
 * (hr_pmd_extensions), for a node running cfg (static storage). */
const hr_pmd_host *hr_ws_pmd_host(const hr_config *cfg);
/* From inside an lws callback: writes a close frame with code and reason
 * and returns -1 (hang up). lws 4.1 on libuv would otherwise queue the
 * close frame for a writeable callback that never comes once the callback
 * has asked to close, and the peer would see no close frame (1006). */
int hr_ws_close_now(struct lws *wsi, int code, const char *reason);

/* Writes, once each, every connection that had frames queued since the
 * last call (loop.c calls it after each loop iteration's callbacks). */
void hr_ws_flush_pending(hr_worker *w);

/* Closes every connection of user `sub` on this loop with code and reason
 * (static storage). Returns how many. */
size_t hr_ws_disconnect_user(hr_worker *w, const char *sub, int code, const char *reason);
/* Starts closing every connection of this loop with 1001 after flushing. */
void hr_ws_shutdown_all(hr_worker *w);

#endif
