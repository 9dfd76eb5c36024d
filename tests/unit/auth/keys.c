/* Unit tests for auth_jwt_setup: algorithm choice, kid rotation, PEM
 * detection and configuration errors. */
#include "auth/auth.h"
#include "testing.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char pub_path[64], priv_path[64];

/* HS256 secrets of exactly the 32 bytes RFC 7518 §3.2 requires. */
#define OLD_SECRET "old-secret-of-at-least-32-bytes!"
#define NEW_SECRET "new-secret-of-at-least-32-bytes!"

/* Writes a fresh P-256 key pair as PEM files. */
static int write_ec_keys(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    snprintf(pub_path, sizeof(pub_path), "/tmp/herald-test-%d.pub", (int)getpid());
    snprintf(priv_path, sizeof(priv_path), "/tmp/herald-test-%d.key", (int)getpid());
    FILE *f = fopen(pub_path, "w"), *g = fopen(priv_path, "w");
    int ok = k && f && g && PEM_write_PUBKEY(f, k) &&
             PEM_write_PrivateKey(g, k, NULL, NULL, 0, NULL, NULL);
    if (f)
        fclose(f);
    if (g)
        fclose(g);
    EVP_PKEY_free(k);
    return ok ? 0 : -1;
}

/* Issues with `issuer` and verifies with `verifier`; returns the status. */
static auth_jwt_status roundtrip(const auth_jwt_config *issuer, const auth_jwt_config *verifier)
{
    auth_identity id = {.sub = "u1"}, out = {0};
    char err[128];
    time_t now = time(NULL);
    char *tok = auth_jwt_issue(issuer, &id, now, 60);
    if (!tok)
        return AUTH_JWT_INTERNAL;
    auth_jwt_status st = auth_jwt_verify(verifier, tok, now, &out, err, sizeof(err));
    auth_identity_clear(&out);
    free(tok);
    return st;
}

static void test_secret_and_rotation(void)
{
    char err[256];
    auth_jwt_config old_cfg, new_cfg, both;
    auth_jwt_settings s_old = {.secret = OLD_SECRET, .kid = "k1"};
    auth_jwt_settings s_new = {.secret = NEW_SECRET, .kid = "k2"};
    char *extra[] = {"k1:" OLD_SECRET};
    auth_jwt_settings s_both = {
        .secret = NEW_SECRET, .kid = "k2", .extra_keys = extra, .nextra = 1};
    CHECK(auth_jwt_setup(&old_cfg, &s_old, err, sizeof(err)) == 0);
    CHECK(auth_jwt_setup(&new_cfg, &s_new, err, sizeof(err)) == 0);
    CHECK(auth_jwt_setup(&both, &s_both, err, sizeof(err)) == 0);
    CHECK_STR(both.alg, "HS256");
    CHECK(both.nkeys == 2);
    /* during rotation, tokens signed by the old and the new key both verify */
    CHECK(roundtrip(&old_cfg, &both) == AUTH_JWT_OK);
    CHECK(roundtrip(&new_cfg, &both) == AUTH_JWT_OK);
    CHECK(roundtrip(&both, &new_cfg) == AUTH_JWT_OK);
    /* after it, the old key's tokens are refused */
    CHECK(roundtrip(&old_cfg, &new_cfg) == AUTH_JWT_UNKNOWN_KID);
    auth_jwt_config_clear(&old_cfg);
    auth_jwt_config_clear(&new_cfg);
    auth_jwt_config_clear(&both);
}

static void test_public_key(void)
{
    char err[256];
    auth_jwt_config verify, sign;
    CHECK(write_ec_keys() == 0);
    auth_jwt_settings sv = {.public_key_path = pub_path};
    auth_jwt_settings ss = {.public_key_path = pub_path, .private_key_path = priv_path};
    CHECK(auth_jwt_setup(&verify, &sv, err, sizeof(err)) == 0);
    CHECK_STR(verify.alg, "ES256"); /* chosen by key type */
    CHECK(auth_jwt_setup(&sign, &ss, err, sizeof(err)) == 0);
    CHECK(roundtrip(&sign, &verify) == AUTH_JWT_OK);
    /* without a private key, Herald can verify but not issue */
    auth_identity id = {.sub = "u"};
    CHECK(auth_jwt_issue(&verify, &id, time(NULL), 60) == NULL);
    auth_jwt_config_clear(&verify);
    auth_jwt_config_clear(&sign);
    unlink(pub_path);
    unlink(priv_path);
}

static void test_errors(void)
{
    char err[256];
    auth_jwt_config c;
    auth_jwt_settings none = {0};
    CHECK(auth_jwt_setup(&c, &none, err, sizeof(err)) == -1 && strstr(err, "secret"));
    auth_jwt_settings bad_alg = {.alg = "none", .secret = "x"};
    CHECK(auth_jwt_setup(&c, &bad_alg, err, sizeof(err)) == -1 && strstr(err, "none"));
    auth_jwt_settings rs_no_key = {.alg = "RS256", .secret = "x"};
    CHECK(auth_jwt_setup(&c, &rs_no_key, err, sizeof(err)) == -1 && strstr(err, "public key"));
    auth_jwt_settings missing = {.public_key_path = "/nonexistent.pem"};
    CHECK(auth_jwt_setup(&c, &missing, err, sizeof(err)) == -1 && strstr(err, "nonexistent"));
    char *bad_extra[] = {"no-colon"};
    auth_jwt_settings be = {.secret = NEW_SECRET, .extra_keys = bad_extra, .nextra = 1};
    CHECK(auth_jwt_setup(&c, &be, err, sizeof(err)) == -1 && strstr(err, "KID:KEY"));
}

/* Sets up with `secret` as the primary HS key under alg (NULL = default)
 * and the given extra keys; returns 0 or -1 and leaves the message in err. */
static int setup_hs(const char *alg, const char *secret, char **extra, size_t nextra, char *err,
                    size_t errlen)
{
    auth_jwt_config c;
    auth_jwt_settings s = {.alg = alg, .secret = secret, .extra_keys = extra, .nextra = nextra};
    int rc = auth_jwt_setup(&c, &s, err, errlen);
    if (rc < 0)
        CHECK(c.nkeys == 0 && c.keys == NULL); /* nothing half-built is kept */
    auth_jwt_config_clear(&c);
    return rc;
}

/* RFC 7518 §3.2: an HS key at least as long as the hash output, for the
 * primary secret and for every rotation key, each named in the error. */
static void test_secret_length(void)
{
    char err[256], s[65];
    static const struct {
        const char *alg;
        size_t min;
    } rule[] = {{NULL, 32}, {"HS256", 32}, {"HS384", 48}, {"HS512", 64}};
    for (size_t i = 0; i < sizeof(rule) / sizeof(rule[0]); i++) {
        memset(s, 'k', rule[i].min);
        s[rule[i].min] = '\0';
        CHECK(setup_hs(rule[i].alg, s, NULL, 0, err, sizeof(err)) == 0);
        s[rule[i].min - 1] = '\0';
        CHECK(setup_hs(rule[i].alg, s, NULL, 0, err, sizeof(err)) == -1);
        char want[128];
        snprintf(want, sizeof(want), "HERALD_JWT_SECRET is %zu bytes; %s needs at least %zu",
                 rule[i].min - 1, rule[i].alg ? rule[i].alg : "HS256", rule[i].min);
        CHECK_STR(err, want);
    }
    CHECK(setup_hs(NULL, "x", NULL, 0, err, sizeof(err)) == -1);
    CHECK_STR(err, "HERALD_JWT_SECRET is 1 byte; HS256 needs at least 32");

    /* rotation keys: the first short one fails, named by its kid */
    char *extra[] = {"k1:" OLD_SECRET, "k2:short"};
    CHECK(setup_hs(NULL, NEW_SECRET, extra, 2, err, sizeof(err)) == -1);
    CHECK_STR(err, "HERALD_JWT_KEYS entry kid \"k2\" is 5 bytes; HS256 needs at least 32");
    CHECK(setup_hs(NULL, NEW_SECRET, extra, 1, err, sizeof(err)) == 0);
    /* and the rule follows the algorithm: 32 bytes is too short for HS512 */
    memset(s, 'k', 64);
    s[64] = '\0';
    CHECK(setup_hs("HS512", s, extra, 1, err, sizeof(err)) == -1);
    CHECK_STR(err, "HERALD_JWT_KEYS entry kid \"k1\" is 32 bytes; HS512 needs at least 64");
}

/* The secret Herald generates when given none passes the rule under every
 * HS algorithm, so a node without HERALD_JWT_SECRET still starts. */
static void test_generated_secret(void)
{
    char dir[] = "/tmp/herald-keys-XXXXXX", db[64], err[256] = "";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    snprintf(db, sizeof(db), "%s/h.db", dir);
    char *secret = NULL;
    int created = 0;
    CHECK(auth_secret_load_or_create(&auth_store_sqlite_ops, db, NULL, &secret, &created, err,
                                     sizeof(err)) == 0);
    CHECK(secret && created);
    const char *algs[] = {"HS256", "HS384", "HS512"};
    for (size_t i = 0; secret && i < 3; i++) {
        CHECK(setup_hs(algs[i], secret, NULL, 0, err, sizeof(err)) == 0);
        if (err[0])
            fprintf(stderr, "  %s: %s\n", algs[i], err);
    }
    free(secret);
    char side[80];
    unlink(db);
    snprintf(side, sizeof(side), "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", db);
    unlink(side);
    rmdir(dir);
}

int main(void)
{
    RUN(test_secret_and_rotation);
    RUN(test_public_key);
    RUN(test_errors);
    RUN(test_secret_length);
    RUN(test_generated_secret);
    return TEST_DONE();
}
