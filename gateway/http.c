/*
 * http.c - each HTTP request's lifecycle on the gateway's port: framing
 * checks, the body gathered up to a bound, routing through the table the
 * server passes in, the route's access rule, and responses written only
 * from the HTTP writeable callback; plus the answers outside a request's
 * flow (see http.h).
 *
 * Every error is application/problem+json (RFC 9457).
 */
#include "gateway/http.h"
#include "common/log.h"
#include "gateway/sockstat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/*---- Status lines ----------------------------------------------------------*/

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
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/*---- Responses -------------------------------------------------------------*/

void hr_http_unref(hr_http_req *req)
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
    /* exact (or -1): a bound skewed by a segment arriving mid-measurement
     * once made a pipelined POST look freshly read (see parsed_from_buffer) */
    st->consumed_at_tc = hr_sock_bytes_consumed(lws_get_socket_fd(wsi));
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
    /* Connection: close (or a failed write). A timeout set from here (even
     * LWS_TO_KILL_ASYNC) only runs at lws' next timer, up to the keep-alive
     * timeout later, since no lws callback is running to service it: the
     * client waited ~30 s for the close. A writeable callback comes at once,
     * and returning -1 there closes. */
    if (write_response(req) < 0 || complete_transaction(wsi)) {
        req->kill = 1;
        lws_callback_on_writable(wsi);
    }
}

void hr_http_ref(hr_http_req *req)
{
    req->refs++;
}

void hr_http_respond(hr_http_req *req, int status, const char *ctype, const char *body, size_t len)
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
        &req->w->stats
             .http[req->route >= 0 && req->route < HR_MAX_ROUTES ? req->route : HR_MAX_ROUTES],
        hr_now_us() - req->start_us);
    if (req->read_done)
        send_response(req);
}

void hr_http_respond_json(hr_http_req *req, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        hr_http_respond(req, status, "application/json", s, strlen(s));
    else
        hr_http_respond(req, 500, "application/problem+json", "{}", 2);
    free(s);
}

void hr_http_problem(hr_http_req *req, int status, const char *detail)
{
    size_t len = 0;
    char *s = hr_problem_json(status, detail, &len);
    hr_http_respond(req, status, "application/problem+json", s ? s : "{}", s ? len : 2);
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

/* Bodies up to this size leave with their headers in one write. */
#define HR_HTTP_ONE_WRITE 2048

/* Headers, then the body. Returns 0, or -1 when the connection failed. A
 * small body over HTTP/1 is copied behind the headers and both leave in
 * one send(2): a REST publish on a keep-alive connection cost two sends
 * (and two loopback receive paths in the peer) per request otherwise.
 * HTTP/2 (no status line in the block) keeps its frames apart. */
static int write_response(hr_http_req *req)
{
    unsigned char hdr[LWS_PRE + 1024 + HR_HTTP_ONE_WRITE], *start = hdr + LWS_PRE, *p = start,
                                                           *end = hdr + LWS_PRE + 1024;
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
        (lws_add_http_header_by_name(
             wsi, (const unsigned char *)"etag:", (const unsigned char *)req->etag,
             (int)strlen(req->etag), &p, end) ||
         lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                     (const unsigned char *)"no-cache", 8, &p, end) ||
         lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-origin:",
                                     (const unsigned char *)"*", 1, &p, end)))
        return -1;
    if (req->upgrade && lws_add_http_header_by_name(wsi, (const unsigned char *)"upgrade:",
                                                    (const unsigned char *)"websocket", 9, &p, end))
        return -1;
    if (req->close_after && lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                                        (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (req->resp_len <= HR_HTTP_ONE_WRITE && !memcmp(start, "HTTP/1.", 7)) {
        if (lws_finalize_http_header(wsi, &p, end))
            return -1;
        if (req->resp_len)
            memcpy(p, req->resp + LWS_PRE, req->resp_len);
        size_t n = (size_t)(p - start) + req->resp_len;
        if (lws_write(wsi, start, n, LWS_WRITE_HTTP_FINAL) < (int)n)
            return -1;
    } else {
        if (lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        if (req->resp_len && lws_write(wsi, (unsigned char *)req->resp + LWS_PRE, req->resp_len,
                                       LWS_WRITE_HTTP_FINAL) < (int)req->resp_len)
            return -1;
    }
    free(req->resp);
    req->resp = NULL;
    return 0;
}

/* Writes a response decided inside lws' callbacks and completes its
 * transaction (see send_response). */
int hr_http_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss)
{
    hr_http_req *req = pss->req;
    (void)w;
    if (req && req->kill)
        return -1;
    if (!req || !req->responded || !req->resp || !req->read_done)
        return 0;
    if (write_response(req) < 0 || req->close_after)
        return -1;
    return complete_transaction(wsi) ? -1 : 0;
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
static int raw_answer(hr_worker *w, struct lws *wsi, const unsigned char *in, size_t len)
{
    unsigned char buf[LWS_PRE + 4096], *start = buf + LWS_PRE;
    char detail[96];
    size_t m = 0;
    HR_INC(&w->stats, http_requests, 1);
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
int hr_http_raw(hr_worker *w, struct lws *wsi, enum lws_callback_reasons reason, const void *in,
                size_t len)
{
    hr_wsi_state *st;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX:
        st = hr_wsi_state_get(wsi);
        if (st->raw_answered)
            return 0; /* whatever else the peer sends is dropped */
        st->raw_answered = 1;
        return raw_answer(w, wsi, in, len);
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
        hr_http_unref(pss->req);
        pss->req = NULL;
    }
}

void hr_http_free_all(hr_worker *w)
{
    while (w->reqs.head) {
        hr_http_req *req = lws_container_of(w->reqs.head, hr_http_req, in_loop);
        req->refs = 1;
        hr_http_unref(req);
    }
}

int hr_http_is_admin(const hr_http_req *req)
{
    return req->cred == 0 && (req->id.backend || auth_has_role(&req->id, "admin"));
}

/* Applies a route's policy to the request's credentials. Responds (401 or
 * 403) and returns 0 when the caller may not proceed. Credentials that were
 * presented and refused are always 401, even on open routes. */
static int route_allowed(hr_http_req *req, hr_route_access auth)
{
    const char *bad = req->cred_err[0] ? req->cred_err : "invalid credentials";
    if (req->cred == -EPERM && auth != HR_ROUTE_ANYONE) {
        hr_http_problem(req, 401, bad);
        return 0;
    }
    switch (auth) {
    case HR_ROUTE_ANYONE:
    case HR_ROUTE_OPTIONAL:
        return 1;
    case HR_ROUTE_USER:
        if (req->cred == 0 && req->id.sub)
            return 1;
        hr_http_problem(req, 401, "a Bearer token is required");
        return 0;
    case HR_ROUTE_BACKEND:
        if (req->cred == -ENOENT) {
            hr_http_problem(req, 401,
                            "credentials required: X-API-Key, Authorization: ApiKey or Bearer");
            return 0;
        }
        if (auth_is_backend(&req->id))
            return 1;
        hr_http_problem(req, 403,
                        "this route is for backends (API key, or role admin or publisher)");
        return 0;
    case HR_ROUTE_ADMIN:
        if (req->cred == -ENOENT) {
            hr_http_problem(req, 401, "credentials required: X-API-Key or an admin's Bearer token");
            return 0;
        }
        if (hr_http_is_admin(req))
            return 1;
        hr_http_problem(req, 403, "this route is for admins and API keys");
        return 0;
    }
    return 0;
}

static void dispatch(hr_http_req *req)
{
    const hr_route *r = &req->routes->v[req->route];
    int deferred = r->answer == HR_ANSWER_WORKER ||
                   (r->answer == HR_ANSWER_LAYER && !chan_layer_synchronous(req->node->layer));
    if (req->from_buffer && deferred) {
        /* while a worker has it, lws would poll the buffered bytes after it
         * in vain (see "Responses and pipelining") */
        req->close_after = 1;
        hr_http_problem(req, 503, "pipelined requests to this route are not served: send it again");
        return;
    }
    if (route_allowed(req, r->access))
        r->handler(req);
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
    hr_http_unref(req);
    return 0;
}

/* A request's framing headers, read once in LWS_CALLBACK_HTTP. */
typedef struct framing {
    int te;          /* Transfer-Encoding present */
    int has_cl;      /* Content-Length present */
    char cl[32];     /* its text */
    int cl_len;      /* its length (-1: did not fit) */
    int body_method; /* POST, PUT, PATCH: lws reads a body unless Content-Length says none */
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

/* Does lws treat the request as carrying a body, by its framing headers?
 * (A POST without Content-Length has none for Herald, but lws reads on.) */
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
 * A POST without Content-Length or Transfer-Encoding has no body (§6.3:
 * what `curl -X POST` sends): it is served with an empty body, but lws
 * still waits for up to 100 MB of "body" after it, so that connection too
 * closes after the answer. Returns 1 when the request was refused. */
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
    if (!why) {
        if (!f->has_cl && f->body_method) {
            req->close_after = 1; /* an empty body; lws would read on (above) */
            req->read_done = 1;
            req->expect_body = 0;
        }
        return 0;
    }
    req->close_after = 1;
    req->read_done = 1; /* nothing more is read from this connection */
    req->expect_body = 0;
    hr_http_problem(req, status, why);
    return 1;
}

/* The checks a request's headers decide: shutdown, path, route, method,
 * credentials; dispatches a request without a body. */
static void request_headers(hr_http_req *req, const char *uri, const framing *f)
{
    if (framing_refused(req, f))
        return;
    if (req->w->loop.shutting_down) {
        hr_http_problem(req, 503, "the server is shutting down");
        return;
    }
    if (strlen(uri) >= sizeof(req->path)) {
        hr_http_problem(req, 414, "the request path is too long");
        return;
    }
    snprintf(req->path, sizeof(req->path), "%s", uri);
    req->route = hr_router_match(req->routes, req->method, req->path, req->params, HR_ROUTE_PARAMS,
                                 req->allow, sizeof(req->allow));
    if (req->route == -ENOENT) {
        if (!strcmp(req->method, "GET") && req->routes->not_found)
            req->routes->not_found(req);
        else
            hr_http_problem(req, 404, "no such resource");
        return;
    }
    if (req->route == -EOPNOTSUPP) {
        char detail[128];
        snprintf(detail, sizeof(detail), "method %s not allowed here; allowed: %s", req->method,
                 req->allow);
        hr_http_problem(req, 405, detail);
        return;
    }
    req->cred = hr_creds_from_request(req->node->creds, req->wsi, 0, &req->id, &req->w->stats,
                                      req->cred_err, sizeof(req->cred_err));
    if (!req->expect_body)
        dispatch(req);
}

/* Was this request parsed out of bytes lws had buffered, i.e. pipelined
 * behind the previous one? lws reads no socket bytes while it holds some,
 * so "nothing read since the last transaction completed" means exactly
 * that (the kernel's count of bytes received minus those still queued).
 * Both counts must be exact: with a lower bound at the transaction's end,
 * one segment of the client's next requests landing between the two system
 * calls (herald-loadgen --window 16, every few hundred publishes) showed
 * 257 bytes "read" that were not, the pipelined POST was taken for a fresh
 * one, and lws_http_action fed it its own headers as body and then called
 * BODY_COMPLETION for ever. When unsure, say "pipelined": the cost is a 503
 * and a close, the other error's cost is a spinning loop. A difference of
 * one is a FIN (counted as received, not queued), not a request read. */
static int parsed_from_buffer(struct lws *wsi)
{
    hr_wsi_state *st = hr_wsi_state_get(wsi);
    int from = 0;
    if (st->tc_valid) {
        int64_t now = hr_sock_bytes_consumed(lws_get_socket_fd(wsi));
        from = now < 0 || st->consumed_at_tc < 0 || now - st->consumed_at_tc <= 1;
    }
    st->tc_valid = 0;
    return from;
}

int hr_http_request(hr_worker *w, struct lws *wsi, hr_pss *pss, const char *uri,
                    const hr_routes *routes)
{
    hr_http_drop(pss); /* a keep-alive connection's previous request */
    int from_buffer = parsed_from_buffer(wsi);
    const char *method = request_method(wsi);
    framing f;
    read_framing(wsi, method, &f);
    if (from_buffer && framing_has_body(&f)) {
        /* refused before lws_http_action's loop can run: see "Responses and
         * pipelining"; the answers before it have been sent */
        HR_INC(&w->stats, http_requests, 1);
        hr_http_refuse(wsi, 503, "pipelined requests with a body are not served: send it again");
        return -1;
    }
    hr_http_req *req = hr_calloc(1, sizeof(*req));
    req->from_buffer = from_buffer;
    req->wsi = wsi;
    req->refs = 1;
    req->w = w;
    req->node = w->node;
    lws_dll2_add_tail(&req->in_loop, &w->reqs);
    pss->req = req;
    hr_client_address(&w->node->addrs, wsi, req->peer, sizeof(req->peer));
    req->start_us = hr_now_us();
    req->route = -1;
    req->routes = routes;
    HR_INC(&w->stats, http_requests, 1);
    snprintf(req->method, sizeof(req->method), "%s", method);
    /* bodies arrive in HTTP_BODY callbacks; dispatch waits for completion */
    req->expect_body = framing_expects_body(&f, method);
    req->read_done = !req->expect_body;
    begin_callback(req);
    request_headers(req, uri, &f);
    return finish_callback(req);
}

int hr_http_body(hr_worker *w, struct lws *wsi, hr_pss *pss, const void *in, size_t len)
{
    hr_http_req *req = pss->req;
    (void)wsi;
    if (!req)
        return -1;
    if (req->body_too_large || req->body.len + len > w->node->cfg->max_body) {
        req->body_too_large = 1; /* keep reading, drop the bytes */
        hr_buf_reset(&req->body);
        return 0;
    }
    hr_buf_append(&req->body, in, len);
    return 0;
}

int hr_http_body_done(hr_worker *w, struct lws *wsi, hr_pss *pss)
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
        snprintf(detail, sizeof(detail), "request body over %zu bytes", w->node->cfg->max_body);
        hr_http_problem(req, 413, detail);
    } else {
        dispatch(req);
    }
    return finish_callback(req);
}

/*---- For handlers ----------------------------------------------------------*/

int hr_http_stream_start(hr_http_req *req, const char *ctype, const char *allow_origin)
{
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr);
    struct lws *wsi = req->wsi;
    if (!wsi || req->responded)
        return -1;
    /* no length: lws adds "connection: close", the body ends with the
     * connection; no-cache and X-Accel-Buffering keep proxies (nginx)
     * from holding events back */
    if (lws_add_http_common_headers(wsi, 200, ctype, LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
        fix_status_line(start, &p, end, 200, 0) < 0 ||
        add_header(wsi, "cache-control:", "no-cache, no-store", &p, end) ||
        add_header(wsi, "x-accel-buffering:", "no", &p, end) ||
        (allow_origin && (add_header(wsi, "access-control-allow-origin:", allow_origin, &p, end) ||
                          add_header(wsi, "access-control-allow-credentials:", "true", &p, end) ||
                          add_header(wsi, "vary:", "Origin", &p, end))) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    req->responded = 1;
    req->status = 200;
    hr_hist_observe(
        &req->w->stats
             .http[req->route >= 0 && req->route < HR_MAX_ROUTES ? req->route : HR_MAX_ROUTES],
        hr_now_us() - req->start_us);
    /* a stream has no keep-alive or content timeout: it lasts until one
     * side ends it */
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    hr_http_drop(lws_wsi_user(wsi));
    return 0;
}

int hr_http_query_uint(hr_http_req *req, const char *name, uint64_t *out)
{
    char buf[64];
    const char *v = req->wsi ? lws_get_urlarg_by_name(req->wsi, name, buf, sizeof(buf)) : NULL;
    char *end;
    if (!v)
        return -ENOENT;
    if (!*v || *v == '-' || *v == '+')
        return -EINVAL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || errno)
        return -EINVAL;
    *out = n;
    return 0;
}

/* The key and value of each pair are compared as sent: keys Herald looks
 * up need no decoding. */
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
                       ? -EINVAL
                       : (int)strlen(out);
        p = pe + 1;
    }
    return -ENOENT;
}
