/*
 * rest.c - the REST API's route table (SPEC §4; docs/openapi.json
 * documents every row, tests/unit/gateway/rest.c holds the two together)
 * and what its handlers share.
 */
#include "gateway/rest.h"
#include "gateway/api.h"
#include "gateway/proto.h"

#include <stdio.h>

/* Order matters where patterns overlap: /users/me before /users/{id}. */
static const hr_route routes[] = {
    {"GET", "/healthz", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_healthz},
    {"GET", "/readyz", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_readyz},
    {"GET", "/metrics", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_metrics},
    {"POST", "/api/v1/publish", HR_ROUTE_BACKEND, HR_ANSWER_LAYER, hr_rest_publish},
    {"POST", "/api/v1/broadcast", HR_ROUTE_BACKEND, HR_ANSWER_LAYER, hr_rest_broadcast},
    {"POST", "/api/v1/users", HR_ROUTE_OPTIONAL, HR_ANSWER_WORKER, hr_rest_user_create},
    {"POST", "/api/v1/auth/token", HR_ROUTE_ANYONE, HR_ANSWER_WORKER, hr_rest_token},
    {"GET", "/api/v1/users/me", HR_ROUTE_USER, HR_ANSWER_WORKER, hr_rest_me},
    {"GET", "/api/v1/users/{id}", HR_ROUTE_ADMIN, HR_ANSWER_WORKER, hr_rest_user_get},
    {"DELETE", "/api/v1/users/{id}", HR_ROUTE_ADMIN, HR_ANSWER_WORKER, hr_rest_user_delete},
    {"POST", "/api/v1/users/{id}/disconnect", HR_ROUTE_ADMIN, HR_ANSWER_LAYER,
     hr_rest_user_disconnect},
    {"POST", "/api/v1/channels/{ch}/members", HR_ROUTE_BACKEND, HR_ANSWER_LAYER,
     hr_rest_member_add},
    {"DELETE", "/api/v1/channels/{ch}/members/{user}", HR_ROUTE_BACKEND, HR_ANSWER_LAYER,
     hr_rest_member_remove},
    {"GET", "/api/v1/channels/{ch}/presence", HR_ROUTE_BACKEND, HR_ANSWER_LAYER, hr_rest_presence},
    {"GET", "/api/v1/channels/{ch}/history", HR_ROUTE_BACKEND, HR_ANSWER_LAYER, hr_rest_history},
    {"GET", "/herald.js", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_herald_js},
    {"GET", "/api/v1/openapi.json", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_openapi},
    {"GET", "/docs", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_docs},
    {"GET", "/docs/{file}", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_docs_file},
    /* upgrades never reach the router (ws_upgrade.c): this answers a plain GET */
    {"GET", "/ws", HR_ROUTE_ANYONE, HR_ANSWER_NOW, hr_rest_ws_plain},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))
_Static_assert(NROUTES <= HR_MAX_ROUTES, "metrics.h: raise HR_MAX_ROUTES");

const hr_routes hr_rest_routes = {routes, NROUTES, hr_rest_static};

/*---- Shared by the handlers ------------------------------------------------*/

/* Parses the body as a JSON object. Responds 400/422 and returns NULL on
 * failure; the caller owns the returned reference. */
json_t *hr_rest_body(hr_http_req *req)
{
    json_error_t jerr;
    char detail[256];
    /* \u0000 is valid JSON; fields that become C strings check for it. */
    json_t *o = json_loadb(req->body.data ? req->body.data : "", req->body.len,
                           JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!o) {
        snprintf(detail, sizeof(detail), "invalid JSON: %s", jerr.text);
        hr_http_problem(req, 400, detail);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        hr_http_problem(req, 422, "the body must be a JSON object");
        return NULL;
    }
    return o;
}

const char *hr_rest_channel_member(hr_http_req *req, json_t *ch, char *err, size_t errlen)
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

const char *hr_rest_path_channel(hr_http_req *req)
{
    const char *ch = req->params[0];
    if (!chan_name_valid(ch, strlen(ch), req->node->cfg->max_channel_len)) {
        hr_http_problem(req, 422, "invalid channel name: 1-255 bytes of [A-Za-z0-9_.:@=,-]");
        return NULL;
    }
    return ch;
}

hr_http_req *hr_rest_hold(hr_http_req *req)
{
    hr_http_ref(req);
    return req;
}

void hr_rest_answer(void *ud, const hr_result *r)
{
    hr_http_req *req = ud;
    if (r->err) {
        int status = hr_err_http(r->err);
        if (status == 503)
            req->retry_after = 1;
        hr_http_problem(req, status, r->message);
    } else if (r->value) {
        hr_http_respond_json(req, 200, r->value);
    } else {
        hr_http_respond(req, 204, "application/json", "", 0);
    }
    hr_http_unref(req);
}
