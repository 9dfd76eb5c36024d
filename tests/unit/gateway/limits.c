/* Unit tests for gateway/limits.c: the counted tables, trusted_proxies
 * parsing, and which address a request counts as (X-Forwarded-For read
 * right to left through trusted proxies only). */
#include "gateway/limits.h"
#include "testing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void counted_tables(void)
{
    hr_limit *l = hr_limit_new();
    hr_slot *a, *b, *c;
    CHECK(hr_limit_take(l, "k", 2, &a) == 0 && a);
    CHECK(hr_limit_take(l, "k", 2, &b) == 0 && b == a);
    CHECK(hr_limit_take(l, "k", 2, &c) == -EUSERS && !c);
    CHECK(hr_limit_take(l, "other", 2, &c) == 0 && c && c != a);
    hr_slot_release(b);
    CHECK(hr_limit_take(l, "k", 2, &b) == 0 && b == a); /* one was given back */
    CHECK(hr_limit_take(l, "k", 0, &c) == 0 && !c);     /* not limited, not counted */
    hr_slot_release(a);
    hr_slot_release(b);
    hr_slot_release(c);
    hr_slot_release(NULL);
    hr_limit_free(l);
}

static void netmasks(void)
{
    char err[128] = "";
    hr_netmask *m = NULL;
    char *good[] = {"10.0.0.0/8", "::1", "2001:db8::/32", "::ffff:192.168.0.0/112", "127.0.0.1"};
    CHECK(hr_netmasks_parse(good, 5, &m, err, sizeof(err)) == 0 && m);
    free(m);
    const char *bad[] = {"10.0.0.0/33",       "nonsense",   "::/129", "[::1]", "10.0.0.1/", "",
                         "::ffff:1.2.3.4/95", "10.0.0.1 /8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *one[] = {(char *)bad[i]};
        err[0] = '\0';
        CHECK(hr_netmasks_parse(one, 1, &m, err, sizeof(err)) == -EINVAL && !m);
        CHECK(strstr(err, "trusted_proxies") != NULL);
    }
    CHECK(hr_netmasks_parse(NULL, 0, &m, err, sizeof(err)) == 0 && !m);
}

/* The key of a request from peer with X-Forwarded-For xff, behind the
 * proxies "10.0.0.0/8" and "::1", counted per /32 and /64. */
static int key(const char *peer, const char *xff, char *out)
{
    char *list[] = {"10.0.0.0/8", "::1"};
    char err[128];
    hr_addr_policy p = {NULL, 2, 32, 64};
    hr_netmasks_parse(list, 2, &p.proxies, err, sizeof(err));
    int rc = hr_client_key(&p, peer, xff, out, 64);
    free(p.proxies);
    return rc;
}

static void client_keys(void)
{
    char out[64];
    /* a direct client: its own address; X-Forwarded-For proves nothing */
    CHECK(key("192.0.2.7", "1.2.3.4", out) == 1);
    CHECK_STR(out, "192.0.2.7");
    CHECK(key("::ffff:192.0.2.7", NULL, out) == 1); /* IPv4-mapped counts as IPv4 */
    CHECK_STR(out, "192.0.2.7");
    CHECK(key("2001:db8:1:2:3:4:5:6", NULL, out) == 1); /* IPv6 per /64 */
    CHECK_STR(out, "2001:db8:1:2::/64");
    /* through a trusted proxy: the rightmost untrusted entry */
    CHECK(key("10.1.1.1", "6.6.6.6, 192.0.2.9, 10.2.2.2", out) == 1);
    CHECK_STR(out, "192.0.2.9");
    CHECK(key("::1", "[2001:db8::1]:443", out) == 1);
    CHECK_STR(out, "2001:db8::/64");
    CHECK(key("10.1.1.1", "192.0.2.9:8080", out) == 1); /* IPv4:PORT */
    CHECK_STR(out, "192.0.2.9");
    /* only proxies: no client to count */
    CHECK(key("10.1.1.1", "10.3.3.3", out) == 0);
    CHECK(key("10.1.1.1", NULL, out) == 0);
    CHECK(key("10.1.1.1", " ", out) == 0);
    /* garbage is the proxy's, never "not limited" */
    CHECK(key("10.1.1.1", "1.2.3.4, unknown", out) == 1);
    CHECK_STR(out, "10.1.1.1");
    CHECK(key("10.1.1.1", "1.2.3.4,,", out) == 1);
    CHECK_STR(out, "10.1.1.1");
    /* not an IP socket: counted as it is */
    CHECK(key("unix-peer", NULL, out) == 1);
    CHECK_STR(out, "unix-peer");
}

int main(void)
{
    RUN(counted_tables);
    RUN(netmasks);
    RUN(client_keys);
    return TEST_DONE();
}
