/*
 * server.h - what the gateway serves on its port: the libwebsockets
 * protocol callback that routes every lws event to HTTP (http.c, through
 * the REST API's table) or to WebSocket connections (ws_*.c), and the hooks
 * the node runs the server's per-thread state and clients through. The
 * only module that knows both HTTP and WebSocket.
 */
#ifndef HR_SERVER_H
#define HR_SERVER_H

#include "gateway/node.h"

/* The server's hooks for a node running cfg (static storage). */
const hr_server_hooks *hr_server_hooks_for(const hr_config *cfg);

#endif
