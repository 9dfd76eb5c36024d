/* creds.c - credentials from any transport, and their verification (see
 * creds.h). */
#include "gateway/creds.h"
#include "common/common.h"

#include <libwebsockets.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct hr_creds {
    const hr_config *cfg;
    const auth_jwt_config *jwt;
    pthread_mutex_t revoked_mu;
    hr_map *revoked; /* locked: user id -> (intptr_t) revocation time */
};

hr_creds *hr_creds_new(const hr_config *cfg, const auth_jwt_config *jwt)
{
    hr_creds *c = hr_calloc(1, sizeof(*c));
    c->cfg = cfg;
    c->jwt = jwt;
    pthread_mutex_init(&c->revoked_mu, NULL);
    c->revoked = hr_map_new(NULL);
    return c;
}

void hr_creds_free(hr_creds *c)
{
    if (!c)
        return;
    hr_map_free(c->revoked);
    pthread_mutex_destroy(&c->revoked_mu);
    free(c);
}

/*---- Revocations -----------------------------------------------------------*/

int hr_creds_revoke(hr_creds *c, const char *user, int64_t at)
{
    size_t len = strlen(user);
    int newer = 0;
    pthread_mutex_lock(&c->revoked_mu);
    if (at > (intptr_t)hr_map_get(c->revoked, user, len)) {
        hr_map_put(c->revoked, user, len, (void *)(intptr_t)at);
        newer = 1;
    }
    pthread_mutex_unlock(&c->revoked_mu);
    return newer;
}

/* Tokens of a deleted user issued up to the deletion are refused; a token
 * without iat cannot prove it is newer, so it is refused too. */
static int is_revoked(hr_creds *c, const auth_identity *id)
{
    if (!id->sub)
        return 0;
    pthread_mutex_lock(&c->revoked_mu);
    intptr_t at = (intptr_t)hr_map_get(c->revoked, id->sub, strlen(id->sub));
    pthread_mutex_unlock(&c->revoked_mu);
    return at && id->iat <= at;
}

/*---- Verification ----------------------------------------------------------*/

int hr_creds_verify_jwt(hr_creds *c, const char *token, auth_identity *id, hr_counters *stats,
                        char *err, size_t errlen)
{
    err[0] = '\0';
    auth_jwt_status st = auth_jwt_verify(c->jwt, token, time(NULL), id, err, errlen);
    if (st == AUTH_JWT_OK && !is_revoked(c, id))
        return 0;
    if (st == AUTH_JWT_OK)
        snprintf(err, errlen, "the user was deleted");
    else if (!err[0])
        snprintf(err, errlen, "%s", auth_jwt_status_str(st));
    auth_identity_clear(id);
    HR_INC(stats, auth_failures, 1);
    return -EPERM;
}

int hr_creds_check_api_key(hr_creds *c, const char *key, auth_identity *id, hr_counters *stats,
                           char *err, size_t errlen)
{
    const hr_config *cfg = c->cfg;
    size_t klen = strlen(key);
    int ok = 0;
    /* every key is compared, so timing does not tell which one matched */
    for (size_t i = 0; i < cfg->napi_keys; i++)
        ok |= hr_secure_eq(cfg->api_keys[i], strlen(cfg->api_keys[i]), key, klen);
    if (ok) {
        id->backend = 1;
        return 0;
    }
    snprintf(err, errlen, "invalid API key");
    HR_INC(stats, auth_failures, 1);
    return -EPERM;
}

/*---- Extraction from a request ---------------------------------------------*/

/* Copies a header into buf; -ENOENT when absent, -ENOSPC when larger than
 * buf. */
static int copy_header(struct lws *wsi, enum lws_token_indexes tok, char *buf, int len)
{
    if (lws_hdr_total_length(wsi, tok) <= 0)
        return -ENOENT;
    return lws_hdr_copy(wsi, buf, len, tok) < 0 ? -ENOSPC : 0;
}

static int authorization(hr_creds *c, const char *value, auth_identity *id, hr_counters *stats,
                         char *err, size_t errlen)
{
    if (!strncasecmp(value, "Bearer ", 7))
        return hr_creds_verify_jwt(c, value + 7, id, stats, err, errlen);
    if (!strncasecmp(value, "ApiKey ", 7))
        return hr_creds_check_api_key(c, value + 7, id, stats, err, errlen);
    snprintf(err, errlen, "unsupported Authorization scheme (use Bearer or ApiKey)");
    return -EPERM;
}

/* The ?token= argument, looked up as lws_get_urlarg_by_name does (decoded
 * arguments, name included) but over every argument: lws' lookup stops at
 * the first argument that does not fit the caller's buffer, so a long
 * ?pad= hid the token behind it, and a token longer than the buffer looked
 * like no token at all. Returns the value (in buf) or NULL; *too_large is
 * set when there is a token argument that does not fit buf. */
static const char *query_token(struct lws *wsi, char *buf, int len, int *too_large)
{
    *too_large = 0;
    for (int i = 0;; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen < len) {
            /* fails only past the last argument (an empty one copies "") */
            if (lws_hdr_copy_fragment(wsi, buf, len, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
                return NULL;
            if (!strncmp(buf, "token=", 6))
                return buf + 6;
            continue;
        }
        char *big = hr_malloc((size_t)flen + 1);
        int is_token = lws_hdr_copy_fragment(wsi, big, flen + 1, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0 &&
                       !strncmp(big, "token=", 6);
        free(big);
        if (is_token) {
            *too_large = 1;
            return NULL;
        }
    }
}

int hr_creds_from_request(hr_creds *c, struct lws *wsi, unsigned where, auth_identity *id,
                          hr_counters *stats, char *err, size_t errlen)
{
    char buf[9000];
    const char *v;
    int rc = -ENOENT;

    err[0] = '\0';
    int n = copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, buf, sizeof(buf));
    if (n == -ENOSPC) {
        snprintf(err, errlen, "Authorization header too large");
        rc = -EPERM;
    } else if (n == 0) {
        rc = authorization(c, buf, id, stats, err, errlen);
    } else if (lws_hdr_custom_length(wsi, "x-api-key:", 10) > 0) {
        if (lws_hdr_custom_copy(wsi, buf, sizeof(buf), "x-api-key:", 10) < 0) {
            snprintf(err, errlen, "X-API-Key header too large");
            rc = -EPERM;
        } else {
            rc = hr_creds_check_api_key(c, buf, id, stats, err, errlen);
        }
    } else if (where & HR_CREDS_QUERY) {
        int too_large;
        if ((v = query_token(wsi, buf, (int)sizeof(buf), &too_large)) != NULL) {
            rc = hr_creds_verify_jwt(c, v, id, stats, err, errlen);
        } else if (too_large) {
            snprintf(err, errlen, "token too large");
            rc = -EPERM;
        }
    }
    if (rc == -EPERM)
        auth_identity_clear(id);
    return rc;
}

/*---- Headers for the backend proxies ---------------------------------------*/

/* The lws token of a header name ("cookie"), or -1 for a header lws keeps
 * among its custom ones. */
static int header_token(const char *name)
{
    size_t len = strlen(name);
    for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
        const unsigned char *s = lws_token_to_string((enum lws_token_indexes)t);
        if (s && !strncasecmp((const char *)s, name, len) && s[len] == ':' && !s[len + 1])
            return t;
    }
    return -1;
}

hr_proxy_headers *hr_creds_forwarded(const hr_config *cfg, struct lws *wsi)
{
    size_t n = cfg->nproxy_headers, nh = 0;
    hr_header *hdrs = hr_calloc(n ? n : 1, sizeof(*hdrs));
    char **vals = hr_calloc(n ? n : 1, sizeof(*vals));
    for (size_t i = 0; i < n; i++) {
        const char *name = cfg->proxy_headers[i];
        int tok = header_token(name), len;
        char custom[128];
        snprintf(custom, sizeof(custom), "%s:", name);
        if (tok >= 0)
            len = lws_hdr_total_length(wsi, (enum lws_token_indexes)tok);
        else
            len = lws_hdr_custom_length(wsi, custom, (int)strlen(custom));
        if (len <= 0)
            continue;
        vals[nh] = hr_malloc((size_t)len + 1);
        int got = tok >= 0
                      ? lws_hdr_copy(wsi, vals[nh], len + 1, (enum lws_token_indexes)tok)
                      : lws_hdr_custom_copy(wsi, vals[nh], len + 1, custom, (int)strlen(custom));
        if (got < 0) {
            free(vals[nh]);
            vals[nh] = NULL;
            continue;
        }
        hdrs[nh] = (hr_header){name, vals[nh]};
        nh++;
    }
    hr_proxy_headers *h = hr_proxy_headers_build(cfg->proxy_headers, n, hdrs, nh, cfg->proxy_key);
    for (size_t i = 0; i < nh; i++)
        free(vals[i]);
    free(vals);
    free(hdrs);
    return h;
}

int hr_creds_proxy_decides(const hr_config *cfg)
{
    return cfg->proxy_connect_url && cfg->proxy_connect_first;
}
