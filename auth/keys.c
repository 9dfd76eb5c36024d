/*
 * keys.c - turns the gateway's JWT settings into an auth_jwt_config:
 * reads PEM files, picks the algorithm from the key type, and keeps the
 * secret for HS*. Runs once at start-up, before the event loop.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole (small) file. Returns malloc'ed bytes the caller frees, or
 * NULL with a message in err. */
static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open key file %s", path);
        return NULL;
    }
    unsigned char *buf = hr_malloc(65536 + 1);
    size_t n = fread(buf, 1, 65536, f);
    fclose(f);
    if (n == 0 || n == 65536) {
        free(buf);
        snprintf(err, errlen, "key file %s is empty or too large", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* RS256 for RSA keys, ES256 for P-256 EC keys; NULL if neither. */
static const char *alg_for_public_pem(const unsigned char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    const char *alg = NULL;
    if (k) {
        int id = EVP_PKEY_get_base_id(k);
        alg = id == EVP_PKEY_RSA ? "RS256" : id == EVP_PKEY_EC ? "ES256" : NULL;
    }
    EVP_PKEY_free(k);
    BIO_free(bio);
    return alg;
}

static int set_key(auth_jwt_key *k, const unsigned char *bytes, size_t len)
{
    k->key = hr_malloc(len + 1);
    memcpy(k->key, bytes, len);
    k->key[len] = '\0';
    k->keylen = len;
    return 0;
}

static int setup_public_key(auth_jwt_config *cfg, const char *alg, const char *pub,
                            const char *priv, char *err, size_t errlen)
{
    size_t len;
    unsigned char *pem = read_file(pub, &len, err, errlen);
    if (!pem)
        return -1;
    const char *detected = alg_for_public_pem(pem, len);
    if (!detected) {
        snprintf(err, errlen, "%s is not an RSA or EC public key in PEM format", pub);
        free(pem);
        return -1;
    }
    cfg->alg = hr_strdup(alg ? alg : detected);
    cfg->keys = hr_calloc(1, sizeof(auth_jwt_key));
    cfg->nkeys = 1;
    int rc = set_key(&cfg->keys[0], pem, len);
    free(pem);
    if (rc == 0 && priv) {
        unsigned char *ppem = read_file(priv, &len, err, errlen);
        if (!ppem)
            return -1;
        rc = set_key(&cfg->sign, ppem, len);
        free(ppem);
    }
    return rc;
}

/* RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
 * Shorter secrets (often words or short passphrases) can be brute-forced
 * offline from one captured token, and then every token can be forged. */
static size_t hs_min_secret(const char *alg)
{
    if (!strcmp(alg, "HS384"))
        return 48;
    if (!strcmp(alg, "HS512"))
        return 64;
    return 32;
}

/* Returns 0, or -1 with a message naming the key (`what`) in err. */
static int check_secret_len(const char *alg, size_t len, const char *what, char *err, size_t errlen)
{
    size_t min = hs_min_secret(alg);
    if (len >= min)
        return 0;
    snprintf(err, errlen, "%s is %zu byte%s; %s needs at least %zu", what, len, len == 1 ? "" : "s",
             alg, min);
    return -1;
}

static int setup_secret(auth_jwt_config *cfg, const char *alg, const char *secret, char *err,
                        size_t errlen)
{
    size_t len = strlen(secret);
    if (check_secret_len(alg ? alg : "HS256", len, "HERALD_JWT_SECRET", err, errlen) < 0)
        return -1;
    cfg->alg = hr_strdup(alg ? alg : "HS256");
    cfg->keys = hr_calloc(1, sizeof(auth_jwt_key));
    cfg->nkeys = 1;
    if (set_key(&cfg->keys[0], (const unsigned char *)secret, len) < 0)
        return -1;
    return set_key(&cfg->sign, (const unsigned char *)secret, len);
}

/* Adds one "kid:value" rotation key: value is the secret for HS*, else the
 * path of a PEM public key. */
static int add_extra_key(auth_jwt_config *cfg, const char *spec, char *err, size_t errlen)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec || !colon[1]) {
        snprintf(err, errlen, "HERALD_JWT_KEYS: \"%.40s\" is not KID:KEY", spec);
        return -1;
    }
    cfg->keys = hr_realloc(cfg->keys, (cfg->nkeys + 1) * sizeof(*cfg->keys));
    auth_jwt_key *k = &cfg->keys[cfg->nkeys];
    memset(k, 0, sizeof(*k));
    cfg->nkeys++;
    k->kid = hr_strndup(spec, (size_t)(colon - spec));
    if (!strncmp(cfg->alg, "HS", 2)) {
        char what[96];
        size_t len = strlen(colon + 1);
        snprintf(what, sizeof(what), "HERALD_JWT_KEYS entry kid \"%.40s\"", k->kid);
        if (check_secret_len(cfg->alg, len, what, err, errlen) < 0)
            return -1;
        return set_key(k, (const unsigned char *)colon + 1, len);
    }
    size_t len;
    unsigned char *pem = read_file(colon + 1, &len, err, errlen);
    if (!pem)
        return -1;
    int rc = set_key(k, pem, len);
    free(pem);
    return rc;
}

static int set_kid(auth_jwt_config *cfg, const char *kid)
{
    if (!kid)
        return 0;
    cfg->keys[0].kid = hr_strdup(kid);
    cfg->sign.kid = hr_strdup(kid);
    return 0;
}

int auth_jwt_setup(auth_jwt_config *cfg, const auth_jwt_settings *st, char *err, size_t errlen)
{
    const char *alg = st->alg;
    int ok = !alg || auth_jwt_alg_name(alg);
    memset(cfg, 0, sizeof(*cfg));
    err[0] = '\0';
    if (!ok) {
        snprintf(err, errlen, "unsupported JWT algorithm %s", alg);
        return -1;
    }
    int is_hs = alg && !strncmp(alg, "HS", 2);
    int rc;
    if (st->public_key_path && !is_hs) {
        rc = setup_public_key(cfg, alg, st->public_key_path, st->private_key_path, err, errlen);
    } else if (st->secret && st->secret[0] && !(alg && !is_hs)) {
        rc = setup_secret(cfg, alg, st->secret, err, errlen);
    } else {
        snprintf(err, errlen, "%s needs %s", alg ? alg : "JWT verification",
                 is_hs || !alg ? "a secret (HERALD_JWT_SECRET)"
                               : "a public key (HERALD_JWT_PUBLIC_KEY)");
        return -1;
    }
    if (rc == 0)
        rc = set_kid(cfg, st->kid);
    for (size_t i = 0; rc == 0 && i < st->nextra; i++)
        rc = add_extra_key(cfg, st->extra_keys[i], err, errlen);
    if (rc == 0) {
        cfg->iss = st->iss ? hr_strdup(st->iss) : NULL;
        cfg->aud = st->aud ? hr_strdup(st->aud) : NULL;
    }
    if (rc < 0)
        auth_jwt_config_clear(cfg);
    return rc;
}
