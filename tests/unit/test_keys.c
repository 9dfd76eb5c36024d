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
    auth_jwt_settings s_old = {.secret = "old-secret", .kid = "k1"};
    auth_jwt_settings s_new = {.secret = "new-secret", .kid = "k2"};
    char *extra[] = {"k1:old-secret"};
    auth_jwt_settings s_both = {
        .secret = "new-secret", .kid = "k2", .extra_keys = extra, .nextra = 1};
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
    auth_jwt_settings be = {.secret = "x", .extra_keys = bad_extra, .nextra = 1};
    CHECK(auth_jwt_setup(&c, &be, err, sizeof(err)) == -1 && strstr(err, "KID:KEY"));
}

int main(void)
{
    RUN(test_secret_and_rotation);
    RUN(test_public_key);
    RUN(test_errors);
    return TEST_DONE();
}
