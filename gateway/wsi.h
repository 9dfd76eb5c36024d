/*
 * wsi.h - what Herald keeps per libwebsockets connection (a "wsi").
 *
 * Two places, because lws offers two:
 * - the per-session data (hr_pss), which lws allocates per protocol
 *   binding and frees between HTTP keep-alive transactions: the request in
 *   progress, or the client connection after a WebSocket upgrade;
 * - the wsi's opaque pointer (hr_wsi_state), which lives as long as the
 *   socket: what must survive from one transaction to the next, or from
 *   the upgrade request to the established WebSocket.
 */
#ifndef HR_WSI_H
#define HR_WSI_H

#include "auth/auth.h"
#include "gateway/limits.h"

#include <stdint.h>

struct lws;
typedef struct hr_http_req hr_http_req; /* http.c */
typedef struct hr_conn hr_conn;         /* a client connection */

/* libwebsockets per-session data: an HTTP request in progress, or a client
 * connection (after the upgrade), never both. */
typedef struct hr_pss {
    hr_http_req *req;
    hr_conn *conn;
} hr_pss;

/* Allocated on first use, freed at WSI_DESTROY or once a WebSocket is
 * established. */
typedef struct hr_wsi_state {
    int64_t consumed_at_tc;       /* bytes read from the socket when the last
                                   * transaction completed (HTTP keep-alive) */
    int tc_valid;                 /* consumed_at_tc is set */
    auth_identity *upgrade_id;    /* identity verified at the WebSocket upgrade */
    uint64_t upgrade_us;          /* when the upgrade request arrived (metrics) */
    hr_slot *addr_slot;           /* the upgrade's place in conns_per_addr */
    hr_slot *user_slot;           /* ... and in conns_per_user */
    int raw_answered;             /* a request lws could not parse was answered */
    uint8_t pmd_calls;            /* permessage-deflate offers lws asked about (ws_deflate.c) */
    uint8_t pmd_bits;             /* != 0: permessage-deflate accepted, with this window */
    struct hr_proxy_headers *fwd; /* with a backend proxy: the headers its calls forward */
    char *remote_addr;            /* ... and the client's address (connect proxy) */
} hr_wsi_state;

/* The wsi's state, allocated on first use (never NULL). */
hr_wsi_state *hr_wsi_state_get(struct lws *wsi);
/* The wsi's state, or NULL when none was allocated. */
hr_wsi_state *hr_wsi_state_peek(struct lws *wsi);
/* Frees it and what it owns (the slots it holds, the identity); none ok. */
void hr_wsi_state_free(struct lws *wsi);

#endif
