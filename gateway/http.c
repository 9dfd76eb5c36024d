/*
 * http.c - the REST API on the gateway's port (SPEC §4): a table-driven
 * router, request bodies gathered up to a bound, JSON handlers, and
 * responses written only from the HTTP writeable callback.
 *
 * Every error is application/problem+json (RFC 9457). A handler that waits
 * for an asynchronous result (the Redis channel layer) holds a reference to
 * its request, so a client that hangs up early never leaves a dangling
 * pointer behind.
 */
#include "http.h"
#include "herald_js.h" /* generated from web/herald.js (cmake/embed.cmake) */
#include "log.h"
#include "proto.h"
#include "static.h"
#include "ws.h"

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define HR_MAX_PARAMS 2

struct hr_http_req {
    struct lws *wsi; /* NULL once the client is gone */
    int refs;
    hr_loop *loop;
    hr_node *node;
    char method[8];
    char path[256];
    int route;
    uint64_t start_us; /* headers read (metrics) */
    char params[HR_MAX_PARAMS][256];
    hr_cred_status cred;
    auth_identity id;
    char cred_err[160];
    hr_buf body;
    int body_too_large;
    int expect_body;
    int read_done;   /* the whole request (headers and body) has been read */
    int in_cb;       /* inside an lws callback that read it */
    int rx_off;      /* rx flow turned off while a worker has the request */
    int completions; /* BODY_COMPLETION callbacks seen */
    int close_after; /* framing refused: close once the answer is written */
    int from_buffer; /* parsed from bytes lws had buffered (pipelined) */

    lws_dll2_t in_loop; /* loop->reqs */
    char peer[64];      /* client address, for login throttling */
    char login_key[80]; /* "u:<folded username>" while a login runs */

    /* the response, once decided */
    int retry_after; /* > 0: Retry-After header */
    int no_store;    /* Cache-Control: no-store (token responses) */
    char etag[48];   /* a static asset: ETag, Cache-Control: no-cache, any origin */
    int status;
    const char *ctype;
    char *resp; /* LWS_PRE bytes of headroom, then resp_len bytes */
    size_t resp_len;
    char allow[64];
    int responded;
};

typedef void (*route_fn)(hr_http_req *req);

/* Who may call a route; checked before its handler runs. */
typedef enum route_auth {
    ROUTE_ANYONE,   /* no credentials needed (bad ones are still refused) */
    ROUTE_OPTIONAL, /* the handler decides from the credentials (registration) */
    ROUTE_USER,     /* a user's Bearer token */
    ROUTE_BACKEND,  /* API key, or a token with role admin or publisher */
    ROUTE_ADMIN,    /* API key, or a token with role admin */
} route_auth;

typedef struct route {
    const char *method;
    const char *pattern; /* "{x}" matches one path segment */
    route_auth auth;
    int async; /* ASYNC_WORKER: answered by a worker (user store, Argon2id);
                * ASYNC_LAYER: by the channel layer (Redis, in cluster mode) */
    route_fn fn;
} route;

static void h_healthz(hr_http_req *req);
static void h_readyz(hr_http_req *req);
static void h_metrics(hr_http_req *req);
static void h_publish(hr_http_req *req);
static void h_broadcast(hr_http_req *req);
static void h_user_create(hr_http_req *req);
static void h_token(hr_http_req *req);
static void h_me(hr_http_req *req);
static void h_user_get(hr_http_req *req);
static void h_user_delete(hr_http_req *req);
static void h_user_disconnect(hr_http_req *req);
static void h_member_add(hr_http_req *req);
static void h_member_remove(hr_http_req *req);
static void h_presence(hr_http_req *req);
static void h_history(hr_http_req *req);
static void h_herald_js(hr_http_req *req);
static int serve_static(hr_http_req *req);

#define ASYNC_WORKER 1
#define ASYNC_LAYER 2

/* Order matters where patterns overlap: /users/me before /users/{id}. */
static const route routes[] = {
    {"GET", "/healthz", ROUTE_ANYONE, 0, h_healthz},
    {"GET", "/readyz", ROUTE_ANYONE, 0, h_readyz},
    {"GET", "/metrics", ROUTE_ANYONE, 0, h_metrics},
    {"POST", "/api/v1/publish", ROUTE_BACKEND, ASYNC_LAYER, h_publish},
    {"POST", "/api/v1/broadcast", ROUTE_BACKEND, ASYNC_LAYER, h_broadcast},
    {"POST", "/api/v1/users", ROUTE_OPTIONAL, ASYNC_WORKER, h_user_create},
    {"POST", "/api/v1/auth/token", ROUTE_ANYONE, ASYNC_WORKER, h_token},
    {"GET", "/api/v1/users/me", ROUTE_USER, ASYNC_WORKER, h_me},
    {"GET", "/api/v1/users/{id}", ROUTE_ADMIN, ASYNC_WORKER, h_user_get},
    {"DELETE", "/api/v1/users/{id}", ROUTE_ADMIN, ASYNC_WORKER, h_user_delete},
    {"POST", "/api/v1/users/{id}/disconnect", ROUTE_ADMIN, ASYNC_LAYER, h_user_disconnect},
    {"POST", "/api/v1/channels/{ch}/members", ROUTE_BACKEND, ASYNC_LAYER, h_member_add},
    {"DELETE", "/api/v1/channels/{ch}/members/{user}", ROUTE_BACKEND, ASYNC_LAYER, h_member_remove},
    {"GET", "/api/v1/channels/{ch}/presence", ROUTE_BACKEND, ASYNC_LAYER, h_presence},
    {"GET", "/api/v1/channels/{ch}/history", ROUTE_BACKEND, ASYNC_LAYER, h_history},
    {"GET", "/herald.js", ROUTE_ANYONE, 0, h_herald_js},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/*---- Router (pure) ---------------------------------------------------------*/

/* Matches path against pattern segment by segment, copying {params}. */
static int path_matches(const char *pattern, const char *path, char params[][256], size_t np)
{
    size_t pi = 0;
    while (*pattern && *path) {
        if (*pattern == '{') {
            const char *pe = strchr(pattern, '}');
            size_t n = strcspn(path, "/");
            if (!pe || n == 0 || n >= 256 || pi >= np)
                return 0;
            memcpy(params[pi], path, n);
            params[pi++][n] = '\0';
            pattern = pe + 1;
            path += n;
        } else if (*pattern++ != *path++) {
            return 0;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

int hr_http_route(const char *method, const char *path, char params[][256], size_t nparams,
                  char *allow, size_t allowlen)
{
    int path_seen = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < NROUTES; i++) {
        if (!path_matches(routes[i].pattern, path, params, nparams))
            continue;
        if (!strcmp(routes[i].method, method)) {
            allow[0] = '\0'; /* Allow is only for 405 */
            return (int)i;
        }
        size_t al = strlen(allow);
        snprintf(allow + al, allowlen - al, "%s%s", path_seen ? ", " : "", routes[i].method);
        path_seen = 1;
    }
    return path_seen ? -405 : -404;
}

const char *hr_http_status_title(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

/*---- Responses -------------------------------------------------------------*/

static void req_unref(hr_http_req *req)
{
    if (--req->refs > 0)
        return;
    lws_dll2_remove(&req->in_loop);
    auth_identity_clear(&req->id);
    hr_buf_reset(&req->body);
    free(req->resp);
    free(req);
}

/*
 * Responses and pipelining (lws 4.1.6).
 *
 * lws stashes the bytes that follow a request in the same read (a
 * pipelined request) in the connection's buflist and parses the next
 * request out of it after the transaction completes. When that request has
 * a body, lws_http_action loops "while the buflist holds bytes,
 * lws_read_h1()" over a segment that still starts with the request's own
 * headers: it hands them to us as the body, then calls BODY_COMPLETION
 * again and again consuming nothing - a 100% CPU spin, deaf to every
 * client and to SIGTERM, from one packet. Failing a callback inside that
 * loop frees the connection under lws (safe only where libuv defers the
 * free). So:
 *
 * - a request parsed out of lws' buffer is recognised in LWS_CALLBACK_HTTP,
 *   before that loop: lws reads nothing from the socket while it holds
 *   buffered bytes, so "no byte read since the last transaction completed"
 *   (TCP_INFO bytes received minus bytes queued, hr_sock_bytes_consumed)
 *   means exactly "pipelined". With a body it is answered 503 with
 *   Connection: close at once; so is one for a worker-answered route,
 *   since lws would poll the bytes behind it in vain while the worker
 *   runs. Pipelined requests without a body are served in order (RFC 9112
 *   lets a server close instead of serving the rest of a pipeline);
 * - BODY_COMPLETION, which lws repeats while an answer is pending,
 *   dispatches once;
 * - a response decided inside lws' callbacks is written and its
 *   transaction completed together in the next writeable callback, so no
 *   client sees an answer before lws is ready for its next request;
 * - while a worker has a request, its rx flow is off (no socket bytes are
 *   read, so none are polled in vain); h1 then services no POLLOUT, so the
 *   worker's answer is written and completed directly;
 * - a response decided before the request's body has arrived (an early
 *   4xx) waits for the body, so body bytes are never parsed as a request;
 * - framing Herald does not support is refused and closed
 *   (framing_refused).
 */
static int write_response(hr_http_req *req);

/* Completes the transaction, first recording how many bytes had been read
 * from the socket: a next request parsed without a byte read since came
 * out of lws' buffer (pipelined). Returns lws' verdict (nonzero: close). */
static int complete_transaction(struct lws *wsi)
{
    hr_wsi_state *st = hr_wsi_state_get(wsi);
    /* a lower bound here and an upper bound at the next request: a client
     * that waited for this answer always shows more bytes read */
    st->consumed_at_tc = hr_sock_bytes_consumed(lws_get_socket_fd(wsi), 0);
    st->tc_valid = 1;
    return lws_http_transaction_completed(wsi);
}

static void send_response(hr_http_req *req)
{
    struct lws *wsi = req->wsi;
    if (req->in_cb) {
        lws_callback_on_writable(wsi);
        return;
    }
    if (req->rx_off) {
        req->rx_off = 0;
        lws_rx_flow_control(wsi, 1);
    }
    if (write_response(req) < 0 || complete_transaction(wsi))
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* Stores the response (copying body) and sends it once the request has
 * been read. */
static void respond(hr_http_req *req, int status, const char *ctype, const char *body, size_t len)
{
    if (req->responded || !req->wsi)
        return;
    req->resp = hr_malloc(LWS_PRE + len + 1);
    memcpy(req->resp + LWS_PRE, body, len);
    req->resp_len = len;
    req->status = status;
    req->ctype = ctype;
    req->responded = 1;
    hr_hist_observe(
        &req->loop->stats
             .http[req->route >= 0 && req->route < HR_MAX_ROUTES ? req->route : HR_MAX_ROUTES],
        hr_now_us() - req->start_us);
    if (req->read_done)
        send_response(req);
}

static void respond_json(hr_http_req *req, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        respond(req, status, "application/json", s, strlen(s));
    else
        respond(req, 500, "application/problem+json", "{}", 2);
    free(s);
}

static void problem(hr_http_req *req, int status, const char *detail)
{
    size_t len = 0;
    char *s = hr_problem_json(status, detail, &len);
    respond(req, status, "application/problem+json", s ? s : "{}", s ? len : 2);
    free(s);
}

/* lws 4.1.6 knows reason phrases for only some statuses ("HTTP/1.1 201 "
 * goes out bare, as do 204, 422, 429...), and says HTTP/1.0 until it has
 * read the request's version (upgrade refusals, raw answers). Rewrites the
 * status line lws put at the start of [start, *p) as "<version> <status>
 * <title>": lws' version, or HTTP/1.1 when force11. An HTTP/2 header block
 * (no status line) is left alone. Returns 0, or -1 when end leaves no
 * room. */
static int fix_status_line(unsigned char *start, unsigned char **p, unsigned char *end, int status,
                           int force11)
{
    size_t used = (size_t)(*p - start), old = 0;
    char line[96];
    if (used < 8 || memcmp(start, "HTTP/1.", 7) != 0)
        return 0;
    while (old + 1 < used && !(start[old] == '\r' && start[old + 1] == '\n'))
        old++;
    if (old + 1 >= used)
        return -1;
    int n = snprintf(line, sizeof(line), "%.8s %d %s", force11 ? "HTTP/1.1" : (char *)start, status,
                     hr_http_status_title(status));
    if (n <= 0 || (size_t)n >= sizeof(line) || (size_t)(end - start) < used - old + (size_t)n)
        return -1;
    memmove(start + n, start + old, used - old);
    memcpy(start, line, (size_t)n);
    *p = start + n + (used - old);
    return 0;
}

/* Headers, then the body. Returns 0, or -1 when the connection failed. */
static int write_response(hr_http_req *req)
{
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr);
    struct lws *wsi = req->wsi;
    if (lws_add_http_common_headers(wsi, (unsigned int)req->status, req->ctype, req->resp_len, &p,
                                    end) ||
        fix_status_line(start, &p, end, req->status, 0) < 0)
        return -1;
    if (req->allow[0] && lws_add_http_header_by_name(wsi, (const unsigned char *)"allow:",
                                                     (const unsigned char *)req->allow,
                                                     (int)strlen(req->allow), &p, end))
        return -1;
    if (req->retry_after > 0) {
        char ra[16];
        int n = snprintf(ra, sizeof(ra), "%d", req->retry_after);
        if (lws_add_http_header_by_name(
                wsi, (const unsigned char *)"retry-after:", (const unsigned char *)ra, n, &p, end))
            return -1;
    }
    if (req->no_store &&
        (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                     (const unsigned char *)"no-store", 8, &p, end) ||
         lws_add_http_header_by_name(
             wsi, (const unsigned char *)"pragma:", (const unsigned char *)"no-cache", 8, &p, end)))
        return -1;
    if (req->etag[0] &&
        (lws_add_http_header_by_name(wsi, (const unsigned char *)"etag:",
                                     (const unsigned char *)req->etag, (int)strlen(req->etag), &p,
                                     end) ||
         lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                     (const unsigned char *)"no-cache", 8, &p, end) ||
         lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-origin:",
                                     (const unsigned char *)"*", 1, &p, end)))
        return -1;
    if (req->close_after && lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                                        (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (req->resp_len && lws_write(wsi, (unsigned char *)req->resp + LWS_PRE, req->resp_len,
                                   LWS_WRITE_HTTP_FINAL) < (int)req->resp_len)
        return -1;
    free(req->resp);
    req->resp = NULL;
    return 0;
}

/* Writes a response decided inside lws' callbacks and completes its
 * transaction (see send_response). */
int hr_http_writeable(hr_loop *loop, struct lws *wsi, hr_pss *pss)
{
    hr_http_req *req = pss->req;
    (void)loop;
    if (!req || !req->responded || !req->resp || !req->read_done)
        return 0;
    if (write_response(req) < 0 || req->close_after)
        return -1;
    return complete_transaction(wsi) ? -1 : 0;
}

/*---- Credentials -----------------------------------------------------------*/

/* Copies a header into buf; -1 when absent, -2 when larger than buf. */
static int copy_header(struct lws *wsi, enum lws_token_indexes tok, char *buf, int len)
{
    if (lws_hdr_total_length(wsi, tok) <= 0)
        return -1;
    return lws_hdr_copy(wsi, buf, len, tok) < 0 ? -2 : 0;
}

static hr_cred_status authorization(hr_loop *loop, const char *value, auth_identity *id, char *err,
                                    size_t errlen)
{
    if (!strncasecmp(value, "Bearer ", 7))
        return hr_node_verify_jwt(loop, value + 7, id, err, errlen);
    if (!strncasecmp(value, "ApiKey ", 7))
        return hr_node_check_api_key(loop, value + 7, id, err, errlen);
    snprintf(err, errlen, "unsupported Authorization scheme (use Bearer or ApiKey)");
    return HR_CRED_BAD;
}

/* The ?token= argument, looked up as lws_get_urlarg_by_name does (decoded
 * arguments, name included) but over every argument: lws' lookup stops at
 * the first argument that does not fit the caller's buffer, so a long
 * ?pad= hid the token behind it, and a token longer than the buffer looked
 * like no token at all. Returns the value (in buf) or NULL; *too_large is
 * set when there is a token argument that does not fit buf. */
static const char *query_token(struct lws *wsi, char *buf, int len, int *too_large)
{
    *too_large = 0;
    for (int i = 0;; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen < len) {
            /* fails only past the last argument (an empty one copies "") */
            if (lws_hdr_copy_fragment(wsi, buf, len, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
                return NULL;
            if (!strncmp(buf, "token=", 6))
                return buf + 6;
            continue;
        }
        char *big = hr_malloc((size_t)flen + 1);
        int is_token = lws_hdr_copy_fragment(wsi, big, flen + 1, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0 &&
                       !strncmp(big, "token=", 6);
        free(big);
        if (is_token) {
            *too_large = 1;
            return NULL;
        }
    }
}

hr_cred_status hr_http_credentials(hr_loop *loop, struct lws *wsi, int allow_query,
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
        st = authorization(loop, buf, id, err, errlen);
    } else if (lws_hdr_custom_length(wsi, "x-api-key:", 10) > 0) {
        if (lws_hdr_custom_copy(wsi, buf, sizeof(buf), "x-api-key:", 10) < 0) {
            snprintf(err, errlen, "X-API-Key header too large");
            st = HR_CRED_BAD;
        } else {
            st = hr_node_check_api_key(loop, buf, id, err, errlen);
        }
    } else if (allow_query) {
        int too_large;
        if ((v = query_token(wsi, buf, (int)sizeof(buf), &too_large)) != NULL) {
            st = hr_node_verify_jwt(loop, v, id, err, errlen);
        } else if (too_large) {
            snprintf(err, errlen, "token too large");
            st = HR_CRED_BAD;
        }
    }
    if (st == HR_CRED_BAD)
        auth_identity_clear(id);
    return st;
}

/*---- Responses outside the request flow ------------------------------------*/

char *hr_problem_json(int status, const char *detail, size_t *len)
{
    json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title",
                          hr_http_status_title(status), "status", status, "detail", detail);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    *len = strlen(s);
    return s;
}

/* Appends "name value" (name with its colon); nonzero when it does not fit. */
static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* A complete problem+json response that closes the connection, written
 * into [start, end) for the callers that answer outside a request's flow
 * (upgrade refusals, raw answers). lws' status helper puts in the headers
 * every REST response carries (the vhost's security headers), so these
 * answers carry the same; the status line is then corrected (HTTP/1.0
 * before lws knows the request's version - strict clients such as python
 * websockets reject that - and missing reason phrases). hname/hvalue: one
 * more header, or NULL. Returns the length, or -1. */
static int problem_response(struct lws *wsi, unsigned char *start, unsigned char *end, int status,
                            const char *detail, const char *hname, const char *hvalue)
{
    size_t blen = 0;
    char *body = hr_problem_json(status, detail, &blen), cl[24];
    unsigned char *p = start;
    snprintf(cl, sizeof(cl), "%zu", blen);
    if (lws_add_http_header_status(wsi, (unsigned int)status, &p, end) ||
        fix_status_line(start, &p, end, status, 1) < 0 ||
        add_header(wsi, "content-type:", "application/problem+json", &p, end) ||
        add_header(wsi, "content-length:", cl, &p, end) ||
        /* an error (a 401 says why a token was refused) is not to be cached */
        add_header(wsi, "cache-control:", "no-store", &p, end) ||
        add_header(wsi, "connection:", "close", &p, end) ||
        ((status == 429 || status == 503) && add_header(wsi, "retry-after:", "1", &p, end)) ||
        (hname && add_header(wsi, hname, hvalue, &p, end)) ||
        lws_finalize_http_header(wsi, &p, end) || (size_t)(end - p) < blen) {
        free(body);
        return -1;
    }
    memcpy(p, body, blen);
    free(body);
    return (int)(p + blen - start);
}

int hr_http_refuse_hdr(struct lws *wsi, int status, const char *detail, const char *hname,
                       const char *hvalue)
{
    unsigned char buf[LWS_PRE + 4096], *start = buf + LWS_PRE;
    int n = problem_response(wsi, start, buf + sizeof(buf), status, detail, hname, hvalue);
    if (n < 0)
        return -1;
    /* >0 tells lws the upgrade was refused with our own response. */
    return lws_write(wsi, start, (size_t)n, LWS_WRITE_HTTP) < 0 ? -1 : 1;
}

int hr_http_refuse(struct lws *wsi, int status, const char *detail)
{
    return hr_http_refuse_hdr(wsi, status, detail, NULL, NULL);
}

/*---- Requests lws cannot parse ----------------------------------------------*/

/* Seconds a raw-answered connection may linger for its peer to close. */
#define HR_RAW_LINGER_S 5

/* RFC 9110 token characters (a method is a token). */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Answers the bytes of a request lws could not parse: 501 when they start
 * with a method (a token and a space), else 400. Returns 0, or -1 when the
 * answer could not be written. */
static int raw_answer(hr_loop *loop, struct lws *wsi, const unsigned char *in, size_t len)
{
    unsigned char buf[LWS_PRE + 4096], *start = buf + LWS_PRE;
    char detail[96];
    size_t m = 0;
    HR_INC(&loop->stats, http_requests, 1);
    while (m < len && m < 32 && is_tchar(in[m]))
        m++;
    int status = m > 0 && m < len && in[m] == ' ' ? 501 : 400;
    if (status == 501)
        snprintf(detail, sizeof(detail), "method %.*s is not implemented", (int)m,
                 (const char *)in);
    else
        snprintf(detail, sizeof(detail), "not an HTTP/1.1 request");
    int n = problem_response(wsi, start, buf + sizeof(buf), status, detail, NULL, NULL);
    if (n < 0 || lws_write(wsi, start, (size_t)n, LWS_WRITE_RAW) < 0)
        return -1;
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, HR_RAW_LINGER_S);
    lws_callback_on_writable(wsi); /* shut our side once lws has sent it all */
    return 0;
}

/*
 * lws 4.1.6 answers a request whose method it does not know (or bytes that
 * are no HTTP at all) with its own "403 Forbidden" text/html page, from
 * inside its header parser, before any callback. With
 * LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG it instead hands
 * the connection to this protocol as a raw socket, with the bytes read so
 * far in the first RAW_RX. Herald answers 501 (a method it does not
 * implement, RFC 9110 §9.1) or 400, then shuts its side and lets the peer
 * read the answer and close: closing at once with unread bytes would reset
 * the connection and could destroy the answer before the client read it.
 * The timeout bounds the wait.
 */
int hr_http_raw(hr_loop *loop, struct lws *wsi, enum lws_callback_reasons reason, const void *in,
                size_t len)
{
    hr_wsi_state *st;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX:
        st = hr_wsi_state_get(wsi);
        if (st->raw_answered)
            return 0; /* whatever else the peer sends is dropped */
        st->raw_answered = 1;
        return raw_answer(loop, wsi, in, len);
    case LWS_CALLBACK_RAW_WRITEABLE:
        st = hr_wsi_state_get(wsi);
        if (st->raw_answered)
            shutdown(lws_get_socket_fd(wsi), SHUT_WR);
        return 0;
    default: /* RAW_ADOPT, RAW_CLOSE */
        return 0;
    }
}

/*---- Request lifecycle -----------------------------------------------------*/

static const struct {
    enum lws_token_indexes tok;
    const char *name;
} methods[] = {
    {WSI_TOKEN_GET_URI, "GET"},       {WSI_TOKEN_POST_URI, "POST"},
    {WSI_TOKEN_PUT_URI, "PUT"},       {WSI_TOKEN_PATCH_URI, "PATCH"},
    {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
    {WSI_TOKEN_HEAD_URI, "HEAD"},
};

static const char *request_method(struct lws *wsi)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (lws_hdr_total_length(wsi, methods[i].tok) > 0)
            return methods[i].name;
    return "OTHER";
}

void hr_http_drop(hr_pss *pss)
{
    if (pss->req) {
        pss->req->wsi = NULL;
        req_unref(pss->req);
        pss->req = NULL;
    }
}

void hr_http_free_all(hr_loop *loop)
{
    while (loop->reqs.head) {
        hr_http_req *req = lws_container_of(loop->reqs.head, hr_http_req, in_loop);
        req->refs = 1;
        req_unref(req);
    }
}

static int route_allowed(hr_http_req *req, route_auth auth);

static void dispatch(hr_http_req *req)
{
    const route *r = &routes[req->route];
    int deferred = r->async == ASYNC_WORKER ||
                   (r->async == ASYNC_LAYER && !chan_layer_synchronous(req->node->layer));
    if (req->from_buffer && deferred) {
        /* while a worker has it, lws would poll the buffered bytes after it
         * in vain (see "Responses and pipelining") */
        req->close_after = 1;
        problem(req, 503, "pipelined requests to this route are not served: send it again");
        return;
    }
    if (route_allowed(req, r->auth))
        r->fn(req);
}

/* Starts an lws callback that reads (part of) a request. The callback
 * holds a reference: completing the transaction inside it may make lws
 * drop the request (HTTP_DROP_PROTOCOL) before the callback returns. */
static void begin_callback(hr_http_req *req)
{
    req->refs++;
    req->in_cb = 1;
}

/* Ends it: a request that went to a worker has its rx flow turned off
 * until the worker's answer is sent. */
static int finish_callback(hr_http_req *req)
{
    req->in_cb = 0;
    if (req->wsi && req->read_done && !req->responded && !req->rx_off) {
        req->rx_off = 1;
        lws_rx_flow_control(req->wsi, 0);
    }
    req_unref(req);
    return 0;
}

/* A request's framing headers, read once in LWS_CALLBACK_HTTP. */
typedef struct framing {
    int te;          /* Transfer-Encoding present */
    int has_cl;      /* Content-Length present */
    char cl[32];     /* its text */
    int cl_len;      /* its length (-1: did not fit) */
    int body_method; /* POST, PUT, PATCH: a body unless Content-Length says none */
} framing;

static void read_framing(struct lws *wsi, const char *method, framing *f)
{
    memset(f, 0, sizeof(*f));
    f->te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    f->has_cl = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
    if (f->has_cl)
        f->cl_len = lws_hdr_copy(wsi, f->cl, sizeof(f->cl), WSI_TOKEN_HTTP_CONTENT_LENGTH);
    f->body_method = !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH");
}

/* Does the request carry a body, by its framing headers? */
static int framing_has_body(const framing *f)
{
    if (f->te)
        return 1;
    return f->has_cl ? strspn(f->cl, "0") != strlen(f->cl) : f->body_method;
}

/* Will lws deliver HTTP_BODY callbacks? "Content-Length: 0" means none. */
static int framing_expects_body(const framing *f, const char *method)
{
    return strtoull(f->cl, NULL, 10) > 0 && (f->body_method || !strcmp(method, "DELETE"));
}

/* RFC 9112 §6.3 message framing, checked before anything else: lws 4.1.6
 * frames a request with both Content-Length and Transfer-Encoding by the
 * length, ignores chunked coding, and reads the next pipelined request as
 * the "body" of a POST without Content-Length - each a way to make Herald
 * and whatever sits in front of it disagree about where a request ends. So
 * ambiguous framing gets 400, what Herald does not support gets 411 (send
 * Content-Length), and either way the connection closes after the answer.
 * Returns 1 when the request was refused. */
static int framing_refused(hr_http_req *req, const framing *f)
{
    const char *why = NULL;
    int status = 400;
    if (f->te && f->has_cl)
        why = "both Content-Length and Transfer-Encoding: ambiguous framing";
    else if (f->te)
        status = 411, why = "chunked request bodies are not supported: send Content-Length";
    else if (f->has_cl &&
             (f->cl_len <= 0 || strspn(f->cl, "0123456789") != (size_t)f->cl_len || f->cl_len > 18))
        why = "Content-Length must be one decimal number";
    else if (!f->has_cl && f->body_method)
        status = 411, why = "Content-Length is required";
    if (!why)
        return 0;
    req->close_after = 1;
    req->read_done = 1; /* nothing more is read from this connection */
    req->expect_body = 0;
    problem(req, status, why);
    return 1;
}

/* The checks a request's headers decide: shutdown, path, route, method,
 * credentials; dispatches a request without a body. */
static void request_headers(hr_http_req *req, const char *uri, const framing *f)
{
    if (framing_refused(req, f))
        return;
    if (req->loop->shutting_down) {
        problem(req, 503, "the server is shutting down");
        return;
    }
    if (strlen(uri) >= sizeof(req->path)) {
        problem(req, 414, "the request path is too long");
        return;
    }
    snprintf(req->path, sizeof(req->path), "%s", uri);
    req->route = hr_http_route(req->method, req->path, req->params, HR_MAX_PARAMS, req->allow,
                               sizeof(req->allow));
    if (req->route == -404) {
        if (!serve_static(req))
            problem(req, 404, "no such resource");
        return;
    }
    if (req->route == -405) {
        char detail[128];
        snprintf(detail, sizeof(detail), "method %s not allowed here; allowed: %s", req->method,
                 req->allow);
        problem(req, 405, detail);
        return;
    }
    req->cred =
        hr_http_credentials(req->loop, req->wsi, 0, &req->id, req->cred_err, sizeof(req->cred_err));
    if (!req->expect_body)
        dispatch(req);
}

/* Was this request parsed out of bytes lws had buffered, i.e. pipelined
 * behind the previous one? lws reads no socket bytes while it holds some,
 * so "nothing read since the last transaction completed" means exactly
 * that (the kernel's count of bytes received minus those still queued). */
static int parsed_from_buffer(struct lws *wsi)
{
    hr_wsi_state *st = hr_wsi_state_get(wsi);
    int from = 0;
    if (st->tc_valid) {
        int64_t now = hr_sock_bytes_consumed(lws_get_socket_fd(wsi), 1);
        from = now < 0 || now == st->consumed_at_tc;
    }
    st->tc_valid = 0;
    return from;
}

int hr_http_request(hr_loop *loop, struct lws *wsi, hr_pss *pss, const char *uri)
{
    hr_http_drop(pss); /* a keep-alive connection's previous request */
    int from_buffer = parsed_from_buffer(wsi);
    const char *method = request_method(wsi);
    framing f;
    read_framing(wsi, method, &f);
    if (from_buffer && framing_has_body(&f)) {
        /* refused before lws_http_action's loop can run: see "Responses and
         * pipelining"; the answers before it have been sent */
        HR_INC(&loop->stats, http_requests, 1);
        hr_http_refuse(wsi, 503, "pipelined requests with a body are not served: send it again");
        return -1;
    }
    hr_http_req *req = hr_calloc(1, sizeof(*req));
    req->from_buffer = from_buffer;
    req->wsi = wsi;
    req->refs = 1;
    req->loop = loop;
    req->node = loop->node;
    lws_dll2_add_tail(&req->in_loop, &loop->reqs);
    pss->req = req;
    hr_client_address(loop->node, wsi, req->peer, sizeof(req->peer));
    req->start_us = hr_now_us();
    req->route = -1;
    HR_INC(&loop->stats, http_requests, 1);
    snprintf(req->method, sizeof(req->method), "%s", method);
    /* bodies arrive in HTTP_BODY callbacks; dispatch waits for completion */
    req->expect_body = framing_expects_body(&f, method);
    req->read_done = !req->expect_body;
    begin_callback(req);
    request_headers(req, uri, &f);
    return finish_callback(req);
}

int hr_http_body(hr_loop *loop, struct lws *wsi, hr_pss *pss, const void *in, size_t len)
{
    hr_http_req *req = pss->req;
    (void)wsi;
    if (!req)
        return -1;
    if (req->body_too_large || req->body.len + len > loop->node->cfg->max_body) {
        req->body_too_large = 1; /* keep reading, drop the bytes */
        hr_buf_reset(&req->body);
        return 0;
    }
    hr_buf_append(&req->body, in, len);
    return 0;
}

int hr_http_body_done(hr_loop *loop, struct lws *wsi, hr_pss *pss)
{
    hr_http_req *req = pss->req;
    (void)wsi;
    if (!req)
        return -1;
    if (++req->completions > 1)
        return 0; /* lws repeats it while the answer is pending: dispatch once */
    if (req->read_done)
        return 0; /* no body was expected (Content-Length: 0): already dispatched */
    req->read_done = 1;
    begin_callback(req);
    if (req->responded) {
        send_response(req); /* an early answer (4xx) waited for the body */
    } else if (req->body_too_large) {
        char detail[96];
        snprintf(detail, sizeof(detail), "request body over %zu bytes", loop->node->cfg->max_body);
        problem(req, 413, detail);
    } else {
        dispatch(req);
    }
    return finish_callback(req);
}

/*---- Handlers --------------------------------------------------------------*/

static void h_healthz(hr_http_req *req)
{
    respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

/* Not ready while the channel layer cannot reach the whole cluster (Redis
 * down): a load balancer then sends new clients elsewhere. */
static void h_readyz(hr_http_req *req)
{
    if (chan_layer_ready(req->node->layer)) {
        respond(req, 200, "application/json", "{\"status\":\"ready\"}", 18);
    } else {
        req->retry_after = 1;
        problem(req, 503, "the channel layer cannot reach Redis");
    }
}

/* "METHOD PATTERN" of every route, built once (any thread: the first
 * scrape builds it under the once-lock). */
static const char *route_labels[NROUTES];
static pthread_once_t route_labels_once = PTHREAD_ONCE_INIT;
static char route_label_text[NROUTES][96];

static void build_route_labels(void)
{
    for (size_t i = 0; i < NROUTES; i++) {
        /* "{id}" becomes ":id": some Prometheus text parsers stumble on
         * braces inside label values */
        char *w = route_label_text[i], *end = w + sizeof(route_label_text[i]) - 1;
        w += snprintf(w, (size_t)(end - w), "%s ", routes[i].method);
        for (const char *p = routes[i].pattern; *p && w < end; p++)
            if (*p != '}')
                *w++ = *p == '{' ? ':' : *p;
        *w = '\0';
        route_labels[i] = route_label_text[i];
    }
}

/* The labels of /metrics' per-route and per-namespace series; the
 * namespace array is malloc'ed (caller frees it, not the names). */
static hr_metric_labels metric_labels(const hr_config *cfg)
{
    pthread_once(&route_labels_once, build_route_labels);
    const char **ns = hr_calloc(cfg->nnamespaces ? cfg->nnamespaces : 1, sizeof(*ns));
    for (size_t i = 0; i < cfg->nnamespaces; i++)
        ns[i] = cfg->namespaces[i].name ? cfg->namespaces[i].name : "";
    return (hr_metric_labels){route_labels, NROUTES, ns, cfg->nnamespaces};
}

/* Sums every loop's counters: each loop counts on its own cache lines. */
static void h_metrics(hr_http_req *req)
{
    hr_node *node = req->node;
    hr_counters *counters[CHAN_MAX_THREADS];
    hr_buf b = {0};
    chan_stats cs;
    for (unsigned i = 0; i < node->nloops; i++)
        counters[i] = &node->loops[i]->stats;
    chan_layer_stats(node->layer, &cs);
    hr_metric_labels labels = metric_labels(node->cfg);
    hr_metrics_render(&b, counters, node->nloops, &cs, node->cfg->node_id, &labels);
    free((void *)labels.namespaces);
    respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    hr_buf_reset(&b);
}

/* A static asset (the client, --web-root files): ETag, Cache-Control:
 * no-cache (browsers revalidate and get 304 while the ETag matches) and
 * Access-Control-Allow-Origin: * (module scripts of other origins are
 * fetched with CORS). */
static void respond_asset(hr_http_req *req, const char *ctype, const char *body, size_t len,
                          const char *etag)
{
    char inm[256];
    snprintf(req->etag, sizeof(req->etag), "%s", etag);
    if (copy_header(req->wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH, inm, sizeof(inm)) == 0 &&
        (strstr(inm, etag) || !strcmp(inm, "*")))
        respond(req, 304, ctype, "", 0);
    else
        respond(req, 200, ctype, body, len);
}

/* The browser client (SPEC §7), compiled in from web/herald.js. */
static void h_herald_js(hr_http_req *req)
{
    respond_asset(req, "application/javascript; charset=utf-8", (const char *)hr_herald_js,
                  hr_herald_js_len, hr_herald_js_etag);
}

/* A GET no route claims: a file of --web-root, if there is one. */
static int serve_static(hr_http_req *req)
{
    hr_static_file f;
    if (strcmp(req->method, "GET") || !req->node->cfg->web_root ||
        hr_static_read(req->node->cfg->web_root, req->path, &f) < 0)
        return 0;
    respond_asset(req, f.ctype, f.data, f.len, f.etag);
    hr_static_free(&f);
    return 1;
}

static int is_admin(const hr_http_req *req)
{
    return req->cred == HR_CRED_OK && (req->id.backend || auth_has_role(&req->id, "admin"));
}

/* Applies a route's policy to the request's credentials. Responds (401 or
 * 403) and returns 0 when the caller may not proceed. Credentials that were
 * presented and refused are always 401, even on open routes. */
static int route_allowed(hr_http_req *req, route_auth auth)
{
    const char *bad = req->cred_err[0] ? req->cred_err : "invalid credentials";
    if (req->cred == HR_CRED_BAD && auth != ROUTE_ANYONE) {
        problem(req, 401, bad);
        return 0;
    }
    switch (auth) {
    case ROUTE_ANYONE:
    case ROUTE_OPTIONAL:
        return 1;
    case ROUTE_USER:
        if (req->cred == HR_CRED_OK && req->id.sub)
            return 1;
        problem(req, 401, "a Bearer token is required");
        return 0;
    case ROUTE_BACKEND:
        if (req->cred == HR_CRED_NONE) {
            problem(req, 401, "credentials required: X-API-Key, Authorization: ApiKey or Bearer");
            return 0;
        }
        if (auth_is_backend(&req->id))
            return 1;
        problem(req, 403, "this route is for backends (API key, or role admin or publisher)");
        return 0;
    case ROUTE_ADMIN:
        if (req->cred == HR_CRED_NONE) {
            problem(req, 401, "credentials required: X-API-Key or an admin's Bearer token");
            return 0;
        }
        if (is_admin(req))
            return 1;
        problem(req, 403, "this route is for admins and API keys");
        return 0;
    }
    return 0;
}

/* Parses the body as a JSON object. Responds 400/422 and returns NULL on
 * failure; the caller owns the returned reference. */
static json_t *body_object(hr_http_req *req)
{
    json_error_t jerr;
    char detail[256];
    /* \u0000 is valid JSON; fields that become C strings check for it. */
    json_t *o = json_loadb(req->body.data ? req->body.data : "", req->body.len,
                           JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!o) {
        snprintf(detail, sizeof(detail), "invalid JSON: %s", jerr.text);
        problem(req, 400, detail);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        problem(req, 422, "the body must be a JSON object");
        return NULL;
    }
    return o;
}

/* Validates a channel member; writes the reason to err. */
static const char *valid_channel(hr_http_req *req, json_t *ch, char *err, size_t errlen)
{
    if (!json_is_string(ch)) {
        snprintf(err, errlen, "\"channel\" must be a string");
        return NULL;
    }
    if (!chan_name_valid(json_string_value(ch), json_string_length(ch),
                         req->node->cfg->max_channel_len)) {
        snprintf(err, errlen, "invalid channel name: 1-%zu bytes of [A-Za-z0-9_.:@=,-]",
                 req->node->cfg->max_channel_len);
        return NULL;
    }
    return json_string_value(ch);
}

/* The channel's options; counts the publication for its namespace. */
static chan_opts publish_opts(hr_http_req *req, const char *channel)
{
    const auth_namespace *ns = hr_config_namespace(req->node->cfg, channel);
    HR_ADD1(&req->loop->stats.ns_publications[hr_ns_index(req->node->cfg, ns)], 1);
    return hr_chan_opts(ns);
}

static json_t *publish_result(int status, uint64_t offset, int local_only)
{
    if (status < 0)
        return json_pack("{s:s, s:s}", "code", HR_ERR_UNAVAILABLE, "message",
                         "the channel layer is unavailable");
    json_t *o = json_object();
    if (offset)
        json_object_set_new(o, "offset", json_integer((json_int_t)offset));
    if (local_only)
        json_object_set_new(o, "local_only", json_true());
    return o;
}

static void publish_done(void *ud, int status, uint64_t offset, int local_only)
{
    hr_http_req *req = ud;
    if (status < 0) {
        req->retry_after = 1;
        problem(req, 503, "the channel layer is unavailable");
    } else {
        json_t *r = publish_result(status, offset, local_only);
        respond_json(req, 200, r);
        json_decref(r);
    }
    req_unref(req);
}

static void h_publish(hr_http_req *req)
{
    char err[128];
    json_t *o = body_object(req);
    if (!o)
        return;
    const char *channel = valid_channel(req, json_object_get(o, "channel"), err, sizeof(err));
    json_t *data = json_object_get(o, "data");
    char *text = channel && data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!channel || !data) {
        problem(req, 422, !channel ? err : "missing \"data\"");
    } else {
        chan_opts co = publish_opts(req, channel);
        req->refs++;
        chan_publish(req->node->layer, req->loop->index, channel, &co, text, strlen(text),
                     publish_done, req);
    }
    free(text);
    json_decref(o);
}

/* A broadcast completes when every channel's publish has. */
typedef struct broadcast {
    hr_http_req *req;
    json_t *responses; /* array, one entry per channel, filled in order */
    size_t pending;
} broadcast;

typedef struct broadcast_item {
    broadcast *b;
    size_t index;
} broadcast_item;

static void broadcast_finish(broadcast *b)
{
    json_t *o = json_pack("{s:O}", "responses", b->responses);
    respond_json(b->req, 200, o);
    json_decref(o);
    json_decref(b->responses);
    req_unref(b->req);
    free(b);
}

static void broadcast_done(void *ud, int status, uint64_t offset, int local_only)
{
    broadcast_item *it = ud;
    broadcast *b = it->b;
    json_t *entry = json_array_get(b->responses, it->index);
    json_object_set_new(entry, status < 0 ? "error" : "result",
                        publish_result(status, offset, local_only));
    free(it);
    if (--b->pending == 0)
        broadcast_finish(b);
}

/* Publishes to one channel, or records why not. */
static void broadcast_one(broadcast *b, size_t i, json_t *ch, const char *text)
{
    char err[128];
    const char *channel = valid_channel(b->req, ch, err, sizeof(err));
    json_t *entry = json_object();
    json_array_append_new(b->responses, entry);
    if (json_is_string(ch))
        json_object_set(entry, "channel", ch);
    if (!channel) {
        json_object_set_new(entry, "error",
                            json_pack("{s:s, s:s}", "code", HR_ERR_BAD_REQUEST, "message", err));
        return;
    }
    broadcast_item *it = hr_malloc(sizeof(*it));
    *it = (broadcast_item){b, i};
    b->pending++;
    chan_opts co = publish_opts(b->req, channel);
    chan_publish(b->req->node->layer, b->req->loop->index, channel, &co, text, strlen(text),
                 broadcast_done, it);
}

static void h_broadcast(hr_http_req *req)
{
    json_t *o = body_object(req);
    if (!o)
        return;
    json_t *chans = json_object_get(o, "channels"), *data = json_object_get(o, "data");
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    broadcast *b = NULL;
    if (!json_is_array(chans) || json_array_size(chans) == 0 || json_array_size(chans) > 1000) {
        problem(req, 422, "\"channels\" must be an array of 1 to 1000 channel names");
    } else if (!data) {
        problem(req, 422, "missing \"data\"");
    } else {
        b = hr_calloc(1, sizeof(*b));
        b->responses = json_array();
        b->req = req;
        req->refs++;
        b->pending = 1; /* held until every channel is started */
        for (size_t i = 0; i < json_array_size(chans); i++)
            broadcast_one(b, i, json_array_get(chans, i), text);
        if (--b->pending == 0)
            broadcast_finish(b);
    }
    free(text);
    json_decref(o);
}

/*---- Users -----------------------------------------------------------------*/

/* Maps a store status to an HTTP problem (for non-OK statuses). */
static void user_problem(hr_http_req *req, auth_status st, const char *message)
{
    switch (st) {
    case AUTH_NOT_FOUND:
        problem(req, 404, "no such user");
        break;
    case AUTH_TAKEN:
        problem(req, 409, "that username is taken");
        break;
    case AUTH_INVALID:
        problem(req, 422, message ? message : "invalid user");
        break;
    case AUTH_UNAVAILABLE:
        problem(req, 503, message ? message : "the user store is unavailable");
        break;
    default:
        problem(req, 500, message ? message : "internal error");
        break;
    }
}

/* Completion of get/register: the user as JSON with `status`. */
static void user_done(void *ud, auth_status st, const auth_user *user, const char *message,
                      int ok_status)
{
    hr_http_req *req = ud;
    if (st == AUTH_OK) {
        json_t *o = auth_user_json(user);
        respond_json(req, ok_status, o);
        json_decref(o);
    } else {
        user_problem(req, st, message);
    }
    req_unref(req);
}

static void user_created(void *ud, auth_status st, const auth_user *u, const char *msg)
{
    user_done(ud, st, u, msg, 201);
}

static void user_found(void *ud, auth_status st, const auth_user *u, const char *msg)
{
    user_done(ud, st, u, msg, 200);
}

/* Reads the optional "roles" array into a NULL-terminated borrowed list. */
static int read_roles(json_t *arr, char **roles, size_t max, size_t *n)
{
    *n = 0;
    if (!arr)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > max)
        return -1;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *jr = json_array_get(arr, i);
        const char *r = json_string_value(jr);
        if (!r || strlen(r) != json_string_length(jr))
            return -1;
        roles[(*n)++] = (char *)r;
    }
    return 0;
}

static void h_user_create(hr_http_req *req)
{
    char *roles[32];
    size_t nroles;
    if (!req->node->cfg->open_registration && !is_admin(req)) {
        problem(req, req->cred == HR_CRED_NONE ? 401 : 403,
                "registration is closed: an admin or API key must create users");
        return;
    }
    json_t *o = body_object(req);
    if (!o)
        return;
    json_t *ju = json_object_get(o, "username"), *jp = json_object_get(o, "password");
    const char *username = json_string_value(ju), *password = json_string_value(jp);
    json_t *jroles = json_object_get(o, "roles");
    if (!username || !password) {
        problem(req, 422, "\"username\" and \"password\" must be strings");
    } else if (strlen(username) != json_string_length(ju) ||
               strlen(password) != json_string_length(jp)) {
        problem(req, 422, "\"username\" and \"password\" must not contain NUL characters");
    } else if (read_roles(jroles, roles, 32, &nroles) < 0) {
        problem(req, 422, "\"roles\" must be an array of at most 32 strings");
    } else if (nroles && !is_admin(req)) {
        problem(req, 403, "only admins and API keys may set roles");
    } else {
        req->refs++;
        auth_register(req->node->users, &req->loop->auth_to, username, password, roles, nroles,
                      user_created, req);
    }
    json_decref(o);
}

static void h_me(hr_http_req *req)
{
    req->refs++;
    auth_get_user(req->node->users, &req->loop->auth_to, req->id.sub, user_found, req);
}

static void h_user_get(hr_http_req *req)
{
    req->refs++;
    auth_get_user(req->node->users, &req->loop->auth_to, req->params[0], user_found, req);
}

/* The answer to a control message sent to every node. */
static void control_done(void *ud, int status)
{
    hr_http_req *req = ud;
    if (status < 0) {
        req->retry_after = 1;
        problem(req, 503, "the channel layer is unavailable");
    } else {
        respond(req, 204, "application/json", "", 0);
    }
    req_unref(req);
}

/* A revocation whose control message could not reach the other nodes
 * still holds here; they load revocations from the store when they
 * reconnect. */
static void revoke_sent(void *ud, int status)
{
    hr_http_req *req = ud;
    if (status < 0) {
        hr_node_revoke(req->node, req->params[0], (int64_t)time(NULL));
        hr_node_disconnect_user(req->node, req->params[0], 4003);
        hr_warn("revoke", "user %s: revoked on this node only (channel layer unavailable)",
                req->params[0]);
    }
    respond(req, 204, "application/json", "", 0);
    req_unref(req);
}

/* Deletion revokes the user's tokens and closes the user's sockets with
 * 4003 on every node (the control channel); the store keeps the
 * revocation for restarts and for nodes that were away. */
static void user_deleted(void *ud, auth_status st, const auth_user *user, const char *message)
{
    hr_http_req *req = ud;
    (void)user;
    if (st == AUTH_OK && req->wsi) {
        chan_control c = {.op = CHAN_CTL_REVOKE, .user = req->params[0], .at = (int64_t)time(NULL)};
        req->refs++;
        chan_control_send(req->node->layer, req->loop->index, &c, revoke_sent, req);
    } else if (st != AUTH_OK) {
        user_problem(req, st, message);
    }
    req_unref(req);
}

static void h_user_delete(hr_http_req *req)
{
    req->refs++;
    auth_delete_user(req->node->users, &req->loop->auth_to, req->params[0], user_deleted, req);
}

/* Every loop of every node closes the user's sockets on its own thread. */
static void h_user_disconnect(hr_http_req *req)
{
    chan_control c = {.op = CHAN_CTL_DISCONNECT, .user = req->params[0], .code = 4003};
    hr_info("disconnect", "user %s: disconnecting every connection", req->params[0]);
    req->refs++;
    chan_control_send(req->node->layer, req->loop->index, &c, control_done, req);
}

/*---- Channels: server-side membership, presence, history -------------------*/

/* The {ch} path parameter, checked like any channel name. */
static const char *path_channel(hr_http_req *req)
{
    const char *ch = req->params[0];
    if (!chan_name_valid(ch, strlen(ch), req->node->cfg->max_channel_len)) {
        problem(req, 422, "invalid channel name: 1-255 bytes of [A-Za-z0-9_.:@=,-]");
        return NULL;
    }
    return ch;
}

static void member_control(hr_http_req *req, chan_control_op op, const char *channel,
                           const char *user)
{
    chan_control c = {.op = op, .user = user, .channel = channel};
    req->refs++;
    chan_control_send(req->node->layer, req->loop->index, &c, control_done, req);
}

/* Django Channels' group_add: every connection of the user, on every node,
 * joins the channel. */
static void h_member_add(hr_http_req *req)
{
    const char *channel = path_channel(req);
    json_t *o = channel ? body_object(req) : NULL;
    if (!o)
        return;
    const char *user = json_string_value(json_object_get(o, "user"));
    if (!user || !*user || strlen(user) > 255 ||
        strlen(user) != json_string_length(json_object_get(o, "user")))
        problem(req, 422, "\"user\" must be a user id (a non-empty string)");
    else
        member_control(req, CHAN_CTL_MEMBER_ADD, channel, user);
    json_decref(o);
}

static void h_member_remove(hr_http_req *req)
{
    const char *channel = path_channel(req);
    if (channel)
        member_control(req, CHAN_CTL_MEMBER_REMOVE, channel, req->params[1]);
}

static void read_problem(hr_http_req *req, int status, const char *what)
{
    char detail[128];
    if (status == -ENOENT) {
        snprintf(detail, sizeof(detail), "%s is not enabled for this channel's namespace", what);
        problem(req, 404, detail);
    } else {
        req->retry_after = 1;
        problem(req, 503, "the channel layer is unavailable");
    }
}

static void presence_done(void *ud, const chan_presence *p)
{
    hr_http_req *req = ud;
    if (p->status < 0) {
        read_problem(req, p->status, "presence");
    } else {
        json_t *clients = json_loadb(p->clients, p->len, 0, NULL);
        json_t *o = json_pack("{s:o}", "clients", clients ? clients : json_array());
        respond_json(req, 200, o);
        json_decref(o);
    }
    req_unref(req);
}

static void h_presence(hr_http_req *req)
{
    const char *channel = path_channel(req);
    if (!channel)
        return;
    chan_opts co = hr_chan_opts(hr_config_namespace(req->node->cfg, channel));
    req->refs++;
    chan_presence_read(req->node->layer, req->loop->index, channel, &co, presence_done, req);
}

static void history_done(void *ud, const chan_history *h)
{
    hr_http_req *req = ud;
    if (h->status < 0) {
        read_problem(req, h->status, "history");
    } else {
        json_t *o = hr_ws_history_json(h);
        respond_json(req, 200, o);
        json_decref(o);
    }
    req_unref(req);
}

/* A non-negative integer query argument; 0 if absent, -1 if malformed. */
static int query_uint(hr_http_req *req, const char *name, uint64_t *out)
{
    char buf[64];
    const char *v = req->wsi ? lws_get_urlarg_by_name(req->wsi, name, buf, sizeof(buf)) : NULL;
    char *end;
    if (!v)
        return 0;
    if (!*v || *v == '-' || *v == '+')
        return -1;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || errno)
        return -1;
    *out = n;
    return 1;
}

/* ?limit=N&since=OFFSET&epoch=E, as the history op's arguments. */
static void h_history(hr_http_req *req)
{
    char ebuf[CHAN_EPOCH_MAX + 8];
    uint64_t limit = 0;
    chan_pos since = {0};
    const char *channel = path_channel(req);
    if (!channel)
        return;
    int has_limit = query_uint(req, "limit=", &limit);
    int has_since = query_uint(req, "since=", &since.offset);
    if (has_limit < 0 || has_since < 0 || limit > 1000000) {
        problem(req, 422, "limit and since must be non-negative integers");
        return;
    }
    const char *epoch =
        req->wsi ? lws_get_urlarg_by_name(req->wsi, "epoch=", ebuf, sizeof(ebuf)) : NULL;
    if (epoch)
        snprintf(since.epoch, sizeof(since.epoch), "%s", epoch);
    chan_opts co = hr_chan_opts(hr_config_namespace(req->node->cfg, channel));
    req->refs++;
    chan_history_read(req->node->layer, req->loop->index, channel, &co, has_since ? &since : NULL,
                      has_limit ? (int64_t)limit : -1, history_done, req);
}

/*---- OAuth2 token endpoint (RFC 6749 §4.3, §6) -----------------------------*/

int hr_form_value(const char *body, size_t len, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq && (size_t)(eq - p) == klen && !memcmp(p, key, klen))
            return hr_percent_decode(eq + 1, (size_t)(pe - eq - 1), 1, out, outlen) < 0
                       ? -2
                       : (int)strlen(out);
        p = pe + 1;
    }
    return -1;
}

/* RFC 6749 §5.2 error body. */
static void oauth_error(hr_http_req *req, int status, const char *error, const char *desc)
{
    json_t *o = json_pack("{s:s, s:s}", "error", error, "error_description", desc);
    req->no_store = 1;
    respond_json(req, status, o);
    json_decref(o);
}

/* Issues the access token for user and answers with both tokens. */
static void token_response(hr_http_req *req, const auth_user *user, const char *refresh)
{
    auth_identity id = {0};
    id.sub = user->id;
    id.name = user->username;
    id.roles = user->roles;
    id.nroles = user->nroles;
    long ttl = req->node->cfg->token_ttl;
    char *access = auth_jwt_issue(&req->node->jwt, &id, time(NULL), ttl);
    if (!access) {
        oauth_error(req, 500, "server_error",
                    "cannot sign tokens (RS256/ES256 need HERALD_JWT_PRIVATE_KEY)");
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "access_token", access, "token_type", "bearer",
                          "expires_in", (json_int_t)ttl, "refresh_token", refresh);
    free(access);
    req->no_store = 1;
    respond_json(req, 200, o);
    json_decref(o);
}

/* The attempt was counted when it was admitted (login_allowed). A success
 * resets the username and gives the address its attempt back, so both
 * count failures only; an attempt that checked no password (the store was
 * unavailable) is given back on both. */
static void login_done(void *ud, auth_status st, const auth_user *user, const char *refresh,
                       const char *message)
{
    hr_http_req *req = ud;
    int64_t now = time(NULL);
    if (st == AUTH_OK) {
        auth_throttle_reset(req->node->logins, req->login_key);
        auth_throttle_release(req->node->login_addrs, req->peer, now);
        token_response(req, user, refresh);
    } else if (st == AUTH_BAD_CREDENTIALS || st == AUTH_NOT_FOUND) {
        oauth_error(req, 400, "invalid_grant", "invalid username or password");
    } else {
        auth_throttle_release(req->node->logins, req->login_key, now);
        auth_throttle_release(req->node->login_addrs, req->peer, now);
        oauth_error(req, 503, "temporarily_unavailable",
                    message ? message : "the user store is unavailable");
    }
    req_unref(req);
}

static void refresh_done(void *ud, auth_status st, const auth_user *user, const char *refresh,
                         const char *message)
{
    hr_http_req *req = ud;
    if (st == AUTH_OK)
        token_response(req, user, refresh);
    else if (st == AUTH_NOT_FOUND || st == AUTH_BAD_CREDENTIALS || st == AUTH_INVALID)
        oauth_error(req, 400, "invalid_grant", "the refresh token is invalid, expired or used");
    else
        oauth_error(req, 503, "temporarily_unavailable",
                    message ? message : "the user store is unavailable");
    req_unref(req);
}

/* Returns 1 when the login may proceed; else answers 429 + Retry-After.
 * The attempt is counted here, when it is admitted, not when Argon2 has
 * finished: otherwise concurrent guesses would all be checked before the
 * first one counted. The address is admitted first, so a locked address
 * does not spend the username's budget. The username budget is keyed like
 * the stores key accounts (auth_username_key), so "Bob" and "bob" share one
 * budget as they share one account; the throttles are shared by every loop. */
static int login_allowed(hr_http_req *req, const char *username)
{
    int64_t now = time(NULL);
    char *key = auth_username_key(username);
    snprintf(req->login_key, sizeof(req->login_key), "%.64s", key ? key : username);
    free(key);
    int wait = auth_throttle_admit(req->node->login_addrs, req->peer, now);
    if (!wait && (wait = auth_throttle_admit(req->node->logins, req->login_key, now)))
        auth_throttle_release(req->node->login_addrs, req->peer, now);
    if (!wait)
        return 1;
    req->retry_after = wait;
    oauth_error(req, 429, "too_many_attempts", "too many failed logins; retry later");
    return 0;
}

/* Reads a token-request parameter from the form (or JSON) body. */
static int token_param(hr_http_req *req, json_t *json, const char *key, char *out, size_t n)
{
    if (json) {
        const char *v = json_string_value(json_object_get(json, key));
        if (!v)
            return -1;
        if (strlen(v) >= n)
            return -2;
        snprintf(out, n, "%s", v);
        return (int)strlen(out);
    }
    return hr_form_value(req->body.data ? req->body.data : "", req->body.len, key, out, n);
}

/* grant_type=password or refresh_token. Form-encoded per RFC 6749; a JSON
 * body is accepted too for clients that cannot send forms. */
static void h_token(hr_http_req *req)
{
    char grant[32], user[256], pass[1100], refresh[128];
    char ctype[64] = "";
    json_t *json = NULL;
    lws_hdr_copy(req->wsi, ctype, sizeof(ctype), WSI_TOKEN_HTTP_CONTENT_TYPE);
    if (!strncmp(ctype, "application/json", 16) &&
        !(json = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL))) {
        oauth_error(req, 400, "invalid_request", "the body is not valid JSON");
        return;
    }
    if (token_param(req, json, "grant_type", grant, sizeof(grant)) < 0) {
        oauth_error(req, 400, "invalid_request", "grant_type is required");
    } else if (!strcmp(grant, "password")) {
        if (token_param(req, json, "username", user, sizeof(user)) < 0 ||
            token_param(req, json, "password", pass, sizeof(pass)) < 0)
            oauth_error(req, 400, "invalid_request", "username and password are required");
        else if (login_allowed(req, user)) {
            req->refs++;
            auth_login(req->node->users, &req->loop->auth_to, user, pass,
                       req->node->cfg->refresh_ttl, login_done, req);
        }
    } else if (!strcmp(grant, "refresh_token")) {
        if (token_param(req, json, "refresh_token", refresh, sizeof(refresh)) <= 0) {
            oauth_error(req, 400, "invalid_request", "refresh_token is required");
        } else {
            req->refs++;
            auth_refresh(req->node->users, &req->loop->auth_to, refresh,
                         req->node->cfg->refresh_ttl, refresh_done, req);
        }
    } else {
        oauth_error(req, 400, "unsupported_grant_type", "use password or refresh_token");
    }
    json_decref(json);
}
