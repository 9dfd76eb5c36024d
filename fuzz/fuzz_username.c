/*
 * fuzz_username.c - username enforcement (auth_username_prepare,
 * auth/auth.h: RFC 8265 with ICU), fed any bytes as a registration or a
 * login would.
 *
 * Invariants: an accepted name has both forms, 1-64 bytes; enforcement is
 * idempotent (the display form enforces to itself and to the same key, the
 * key to itself), which is what makes the key a safe uniqueness key; a
 * refused name explains itself; auth_username_key never fails.
 */
#include "fuzz.h"
#include "auth/auth.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name = fuzz_cstr(data, size), err[200] = "";
    char *display = NULL, *key = NULL;
    if (auth_username_prepare(name, &display, &key, err, sizeof(err)) == 0) {
        FUZZ_ASSERT(display && key);
        FUZZ_ASSERT(strlen(display) >= 1 && strlen(display) <= 64);
        FUZZ_ASSERT(strlen(key) >= 1 && strlen(key) <= 64);
        char *d2 = NULL, *k2 = NULL, *k3 = NULL;
        FUZZ_ASSERT(auth_username_prepare(display, &d2, &k2, err, sizeof(err)) == 0);
        FUZZ_ASSERT(!strcmp(d2, display) && !strcmp(k2, key));
        FUZZ_ASSERT(auth_username_prepare(key, NULL, &k3, err, sizeof(err)) == 0);
        FUZZ_ASSERT(!strcmp(k3, key));
        free(d2);
        free(k2);
        free(k3);
    } else {
        FUZZ_ASSERT(err[0] != '\0' && !display && !key);
    }
    char *k = auth_username_key(name);
    FUZZ_ASSERT(k != NULL);
    FUZZ_ASSERT(!key || !strcmp(k, key));
    free(k);
    free(display);
    free(key);
    free(name);
    return 0;
}
