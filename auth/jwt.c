/*
 * jwt.c - JWT verification and issuing (see auth.h), on top of libjwt 1.10.2
 * with its OpenSSL backend.
 *
 * libjwt 1.10.2 only checks the signature, and even that only when it is given
 * a key, and it trusts the token's own "alg" header. So this file does the
 * policy itself, in this order, before anything is believed:
 *
 *   1. size and shape: at most max_token bytes, exactly three segments;
 *   2. the header, decoded here: alg must be the configured one (never
 *      "none"), kid selects the key;
 *   3. the payload, decoded here: a JSON object;
 *   4. the signature, by jwt_decode() with the selected (never NULL) key,
 *      then jwt_get_alg() compared with the configuration once more;
 *   5. the claims from step 3 (the same bytes libjwt verified): exp, nbf,
 *      sub, iss, aud, then the optional ones that fill the identity.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jwt.h>
#include <openssl/crypto.h>

#define AJWT_DEFAULT_ALG "HS256"
#define AJWT_DEFAULT_MAX_TOKEN 8192

/* The three dot-separated segments of a compact JWS, pointing into the token. */
typedef struct ajwt_parts {
    const char *seg[3];
    size_t len[3];
} ajwt_parts;

/*---- Configuration ---------------------------------------------------------*/

/* Maps cfg->alg (NULL = HS256) to libjwt's enum. Only the algorithms Herald
 * supports are accepted; anything else (including "none") is JWT_ALG_INVAL. */
static jwt_alg_t ajwt_config_alg(const auth_jwt_config *cfg, const char **name)
{
    *name = auth_jwt_alg_name(cfg->alg ? cfg->alg : AJWT_DEFAULT_ALG);
    return *name ? jwt_str_alg(*name) : JWT_ALG_INVAL;
}

/* The one list of algorithms Herald accepts (config, setup, verify). */
static const char *const supported_algs[] = {"HS256", "HS384", "HS512", "RS256", "ES256"};

const char *auth_jwt_alg_name(const char *alg)
{
    for (size_t i = 0; alg && i < sizeof(supported_algs) / sizeof(supported_algs[0]); i++)
        if (!strcmp(alg, supported_algs[i]))
            return supported_algs[i];
    return NULL;
}

/* A key libjwt can be handed safely: non-empty (a zero length makes
 * jwt_decode skip the signature check) and its length fits in an int. */
static int ajwt_key_usable(const auth_jwt_key *k)
{
    return k->key && k->keylen > 0 && k->keylen <= INT_MAX;
}

/* Picks the verification key for a token's kid (NULL = no kid header). A kid
 * must name a configured key exactly; a token without one gets the kid-less
 * key, or the only key when there is exactly one. Returns NULL when no key
 * applies. The result points into cfg. */
static const auth_jwt_key *ajwt_select_key(const auth_jwt_config *cfg, const char *kid)
{
    for (size_t i = 0; i < cfg->nkeys; i++) {
        const char *k = cfg->keys[i].kid;
        if (kid ? (k && !strcmp(k, kid)) : !k)
            return &cfg->keys[i];
    }
    if (!kid && cfg->nkeys == 1)
        return &cfg->keys[0];
    return NULL;
}

/*---- Token shape and base64url ---------------------------------------------*/

/* Value of one base64url character, or -1 if it is not in the alphabet
 * (padding '=' included: JWS segments are unpadded). */
static int ajwt_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes n characters of unpadded base64url. Returns a malloc'ed buffer the
 * caller frees (with *outlen bytes, plus a NUL not counted), or NULL when the
 * input is not base64url. */
static unsigned char *ajwt_b64url_decode(const char *s, size_t n, size_t *outlen)
{
    if (n % 4 == 1)
        return NULL;
    unsigned char *out = hr_malloc(n / 4 * 3 + 3);
    size_t o = 0;
    unsigned int acc = 0, bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = ajwt_b64_value((unsigned char)s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6 | (unsigned int)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

/* Decodes one segment as a JSON object (duplicate keys refused, so no two
 * parsers can disagree on which "alg" or "sub" counts). Returns a new
 * reference, or NULL when the segment is not base64url JSON of an object. */
static json_t *ajwt_segment_json(const char *s, size_t n)
{
    size_t len;
    unsigned char *raw = ajwt_b64url_decode(s, n, &len);
    if (!raw)
        return NULL;
    json_t *js = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (js && !json_is_object(js)) {
        json_decref(js);
        return NULL;
    }
    return js;
}

/* Splits token into its three segments without copying. Returns OK, or
 * MALFORMED for oversized tokens, a wrong number of dots, an empty header or
 * payload, or a signature that is not base64url. */
static auth_jwt_status ajwt_split(const auth_jwt_config *cfg, const char *token, ajwt_parts *p,
                                  const char **why)
{
    size_t max = cfg->max_token ? cfg->max_token : AJWT_DEFAULT_MAX_TOKEN;
    size_t len = strnlen(token, max < SIZE_MAX ? max + 1 : max);
    if (len > max) {
        *why = "token too large";
        return AUTH_JWT_MALFORMED;
    }
    const char *s = token;
    for (int i = 0; i < 3; i++) {
        const char *dot = memchr(s, '.', len - (size_t)(s - token));
        const char *end = dot ? dot : token + len;
        if ((i < 2 && !dot) || (i == 2 && dot)) {
            *why = "not three dot-separated segments";
            return AUTH_JWT_MALFORMED;
        }
        p->seg[i] = s;
        p->len[i] = (size_t)(end - s);
        s = end + 1;
    }
    if (!p->len[0] || !p->len[1]) {
        *why = "empty header or payload";
        return AUTH_JWT_MALFORMED;
    }
    for (size_t i = 0; i < p->len[2]; i++) {
        if (ajwt_b64_value((unsigned char)p->seg[2][i]) < 0) {
            *why = "signature is not base64url";
            return AUTH_JWT_MALFORMED;
        }
    }
    return AUTH_JWT_OK;
}

/*---- Header ----------------------------------------------------------------*/

/* Checks the header fields that decide how the token is verified: alg must be
 * exactly the configured algorithm (so "none", and HS256 against an RSA key,
 * never reach libjwt), typ if present is "JWT" (libjwt refuses others), no
 * "crit" extensions (none are understood), kid a string if present. */
static auth_jwt_status ajwt_check_header_fields(json_t *hdr, const char *want_alg, const char **why)
{
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    json_t *typ = json_object_get(hdr, "typ");
    json_t *kid = json_object_get(hdr, "kid");

    if (!alg) {
        *why = "header has no alg";
        return AUTH_JWT_MALFORMED;
    }
    if (!strcasecmp(alg, "none")) {
        *why = "alg none refused";
        return AUTH_JWT_BAD_ALG;
    }
    if (strcmp(alg, want_alg)) {
        *why = "algorithm not allowed";
        return AUTH_JWT_BAD_ALG;
    }
    if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT"))) {
        *why = "unsupported typ";
        return AUTH_JWT_MALFORMED;
    }
    if (json_object_get(hdr, "crit")) {
        *why = "crit header not supported";
        return AUTH_JWT_MALFORMED;
    }
    if (kid && !json_is_string(kid)) {
        *why = "kid is not a string";
        return AUTH_JWT_MALFORMED;
    }
    return AUTH_JWT_OK;
}

/* Decodes and checks the header, then selects the key its kid names. On OK
 * *key points into cfg. */
static auth_jwt_status ajwt_check_header(const auth_jwt_config *cfg, const ajwt_parts *p,
                                         const char *want_alg, const auth_jwt_key **key,
                                         const char **why)
{
    json_t *hdr = ajwt_segment_json(p->seg[0], p->len[0]);
    if (!hdr) {
        *why = "header is not base64url JSON";
        return AUTH_JWT_MALFORMED;
    }
    auth_jwt_status st = ajwt_check_header_fields(hdr, want_alg, why);
    if (st == AUTH_JWT_OK) {
        *key = ajwt_select_key(cfg, json_string_value(json_object_get(hdr, "kid")));
        if (!*key) {
            *why = "unknown kid";
            st = AUTH_JWT_UNKNOWN_KID;
        } else if (!ajwt_key_usable(*key)) {
            *why = "configured key is empty";
            st = AUTH_JWT_INTERNAL;
        }
    }
    json_decref(hdr);
    return st;
}

/*---- Signature -------------------------------------------------------------*/

/* Verifies the signature with libjwt using the selected key (never NULL: with
 * NULL libjwt skips the check) and confirms libjwt saw the algorithm we
 * pinned. Returns OK, BAD_SIG, BAD_ALG or INTERNAL (out of memory). */
static auth_jwt_status ajwt_check_signature(const char *token, const auth_jwt_key *key,
                                            jwt_alg_t want, const char **why)
{
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, token, key->key, (int)key->keylen);
    if (rc == ENOMEM) {
        *why = "out of memory";
        return AUTH_JWT_INTERNAL;
    }
    if (rc || !jwt) {
        *why = "bad signature";
        return AUTH_JWT_BAD_SIG;
    }
    jwt_alg_t got = jwt_get_alg(jwt);
    jwt_free(jwt);
    if (got != want) {
        *why = "algorithm not allowed";
        return AUTH_JWT_BAD_ALG;
    }
    return AUTH_JWT_OK;
}

/*---- Claims ----------------------------------------------------------------*/

/* exp is required and must be an integer later than now - leeway; nbf, when
 * present, an integer no later than now + leeway. libjwt checks neither. */
static auth_jwt_status ajwt_check_times(const auth_jwt_config *cfg, json_t *claims, time_t now,
                                        const char **why)
{
    json_int_t leeway = cfg->leeway > 0 ? cfg->leeway : 0;
    json_t *exp = json_object_get(claims, "exp");
    json_t *nbf = json_object_get(claims, "nbf");

    if (!json_is_integer(exp)) {
        *why = exp ? "exp is not an integer" : "missing exp";
        return AUTH_JWT_BAD_CLAIMS;
    }
    if (json_integer_value(exp) <= (json_int_t)now - leeway) {
        *why = "token expired";
        return AUTH_JWT_EXPIRED;
    }
    if (nbf && !json_is_integer(nbf)) {
        *why = "nbf is not an integer";
        return AUTH_JWT_BAD_CLAIMS;
    }
    if (nbf && json_integer_value(nbf) > (json_int_t)now + leeway) {
        *why = "token not valid yet";
        return AUTH_JWT_NOT_YET;
    }
    return AUTH_JWT_OK;
}

/* True when the token's aud (a string, or an array of strings) contains want.
 * An array with a non-string entry never matches. */
static int ajwt_audience_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return !strcmp(json_string_value(aud), want);
    if (!json_is_array(aud))
        return 0;
    size_t i;
    json_t *v;
    int found = 0;
    json_array_foreach(aud, i, v)
    {
        if (!json_is_string(v))
            return 0;
        if (!strcmp(json_string_value(v), want))
            found = 1;
    }
    return found;
}

/* sub must be a non-empty string; iss and aud must match when configured. */
static auth_jwt_status ajwt_check_subject(const auth_jwt_config *cfg, json_t *claims,
                                          const char **why)
{
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    if (!sub || !*sub) {
        *why = "sub missing, empty or not a string";
        return AUTH_JWT_BAD_CLAIMS;
    }
    if (cfg->iss) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || strcmp(iss, cfg->iss)) {
            *why = "wrong issuer";
            return AUTH_JWT_BAD_CLAIMS;
        }
    }
    if (cfg->aud && !ajwt_audience_matches(json_object_get(claims, "aud"), cfg->aud)) {
        *why = "wrong audience";
        return AUTH_JWT_BAD_CLAIMS;
    }
    return AUTH_JWT_OK;
}

/* Copies an optional string claim into *out (malloc'ed, owned by the
 * identity). Absent or null leaves *out NULL. Returns 0, or -EINVAL if the
 * claim has another type. */
static int ajwt_opt_string(json_t *claims, const char *name, char **out)
{
    json_t *v = json_object_get(claims, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -EINVAL;
    *out = hr_strdup(json_string_value(v));
    return 0;
}

/* Copies an optional array-of-strings claim into a malloc'ed vector of
 * malloc'ed strings (owned by the identity; partial results are left for
 * auth_identity_clear). Returns 0, or -EINVAL on a wrong type. */
static int ajwt_opt_strings(json_t *claims, const char *name, char ***out, size_t *n)
{
    json_t *arr = json_object_get(claims, name);
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return -EINVAL;
    size_t count = json_array_size(arr);
    if (!count)
        return 0;
    *out = hr_calloc(count, sizeof(char *));
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v))
            return -EINVAL;
        (*out)[i] = hr_strdup(json_string_value(v));
        *n = i + 1;
    }
    return 0;
}

/* Takes a reference to the optional "info" object. Returns 0 or -EINVAL
 * when it is present but not an object. */
static int ajwt_opt_info(json_t *claims, json_t **out)
{
    json_t *v = json_object_get(claims, "info");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return -EINVAL;
    *out = json_incref(v);
    return 0;
}

/* Fills the identity from verified claims. Returns OK, or BAD_CLAIMS on a
 * mistyped optional claim (out may then be partly filled: the caller
 * clears it). */
static auth_jwt_status ajwt_fill_identity(json_t *claims, auth_identity *out, const char **why)
{
    int rc = ajwt_opt_string(claims, "sub", &out->sub);
    if (!rc)
        rc = ajwt_opt_string(claims, "name", &out->name);
    if (!rc)
        rc = ajwt_opt_string(claims, "jti", &out->jti);
    if (!rc)
        rc = ajwt_opt_strings(claims, "roles", &out->roles, &out->nroles);
    if (!rc)
        rc = ajwt_opt_strings(claims, "channels", &out->channels, &out->nchannels);
    if (!rc)
        rc = ajwt_opt_info(claims, &out->info);
    if (rc) {
        *why = "name, jti, roles, channels or info has the wrong type";
        return AUTH_JWT_BAD_CLAIMS;
    }
    out->exp = (int64_t)json_integer_value(json_object_get(claims, "exp"));
    /* iat is informational (revocation compares it); a mistyped one is 0. */
    out->iat = (int64_t)json_integer_value(json_object_get(claims, "iat"));
    return AUTH_JWT_OK;
}

/*---- Verify ----------------------------------------------------------------*/

/* Steps 2-5 of the file comment, once the token has the right shape. */
static auth_jwt_status ajwt_verify_parts(const auth_jwt_config *cfg, const char *token,
                                         const ajwt_parts *p, time_t now, auth_identity *out,
                                         const char **why)
{
    const char *alg_name = NULL;
    jwt_alg_t alg = ajwt_config_alg(cfg, &alg_name);
    const auth_jwt_key *key = NULL;
    if (alg == JWT_ALG_INVAL) {
        *why = "unsupported configured algorithm";
        return AUTH_JWT_INTERNAL;
    }
    auth_jwt_status st = ajwt_check_header(cfg, p, alg_name, &key, why);
    if (st != AUTH_JWT_OK)
        return st;
    json_t *claims = ajwt_segment_json(p->seg[1], p->len[1]);
    if (!claims) {
        *why = "payload is not base64url JSON";
        return AUTH_JWT_MALFORMED;
    }
    st = ajwt_check_signature(token, key, alg, why);
    if (st == AUTH_JWT_OK)
        st = ajwt_check_times(cfg, claims, now, why);
    if (st == AUTH_JWT_OK)
        st = ajwt_check_subject(cfg, claims, why);
    if (st == AUTH_JWT_OK)
        st = ajwt_fill_identity(claims, out, why);
    json_decref(claims);
    return st;
}

/* Entry point (contract in auth.h). out is zeroed first and cleared again on
 * any failure, so callers never see half an identity; err always gets a
 * fixed reason string (never token content, which may be hostile). */
auth_jwt_status auth_jwt_verify(const auth_jwt_config *cfg, const char *token, time_t now,
                                auth_identity *out, char *err, size_t errlen)
{
    const char *why = "ok";
    auth_jwt_status st;
    ajwt_parts parts;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!cfg || !out || !cfg->nkeys || !cfg->keys) {
        why = "no verification key configured";
        st = AUTH_JWT_INTERNAL;
    } else if (!token) {
        why = "no token";
        st = AUTH_JWT_MALFORMED;
    } else {
        st = ajwt_split(cfg, token, &parts, &why);
        if (st == AUTH_JWT_OK)
            st = ajwt_verify_parts(cfg, token, &parts, now, out, &why);
    }
    if (st != AUTH_JWT_OK && out)
        auth_identity_clear(out);
    if (err && errlen)
        snprintf(err, errlen, "%s", why);
    return st;
}

/*---- Issue -----------------------------------------------------------------*/

/* A random 128-bit token id as 32 lowercase hex digits plus NUL in out. */
static int ajwt_new_jti(char out[33])
{
    hr_random_hex(out, 16);
    return 0;
}

/* Builds the claims object of an issued token. Returns a new reference, or
 * NULL on allocation or RNG failure. */
static json_t *ajwt_issue_claims(const auth_jwt_config *cfg, const auth_identity *id, time_t now,
                                 long ttl)
{
    char jti[33];
    json_t *c = json_object();
    json_t *roles = json_array();
    int bad = !c || !roles || ajwt_new_jti(jti);

    for (size_t i = 0; !bad && i < id->nroles; i++)
        bad |= json_array_append_new(roles, json_string(id->roles[i]));
    if (!bad) {
        bad |= json_object_set_new(c, "sub", json_string(id->sub));
        bad |= json_object_set(c, "roles", roles);
        bad |= json_object_set_new(c, "exp", json_integer((json_int_t)now + ttl));
        bad |= json_object_set_new(c, "iat", json_integer((json_int_t)now));
        bad |= json_object_set_new(c, "jti", json_string(jti));
    }
    if (!bad && id->name)
        bad |= json_object_set_new(c, "name", json_string(id->name));
    if (!bad && id->info)
        bad |= json_object_set(c, "info", id->info);
    if (!bad && id->nchannels) {
        json_t *chans = json_array();
        for (size_t i = 0; chans && i < id->nchannels; i++)
            bad |= json_array_append_new(chans, json_string(id->channels[i]));
        bad |= !chans || json_object_set_new(c, "channels", chans);
    }
    if (!bad && cfg->iss)
        bad |= json_object_set_new(c, "iss", json_string(cfg->iss));
    if (!bad && cfg->aud)
        bad |= json_object_set_new(c, "aud", json_string(cfg->aud));
    json_decref(roles);
    if (bad) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* Signs claims with cfg->sign under alg (adding the kid header when the key
 * has one). Returns a malloc'ed token the caller frees with free(): a copy of
 * libjwt's string, so callers never depend on how libjwt allocates (newer
 * versions want jwt_free_str). NULL on failure. */
static char *ajwt_sign(const auth_jwt_config *cfg, jwt_alg_t alg, json_t *claims)
{
    jwt_t *jwt = NULL;
    char *json = json_dumps(claims, JSON_COMPACT);
    char *enc = NULL, *tok = NULL;
    int rc = !json || jwt_new(&jwt);

    if (!rc)
        rc = jwt_add_grants_json(jwt, json);
    if (!rc)
        rc = jwt_set_alg(jwt, alg, cfg->sign.key, (int)cfg->sign.keylen);
    if (!rc && cfg->sign.kid)
        rc = jwt_add_header(jwt, "kid", cfg->sign.kid);
    if (!rc)
        enc = jwt_encode_str(jwt);
    if (enc)
        tok = hr_strdup(enc);
    free(enc);
    jwt_free(jwt);
    free(json);
    return tok;
}

/* Entry point (contract in auth.h). Refuses to sign without a non-empty sub,
 * with a ttl outside 1..INT32_MAX seconds, or without a usable signing key.
 * The returned token is malloc'ed; the caller frees it with free(). */
char *auth_jwt_issue(const auth_jwt_config *cfg, const auth_identity *id, time_t now, long ttl)
{
    const char *alg_name;
    if (!cfg || !id || !id->sub || !*id->sub || ttl <= 0 || ttl > INT32_MAX)
        return NULL;
    jwt_alg_t alg = ajwt_config_alg(cfg, &alg_name);
    if (alg == JWT_ALG_INVAL || !ajwt_key_usable(&cfg->sign))
        return NULL;
    json_t *claims = ajwt_issue_claims(cfg, id, now, ttl);
    if (!claims)
        return NULL;
    char *tok = ajwt_sign(cfg, alg, claims);
    json_decref(claims);
    return tok;
}

/*---- Status text and cleanup -----------------------------------------------*/

/* Fixed English text for logs and error replies; static storage. */
const char *auth_jwt_status_str(auth_jwt_status st)
{
    switch (st) {
    case AUTH_JWT_OK:
        return "ok";
    case AUTH_JWT_MALFORMED:
        return "malformed token";
    case AUTH_JWT_BAD_ALG:
        return "algorithm not allowed";
    case AUTH_JWT_BAD_SIG:
        return "invalid signature";
    case AUTH_JWT_UNKNOWN_KID:
        return "unknown key id";
    case AUTH_JWT_EXPIRED:
        return "token expired";
    case AUTH_JWT_NOT_YET:
        return "token not valid yet";
    case AUTH_JWT_BAD_CLAIMS:
        return "invalid claims";
    case AUTH_JWT_INTERNAL:
        return "internal error";
    }
    return "unknown error";
}

/* Frees one key, wiping the secret first so it does not linger in freed
 * heap memory. */
static void ajwt_key_clear(auth_jwt_key *k)
{
    free(k->kid);
    if (k->key) {
        OPENSSL_cleanse(k->key, k->keylen);
        free(k->key);
    }
    memset(k, 0, sizeof(*k));
}

/* Releases every key (secrets wiped first) and string cfg owns, then zeroes
 * it so a second call is harmless. NULL ok. */
void auth_jwt_config_clear(auth_jwt_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; cfg->keys && i < cfg->nkeys; i++)
        ajwt_key_clear(&cfg->keys[i]);
    free(cfg->keys);
    ajwt_key_clear(&cfg->sign);
    free(cfg->alg);
    free(cfg->iss);
    free(cfg->aud);
    memset(cfg, 0, sizeof(*cfg));
}
