/* Unit tests for the permission rules and the HTTP router. */
#include "auth/auth.h"
#include "gateway/http.h"
#include "testing.h"

#include <stdio.h>
#include <string.h>

static auth_namespace ns_with(const char *sub, const char *pub)
{
    auth_namespace ns = {0};
    auth_rule_parse(sub, &ns.subscribe);
    auth_rule_parse(pub, &ns.publish);
    return ns;
}

static void test_default_namespace(void)
{
    auth_namespace ns;
    auth_namespace_default(&ns);
    CHECK(ns.subscribe.kind == AUTH_RULE_AUTHENTICATED);
    char *roles[] = {"publisher"};
    auth_identity user = {.sub = "u1"}, anon = {.anonymous = 1};
    auth_identity pubr = {.sub = "svc", .roles = roles, .nroles = 1}, key = {.backend = 1};
    CHECK(auth_can_subscribe(&ns, &user, "news"));
    CHECK(!auth_can_subscribe(&ns, &anon, "news"));
    CHECK(!auth_can_publish(&ns, &user, "news", 1));
    CHECK(auth_can_publish(&ns, &pubr, "news", 0));
    CHECK(auth_can_publish(&ns, &key, "news", 0));
    auth_namespace_clear(&ns);
}

static void test_rules(void)
{
    char *roles[] = {"mod"};
    auth_identity user = {.sub = "u1"}, mod = {.sub = "m", .roles = roles, .nroles = 1};
    auth_identity anon = {.anonymous = 1};

    auth_namespace ns = ns_with("anonymous", "subscribers");
    CHECK(auth_can_subscribe(&ns, &anon, "chat:a"));
    CHECK(auth_can_publish(&ns, &user, "chat:a", 1));
    CHECK(!auth_can_publish(&ns, &user, "chat:a", 0));
    auth_namespace_clear(&ns);

    ns = ns_with("role:mod", "role:mod");
    CHECK(!auth_can_subscribe(&ns, &user, "m:a"));
    CHECK(auth_can_subscribe(&ns, &mod, "m:a"));
    CHECK(auth_can_publish(&ns, &mod, "m:a", 0));
    CHECK(!auth_can_publish(&ns, &user, "m:a", 1));
    auth_namespace_clear(&ns);

    ns = ns_with("none", "authenticated");
    CHECK(!auth_can_subscribe(&ns, &user, "x:a"));
    CHECK(auth_can_publish(&ns, &user, "x:a", 0));
    CHECK(!auth_can_publish(&ns, &anon, "x:a", 0));
    auth_namespace_clear(&ns);
}

static void test_personal_and_claims(void)
{
    auth_namespace ns = ns_with("none", "anonymous");
    char *pats[] = {"vip:*", "exact"};
    auth_identity u = {.sub = "42", .channels = pats, .nchannels = 2};
    auth_identity other = {.sub = "43"}, anon = {.anonymous = 1};
    CHECK(auth_can_subscribe(&ns, &u, "user:42"));
    CHECK(!auth_can_subscribe(&ns, &other, "user:42"));
    CHECK(!auth_can_subscribe(&ns, &anon, "user:42"));
    CHECK(!auth_can_subscribe(&ns, &u, "user:420"));
    CHECK(!auth_can_publish(&ns, &u, "user:42", 1)); /* backends only */
    CHECK(auth_can_subscribe(&ns, &u, "vip:lounge"));
    CHECK(auth_can_subscribe(&ns, &u, "exact"));
    CHECK(!auth_can_subscribe(&ns, &u, "exactly"));
    CHECK(!auth_can_subscribe(&ns, &u, "vi"));
    CHECK(auth_channel_matches("*", "anything"));
    auth_namespace_clear(&ns);
}

static void test_router(void)
{
    char params[2][256], allow[64];
    CHECK(hr_http_route("GET", "/healthz", params, 2, allow, sizeof(allow)) >= 0);
    CHECK(hr_http_route("POST", "/api/v1/publish", params, 2, allow, sizeof(allow)) >= 0);
    CHECK(hr_http_route("GET", "/api/v1/publish", params, 2, allow, sizeof(allow)) == -405);
    CHECK_STR(allow, "POST");
    CHECK(hr_http_route("GET", "/nope", params, 2, allow, sizeof(allow)) == -404);
    /* a later route with the same path: the match carries no Allow */
    CHECK(hr_http_route("DELETE", "/api/v1/users/abc", params, 2, allow, sizeof(allow)) >= 0);
    CHECK_STR(params[0], "abc");
    CHECK_STR(allow, "");
    CHECK(hr_http_route("PUT", "/api/v1/users/abc", params, 2, allow, sizeof(allow)) == -405);
    CHECK_STR(allow, "GET, DELETE");
    CHECK(hr_http_route("GET", "/api/v1/users/me", params, 2, allow, sizeof(allow)) >= 0);
    /* "me" is no user id: a literal route's path answers only its own methods */
    CHECK(hr_http_route("DELETE", "/api/v1/users/me", params, 2, allow, sizeof(allow)) == -405);
    CHECK_STR(allow, "GET");
    CHECK(hr_http_route("POST", "/api/v1/users/me/disconnect", params, 2, allow, sizeof(allow)) >=
          0);
    CHECK(hr_http_route("GET", "/healthz/", params, 2, allow, sizeof(allow)) == -404);
    CHECK(hr_http_route("GET", "", params, 2, allow, sizeof(allow)) == -404);
    CHECK_STR(hr_http_status_title(404), "Not Found");
}

static void test_form(void)
{
    char out[32];
    const char *b = "grant_type=password&username=b%C3%B6b+x&password=p%26w%3D";
    size_t n = strlen(b);
    CHECK(hr_form_value(b, n, "grant_type", out, sizeof(out)) == 8);
    CHECK_STR(out, "password");
    CHECK(hr_form_value(b, n, "username", out, sizeof(out)) > 0);
    CHECK_STR(out, "b\xc3\xb6"
                   "b x");
    CHECK(hr_form_value(b, n, "password", out, sizeof(out)) == 4);
    CHECK_STR(out, "p&w=");
    CHECK(hr_form_value(b, n, "missing", out, sizeof(out)) == -1);
    CHECK(hr_form_value(b, n, "user", out, sizeof(out)) == -1);
    CHECK(hr_form_value("a=%4", 4, "a", out, sizeof(out)) == -2);
    CHECK(hr_form_value("a=%zz", 5, "a", out, sizeof(out)) == -2);
    CHECK(hr_form_value("a=%00", 5, "a", out, sizeof(out)) == -2);
    CHECK(hr_form_value("a=0123456789012345678901234567890123", 36, "a", out, sizeof(out)) == -2);
    CHECK(hr_form_value("a=", 2, "a", out, sizeof(out)) == 0);
}

int main(void)
{
    RUN(test_form);
    RUN(test_default_namespace);
    RUN(test_rules);
    RUN(test_personal_and_claims);
    RUN(test_router);
    return TEST_DONE();
}
