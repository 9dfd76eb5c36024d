/* Unit tests for the permission rules of namespaces (auth/acl.c). */
#include "auth/auth.h"
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

int main(void)
{
    RUN(test_default_namespace);
    RUN(test_rules);
    RUN(test_personal_and_claims);
    return TEST_DONE();
}
