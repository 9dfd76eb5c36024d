/*
 * auth.h - Herald's authentication and authorisation module: the one header
 * the rest of the code uses for JWT verification and issuing, identities,
 * and permission rules (namespaces).
 *
 * Nothing here does network I/O or touches the event loop. JWT checks are
 * pure functions of (configuration, token, current time) so they are unit
 * tested and fuzzed directly.
 */
#ifndef HR_AUTH_H
#define HR_AUTH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/*---- Identities ------------------------------------------------------------*/

/* Who is on the other end of a connection or an HTTP request. All strings and
 * arrays are owned by the identity and released by auth_identity_clear(). */
typedef struct auth_identity {
    char *sub;    /* user id; NULL for anonymous and API-key callers */
    char *name;   /* display name ("name" claim), may be NULL */
    char **roles; /* "roles" claim */
    size_t nroles;
    char **channels; /* "channels" claim: patterns, trailing '*' wildcard */
    size_t nchannels;
    json_t *info;  /* "info" claim (object) or NULL; one reference owned */
    int64_t exp;   /* unix seconds; 0 = no expiry (API key, anonymous) */
    char *jti;     /* token id, may be NULL */
    int anonymous; /* connected without a token */
    int backend;   /* authenticated with an API key */
} auth_identity;

/* Releases everything the identity owns and zeroes it. */
void auth_identity_clear(auth_identity *id);
/* Deep copy; returns 0 or -1 on allocation failure (dst left cleared). */
int auth_identity_copy(auth_identity *dst, const auth_identity *src);
int auth_has_role(const auth_identity *id, const char *role);
/* Backends may publish anywhere: API key, or role "admin" or "publisher". */
int auth_is_backend(const auth_identity *id);

/*---- JWT -------------------------------------------------------------------*/

typedef enum auth_jwt_status {
    AUTH_JWT_OK = 0,
    AUTH_JWT_MALFORMED,   /* not a JWT, bad base64/JSON, oversized */
    AUTH_JWT_BAD_ALG,     /* alg none or not the configured algorithm */
    AUTH_JWT_BAD_SIG,     /* signature does not verify */
    AUTH_JWT_UNKNOWN_KID, /* kid names no configured key */
    AUTH_JWT_EXPIRED,     /* exp <= now (leeway applied) */
    AUTH_JWT_NOT_YET,     /* nbf > now (leeway applied) */
    AUTH_JWT_BAD_CLAIMS,  /* missing sub/exp, wrong iss/aud, bad types */
    AUTH_JWT_INTERNAL,    /* allocation or key failure */
} auth_jwt_status;

/* A verification key. For HS* algorithms `key` is the shared secret; for
 * RS256/ES256 it is a PEM public key (private key for issuing). */
typedef struct auth_jwt_key {
    char *kid;          /* NULL = the key for tokens without a kid */
    unsigned char *key; /* owned */
    size_t keylen;
} auth_jwt_key;

typedef struct auth_jwt_config {
    char *alg;          /* "HS256" (default), "HS384", "HS512", "RS256", "ES256" */
    auth_jwt_key *keys; /* verification keys; at least one */
    size_t nkeys;
    auth_jwt_key sign; /* key used by auth_jwt_issue (secret, or PEM private key) */
    char *iss;         /* required issuer, NULL = not checked */
    char *aud;         /* required audience, NULL = not checked */
    int leeway;        /* seconds of clock skew allowed on exp/nbf */
    size_t max_token;  /* tokens longer than this are MALFORMED (default 8192) */
} auth_jwt_config;

/* Verifies token against cfg at time `now` and fills *out (caller clears it).
 * Enforces: the configured algorithm only (never "none"); signature with the
 * key selected by kid; sub present and a non-empty string; exp present and in
 * the future; nbf not in the future; iss/aud when configured. On failure
 * returns the status, leaves *out cleared and writes a short reason to err. */
auth_jwt_status auth_jwt_verify(const auth_jwt_config *cfg, const char *token, time_t now,
                                auth_identity *out, char *err, size_t errlen);

/* Signs a token for id->sub with claims sub, name (if set), roles, exp =
 * now + ttl, iat, jti (random), plus iss/aud if configured. Returns a
 * malloc'ed string the caller frees, or NULL on failure. */
char *auth_jwt_issue(const auth_jwt_config *cfg, const auth_identity *id, time_t now, long ttl);

/* Builds cfg from the gateway's settings: with public_key_path, the PEM
 * public key verifies (alg RS256 or ES256 by key type unless alg is given)
 * and private_key_path, if any, signs; otherwise `secret` is the HS* key
 * for both. iss/aud may be NULL. Returns 0, or -1 with a message in err. */
int auth_jwt_setup(auth_jwt_config *cfg, const char *alg, const char *secret,
                   const char *public_key_path, const char *private_key_path, const char *iss,
                   const char *aud, char *err, size_t errlen);

/* Loads the node's generated HS256 secret from the SQLite file at db_path,
 * creating and storing a random one on first use (*created = 1). *secret is
 * malloc'ed, caller frees. Start-up only: blocks on disk. Returns 0 or -1. */
int auth_secret_load_or_create(const char *db_path, char **secret, int *created, char *err,
                               size_t errlen);

/* Short English text for a status ("token expired", ...). Static storage. */
const char *auth_jwt_status_str(auth_jwt_status st);

/* Frees everything cfg owns (keys, strings) and zeroes it. */
void auth_jwt_config_clear(auth_jwt_config *cfg);

/*---- Namespaces and permissions -------------------------------------------*/

typedef enum auth_rule_kind {
    AUTH_RULE_NONE = 0,      /* nobody (backends still may publish) */
    AUTH_RULE_ANONYMOUS,     /* anyone, even without a token */
    AUTH_RULE_AUTHENTICATED, /* any user with a valid token */
    AUTH_RULE_SUBSCRIBERS,   /* publish only: connections subscribed to the channel */
    AUTH_RULE_ROLE,          /* users holding `role` */
} auth_rule_kind;

typedef struct auth_rule {
    auth_rule_kind kind;
    char *role; /* for AUTH_RULE_ROLE, owned */
} auth_rule;

/* One namespace's configuration; "" is the default namespace. */
typedef struct auth_namespace {
    char *name;
    auth_rule subscribe;
    auth_rule publish;
    int presence;
    int join_leave;
    int history_size; /* 0 = no history */
    int history_ttl;  /* seconds */
} auth_namespace;

/* Parses "anonymous" | "authenticated" | "subscribers" | "role:<r>" | "none".
 * Returns 0, or -1 for an unknown value. */
int auth_rule_parse(const char *s, auth_rule *out);
void auth_namespace_clear(auth_namespace *ns);
/* The default namespace of SPEC §3: authenticated users subscribe, only
 * backends publish, no presence, no history. Caller clears it. */
int auth_namespace_default(auth_namespace *ns);

/* Does pattern match channel? A pattern is an exact name, or a prefix
 * ending in '*' ("chat:*" matches "chat:a" and "chat:"). */
int auth_channel_matches(const char *pattern, const char *channel);
/* If channel is a personal channel "user:<id>", returns a pointer to <id>
 * inside channel; else NULL. */
const char *auth_personal_owner(const char *channel);
/* May id subscribe to channel (in namespace ns)? Personal channels belong
 * to their user only; the "channels" claim grants matching channels; else
 * ns->subscribe decides. Returns 1 if allowed. */
int auth_can_subscribe(const auth_namespace *ns, const auth_identity *id, const char *channel);
/* May id publish to channel? Backends always may; otherwise ns->publish
 * decides, with `subscribed` telling whether the caller's connection is
 * subscribed (for the "subscribers" rule). Returns 1 if allowed. */
int auth_can_publish(const auth_namespace *ns, const auth_identity *id, const char *channel,
                     int subscribed);

#endif
