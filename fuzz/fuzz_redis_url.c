/*
 * fuzz_redis_url.c - the redis:// URL parser (auth_redis_url_parse,
 * auth/auth.h): HERALD_REDIS_URL as the operator typed it.
 *
 * Invariants: an accepted URL has a non-empty host, a port in 1-65535 and
 * a database >= 0; a refused one leaves nothing allocated.
 */
#include "fuzz.h"
#include "auth/auth.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = fuzz_cstr(data, size);
    auth_redis_url u;
    if (auth_redis_url_parse(url, &u) == 0) {
        FUZZ_ASSERT(u.host && u.host[0]);
        FUZZ_ASSERT(u.port >= 1 && u.port <= 65535 && u.db >= 0);
        FUZZ_ASSERT(!u.user || u.password); /* a user comes with a password */
        auth_redis_url_clear(&u);
    } else {
        FUZZ_ASSERT(!u.host && !u.user && !u.password);
    }
    free(url);
    return 0;
}
