/*
 * server.c - the lws protocol callback and the node's hooks (see
 * server.h). Every case of the callback hands the event to the module that
 * owns it; nothing else here decides anything.
 */
#include "gateway/server.h"
#include "gateway/api.h"
#include "gateway/http.h"
#include "gateway/proxy_call.h"
#include "gateway/rest.h"
#include "gateway/ws_cmd.h"
#include "gateway/ws_conn.h"
#include "gateway/ws_deflate.h"
#include "gateway/ws_upgrade.h"

#include <stdlib.h>

static int dispatch(hr_worker *w, struct lws *wsi, enum lws_callback_reasons reason, hr_pss *pss,
                    void *user, void *in, size_t len)
{

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return hr_http_request(w, wsi, pss, in, &hr_rest_routes);
    case LWS_CALLBACK_HTTP_BODY:
        return hr_http_body(w, wsi, pss, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return hr_http_body_done(w, wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return hr_http_writeable(w, wsi, pss);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss)
            hr_http_drop(pss);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return hr_ws_confirm_upgrade(w, wsi, in);
    case LWS_CALLBACK_ADD_HEADERS:
        return hr_pmd_add_headers(wsi, in);
    case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
        return 0; /* lws_callback_http_dummy refuses every extension */
    case LWS_CALLBACK_ESTABLISHED:
        return hr_ws_established(w, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return hr_ws_receive(w, wsi, pss, in, len, hr_ws_command);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return hr_ws_writeable(w, wsi, pss);
    case LWS_CALLBACK_TIMER:
        return hr_ws_timer(w, wsi, pss);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return hr_ws_peer_close(wsi, pss, in, len);
    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
        hr_ws_dropped(w, wsi, pss);
        return 0;
    case LWS_CALLBACK_RAW_ADOPT:
    case LWS_CALLBACK_RAW_RX:
    case LWS_CALLBACK_RAW_WRITEABLE:
    case LWS_CALLBACK_RAW_CLOSE:
        return hr_http_raw(w, wsi, reason, in, len);
    case LWS_CALLBACK_CLOSED:
        hr_ws_closed(w, wsi, pss);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        hr_wsi_state_free(wsi);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* in_lws tells code that may run either inside lws' service or in another
 * callback of the loop (a backend proxy's answer) which one it is in
 * (ws_conn.c's timers). */
static int callback_herald(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    hr_worker *w = hr_worker_of(lws_context_user(lws_get_context(wsi)));
    w->in_lws++;
    int rc = dispatch(w, wsi, reason, user, user, in, len);
    w->in_lws--;
    return rc;
}

/*---- The node's hooks ------------------------------------------------------*/

static int worker_init(hr_worker *w)
{
    const hr_config *cfg = w->node->cfg;
    w->by_user = hr_map_new(NULL);
    w->scratch = hr_malloc(LWS_PRE + HR_SCRATCH);
    if (cfg->ws_compression)
        w->pmd = hr_pmd_loop_new();
    if (hr_proxy_configured(cfg) &&
        !(w->proxy = hr_proxy_client_new(&w->loop.uv, cfg, w->node->nworkers, &w->stats)))
        return -1;
    return 0;
}

/* Calls still out are answered unavailable. */
static void worker_stop(hr_worker *w)
{
    hr_proxy_client_close(w->proxy);
    w->proxy = NULL;
}

static void worker_free(hr_worker *w)
{
    hr_conn_flush_pending(w); /* drops the references of closed connections */
    hr_http_free_all(w);
    hr_map_free(w->by_user);
    free(w->pending);
    free(w->scratch);
    hr_pmd_loop_free(w->pmd);
}

static unsigned clients(hr_worker *w)
{
    return (unsigned)w->conns.count;
}

static void disconnect(hr_worker *w, const char *user, int code)
{
    hr_conn_disconnect_user(w, user, code,
                            code == 4003 ? "disconnected by the server" : "disconnected");
}

static hr_server_hooks hooks = {
    /* The rx buffer bounds one RECEIVE callback, not a message (ws_conn.c
     * reassembles); a coalesced write takes up to HR_SCRATCH bytes. */
    .callback = callback_herald,
    .pss_size = sizeof(hr_pss),
    .rx_buffer = HR_WS_RX_BUFFER,
    .tx_packet = HR_SCRATCH + LWS_PRE,
    .worker_init = worker_init,
    .worker_stop = worker_stop,
    .worker_free = worker_free,
    .flush = hr_conn_flush_pending,
    .shutdown = hr_conn_shutdown_all,
    .clients = clients,
    .sub = {hr_conn_deliver, hr_api_subscribed},
    .member = hr_api_member,
    .disconnect = disconnect,
};

const hr_server_hooks *hr_server_hooks_for(const hr_config *cfg)
{
    /* permessage-deflate: Herald's own extension (ws_deflate.c) */
    hooks.extensions = cfg->ws_compression ? hr_pmd_extensions(hr_ws_pmd_host(cfg)) : NULL;
    return &hooks;
}
