/*
 * router.h - the shape of a REST route table and the matching of a request
 * against it, without any I/O: the HTTP transport (http.c) routes with it,
 * the REST API (rest.c) is such a table, the unit tests
 * (tests/unit/gateway/router.c) and the fuzzer (fuzz/fuzz_route.c) feed it
 * paths directly.
 */
#ifndef HR_ROUTER_H
#define HR_ROUTER_H

#include <stddef.h>

typedef struct hr_http_req hr_http_req;

/* Who may call a route; http.c checks it before the handler runs. */
typedef enum hr_route_access {
    HR_ROUTE_ANYONE,   /* no credentials needed (bad ones are still refused) */
    HR_ROUTE_OPTIONAL, /* the handler decides from the credentials (registration) */
    HR_ROUTE_USER,     /* a user's Bearer token */
    HR_ROUTE_BACKEND,  /* API key, or a token with role admin or publisher */
    HR_ROUTE_ADMIN,    /* API key, or a token with role admin */
} hr_route_access;

/* Where a route's answer comes from, for the pipelining rule of http.c. */
typedef enum hr_route_answer {
    HR_ANSWER_NOW = 0, /* in the handler */
    HR_ANSWER_WORKER,  /* from a worker thread (user store, Argon2id) */
    HR_ANSWER_LAYER,   /* from the channel layer (Redis, in cluster mode) */
} hr_route_answer;

typedef struct hr_route {
    const char *method;
    const char *pattern; /* "{x}" matches one path segment */
    hr_route_access access;
    hr_route_answer answer;
    void (*handler)(hr_http_req *req);
} hr_route;

/* A table: routes are tried in order where patterns overlap (/users/me
 * before /users/{id}); a GET of a path no route has goes to not_found,
 * which answers it (static files, else 404). */
typedef struct hr_routes {
    const hr_route *v;
    size_t n;
    void (*not_found)(hr_http_req *req);
} hr_routes;

/* Path parameters a route may have, and their size. */
#define HR_ROUTE_PARAMS 2
#define HR_ROUTE_PARAM_MAX 256

/* Finds the route of t for method and path. Returns its index (>= 0);
 * -ENOENT when no route has that path; -EOPNOTSUPP when the path exists
 * with other methods only (allow then receives them, "GET, DELETE"; it is
 * "" otherwise). Path parameters are copied into params[]. */
int hr_router_match(const hr_routes *t, const char *method, const char *path,
                    char params[][HR_ROUTE_PARAM_MAX], size_t nparams, char *allow,
                    size_t allowlen);

/* A route's metrics label: "METHOD PATTERN" with "{id}" written ":id"
 * (some Prometheus text parsers stumble on braces in label values). */
void hr_router_label(const hr_route *r, char *out, size_t len);

#endif
