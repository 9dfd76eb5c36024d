/* Unit tests for gateway/router.c over the REST API's table (rest.c):
 * matches, path parameters, 404 and 405 with the Allow list, literal
 * routes that parameters do not shadow, and metrics labels. */
#include "gateway/rest.h"
#include "gateway/router.h"
#include "testing.h"

#include <errno.h>
#include <string.h>

static void rest_table(void)
{
    char params[2][256], allow[64];
    CHECK(hr_router_match(&hr_rest_routes, "GET", "/healthz", params, 2, allow, sizeof(allow)) >=
          0);
    CHECK(hr_router_match(&hr_rest_routes, "POST", "/api/v1/publish", params, 2, allow,
                          sizeof(allow)) >= 0);
    CHECK(hr_router_match(&hr_rest_routes, "GET", "/api/v1/publish", params, 2, allow,
                          sizeof(allow)) == -EOPNOTSUPP);
    CHECK_STR(allow, "POST");
    CHECK(hr_router_match(&hr_rest_routes, "GET", "/nope", params, 2, allow, sizeof(allow)) ==
          -ENOENT);
    /* a later route with the same path: the match carries no Allow */
    CHECK(hr_router_match(&hr_rest_routes, "DELETE", "/api/v1/users/abc", params, 2, allow,
                          sizeof(allow)) >= 0);
    CHECK_STR(params[0], "abc");
    CHECK_STR(allow, "");
    CHECK(hr_router_match(&hr_rest_routes, "PUT", "/api/v1/users/abc", params, 2, allow,
                          sizeof(allow)) == -EOPNOTSUPP);
    CHECK_STR(allow, "GET, DELETE");
    CHECK(hr_router_match(&hr_rest_routes, "GET", "/api/v1/users/me", params, 2, allow,
                          sizeof(allow)) >= 0);
    /* "me" is no user id: a literal route's path answers only its own methods */
    CHECK(hr_router_match(&hr_rest_routes, "DELETE", "/api/v1/users/me", params, 2, allow,
                          sizeof(allow)) == -EOPNOTSUPP);
    CHECK_STR(allow, "GET");
    CHECK(hr_router_match(&hr_rest_routes, "POST", "/api/v1/users/me/disconnect", params, 2, allow,
                          sizeof(allow)) >= 0);
    CHECK(hr_router_match(&hr_rest_routes, "GET", "/healthz/", params, 2, allow, sizeof(allow)) ==
          -ENOENT);
    CHECK(hr_router_match(&hr_rest_routes, "GET", "", params, 2, allow, sizeof(allow)) == -ENOENT);
}

static void a_table(void)
{
    static const hr_route v[] = {
        {"GET", "/a/{x}/b/{y}", HR_ROUTE_ANYONE, HR_ANSWER_NOW, NULL},
        {"POST", "/a/{x}", HR_ROUTE_ANYONE, HR_ANSWER_NOW, NULL},
    };
    const hr_routes t = {v, 2, NULL};
    char params[HR_ROUTE_PARAMS][HR_ROUTE_PARAM_MAX], allow[64], label[96], big[400];
    CHECK(hr_router_match(&t, "GET", "/a/1/b/2", params, 2, allow, sizeof(allow)) == 0);
    CHECK_STR(params[0], "1");
    CHECK_STR(params[1], "2");
    /* one parameter slot: a second parameter cannot match */
    CHECK(hr_router_match(&t, "GET", "/a/1/b/2", params, 1, allow, sizeof(allow)) == -ENOENT);
    CHECK(hr_router_match(&t, "GET", "/a/1", params, 2, allow, sizeof(allow)) == -EOPNOTSUPP);
    CHECK_STR(allow, "POST");
    CHECK(hr_router_match(&t, "POST", "/a/", params, 2, allow, sizeof(allow)) == -ENOENT);
    memset(big, 'x', sizeof(big) - 1);
    big[0] = '/', big[1] = 'a', big[2] = '/', big[sizeof(big) - 1] = '\0';
    CHECK(hr_router_match(&t, "POST", big, params, 2, allow, sizeof(allow)) == -ENOENT);
    hr_router_label(&v[0], label, sizeof(label));
    CHECK_STR(label, "GET /a/:x/b/:y");
}

int main(void)
{
    RUN(rest_table);
    RUN(a_table);
    return TEST_DONE();
}
