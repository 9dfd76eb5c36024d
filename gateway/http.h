/*
 * http.h - HTTP on the gateway's port: each request's lifecycle (framing,
 * body, pipelining, credentials, the route's access rule) and response,
 * and the answers given outside a request's flow (refused WebSocket
 * upgrades, bytes lws could not parse as HTTP).
 *
 * What a request means is not http.c's business: it finds the route in a
 * table (router.h) that the server passes in - the REST API's is rest.c's
 * - checks the route's access rule against the request's credentials
 * (creds.h) and runs the route's handler once the whole request is read.
 * A handler answers with hr_http_respond or a sibling, at once or later:
 * one that waits for another thread or the channel layer holds a
 * reference (hr_http_ref), so a client that hangs up early never leaves a
 * dangling pointer behind.
 *
 * Called by server.c's protocol callback, on the request's loop thread.
 */
#ifndef HR_HTTP_H
#define HR_HTTP_H

#include "gateway/node.h"
#include "gateway/router.h"

struct hr_http_req {
    /* read-only for handlers */
    struct lws *wsi; /* NULL once the client is gone */
    hr_worker *w;
    hr_node *node;
    char method[8];
    char path[1024]; /* a longest channel name fits with room to spare */
    char params[HR_ROUTE_PARAMS][HR_ROUTE_PARAM_MAX];
    int cred; /* 0: verified (id), -ENOENT: none presented, -EPERM: refused (cred_err) */
    auth_identity id;
    char cred_err[160];
    hr_buf body;   /* the whole body, once the handler runs */
    char peer[64]; /* client address (hr_client_address) */

    /* the handler's: set before answering */
    char login_key[80]; /* "u:<folded username>" while a login runs (rest_users.c) */
    int retry_after;    /* > 0: Retry-After header */
    int no_store;       /* Cache-Control: no-store (token responses) */
    char etag[48];      /* a static asset: ETag, Cache-Control: no-cache, any origin */
    int upgrade;        /* 426: say "Upgrade: websocket" */

    /* private (http.c) */
    int refs;
    const hr_routes *routes;
    int route;         /* index into routes, or < 0 */
    uint64_t start_us; /* headers read (metrics) */
    int body_too_large;
    int expect_body;
    int read_done;      /* the whole request (headers and body) has been read */
    int in_cb;          /* inside an lws callback that read it */
    int rx_off;         /* rx flow turned off while a worker has the request */
    int completions;    /* BODY_COMPLETION callbacks seen */
    int close_after;    /* framing refused: close once the answer is written */
    int from_buffer;    /* parsed from bytes lws had buffered (pipelined) */
    int kill;           /* answered outside lws' callbacks: close at the next writeable */
    lws_dll2_t in_loop; /* w->reqs */
    int status;         /* the response, once decided */
    const char *ctype;
    char *resp; /* LWS_PRE bytes of headroom, then resp_len bytes */
    size_t resp_len;
    char allow[64];
    int responded;
};

/*---- The lifecycle (server.c) ----------------------------------------------*/

/* LWS_CALLBACK_HTTP: a request's headers, routed through routes. */
int hr_http_request(hr_worker *w, struct lws *wsi, hr_pss *pss, const char *uri,
                    const hr_routes *routes);
int hr_http_body(hr_worker *w, struct lws *wsi, hr_pss *pss, const void *in, size_t len);
int hr_http_body_done(hr_worker *w, struct lws *wsi, hr_pss *pss);
int hr_http_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss);
void hr_http_drop(hr_pss *pss);
/* Frees requests still waiting for a worker once the loop has stopped. */
void hr_http_free_all(hr_worker *w);

/* RAW_ADOPT, RAW_RX, RAW_WRITEABLE, RAW_CLOSE: a connection lws could not
 * parse as HTTP (unknown method, not HTTP at all) and handed over as a raw
 * socket; it is answered 501 or 400 (problem+json) and closed. */
int hr_http_raw(hr_worker *w, struct lws *wsi, enum lws_callback_reasons reason, const void *in,
                size_t len);

/*---- For handlers ----------------------------------------------------------*/

/* A handler that answers later takes a reference and drops it after
 * answering; the request outlives its client until then. */
void hr_http_ref(hr_http_req *req);
void hr_http_unref(hr_http_req *req);

/* Answers the request (body copied); once per request, later calls and
 * answers to a client that is gone are ignored. The response leaves when
 * the whole request has been read. */
void hr_http_respond(hr_http_req *req, int status, const char *ctype, const char *body, size_t len);
/* The same with a JSON body (o borrowed). */
void hr_http_respond_json(hr_http_req *req, int status, json_t *o);
/* An RFC 9457 problem+json answer. */
void hr_http_problem(hr_http_req *req, int status, const char *detail);

/* Did the request come with an API key or an admin's token? */
int hr_http_is_admin(const hr_http_req *req);

/* A non-negative integer query argument (name with its '=', "limit=").
 * Returns 0 with *out set, -ENOENT when absent, -EINVAL when malformed. */
int hr_http_query_uint(hr_http_req *req, const char *name, uint64_t *out);

/* application/x-www-form-urlencoded lookup (pure): copies the decoded value
 * of key into out. Returns its length, -ENOENT when absent, or -EINVAL when
 * malformed or longer than outlen - 1. */
int hr_form_value(const char *body, size_t len, const char *key, char *out, size_t outlen);

/*---- Outside a request's flow ----------------------------------------------*/

/* Writes a complete HTTP error response at once and returns 1 (-1 if the
 * write failed). Only for refusing an upgrade in HTTP_CONFIRM_UPGRADE, whose
 * contract is "return >0 after writing your own response"; every other
 * response is written by the request's own flow. */
int hr_http_refuse(struct lws *wsi, int status, const char *detail);
/* The same with one more header (name with its colon, e.g.
 * "sec-websocket-version:"). */
int hr_http_refuse_hdr(struct lws *wsi, int status, const char *detail, const char *hname,
                       const char *hvalue);

/* An RFC 9457 problem+json body. Caller frees. */
char *hr_problem_json(int status, const char *detail, size_t *len);

/* Reason phrase for an HTTP status ("Not Found"); static storage. */
const char *hr_http_status_title(int status);

#endif
