/* Unit tests for HERALD_REDIS_URL parsing, the connection set-up commands
 * and key names (common/redis_url.c), shared by the user store and the
 * Redis channel layer. */
#include "common/common.h"
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

int main(void)
{
    RUN(test_one_url);
    RUN(test_shard_list);
    RUN(test_setup_commands);
    RUN(test_keys);
    return TEST_DONE();
}
