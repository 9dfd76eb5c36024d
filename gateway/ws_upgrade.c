/*
 * ws_upgrade.c - the WebSocket upgrade (RFC 6455 §4.2, SPEC §2): the
 * handshake checks lws 4.1.6 gets wrong, the Origin allowlist, the limits
 * per address and per user, and the credentials of the request, each
 * refused with its own HTTP status before the upgrade happens.
 */
#include "gateway/ws_upgrade.h"
#include "gateway/conn.h"
#include "gateway/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int origin_allowed(const hr_config *cfg, struct lws *wsi)
{
    char origin[512];
    if (cfg->nallowed_origins == 0)
        return 1;
    if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
        return 0;
    for (size_t i = 0; i < cfg->nallowed_origins; i++)
        if (!strcmp(cfg->allowed_origins[i], origin))
            return 1;
    return 0;
}

/* Handshakes per address (a token bucket: handshake_rate at once, then
 * handshake_rate a second), then connections per address, for
 * requests whose client address is known (see hr_client_address). The
 * place taken rides on the wsi until ESTABLISHED (freed with the wsi if
 * the upgrade never completes). Returns 0, or -EUSERS to refuse. */
static int admit_address(hr_node *node, struct lws *wsi)
{
    const hr_config *cfg = node->cfg;
    char addr[64];
    if (cfg->handshake_rate <= 0 && cfg->max_conns_per_address <= 0)
        return 0;
    if (!hr_client_address(&node->addrs, wsi, addr, sizeof(addr)))
        return 0; /* a trusted proxy's own request: no client to count */
    if (cfg->handshake_rate > 0 &&
        auth_throttle_admit(node->handshakes, addr, (int64_t)hr_now_ms()))
        return -EUSERS;
    hr_slot *s;
    if (hr_limit_take(node->conns_per_addr, addr, cfg->max_conns_per_address, &s) < 0)
        return -EUSERS;
    if (s)
        hr_wsi_state_get(wsi)->addr_slot = s;
    return 0;
}

/* Does the comma/space separated list hold token (case-insensitively)? */
static int list_has_token(const char *list, const char *token)
{
    size_t tlen = strlen(token);
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n == tlen && !strncasecmp(p, token, n))
            return 1;
        p += n;
    }
    return 0;
}

/* Sec-WebSocket-Protocol (RFC 6455 §4.2.2 /subprotocol/). lws 4.1.6 binds
 * a client that offers subprotocols to the first one whose name matches one
 * of ours and echoes it; when none matches, when the header does not fit
 * its 128-byte buffer or a name before the match its 64-byte one, it hangs
 * up without any HTTP answer. RFC 6455 would let a server accept without
 * selecting one, but lws cannot be made to (it only binds the default
 * protocol when the header is absent), and a browser that offered
 * subprotocols fails a handshake that selects none anyway. So an offer
 * without "herald" is refused with a 400 that says what Herald speaks.
 * Returns 1 when lws will accept the offer (or there is none). */
static int subprotocol_ok(struct lws *wsi)
{
    char list[128];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) <= 0)
        return 1;
    /* the sizes lws copies into (server-ws.c, lws_process_ws_upgrade) */
    if (lws_hdr_copy(wsi, list, sizeof(list) - 1, WSI_TOKEN_PROTOCOL) <= 0)
        return 0;
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n >= 64)
            return 0;
        if (n == 6 && !strncmp(p, "herald", 6))
            return 1;
        p += n;
    }
    return 0;
}

/* Is the Sec-WebSocket-Key 16 bytes in base64 (RFC 6455 §4.2.1 item 5)? */
static int key_ok(struct lws *wsi)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char key[32];
    return lws_hdr_copy(wsi, key, sizeof(key), WSI_TOKEN_KEY) == 24 && strspn(key, b64) == 22 &&
           !strcmp(key + 22, "==");
}

/* RFC 6455 §4.2.1-2 checks lws 4.1.6 gets wrong: it upgrades any
 * Sec-WebSocket-Version as if it were 13, and hangs up without an HTTP
 * answer on a missing Host, key or "Connection: upgrade" and on a
 * subprotocol offer it cannot match. Each gets its status here instead.
 * Returns 0 when the handshake may proceed, else hr_http_refuse's result. */
static int handshake_refused(struct lws *wsi)
{
    char buf[128];
    int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_VERSION);
    if (n <= 0)
        return hr_http_refuse_hdr(wsi, 400, "Sec-WebSocket-Version is required (13)",
                                  "sec-websocket-version:", "13");
    if (strcmp(buf, "13") != 0)
        return hr_http_refuse_hdr(wsi, 426, "unsupported Sec-WebSocket-Version: Herald speaks 13",
                                  "sec-websocket-version:", "13");
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HOST) <= 0)
        return hr_http_refuse(wsi, 400, "the Host header is required");
    if (!key_ok(wsi))
        return hr_http_refuse(wsi, 400, "Sec-WebSocket-Key must be 16 bytes in base64");
    /* lws reads Connection into 127 bytes; longer, and it hangs up */
    if (lws_hdr_copy(wsi, buf, sizeof(buf) - 1, WSI_TOKEN_CONNECTION) <= 0 ||
        !list_has_token(buf, "upgrade"))
        return hr_http_refuse(wsi, 400, "a WebSocket upgrade needs Connection: Upgrade");
    /* lws reads the offers into 255 bytes; longer, and it hangs up */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_EXTENSIONS) >= 255)
        return hr_http_refuse(wsi, 400, "Sec-WebSocket-Extensions is too long (at most 254 bytes)");
    if (!subprotocol_ok(wsi))
        return hr_http_refuse(wsi, 400,
                              "unsupported Sec-WebSocket-Protocol: Herald speaks only \"herald\" "
                              "(or offer no subprotocol)");
    return 0;
}

/* HTTP_CONFIRM_UPGRADE is the only place lws lets us answer an upgrade with
 * our own status (400, 401, 403, 404, 426, 503), and the session struct does
 * not exist yet, so the verified identity rides on the wsi's opaque pointer
 * until ESTABLISHED (or is freed in WSI_DESTROY). One verification per
 * handshake. */
int hr_ws_confirm_upgrade(hr_worker *w, struct lws *wsi, const char *upgrade)
{
    char uri[64], err[160];
    auth_identity id = {0};
    int refused;

    if (!upgrade || strcasecmp(upgrade, "websocket") != 0)
        return hr_http_refuse(wsi, 400, "only WebSocket upgrades are supported");
    hr_wsi_state_get(wsi)->upgrade_us = hr_now_us();
    if (w->loop.shutting_down)
        return hr_http_refuse(wsi, 503, "the server is shutting down");
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0)
        return hr_http_refuse(wsi, 404, "WebSocket endpoint is /ws");
    if ((refused = handshake_refused(wsi)) != 0)
        return refused;
    if (!origin_allowed(w->node->cfg, wsi))
        return hr_http_refuse(wsi, 403, "origin not allowed");
    if (admit_address(w->node, wsi) < 0)
        return hr_http_refuse(wsi, 429, "too many connections or handshakes from this address");

    /* The headers of the handshake are gone once it is a WebSocket: what the
     * backend proxy's calls forward is kept now (SPEC §8). */
    if (w->proxy) {
        char addr[64] = "";
        hr_wsi_state *ws = hr_wsi_state_get(wsi);
        ws->fwd = hr_creds_forwarded(w->node->cfg, wsi);
        hr_addr_policy whole = w->node->addrs; /* the address itself, not its network */
        whole.v4bits = 32;
        whole.v6bits = 128;
        /* every hop a trusted proxy (the client runs on one): the peer */
        if (hr_client_address(&whole, wsi, addr, sizeof(addr)) != 1)
            lws_get_peer_simple(wsi, addr, sizeof(addr));
        ws->remote_addr = hr_strdup(addr);
    }
    /* HERALD_PROXY_CONNECT_PRECEDENCE=proxy: no JWT is checked, the client's
     * connect command goes to the connect proxy */
    int st = hr_creds_proxy_decides(w->node->cfg)
                 ? -ENOENT
                 : hr_creds_from_request(w->node->creds, wsi, HR_CREDS_QUERY, &id, &w->stats, err,
                                         sizeof(err));
    if (st == -EPERM)
        return hr_http_refuse(wsi, 401, err);
    if (st == 0 && !id.sub) {
        auth_identity_clear(&id);
        return hr_http_refuse(wsi, 401, "WebSocket clients authenticate with a JWT");
    }
    if (st == 0) {
        if (hr_conn_user_slot(w->node, id.sub, &hr_wsi_state_get(wsi)->user_slot) < 0) {
            auth_identity_clear(&id);
            return hr_http_refuse(wsi, 429, "too many connections for this user");
        }
        auth_identity *kept = hr_malloc(sizeof(*kept));
        *kept = id;
        hr_wsi_state_get(wsi)->upgrade_id = kept;
    }
    return 0;
}
