/*
 * config_check.c - the value parsers and checks of config.c's option table
 * and of config_ns.c's namespace keys, and the error helper both use.
 * Each check takes one value's text, returns 0 or -EINVAL with a reason
 * in why. A leaf of the configuration: it calls neither config.c nor
 * config_ns.c, which both call it.
 */
#include "gateway/config_internal.h"
#include "common/common.h"
#include "common/redis_url.h"
#include "gateway/proxy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/*---- Error reporting -------------------------------------------------------*/

int hr_config_say(char *buf, size_t len, const char *fmt, ...)
{
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* Replaces a string member with a copy of val (NULL allowed). */
void hr_config_set_str(char **slot, const char *val)
{
    char *copy = val ? hr_strdup(val) : NULL;
    free(*slot);
    *slot = copy;
}

/*---- Value parsers ---------------------------------------------------------*/

/* Strict decimal parse: digits only (no sign, no spaces), within [min, max].
 * strtoull alone would accept "-1", " 5" and "5x". */
int hr_config_parse_uint(const char *s, unsigned long long min, unsigned long long max,
                         unsigned long long *out, char *why, size_t whylen)
{
    if (*s < '0' || *s > '9')
        return hr_config_say(why, whylen, "expected a whole number, got \"%s\"", s);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return hr_config_say(why, whylen, "expected a whole number, got \"%s\"", s);
    if (errno == ERANGE || v < min || v > max)
        return hr_config_say(why, whylen, "%s is out of range (%llu..%llu)", s, min, max);
    *out = v;
    return 0;
}

/* Accepts the usual spellings of a boolean in environment variables. */
int hr_config_parse_bool(const char *s, int *out, char *why, size_t whylen)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!strcasecmp(s, yes[i]))
            return *out = 1, 0;
        if (!strcasecmp(s, no[i]))
            return *out = 0, 0;
    }
    return hr_config_say(why, whylen, "expected true or false, got \"%s\"", s);
}

/* Host characters: a name or IPv4 address, or (bracketed) an IPv6 address
 * with an optional %zone. Rejecting ':' outside brackets catches "::1:80". */
static int host_ok(const char *s, const char *end, int bracketed)
{
    const char *extra = bracketed ? ":.%" : ".-_";
    for (; s < end; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr(extra, *s)))
            return 0;
    return 1;
}

/* Splits "host:port", "[v6]:port" or ":port" (all interfaces). On success
 * *host is a malloc'ed string the caller owns. */
int hr_config_parse_listen(const char *s, char **host, int *port, char *why, size_t whylen)
{
    const char *hs = s, *he, *ps;
    if (*s == '[') {
        hs = s + 1;
        he = strchr(hs, ']');
        if (!he || he == hs || he[1] != ':' || !host_ok(hs, he, 1))
            goto bad;
        ps = he + 2;
    } else {
        he = strrchr(s, ':');
        if (!he || !host_ok(hs, he, 0))
            goto bad;
        ps = he + 1;
    }
    unsigned long long p = 0;
    if (hr_config_parse_uint(ps, 0, 65535, &p, NULL, 0) < 0)
        return hr_config_say(why, whylen, "invalid port in \"%s\" (expected 0..65535)", s);
    *host = he > hs ? hr_strndup(hs, (size_t)(he - hs)) : hr_strdup("0.0.0.0");
    *port = (int)p;
    return 0;
bad:
    return hr_config_say(why, whylen,
                         "invalid address \"%s\" (expected HOST:PORT, [IPV6]:PORT or :PORT)", s);
}

/* The whole list is parsed here (so a bad URL stops the start with its
 * reason); the Redis module parses it again. The value is not echoed: it
 * may hold a password (hr_redis_targets_parse's reasons never quote it). */
int hr_config_check_redis_url(const char *val, char *why, size_t whylen)
{
    if (!*val)
        return 0;
    hr_redis_target *t = NULL;
    char err[200];
    int n = hr_redis_targets_parse(val, &t, err, sizeof(err));
    if (n >= 0) {
        hr_redis_targets_free(t, n);
        return 0;
    }
    return hr_config_say(why, whylen,
                         "%s (expected redis://[[user]:password@]host:port[/db], "
                         "redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db] "
                         "or redis+cluster://[[user]:password@]host:port[,host:port...], "
                         "several comma-separated for shards)",
                         err);
}

/* The JWT module supports exactly these algorithms; refuse others at start
 * rather than on the first token. */
int hr_config_check_jwt_alg(const char *val, char *why, size_t whylen)
{
    if (!*val || auth_jwt_alg_name(val))
        return 0;
    return hr_config_say(why, whylen,
                         "unsupported algorithm \"%s\" (HS256, HS384, HS512, RS256 or ES256)", val);
}

/* The node id ends up in client ids ("<node>.<n>"), metric labels and Redis
 * keys, so it is kept to characters safe in all of them. */
int hr_config_check_node_id(const char *val, char *why, size_t whylen)
{
    if (strlen(val) > 64 || !host_ok(val, val + strlen(val), 0))
        return hr_config_say(why, whylen, "invalid node id \"%s\" (up to 64 of [A-Za-z0-9_.-])",
                             val);
    return 0;
}

/* web_root: an existing directory, so a typo fails at start, not as 404s */
int hr_config_check_dir(const char *val, char *why, size_t whylen)
{
    struct stat st;
    if (stat(val, &st) < 0 || !S_ISDIR(st.st_mode))
        return hr_config_say(why, whylen, "\"%s\" is not a directory", val);
    return 0;
}

/* swagger_ui: a directory with Swagger UI's bundle in it, so pointing at
 * the package's parent (a common slip) fails at start */
int hr_config_check_swagger_ui(const char *val, char *why, size_t whylen)
{
    char path[4096];
    struct stat st;
    if (hr_config_check_dir(val, why, whylen) < 0)
        return -EINVAL;
    snprintf(path, sizeof(path), "%s/swagger-ui-bundle.js", val);
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return hr_config_say(why, whylen,
                             "\"%s\" has no swagger-ui-bundle.js (npm's swagger-ui-dist)", val);
    return 0;
}

/* Backend URLs: http:// or https://, a host, nothing curl would have to
 * guess about (spaces, control characters). Echoing is fine: unlike Redis
 * URLs these carry no password by design (use HERALD_PROXY_KEY). */
int hr_config_check_url(const char *val, char *why, size_t whylen)
{
    size_t n = !strncasecmp(val, "http://", 7) ? 7 : !strncasecmp(val, "https://", 8) ? 8 : 0;
    int ok = n && val[n] && val[n] != '/' && val[n] != ':' && strlen(val) <= 2048;
    for (const unsigned char *p = (const unsigned char *)val; ok && *p; p++)
        ok = *p > 0x20 && *p != 0x7f;
    if (!ok)
        return hr_config_say(why, whylen,
                             "expected an http:// or https:// URL with a host, got \"%s\"", val);
    return 0;
}

/* RPC method names (and prefixes): what a client may send as "method". */
static int method_ok(const char *s, size_t len)
{
    if (!len || len > 255)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("_.:/-", s[i])))
            return 0;
    return 1;
}

/* One proxy_rpc_methods entry: PREFIX=URL. */
int hr_config_check_rpc_method(const char *val, char *why, size_t whylen)
{
    const char *eq = strchr(val, '=');
    if (!eq || !method_ok(val, (size_t)(eq - val)))
        return hr_config_say(
            why, whylen,
            "expected PREFIX=URL with a method prefix of 1 to 255 of [A-Za-z0-9_.:/-], "
            "got \"%s\"",
            val);
    return hr_config_check_url(eq + 1, why, whylen);
}

/* One HERALD_PROXY_HEADERS name. */
int hr_config_check_proxy_header(const char *val, char *why, size_t whylen)
{
    if (!hr_proxy_header_allowed(val))
        return hr_config_say(
            why, whylen,
            "\"%s\" cannot be forwarded (not a header name, or one the HTTP client "
            "sets itself)",
            val);
    return 0;
}

/* Something sent as a header value: no control characters. Not echoed. */
int hr_config_check_header_value(const char *val, char *why, size_t whylen)
{
    for (const unsigned char *p = (const unsigned char *)val; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return hr_config_say(why, whylen, "must not contain control characters");
    return 0;
}

/* A readable regular file, so a typo fails at start, not on the first call. */
int hr_config_check_file(const char *val, char *why, size_t whylen)
{
    struct stat st;
    if (stat(val, &st) < 0 || !S_ISREG(st.st_mode) || access(val, R_OK) < 0)
        return hr_config_say(why, whylen, "\"%s\" is not a readable file", val);
    return 0;
}

int hr_config_check_django_channel(const char *val, char *why, size_t whylen)
{
    if (!hr_config_django_channel_ok(val))
        return hr_config_say(
            why, whylen, "expected a Django Channels channel name (1 to 99 of A-Z a-z 0-9 _ . -)");
    return 0;
}

/* A Channels channel Herald may send to (BaseChannelLayer's rules): 1..99
 * of [A-Za-z0-9_.-]; no '!', a process-local name is nobody's to send to.
 * The same rule as channels/django_codec.c's dj_channel_name_valid. */
int hr_config_django_channel_ok(const char *s)
{
    size_t len = strlen(s);
    if (!len || len > 99)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("_.-", *s)))
            return 0;
    return 1;
}
