/*
 * fuzz_django_decode.c - the Django bridge's msgpack decoder
 * (channels/django_codec.c: dj_decode), which reads whatever anyone with
 * access to the Redis the Django project shares publishes on a group topic
 * or writes into a node's inbox.
 *
 * Invariant beyond "no crash, no leak": a message that decodes is a JSON
 * object (jansson parses it).
 */
#include "fuzz.h"
#include "channels/django.h"

#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dj_message m;
    char err[160];
    if (dj_decode(data, size, 1 << 20, &m, err, sizeof(err)) == 0) {
        json_t *j = json_loadb(m.json, m.len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
        if (!j || !json_is_object(j))
            FUZZ_ASSERT(0);
        json_decref(j);
        dj_message_clear(&m);
    }
    return 0;
}

