/* Unit tests for common/common.c: the map, the byte buffer (with its read
 * offset), constant-time comparison, percent-decoding and UTF-8. */
#include "common/common.h"
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_map(void)
{
    hr_map *m = hr_map_new(free);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int *v = malloc(sizeof(int));
        *v = i;
        hr_map_put(m, key, strlen(key), v);
    }
    CHECK(hr_map_count(m) == 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(key, sizeof(key), "k%d", i);
        free(hr_map_del(m, key, strlen(key)));
    }
    CHECK(hr_map_count(m) == 2500);
    int ok = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int *v = hr_map_get(m, key, strlen(key));
        ok &= (i % 2) ? (v && *v == i) : (v == NULL);
    }
    CHECK(ok);
    size_t it = 0, n = 0;
    while (hr_map_next(m, &it, NULL, NULL, NULL))
        n++;
    CHECK(n == 2500);
    /* keys with embedded NULs are distinct byte strings */
    hr_map *m2 = hr_map_new(NULL);
    hr_map_put(m2, "a\0b", 3, (void *)1);
    hr_map_put(m2, "a\0c", 3, (void *)2);
    CHECK(hr_map_get(m2, "a\0b", 3) == (void *)1 && hr_map_get(m2, "a", 1) == NULL);
    hr_map_free(m2);
    hr_map_free(m);
}

static void test_secure_eq(void)
{
    CHECK(hr_secure_eq("abc", 3, "abc", 3));
    CHECK(!hr_secure_eq("abc", 3, "abd", 3));
    CHECK(!hr_secure_eq("abc", 3, "abcd", 4));
}

static void buffer_as_fifo(void)
{
    hr_buf b = {0};
    hr_buf_append(&b, "hello ", 6);
    hr_buf_printf(&b, "%s %d", "world", 42);
    CHECK(b.len == 14 && !strcmp(b.data, "hello world 42"));
    hr_buf_consume(&b, 6);
    CHECK(hr_buf_pending(&b) == 8 && !memcmp(hr_buf_head(&b), "world 42", 8));
    /* a reservation past the capacity reclaims the consumed bytes first */
    size_t cap = b.cap;
    hr_buf_reserve(&b, cap - 8);
    CHECK(b.off == 0 && b.len == 8 && !memcmp(b.data, "world 42", 8));
    hr_buf_consume(&b, 8); /* emptied: starts over */
    CHECK(b.off == 0 && b.len == 0 && b.data[0] == '\0');
    hr_buf_append(&b, NULL, 0);
    CHECK(b.len == 0);
    hr_buf_reset(&b);
    CHECK(!b.data && !b.cap);
}

static void percent_decoding(void)
{
    char out[16];
    CHECK(hr_percent_decode("a%20b+c", 7, 1, out, sizeof(out)) == 5 && !strcmp(out, "a b c"));
    CHECK(hr_percent_decode("a+b", 3, 0, out, sizeof(out)) == 3 && !strcmp(out, "a+b"));
    CHECK(hr_percent_decode("%4", 2, 0, out, sizeof(out)) < 0);
    CHECK(hr_percent_decode("%00", 3, 0, out, sizeof(out)) < 0);
    CHECK(hr_percent_decode("0123456789abcdef", 16, 0, out, sizeof(out)) < 0);
}

static void utf8(void)
{
    uint32_t cp = 0;
    CHECK(hr_utf8_decode((const unsigned char *)"\xc3\xa9", 2, &cp) == 2 && cp == 0xe9);
    CHECK(hr_utf8_decode((const unsigned char *)"\xf0\x9f\x98\x80", 4, &cp) == 4 && cp == 0x1f600);
    CHECK(hr_utf8_decode((const unsigned char *)"\xc0\xaf", 2, &cp) == 0);     /* overlong */
    CHECK(hr_utf8_decode((const unsigned char *)"\xed\xa0\x80", 3, &cp) == 0); /* surrogate */
    CHECK(hr_utf8_decode((const unsigned char *)"\xf4\x90\x80\x80", 4, &cp) == 0);
    CHECK(hr_utf8_decode((const unsigned char *)"\xe2\x82", 2, &cp) == 0); /* cut */
    CHECK(hr_utf8_valid("caf\xc3\xa9", 5) && hr_utf8_valid("", 0));
    CHECK(!hr_utf8_valid("caf\xc3", 4) && !hr_utf8_valid("\x80", 1));
}

int main(void)
{
    RUN(test_map);
    RUN(test_secure_eq);
    RUN(buffer_as_fifo);
    RUN(percent_decoding);
    RUN(utf8);
    return TEST_DONE();
}
