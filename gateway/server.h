/*
 * server.h - the gateway's server: one libwebsockets context, its loop
 * thread, the channel layer shard of that thread, and the connections.
 *
 * Today Herald runs one loop thread. Everything that belongs to a loop lives
 * in hr_server so that a later version can run one hr_server per core (one
 * lws context each, sharing the listen port) with publications crossing
 * threads through per-loop inboxes.
 *
 * Internal to gateway/: ws.c (WebSocket protocol), http.c (REST routes) and
 * server.c (context, lifecycle, request authentication) share these types.
 */
#ifndef HR_SERVER_H
#define HR_SERVER_H

#include "auth/auth.h"
#include "channels/channels.h"
#include "common/common.h"
#include "config.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdint.h>

typedef struct hr_conn hr_conn;
typedef struct hr_http_req hr_http_req;

typedef struct hr_server {
    struct lws_context *ctx;
    const hr_config *cfg;
    chan_layer *layer;
    auth_jwt_config jwt;
    auth_service *users;        /* user store + Argon2id on worker threads */
    auth_throttle *logins;      /* failed logins per username (loop thread) */
    auth_throttle *login_addrs; /* failed logins per client address */
    hr_map *revoked;            /* user id -> (intptr_t) revocation time */
    hr_http_req *reqs;          /* every live HTTP request (for shutdown) */
    uint64_t next_client;       /* client ids are "<node>.<n>" */
    hr_conn *conns;             /* every live WebSocket connection (intrusive list) */
    size_t nconns;
    int shutting_down;
    int done;
    lws_sorted_usec_list_t sul_grace;
    lws_sorted_usec_list_t sul_revocations; /* cluster: poll the shared store */
    int revocation_poll_busy;
} hr_server;

/* libwebsockets per-session data: an HTTP request in progress, or a
 * WebSocket connection (after the upgrade), never both. */
typedef struct hr_pss {
    hr_http_req *req;
    hr_conn *conn;
    auth_identity *handshake_id; /* identity from the upgrade request, until ESTABLISHED */
} hr_pss;

/*---- server.c --------------------------------------------------------------*/

/* Creates the context and listener; cfg must outlive the server. Returns 0
 * or -1 (logged). */
int hr_server_init(hr_server *srv, const hr_config *cfg);
/* Runs the loop until shutdown completes. Returns the process exit code. */
int hr_server_run(hr_server *srv);
/* Frees everything hr_server_init created. */
void hr_server_destroy(hr_server *srv);

/* Credentials of a request, from the Authorization header (Bearer <jwt> or
 * ApiKey <key>), X-API-Key, or - when allow_query - ?token=<jwt>. */
typedef enum hr_cred_status {
    HR_CRED_NONE = 0, /* no credentials presented */
    HR_CRED_OK,
    HR_CRED_BAD, /* presented and refused; reason in err */
} hr_cred_status;

/* Verifies a JWT and applies revocations (deleted users). Fills *id
 * (caller clears it); on failure writes a reason to err. */
hr_cred_status hr_server_verify_jwt(hr_server *srv, const char *token, auth_identity *id, char *err,
                                    size_t errlen);
/* Records that tokens of user_id issued up to `at` are no longer valid.
 * Returns 1 if this is newer than what the node knew, else 0. */
int hr_server_revoke(hr_server *srv, const char *user_id, int64_t at);

/* Authenticates the request on wsi into *id (caller clears it). */
hr_cred_status hr_server_authenticate(hr_server *srv, struct lws *wsi, int allow_query,
                                      auth_identity *id, char *err, size_t errlen);

/* Writes a complete HTTP response immediately and returns 1 (-1 if the
 * write failed). Only for refusing an upgrade in HTTP_CONFIRM_UPGRADE,
 * whose contract is "return >0 after writing your own response"; every
 * other response is written from HTTP_WRITEABLE. */
int hr_server_refuse(struct lws *wsi, int status, const char *detail);

/* Builds an RFC 9457 problem+json body. Caller frees. */
char *hr_problem_json(int status, const char *detail, size_t *len);

/*---- ws.c ------------------------------------------------------------------*/

/* The channel layer's deliver callback: queues m on the connection. */
void hr_ws_deliver(void *owner, chan_msg *m);
/* HTTP_CONFIRM_UPGRADE: path, Origin and credentials of an upgrade.
 * Returns 0 to let it proceed, >0 after refusing it with a response. */
int hr_ws_filter(hr_server *srv, struct lws *wsi, hr_pss *pss, const char *upgrade);
/* FILTER_PROTOCOL_CONNECTION: keeps the handshake identity in pss. */
int hr_ws_bind_identity(hr_server *srv, struct lws *wsi, hr_pss *pss);
int hr_ws_established(hr_server *srv, struct lws *wsi, hr_pss *pss);
int hr_ws_receive(hr_server *srv, struct lws *wsi, hr_pss *pss, const void *in, size_t len);
int hr_ws_writeable(hr_server *srv, struct lws *wsi, hr_pss *pss);
int hr_ws_timer(hr_server *srv, struct lws *wsi, hr_pss *pss);
void hr_ws_closed(hr_server *srv, struct lws *wsi, hr_pss *pss);
/* Closes every connection of user `sub` with code (4003). Returns how many. */
size_t hr_ws_disconnect_user(hr_server *srv, const char *sub, int code, const char *reason);
/* Starts closing every connection with 1001 (after flushing its queue). */
void hr_ws_shutdown_all(hr_server *srv);

/*---- http.c ----------------------------------------------------------------*/

int hr_http_request(hr_server *srv, struct lws *wsi, hr_pss *pss, const char *uri);
int hr_http_body(hr_server *srv, struct lws *wsi, hr_pss *pss, const void *in, size_t len);
int hr_http_body_done(hr_server *srv, struct lws *wsi, hr_pss *pss);
int hr_http_writeable(hr_server *srv, struct lws *wsi, hr_pss *pss);
void hr_http_drop(hr_pss *pss);
/* Frees requests still waiting for a worker at shutdown. */
void hr_http_free_all(hr_server *srv);

/* application/x-www-form-urlencoded lookup (pure): copies the decoded value
 * of key into out. Returns its length, -1 when absent, -2 when malformed
 * or longer than outlen - 1. */
int hr_form_value(const char *body, size_t len, const char *key, char *out, size_t outlen);

/* Reason phrase for an HTTP status ("Not Found"); static storage. */
const char *hr_http_status_title(int status);

/* The pure part of the router, for unit tests: finds the route for method
 * and path. Returns the route index (>= 0), -404 when no route has that
 * path, or -405 when the path exists with other methods (allow receives
 * them, e.g. "GET, POST"). Path parameters are copied into params[]. */
int hr_http_route(const char *method, const char *path, char params[][256], size_t nparams,
                  char *allow, size_t allowlen);

#endif
