/*
 * fuzz.h - what every fuzz target in fuzz/ defines.
 *
 * A target is one fuzz_<name>.c with LLVMFuzzerTestOneInput: it feeds the
 * bytes to one parser of untrusted input and abort()s when an invariant
 * breaks, so a wrong answer is a finding as much as a crash. The same file
 * links either with libFuzzer (HERALD_FUZZ=ON, clang) or with replay.c,
 * which runs the checked-in corpus in fuzz/corpus/<name>/ under CTest.
 */
#ifndef HR_FUZZ_H
#define HR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Called once per input; the data is only valid during the call. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant that must hold for every input: a failure is reported and
 * the process aborts, which libFuzzer records as a crash. */
#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A NUL-terminated malloc'ed copy of the input (cut at its first NUL, as a C
 * string argument would be); caller frees. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    for (size_t i = 0; i < size; i++)
        s[i] = (char)data[i];
    s[size] = '\0';
    return s;
}

#endif
