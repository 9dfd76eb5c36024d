/*
 * auth.h - Herald's authentication and authorisation module: the one header
 * the rest of the code uses for JWT verification and issuing, identities,
 * permission rules (namespaces), usernames, login throttles, and the user
 * store with its worker service.
 *
 * JWT checks, identities, rules and usernames are pure functions (JWT
 * checks of configuration, token and current time), unit tested and fuzzed
 * directly. The user stores do blocking I/O - SQLite files, a synchronous
 * Redis connection - and so run only on the service's worker threads
 * (auth_service), or at start-up; nothing here touches an event loop:
 * completions go back through the caller's auth_reply_to.
 */
#ifndef HR_AUTH_H
#define HR_AUTH_H

#include <errno.h>
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
    int64_t iat;   /* issued-at, unix seconds; 0 when absent */
    int anonymous; /* connected without a token */
    int backend;   /* authenticated with an API key */
} auth_identity;

/* Releases everything the identity owns and zeroes it. */
void auth_identity_clear(auth_identity *id);
/* Deep copy (dst must not own anything yet). */
void auth_identity_copy(auth_identity *dst, const auth_identity *src);
int auth_has_role(const auth_identity *id, const char *role);
/* Backends may publish anywhere: API key, or role "admin" or "publisher". */
int auth_is_backend(const auth_identity *id);

/*---- JWT -------------------------------------------------------------------*/

/* Why a token was refused: 0 or a negative errno value, named (Herald's
 * error convention, CONTRIBUTING.md "Errors"). */
typedef enum auth_jwt_status {
    AUTH_JWT_OK = 0,
    AUTH_JWT_MALFORMED = -EBADMSG,       /* not a JWT, bad base64/JSON, oversized */
    AUTH_JWT_BAD_ALG = -EPROTONOSUPPORT, /* alg none or not the configured algorithm */
    AUTH_JWT_BAD_SIG = -EKEYREJECTED,    /* signature does not verify */
    AUTH_JWT_UNKNOWN_KID = -ENOKEY,      /* kid names no configured key */
    AUTH_JWT_EXPIRED = -EKEYEXPIRED,     /* exp <= now (leeway applied) */
    AUTH_JWT_NOT_YET = -ETIME,           /* nbf > now (leeway applied) */
    AUTH_JWT_BAD_CLAIMS = -EINVAL,       /* missing sub/exp, wrong iss/aud, bad types */
    AUTH_JWT_INTERNAL = -EIO,            /* a key failure */
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

/* The gateway's JWT settings, all optional strings (NULL = unset). */
typedef struct auth_jwt_settings {
    const char *alg;              /* pinned algorithm; default HS256 or by key type */
    const char *secret;           /* HS* shared secret (verifies and signs) */
    const char *public_key_path;  /* PEM public key: RS256/ES256 */
    const char *private_key_path; /* PEM private key for issuing RS256/ES256 */
    const char *kid;              /* kid of the primary key, put in issued tokens */
    const char *iss, *aud;
    char *const *extra_keys; /* "kid:value": a secret (HS*) or PEM path */
    size_t nextra;
} auth_jwt_settings;

/* Builds cfg from the settings: the primary key (secret or public key) plus
 * the extra keys for rotation, each selected by its kid. HS* secrets, the
 * primary and every extra one, must be at least as long as the hash output
 * (RFC 7518 §3.2: 32 bytes for HS256, 48 for HS384, 64 for HS512). Returns
 * 0, or -1 with a message in err that names the offending key. */
int auth_jwt_setup(auth_jwt_config *cfg, const auth_jwt_settings *s, char *err, size_t errlen);

/* The canonical name of a supported algorithm (HS256, HS384, HS512, RS256,
 * ES256; static storage), or NULL for anything else, "none" included. The
 * one list every part of Herald checks algorithms against. */
const char *auth_jwt_alg_name(const char *alg);

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
    int history_size;     /* 0 = no history */
    int history_ttl;      /* seconds */
    char *django_channel; /* Django Channels channel given every client publication, or NULL */
    int subscribe_proxy;  /* the subscribe proxy decides after the rules (SPEC §8) */
    int publish_proxy;    /* the publish proxy decides (and may replace data) after the rules */
} auth_namespace;

/* Parses "anonymous" | "authenticated" | "subscribers" | "role:<r>" | "none".
 * Returns 0, or -EINVAL for an unknown value. */
int auth_rule_parse(const char *s, auth_rule *out);
void auth_namespace_clear(auth_namespace *ns);
/* The default namespace of SPEC §3: authenticated users subscribe, only
 * backends publish, no presence, no history. Caller clears it. */
void auth_namespace_default(auth_namespace *ns);

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

/*---- Rate limits per key (logins, handshakes) --------------------------------*/

/* Limits attempts per key (a username, a client address) with a token
 * bucket: a key starts with `burst` attempts, and one comes back every
 * period_ms / burst milliseconds, up to `burst` again. In any interval of
 * length d a key gets at most burst + d * burst / period_ms attempts, so a
 * burst of attempts is never rewarded by where it falls on the clock (fixed
 * windows gave twice the rate across a boundary). Time is a monotonic clock
 * in milliseconds passed by the caller (hr_now_ms), so tests drive it.
 *
 * Logins: an attempt is counted when it is admitted, before its password is
 * checked: a failure is known only after Argon2id, and counting then let a
 * burst of concurrent guesses all pass. So a login admits its attempt on
 * every throttle that applies (address first, so a locked address does not
 * also spend the username's budget); afterwards, a success resets the
 * username key and releases the address key's attempt, so both keep
 * counting only failures; an attempt that checked no password (store
 * unavailable) is released on both.
 *
 * Thread-safe (an internal mutex): one throttle must be shared by every
 * loop thread, since one per thread would allow one budget per thread.
 * Memory is bounded by max_keys: entries whose bucket is full again are
 * pruned as new keys arrive, and while max_keys live keys exist, new keys
 * are admitted uncounted (fail open: filling the table must not lock
 * everyone out). */
typedef struct auth_throttle auth_throttle;

/* burst attempts at once, refilled at burst per period_ms (values below 1
 * count as 1). Never NULL. */
auth_throttle *auth_throttle_new(int burst, int64_t period_ms, size_t max_keys);
void auth_throttle_free(auth_throttle *t);
/* Admits one attempt for key at monotonic time now_ms: returns 0 and counts
 * it while the key has an attempt left, else the whole seconds until one
 * comes back (Retry-After, rounded up, at least 1) and counts nothing. */
int auth_throttle_admit(auth_throttle *t, const char *key, int64_t now_ms);
/* Gives back one attempt admitted earlier (nothing beyond a full bucket). */
void auth_throttle_release(auth_throttle *t, const char *key, int64_t now_ms);
/* Forgets key: its bucket is full again. */
void auth_throttle_reset(auth_throttle *t, const char *key);

/*---- Users, stores and the worker service ---------------------------------*/

/* Outcomes of user operations: 0 or a negative errno value, named. */
typedef enum auth_status {
    AUTH_OK = 0,
    AUTH_NOT_FOUND = -ENOENT,       /* no such user / refresh token */
    AUTH_TAKEN = -EEXIST,           /* username already registered (same key) */
    AUTH_INVALID = -EINVAL,         /* validation failed; message says which field */
    AUTH_BAD_CREDENTIALS = -EACCES, /* wrong username or password */
    AUTH_UNAVAILABLE = -EAGAIN,     /* the store cannot be reached */
    AUTH_INTERNAL = -EIO,           /* the store answered something it should not */
} auth_status;

/* A user. Every string is owned by the struct; auth_user_clear frees. */
typedef struct auth_user {
    char *id;       /* 32 lowercase hex chars, random */
    char *username; /* display form (auth_username_prepare): NFC, case kept */
    char **roles;
    size_t nroles;
    int64_t created_at;  /* unix seconds */
    char *password_hash; /* Argon2id encoded string; never sent to clients */
} auth_user;

void auth_user_clear(auth_user *u);
/* {"id","username","roles","created_at"}: the public view (no hash). */
json_t *auth_user_json(const auth_user *u);

/* Usernames (username.c): RFC 8265. A name is userparts separated by
 * single ASCII spaces; each userpart is width mapped (fullwidth and
 * halfwidth forms to their plain letters), must hold only code points of
 * the PRECIS IdentifierClass (letters, marks and digits of any script,
 * printable ASCII; no controls, other spaces, zero-width or bidi
 * controls, non-ASCII symbols or punctuation, compatibility characters,
 * unassigned code points), and is put in NFC; names with right-to-left
 * characters must pass the Bidi Rule (RFC 5893); and, from UTS #39, no
 * mixing Latin with Cyrillic or Greek (or two non-Latin scripts besides
 * the CJK sets), no digits of two numbering systems. Both forms are 1-64
 * bytes.
 *
 * auth_username_prepare returns 0 and, for each non-NULL out pointer, a
 * malloc'ed form (caller frees): *display, the UsernameCasePreserved form
 * (what is stored and shown), and *key, the UsernameCaseMapped form
 * (also lowercased with Unicode's toLowerCase: what makes names unique and
 * what logins look up). On refusal it returns -1 with a message in err
 * that names the offending code point where there is one. Pure and
 * thread-safe. auth_username_invalid is NULL for a valid name, else that
 * message (thread-local storage, valid until the next call on the thread). */
int auth_username_prepare(const char *username, char **display, char **key, char *err,
                          size_t errlen);
const char *auth_username_invalid(const char *username);

/* Validation (pure). Each returns NULL when valid, else a static message.
 * Passwords: 8-1024 bytes, not the username (as names compare), not a
 * common password. Roles: 1-64 bytes of [A-Za-z0-9_.:-]. */
const char *auth_password_weak(const char *password, const char *username);
const char *auth_role_invalid(const char *role);

/* Argon2id with OWASP parameters (m=19 MiB, t=2, p=1). Slow (~60 ms):
 * worker threads only. hash returns a malloc'ed encoded string or NULL;
 * verify returns 1 on match. */
char *auth_password_hash(const char *password);
int auth_password_verify(const char *encoded, const char *password);

/* Helpers shared by the two stores (pure). auth_username_key returns the
 * key a store files a name under: the UsernameCaseMapped form for a valid
 * name; for a name these rules refuse, the legacy key. The legacy key
 * (auth_username_legacy_key) is the fold of Herald before RFC 8265: ASCII
 * letters lowered, every other byte kept ("É" / "é" were distinct); names
 * registered then keep working through it and the stores' migration.
 * auth_roles_encode returns the roles as JSON array text. All malloc'ed
 * (caller frees), NULL on allocation failure. auth_roles_decode parses that
 * text into u->roles / u->nroles (owned by u); returns 0, or -1 if the text
 * is not an array of strings or memory runs out (u->roles left empty). */
char *auth_username_key(const char *username);
char *auth_username_legacy_key(const char *username);
char *auth_roles_encode(char *const *roles, size_t nroles);
int auth_roles_decode(const char *text, auth_user *u);

/* A user store: synchronous calls, made only on worker threads, each with
 * its own connection (one SQLite connection or Redis connection per
 * worker). Two implementations: auth_store_sqlite_ops, auth_store_redis_ops. */
typedef struct auth_store auth_store;
typedef struct auth_store_ops {
    const char *name;
    /* target: SQLite path, or redis:// URL; prefix: Redis key prefix. */
    auth_store *(*open)(const char *target, const char *prefix, char *err, size_t errlen);
    void (*close)(auth_store *s);
    /* Creates the schema / checks the server; called once at start-up. */
    auth_status (*init)(auth_store *s, char *err, size_t errlen);
    auth_status (*create_user)(auth_store *s, const auth_user *u);
    auth_status (*get_user_by_id)(auth_store *s, const char *id, auth_user *out);
    auth_status (*get_user_by_name)(auth_store *s, const char *username, auth_user *out);
    auth_status (*delete_user)(auth_store *s, const char *id);
    /* Refresh tokens are stored by SHA-256 of the token, never in clear. */
    auth_status (*put_refresh)(auth_store *s, const char *token_hash, const char *user_id,
                               int64_t expires_at);
    /* Atomically removes the token and returns its user (rotation: a used
     * refresh token stops working). Expired tokens are AUTH_NOT_FOUND. */
    auth_status (*take_refresh)(auth_store *s, const char *token_hash, int64_t now, char **user_id);
    /* Deleted users: their tokens issued before `at` are refused. */
    auth_status (*put_revoked)(auth_store *s, const char *user_id, int64_t at);
    /* Calls fn for every revocation (start-up load). */
    auth_status (*list_revoked)(auth_store *s, void (*fn)(void *ud, const char *id, int64_t at),
                                void *ud);
    /* Small key/value metadata (e.g. the generated JWT secret). get returns
     * a malloc'ed value or NULL; put_new keeps an existing value. */
    char *(*meta_get)(auth_store *s, const char *key);
    auth_status (*meta_put_new)(auth_store *s, const char *key, const char *value);
} auth_store_ops;

extern const auth_store_ops auth_store_sqlite_ops;
extern const auth_store_ops auth_store_redis_ops;

/* Loads the node's generated HS256 secret from the store, creating and
 * storing a random one on first use (*created = 1). *secret is malloc'ed,
 * caller frees. Start-up only: blocks. Returns 0, or -1 with err. */
int auth_secret_load_or_create(const auth_store_ops *ops, const char *target, const char *prefix,
                               char **secret, int *created, char *err, size_t errlen);

/* The service runs user operations on a pool of worker threads (store
 * calls and Argon2id never touch the event loop) and hands each result back
 * to the loop thread that asked: every call names an auth_reply_to, whose
 * post() a worker calls with the finished job; the receiving loop then calls
 * auth_job_finish() on its own thread, which runs the callback. */
typedef struct auth_service auth_service;
typedef struct auth_job auth_job;

typedef struct auth_reply_to {
    /* Called on a worker thread; takes ownership of j. Must only queue it
     * (the gateway posts it to the loop's inbox). */
    void (*post)(void *ud, auth_job *j);
    void *ud;
} auth_reply_to;

typedef struct auth_service_config {
    const auth_store_ops *store;
    const char *target; /* SQLite path or redis:// URL */
    const char *prefix; /* Redis key prefix */
    int workers;        /* threads, default 2 */
} auth_service_config;

/* Starts the workers, opens one store connection each and runs init.
 * Returns NULL with a message in err. */
auth_service *auth_service_new(const auth_service_config *cfg, char *err, size_t errlen);
/* Stops the workers (jobs still queued are dropped without their callbacks
 * running) and frees everything. Jobs already posted stay with their
 * receivers, who finish or discard them. */
void auth_service_free(auth_service *svc);
/* On the receiving thread: runs the job's callback, then frees the job. */
void auth_job_finish(auth_job *j);
/* Frees a job without running its callback (a loop shutting down). */
void auth_job_discard(auth_job *j);

/* Callbacks run on the receiving loop thread, from auth_job_finish. `user` and
 * strings are valid only during the call. `message` explains AUTH_INVALID
 * and other failures (static or job-owned storage). */
typedef void (*auth_user_cb)(void *ud, auth_status st, const auth_user *user, const char *message);
typedef void (*auth_token_cb)(void *ud, auth_status st, const auth_user *user,
                              const char *refresh_token, const char *message);

/* Validates, hashes the password (Argon2id) and stores a new user. Arguments
 * are copied. */
void auth_register(auth_service *svc, const auth_reply_to *to, const char *username,
                   const char *password, char *const *roles, size_t nroles, auth_user_cb cb,
                   void *ud);
/* Checks username + password; on success also creates a refresh token
 * (random 256 bits, base64url) valid for refresh_ttl seconds. A missing
 * user costs the same Argon2 work as a wrong password (no timing oracle). */
void auth_login(auth_service *svc, const auth_reply_to *to, const char *username,
                const char *password, long refresh_ttl, auth_token_cb cb, void *ud);
/* Consumes refresh_token and issues a new one (rotation). */
void auth_refresh(auth_service *svc, const auth_reply_to *to, const char *refresh_token,
                  long refresh_ttl, auth_token_cb cb, void *ud);
void auth_get_user(auth_service *svc, const auth_reply_to *to, const char *id, auth_user_cb cb,
                   void *ud);
/* Deletes the user and records the revocation (time now). */
void auth_delete_user(auth_service *svc, const auth_reply_to *to, const char *id, auth_user_cb cb,
                      void *ud);

/* One recorded revocation: tokens of user_id issued up to `at` are void. */
typedef struct auth_revocation {
    char *user_id;
    int64_t at;
} auth_revocation;
/* The list is valid only during the call. */
typedef void (*auth_revoked_cb)(void *ud, auth_status st, const auth_revocation *list, size_t n);
/* Reads every recorded revocation from the store: how a node of a cluster
 * learns about users deleted through another node. */
void auth_list_revocations(auth_service *svc, const auth_reply_to *to, auth_revoked_cb cb,
                           void *ud);

#endif
