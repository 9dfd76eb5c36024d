/*
 * fuzz_pmd_offer.c - a client's Sec-WebSocket-Extensions value as
 * hr_pmd_negotiate (gateway/ws_deflate.c) reads it when HERALD_WS_COMPRESSION
 * is on.
 *
 * Invariants: an accepted offer names an offer that exists (>= 1) and a
 * window of 8-15 bits; Herald's own answer, read back as an offer, is
 * accepted with the same window.
 */
#include "fuzz.h"
#include "gateway/ws_deflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *offers = fuzz_cstr(data, size);
    hr_pmd_params p = {0, 0}, back = {0, 0};
    if (hr_pmd_negotiate(offers, &p)) {
        char params[128], line[160];
        FUZZ_ASSERT(p.offer >= 1);
        FUZZ_ASSERT(p.server_bits >= 8 && p.server_bits <= 15);
        size_t n = hr_pmd_response(&p, params, sizeof(params));
        FUZZ_ASSERT(n > 0 && n < sizeof(params));
        snprintf(line, sizeof(line), "permessage-deflate%s", params);
        FUZZ_ASSERT(hr_pmd_negotiate(line, &back) == 1);
        FUZZ_ASSERT(back.offer == 1 && back.server_bits == p.server_bits);
    }
    free(offers);
    return 0;
}
