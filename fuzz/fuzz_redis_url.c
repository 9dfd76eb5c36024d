/*
 * fuzz_redis_url.c - HERALD_REDIS_URL as the operator typed it: one or
 * several comma-separated redis:// URLs, redis+sentinel:// URLs or one
 * redis+cluster:// URL (hr_redis_targets_parse and the older
 * hr_redis_urls_parse, common/common.h), shared by the user store and the
 * Redis channel layer.
 *
 * Invariants: every accepted server, sentinel or seed has a non-empty host
 * and a port in 1-65535; databases are >= 0 (0 for a cluster); a user
 * comes only with a password; sentinel URLs name a master without spaces
 * and the sentinels carry no credentials; all shards share one scheme and
 * a cluster URL stands alone; the old API accepts exactly the lists of
 * redis:// URLs the new one does, with the same servers; a refusal says
 * why and leaves nothing allocated (ASan).
 */
#include "fuzz.h"
#include "common/common.h"
#include "common/redis_url.h"

#include <stdlib.h>
#include <string.h>

static void check_addr(const hr_redis_addr *a)
{
    FUZZ_ASSERT(a->host && a->host[0]);
    FUZZ_ASSERT(a->port >= 1 && a->port <= 65535 && a->db >= 0);
    FUZZ_ASSERT(!a->user || a->password);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = fuzz_cstr(data, size);
    hr_redis_addr *a = NULL;
    hr_redis_target *t = NULL;
    char err[256] = "";
    int n = hr_redis_urls_parse(url, &a);
    int nt = hr_redis_targets_parse(url, &t, err, sizeof(err));
    if (nt >= 0) {
        FUZZ_ASSERT(nt >= 1 && t);
        for (int i = 0; i < nt; i++) {
            FUZZ_ASSERT(t[i].mode == t[0].mode);
            FUZZ_ASSERT(!t[i].node.user || t[i].node.password);
            FUZZ_ASSERT(t[i].node.db >= 0);
            if (t[i].mode == HR_REDIS_DIRECT) {
                check_addr(&t[i].node);
                FUZZ_ASSERT(t[i].nhosts == 0 && !t[i].master);
                continue;
            }
            FUZZ_ASSERT(!t[i].node.host && t[i].nhosts >= 1);
            for (int h = 0; h < t[i].nhosts; h++) {
                check_addr(&t[i].hosts[h]);
                FUZZ_ASSERT(!t[i].hosts[h].password && t[i].hosts[h].db == 0);
            }
            if (t[i].mode == HR_REDIS_SENTINEL) {
                FUZZ_ASSERT(t[i].master && t[i].master[0]);
                for (const char *c = t[i].master; *c; c++)
                    FUZZ_ASSERT((unsigned char)*c > ' ' && *c != 0x7f);
            } else {
                FUZZ_ASSERT(t[i].mode == HR_REDIS_CLUSTER && nt == 1 && !t[i].master);
                FUZZ_ASSERT(t[i].node.db == 0);
            }
        }
    } else {
        FUZZ_ASSERT(t == NULL && err[0]);
    }
    /* the old API: the same servers, for lists of redis:// URLs only */
    if (n >= 0) {
        FUZZ_ASSERT(n >= 1 && a && nt == n && t[0].mode == HR_REDIS_DIRECT);
        for (int i = 0; i < n; i++) {
            check_addr(&a[i]);
            FUZZ_ASSERT(!strcmp(a[i].host, t[i].node.host) && a[i].port == t[i].node.port);
            FUZZ_ASSERT(a[i].db == t[i].node.db);
            char *k = hr_redis_key("p", "ch", a[i].host);
            FUZZ_ASSERT(!strncmp(k, "p:ch:", 5));
            free(k);
        }
        hr_redis_addrs_free(a, n);
    } else {
        FUZZ_ASSERT(a == NULL);
        FUZZ_ASSERT(nt < 0 || t[0].mode != HR_REDIS_DIRECT);
    }
    hr_redis_targets_free(t, nt);
    free(url);
    return 0;
}
