/*
 * ws_upgrade.h - deciding a WebSocket upgrade (SPEC §2): path, handshake
 * headers, Origin, limits and credentials, once per handshake; the
 * verified identity rides on the wsi (wsi.h) until the connection is
 * established (ws_conn.c).
 */
#ifndef HR_WS_UPGRADE_H
#define HR_WS_UPGRADE_H

#include "gateway/node.h"

/* HTTP_CONFIRM_UPGRADE: returns 0 to let the upgrade proceed, >0 after
 * refusing it with an HTTP response (http.h's hr_http_refuse). */
int hr_ws_confirm_upgrade(hr_worker *w, struct lws *wsi, const char *upgrade);

#endif
