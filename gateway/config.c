/*
 * config.c - builds an hr_config from defaults, an optional JSON file, the
 * environment and command-line flags (see config.h for the precedence).
 *
 * Every option is described once, in opt_table[]: JSON key, environment
 * variable, flag, type and where it lives in hr_config. The three sources
 * only differ in how they find an option's text; all of them hand it to
 * opt_apply(), so a value is parsed and validated the same way wherever it
 * comes from, and --help is generated from the same table. Namespaces exist
 * only in the file and are parsed by config_ns.c.
 *
 * The value parsers and the checks a row names live in config_check.c,
 * which config_ns.c shares; this file keeps the table and how the sources
 * reach it.
 */
#include "gateway/config.h"
#include "gateway/config_internal.h"
#include "common/common.h"
#include "common/redis_url.h"
#include "gateway/proxy.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* log_format is written through an int pointer like the other choices. */
_Static_assert(sizeof(hr_log_format) == sizeof(int), "hr_log_format must be int-sized");

/*---- Option table ----------------------------------------------------------*/

typedef enum opt_type {
    OPT_STR,    /* char *, must not be empty */
    OPT_NSTR,   /* char *, "" = unset (NULL) */
    OPT_LIST,   /* char ** at off, size_t count at off2; comma-separated, "" = none */
    OPT_LISTEN, /* HOST:PORT into char * at off and int port at off2 */
    OPT_CHOICE, /* int: index of the value in choices[] */
    OPT_INT,    /* int within [min, max] */
    OPT_LONG,   /* long within [min, max] */
    OPT_SIZE,   /* size_t within [min, max] */
    OPT_BOOL,   /* int 0/1; a flag without a value means true */
    OPT_CONFIG, /* the config file path: environment and flags only */
} opt_type;

/* Extra validation for a value's text; fills why and returns -1 to refuse. */
typedef int (*opt_check_fn)(const char *val, char *why, size_t whylen);

typedef struct opt_def {
    const char *key;     /* JSON key; NULL = not accepted in the file */
    const char *env;     /* environment variable */
    const char *flag;    /* flag name without the leading "--" */
    const char *metavar; /* shown in --help; NULL for booleans */
    opt_type type;
    size_t off, off2; /* offsets into hr_config */
    unsigned long long min, max;
    const char *const *choices; /* OPT_CHOICE, NULL-terminated */
    opt_check_fn check;
    const char *def;  /* default as shown in --help */
    const char *help; /* one line for --help */
} opt_def;

static const char *const log_formats[] = {"text", "json", NULL}; /* = hr_log_format */
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
/* = chan_django_config.mode */
static const char *const django_layers[] = {"off", "pubsub", "redis", NULL};

/* = hr_config.proxy_connect_first */
static const char *const proxy_precedences[] = {"jwt", "proxy", NULL};
/* SPEC §8's default HERALD_PROXY_HEADERS */
#define PROXY_HEADERS_DEFAULT                                                                      \
    "Cookie,Authorization,User-Agent,X-Forwarded-For,Origin,Accept-Language"

#define F(field) offsetof(hr_config, field)
#define TEN_YEARS 315360000ULL
#define ONE_GIB (1ULL << 30)

/* Columns: key, env, flag, metavar, type, off, off2, min, max, choices, check,
 * default shown by --help, help. */
static const opt_def opt_table[] = {
    {NULL, "HERALD_CONFIG", "config", "FILE", OPT_CONFIG, F(config_path), 0, 0, 0, NULL, NULL,
     "none", "JSON config file (the only place for namespaces)"},
    {"listen", "HERALD_LISTEN", "listen", "HOST:PORT", OPT_LISTEN, F(listen_host), F(listen_port),
     0, 0, NULL, NULL, "127.0.0.1:8080",
     "HTTP and WebSocket address; [IPV6]:PORT; :PORT = all interfaces; port 0 = a free port "
     "chosen at start-up (named in the \"listening\" log line)"},
    {"redis_url", "HERALD_REDIS_URL", "redis-url", "URL", OPT_NSTR, F(redis_url), 0, 0, 0, NULL,
     hr_config_check_redis_url, "unset (embedded mode)",
     "redis://[[user]:password@]host:port[/db], comma-separated for shards; enables cluster "
     "mode; also redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db] and "
     "redis+cluster://[[user]:password@]host:port[,host:port...]"},
    {"redis_sentinel_password", "HERALD_REDIS_SENTINEL_PASSWORD", "redis-sentinel-password",
     "SECRET", OPT_NSTR, F(redis_sentinel_password), 0, 0, 0, NULL, NULL, "unset",
     "redis+sentinel://: the sentinels' own password (requirepass), when they have one"},
    {"redis_prefix", "HERALD_REDIS_PREFIX", "redis-prefix", "STR", OPT_STR, F(redis_prefix), 0, 0,
     0, NULL, NULL, "herald", "prefix of every Redis key and pub/sub channel"},
    {"db", "HERALD_DB", "db", "FILE", OPT_STR, F(db_path), 0, 0, 0, NULL, NULL, "./herald.db",
     "SQLite user store (embedded mode)"},
    {"node_id", "HERALD_NODE_ID", "node-id", "NAME", OPT_STR, F(node_id), 0, 0, 0, NULL,
     hr_config_check_node_id, "the hostname",
     "name of this node in logs, metrics and client ids ([A-Za-z0-9_.-])"},
    {"api_keys", "HERALD_API_KEY", "api-key", "KEY[,KEY...]", OPT_LIST, F(api_keys), F(napi_keys),
     0, 0, NULL, NULL, "none", "API keys of backend services"},
    {"allowed_origins", "HERALD_ALLOWED_ORIGINS", "allowed-origins", "ORIGIN[,...]", OPT_LIST,
     F(allowed_origins), F(nallowed_origins), 0, 0, NULL, NULL, "unset (any origin)",
     "Origin allowlist for WebSocket upgrades"},
    {"log_format", "HERALD_LOG_FORMAT", "log-format", "FORMAT", OPT_CHOICE, F(log_format), 0, 0, 0,
     log_formats, NULL, "text on a tty, else json", "text or json"},
    {"log_level", "HERALD_LOG_LEVEL", "log-level", "LEVEL", OPT_CHOICE, F(log_level), 0, 0, 0,
     log_levels, NULL, "info", "lowest level logged: debug, info, warn or error"},
    {"tls_cert", "HERALD_TLS_CERT", "tls-cert", "FILE", OPT_NSTR, F(tls_cert), 0, 0, 0, NULL, NULL,
     "unset", "PEM certificate chain: the port then serves https:// and wss:// only"},
    {"tls_key", "HERALD_TLS_KEY", "tls-key", "FILE", OPT_NSTR, F(tls_key), 0, 0, 0, NULL, NULL,
     "unset", "PEM private key of tls_cert"},
    {"web_root", "HERALD_WEB_ROOT", "web-root", "DIR", OPT_NSTR, F(web_root), 0, 0, 0, NULL,
     hr_config_check_dir, "unset",
     "serve the files of DIR for GET requests no API route claims (web/demo)"},
    {"swagger_ui", "HERALD_SWAGGER_UI", "swagger-ui", "DIR", OPT_NSTR, F(swagger_ui), 0, 0, 0, NULL,
     hr_config_check_swagger_ui, "unset (no /docs)",
     "npm's swagger-ui-dist directory: /docs then shows this API in Swagger UI"},
    {"jwt_secret", "HERALD_JWT_SECRET", "jwt-secret", "SECRET", OPT_NSTR, F(jwt_secret), 0, 0, 0,
     NULL, NULL, "generated once and kept in the store", "HMAC secret for HS256 tokens"},
    {"jwt_public_key", "HERALD_JWT_PUBLIC_KEY", "jwt-public-key", "FILE", OPT_NSTR,
     F(jwt_public_key), 0, 0, 0, NULL, NULL, "unset",
     "PEM public key: tokens must be RS256 or ES256 (by key type)"},
    {"jwt_private_key", "HERALD_JWT_PRIVATE_KEY", "jwt-private-key", "FILE", OPT_NSTR,
     F(jwt_private_key), 0, 0, 0, NULL, NULL, "unset",
     "PEM private key for issuing RS256/ES256 tokens"},
    {"jwt_alg", "HERALD_JWT_ALG", "jwt-alg", "ALG", OPT_NSTR, F(jwt_alg), 0, 0, 0, NULL,
     hr_config_check_jwt_alg, "HS256, or RS256/ES256 by key type", "HS256|HS384|HS512|RS256|ES256"},
    {"jwt_iss", "HERALD_JWT_ISS", "jwt-iss", "ISS", OPT_NSTR, F(jwt_iss), 0, 0, 0, NULL, NULL,
     "unset (not checked)", "required \"iss\" claim; also set in issued tokens"},
    {"jwt_aud", "HERALD_JWT_AUD", "jwt-aud", "AUD", OPT_NSTR, F(jwt_aud), 0, 0, 0, NULL, NULL,
     "unset (not checked)", "required \"aud\" claim; also set in issued tokens"},
    {"jwt_kid", "HERALD_JWT_KID", "jwt-kid", "KID", OPT_NSTR, F(jwt_kid), 0, 0, 0, NULL, NULL,
     "unset", "kid of the primary key (set in issued tokens' header)"},
    {"jwt_keys", "HERALD_JWT_KEYS", "jwt-keys", "KID:KEY[,...]", OPT_LIST, F(jwt_keys),
     F(njwt_keys), 0, 0, NULL, NULL, "none",
     "extra verification keys by kid (rotation): a secret for HS*, a PEM path for RS256/ES256"},
    {"token_ttl", "HERALD_TOKEN_TTL", "token-ttl", "SECONDS", OPT_LONG, F(token_ttl), 0, 1,
     TEN_YEARS, NULL, NULL, "3600", "lifetime of issued access tokens"},
    {"max_message", "HERALD_MAX_MESSAGE", "max-message", "BYTES", OPT_SIZE, F(max_message), 0, 1,
     ONE_GIB, NULL, NULL, "65536", "largest inbound WebSocket message (bigger closes with 1009)"},
    {"max_channel_len", "HERALD_MAX_CHANNEL_LEN", "max-channel-len", "BYTES", OPT_SIZE,
     F(max_channel_len), 0, 1, 65535, NULL, NULL, "255", "longest channel name"},
    {"max_subscriptions", "HERALD_MAX_SUBSCRIPTIONS", "max-subscriptions", "N", OPT_INT,
     F(max_subscriptions), 0, 1, INT_MAX, NULL, NULL, "512", "subscriptions per connection"},
    {"out_queue", "HERALD_OUT_QUEUE", "out-queue", "BYTES", OPT_SIZE, F(out_queue_bytes), 0, 1,
     ONE_GIB, NULL, NULL, "1048576", "outbound queue per connection (over it closes with 4008)"},
    {"ws_compression", "HERALD_WS_COMPRESSION", "ws-compression", NULL, OPT_BOOL, F(ws_compression),
     0, 0, 0, NULL, NULL, "false",
     "permessage-deflate for WebSocket clients that offer it, compressed once per message"},
    {"ws_compression_min", "HERALD_WS_COMPRESSION_MIN", "ws-compression-min", "BYTES", OPT_SIZE,
     F(ws_compression_min), 0, 0, ONE_GIB, NULL, NULL, "256",
     "messages shorter than this go uncompressed"},
    {"sse_ping", "HERALD_SSE_PING", "sse-ping", "SECONDS", OPT_INT, F(sse_ping), 0, 1, 3600, NULL,
     NULL, "25", "keep-alive on /sse (a comment) and /stream (a ping line) every S seconds"},
    {"rate", "HERALD_RATE", "rate", "N", OPT_INT, F(rate_per_sec), 0, 1, INT_MAX, NULL, NULL, "200",
     "inbound commands per second per connection"},
    {"rate_burst", "HERALD_RATE_BURST", "rate-burst", "N", OPT_INT, F(rate_burst), 0, 1, INT_MAX,
     NULL, NULL, "400", "inbound command burst per connection (over it closes with 4029)"},
    {"connect_timeout", "HERALD_CONNECT_TIMEOUT", "connect-timeout", "SECONDS", OPT_INT,
     F(connect_timeout), 0, 1, 86400, NULL, NULL, "10",
     "time to authenticate after the upgrade (else 4001)"},
    {"anonymous", "HERALD_ANONYMOUS", "anonymous", NULL, OPT_BOOL, F(allow_anonymous), 0, 0, 0,
     NULL, NULL, "false", "accept {\"op\":\"connect\"} without a token (true/false/1/0)"},
    {"max_body", "HERALD_MAX_BODY", "max-body", "BYTES", OPT_SIZE, F(max_body), 0, 1, ONE_GIB, NULL,
     NULL, "1048576", "largest REST request body"},
    {"shutdown_grace_ms", "HERALD_SHUTDOWN_GRACE_MS", "shutdown-grace-ms", "MS", OPT_INT,
     F(shutdown_grace_ms), 0, 0, 600000, NULL, NULL, "2000",
     "time to flush and close sockets on SIGTERM/SIGINT"},
    {"open_registration", "HERALD_OPEN_REGISTRATION", "open-registration", NULL, OPT_BOOL,
     F(open_registration), 0, 0, 0, NULL, NULL, "true",
     "anyone may POST /api/v1/users (admins and API keys always may)"},
    {"refresh_ttl", "HERALD_REFRESH_TTL", "refresh-ttl", "SECONDS", OPT_LONG, F(refresh_ttl), 0, 1,
     TEN_YEARS, NULL, NULL, "2592000", "lifetime of refresh tokens (single use, rotated)"},
    {"login_max_failures", "HERALD_LOGIN_MAX_FAILURES", "login-max-failures", "N", OPT_INT,
     F(login_max_failures), 0, 1, INT_MAX, NULL, NULL, "5",
     "failed logins per username before 429 (per address: 4x this); a token bucket: N at once, "
     "then N per login window"},
    {"login_window", "HERALD_LOGIN_WINDOW", "login-window", "SECONDS", OPT_INT, F(login_window), 0,
     1, 86400, NULL, NULL, "300",
     "the time in which login-max-failures attempts come back (one every window/N)"},
    {"auth_workers", "HERALD_AUTH_WORKERS", "auth-workers", "N", OPT_INT, F(auth_workers), 0, 1, 64,
     NULL, NULL, "2", "threads for password hashing and user-store calls"},
    {"max_conns_per_address", "HERALD_MAX_CONNS_PER_ADDRESS", "max-conns-per-address", "N", OPT_INT,
     F(max_conns_per_address), 0, 0, INT_MAX, NULL, NULL, "1000",
     "WebSocket connections per client address; 0 = no limit"},
    {"max_conns_per_user", "HERALD_MAX_CONNS_PER_USER", "max-conns-per-user", "N", OPT_INT,
     F(max_conns_per_user), 0, 0, INT_MAX, NULL, NULL, "128",
     "WebSocket connections per user (token sub) on this node; 0 = no limit"},
    {"handshake_rate", "HERALD_HANDSHAKE_RATE", "handshake-rate", "N", OPT_INT, F(handshake_rate),
     0, 0, INT_MAX, NULL, NULL, "50",
     "WebSocket handshakes per client address per second (a token bucket: N at once, then one "
     "every 1/N s); 0 = no limit"},
    {"trusted_proxies", "HERALD_TRUSTED_PROXIES", "trusted-proxies", "ADDR[/BITS][,...]", OPT_LIST,
     F(trusted_proxies), F(ntrusted_proxies), 0, 0, NULL, NULL, "none",
     "proxies whose X-Forwarded-For names the client address (limits, login throttle)"},
    {"cluster_secret", "HERALD_CLUSTER_SECRET", "cluster-secret", "SECRET[,SECRET]", OPT_LIST,
     F(cluster_secrets), F(ncluster_secrets), 0, 0, NULL, NULL, "derived from jwt_secret",
     "cluster mode: secret of the nodes that signs control messages (the first signs, all "
     "verify); needed with a public key"},
    {"ipv4_prefix", "HERALD_IPV4_PREFIX", "ipv4-prefix", "BITS", OPT_INT, F(ipv4_prefix), 0, 8, 32,
     NULL, NULL, "32", "per-address limits count IPv4 clients (and IPv4-mapped IPv6) per /BITS"},
    {"ipv6_prefix", "HERALD_IPV6_PREFIX", "ipv6-prefix", "BITS", OPT_INT, F(ipv6_prefix), 0, 16,
     128, NULL, NULL, "64", "per-address limits count IPv6 clients per /BITS"},
    {"presence_ttl", "HERALD_PRESENCE_TTL", "presence-ttl", "SECONDS", OPT_INT, F(presence_ttl), 0,
     3, 3600, NULL, NULL, "25",
     "cluster mode: presence entries of a node that died disappear after this"},
    {"threads", "HERALD_THREADS", "threads", "N", OPT_INT, F(threads), 0, 0, 64, NULL, NULL, "0",
     "event-loop threads in the process; 0 = one per core"},
    {"django_channels", "HERALD_DJANGO_CHANNELS", "django-channels", "LAYER", OPT_CHOICE,
     F(django_channels), 0, 0, 0, django_layers, NULL, "off",
     "cluster mode: understand channels_redis' pubsub or redis layer on the first shard"},
    {"django_channels_prefix", "HERALD_DJANGO_CHANNELS_PREFIX", "django-channels-prefix", "STR",
     OPT_STR, F(django_prefix), 0, 0, 0, NULL, NULL, "asgi", "the layer's \"prefix\""},
    {"django_channels_group_expiry", "HERALD_DJANGO_CHANNELS_GROUP_EXPIRY",
     "django-channels-group-expiry", "SECONDS", OPT_INT, F(django_group_expiry), 0, 1, INT_MAX,
     NULL, NULL, "86400", "the layer's \"group_expiry\" (redis layer)"},
    {"django_channels_expiry", "HERALD_DJANGO_CHANNELS_EXPIRY", "django-channels-expiry", "SECONDS",
     OPT_INT, F(django_expiry), 0, 1, INT_MAX, NULL, NULL, "60",
     "the layer's \"expiry\" (redis layer; messages Herald sends)"},
    {"django_channels_capacity", "HERALD_DJANGO_CHANNELS_CAPACITY", "django-channels-capacity", "N",
     OPT_INT, F(django_capacity), 0, 1, INT_MAX, NULL, NULL, "100",
     "the layer's \"capacity\" (redis layer; channels Herald sends to)"},
    {"django_channels_encrypted", "HERALD_DJANGO_CHANNELS_ENCRYPTED", "django-channels-encrypted",
     NULL, OPT_BOOL, F(django_encrypted), 0, 0, 0, NULL, NULL, "false",
     "the layer has symmetric_encryption_keys: refused (not supported)"},
    {"proxy_connect_url", "HERALD_PROXY_CONNECT_URL", "proxy-connect-url", "URL", OPT_NSTR,
     F(proxy_connect_url), 0, 0, 0, NULL, hr_config_check_url, "unset",
     "connect proxy: the backend authenticates connections (cookies)"},
    {"proxy_connect_precedence", "HERALD_PROXY_CONNECT_PRECEDENCE", "proxy-connect-precedence",
     "WHO", OPT_CHOICE, F(proxy_connect_first), 0, 0, 0, proxy_precedences, NULL, "jwt",
     "jwt: a JWT, when present, is checked, not the proxy; proxy: the proxy decides all"},
    {"proxy_refresh_url", "HERALD_PROXY_REFRESH_URL", "proxy-refresh-url", "URL", OPT_NSTR,
     F(proxy_refresh_url), 0, 0, 0, NULL, hr_config_check_url, "unset",
     "refresh proxy: extends proxy-authenticated connections"},
    {"proxy_subscribe_url", "HERALD_PROXY_SUBSCRIBE_URL", "proxy-subscribe-url", "URL", OPT_NSTR,
     F(proxy_subscribe_url), 0, 0, 0, NULL, hr_config_check_url, "unset",
     "subscribe proxy, for namespaces with \"subscribe_proxy\": true"},
    {"proxy_publish_url", "HERALD_PROXY_PUBLISH_URL", "proxy-publish-url", "URL", OPT_NSTR,
     F(proxy_publish_url), 0, 0, 0, NULL, hr_config_check_url, "unset",
     "publish proxy, for namespaces with \"publish_proxy\": true"},
    {"proxy_rpc_url", "HERALD_PROXY_RPC_URL", "proxy-rpc-url", "URL", OPT_NSTR, F(proxy_rpc_url), 0,
     0, 0, NULL, hr_config_check_url, "unset", "RPC proxy: the backend answers the rpc op"},
    {"proxy_rpc_methods", "HERALD_PROXY_RPC_METHODS", "proxy-rpc-methods", "PREFIX=URL[,...]",
     OPT_LIST, F(proxy_rpc_methods), F(nproxy_rpc_methods), 0, 0, NULL, hr_config_check_rpc_method,
     "none", "RPC methods starting with PREFIX go to URL (file: an object)"},
    {"proxy_headers", "HERALD_PROXY_HEADERS", "proxy-headers", "NAME[,...]", OPT_LIST,
     F(proxy_headers), F(nproxy_headers), 0, 0, NULL, hr_config_check_proxy_header,
     PROXY_HEADERS_DEFAULT, "client request headers forwarded to the proxies (\"\" = none)"},
    {"proxy_key", "HERALD_PROXY_KEY", "proxy-key", "KEY", OPT_NSTR, F(proxy_key), 0, 0, 0, NULL,
     hr_config_check_header_value, "unset", "sent to the backend as X-Herald-Proxy-Key"},
    {"proxy_timeout", "HERALD_PROXY_TIMEOUT", "proxy-timeout", "SECONDS", OPT_INT, F(proxy_timeout),
     0, 1, 600, NULL, NULL, "5", "a proxy call not answered in time is unavailable for the client"},
    {"proxy_max_inflight", "HERALD_PROXY_MAX_INFLIGHT", "proxy-max-inflight", "N", OPT_INT,
     F(proxy_max_inflight), 0, 1, 65536, NULL, NULL, "256",
     "proxy calls in flight (and backend connections) per node"},
    {"proxy_max_queue", "HERALD_PROXY_MAX_QUEUE", "proxy-max-queue", "N", OPT_INT,
     F(proxy_max_queue), 0, 0, 1048576, NULL, NULL, "4096",
     "proxy calls waiting per loop thread; over it: unavailable"},
    {"proxy_max_response", "HERALD_PROXY_MAX_RESPONSE", "proxy-max-response", "BYTES", OPT_SIZE,
     F(proxy_max_response), 0, 64, ONE_GIB, NULL, NULL, "262144",
     "largest backend answer (bigger: unavailable)"},
    {"proxy_ca_file", "HERALD_PROXY_CA_FILE", "proxy-ca-file", "FILE", OPT_NSTR, F(proxy_ca_file),
     0, 0, 0, NULL, hr_config_check_file, "the system's CA store",
     "PEM CA certificates to verify https:// backends with"},
    {"events_django_channel", "HERALD_EVENTS_DJANGO_CHANNEL", "events-django-channel", "NAME",
     OPT_NSTR, F(events_django_channel), 0, 0, 0, NULL, hr_config_check_django_channel, "unset",
     "send lifecycle events (herald.connect, ...) to this Channels channel"},
    {"events_webhook_url", "HERALD_EVENTS_WEBHOOK_URL", "events-webhook-url", "URL", OPT_NSTR,
     F(events_webhook_url), 0, 0, 0, NULL, hr_config_check_url, "unset",
     "POST lifecycle events in batches ({\"events\":[...]}) to this URL"},
    {"events_batch", "HERALD_EVENTS_BATCH", "events-batch", "N", OPT_INT, F(events_batch), 0, 1,
     10000, NULL, NULL, "100", "most events per webhook request (sent at least every second)"},
    {"events_queue", "HERALD_EVENTS_QUEUE", "events-queue", "N", OPT_INT, F(events_queue), 0, 1,
     10000000, NULL, NULL, "10000", "events waiting per destination; more are dropped and counted"},
};

#define NOPTS (sizeof(opt_table) / sizeof(opt_table[0]))

/* Points at the member of cfg an option offset names. */
static void *field(hr_config *cfg, size_t off)
{
    return (char *)cfg + off;
}

/* Looks an option up by its JSON key; NULL if the file may not set it. */
static const opt_def *opt_by_key(const char *key)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (opt_table[i].key && !strcmp(opt_table[i].key, key))
            return &opt_table[i];
    return NULL;
}

/* Looks an option up by flag name (name[0..len), without "--"). */
static const opt_def *opt_by_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opt_table[i].flag) == len && !memcmp(opt_table[i].flag, name, len))
            return &opt_table[i];
    return NULL;
}

/*---- String lists ----------------------------------------------------------*/

typedef struct str_list {
    char **v;
    size_t n, cap;
} str_list;

/* Frees a list and its strings; the same shape as the lists in hr_config. */
static void list_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Appends s[0..len) with surrounding blanks trimmed; empty items are dropped
 * so "a,,b" and "a, b" mean what they look like. */
static void list_push(str_list *l, const char *s, size_t len)
{
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (!len)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->v = hr_realloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = hr_strndup(s, len);
}

/* Splits a comma-separated value into l. */
static void list_from_text(str_list *l, const char *s)
{
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        list_push(l, s, len);
        if (!comma)
            return;
        s = comma + 1;
    }
}

/* Moves l into the option's array/count pair, freeing the previous list. */
static void list_install(hr_config *cfg, const opt_def *o, str_list *l)
{
    char ***v = field(cfg, o->off);
    size_t *n = field(cfg, o->off2);
    list_free(*v, *n);
    *v = l->v;
    *n = l->n;
    *l = (str_list){0};
}

/*---- Applying one value ----------------------------------------------------*/

/* Runs the option's check on every item of l; frees l on a refusal. */
static int list_check(const opt_def *o, str_list *l, char *why, size_t whylen)
{
    for (size_t i = 0; o->check && i < l->n; i++)
        if (o->check(l->v[i], why, whylen) < 0) {
            list_free(l->v, l->n);
            *l = (str_list){0};
            return -EINVAL;
        }
    return 0;
}

/* Comma-separated text replaces the whole list (no merging across sources). */
static int apply_list(hr_config *cfg, const opt_def *o, const char *val, char *why, size_t whylen)
{
    str_list l = {0};
    list_from_text(&l, val);
    if (list_check(o, &l, why, whylen) < 0)
        return -EINVAL;
    list_install(cfg, o, &l);
    return 0;
}

/* HOST:PORT sets both listen members at once, or neither. */
static int apply_listen(hr_config *cfg, const opt_def *o, const char *val, char *why, size_t whylen)
{
    char *host = NULL;
    int port = 0;
    if (hr_config_parse_listen(val, &host, &port, why, whylen) < 0)
        return -EINVAL;
    char **slot = field(cfg, o->off);
    free(*slot);
    *slot = host;
    *(int *)field(cfg, o->off2) = port;
    return 0;
}

/* Stores the index of the (case-insensitive) match; the error lists the
 * accepted names so the user need not look them up. */
static int apply_choice(hr_config *cfg, const opt_def *o, const char *val, char *why, size_t whylen)
{
    char names[128] = "";
    size_t len = 0;
    for (int i = 0; o->choices[i]; i++) {
        if (!strcasecmp(val, o->choices[i])) {
            *(int *)field(cfg, o->off) = i;
            return 0;
        }
        int n = snprintf(names + len, sizeof(names) - len, "%s%s", i ? ", " : "", o->choices[i]);
        if (n > 0 && (size_t)n < sizeof(names) - len)
            len += (size_t)n;
    }
    return hr_config_say(why, whylen, "expected one of %s, got \"%s\"", names, val);
}

/* Parses into the member's own width; the table's max keeps the cast exact. */
static int apply_number(hr_config *cfg, const opt_def *o, const char *val, char *why, size_t whylen)
{
    unsigned long long v = 0;
    if (hr_config_parse_uint(val, o->min, o->max, &v, why, whylen) < 0)
        return -EINVAL;
    if (o->type == OPT_INT)
        *(int *)field(cfg, o->off) = (int)v;
    else if (o->type == OPT_LONG)
        *(long *)field(cfg, o->off) = (long)v;
    else
        *(size_t *)field(cfg, o->off) = (size_t)v;
    return 0;
}

/* The single place an option's text becomes a value, whatever its source.
 * On failure cfg is unchanged and why says what is wrong with the value
 * (the caller adds where it came from). */
static int opt_apply(hr_config *cfg, const opt_def *o, const char *val, char *why, size_t whylen)
{
    /* a list's check applies to each item (list_check); "" unsets a
     * nullable string whatever its check would say */
    if (o->check && o->type != OPT_LIST && !(o->type == OPT_NSTR && !*val) &&
        o->check(val, why, whylen) < 0)
        return -EINVAL;
    switch (o->type) {
    case OPT_STR:
        if (!*val)
            return hr_config_say(why, whylen, "must not be empty");
        hr_config_set_str(field(cfg, o->off), val);
        return 0;
    case OPT_NSTR:
    case OPT_CONFIG:
        hr_config_set_str(field(cfg, o->off), *val ? val : NULL);
        return 0;
    case OPT_LIST:
        return apply_list(cfg, o, val, why, whylen);
    case OPT_LISTEN:
        return apply_listen(cfg, o, val, why, whylen);
    case OPT_CHOICE:
        return apply_choice(cfg, o, val, why, whylen);
    case OPT_BOOL:
        return hr_config_parse_bool(val, field(cfg, o->off), why, whylen);
    case OPT_INT:
    case OPT_LONG:
    case OPT_SIZE:
        return apply_number(cfg, o, val, why, whylen);
    }
    return hr_config_say(why, whylen, "internal error: unknown option type");
}

/* opt_apply with the source's name ("HERALD_X", "--x", "config file F:
 * \"x\"") put in front of the reason. */
static int apply_from(hr_config *cfg, const opt_def *o, const char *val, const char *src, char *err,
                      size_t errlen)
{
    char why[256];
    if (opt_apply(cfg, o, val, why, sizeof(why)) < 0)
        return hr_config_say(err, errlen, "%s: %s", src, why);
    return 0;
}

/*---- Environment -----------------------------------------------------------*/

/* getenv() over an explicit environ-style array, so tests pass their own. */
static const char *env_get(char **env, const char *name)
{
    size_t len = strlen(name);
    for (; env && *env; env++)
        if (!strncmp(*env, name, len) && (*env)[len] == '=')
            return *env + len + 1;
    return NULL;
}

/* Applies every HERALD_* variable present in env (the config path was
 * already handled by hr_config_load). */
static int load_env(hr_config *cfg, char **env, char *err, size_t errlen)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_def *o = &opt_table[i];
        const char *val = env_get(env, o->env);
        if (o->type != OPT_CONFIG && val && apply_from(cfg, o, val, o->env, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

/*---- Flags -----------------------------------------------------------------*/

/* Reads the flag at argv[*i] as --name, --name=value or --name value
 * (consuming argv[*i + 1]). A boolean takes the next argument only when it
 * is a boolean's spelling ("--anonymous yes"); alone it means "true". Sets
 * *o and *val (pointing into argv or a literal). */
static int flag_next(int argc, char **argv, int *i, const opt_def **o, const char **val, char *err,
                     size_t errlen)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) || !arg[2])
        return hr_config_say(err, errlen, "unexpected argument \"%s\" (see --help)", arg);
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (!(*o = opt_by_flag(name, len)))
        return hr_config_say(err, errlen, "unknown option --%.*s (see --help)", (int)len, name);
    int b;
    if (eq)
        *val = eq + 1;
    else if ((*o)->type == OPT_BOOL)
        *val = *i + 1 < argc && hr_config_parse_bool(argv[*i + 1], &b, NULL, 0) == 0 ? argv[++*i]
                                                                                     : "true";
    else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2))
        *val = argv[++*i];
    else
        return hr_config_say(err, errlen, "--%s: missing value", (*o)->flag);
    return 0;
}

/* Finds the last --config in argv so the file can be read before anything
 * else. Sets *path to NULL when there is none. */
static int find_config_flag(int argc, char **argv, const char **path, char *err, size_t errlen)
{
    *path = NULL;
    for (int i = 0; i < argc; i++) {
        const opt_def *o = NULL;
        const char *val = NULL;
        if (flag_next(argc, argv, &i, &o, &val, err, errlen) < 0)
            return -EINVAL;
        if (o->type == OPT_CONFIG)
            *path = val;
    }
    return 0;
}

/* Applies every flag but --config (already used to read the file). */
static int load_flags(hr_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 0; i < argc; i++) {
        const opt_def *o = NULL;
        const char *val = NULL;
        char src[64];
        if (flag_next(argc, argv, &i, &o, &val, err, errlen) < 0)
            return -EINVAL;
        snprintf(src, sizeof(src), "--%s", o->flag);
        if (o->type != OPT_CONFIG && apply_from(cfg, o, val, src, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

/*---- Config file: options --------------------------------------------------*/

/* Turns a JSON scalar into the text opt_apply() parses, checking that its
 * JSON type suits the option (numbers must be integers, booleans true or
 * false, the rest strings; null unsets nullable strings and lists). buf
 * holds the text of numbers and booleans. */
static int json_text(const opt_def *o, json_t *v, char *buf, size_t buflen, const char **out,
                     char *why, size_t whylen)
{
    switch (o->type) {
    case OPT_BOOL:
        if (!json_is_boolean(v))
            return hr_config_say(why, whylen, "expected true or false");
        *out = json_is_true(v) ? "true" : "false";
        return 0;
    case OPT_INT:
    case OPT_LONG:
    case OPT_SIZE:
        if (!json_is_integer(v))
            return hr_config_say(why, whylen, "expected a whole number");
        snprintf(buf, buflen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *out = buf;
        return 0;
    default:
        if (json_is_null(v) && (o->type == OPT_NSTR || o->type == OPT_LIST)) {
            *out = "";
            return 0;
        }
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return hr_config_say(why, whylen,
                                 o->type == OPT_LIST ? "expected an array of strings or a string"
                                                     : "expected a string");
        *out = json_string_value(v);
        return 0;
    }
}

/* A JSON array for a list option: every element must be a string. */
static int json_list(hr_config *cfg, const opt_def *o, json_t *arr, char *why, size_t whylen)
{
    str_list l = {0};
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item)
    {
        if (!json_is_string(item)) {
            list_free(l.v, l.n);
            return hr_config_say(why, whylen, "element %zu is not a string", i);
        }
        list_push(&l, json_string_value(item), strlen(json_string_value(item)));
    }
    if (list_check(o, &l, why, whylen) < 0)
        return -EINVAL;
    list_install(cfg, o, &l);
    return 0;
}

/* proxy_rpc_methods as the file's object {"PREFIX": "URL", ...}: the same
 * "PREFIX=URL" items as the environment's text. */
static int json_map(hr_config *cfg, const opt_def *o, json_t *obj, char *why, size_t whylen)
{
    str_list l = {0};
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (!json_is_string(v)) {
            list_free(l.v, l.n);
            return hr_config_say(why, whylen, "\"%s\" is not a URL string", k);
        }
        hr_buf item = {0};
        hr_buf_printf(&item, "%s=%s", k, json_string_value(v));
        list_push(&l, item.data, item.len);
        hr_buf_reset(&item);
    }
    if (list_check(o, &l, why, whylen) < 0)
        return -EINVAL;
    list_install(cfg, o, &l);
    return 0;
}

/* Applies one top-level key of the file. */
static int file_apply(hr_config *cfg, const char *path, const char *key, json_t *v, char *err,
                      size_t errlen)
{
    if (!strcmp(key, "namespaces"))
        return hr_config_load_namespaces(cfg, path, v, err, errlen);
    const opt_def *o = opt_by_key(key);
    if (!o)
        return hr_config_say(err, errlen, "config file %s: unknown key \"%s\"", path, key);
    char why[256], num[32];
    const char *text = NULL;
    int rc;
    if (o->type == OPT_LIST && json_is_array(v))
        rc = json_list(cfg, o, v, why, sizeof(why));
    else if (o->type == OPT_LIST && json_is_object(v) && o->check == hr_config_check_rpc_method)
        rc = json_map(cfg, o, v, why, sizeof(why));
    else
        rc = json_text(o, v, num, sizeof(num), &text, why, sizeof(why)) < 0
                 ? -1
                 : opt_apply(cfg, o, text, why, sizeof(why));
    if (rc < 0)
        return hr_config_say(err, errlen, "config file %s: \"%s\": %s", path, key, why);
    return 0;
}

/* Reads the JSON file; syntax errors report line and column. */
static int load_file(hr_config *cfg, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (je.line < 1)
            return hr_config_say(err, errlen, "config file %s: %s", path, je.text);
        return hr_config_say(err, errlen, "config file %s: line %d column %d: %s", path, je.line,
                             je.column, je.text);
    }
    int rc = 0;
    if (!json_is_object(root))
        rc = hr_config_say(err, errlen, "config file %s: expected a JSON object at the top level",
                           path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (rc == 0)
            rc = file_apply(cfg, path, key, v, err, errlen);
    }
    json_decref(root);
    return rc;
}

/*---- Public API ------------------------------------------------------------*/

/* The hostname names the node unless configured; "herald" if there is none. */
static char *default_node_id(void)
{
    char host[256] = {0};
    if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
        return hr_strdup("herald");
    return hr_strdup(host);
}

/* Defaults that are computed at start rather than written in the table. */
static int computed_default(const opt_def *o)
{
    return o->key && (!strcmp(o->key, "log_format") || !strcmp(o->key, "node_id"));
}

/* SPEC §1/§2 defaults: the option table's default column is the only
 * source, applied like any other value (so --help cannot disagree with the
 * code); options that are unset by default (strings, lists) stay NULL. */
void hr_config_defaults(hr_config *cfg)
{
    char why[256];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_def *o = &opt_table[i];
        if (o->type == OPT_NSTR || o->type == OPT_LIST || o->type == OPT_CONFIG ||
            computed_default(o))
            continue;
        if (opt_apply(cfg, o, o->def, why, sizeof(why)) < 0)
            hr_fatal("config", "internal error: default of %s: %s", o->env, why);
    }
    /* the one list with a default (SPEC §8); "" from a source empties it */
    for (size_t i = 0; i < NOPTS; i++)
        if (opt_table[i].off == F(proxy_headers) &&
            opt_apply(cfg, &opt_table[i], opt_table[i].def, why, sizeof(why)) < 0)
            hr_fatal("config", "internal error: default of proxy_headers: %s", why);
    cfg->log_format = isatty(STDERR_FILENO) ? HR_LOG_TEXT : HR_LOG_JSON;
    cfg->node_id = default_node_id();
    cfg->namespaces = hr_calloc(1, sizeof(*cfg->namespaces));
    auth_namespace_default(&cfg->namespaces[0]);
    cfg->nnamespaces = 1;
}

/* What only makes sense together: the Django bridge lives on Redis, and a
 * namespace's django_channel needs the bridge. */
static int check_django(const hr_config *cfg, char *err, size_t errlen)
{
    if (cfg->django_encrypted)
        return hr_config_say(
            err, errlen,
            "HERALD_DJANGO_CHANNELS_ENCRYPTED: Herald cannot read or write encrypted "
            "Channels layers (symmetric_encryption_keys). Give Herald a layer without "
            "encryption (its own prefix, e.g. a second CHANNEL_LAYERS entry), or leave "
            "HERALD_DJANGO_CHANNELS off");
    if (cfg->django_channels && !cfg->redis_url)
        return hr_config_say(
            err, errlen,
            "HERALD_DJANGO_CHANNELS needs cluster mode: set HERALD_REDIS_URL to the "
            "Redis of the project's CHANNEL_LAYERS");
    for (size_t i = 0; i < cfg->nnamespaces; i++)
        if (cfg->namespaces[i].django_channel && !cfg->django_channels)
            return hr_config_say(
                err, errlen,
                "namespace \"%s\" has a django_channel: set HERALD_DJANGO_CHANNELS "
                "(redis or pubsub, as the project's CHANNEL_LAYERS)",
                cfg->namespaces[i].name);
    return 0;
}

/* What the proxies and events need besides their own values: a URL for
 * every proxy a namespace or option turns on, and the Django bridge for
 * events sent to a Channels channel. */
static int check_proxy(const hr_config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nnamespaces; i++) {
        const auth_namespace *ns = &cfg->namespaces[i];
        const char *label = ns->name && *ns->name ? ns->name : "(default)";
        if (ns->subscribe_proxy && !cfg->proxy_subscribe_url)
            return hr_config_say(
                err, errlen, "namespace \"%s\" has subscribe_proxy: set HERALD_PROXY_SUBSCRIBE_URL",
                label);
        if (ns->publish_proxy && !cfg->proxy_publish_url)
            return hr_config_say(err, errlen,
                                 "namespace \"%s\" has publish_proxy: set HERALD_PROXY_PUBLISH_URL",
                                 label);
    }
    if (cfg->proxy_connect_first && !cfg->proxy_connect_url)
        return hr_config_say(
            err, errlen, "HERALD_PROXY_CONNECT_PRECEDENCE=proxy needs HERALD_PROXY_CONNECT_URL");
    if (cfg->proxy_refresh_url && !cfg->proxy_connect_url)
        return hr_config_say(err, errlen,
                             "HERALD_PROXY_REFRESH_URL refreshes connections the connect proxy "
                             "authenticated: set HERALD_PROXY_CONNECT_URL too");
    if (cfg->events_django_channel && !cfg->django_channels)
        return hr_config_say(err, errlen,
                             "HERALD_EVENTS_DJANGO_CHANNEL needs the Django Channels bridge: set "
                             "HERALD_DJANGO_CHANNELS (and HERALD_REDIS_URL)");
    return 0;
}

/* The file must be read first but may be named by a flag, so argv is scanned
 * twice: once for --config (also catching unknown flags early), once to apply
 * the flags over the environment. "--config=" disables HERALD_CONFIG. */
int hr_config_load(hr_config *cfg, int argc, char **argv, char **env, char *err, size_t errlen)
{
    const char *path;
    if (find_config_flag(argc, argv, &path, err, errlen) < 0)
        return -EINVAL;
    if (!path)
        path = env_get(env, "HERALD_CONFIG");
    if (path && *path) {
        hr_config_set_str(&cfg->config_path, path);
        if (load_file(cfg, path, err, errlen) < 0)
            return -EINVAL;
    }
    if (load_env(cfg, env, err, errlen) < 0 || load_flags(cfg, argc, argv, err, errlen) < 0)
        return -EINVAL;
    if (!cfg->tls_cert != !cfg->tls_key)
        return hr_config_say(err, errlen,
                             "tls_cert and tls_key: set both (TLS) or neither (plain HTTP)");
    if (check_django(cfg, err, errlen) < 0)
        return -EINVAL;
    if (cfg->redis_url && cfg->redis_sentinel_password && *cfg->redis_sentinel_password) {
        /* one place for the sentinels' password: the URLs both the user
         * store and the channel layer parse (a URL's own ?sentinel_password
         * wins) */
        char *u =
            hr_redis_urls_with_sentinel_password(cfg->redis_url, cfg->redis_sentinel_password);
        free(cfg->redis_url);
        cfg->redis_url = u;
    }
    return check_proxy(cfg, err, errlen);
}

/* A handful of entries, looked up once per rpc command. */
const char *hr_config_rpc_url(const hr_config *cfg, const char *method)
{
    const char *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; method && i < cfg->nproxy_rpc_methods; i++) {
        const char *item = cfg->proxy_rpc_methods[i], *eq = strchr(item, '=');
        size_t len = eq ? (size_t)(eq - item) : 0;
        if (eq && len > best_len && !strncmp(method, item, len)) {
            best = eq + 1;
            best_len = len;
        }
    }
    return best ? best : cfg->proxy_rpc_url;
}

/* Safe on a zeroed or already cleared cfg. */
void hr_config_jwt_settings(const hr_config *cfg, auth_jwt_settings *out)
{
    *out = (auth_jwt_settings){
        .alg = cfg->jwt_alg,
        .secret = cfg->jwt_secret,
        .public_key_path = cfg->jwt_public_key,
        .private_key_path = cfg->jwt_private_key,
        .kid = cfg->jwt_kid,
        .iss = cfg->jwt_iss,
        .aud = cfg->jwt_aud,
        .extra_keys = cfg->jwt_keys,
        .nextra = cfg->njwt_keys,
    };
}

void hr_config_clear(hr_config *cfg)
{
    char **strs[] = {&cfg->listen_host,
                     &cfg->redis_url,
                     &cfg->redis_prefix,
                     &cfg->redis_sentinel_password,
                     &cfg->db_path,
                     &cfg->node_id,
                     &cfg->jwt_secret,
                     &cfg->jwt_public_key,
                     &cfg->jwt_private_key,
                     &cfg->jwt_alg,
                     &cfg->jwt_iss,
                     &cfg->jwt_aud,
                     &cfg->config_path,
                     &cfg->jwt_kid,
                     &cfg->tls_cert,
                     &cfg->tls_key,
                     &cfg->web_root,
                     &cfg->django_prefix,
                     &cfg->swagger_ui,
                     &cfg->proxy_connect_url,
                     &cfg->proxy_refresh_url,
                     &cfg->proxy_subscribe_url,
                     &cfg->proxy_publish_url,
                     &cfg->proxy_rpc_url,
                     &cfg->proxy_key,
                     &cfg->proxy_ca_file,
                     &cfg->events_django_channel,
                     &cfg->events_webhook_url};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        free(*strs[i]);
    list_free(cfg->api_keys, cfg->napi_keys);
    list_free(cfg->allowed_origins, cfg->nallowed_origins);
    list_free(cfg->jwt_keys, cfg->njwt_keys);
    list_free(cfg->trusted_proxies, cfg->ntrusted_proxies);
    list_free(cfg->proxy_rpc_methods, cfg->nproxy_rpc_methods);
    list_free(cfg->proxy_headers, cfg->nproxy_headers);
    list_free(cfg->cluster_secrets, cfg->ncluster_secrets);
    hr_config_free_namespaces(cfg->namespaces, cfg->nnamespaces);
    memset(cfg, 0, sizeof(*cfg));
}

/*---- --help ----------------------------------------------------------------*/

static const char usage_head[] =
    "Usage:\n"
    "  herald [serve] [options]          run the gateway\n"
    "  herald token --sub ID [--ttl S] [--role ROLE]... [options]\n"
    "                                    print a signed JWT (--ttl defaults to --token-ttl)\n"
    "  herald user add NAME [--role ROLE]... [options]\n"
    "                                    create a user; the password is read from stdin\n"
    "  herald publish CHANNEL JSON [--url http://HOST:PORT] [options]\n"
    "                                    publish through a running node (REST, API key)\n"
    "  herald tail CHANNEL [--url http://HOST:PORT] [--token JWT] [options]\n"
    "                                    print every message of CHANNEL (like redis-cli\n"
    "                                    subscribe); the token is minted unless given\n"
    "  herald check-config FILE [options]\n"
    "                                    validate a config file (and the options) and exit\n"
    "  herald --version                  print the version\n"
    "  herald --help                     print this text\n"
    "\n"
    "Every option is a flag, an environment variable and a key of the JSON config\n"
    "file (the flag name with '_' for '-', except api_keys). Flags override the\n"
    "environment, which overrides the file. Flags take --name VALUE or --name=VALUE;\n"
    "a boolean flag alone means true (--anonymous, --anonymous no, --anonymous=off).\n"
    "Namespaces (who may subscribe and publish, presence, history) are set only in\n"
    "the config file.\n"
    "\n"
    "Options:\n";

#define USAGE_CAP 20480

/* Appends to the usage buffer, silently truncating (the text is bounded). */
__attribute__((format(printf, 3, 4))) static void append(char *buf, size_t *len, const char *fmt,
                                                         ...)
{
    const size_t cap = USAGE_CAP;
    if (*len >= cap - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n < cap - *len ? (size_t)n : cap - 1 - *len;
}

/* Built on first use from opt_table, so --help never drifts from what is
 * parsed. Static storage; call it from one thread (main) the first time. */
const char *hr_config_usage(void)
{
    static char buf[USAGE_CAP];
    static size_t len;
    if (len)
        return buf;
    append(buf, &len, "%s", usage_head);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_def *o = &opt_table[i];
        char left[64];
        const char *meta = o->metavar ? o->metavar : o->type == OPT_BOOL ? "[BOOL]" : NULL;
        snprintf(left, sizeof(left), "--%s%s%s", o->flag, meta ? " " : "", meta ? meta : "");
        append(buf, &len, "  %-30s %s\n  %-30s %s, default: %s\n", left, o->help, "", o->env,
               o->def);
    }
    return buf;
}

const auth_store_ops *hr_config_store(const hr_config *cfg)
{
    return cfg->redis_url ? &auth_store_redis_ops : &auth_store_sqlite_ops;
}

const char *hr_config_store_target(const hr_config *cfg)
{
    return cfg->redis_url ? cfg->redis_url : cfg->db_path;
}
