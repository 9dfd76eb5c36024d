/* utf8.c - UTF-8 decoding and validation (see common.h). A leaf: it uses
 * nothing else of common/, so the logger can call it without a cycle. */
#include "common/common.h"

/* Rejecting overlongs matters: they would let two byte strings spell the
 * same visible name (usernames), or smuggle a NUL past a check. */
size_t hr_utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len;
    uint32_t c = p[0];
    if (c < 0x80)
        len = 1;
    else if ((c & 0xe0) == 0xc0)
        len = 2, c &= 0x1f;
    else if ((c & 0xf0) == 0xe0)
        len = 3, c &= 0x0f;
    else if ((c & 0xf8) == 0xf0)
        len = 4, c &= 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    if (c < min_cp[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    if (cp)
        *cp = c;
    return len;
}

int hr_utf8_valid(const void *s, size_t n)
{
    const unsigned char *p = s;
    for (size_t i = 0; i < n;) {
        size_t len = hr_utf8_decode(p + i, n - i, NULL);
        if (!len)
            return 0;
        i += len;
    }
    return 1;
}
