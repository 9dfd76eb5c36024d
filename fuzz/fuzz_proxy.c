/*
 * fuzz_proxy.c - a backend's answer to a proxy call (hr_proxy_parse,
 * gateway/proxy.h), and the same bytes as a forwarded header value.
 *
 * Input: the first byte picks the kind (low 3 bits, mod 5) and the HTTP
 * status (high bits: mostly 200); the rest is the body.
 *
 * Invariants: a status other than 200 is unavailable; every outcome
 * carries exactly what it promises - a connect result a user of 1..255
 * bytes, expire_at in range, info an object, at most 64 non-empty roles and
 * at most max_channels valid channel names; refresh an expiry or expired;
 * rpc a data value; an error a [a-z][a-z0-9_]* code and a bounded message;
 * a disconnect a code in 4500..4999 and a reason that fits a close frame;
 * unavailable a reason and nothing else. A connect result becomes an
 * identity and the next request's body. A header line built from the
 * bytes never holds CR, LF or NUL. Nothing leaks (ASan).
 */
#include "fuzz.h"
#include "channels/channels.h"
#include "gateway/proxy.h"

#include <string.h>

static const hr_proxy_limits LIM = {.max_channel_len = 64, .max_channels = 8};

static void check_strings(char **v, size_t n, size_t max_len, int channels)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]);
        FUZZ_ASSERT(len >= 1 && len <= max_len);
        if (channels)
            FUZZ_ASSERT(chan_name_valid(v[i], len, LIM.max_channel_len));
    }
}

static void check_answer(hr_proxy_kind kind, long status, hr_proxy_answer *a)
{
    if (status != 200)
        FUZZ_ASSERT(a->outcome == HR_PROXY_UNAVAILABLE);
    switch (a->outcome) {
    case HR_PROXY_RESULT:
        FUZZ_ASSERT(!a->code && !a->reason && !a->why[0]);
        FUZZ_ASSERT(a->expire_at >= 0 && a->expire_at <= HR_PROXY_MAX_EXPIRE);
        if (kind == HR_PROXY_CONNECT) {
            FUZZ_ASSERT(a->user && *a->user && strlen(a->user) <= HR_PROXY_MAX_USER);
            FUZZ_ASSERT(!a->info || json_is_object(a->info));
            FUZZ_ASSERT(a->nroles <= HR_PROXY_MAX_ROLES && (a->roles || !a->nroles));
            FUZZ_ASSERT(a->nchannels <= LIM.max_channels && (a->channels || !a->nchannels));
            check_strings(a->roles, a->nroles, HR_PROXY_MAX_ROLE, 0);
            check_strings(a->channels, a->nchannels, LIM.max_channel_len, 1);
        } else {
            FUZZ_ASSERT(!a->user && !a->roles && !a->channels && !a->info);
        }
        if (kind == HR_PROXY_RPC)
            FUZZ_ASSERT(a->data);
        if (kind == HR_PROXY_SUBSCRIBE || kind == HR_PROXY_CONNECT || kind == HR_PROXY_REFRESH)
            FUZZ_ASSERT(!a->data);
        if (kind != HR_PROXY_REFRESH)
            FUZZ_ASSERT(!a->expired);
        break;
    case HR_PROXY_ERROR: {
        FUZZ_ASSERT(a->code && a->message && !a->user && !a->why[0]);
        size_t len = strlen(a->code);
        FUZZ_ASSERT(len >= 1 && len <= HR_PROXY_MAX_CODE && a->code[0] >= 'a' && a->code[0] <= 'z');
        for (size_t i = 0; i < len; i++)
            FUZZ_ASSERT((a->code[i] >= 'a' && a->code[i] <= 'z') ||
                        (a->code[i] >= '0' && a->code[i] <= '9') || a->code[i] == '_');
        FUZZ_ASSERT(strlen(a->message) <= HR_PROXY_MAX_MESSAGE);
        break;
    }
    case HR_PROXY_DISCONNECT:
        FUZZ_ASSERT(a->close_code >= 4500 && a->close_code <= 4999);
        FUZZ_ASSERT(a->reason && strlen(a->reason) <= HR_PROXY_MAX_REASON && !a->user);
        break;
    case HR_PROXY_UNAVAILABLE:
        FUZZ_ASSERT(a->why[0]);
        FUZZ_ASSERT(!a->user && !a->info && !a->roles && !a->channels && !a->data && !a->code &&
                    !a->message && !a->reason);
        break;
    default:
        FUZZ_ASSERT(!"unknown outcome");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {200, 200, 200, 200, 200, 201, 302, 500};
    if (size < 1)
        return 0;
    hr_proxy_kind kind = (hr_proxy_kind)((data[0] & 7) % HR_PROXY_NKINDS);
    long status = statuses[data[0] >> 5];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    hr_proxy_answer a;
    hr_proxy_outcome o = hr_proxy_parse(kind, status, body, len, &LIM, &a);
    FUZZ_ASSERT(o == a.outcome);
    check_answer(kind, status, &a);
    if (o == HR_PROXY_RESULT && kind == HR_PROXY_CONNECT) {
        auth_identity id = {0};
        FUZZ_ASSERT(hr_proxy_answer_identity(&a, &id) == 0 && id.sub && !a.user);
        hr_proxy_request rq = {
            .kind = HR_PROXY_RPC, .client = "n.1", .user = id.sub, .method = "m", .data = id.info};
        size_t blen = 0;
        char *next = hr_proxy_request_body(&rq, &blen);
        FUZZ_ASSERT(next); /* the user came from JSON: it is UTF-8 */
        json_t *parsed = json_loadb(next, blen, 0, NULL);
        FUZZ_ASSERT(parsed && !strcmp(json_string_value(json_object_get(parsed, "user")), id.sub));
        json_decref(parsed);
        free(next);
        auth_identity_clear(&id);
    }
    hr_proxy_answer_clear(&a);

    /* the same bytes as the value of a forwarded header */
    char *value = fuzz_cstr((const uint8_t *)body, len);
    char *allow[] = {"Cookie"};
    hr_header h = {"cookie", value};
    hr_proxy_headers *lines = hr_proxy_headers_build(allow, 1, &h, 1, value);
    FUZZ_ASSERT(lines->n <= 2);
    for (size_t i = 0; i < lines->n; i++)
        FUZZ_ASSERT(!strpbrk(lines->line[i], "\r\n"));
    free(lines);
    free(value);
    return 0;
}
