/*
 * config.h - Herald's configuration: defaults, then an optional JSON file,
 * then environment variables, then command-line flags (each overriding the
 * one before). Parsing is pure: no sockets, no global state, so every rule
 * is unit tested.
 */
#ifndef HR_CONFIG_H
#define HR_CONFIG_H

#include "auth/auth.h"
#include "common/log.h"

#include <stddef.h>

typedef struct hr_config {
    /* process */
    char *listen_host;  /* HERALD_LISTEN host part, default "127.0.0.1" */
    int listen_port;    /* default 8080 */
    char *redis_url;    /* HERALD_REDIS_URL; NULL = embedded mode */
    char *redis_prefix; /* HERALD_REDIS_PREFIX, default "herald" */
    char *db_path;      /* HERALD_DB, default "./herald.db" */
    char *node_id;      /* HERALD_NODE_ID, default hostname */
    char *tls_cert;     /* HERALD_TLS_CERT: PEM chain; with tls_key, TLS only */
    char *tls_key;      /* HERALD_TLS_KEY */
    char *web_root;     /* HERALD_WEB_ROOT: files for GETs no route claims; NULL = none */
    char *swagger_ui;   /* HERALD_SWAGGER_UI: swagger-ui-dist for /docs; NULL = no /docs */
    char **api_keys;    /* HERALD_API_KEY, comma-separated */
    size_t napi_keys;
    char **allowed_origins; /* HERALD_ALLOWED_ORIGINS; none = any */
    size_t nallowed_origins;
    hr_log_format log_format; /* HERALD_LOG_FORMAT; default text on a tty, else json */
    int log_level;            /* HERALD_LOG_LEVEL: 0 debug,1 info,2 warn,3 error; default 1 */

    /* JWT (HERALD_JWT_SECRET, HERALD_JWT_PUBLIC_KEY, HERALD_JWT_ALG, ...) */
    char *jwt_secret;      /* NULL = generated once and kept in the store */
    char *jwt_public_key;  /* path to PEM */
    char *jwt_private_key; /* path to PEM, for issuing with RS256/ES256 */
    char *jwt_alg;         /* NULL = HS256 with a secret, RS256/ES256 by key type */
    char *jwt_kid;         /* kid of the primary key, NULL = none */
    char **jwt_keys;       /* "kid:secret-or-PEM-path" extra verification keys */
    size_t njwt_keys;
    char *jwt_iss;
    char *jwt_aud;
    long token_ttl; /* HERALD_TOKEN_TTL: lifetime of issued access tokens, default 3600 */

    /* protocol limits (SPEC §2 defaults) */
    size_t max_message;     /* HERALD_MAX_MESSAGE, 65536 */
    size_t max_channel_len; /* 255 */
    int max_subscriptions;  /* HERALD_MAX_SUBSCRIPTIONS, 512 */
    size_t out_queue_bytes; /* HERALD_OUT_QUEUE, 1048576 */
    int rate_per_sec;       /* HERALD_RATE, 200 */
    int rate_burst;         /* HERALD_RATE_BURST, 400 */
    int connect_timeout;    /* HERALD_CONNECT_TIMEOUT seconds, 10 */
    int allow_anonymous;    /* HERALD_ANONYMOUS, 0 */
    size_t max_body;        /* HERALD_MAX_BODY: REST request bodies, 1048576 */
    int shutdown_grace_ms;  /* HERALD_SHUTDOWN_GRACE_MS, 2000 */

    /* HERALD_REDIS_SENTINEL_PASSWORD: the sentinels' own password, or NULL */
    char *redis_sentinel_password;
    /* permessage-deflate (SPEC §9) */
    int ws_compression;        /* HERALD_WS_COMPRESSION, 0 */
    size_t ws_compression_min; /* HERALD_WS_COMPRESSION_MIN: shorter messages go plain, 256 */
    /* listen-only transports (SPEC §9) */
    int sse_ping; /* HERALD_SSE_PING seconds between keep-alives on /sse and /stream, 25 */

    /* users (issue: auth) */
    int open_registration;  /* HERALD_OPEN_REGISTRATION, 1 */
    long refresh_ttl;       /* HERALD_REFRESH_TTL seconds, 2592000 (30 days) */
    int login_max_failures; /* HERALD_LOGIN_MAX_FAILURES per username per window, 5 */
    int login_window;       /* HERALD_LOGIN_WINDOW seconds, 300 */
    int auth_workers;       /* HERALD_AUTH_WORKERS threads, 2 */

    /* engine */
    int threads;      /* HERALD_THREADS event-loop threads; 0 = one per core */
    int presence_ttl; /* HERALD_PRESENCE_TTL seconds (cluster mode), 25 */

    /* public-gateway limits (0 = off) */
    int max_conns_per_address; /* HERALD_MAX_CONNS_PER_ADDRESS, 1000 */
    int max_conns_per_user;    /* HERALD_MAX_CONNS_PER_USER, 128 */
    int handshake_rate;        /* HERALD_HANDSHAKE_RATE per address per second, 50 */
    char **trusted_proxies;    /* HERALD_TRUSTED_PROXIES: ADDR or ADDR/BITS */
    size_t ntrusted_proxies;
    char **cluster_secrets; /* HERALD_CLUSTER_SECRET: signs control messages */
    size_t ncluster_secrets;
    int ipv4_prefix; /* HERALD_IPV4_PREFIX: clients counted per /N, 32 */
    int ipv6_prefix; /* HERALD_IPV6_PREFIX: clients counted per /N, 64 */

    /* Django Channels bridge (cluster mode; docs/integrations/django.md) */
    int django_channels;     /* HERALD_DJANGO_CHANNELS: 0 off, 1 pubsub, 2 redis */
    char *django_prefix;     /* HERALD_DJANGO_CHANNELS_PREFIX, "asgi" */
    int django_group_expiry; /* HERALD_DJANGO_CHANNELS_GROUP_EXPIRY seconds, 86400 */
    int django_expiry;       /* HERALD_DJANGO_CHANNELS_EXPIRY seconds, 60 */
    int django_capacity;     /* HERALD_DJANGO_CHANNELS_CAPACITY, 100 */
    int django_encrypted;    /* HERALD_DJANGO_CHANNELS_ENCRYPTED: true refuses to start */

    /* backend proxy (SPEC §8; gateway/proxy.h) */
    char *proxy_connect_url;   /* HERALD_PROXY_CONNECT_URL; NULL = no connect proxy */
    char *proxy_refresh_url;   /* HERALD_PROXY_REFRESH_URL */
    char *proxy_subscribe_url; /* HERALD_PROXY_SUBSCRIBE_URL (namespaces' subscribe_proxy) */
    char *proxy_publish_url;   /* HERALD_PROXY_PUBLISH_URL (namespaces' publish_proxy) */
    char *proxy_rpc_url;       /* HERALD_PROXY_RPC_URL: methods no prefix below claims */
    char **proxy_rpc_methods;  /* HERALD_PROXY_RPC_METHODS: "PREFIX=URL" entries */
    size_t nproxy_rpc_methods;
    char **proxy_headers; /* HERALD_PROXY_HEADERS: request headers forwarded */
    size_t nproxy_headers;
    char *proxy_key;           /* HERALD_PROXY_KEY: sent as X-Herald-Proxy-Key */
    int proxy_timeout;         /* HERALD_PROXY_TIMEOUT seconds, 5 */
    int proxy_max_inflight;    /* HERALD_PROXY_MAX_INFLIGHT per node, 256 */
    int proxy_max_queue;       /* HERALD_PROXY_MAX_QUEUE per loop thread, 4096 */
    size_t proxy_max_response; /* HERALD_PROXY_MAX_RESPONSE bytes, 262144 */
    char *proxy_ca_file;       /* HERALD_PROXY_CA_FILE; NULL = the system's CA store */
    int proxy_connect_first;   /* HERALD_PROXY_CONNECT_PRECEDENCE: 0 jwt (SPEC), 1 proxy */

    /* lifecycle events (SPEC §8) */
    char *events_django_channel; /* HERALD_EVENTS_DJANGO_CHANNEL; needs the Django bridge */
    char *events_webhook_url;    /* HERALD_EVENTS_WEBHOOK_URL */
    int events_batch;            /* HERALD_EVENTS_BATCH: events per webhook POST, 100 */
    int events_queue;            /* HERALD_EVENTS_QUEUE: events waiting per destination, 10000 */

    /* namespaces from the config file; always contains "" (the default) */
    auth_namespace *namespaces;
    size_t nnamespaces;

    char *config_path; /* --config / HERALD_CONFIG */
} hr_config;

/* Fills cfg with the SPEC defaults. */
void hr_config_defaults(hr_config *cfg);

/* Applies, in order: the JSON file (path from --config or HERALD_CONFIG in
 * env), environment `env` (NULL-terminated "K=V" array, like environ), and
 * the flags argv[0..argc) (only option flags: the caller strips the
 * subcommand). Unknown flags, unknown file keys and bad values fail with a
 * message naming the key in err. Returns 0 or -EINVAL. */
int hr_config_load(hr_config *cfg, int argc, char **argv, char **env, char *err, size_t errlen);

/* Finds the namespace for a channel name ("ns:rest" -> "ns", else "").
 * Falls back to the default namespace when ns is not configured. */
const auth_namespace *hr_config_namespace(const hr_config *cfg, const char *channel);

/* The user store: Redis in cluster mode, else the SQLite file; and what to
 * open it with (the URL or the path). */
const auth_store_ops *hr_config_store(const hr_config *cfg);
const char *hr_config_store_target(const hr_config *cfg);

/* The URL of the RPC proxy for method: the longest "PREFIX=URL" entry of
 * proxy_rpc_methods whose prefix starts method, else proxy_rpc_url; NULL
 * when none (the rpc op then answers not_found). Borrowed from cfg. */
const char *hr_config_rpc_url(const hr_config *cfg, const char *method);

/* Points out at cfg's JWT settings (borrowed: valid while cfg is). */
void hr_config_jwt_settings(const hr_config *cfg, auth_jwt_settings *out);

/* Frees everything cfg owns and zeroes it. */
void hr_config_clear(hr_config *cfg);

/* Text for --help: every flag, its environment variable and default. */
const char *hr_config_usage(void);

#endif
