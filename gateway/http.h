/*
 * http.h - the REST API on the gateway's port (SPEC §4), and the HTTP
 * responses the WebSocket upgrade needs. Called by loop.c's protocol
 * callback on the request's loop thread.
 */
#ifndef HR_HTTP_H
#define HR_HTTP_H

#include "gateway/node.h"

int hr_http_request(hr_loop *loop, struct lws *wsi, hr_pss *pss, const char *uri);
int hr_http_body(hr_loop *loop, struct lws *wsi, hr_pss *pss, const void *in, size_t len);
int hr_http_body_done(hr_loop *loop, struct lws *wsi, hr_pss *pss);
int hr_http_writeable(hr_loop *loop, struct lws *wsi, hr_pss *pss);
void hr_http_drop(hr_pss *pss);
/* Frees requests still waiting for a worker once the loop has stopped. */
void hr_http_free_all(hr_loop *loop);

/* Writes a complete HTTP error response at once and returns 1 (-1 if the
 * write failed). Only for refusing an upgrade in HTTP_CONFIRM_UPGRADE, whose
 * contract is "return >0 after writing your own response"; every other
 * response is written by the request's own flow. */
int hr_http_refuse(struct lws *wsi, int status, const char *detail);
/* The same with one more header (name with its colon, e.g.
 * "sec-websocket-version:"). */
int hr_http_refuse_hdr(struct lws *wsi, int status, const char *detail, const char *hname,
                       const char *hvalue);

/* RAW_ADOPT, RAW_RX, RAW_WRITEABLE, RAW_CLOSE: a connection lws could not
 * parse as HTTP (unknown method, not HTTP at all) and handed over as a raw
 * socket; it is answered 501 or 400 (problem+json) and closed. */
int hr_http_raw(hr_loop *loop, struct lws *wsi, enum lws_callback_reasons reason, const void *in,
                size_t len);

/* An RFC 9457 problem+json body. Caller frees. */
char *hr_problem_json(int status, const char *detail, size_t *len);

/* application/x-www-form-urlencoded lookup (pure): copies the decoded value
 * of key into out. Returns its length, -1 when absent, -2 when malformed or
 * longer than outlen - 1. */
int hr_form_value(const char *body, size_t len, const char *key, char *out, size_t outlen);

/* Reason phrase for an HTTP status ("Not Found"); static storage. */
const char *hr_http_status_title(int status);

/* The pure part of the router, for unit tests: finds the route for method
 * and path. Returns the route index (>= 0), -404 when no route has that
 * path, or -405 when the path exists with other methods (allow receives
 * them, e.g. "GET, POST"). Path parameters are copied into params[]. */
int hr_http_route(const char *method, const char *path, char params[][256], size_t nparams,
                  char *allow, size_t allowlen);

/* Who may call a route; checked before its handler runs. */
typedef enum hr_route_access {
    HR_ROUTE_ANYONE,   /* no credentials needed (bad ones are still refused) */
    HR_ROUTE_OPTIONAL, /* the handler decides from the credentials (registration) */
    HR_ROUTE_USER,     /* a user's Bearer token */
    HR_ROUTE_BACKEND,  /* API key, or a token with role admin or publisher */
    HR_ROUTE_ADMIN,    /* API key, or a token with role admin */
} hr_route_access;

/* The router's table, for tests that hold it against docs/openapi.json:
 * route i's method, pattern ("{x}" = one segment) and access (static
 * storage). Returns 0, or -1 past the last route. Pure. */
int hr_http_route_info(size_t i, const char **method, const char **pattern,
                       hr_route_access *access);

#endif
