/* Unit tests for HERALD_REDIS_URL parsing, the connection set-up commands
 * and key names (common/redis_url.c), shared by the user store and the
 * Redis channel layer. */
#include "common/common.h"
#include "common/redis_url.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>

static void test_one_url(void)
{
    hr_redis_addr a;
    const char *u = "redis://:p%40ss@10.0.0.1:6380/3";
    CHECK(hr_redis_url_parse(u, strlen(u), &a) == 0);
    CHECK(!strcmp(a.host, "10.0.0.1") && a.port == 6380 && a.db == 3 && !a.user &&
          !strcmp(a.password, "p@ss"));
    hr_redis_addr_clear(&a);
    u = "redis://bob:pw@[::1]";
    CHECK(hr_redis_url_parse(u, strlen(u), &a) == 0);
    CHECK(!strcmp(a.host, "::1") && a.port == 6379 && !strcmp(a.user, "bob") && a.db == 0);
    hr_redis_addr_clear(&a);
    const char *bad[] = {"http://x",       "redis://",         "redis://h:0", "redis://h:70000",
                         "redis://h:12x",  "redis://secret@h", "redis://h/x", "redis://[::1",
                         "redis://:%zz@h", "redis://h:6379/-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(hr_redis_url_parse(bad[i], strlen(bad[i]), &a) < 0);
}

static void test_shard_list(void)
{
    hr_redis_addr *a;
    int n = hr_redis_urls_parse("redis://a:1, redis://b:2/1,redis://c", &a);
    CHECK(n == 3);
    CHECK(n == 3 && !strcmp(a[0].host, "a") && a[1].port == 2 && a[1].db == 1 &&
          !strcmp(a[2].host, "c"));
    hr_redis_addrs_free(a, n);
    CHECK(hr_redis_urls_parse("redis://a,", &a) < 0);
    CHECK(hr_redis_urls_parse("", &a) < 0);
}

static void test_setup_commands(void)
{
    hr_redis_addr a = {0};
    hr_redis_setup s[2];
    char db[16];
    CHECK(hr_redis_setup_commands(&a, s, db) == 0);
    a.password = "pw";
    a.user = "u";
    a.db = 5;
    CHECK(hr_redis_setup_commands(&a, s, db) == 2);
    CHECK(s[0].argc == 3 && !strcmp(s[0].argv[0], "AUTH") && !strcmp(s[0].argv[1], "u") &&
          !strcmp(s[0].argv[2], "pw"));
    CHECK(s[1].argc == 2 && !strcmp(s[1].argv[0], "SELECT") && !strcmp(s[1].argv[1], "5"));
}

static void test_keys(void)
{
    char *k = hr_redis_key("herald", "ch", "chat:room");
    CHECK(!strcmp(k, "herald:ch:chat:room"));
    free(k);
    k = hr_redis_key("p", "control", NULL);
    CHECK(!strcmp(k, "p:control"));
    free(k);
}

static void test_sentinel_urls(void)
{
    hr_redis_target *t;
    char err[256];
    const char *u = "redis+sentinel://:p%2Cw@s1:26380, s2 ,[::1]:5/mymaster/2,"
                    " redis+sentinel://bob:pw@s3/other";
    int n = hr_redis_targets_parse(u, &t, err, sizeof(err));
    CHECK(n == 2);
    if (n != 2)
        return;
    CHECK(t[0].mode == HR_REDIS_SENTINEL && t[0].nhosts == 3);
    CHECK_STR(t[0].hosts[0].host, "s1");
    CHECK(t[0].hosts[0].port == 26380 && t[0].hosts[1].port == 26379 && t[0].hosts[2].port == 5);
    CHECK_STR(t[0].hosts[1].host, "s2");
    CHECK_STR(t[0].hosts[2].host, "::1");
    /* the URL's credentials are the master's, never the sentinels' */
    CHECK(!t[0].hosts[0].password && !t[0].hosts[0].user);
    CHECK_STR(t[0].node.password, "p,w");
    CHECK(!t[0].node.user && !t[0].node.host && t[0].node.db == 2);
    CHECK_STR(t[0].master, "mymaster");
    CHECK(t[1].mode == HR_REDIS_SENTINEL && t[1].nhosts == 1 && t[1].hosts[0].port == 26379);
    CHECK_STR(t[1].node.user, "bob");
    CHECK_STR(t[1].master, "other");
    CHECK(t[1].node.db == 0);
    hr_redis_targets_free(t, n);

    n = hr_redis_targets_parse("redis+sentinel://h/na%2Fme", &t, err, sizeof(err));
    CHECK(n == 1 && !strcmp(t[0].master, "na/me"));
    CHECK(n == 1 && !t[0].sentinel_password && !t[0].sentinel_user);
    hr_redis_targets_free(t, n);

    /* the sentinels' own credentials, apart from the master's */
    n = hr_redis_targets_parse(
        "redis+sentinel://:mpw@h/m/1?sentinel_password=s%26p&sentinel_user=sen,"
        "redis+sentinel://h2/m2?sentinel_password=x",
        &t, err, sizeof(err));
    CHECK(n == 2);
    if (n == 2) {
        CHECK_STR(t[0].sentinel_password, "s&p");
        CHECK_STR(t[0].sentinel_user, "sen");
        CHECK_STR(t[0].node.password, "mpw");
        CHECK(t[0].node.db == 1 && !strcmp(t[0].master, "m"));
        CHECK_STR(t[1].sentinel_password, "x");
        CHECK(!t[1].sentinel_user && !strcmp(t[1].master, "m2"));
    }
    hr_redis_targets_free(t, n);
}

static void test_cluster_urls(void)
{
    hr_redis_target *t;
    char err[256];
    int n = hr_redis_targets_parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2,[::1]:7002/", &t,
                                   err, sizeof(err));
    CHECK(n == 1);
    if (n != 1)
        return;
    CHECK(t[0].mode == HR_REDIS_CLUSTER && t[0].nhosts == 3 && !t[0].master);
    CHECK(t[0].hosts[0].port == 7000 && t[0].hosts[1].port == 6379 && t[0].hosts[2].port == 7002);
    CHECK_STR(t[0].hosts[2].host, "::1");
    CHECK_STR(t[0].node.user, "u");
    CHECK_STR(t[0].node.password, "p");
    hr_redis_targets_free(t, n);
    n = hr_redis_targets_parse("redis+cluster://h/0", &t, err, sizeof(err));
    CHECK(n == 1 && t[0].node.db == 0);
    hr_redis_targets_free(t, n);
}

static void test_direct_targets(void)
{
    hr_redis_target *t;
    char err[256];
    /* plain lists parse as before, now as targets */
    int n = hr_redis_targets_parse("redis://a:1, redis://:pw@b:2/1", &t, err, sizeof(err));
    CHECK(n == 2);
    if (n != 2)
        return;
    CHECK(t[0].mode == HR_REDIS_DIRECT && t[0].nhosts == 0 && t[0].node.port == 1);
    CHECK_STR(t[0].node.host, "a");
    CHECK(t[1].node.db == 1 && !strcmp(t[1].node.password, "pw"));
    hr_redis_targets_free(t, n);
}

/* Every refusal names the problem and never quotes the URL: passwords
 * end up in logs otherwise. */
static void test_target_errors(void)
{
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"", "empty"},
        {"http://x", "expected redis://"},
        {"redis+sentinel://s1,s2", "master's name"},
        {"redis+sentinel://s1/", "master's name"},
        {"redis+sentinel://s1/na me", "master's name"},
        {"redis+sentinel://s1/m/x", "database"},
        {"redis+sentinel://s1,,s2/m", "bad host"},
        {"redis+sentinel://s1:0/m", "bad host"},
        {"redis+sentinel://secret@s1/m", "credentials"},
        {"redis+cluster://h/3", "only database 0"},
        {"redis+cluster://h1,h2:99999", "bad host"},
        {"redis+cluster://a,redis+cluster://b", "stands alone"},
        {"redis://a,redis+sentinel://s/m", "mixes schemes"},
        {"redis+sentinel://s/m,redis://a", "mixes schemes"},
        {"redis://a,b", "one server"},
        {"redis://a,", "one server"},
        {"redis://:secret@h:x", "bad host"},
        {"redis://h, redis://", "URL 2"},
        {"redis://h?sentinel_password=secret", "only redis+sentinel://"},
        {"redis+cluster://h?x=1", "only redis+sentinel://"},
        {"redis+sentinel://h/m?sentinel_password", "bad parameters"},
        {"redis+sentinel://h/m?password=secret", "bad parameters"},
        {"redis+sentinel://h/m?sentinel_password=a&sentinel_password=secret", "bad parameters"},
        {"redis+sentinel://h/m?sentinel_password=%zz", "bad parameters"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hr_redis_target *t = (void *)1;
        char err[256] = "";
        int n = hr_redis_targets_parse(bad[i].url, &t, err, sizeof(err));
        CHECK(n < 0 && t == NULL);
        if (!strstr(err, bad[i].why))
            fprintf(stderr, "  %s -> \"%s\"\n", bad[i].url, err);
        CHECK(strstr(err, bad[i].why) != NULL);
        CHECK(!strstr(err, "secret"));
    }
}

/* The old entry points refuse what they cannot represent. */
static void test_old_api_refuses_ha(void)
{
    hr_redis_addr *a;
    hr_redis_addr one;
    const char *s = "redis+sentinel://h/m";
    CHECK(hr_redis_urls_parse(s, &a) < 0 && a == NULL);
    CHECK(hr_redis_urls_parse("redis+cluster://h", &a) < 0);
    CHECK(hr_redis_url_parse(s, strlen(s), &one) < 0 && one.host == NULL);
}

static void test_sentinel_password_added(void)
{
    char *s = hr_redis_urls_with_sentinel_password(
        "redis+sentinel://:pw@s1:26379,s2/m1,redis+sentinel://s3/m2?sentinel_password=own",
        "p@ss w/rd");
    CHECK(!strcmp(s, "redis+sentinel://:pw@s1:26379,s2/m1?sentinel_password=p%40ss%20w%2Frd,"
                     "redis+sentinel://s3/m2?sentinel_password=own"));
    hr_redis_target *t = NULL;
    char err[200];
    int n = hr_redis_targets_parse(s, &t, err, sizeof(err));
    CHECK(n == 2);
    CHECK(n == 2 && !strcmp(t[0].sentinel_password, "p@ss w/rd") && t[0].nhosts == 2);
    CHECK(n == 2 && !strcmp(t[1].sentinel_password, "own"));
    hr_redis_targets_free(t, n);
    free(s);
    /* other schemes are left alone */
    s = hr_redis_urls_with_sentinel_password("redis://a:1,redis://b:2", "x");
    CHECK(!strcmp(s, "redis://a:1,redis://b:2"));
    free(s);
    s = hr_redis_urls_with_sentinel_password("redis+cluster://a:1,b:2", "x");
    CHECK(!strcmp(s, "redis+cluster://a:1,b:2"));
    free(s);
}

int main(void)
{
    RUN(test_one_url);
    RUN(test_shard_list);
    RUN(test_setup_commands);
    RUN(test_keys);
    RUN(test_sentinel_urls);
    RUN(test_cluster_urls);
    RUN(test_direct_targets);
    RUN(test_target_errors);
    RUN(test_old_api_refuses_ha);
    RUN(test_sentinel_password_added);
    return TEST_DONE();
}
