/*
 * fuzz_pmd_inflate.c - the payload of a compressed client message as
 * hr_pmd_inflate (gateway/ws_deflate.c) inflates it, with max_message 4096.
 *
 * Invariants: never more than max bytes come out; what comes out, compressed
 * again by hr_pmd_deflate (when that pays), inflates back to the same bytes.
 */
#include "fuzz.h"
#include "gateway/ws_deflate.h"

#include <stdlib.h>
#include <string.h>

#define MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hr_pmd_codec in, out, again; /* reused, as a loop reuses its own */
    const unsigned char *text, *back;
    size_t tlen, blen;
    hr_pmd_status st = hr_pmd_inflate(&in, data, size, MAX, &text, &tlen);
    FUZZ_ASSERT(st == HR_PMD_OK || st == HR_PMD_TOO_BIG || st == HR_PMD_BAD);
    if (st != HR_PMD_OK)
        return 0;
    FUZZ_ASSERT(tlen <= MAX);
    chan_zframe *f = hr_pmd_deflate(&out, text, tlen, tlen + 10);
    if (f->len) {
        size_t hdr = f->b[1] < 126 ? 2 : 4; /* at most MAX bytes: never 10 */
        FUZZ_ASSERT(f->b[0] == 0xc1);
        FUZZ_ASSERT(hr_pmd_inflate(&again, f->b + hdr, f->len - hdr, MAX, &back, &blen) ==
                    HR_PMD_OK);
        FUZZ_ASSERT(blen == tlen && !memcmp(back, text, tlen));
    }
    free(f);
    return 0;
}
