/*
 * fuzz_form.c - the OAuth2 token endpoint's form parsing: hr_form_value
 * (gateway/http.h) over a request body, and the %XX decoder under it
 * (hr_percent_decode, common/common.h).
 *
 * The body is not NUL-terminated (as lws hands it over), and the output
 * buffers have the endpoint's sizes. Invariants: a found value fits its
 * buffer, is NUL-terminated, has the returned length and no NUL inside.
 */
#include "fuzz.h"
#include "common/common.h"
#include "gateway/http.h"

#include <errno.h>

#include <string.h>

static void check_value(int rc, const char *out, size_t cap)
{
    FUZZ_ASSERT(rc >= 0 || rc == -ENOENT || rc == -EINVAL);
    if (rc >= 0) {
        FUZZ_ASSERT((size_t)rc < cap);
        FUZZ_ASSERT(strlen(out) == (size_t)rc);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct {
        const char *key;
        size_t cap;
    } fields[] = {{"grant_type", 32},
                  {"username", 256},
                  {"password", 1100},
                  {"refresh_token", 128},
                  {"", 16}};
    const char *body = (const char *)data;
    char out[1100];
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        int rc = hr_form_value(body, size, fields[i].key, out, fields[i].cap);
        check_value(rc, out, fields[i].cap);
    }
    /* the decoder alone: exact-size and tiny outputs, with and without '+' */
    char *dec = malloc(size + 1);
    FUZZ_ASSERT(dec != NULL);
    for (int plus = 0; plus < 2; plus++) {
        int rc = hr_percent_decode(body, size, plus, dec, size + 1);
        FUZZ_ASSERT(rc >= -1 && (rc < 0 || (size_t)rc <= size));
        if (rc >= 0)
            FUZZ_ASSERT(strlen(dec) == (size_t)rc);
        rc = hr_percent_decode(body, size, plus, out, 4);
        FUZZ_ASSERT(rc >= -1 && rc < 4);
        if (rc >= 0)
            FUZZ_ASSERT(strlen(out) == (size_t)rc);
    }
    free(dec);
    return 0;
}
