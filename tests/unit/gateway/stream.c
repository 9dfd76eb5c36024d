/* Unit tests for gateway/stream.c's recovery token (pure): what parses, into
 * which positions, and what is refused (the 400 of /sse and /stream). */
#include "gateway/stream.h"
#include "testing.h"

#include <errno.h>
#include <string.h>

static void parses_positions(void)
{
    hr_map *m;
    CHECK(hr_stream_token_parse("", 255, &m) == 0 && m == NULL);
    CHECK(hr_stream_token_parse("chat:a~f56779ec8ed4afbe-0~17!news.x~e1-2~0", 255, &m) == 0);
    CHECK(m && hr_map_count(m) == 2);
    const chan_pos *p = m ? hr_map_get(m, "chat:a", 6) : NULL;
    CHECK(p && p->offset == 17);
    CHECK_STR(p ? p->epoch : "", "f56779ec8ed4afbe-0");
    p = m ? hr_map_get(m, "news.x", 6) : NULL;
    CHECK(p && p->offset == 0);
    CHECK_STR(p ? p->epoch : "", "e1-2");
    hr_map_free(m);
    /* the largest offset that fits in 19 digits */
    CHECK(hr_stream_token_parse("a~e~9999999999999999999", 255, &m) == 0);
    p = m ? hr_map_get(m, "a", 1) : NULL;
    CHECK(p && p->offset == 9999999999999999999ull);
    hr_map_free(m);
}

static void refuses_what_it_did_not_hand_out(void)
{
    static const char *bad[] = {
        "junk",
        "a~b",
        "a~~1",
        "~e~1",
        "a~e~",
        "a~e~1x",
        "a~e~-1",
        "a~e~1!",
        "!a~e~1",
        "a~e~1!!b~e~2",
        "a b~e~1",
        "a~e~1~2",
        "a~e~1!a~e~2",                                  /* a channel twice */
        "a~e~99999999999999999999",                     /* 20 digits */
        "a~0123456789012345678901234567890123456789~1", /* an epoch too long */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hr_map *m = (hr_map *)1;
        int rc = hr_stream_token_parse(bad[i], 255, &m);
        if (rc != -EINVAL || m != NULL)
            fprintf(stderr, "  accepted %s\n", bad[i]);
        CHECK(rc == -EINVAL && m == NULL);
    }
    hr_map *m;
    char big[HR_STREAM_TOKEN_MAX + 10];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(hr_stream_token_parse(big, 255, &m) == -EINVAL);
    CHECK(hr_stream_token_parse("abcdef~e~1", 5, &m) == -EINVAL); /* over max_channel_len */
}

int main(void)
{
    RUN(parses_positions);
    RUN(refuses_what_it_did_not_hand_out);
    return TEST_DONE();
}
