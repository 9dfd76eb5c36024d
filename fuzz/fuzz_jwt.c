/*
 * fuzz_jwt.c - JWT verification (auth_jwt_verify, auth/auth.h) with a
 * fixed HS256 configuration: a primary key (kid "k0"), a rotation key
 * (kid "k1"), a required issuer and audience, as a gateway would have.
 *
 * The first input byte picks a mode, the rest is its argument:
 *   0  a token as a client sends it: header and signature checks, base64
 *      and JSON decoding of hostile bytes;
 *   1  "HEADER\nCLAIMS": both JSON texts are encoded and signed with the
 *      primary key here, so the claim checks (exp, nbf, iss, aud, sub,
 *      roles, channels, info) see arbitrary JSON behind a valid signature;
 *   2  "SUB\nNAME": a token issued by auth_jwt_issue for that identity must
 *      verify and give the same sub back.
 * Invariants: success means a non-empty sub and a later exp; failure
 * leaves the identity cleared and a reason in err.
 */
#include "fuzz.h"
#include "auth/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#define NOW 1700000000
#define SECRET "fuzz-secret-fuzz-secret-fuzz-secret!"

static auth_jwt_config g_cfg;
static int g_ready;

static void setup(void)
{
    static char *const extra[] = {"k1:another-fuzz-secret-another-fuzz-secret"};
    auth_jwt_settings st = {.alg = "HS256",
                            .secret = SECRET,
                            .kid = "k0",
                            .iss = "herald-fuzz",
                            .aud = "fuzz-aud",
                            .extra_keys = extra,
                            .nextra = 1};
    char err[256];
    FUZZ_ASSERT(auth_jwt_setup(&g_cfg, &st, err, sizeof(err)) == 0);
    g_ready = 1;
}

/* base64url without padding of n bytes into out (room for 4n/3 + 4). */
static size_t b64url(const uint8_t *p, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63], out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63], out[o++] = tab[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

/* header.claims.HMAC-SHA256(primary secret); caller frees. */
static char *sign(const uint8_t *head, size_t hn, const uint8_t *claims, size_t cn)
{
    char *tok = malloc((hn + cn) * 4 / 3 + 64);
    FUZZ_ASSERT(tok != NULL);
    size_t n = b64url(head, hn, tok);
    tok[n++] = '.';
    n += b64url(claims, cn, tok + n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    FUZZ_ASSERT(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, n, mac,
                     &maclen) != NULL);
    tok[n++] = '.';
    b64url(mac, maclen, tok + n);
    return tok;
}

static auth_jwt_status verify(const char *token, auth_identity *id)
{
    char err[256] = "";
    auth_jwt_status st = auth_jwt_verify(&g_cfg, token, NOW, id, err, sizeof(err));
    if (st == AUTH_JWT_OK) {
        FUZZ_ASSERT(id->sub && id->sub[0]);
        FUZZ_ASSERT(id->exp > NOW);
    } else {
        FUZZ_ASSERT(!id->sub && !id->roles && !id->channels && !id->info);
        FUZZ_ASSERT(err[0] != '\0');
        FUZZ_ASSERT(auth_jwt_status_str(st) != NULL);
    }
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ready)
        setup();
    if (size == 0)
        return 0;
    int mode = data[0] % 3;
    const uint8_t *arg = data + 1;
    size_t n = size - 1;
    const uint8_t *nl = memchr(arg, '\n', n);
    auth_identity id = {0};
    if (mode == 0) {
        char *token = fuzz_cstr(arg, n);
        verify(token, &id);
        free(token);
    } else if (mode == 1) {
        static const char dflt[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
        const uint8_t *head = nl ? arg : (const uint8_t *)dflt;
        size_t hn = nl ? (size_t)(nl - arg) : sizeof(dflt) - 1;
        const uint8_t *claims = nl ? nl + 1 : arg;
        size_t cn = nl ? n - hn - 1 : n;
        char *token = sign(head, hn, claims, cn);
        verify(token, &id);
        free(token);
    } else {
        char *sub = fuzz_cstr(arg, nl ? (size_t)(nl - arg) : n);
        char *name = nl ? fuzz_cstr(nl + 1, n - (size_t)(nl - arg) - 1) : NULL;
        char *roles[] = {"admin", "role:x"};
        auth_identity who = {.sub = sub, .name = name, .roles = roles, .nroles = 2};
        char *token = sub[0] ? auth_jwt_issue(&g_cfg, &who, NOW, 3600) : NULL;
        if (token) { /* NULL: a sub or name that is not UTF-8 cannot be a JSON string */
            FUZZ_ASSERT(verify(token, &id) == AUTH_JWT_OK);
            FUZZ_ASSERT(!strcmp(id.sub, sub));
            FUZZ_ASSERT(id.nroles == 2);
        }
        free(token);
        free(sub);
        free(name);
    }
    auth_identity_clear(&id);
    return 0;
}
