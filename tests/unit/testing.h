/* testing.h - a minimal unit-test harness: CHECK() records failures and
 * keeps going, RUN(fn) runs one case, TEST_DONE() prints "N passed, M
 * failed" and gives the exit code.
 *
 * A test that checks nothing cannot fail, so it fails: a case run by RUN
 * that made no CHECK counts as a failure, and so does a program that made
 * no CHECK at all (TEST_DONE exits 1 with "no check ran"). */
#ifndef HR_TESTING_H
#define HR_TESTING_H

#include <stdio.h>
#include <string.h>

static int t_pass, t_fail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            t_pass++;                                                                              \
        } else {                                                                                   \
            t_fail++;                                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ && b_ && !strcmp(a_, b_)) {                                                         \
            t_pass++;                                                                              \
        } else {                                                                                   \
            t_fail++;                                                                              \
            fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,     \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                       \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int f0_ = t_fail, p0_ = t_pass;                                                            \
        fn();                                                                                      \
        if (t_fail == f0_ && t_pass == p0_) {                                                      \
            t_fail++;                                                                              \
            fprintf(stderr, "FAIL %s (no check ran)\n", #fn);                                      \
        } else {                                                                                   \
            fprintf(stderr, "%s %s\n", t_fail == f0_ ? "ok  " : "FAIL", #fn);                      \
        }                                                                                          \
    } while (0)

static inline int test_done_(void)
{
    if (t_pass + t_fail == 0) {
        printf("0 passed, 0 failed: no check ran\n");
        return 1;
    }
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

#define TEST_DONE() test_done_()

#endif
