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
#include "log.h"
#include "metrics.h"
#include "proto.h"
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HR_MAX_PARAMS 2

struct hr_http_req {
    struct lws *wsi; /* NULL once the client is gone */
    int refs;
    hr_server *srv;
    char method[8];
    char path[256];
    int route;
    char params[HR_MAX_PARAMS][256];
    hr_cred_status cred;
    auth_identity id;
    char cred_err[160];
    hr_buf body;
    int body_too_large;
    int expect_body;

    /* the response, once decided */
    int status;
    const char *ctype;
    char *resp; /* LWS_PRE bytes of headroom, then resp_len bytes */
    size_t resp_len;
    char allow[64];
    int responded;
};

typedef void (*route_fn)(hr_http_req *req);

typedef struct route {
    const char *method;
    const char *pattern; /* "{x}" matches one path segment */
    route_fn fn;
} route;

static void h_healthz(hr_http_req *req);
static void h_readyz(hr_http_req *req);
static void h_metrics(hr_http_req *req);
static void h_publish(hr_http_req *req);
static void h_broadcast(hr_http_req *req);

static const route routes[] = {
    {"GET", "/healthz", h_healthz},
    {"GET", "/readyz", h_readyz},
    {"GET", "/metrics", h_metrics},
    {"POST", "/api/v1/publish", h_publish},
    {"POST", "/api/v1/broadcast", h_broadcast},
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
        if (!strcmp(routes[i].method, method))
            return (int)i;
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
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
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
    auth_identity_clear(&req->id);
    hr_buf_reset(&req->body);
    free(req->resp);
    free(req);
}

/* Stores the response (copying body) and asks for the writeable callback. */
static void respond(hr_http_req *req, int status, const char *ctype, const char *body, size_t len)
{
    if (req->responded || !req->wsi)
        return;
    req->resp = malloc(LWS_PRE + len + 1);
    if (!req->resp) {
        lws_set_timeout(req->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    memcpy(req->resp + LWS_PRE, body, len);
    req->resp_len = len;
    req->status = status;
    req->ctype = ctype;
    req->responded = 1;
    lws_callback_on_writable(req->wsi);
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

int hr_http_writeable(hr_server *srv, struct lws *wsi, hr_pss *pss)
{
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr);
    hr_http_req *req = pss->req;
    (void)srv;

    if (!req || !req->responded || !req->resp)
        return 0;
    if (lws_add_http_common_headers(wsi, (unsigned int)req->status, req->ctype, req->resp_len, &p,
                                    end))
        return -1;
    if (req->allow[0] && lws_add_http_header_by_name(wsi, (const unsigned char *)"allow:",
                                                     (const unsigned char *)req->allow,
                                                     (int)strlen(req->allow), &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (req->resp_len && lws_write(wsi, (unsigned char *)req->resp + LWS_PRE, req->resp_len,
                                   LWS_WRITE_HTTP_FINAL) < (int)req->resp_len)
        return -1;
    free(req->resp);
    req->resp = NULL;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
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
    if (pss->handshake_id) {
        auth_identity_clear(pss->handshake_id);
        free(pss->handshake_id);
        pss->handshake_id = NULL;
    }
}

static void dispatch(hr_http_req *req)
{
    routes[req->route].fn(req);
}

int hr_http_request(hr_server *srv, struct lws *wsi, hr_pss *pss, const char *uri)
{
    hr_http_drop(pss); /* a keep-alive connection's previous request */
    hr_http_req *req = calloc(1, sizeof(*req));
    if (!req)
        return -1;
    req->wsi = wsi;
    req->refs = 1;
    req->srv = srv;
    pss->req = req;
    HR_INC(http_requests, 1);
    snprintf(req->method, sizeof(req->method), "%s", request_method(wsi));

    if (srv->shutting_down) {
        problem(req, 503, "the server is shutting down");
        return 0;
    }
    if (strlen(uri) >= sizeof(req->path)) {
        problem(req, 414, "the request path is too long");
        return 0;
    }
    snprintf(req->path, sizeof(req->path), "%s", uri);
    req->route = hr_http_route(req->method, req->path, req->params, HR_MAX_PARAMS, req->allow,
                               sizeof(req->allow));
    if (req->route == -404) {
        problem(req, 404, "no such resource");
        return 0;
    }
    if (req->route == -405) {
        char detail[128];
        snprintf(detail, sizeof(detail), "method %s not allowed here; allowed: %s", req->method,
                 req->allow);
        problem(req, 405, detail);
        return 0;
    }
    req->cred = hr_server_authenticate(srv, wsi, 0, &req->id, req->cred_err, sizeof(req->cred_err));
    /* Bodies arrive in HTTP_BODY callbacks; dispatch waits for completion. */
    req->expect_body = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
                       (!strcmp(req->method, "POST") || !strcmp(req->method, "PUT") ||
                        !strcmp(req->method, "PATCH") || !strcmp(req->method, "DELETE"));
    if (!req->expect_body)
        dispatch(req);
    return 0;
}

int hr_http_body(hr_server *srv, struct lws *wsi, hr_pss *pss, const void *in, size_t len)
{
    hr_http_req *req = pss->req;
    (void)wsi;
    if (!req)
        return -1;
    if (req->body_too_large || req->body.len + len > srv->cfg->max_body) {
        req->body_too_large = 1; /* keep reading, drop the bytes */
        hr_buf_reset(&req->body);
        return 0;
    }
    return hr_buf_append(&req->body, in, len) < 0 ? -1 : 0;
}

int hr_http_body_done(hr_server *srv, struct lws *wsi, hr_pss *pss)
{
    hr_http_req *req = pss->req;
    (void)wsi;
    if (!req)
        return -1;
    if (req->responded)
        return 0;
    if (req->body_too_large) {
        char detail[96];
        snprintf(detail, sizeof(detail), "request body over %zu bytes", srv->cfg->max_body);
        problem(req, 413, detail);
        return 0;
    }
    dispatch(req);
    return 0;
}

/*---- Handlers --------------------------------------------------------------*/

static void h_healthz(hr_http_req *req)
{
    respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void h_readyz(hr_http_req *req)
{
    respond(req, 200, "application/json", "{\"status\":\"ready\"}", 18);
}

static void h_metrics(hr_http_req *req)
{
    hr_buf b = {0};
    chan_stats cs = {0};
    chan_layer_stats(req->srv->layer, &cs);
    if (hr_metrics_render(&b, &cs, req->srv->cfg->node_id) < 0)
        problem(req, 500, "out of memory");
    else
        respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    hr_buf_reset(&b);
}

/* Backend routes: API key, or a token with role admin/publisher. Responds
 * and returns 0 when the caller is not a backend. */
static int require_backend(hr_http_req *req)
{
    if (req->cred == HR_CRED_NONE) {
        problem(req, 401, "credentials required: X-API-Key, Authorization: ApiKey or Bearer");
        return 0;
    }
    if (req->cred == HR_CRED_BAD) {
        problem(req, 401, req->cred_err[0] ? req->cred_err : "invalid credentials");
        return 0;
    }
    if (!auth_is_backend(&req->id)) {
        problem(req, 403, "this route is for backends (API key, or role admin or publisher)");
        return 0;
    }
    return 1;
}

/* Parses the body as a JSON object. Responds 400/422 and returns NULL on
 * failure; the caller owns the returned reference. */
static json_t *body_object(hr_http_req *req)
{
    json_error_t jerr;
    char detail[256];
    json_t *o = json_loadb(req->body.data ? req->body.data : "", req->body.len,
                           JSON_REJECT_DUPLICATES, &jerr);
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
                         req->srv->cfg->max_channel_len)) {
        snprintf(err, errlen, "invalid channel name: 1-%zu bytes of [A-Za-z0-9_.:@=,-]",
                 req->srv->cfg->max_channel_len);
        return NULL;
    }
    return json_string_value(ch);
}

static json_t *publish_result(int status, uint64_t offset)
{
    if (status < 0)
        return json_pack("{s:s, s:s}", "code", HR_ERR_UNAVAILABLE, "message",
                         "the channel layer is unavailable");
    return offset ? json_pack("{s:I}", "offset", (json_int_t)offset) : json_object();
}

static void publish_done(void *ud, int status, uint64_t offset)
{
    hr_http_req *req = ud;
    json_t *r = publish_result(status, offset);
    if (status < 0) {
        problem(req, 503, "the channel layer is unavailable");
    } else {
        respond_json(req, 200, r);
    }
    json_decref(r);
    req_unref(req);
}

static void h_publish(hr_http_req *req)
{
    char err[128];
    if (!require_backend(req))
        return;
    json_t *o = body_object(req);
    if (!o)
        return;
    const char *channel = valid_channel(req, json_object_get(o, "channel"), err, sizeof(err));
    json_t *data = json_object_get(o, "data");
    char *text = channel && data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!channel || !data) {
        problem(req, 422, !channel ? err : "missing \"data\"");
    } else if (!text) {
        problem(req, 500, "out of memory");
    } else {
        req->refs++;
        HR_INC(publications, 1);
        chan_publish(req->srv->layer, channel, text, strlen(text), publish_done, req);
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

static void broadcast_done(void *ud, int status, uint64_t offset)
{
    broadcast_item *it = ud;
    broadcast *b = it->b;
    json_t *entry = json_array_get(b->responses, it->index);
    json_object_set_new(entry, status < 0 ? "error" : "result", publish_result(status, offset));
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
    broadcast_item *it = malloc(sizeof(*it));
    if (!it) {
        json_object_set_new(
            entry, "error",
            json_pack("{s:s, s:s}", "code", HR_ERR_INTERNAL, "message", "out of memory"));
        return;
    }
    *it = (broadcast_item){b, i};
    b->pending++;
    HR_INC(publications, 1);
    chan_publish(b->req->srv->layer, channel, text, strlen(text), broadcast_done, it);
}

static void h_broadcast(hr_http_req *req)
{
    if (!require_backend(req))
        return;
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
    } else if (!text || !(b = calloc(1, sizeof(*b))) || !(b->responses = json_array())) {
        free(b);
        problem(req, 500, "out of memory");
    } else {
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
