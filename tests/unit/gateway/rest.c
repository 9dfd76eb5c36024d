/* tests/unit/gateway/rest.c - docs/openapi.json against the router's table: every
 * route Herald serves is documented, every documented operation is a route
 * (and the router resolves a concrete path of it to that route), and each
 * operation's security matches who the router lets in. The checker is also
 * run on broken copies of the document, to show it bites. The document's
 * validity as OpenAPI 3.1 is tests/js/openapi.test.mjs' job; the answers'
 * shapes are checked by the integration tests (harness.py). */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gateway/rest.h"
#include "testing.h"

#ifndef HR_SOURCE_DIR
#error "HR_SOURCE_DIR must name the source tree (tests/CMakeLists.txt)"
#endif

static const char *const methods[] = {"get", "put", "post", "delete", "patch", "head", "options"};

/* Complaints of one check, printed only when the caller wants them. */
static int quiet;

static int complain(const char *fmt, ...)
{
    va_list ap;
    if (quiet)
        return 1;
    va_start(ap, fmt);
    fputs("  openapi.json: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void lower(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
    out[i] = '\0';
}

static void upper(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++)
        out[i] = (char)(in[i] >= 'a' && in[i] <= 'z' ? in[i] - 32 : in[i]);
    out[i] = '\0';
}

/* Does the security requirement list name scheme (or, with scheme NULL,
 * hold the empty requirement {} that makes credentials optional)? */
static int security_has(json_t *sec, const char *scheme)
{
    size_t i;
    json_t *req;
    json_array_foreach(sec, i, req)
    {
        if (!scheme ? json_object_size(req) == 0 : json_object_get(req, scheme) != NULL)
            return 1;
    }
    return 0;
}

static int has_response(json_t *op, const char *status)
{
    return json_object_get(json_object_get(op, "responses"), status) != NULL;
}

/* Does x-herald-roles equal the comma-separated list want ("" = absent)? */
static int roles_are(json_t *op, const char *want)
{
    json_t *roles = json_object_get(op, "x-herald-roles"), *r;
    char got[128] = "";
    size_t i;
    if (!roles)
        return !*want;
    json_array_foreach(roles, i, r)
    {
        size_t l = strlen(got);
        snprintf(got + l, sizeof(got) - l, "%s%s", i ? "," : "", json_string_value(r));
    }
    return !strcmp(got, want);
}

/* The operation's security against the route's access rule. */
static int access_mismatches(json_t *op, const char *what, hr_route_access access)
{
    json_t *sec = json_object_get(op, "security");
    int bad = 0, key = security_has(sec, "apiKey") && security_has(sec, "apiKeyAuthorization");
    int some_key = security_has(sec, "apiKey") || security_has(sec, "apiKeyAuthorization");
    int bearer = security_has(sec, "bearer"), anonymous = security_has(sec, NULL);
    if (!json_is_array(sec))
        return complain("%s: no \"security\" (write [] for an open route)", what);
    switch (access) {
    case HR_ROUTE_ANYONE:
        if (json_array_size(sec) != 0)
            bad += complain("%s is open to anyone: \"security\" must be []", what);
        bad += !roles_are(op, "") && complain("%s: x-herald-roles on an open route", what);
        break;
    case HR_ROUTE_OPTIONAL:
        if (!anonymous || !key || !bearer)
            bad += complain(
                "%s: credentials are optional: security needs {}, the API key and bearer", what);
        bad += !roles_are(op, "admin") && complain("%s: x-herald-roles must be [admin]", what);
        break;
    case HR_ROUTE_USER:
        if (anonymous || some_key || !bearer)
            bad += complain("%s is for a user's Bearer token only", what);
        bad += !has_response(op, "401") && complain("%s: no 401", what);
        break;
    case HR_ROUTE_BACKEND:
    case HR_ROUTE_ADMIN:
        if (anonymous || !key || !bearer)
            bad += complain("%s takes the API key or a Bearer token, never nothing", what);
        if (!roles_are(op, access == HR_ROUTE_ADMIN ? "admin" : "admin,publisher"))
            bad += complain("%s: x-herald-roles must be [%s]", what,
                            access == HR_ROUTE_ADMIN ? "admin" : "admin, publisher");
        bad += !has_response(op, "401") && complain("%s: no 401", what);
        bad += !has_response(op, "403") && complain("%s: no 403", what);
        break;
    }
    return bad;
}

/* Every route in the document, with the answers every route may give. */
static int routes_documented(json_t *doc)
{
    json_t *paths = json_object_get(doc, "paths");
    int bad = 0;
    for (size_t i = 0; i < hr_rest_routes.n; i++) {
        const char *method = hr_rest_routes.v[i].method, *pattern = hr_rest_routes.v[i].pattern;
        hr_route_access access = hr_rest_routes.v[i].access;
        char m[16], what[300];
        lower(method, m, sizeof(m));
        snprintf(what, sizeof(what), "%s %s", method, pattern);
        json_t *op = json_object_get(json_object_get(paths, pattern), m);
        if (!op) {
            bad += complain("%s is a route but not documented", what);
            continue;
        }
        bad += access_mismatches(op, what, access);
        /* shutdown (and, for POST, a chunked body) can meet any route */
        bad += !has_response(op, "503") && complain("%s: no 503", what);
        if (!strcmp(method, "POST"))
            bad += !has_response(op, "411") && complain("%s: no 411", what);
    }
    return bad;
}

/* A concrete path for a pattern: "{x}" becomes "x1". */
static void concrete(const char *pattern, char *out, size_t n)
{
    size_t w = 0;
    for (const char *p = pattern; *p && w + 3 < n; p++) {
        if (*p != '{') {
            out[w++] = *p;
            continue;
        }
        const char *e = strchr(p, '}');
        size_t len = e ? (size_t)(e - p - 1) : 0;
        w += (size_t)snprintf(out + w, n - w, "%.*s1", (int)len, p + 1);
        p = e ? e : p + strlen(p) - 1;
    }
    out[w] = '\0';
}

/* Every documented operation is a route, which the router resolves. */
static int operations_routed(json_t *doc)
{
    json_t *paths = json_object_get(doc, "paths"), *item;
    const char *pattern;
    int bad = 0;
    json_object_foreach(paths, pattern, item)
    {
        for (size_t k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
            if (!json_object_get(item, methods[k]))
                continue;
            char m[16], path[512], params[2][256], allow[64];
            upper(methods[k], m, sizeof(m));
            concrete(pattern, path, sizeof(path));
            int r = hr_router_match(&hr_rest_routes, m, path, params, 2, allow, sizeof(allow));
            const char *rp = r >= 0 ? hr_rest_routes.v[r].pattern : NULL;
            if (!rp || strcmp(rp, pattern))
                bad += complain("%s %s is documented but the router answers %s %s with %d (%s)", m,
                                pattern, m, path, r, rp ? rp : "no route");
        }
    }
    return bad;
}

static int mismatches(json_t *doc)
{
    return routes_documented(doc) + operations_routed(doc);
}

static json_t *load_doc(void)
{
    json_error_t err;
    json_t *doc = json_load_file(HR_SOURCE_DIR "/docs/openapi.json", JSON_REJECT_DUPLICATES, &err);
    if (!doc)
        fprintf(stderr, "docs/openapi.json:%d: %s\n", err.line, err.text);
    return doc;
}

static void test_document_matches_router(void)
{
    json_t *doc = load_doc();
    CHECK(doc != NULL);
    if (!doc)
        return;
    CHECK(mismatches(doc) == 0);
    /* the route table is not empty and /ws' plain GET is a route */
    char params[2][256], allow[64];
    CHECK(hr_router_match(&hr_rest_routes, "GET", "/ws", params, 2, allow, sizeof(allow)) >= 0);
    CHECK(hr_router_match(&hr_rest_routes, "GET", "/api/v1/openapi.json", params, 2, allow,
                          sizeof(allow)) >= 0);
    json_decref(doc);
}

/* Runs the checker on a broken copy: it must complain. */
static int bites(void (*breakit)(json_t *doc))
{
    json_t *doc = load_doc();
    if (!doc)
        return 0;
    breakit(doc);
    quiet = 1;
    int n = mismatches(doc);
    quiet = 0;
    json_decref(doc);
    return n > 0;
}

static json_t *op_of(json_t *doc, const char *path, const char *method)
{
    return json_object_get(json_object_get(json_object_get(doc, "paths"), path), method);
}

static void drop_route(json_t *doc)
{
    json_object_del(json_object_get(doc, "paths"), "/api/v1/broadcast");
}

static void add_phantom(json_t *doc)
{
    json_object_set_new(json_object_get(doc, "paths"), "/api/v1/channels",
                        json_pack("{s:{s:[], s:{}}}", "get", "security", "responses"));
}

static void wrong_method(json_t *doc)
{
    json_t *item = json_object_get(json_object_get(doc, "paths"), "/api/v1/users/{id}");
    json_object_set(item, "put", json_object_get(item, "delete"));
    json_object_del(item, "delete");
}

static void open_admin_route(json_t *doc)
{
    json_object_set_new(op_of(doc, "/api/v1/users/{id}", "get"), "security", json_array());
}

static void user_route_takes_key(json_t *doc)
{
    json_array_append_new(json_object_get(op_of(doc, "/api/v1/users/me", "get"), "security"),
                          json_pack("{s:[]}", "apiKey"));
}

static void publisher_may_delete(json_t *doc)
{
    json_object_set_new(op_of(doc, "/api/v1/users/{id}", "delete"), "x-herald-roles",
                        json_pack("[s,s]", "admin", "publisher"));
}

static void forget_503(json_t *doc)
{
    json_object_del(json_object_get(op_of(doc, "/healthz", "get"), "responses"), "503");
}

static void test_checker_bites(void)
{
    CHECK(bites(drop_route));
    CHECK(bites(add_phantom));
    CHECK(bites(wrong_method));
    CHECK(bites(open_admin_route));
    CHECK(bites(user_route_takes_key));
    CHECK(bites(publisher_may_delete));
    CHECK(bites(forget_503));
}

int main(void)
{
    RUN(test_document_matches_router);
    RUN(test_checker_bites);
    return TEST_DONE();
}
