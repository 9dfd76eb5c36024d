/*
 * tests/unit/auth/jwt.c - unit tests for auth/jwt.c and auth/identity.c.
 *
 * Tokens are made three ways: by hand (header and payload JSON written here,
 * HMAC computed with OpenSSL) so the tests can express anything an attacker
 * can, by libjwt for RS256/ES256, and by auth_jwt_issue for roundtrips. RSA
 * and EC key pairs are generated at start-up into memory; no key files.
 *
 * Why one file of ~870 lines: it is one module's cases (verification, keys,
 * rotation, identities, rules), each a few lines over the same token
 * helpers; split, each part would carry the helpers again.
 */
#include "auth/auth.h"
#include "testing.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#define NOW ((time_t)1700000000)
#define HDR(alg) "{\"alg\":\"" alg "\",\"typ\":\"JWT\"}"
#define HDR_KID(alg, kid) "{\"alg\":\"" alg "\",\"typ\":\"JWT\",\"kid\":\"" kid "\"}"
#define SECRET "0123456789abcdef0123456789abcdef"

/*---- Scratch memory --------------------------------------------------------*/

/* Every string a helper returns is remembered here and freed by tmp_free()
 * at the end of each test, so test bodies stay free of cleanup noise. */
static char *tmp_list[256];
static size_t tmp_n;

static char *keep(char *s)
{
    if (!s || tmp_n == sizeof(tmp_list) / sizeof(tmp_list[0])) {
        fprintf(stderr, "test_jwt: out of scratch memory\n");
        exit(2);
    }
    return tmp_list[tmp_n++] = s;
}

static void tmp_free(void)
{
    while (tmp_n)
        free(tmp_list[--tmp_n]);
}

/* printf into a scratch string. */
static char *strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return keep(n < 0 ? NULL : s);
}

/* A payload with sub "alice" expiring `exp` plus optional extra members
 * (written as JSON object members, e.g. "\"nbf\":1"). */
static char *payload(time_t exp, const char *extra)
{
    return strf("{\"sub\":\"alice\",\"exp\":%lld%s%s}", (long long)exp, extra ? "," : "",
                extra ? extra : "");
}

/*---- Token construction ----------------------------------------------------*/

/* Unpadded base64url of n bytes, as a scratch string. */
static char *b64url(const void *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *in = p;
    char *out = keep(malloc(n / 3 * 4 + 5));
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = tbl[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
    return out;
}

/* "b64(header).b64(payload).sig" from raw JSON texts and a signature segment. */
static char *craft(const char *hdr, const char *pl, const char *sig)
{
    return strf("%s.%s.%s", b64url(hdr, strlen(hdr)), b64url(pl, strlen(pl)), sig);
}

/* A token HMAC-signed by hand with md and the given secret, whatever the
 * header claims: the attacker's view of HS* tokens. */
static char *hs_sign(const EVP_MD *md, const char *secret, const char *hdr, const char *pl)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    char *input = strf("%s.%s", b64url(hdr, strlen(hdr)), b64url(pl, strlen(pl)));
    HMAC(md, secret, (int)strlen(secret), (unsigned char *)input, strlen(input), mac, &maclen);
    return strf("%s.%s", input, b64url(mac, maclen));
}

/* The usual HS256 token over payload pl with the test secret. */
#define HS(pl) hs_sign(EVP_sha256(), SECRET, HDR("HS256"), (pl))

/* A token signed by libjwt (used for RS256/ES256, whose signatures are
 * easier to get right through the library). NULL on failure. */
static char *lib_sign(jwt_alg_t alg, const char *key, const char *kid, const char *pl)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    if (jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, pl) == 0 &&
        jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)strlen(key)) == 0 &&
        (!kid || jwt_add_header(jwt, "kid", kid) == 0))
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    return tok ? keep(tok) : NULL;
}

/* Replaces segment `idx` (0-2) of token with `seg`. */
static char *swap_segment(const char *tok, int idx, const char *seg)
{
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    int l0 = (int)(d1 - tok), l1 = (int)(d2 - d1 - 1);
    if (idx == 0)
        return strf("%s.%.*s.%s", seg, l1, d1 + 1, d2 + 1);
    if (idx == 1)
        return strf("%.*s.%s.%s", l0, tok, seg, d2 + 1);
    return strf("%.*s.%s", (int)(d2 - tok), tok, seg);
}

/*---- Keys and configurations -----------------------------------------------*/

static struct {
    char *rsa_priv, *rsa_pub, *rsa2_pub, *ec_priv, *ec_pub;
} K;

/* PEM text of a key (private as PKCS#8, or the public SubjectPublicKeyInfo)
 * in a malloc'ed string. */
static char *pem_of(EVP_PKEY *pk, int private)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    int ok = b && (private ? PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL)
                           : PEM_write_bio_PUBKEY(b, pk));
    long n = ok ? BIO_get_mem_data(b, &data) : 0;
    if (n > 0 && (out = malloc((size_t)n + 1))) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(b);
    return out;
}

static void keys_generate(void)
{
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *rsa2 = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256");
    if (!rsa || !rsa2 || !ec) {
        fprintf(stderr, "test_jwt: key generation failed\n");
        exit(2);
    }
    K.rsa_priv = pem_of(rsa, 1);
    K.rsa_pub = pem_of(rsa, 0);
    K.rsa2_pub = pem_of(rsa2, 0);
    K.ec_priv = pem_of(ec, 1);
    K.ec_pub = pem_of(ec, 0);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec);
    CHECK(K.rsa_priv && K.rsa_pub && K.rsa2_pub && K.ec_priv && K.ec_pub);
}

static void keys_free(void)
{
    free(K.rsa_priv);
    free(K.rsa_pub);
    free(K.rsa2_pub);
    free(K.ec_priv);
    free(K.ec_pub);
}

/* Fills k with malloc'ed copies, as the config loader would. */
static void key_set(auth_jwt_key *k, const char *key, const char *kid)
{
    k->kid = kid ? strdup(kid) : NULL;
    k->keylen = strlen(key);
    k->key = malloc(k->keylen);
    memcpy(k->key, key, k->keylen);
}

static void cfg_add_key(auth_jwt_config *c, const char *key, const char *kid)
{
    c->keys = realloc(c->keys, (c->nkeys + 1) * sizeof(*c->keys));
    key_set(&c->keys[c->nkeys++], key, kid);
}

/* A configuration owning all its memory, released by auth_jwt_config_clear. */
static void cfg_init(auth_jwt_config *c, const char *alg, const char *key, const char *kid)
{
    memset(c, 0, sizeof(*c));
    c->alg = alg ? strdup(alg) : NULL;
    if (key)
        cfg_add_key(c, key, kid);
}

/* Verifies and discards the identity; also checks that a failure leaves the
 * identity cleared and writes a reason. */
static auth_jwt_status ver_at(const auth_jwt_config *c, const char *tok, time_t now)
{
    auth_identity id;
    char err[128] = "";
    auth_jwt_status st = auth_jwt_verify(c, tok, now, &id, err, sizeof(err));
    if (st != AUTH_JWT_OK)
        CHECK(!id.sub && !id.roles && !id.channels && !id.info && !id.jti && err[0]);
    auth_identity_clear(&id);
    return st;
}

static auth_jwt_status ver(const auth_jwt_config *c, const char *tok)
{
    return ver_at(c, tok, NOW);
}

/*---- Valid tokens ----------------------------------------------------------*/

static void test_hs_valid(void)
{
    auth_jwt_config c;
    const char *algs[] = {"HS256", "HS384", "HS512"};
    const EVP_MD *mds[] = {EVP_sha256(), EVP_sha384(), EVP_sha512()};
    const jwt_alg_t ids[] = {JWT_ALG_HS256, JWT_ALG_HS384, JWT_ALG_HS512};

    for (int i = 0; i < 3; i++) {
        cfg_init(&c, algs[i], SECRET, NULL);
        char *hdr = strf("{\"alg\":\"%s\",\"typ\":\"JWT\"}", algs[i]);
        CHECK(ver(&c, hs_sign(mds[i], SECRET, hdr, payload(NOW + 60, NULL))) == AUTH_JWT_OK);
        CHECK(ver(&c, lib_sign(ids[i], SECRET, NULL, payload(NOW + 60, NULL))) == AUTH_JWT_OK);
        auth_jwt_config_clear(&c);
    }
    /* NULL alg means HS256; the identity carries sub and exp. */
    cfg_init(&c, NULL, SECRET, NULL);
    auth_identity id;
    const char *tok = hs_sign(EVP_sha256(), SECRET, HDR("HS256"), payload(NOW + 60, NULL));
    CHECK(auth_jwt_verify(&c, tok, NOW, &id, NULL, 0) == AUTH_JWT_OK);
    CHECK_STR(id.sub, "alice");
    CHECK(id.exp == NOW + 60 && !id.anonymous && !id.backend && !id.name && !id.nroles);
    auth_identity_clear(&id);
    auth_jwt_config_clear(&c);
    tmp_free();
}

static void test_rs256_valid(void)
{
    auth_jwt_config c;
    cfg_init(&c, "RS256", K.rsa_pub, NULL);
    char *tok = lib_sign(JWT_ALG_RS256, K.rsa_priv, NULL, payload(NOW + 60, NULL));
    CHECK(tok && ver(&c, tok) == AUTH_JWT_OK);
    /* Another RSA key's token does not verify. */
    auth_jwt_config other;
    cfg_init(&other, "RS256", K.rsa2_pub, NULL);
    CHECK(ver(&other, tok) == AUTH_JWT_BAD_SIG);
    /* A middle byte of the signature flipped. */
    char *bad = strf("%s", tok);
    char *sig = strrchr(bad, '.') + 10;
    *sig = *sig == 'A' ? 'B' : 'A';
    CHECK(ver(&c, bad) == AUTH_JWT_BAD_SIG);
    auth_jwt_config_clear(&other);
    auth_jwt_config_clear(&c);
    tmp_free();
}

static void test_es256_valid(void)
{
    auth_jwt_config c;
    cfg_init(&c, "ES256", K.ec_pub, NULL);
    char *tok = lib_sign(JWT_ALG_ES256, K.ec_priv, NULL, payload(NOW + 60, NULL));
    CHECK(tok && ver(&c, tok) == AUTH_JWT_OK);
    char *bad = strf("%s", tok);
    char *sig = strrchr(bad, '.') + 5;
    *sig = *sig == 'A' ? 'B' : 'A';
    CHECK(ver(&c, bad) == AUTH_JWT_BAD_SIG);
    /* The RS256 configuration refuses an ES256 token by its alg. */
    auth_jwt_config rs;
    cfg_init(&rs, "RS256", K.rsa_pub, NULL);
    CHECK(ver(&rs, tok) == AUTH_JWT_BAD_ALG);
    auth_jwt_config_clear(&rs);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Algorithm attacks -----------------------------------------------------*/

static void test_alg_none(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    const char *pl = payload(NOW + 60, NULL);
    CHECK(ver(&c, craft(HDR("none"), pl, "")) == AUTH_JWT_BAD_ALG);
    CHECK(ver(&c, craft("{\"alg\":\"none\"}", pl, "")) == AUTH_JWT_BAD_ALG);
    CHECK(ver(&c, craft(HDR("none"), pl, "c2lnbmF0dXJl")) == AUTH_JWT_BAD_ALG);
    CHECK(ver(&c, craft(HDR("NONE"), pl, "")) == AUTH_JWT_BAD_ALG);
    CHECK(ver(&c, craft(HDR("None"), pl, "")) == AUTH_JWT_BAD_ALG);
    /* Even with a valid HMAC over the alg:none header. */
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, HDR("none"), pl)) == AUTH_JWT_BAD_ALG);
    /* Without a third segment it is not a JWS at all. */
    CHECK(ver(&c, strf("%s.%s", b64url(HDR("none"), strlen(HDR("none"))),
                       b64url(pl, strlen(pl)))) == AUTH_JWT_MALFORMED);
    /* No alg, or alg not a string. */
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "{\"typ\":\"JWT\"}", pl)) == AUTH_JWT_MALFORMED);
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "{\"alg\":1}", pl)) == AUTH_JWT_MALFORMED);
    auth_jwt_config_clear(&c);
    tmp_free();
}

static void test_wrong_alg(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    const char *pl = payload(NOW + 60, NULL);
    CHECK(ver(&c, hs_sign(EVP_sha512(), SECRET, HDR("HS512"), pl)) == AUTH_JWT_BAD_ALG);
    CHECK(ver(&c, lib_sign(JWT_ALG_HS384, SECRET, NULL, pl)) == AUTH_JWT_BAD_ALG);
    /* libjwt compares alg names case-insensitively; the pin does not. */
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, HDR("hs256"), pl)) == AUTH_JWT_BAD_ALG);
    /* Duplicate header keys could let two parsers see different algs. */
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "{\"alg\":\"HS256\",\"alg\":\"none\"}", pl)) ==
          AUTH_JWT_MALFORMED);
    /* A configuration naming an unsupported algorithm verifies nothing. */
    auth_jwt_config bad;
    cfg_init(&bad, "none", SECRET, NULL);
    CHECK(ver(&bad, craft(HDR("none"), pl, "")) == AUTH_JWT_INTERNAL);
    auth_jwt_config_clear(&bad);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/* The classic confusion: the verifier holds an RSA public key, the attacker
 * HMAC-signs with that (public) PEM as the secret and claims HS256. */
static void test_alg_confusion(void)
{
    auth_jwt_config c;
    cfg_init(&c, "RS256", K.rsa_pub, NULL);
    const char *pl = payload(NOW + 60, "\"roles\":[\"admin\"]");
    CHECK(ver(&c, hs_sign(EVP_sha256(), K.rsa_pub, HDR("HS256"), pl)) == AUTH_JWT_BAD_ALG);
    CHECK(ver(&c, lib_sign(JWT_ALG_HS256, K.rsa_pub, NULL, pl)) == AUTH_JWT_BAD_ALG);
    /* Claiming RS256 while HMAC-signing fails the RSA signature check. */
    CHECK(ver(&c, hs_sign(EVP_sha256(), K.rsa_pub, HDR("RS256"), pl)) == AUTH_JWT_BAD_SIG);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Tampering -------------------------------------------------------------*/

static void test_tampered(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    const char *pl = payload(NOW + 60, NULL);
    char *tok = hs_sign(EVP_sha256(), SECRET, HDR("HS256"), pl);
    CHECK(ver(&c, tok) == AUTH_JWT_OK);

    /* Payload swapped for one granting more, signature kept. */
    const char *evil = payload(NOW + 60, "\"roles\":[\"admin\"]");
    CHECK(ver(&c, swap_segment(tok, 1, b64url(evil, strlen(evil)))) == AUTH_JWT_BAD_SIG);
    /* Header swapped (adds a kid), signature kept. */
    const char *h2 = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"x\":1}";
    CHECK(ver(&c, swap_segment(tok, 0, b64url(h2, strlen(h2)))) == AUTH_JWT_BAD_SIG);

    /* Signature altered: one character, truncated, emptied, foreign. */
    char *bad = strf("%s", tok);
    char *sig = strrchr(bad, '.') + 3;
    *sig = *sig == 'A' ? 'B' : 'A';
    CHECK(ver(&c, bad) == AUTH_JWT_BAD_SIG);
    bad = strf("%s", tok);
    bad[strlen(bad) - 2] = '\0';
    CHECK(ver(&c, bad) == AUTH_JWT_BAD_SIG);
    CHECK(ver(&c, swap_segment(tok, 2, "")) == AUTH_JWT_BAD_SIG);
    CHECK(ver(&c, hs_sign(EVP_sha256(), "other secret", HDR("HS256"), pl)) == AUTH_JWT_BAD_SIG);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Time claims -----------------------------------------------------------*/

static void test_times(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    CHECK(ver(&c, HS(payload(NOW - 10, NULL))) == AUTH_JWT_EXPIRED);
    CHECK(ver(&c, HS(payload(NOW, NULL))) == AUTH_JWT_EXPIRED);
    CHECK(ver(&c, HS(payload(NOW + 1, NULL))) == AUTH_JWT_OK);
    CHECK(ver(&c, HS(payload(0, NULL))) == AUTH_JWT_EXPIRED);

    /* Within the leeway an expired token still passes; at its edge not. */
    c.leeway = 30;
    CHECK(ver(&c, HS(payload(NOW - 10, NULL))) == AUTH_JWT_OK);
    CHECK(ver(&c, HS(payload(NOW - 30, NULL))) == AUTH_JWT_EXPIRED);
    CHECK(ver(&c, HS(payload(NOW + 60, strf("\"nbf\":%lld", (long long)NOW + 20)))) == AUTH_JWT_OK);
    CHECK(ver(&c, HS(payload(NOW + 60, strf("\"nbf\":%lld", (long long)NOW + 31)))) ==
          AUTH_JWT_NOT_YET);
    c.leeway = 0;

    CHECK(ver(&c, HS(payload(NOW + 60, strf("\"nbf\":%lld", (long long)NOW + 100)))) ==
          AUTH_JWT_NOT_YET);
    CHECK(ver(&c, HS(payload(NOW + 60, strf("\"nbf\":%lld", (long long)NOW)))) == AUTH_JWT_OK);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"nbf\":\"soon\""))) == AUTH_JWT_BAD_CLAIMS);

    /* exp missing or not an integer. */
    CHECK(ver(&c, HS("{\"sub\":\"alice\"}")) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(strf("{\"sub\":\"alice\",\"exp\":\"%lld\"}", (long long)NOW + 60))) ==
          AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(strf("{\"sub\":\"alice\",\"exp\":%lld.5}", (long long)NOW + 60))) ==
          AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS("{\"sub\":\"alice\",\"exp\":null}")) == AUTH_JWT_BAD_CLAIMS);

    /* The same token is judged by the time passed in. */
    char *tok = HS(payload(NOW + 60, NULL));
    CHECK(ver_at(&c, tok, NOW + 59) == AUTH_JWT_OK);
    CHECK(ver_at(&c, tok, NOW + 60) == AUTH_JWT_EXPIRED);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Subject, issuer, audience ---------------------------------------------*/

static void test_subject(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    long long exp = (long long)NOW + 60;
    CHECK(ver(&c, HS(strf("{\"exp\":%lld}", exp))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(strf("{\"sub\":\"\",\"exp\":%lld}", exp))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(strf("{\"sub\":42,\"exp\":%lld}", exp))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(strf("{\"sub\":null,\"exp\":%lld}", exp))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(strf("{\"sub\":[\"alice\"],\"exp\":%lld}", exp))) == AUTH_JWT_BAD_CLAIMS);
    /* Not checked when not configured. */
    CHECK(ver(&c, HS(payload(NOW + 60, "\"iss\":\"anyone\",\"aud\":7"))) == AUTH_JWT_OK);
    auth_jwt_config_clear(&c);
    tmp_free();
}

static void test_issuer_audience(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    c.iss = strdup("herald");
    CHECK(ver(&c, HS(payload(NOW + 60, "\"iss\":\"herald\""))) == AUTH_JWT_OK);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"iss\":\"evil\""))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(payload(NOW + 60, NULL))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"iss\":[\"herald\"]"))) == AUTH_JWT_BAD_CLAIMS);

    free(c.iss);
    c.iss = NULL;
    c.aud = strdup("ws");
    CHECK(ver(&c, HS(payload(NOW + 60, "\"aud\":\"ws\""))) == AUTH_JWT_OK);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"aud\":\"api\""))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"aud\":[\"api\",\"ws\"]"))) == AUTH_JWT_OK);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"aud\":[\"api\"]"))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"aud\":[]"))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(payload(NOW + 60, "\"aud\":[1,\"ws\"]"))) == AUTH_JWT_BAD_CLAIMS);
    CHECK(ver(&c, HS(payload(NOW + 60, NULL))) == AUTH_JWT_BAD_CLAIMS);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Key ids ---------------------------------------------------------------*/

static void test_kid_rotation(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", "secret-of-2024", "k2024");
    cfg_add_key(&c, "secret-of-2025", "k2025");
    const char *pl = payload(NOW + 60, NULL);
    const EVP_MD *md = EVP_sha256();

    CHECK(ver(&c, hs_sign(md, "secret-of-2024", HDR_KID("HS256", "k2024"), pl)) == AUTH_JWT_OK);
    CHECK(ver(&c, hs_sign(md, "secret-of-2025", HDR_KID("HS256", "k2025"), pl)) == AUTH_JWT_OK);
    CHECK(ver(&c, lib_sign(JWT_ALG_HS256, "secret-of-2025", "k2025", pl)) == AUTH_JWT_OK);
    CHECK(ver(&c, hs_sign(md, "secret-of-2026", HDR_KID("HS256", "k2026"), pl)) ==
          AUTH_JWT_UNKNOWN_KID);
    /* The right kid with the other key's signature. */
    CHECK(ver(&c, hs_sign(md, "secret-of-2024", HDR_KID("HS256", "k2025"), pl)) ==
          AUTH_JWT_BAD_SIG);
    /* No kid and no kid-less key among several: nothing to pick. */
    CHECK(ver(&c, hs_sign(md, "secret-of-2024", HDR("HS256"), pl)) == AUTH_JWT_UNKNOWN_KID);
    CHECK(ver(&c, hs_sign(md, "secret-of-2024", "{\"alg\":\"HS256\",\"kid\":5}", pl)) ==
          AUTH_JWT_MALFORMED);

    /* A kid-less key serves tokens without a kid. */
    cfg_add_key(&c, "legacy-secret", NULL);
    CHECK(ver(&c, hs_sign(md, "legacy-secret", HDR("HS256"), pl)) == AUTH_JWT_OK);
    CHECK(ver(&c, hs_sign(md, "secret-of-2024", HDR("HS256"), pl)) == AUTH_JWT_BAD_SIG);
    auth_jwt_config_clear(&c);

    /* A single key serves a token without a kid even if the key has one. */
    cfg_init(&c, "HS256", "only-secret", "k1");
    CHECK(ver(&c, hs_sign(md, "only-secret", HDR("HS256"), pl)) == AUTH_JWT_OK);
    CHECK(ver(&c, hs_sign(md, "only-secret", HDR_KID("HS256", "k2"), pl)) == AUTH_JWT_UNKNOWN_KID);
    auth_jwt_config_clear(&c);

    /* RS256 rotation between two key pairs' public halves. */
    cfg_init(&c, "RS256", K.rsa2_pub, "old");
    cfg_add_key(&c, K.rsa_pub, "new");
    CHECK(ver(&c, lib_sign(JWT_ALG_RS256, K.rsa_priv, "new", pl)) == AUTH_JWT_OK);
    CHECK(ver(&c, lib_sign(JWT_ALG_RS256, K.rsa_priv, "old", pl)) == AUTH_JWT_BAD_SIG);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Malformed input -------------------------------------------------------*/

static void test_oversized(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    char *pad = keep(malloc(9001));
    memset(pad, 'x', 9000);
    pad[9000] = '\0';
    char *tok = HS(payload(NOW + 60, strf("\"pad\":\"%s\"", pad)));
    CHECK(ver(&c, tok) == AUTH_JWT_MALFORMED);
    c.max_token = 20000;
    CHECK(ver(&c, tok) == AUTH_JWT_OK);
    c.max_token = 60;
    CHECK(ver(&c, HS(payload(NOW + 60, NULL))) == AUTH_JWT_MALFORMED);
    c.max_token = 0;
    CHECK(ver(&c, HS(payload(NOW + 60, NULL))) == AUTH_JWT_OK);
    auth_jwt_config_clear(&c);
    tmp_free();
}

static void test_garbage(void)
{
    auth_jwt_config c;
    cfg_init(&c, "HS256", SECRET, NULL);
    const char *junk[] = {"",      ".",        "..",          "...",         "a.b",
                          "a.b.c", "a.b.c.d",  "%%%.e30.abc", "eyJ.e30.abc", "e30=.e30.abc",
                          "e30",   "e30.e30.", "e30.e30.a+b", "e30.e30.a/b", "\xff\xfe.e30.x"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        if (ver(&c, junk[i]) != AUTH_JWT_MALFORMED)
            fprintf(stderr, "  garbage #%zu not refused as malformed\n", i);
        CHECK(ver(&c, junk[i]) == AUTH_JWT_MALFORMED);
    }
    CHECK(ver(&c, NULL) == AUTH_JWT_MALFORMED);
    const char *pl = payload(NOW + 60, NULL);
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "not json", pl)) == AUTH_JWT_MALFORMED);
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "[\"HS256\"]", pl)) == AUTH_JWT_MALFORMED);
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "\"HS256\"", pl)) == AUTH_JWT_MALFORMED);
    CHECK(ver(&c, HS("not json")) == AUTH_JWT_MALFORMED);
    CHECK(ver(&c, HS("[1,2]")) == AUTH_JWT_MALFORMED);
    CHECK(ver(&c, HS(strf("%s trailing", pl))) == AUTH_JWT_MALFORMED);
    /* Headers libjwt would refuse, or that we cannot honour. */
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "{\"alg\":\"HS256\",\"typ\":\"JOSE\"}", pl)) ==
          AUTH_JWT_MALFORMED);
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", pl)) ==
          AUTH_JWT_MALFORMED);
    /* Bare header without typ is fine. */
    CHECK(ver(&c, hs_sign(EVP_sha256(), SECRET, "{\"alg\":\"HS256\"}", pl)) == AUTH_JWT_OK);

    /* No key configured, or no config: internal error, not a pass. */
    auth_jwt_config empty;
    cfg_init(&empty, "HS256", NULL, NULL);
    CHECK(ver(&empty, HS(pl)) == AUTH_JWT_INTERNAL);
    CHECK(ver(NULL, HS(pl)) == AUTH_JWT_INTERNAL);
    auth_jwt_config_clear(&empty);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Optional claims -------------------------------------------------------*/

static void test_claims_parsed(void)
{
    auth_jwt_config c;
    auth_identity id;
    char err[64];
    cfg_init(&c, "HS256", SECRET, NULL);
    const char *pl = payload(NOW + 60, "\"name\":\"Alice A.\",\"roles\":[\"admin\",\"dev\"],"
                                       "\"channels\":[\"news\",\"chat:*\"],"
                                       "\"info\":{\"color\":\"red\",\"n\":1},\"jti\":\"t-1\"");
    CHECK(auth_jwt_verify(&c, HS(pl), NOW, &id, err, sizeof(err)) == AUTH_JWT_OK);
    CHECK_STR(err, "ok");
    CHECK_STR(id.sub, "alice");
    CHECK_STR(id.name, "Alice A.");
    CHECK_STR(id.jti, "t-1");
    CHECK(id.nroles == 2 && id.nchannels == 2);
    if (id.nroles == 2 && id.nchannels == 2) {
        CHECK_STR(id.roles[0], "admin");
        CHECK_STR(id.roles[1], "dev");
        CHECK_STR(id.channels[0], "news");
        CHECK_STR(id.channels[1], "chat:*");
    }
    CHECK(json_is_object(id.info));
    CHECK_STR(json_string_value(json_object_get(id.info, "color")), "red");
    CHECK(id.info && id.info->refcount == 1);
    CHECK(auth_has_role(&id, "admin") && auth_is_backend(&id));
    auth_identity_clear(&id);
    CHECK(!id.sub && !id.roles && !id.info);

    /* Empty arrays and nulls are the same as absent. */
    pl = payload(NOW + 60, "\"roles\":[],\"channels\":null,\"info\":null,\"name\":null");
    CHECK(auth_jwt_verify(&c, HS(pl), NOW, &id, NULL, 0) == AUTH_JWT_OK);
    CHECK(!id.nroles && !id.roles && !id.nchannels && !id.info && !id.name);
    auth_identity_clear(&id);

    /* Wrong types are refused, whatever else is right. */
    const char *bad[] = {"\"roles\":[\"a\",1]", "\"roles\":\"admin\"", "\"channels\":[null]",
                         "\"channels\":{}",     "\"info\":[1]",        "\"info\":\"x\"",
                         "\"name\":5",          "\"jti\":7",           "\"roles\":[\"a\",[\"b\"]]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(ver(&c, HS(payload(NOW + 60, bad[i]))) == AUTH_JWT_BAD_CLAIMS);
    /* A failure after some claims were copied leaves nothing behind. */
    CHECK(auth_jwt_verify(&c, HS(payload(NOW + 60, "\"name\":\"n\",\"roles\":[\"a\",2]")), NOW, &id,
                          err, sizeof(err)) == AUTH_JWT_BAD_CLAIMS);
    CHECK(!id.sub && !id.name && !id.roles && !id.nroles && err[0]);
    auth_jwt_config_clear(&c);
    tmp_free();
}

/*---- Issuing ---------------------------------------------------------------*/

/* Decodes an issued token with libjwt (signature checked with key) to look at
 * what auth_jwt_verify does not expose: iat and the kid header. */
static void check_issued_extras(const char *tok, const char *key, const char *kid)
{
    jwt_t *jwt = NULL;
    CHECK(jwt_decode(&jwt, tok, (const unsigned char *)key, (int)strlen(key)) == 0);
    if (!jwt)
        return;
    CHECK(jwt_get_grant_int(jwt, "iat") == NOW);
    const char *jti = jwt_get_grant(jwt, "jti");
    CHECK(jti && strlen(jti) == 32 && strspn(jti, "0123456789abcdef") == 32);
    if (kid)
        CHECK_STR(jwt_get_header(jwt, "kid"), kid);
    else
        CHECK(jwt_get_header(jwt, "kid") == NULL);
    jwt_free(jwt);
}

static void test_issue_hs256(void)
{
    auth_jwt_config c;
    cfg_init(&c, NULL, SECRET, NULL);
    key_set(&c.sign, SECRET, NULL);
    char *roles[] = {"admin", "dev"};
    auth_identity in = {.sub = "bob", .name = "Bob", .roles = roles, .nroles = 2};
    auth_identity out;

    char *tok = keep(auth_jwt_issue(&c, &in, NOW, 300));
    CHECK(auth_jwt_verify(&c, tok, NOW, &out, NULL, 0) == AUTH_JWT_OK);
    CHECK_STR(out.sub, "bob");
    CHECK_STR(out.name, "Bob");
    CHECK(out.exp == NOW + 300 && out.nroles == 2 && out.jti && strlen(out.jti) == 32);
    CHECK(auth_has_role(&out, "dev"));
    auth_identity_clear(&out);
    CHECK(ver_at(&c, tok, NOW + 300) == AUTH_JWT_EXPIRED);
    check_issued_extras(tok, SECRET, NULL);

    /* jti differs between tokens; roles is present even when empty. */
    auth_identity plain = {.sub = "carol"};
    char *t2 = keep(auth_jwt_issue(&c, &plain, NOW, 60));
    char *t3 = keep(auth_jwt_issue(&c, &plain, NOW, 60));
    CHECK(strcmp(t2, t3) != 0);
    jwt_t *jwt = NULL;
    CHECK(jwt_decode(&jwt, t2, (const unsigned char *)SECRET, (int)strlen(SECRET)) == 0);
    char *r = jwt ? jwt_get_grants_json(jwt, "roles") : NULL;
    CHECK_STR(r, "[]");
    CHECK(jwt && !jwt_get_grant(jwt, "name"));
    free(r);
    jwt_free(jwt);

    /* iss/aud and kid from the configuration; verify enforces them. */
    c.iss = strdup("herald");
    c.aud = strdup("ws");
    c.sign.kid = strdup("k1");
    c.keys[0].kid = strdup("k1");
    char *t4 = keep(auth_jwt_issue(&c, &in, NOW, 60));
    CHECK(ver(&c, t4) == AUTH_JWT_OK);
    check_issued_extras(t4, SECRET, "k1");
    free(c.aud);
    c.aud = strdup("other");
    CHECK(ver(&c, t4) == AUTH_JWT_BAD_CLAIMS);

    /* Refusals: no sub, empty sub, non-positive ttl, no signing key. */
    auth_identity nosub = {.name = "x"}, emptysub = {.sub = ""};
    CHECK(auth_jwt_issue(&c, &nosub, NOW, 60) == NULL);
    CHECK(auth_jwt_issue(&c, &emptysub, NOW, 60) == NULL);
    CHECK(auth_jwt_issue(&c, &in, NOW, 0) == NULL);
    CHECK(auth_jwt_issue(&c, &in, NOW, -5) == NULL);
    CHECK(auth_jwt_issue(NULL, &in, NOW, 60) == NULL);
    auth_jwt_config nokey;
    cfg_init(&nokey, "HS256", SECRET, NULL);
    CHECK(auth_jwt_issue(&nokey, &in, NOW, 60) == NULL);
    auth_jwt_config_clear(&nokey);
    auth_jwt_config_clear(&c);
    tmp_free();
}

static void test_issue_pem(void)
{
    auth_jwt_config c;
    auth_identity in = {.sub = "svc"}, out;

    cfg_init(&c, "RS256", K.rsa_pub, "r1");
    key_set(&c.sign, K.rsa_priv, "r1");
    char *tok = keep(auth_jwt_issue(&c, &in, NOW, 120));
    CHECK(tok && auth_jwt_verify(&c, tok, NOW, &out, NULL, 0) == AUTH_JWT_OK);
    CHECK_STR(out.sub, "svc");
    CHECK(out.exp == NOW + 120 && out.jti != NULL);
    auth_identity_clear(&out);
    if (tok)
        check_issued_extras(tok, K.rsa_pub, "r1");
    auth_jwt_config_clear(&c);

    cfg_init(&c, "ES256", K.ec_pub, NULL);
    key_set(&c.sign, K.ec_priv, NULL);
    tok = keep(auth_jwt_issue(&c, &in, NOW, 120));
    CHECK(tok && ver(&c, tok) == AUTH_JWT_OK);
    /* A signing key of the wrong type for the algorithm produces nothing. */
    free(c.alg);
    c.alg = strdup("RS256");
    CHECK(auth_jwt_issue(&c, &in, NOW, 120) == NULL);
    auth_jwt_config_clear(&c);
    tmp_free();
}

static void test_status_str(void)
{
    const auth_jwt_status all[] = {AUTH_JWT_OK,      AUTH_JWT_MALFORMED,   AUTH_JWT_BAD_ALG,
                                   AUTH_JWT_BAD_SIG, AUTH_JWT_UNKNOWN_KID, AUTH_JWT_EXPIRED,
                                   AUTH_JWT_NOT_YET, AUTH_JWT_BAD_CLAIMS,  AUTH_JWT_INTERNAL};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const char *s = auth_jwt_status_str(all[i]);
        CHECK(s && *s && strcmp(s, "unknown error"));
    }
    CHECK_STR(auth_jwt_status_str(AUTH_JWT_EXPIRED), "token expired");
    CHECK(strcmp(auth_jwt_status_str(AUTH_JWT_BAD_SIG), auth_jwt_status_str(AUTH_JWT_BAD_ALG)));
    auth_jwt_config_clear(NULL);
}

/*---- Identities and rules --------------------------------------------------*/

static void test_rule_parse(void)
{
    auth_rule r;
    CHECK(auth_rule_parse("anonymous", &r) == 0 && r.kind == AUTH_RULE_ANONYMOUS && !r.role);
    CHECK(auth_rule_parse("authenticated", &r) == 0 && r.kind == AUTH_RULE_AUTHENTICATED);
    CHECK(auth_rule_parse("subscribers", &r) == 0 && r.kind == AUTH_RULE_SUBSCRIBERS);
    CHECK(auth_rule_parse("none", &r) == 0 && r.kind == AUTH_RULE_NONE && !r.role);
    CHECK(auth_rule_parse("role:moderator", &r) == 0 && r.kind == AUTH_RULE_ROLE);
    CHECK_STR(r.role, "moderator");
    free(r.role);
    CHECK(auth_rule_parse("role:a:b", &r) == 0 && r.kind == AUTH_RULE_ROLE);
    CHECK_STR(r.role, "a:b");
    free(r.role);

    const char *bad[] = {"role:", "role", "", "Anonymous", "everyone", " none", "none "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(auth_rule_parse(bad[i], &r) == -EINVAL);
        CHECK(!r.role);
    }
    CHECK(auth_rule_parse(NULL, &r) == -EINVAL);
}

static void test_namespace_default(void)
{
    auth_namespace ns;
    auth_namespace_default(&ns);
    CHECK(ns.name && !*ns.name);
    CHECK_STR(ns.name, "");
    CHECK(ns.subscribe.kind == AUTH_RULE_AUTHENTICATED && ns.publish.kind == AUTH_RULE_NONE);
    CHECK(!ns.presence && !ns.join_leave && !ns.history_size && !ns.history_ttl);
    auth_namespace_clear(&ns);
    CHECK(!ns.name);

    ns.name = strdup("chat");
    CHECK(auth_rule_parse("role:mod", &ns.publish) == 0);
    CHECK(auth_rule_parse("role:member", &ns.subscribe) == 0);
    auth_namespace_clear(&ns);
    CHECK(!ns.name && !ns.publish.role && !ns.subscribe.role);
    auth_namespace_clear(NULL);
}

static void test_roles_backend(void)
{
    char *roles[] = {"dev", "publisher"};
    auth_identity u = {.sub = "u", .roles = roles, .nroles = 1};
    CHECK(auth_has_role(&u, "dev"));
    CHECK(!auth_has_role(&u, "Dev") && !auth_has_role(&u, "publisher"));
    CHECK(!auth_has_role(&u, NULL) && !auth_has_role(NULL, "dev"));
    CHECK(!auth_is_backend(&u));
    u.nroles = 2;
    CHECK(auth_is_backend(&u));
    char *admin[] = {"admin"};
    auth_identity a = {.sub = "a", .roles = admin, .nroles = 1};
    CHECK(auth_is_backend(&a));
    auth_identity key = {.backend = 1};
    CHECK(auth_is_backend(&key));
    auth_identity anon = {.anonymous = 1};
    CHECK(!auth_is_backend(&anon) && !auth_is_backend(NULL));
}

static void test_identity_copy(void)
{
    char *roles[] = {"dev"}, *chans[] = {"news", "chat:*"};
    auth_identity src = {.sub = "s",
                         .name = "N",
                         .roles = roles,
                         .nroles = 1,
                         .channels = chans,
                         .nchannels = 2,
                         .exp = 99,
                         .jti = "j",
                         .backend = 0,
                         .anonymous = 0};
    src.info = json_pack("{s:s}", "k", "v");
    auth_identity dst;
    auth_identity_copy(&dst, &src);
    CHECK_STR(dst.sub, "s");
    CHECK_STR(dst.name, "N");
    CHECK_STR(dst.jti, "j");
    CHECK(dst.sub != src.sub && dst.roles != src.roles && dst.nroles == 1 && dst.nchannels == 2);
    CHECK_STR(dst.channels[1], "chat:*");
    CHECK(dst.info && dst.info != src.info && json_equal(dst.info, src.info));
    CHECK(dst.exp == 99);
    auth_identity_clear(&dst);
    json_decref(src.info);

    auth_identity empty = {.anonymous = 1};
    auth_identity_copy(&dst, &empty);
    CHECK(dst.anonymous && !dst.sub && !dst.roles && !dst.info);
    auth_identity_clear(&dst);
    auth_identity_clear(NULL);
}

int main(void)
{
    keys_generate();
    RUN(test_hs_valid);
    RUN(test_rs256_valid);
    RUN(test_es256_valid);
    RUN(test_alg_none);
    RUN(test_wrong_alg);
    RUN(test_alg_confusion);
    RUN(test_tampered);
    RUN(test_times);
    RUN(test_subject);
    RUN(test_issuer_audience);
    RUN(test_kid_rotation);
    RUN(test_oversized);
    RUN(test_garbage);
    RUN(test_claims_parsed);
    RUN(test_issue_hs256);
    RUN(test_issue_pem);
    RUN(test_status_str);
    RUN(test_rule_parse);
    RUN(test_namespace_default);
    RUN(test_roles_backend);
    RUN(test_identity_copy);
    keys_free();
    return TEST_DONE();
}
