/*
 * creds.h - who a client is: the credentials a request carries or a client
 * sends later, checked against the configured JWT keys and API keys and
 * against the revocations of deleted users.
 *
 * Every transport asks here: REST requests (Authorization: Bearer <jwt> or
 * ApiKey <key>, X-API-Key), WebSocket upgrades (the same, or ?token=<jwt>)
 * and the WebSocket `connect` and `refresh` commands (a token in the
 * message); the coming listen-only transports (SSE, HTTP streaming) take
 * the upgrade's rules, and the connect proxy (SPEC §8) is handed the
 * request headers it forwards (hr_creds_forwarded).
 *
 * Threads: verification runs on any loop thread (the revocations are
 * locked inside); hr_creds_new/free at start and exit.
 */
#ifndef HR_CREDS_H
#define HR_CREDS_H

#include "auth/auth.h"
#include "gateway/config.h"
#include "gateway/metrics.h"
#include "gateway/proxy.h"

#include <stdint.h>

struct lws;

typedef struct hr_creds hr_creds;

/* What verifies credentials: cfg's API keys and the JWT keys in *jwt (both
 * borrowed, set up before the first verification). */
hr_creds *hr_creds_new(const hr_config *cfg, const auth_jwt_config *jwt);
void hr_creds_free(hr_creds *c);

/* Records that tokens of user issued up to `at` (unix s) are refused from
 * now on (a deleted user). Returns 1 when this is newer than what was
 * known, else 0. */
int hr_creds_revoke(hr_creds *c, const char *user, int64_t at);

/* Verifies a JWT (signature, algorithm, exp/nbf/iss/aud) and the
 * revocations. Returns 0 with *id filled (the caller clears it), or -EPERM
 * with the reason in err (*id cleared) and the failure counted in stats. */
int hr_creds_verify_jwt(hr_creds *c, const char *token, auth_identity *id, hr_counters *stats,
                        char *err, size_t errlen);
/* Checks an API key (constant time, against every configured key). Returns
 * 0 with id->backend set, or -EPERM as above. */
int hr_creds_check_api_key(hr_creds *c, const char *key, auth_identity *id, hr_counters *stats,
                           char *err, size_t errlen);

/* Where credentials of a request may be: the headers always; with
 * HR_CREDS_QUERY also the ?token=<jwt> argument (WebSocket upgrades: a
 * browser cannot set headers on one). */
#define HR_CREDS_QUERY 1u

/* The credentials of the request on wsi: Authorization (Bearer <jwt> |
 * ApiKey <key>), else X-API-Key, else (with HR_CREDS_QUERY) ?token=.
 * Returns 0 when some were presented and verified (*id filled; the caller
 * clears it), -ENOENT when none were presented, or -EPERM when they were
 * refused (reason in err). */
int hr_creds_from_request(hr_creds *c, struct lws *wsi, unsigned where, auth_identity *id,
                          hr_counters *stats, char *err, size_t errlen);

/* The header lines a backend proxy call forwards for the request on wsi
 * (SPEC §8: HERALD_PROXY_HEADERS, default Cookie, Authorization,
 * User-Agent, X-Forwarded-For, Origin, Accept-Language; then
 * X-Herald-Proxy-Key): what the connect proxy decides with when a
 * connection brings cookies instead of a JWT. One allocation, free() it. */
hr_proxy_headers *hr_creds_forwarded(const hr_config *cfg, struct lws *wsi);

/* Does the connect proxy decide every connection, no JWT checked
 * (a connect proxy and HERALD_PROXY_CONNECT_PRECEDENCE=proxy)? Else a JWT,
 * when one is presented, is checked and the proxy is not called. */
int hr_creds_proxy_decides(const hr_config *cfg);

#endif
