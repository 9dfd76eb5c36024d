/* Unit tests for gateway/creds.c's verification: JWTs against the keys and
 * the revocations of deleted users, API keys, and the failures counted. */
#include "gateway/creds.h"
#include "testing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECRET "0123456789abcdef0123456789abcdef"

static hr_config g_cfg;
static auth_jwt_config g_jwt;

static char *token_for(const char *sub, time_t iat)
{
    auth_identity id = {.sub = (char *)sub};
    return auth_jwt_issue(&g_jwt, &id, iat, 600);
}

static void jwts_and_revocations(void)
{
    char err[160];
    hr_counters stats;
    memset(&stats, 0, sizeof(stats));
    hr_creds *c = hr_creds_new(&g_cfg, &g_jwt);
    time_t now = time(NULL);
    char *old = token_for("u1", now - 10), *fresh = token_for("u1", now + 10);
    auth_identity id = {0};
    CHECK(hr_creds_verify_jwt(c, old, &id, &stats, err, sizeof(err)) == 0);
    CHECK_STR(id.sub, "u1");
    auth_identity_clear(&id);
    /* deleted at `now`: tokens issued up to then are refused, later ones not */
    CHECK(hr_creds_revoke(c, "u1", now) == 1);
    CHECK(hr_creds_revoke(c, "u1", now - 100) == 0); /* older news */
    CHECK(hr_creds_verify_jwt(c, old, &id, &stats, err, sizeof(err)) == -EPERM);
    CHECK_STR(err, "the user was deleted");
    CHECK(!id.sub);
    CHECK(hr_creds_verify_jwt(c, fresh, &id, &stats, err, sizeof(err)) == 0);
    auth_identity_clear(&id);
    CHECK(hr_creds_verify_jwt(c, "not.a.jwt", &id, &stats, err, sizeof(err)) == -EPERM);
    CHECK(err[0] != '\0');
    CHECK(atomic_load(&stats.auth_failures) == 2);
    free(old);
    free(fresh);
    hr_creds_free(c);
}

static void api_keys(void)
{
    char err[160];
    hr_counters stats;
    memset(&stats, 0, sizeof(stats));
    hr_creds *c = hr_creds_new(&g_cfg, &g_jwt);
    auth_identity id = {0};
    CHECK(hr_creds_check_api_key(c, "second", &id, &stats, err, sizeof(err)) == 0 && id.backend);
    id.backend = 0;
    CHECK(hr_creds_check_api_key(c, "secon", &id, &stats, err, sizeof(err)) == -EPERM);
    CHECK(!id.backend && !strcmp(err, "invalid API key"));
    CHECK(atomic_load(&stats.auth_failures) == 1);
    hr_creds_free(c);
}

int main(void)
{
    char err[256];
    char *keys[] = {"first", "second"};
    hr_config_defaults(&g_cfg);
    g_cfg.api_keys = keys;
    g_cfg.napi_keys = 2;
    auth_jwt_settings js = {.secret = SECRET};
    if (auth_jwt_setup(&g_jwt, &js, err, sizeof(err)) < 0) {
        fprintf(stderr, "jwt setup: %s\n", err);
        return 1;
    }
    RUN(jwts_and_revocations);
    RUN(api_keys);
    auth_jwt_config_clear(&g_jwt);
    g_cfg.api_keys = NULL;
    g_cfg.napi_keys = 0;
    hr_config_clear(&g_cfg);
    return TEST_DONE();
}
