/*
 * rest.h - the REST API of SPEC §4: its route table (rest.c) and the
 * handlers behind it, one file per resource - rest_users.c (users, the
 * OAuth2 token endpoint), rest_channels.c (publish, broadcast, members,
 * presence, history, disconnect), rest_ops.c (health, readiness, metrics,
 * the OpenAPI document and its UI, static files, the browser client).
 *
 * Handlers run on the request's loop thread once the whole request has
 * been read and the route's access rule has passed (http.c).
 */
#ifndef HR_REST_H
#define HR_REST_H

#include "gateway/http.h"

/* The table the server routes HTTP requests through (server.c). */
extern const hr_routes hr_rest_routes;

/*---- Shared by the handlers (rest.c) ---------------------------------------*/

/* Parses the body as a JSON object. Answers 400/422 and returns NULL on
 * failure; the caller owns the returned reference. */
json_t *hr_rest_body(hr_http_req *req);
/* Validates a "channel" member: returns its text, or NULL with the reason
 * in err. */
const char *hr_rest_channel_member(hr_http_req *req, json_t *ch, char *err, size_t errlen);
/* The {ch} path parameter, checked like any channel name; answers 422 and
 * returns NULL when it is not one. */
const char *hr_rest_path_channel(hr_http_req *req);

/* The REST answer to an operation's result (api.h): 200 with its value,
 * 204 without one, or the error's problem+json (503 with Retry-After: 1).
 * ud is the request, held by hr_rest_hold until then. */
struct hr_result;
void hr_rest_answer(void *ud, const struct hr_result *r);
/* Takes a reference to req for hr_rest_answer; returns req. */
hr_http_req *hr_rest_hold(hr_http_req *req);

/*---- Handlers --------------------------------------------------------------*/

/* rest_ops.c */
void hr_rest_healthz(hr_http_req *req);
void hr_rest_readyz(hr_http_req *req);
void hr_rest_metrics(hr_http_req *req);
void hr_rest_herald_js(hr_http_req *req);
void hr_rest_openapi(hr_http_req *req);
void hr_rest_docs(hr_http_req *req);
void hr_rest_docs_file(hr_http_req *req);
void hr_rest_ws_plain(hr_http_req *req);
void hr_rest_static(hr_http_req *req); /* a GET no route claims */

/* rest_channels.c */
void hr_rest_publish(hr_http_req *req);
void hr_rest_broadcast(hr_http_req *req);
void hr_rest_member_add(hr_http_req *req);
void hr_rest_member_remove(hr_http_req *req);
void hr_rest_presence(hr_http_req *req);
void hr_rest_history(hr_http_req *req);
void hr_rest_user_disconnect(hr_http_req *req);

/* rest_users.c */
void hr_rest_user_create(hr_http_req *req);
void hr_rest_token(hr_http_req *req);
void hr_rest_me(hr_http_req *req);
void hr_rest_user_get(hr_http_req *req);
void hr_rest_user_delete(hr_http_req *req);

#endif
