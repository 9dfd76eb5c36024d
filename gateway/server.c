/*
 * server.c - the libwebsockets context, the protocol callback that routes
 * every event to ws.c or http.c, request authentication, and the
 * lifecycle: start, serve, graceful shutdown on SIGTERM/SIGINT.
 */
#include "server.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Signal handlers may only touch these. lws_cancel_service() writes to the
 * loop's wake-up pipe, which is safe from a handler. */
static volatile sig_atomic_t g_signalled;
static struct lws_context *volatile g_ctx;

static void on_signal(int sig)
{
    (void)sig;
    g_signalled = 1;
    if (g_ctx)
        lws_cancel_service(g_ctx);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/*---- Revocations from other nodes -----------------------------------------*/

/* How often a node sharing a Redis user store looks for users deleted
 * through another node. A deleted user's tokens stop working here, and
 * their sockets here close 4003, within this period. */
#define HR_REVOCATION_POLL_MS 2000

static void revocations_polled(void *ud, auth_status st, const auth_revocation *list, size_t n)
{
    hr_server *srv = ud;
    srv->revocation_poll_busy = 0;
    if (st != AUTH_OK)
        return; /* the store is unreachable: try again next period */
    for (size_t i = 0; i < n; i++)
        if (hr_server_revoke(srv, list[i].user_id, list[i].at))
            hr_ws_disconnect_user(srv, list[i].user_id, 4003, "user deleted");
}

static void poll_revocations(lws_sorted_usec_list_t *sul)
{
    hr_server *srv = lws_container_of(sul, hr_server, sul_revocations);
    if (srv->shutting_down)
        return;
    if (!srv->revocation_poll_busy) {
        srv->revocation_poll_busy = 1;
        auth_list_revocations(srv->users, revocations_polled, srv);
    }
    lws_sul_schedule(srv->ctx, 0, &srv->sul_revocations, poll_revocations,
                     (lws_usec_t)HR_REVOCATION_POLL_MS * LWS_US_PER_MS);
}

/*---- Shutdown --------------------------------------------------------------*/

static void grace_expired(lws_sorted_usec_list_t *sul)
{
    hr_server *srv = lws_container_of(sul, hr_server, sul_grace);
    hr_warn("shutdown", "grace period over with %zu connection(s) still open", srv->nconns);
    srv->done = 1;
}

/* Refuses new work (upgrades and HTTP requests get 503 from here on), asks
 * every WebSocket to close with 1001 after flushing, and bounds the wait
 * with the grace timer. lws_context_deprecate() would close the listener,
 * but in lws 4.1.6 it reads the listen wsi after freeing it (crash). */
static void begin_shutdown(hr_server *srv)
{
    if (srv->shutting_down)
        return;
    srv->shutting_down = 1;
    hr_info("shutdown", "signal received, closing %zu connection(s)", srv->nconns);
    hr_ws_shutdown_all(srv);
    if (srv->nconns == 0)
        srv->done = 1;
    else
        lws_sul_schedule(srv->ctx, 0, &srv->sul_grace, grace_expired,
                         (lws_usec_t)srv->cfg->shutdown_grace_ms * LWS_US_PER_MS);
}

/*---- The protocol callback -------------------------------------------------*/

static int callback_herald(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    hr_server *srv = lws_context_user(lws_get_context(wsi));
    hr_pss *pss = user;

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* woken by a signal handler or by a finished worker job */
        if (srv->users)
            auth_service_drain(srv->users);
        if (g_signalled)
            begin_shutdown(srv);
        return 0;
    case LWS_CALLBACK_HTTP:
        return hr_http_request(srv, wsi, pss, in);
    case LWS_CALLBACK_HTTP_BODY:
        return hr_http_body(srv, wsi, pss, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return hr_http_body_done(srv, wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return hr_http_writeable(srv, wsi, pss);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss)
            hr_http_drop(pss);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return hr_ws_filter(srv, wsi, pss, in);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return hr_ws_bind_identity(srv, wsi, pss);
    case LWS_CALLBACK_ESTABLISHED:
        return hr_ws_established(srv, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return hr_ws_receive(srv, wsi, pss, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return hr_ws_writeable(srv, wsi, pss);
    case LWS_CALLBACK_TIMER:
        return hr_ws_timer(srv, wsi, pss);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* RFC 6455 §5.5.1: a close payload is empty or holds a 2-byte code;
         * lws 4.1 would echo a 1-byte one back. */
        if (len == 1)
            return lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
                                    (unsigned char *)"bad close payload", 17),
                   -1;
        return 0;
    case LWS_CALLBACK_CLOSED:
        hr_ws_closed(srv, wsi, pss);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* One protocol serves HTTP and WebSocket, so clients that offer no
 * Sec-WebSocket-Protocol (browsers usually don't) land on it too. */
static const struct lws_protocols protocols[] = {
    {"herald", callback_herald, sizeof(hr_pss), 16384, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/*---- Lifecycle -------------------------------------------------------------*/

/* Called on worker threads when a job finished: wakes the loop, which
 * then drains the completions in EVENT_WAIT_CANCELLED. */
static void wake_loop(void *ud)
{
    hr_server *srv = ud;
    if (srv->ctx)
        lws_cancel_service(srv->ctx);
}

static void load_revocation(void *ud, const char *id, int64_t at)
{
    hr_server_revoke(ud, id, at);
}

/* The user store: Redis when HERALD_REDIS_URL is set (every node sees the
 * same users), else the SQLite file. Revocations are loaded once here;
 * later ones arrive through hr_server_revoke. Start-up only: blocking. */
static int start_users(hr_server *srv, char *err, size_t errlen)
{
    const hr_config *cfg = srv->cfg;
    auth_service_config sc = {
        .store = cfg->redis_url ? &auth_store_redis_ops : &auth_store_sqlite_ops,
        .target = cfg->redis_url ? cfg->redis_url : cfg->db_path,
        .prefix = cfg->redis_prefix,
        .workers = cfg->auth_workers,
        .wake = wake_loop,
        .wake_ud = srv,
    };
    if (!(srv->revoked = hr_map_new(NULL)) ||
        !(srv->logins = auth_throttle_new(cfg->login_max_failures, cfg->login_window, 100000)) ||
        !(srv->login_addrs =
              auth_throttle_new(cfg->login_max_failures * 4, cfg->login_window, 100000))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    auth_store *st = sc.store->open(sc.target, sc.prefix, err, errlen);
    if (!st)
        return -1;
    auth_status rc = sc.store->init(st, err, errlen);
    if (rc == AUTH_OK)
        rc = sc.store->list_revoked(st, load_revocation, srv);
    sc.store->close(st);
    if (rc != AUTH_OK) {
        if (!err[0])
            snprintf(err, errlen, "cannot read revocations from the %s store", sc.store->name);
        return -1;
    }
    srv->users = auth_service_new(&sc, err, errlen);
    return srv->users ? 0 : -1;
}

int hr_server_init(hr_server *srv, const hr_config *cfg)
{
    struct lws_context_creation_info info;
    char err[256] = "";

    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    if (start_users(srv, err, sizeof(err)) < 0) {
        hr_error("store", "%s", err);
        return -1;
    }
    auth_jwt_settings js;
    hr_config_jwt_settings(cfg, &js);
    if (auth_jwt_setup(&srv->jwt, &js, err, sizeof(err)) < 0) {
        hr_error("config", "%s", err);
        return -1;
    }
    srv->layer = chan_local_new(hr_ws_deliver);
    if (!srv->layer)
        return -1;

    memset(&info, 0, sizeof(info));
    info.port = cfg->listen_port;
    info.iface = strcmp(cfg->listen_host, "0.0.0.0") ? cfg->listen_host : NULL;
    info.protocols = protocols;
    info.user = srv;
    info.max_http_header_data = 16384; /* room for long JWTs */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
                   LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    if (!strchr(cfg->listen_host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.vhost_name = "herald";
    info.timeout_secs = 10;

    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        hr_error("listen", "cannot listen on %s:%d", cfg->listen_host, cfg->listen_port);
        return -1;
    }
    g_ctx = srv->ctx;
    install_signals();
    hr_info("listening", "herald %s listening on %s:%d (channel layer %s, users in %s)",
            HERALD_VERSION, cfg->listen_host, cfg->listen_port, srv->layer->ops->name,
            cfg->redis_url ? "redis" : "sqlite");
    if (cfg->redis_url)
        lws_sul_schedule(srv->ctx, 0, &srv->sul_revocations, poll_revocations,
                         (lws_usec_t)HR_REVOCATION_POLL_MS * LWS_US_PER_MS);
    if (cfg->redis_url)
        hr_warn("config", "the Redis channel layer is not built yet: publications reach only "
                          "this node's subscribers; users are shared through Redis");
    return 0;
}

int hr_server_run(hr_server *srv)
{
    while (!srv->done)
        if (lws_service(srv->ctx, 0) < 0)
            break;
    hr_info("stopped", "all connections closed, exiting");
    return 0;
}

/* Order matters: workers wake the loop through the context, so they stop
 * first (pending jobs are dropped); then the context closes every socket
 * (CLOSED callbacks need the channel layer); then requests that were still
 * waiting for a worker are freed. */
void hr_server_destroy(hr_server *srv)
{
    auth_service_free(srv->users);
    srv->users = NULL;
    if (srv->ctx) {
        g_ctx = NULL;
        lws_context_destroy(srv->ctx);
        srv->ctx = NULL;
    }
    hr_http_free_all(srv);
    chan_layer_destroy(srv->layer);
    srv->layer = NULL;
    auth_jwt_config_clear(&srv->jwt);
    auth_throttle_free(srv->logins);
    auth_throttle_free(srv->login_addrs);
    srv->logins = srv->login_addrs = NULL;
    hr_map_free(srv->revoked);
    srv->revoked = NULL;
}

/*---- Request authentication ------------------------------------------------*/

static hr_cred_status check_api_key(hr_server *srv, const char *key, auth_identity *id, char *err,
                                    size_t errlen)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < srv->cfg->napi_keys; i++) {
        const char *k = srv->cfg->api_keys[i];
        if (hr_secure_eq(k, strlen(k), key, klen)) {
            id->backend = 1;
            return HR_CRED_OK;
        }
    }
    snprintf(err, errlen, "invalid API key");
    HR_INC(auth_failures, 1);
    return HR_CRED_BAD;
}

int hr_server_revoke(hr_server *srv, const char *user_id, int64_t at)
{
    size_t len = strlen(user_id);
    if (at <= (intptr_t)hr_map_get(srv->revoked, user_id, len))
        return 0;
    return hr_map_put(srv->revoked, user_id, len, (void *)(intptr_t)at) == 0;
}

/* Tokens of a deleted user issued up to the deletion are refused; a token
 * without iat cannot prove it is newer, so it is refused too. */
static int is_revoked(hr_server *srv, const auth_identity *id)
{
    intptr_t at = id->sub ? (intptr_t)hr_map_get(srv->revoked, id->sub, strlen(id->sub)) : 0;
    return at && id->iat <= at;
}

hr_cred_status hr_server_verify_jwt(hr_server *srv, const char *token, auth_identity *id, char *err,
                                    size_t errlen)
{
    err[0] = '\0';
    auth_jwt_status st = auth_jwt_verify(&srv->jwt, token, time(NULL), id, err, errlen);
    if (st == AUTH_JWT_OK && !is_revoked(srv, id))
        return HR_CRED_OK;
    if (st == AUTH_JWT_OK)
        snprintf(err, errlen, "the user was deleted");
    else if (!err[0])
        snprintf(err, errlen, "%s", auth_jwt_status_str(st));
    auth_identity_clear(id);
    HR_INC(auth_failures, 1);
    return HR_CRED_BAD;
}

/* Copies a header into buf; -1 when absent, -2 when larger than buf. */
static int copy_header(struct lws *wsi, enum lws_token_indexes tok, char *buf, int len)
{
    if (lws_hdr_total_length(wsi, tok) <= 0)
        return -1;
    return lws_hdr_copy(wsi, buf, len, tok) < 0 ? -2 : 0;
}

hr_cred_status hr_server_authenticate(hr_server *srv, struct lws *wsi, int allow_query,
                                      auth_identity *id, char *err, size_t errlen)
{
    char buf[9000];
    const char *v;
    hr_cred_status st = HR_CRED_NONE;

    err[0] = '\0';
    int n = copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, buf, sizeof(buf));
    if (n == -2) {
        snprintf(err, errlen, "Authorization header too large");
        st = HR_CRED_BAD;
    } else if (n == 0) {
        if (!strncasecmp(buf, "Bearer ", 7))
            st = hr_server_verify_jwt(srv, buf + 7, id, err, errlen);
        else if (!strncasecmp(buf, "ApiKey ", 7))
            st = check_api_key(srv, buf + 7, id, err, errlen);
        else {
            snprintf(err, errlen, "unsupported Authorization scheme (use Bearer or ApiKey)");
            st = HR_CRED_BAD;
        }
    } else if (lws_hdr_custom_length(wsi, "x-api-key:", 10) > 0) {
        if (lws_hdr_custom_copy(wsi, buf, sizeof(buf), "x-api-key:", 10) < 0) {
            snprintf(err, errlen, "X-API-Key header too large");
            st = HR_CRED_BAD;
        } else {
            st = check_api_key(srv, buf, id, err, errlen);
        }
    } else if (allow_query && (v = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof(buf)))) {
        st = hr_server_verify_jwt(srv, v, id, err, errlen);
    }
    if (st == HR_CRED_BAD)
        auth_identity_clear(id);
    return st;
}

/*---- Responses outside the writeable callback ------------------------------*/

char *hr_problem_json(int status, const char *detail, size_t *len)
{
    json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title",
                          hr_http_status_title(status), "status", status, "detail", detail);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s)
        *len = strlen(s);
    return s;
}

int hr_server_refuse(struct lws *wsi, int status, const char *detail)
{
    size_t blen = 0;
    char *body = hr_problem_json(status, detail, &blen);
    unsigned char buf[LWS_PRE + 4096], *start = buf + LWS_PRE;

    if (!body)
        return -1;
    /* Written by hand: lws's header helpers say HTTP/1.0 before the request
     * version is known, and strict clients (python websockets) reject that. */
    int n = snprintf((char *)start, sizeof(buf) - LWS_PRE,
                     "HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
                     "content-length: %zu\r\nconnection: close\r\n\r\n%s",
                     status, hr_http_status_title(status), blen, body);
    free(body);
    if (n < 0 || (size_t)n >= sizeof(buf) - LWS_PRE)
        return -1;
    /* >0 tells lws the upgrade was refused with our own response. */
    return lws_write(wsi, start, (size_t)n, LWS_WRITE_HTTP) < 0 ? -1 : 1;
}
