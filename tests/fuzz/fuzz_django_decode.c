/*
 * fuzz_django_decode.c - libFuzzer driver for the Django bridge's msgpack
 * decoder (channels/django_codec.c: dj_decode), which reads whatever
 * anyone with access to the Redis the Django project shares publishes on a
 * group topic or writes into a node's inbox.
 *
 * With clang:   cmake -S . -B /tmp/fuzz -DCMAKE_C_COMPILER=clang -DHERALD_FUZZ=ON
 *               cmake --build /tmp/fuzz --target fuzz_django_decode
 *               /tmp/fuzz/tests/fuzz_django_decode tests/fuzz/corpus/django_decode
 * Every build also compiles it with a small main() that replays the corpus
 * (CTest: fuzz/django_decode_corpus), so the seeds stay decodable or
 * refused without a crash under the ASan build.
 *
 * What it checks beyond "no crash, no leak": a message that decodes is a
 * JSON object (jansson parses it).
 */
#include "channels/django.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dj_message m;
    char err[160];
    if (dj_decode(data, size, 1 << 20, &m, err, sizeof(err)) == 0) {
        json_t *j = json_loadb(m.json, m.len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
        if (!j || !json_is_object(j))
            abort();
        json_decref(j);
        dj_message_clear(&m);
    }
    return 0;
}

#ifdef HERALD_FUZZ_REPLAY
/* Replays the files named on the command line. */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("%d inputs replayed\n", argc - 1);
    return 0;
}
#endif
