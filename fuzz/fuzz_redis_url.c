/*
 * fuzz_redis_url.c - HERALD_REDIS_URL as the operator typed it: one or
 * several comma-separated redis:// URLs (hr_redis_urls_parse,
 * common/common.h), shared by the user store and the Redis channel layer.
 *
 * Invariants: every accepted URL has a non-empty host, a port in 1-65535
 * and a database >= 0, and a user only with a password; a refused list
 * leaves nothing allocated (ASan).
 */
#include "fuzz.h"
#include "common/common.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = fuzz_cstr(data, size);
    hr_redis_addr *a = NULL;
    int n = hr_redis_urls_parse(url, &a);
    if (n >= 0) {
        FUZZ_ASSERT(n >= 1 && a);
        for (int i = 0; i < n; i++) {
            FUZZ_ASSERT(a[i].host && a[i].host[0]);
            FUZZ_ASSERT(a[i].port >= 1 && a[i].port <= 65535 && a[i].db >= 0);
            FUZZ_ASSERT(!a[i].user || a[i].password);
            char *k = hr_redis_key("p", "ch", a[i].host);
            FUZZ_ASSERT(!strncmp(k, "p:ch:", 5));
            free(k);
        }
        hr_redis_addrs_free(a, n);
    } else {
        FUZZ_ASSERT(a == NULL);
    }
    free(url);
    return 0;
}
