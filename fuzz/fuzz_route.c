/*
 * fuzz_route.c - the REST router (hr_router_match, gateway/router.h, over
 * the REST API's table): "METHOD PATH" as the first input line, with the
 * request's real parameter slots (two of 256 bytes).
 *
 * Invariants: a match clears Allow; 405 comes with a non-empty Allow list;
 * anything else is 404; nothing is written past the parameter slots or
 * the Allow buffer (ASan).
 */
#include "fuzz.h"
#include "gateway/rest.h"
#include "gateway/router.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = fuzz_cstr(data, size);
    char *sp = strchr(line, ' ');
    const char *method = sp ? line : "GET", *path = sp ? sp + 1 : line;
    if (sp)
        *sp = '\0';
    char params[2][256], allow[128];
    memset(params, 0x55, sizeof(params)); /* no NUL unless the router writes one */
    int rc = hr_router_match(&hr_rest_routes, method, path, params, 2, allow, sizeof(allow));
    FUZZ_ASSERT(memchr(allow, '\0', sizeof(allow)) != NULL);
    if (rc >= 0) {
        FUZZ_ASSERT(allow[0] == '\0');
    } else {
        FUZZ_ASSERT(rc == -ENOENT || rc == -EOPNOTSUPP);
        FUZZ_ASSERT(rc == -ENOENT || allow[0] != '\0');
    }
    free(line);
    return 0;
}
