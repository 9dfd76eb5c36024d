/*
 * redis_url.c - HERALD_REDIS_URL: one or several redis:// URLs (the shards),
 * redis+sentinel:// URLs (shards whose master sentinels name) or one
 * redis+cluster:// URL (seed nodes). Pure parsing, shared by the user store
 * (auth/store_redis.c, first shard) and the Redis channel layer
 * (channels/redis.c, every shard).
 */
#include "common/common.h"
#include "common/redis_url.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies n bytes of a URL component, decoding %XX (passwords often need
 * it). Returns a malloc'ed string or NULL on a bad escape. */
static char *url_decode(const char *p, size_t n)
{
    char *out = hr_malloc(n + 1);
    if (hr_percent_decode(p, n, 0, out, n + 1) < 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* Parses "[user]:password" (the part before '@'). */
static int parse_userinfo(hr_redis_addr *a, const char *p, size_t n)
{
    const char *colon = memchr(p, ':', n);
    if (!colon)
        return -1; /* "redis://secret@host" is ambiguous: require ':' */
    if (colon > p && !(a->user = url_decode(p, (size_t)(colon - p))))
        return -1;
    a->password = url_decode(colon + 1, n - (size_t)(colon + 1 - p));
    return a->password ? 0 : -1;
}

static int parse_port(const char *p, const char *end, int *port)
{
    long v = 0;
    if (p == end)
        return -1;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || v > 65535)
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

/* Parses "host[:port]" or "[v6addr][:port]"; a missing port is
 * default_port (6379 for servers, 26379 for sentinels). */
static int parse_hostport(hr_redis_addr *a, const char *p, size_t n, int default_port)
{
    const char *port = NULL, *end = p + n;
    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close || (close + 1 < end && close[1] != ':'))
            return -1;
        a->host = hr_strndup(p + 1, (size_t)(close - p - 1));
        port = close + 1 < end ? close + 2 : NULL;
    } else {
        const char *colon = memchr(p, ':', n);
        a->host = hr_strndup(p, colon ? (size_t)(colon - p) : n);
        port = colon ? colon + 1 : NULL;
    }
    if (!a->host[0])
        return -1;
    a->port = default_port;
    return port ? parse_port(port, end, &a->port) : 0;
}

static int parse_db(hr_redis_addr *a, const char *p, const char *end)
{
    long db = 0;
    if (p == end)
        return 0; /* "redis://host/" */
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || db > 1000000)
            return -1;
        db = db * 10 + (*p - '0');
    }
    a->db = (int)db;
    return 0;
}

/*---- URLs of every scheme ----------------------------------------------------*/

static const struct {
    const char *scheme;
    hr_redis_mode mode;
    int default_port;
} schemes[] = {
    {"redis://", HR_REDIS_DIRECT, 6379},
    {"redis+sentinel://", HR_REDIS_SENTINEL, 26379},
    {"redis+cluster://", HR_REDIS_CLUSTER, 6379},
};

/* Length of a "scheme://" prefix of p[0..n) (RFC 3986 scheme syntax), or
 * 0: how a list tells "next URL" from "next host" at a comma. */
static size_t scheme_prefix(const char *p, size_t n)
{
    size_t i = 0;
    if (!n || !((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')))
        return 0;
    while (i < n && ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
                     (p[i] >= '0' && p[i] <= '9') || p[i] == '+' || p[i] == '-' || p[i] == '.'))
        i++;
    return n - i >= 3 && !memcmp(p + i, "://", 3) ? i + 3 : 0;
}

static void trim(const char **p, size_t *n)
{
    while (*n && **p == ' ')
        (*p)++, (*n)--;
    while (*n && (*p)[*n - 1] == ' ')
        (*n)--;
}

/* A sentinel's master name: %XX-decoded, printable, no spaces (sentinel
 * commands and its config file take it as one word). */
static char *parse_master(const char *p, size_t n)
{
    char *m = n ? url_decode(p, n) : NULL;
    for (const char *c = m; c && *c; c++) {
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            free(m);
            return NULL;
        }
    }
    return m;
}

/* "sentinel_password=P&sentinel_user=U" (either, once each): the
 * sentinels' own credentials, where they differ from the master's. */
static int parse_query(hr_redis_target *t, const char *p, const char *end)
{
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        char **dst = NULL;
        if (!eq)
            return -1;
        if ((size_t)(eq - p) == 17 && !memcmp(p, "sentinel_password", 17))
            dst = &t->sentinel_password;
        else if ((size_t)(eq - p) == 13 && !memcmp(p, "sentinel_user", 13))
            dst = &t->sentinel_user;
        if (!dst || *dst || !(*dst = url_decode(eq + 1, (size_t)(pe - eq - 1))))
            return -1;
        p = amp ? amp + 1 : end;
    }
    return 0;
}

static void target_clear(hr_redis_target *t)
{
    free(t->sentinel_user);
    free(t->sentinel_password);
    hr_redis_addr_clear(&t->node);
    hr_redis_addrs_free(t->hosts, t->nhosts);
    free(t->master);
    memset(t, 0, sizeof(*t));
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        target_clear(t);                                                                           \
        return -1;                                                                                 \
    } while (0)

/* Parses one URL of any scheme into *t. `which` names it in errors ("URL 2
 * of HERALD_REDIS_URL"), which never quote it. */
static int parse_target(const char *url, size_t len, hr_redis_target *t, const char *which,
                        char *err, size_t errlen)
{
    const char *end = url + len;
    size_t sl = scheme_prefix(url, len);
    int k = -1;
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; sl && i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (strlen(schemes[i].scheme) == sl && !strncasecmp(url, schemes[i].scheme, sl))
            k = (int)i;
    if (k < 0)
        FAIL("%s: expected redis://, redis+sentinel:// or redis+cluster://", which);
    t->mode = schemes[k].mode;
    const char *auth = url + sl;
    const char *query = memchr(auth, '?', (size_t)(end - auth));
    if (query) {
        if (t->mode != HR_REDIS_SENTINEL)
            FAIL("%s: only redis+sentinel:// takes parameters (?sentinel_password=...)", which);
        if (parse_query(t, query + 1, end) < 0)
            FAIL("%s: bad parameters: expected ?sentinel_password=P[&sentinel_user=U] "
                 "(%%XX-escape reserved characters)",
                 which);
        end = query;
    }
    const char *path = memchr(auth, '/', (size_t)(end - auth));
    if (!path)
        path = end;
    const char *at = memchr(auth, '@', (size_t)(path - auth));
    const char *hp = at ? at + 1 : auth;
    if (at && parse_userinfo(&t->node, auth, (size_t)(at - auth)) < 0)
        FAIL("%s: bad credentials: expected [user]:password@ (%%XX-escape reserved characters)",
             which);
    if (t->mode == HR_REDIS_DIRECT) {
        if (memchr(hp, ',', (size_t)(path - hp)))
            FAIL("%s: a redis:// URL names one server (several servers: several URLs, or "
                 "redis+sentinel:// / redis+cluster://)",
                 which);
        if (parse_hostport(&t->node, hp, (size_t)(path - hp), 6379) < 0)
            FAIL("%s: bad host or port", which);
        if (path < end && parse_db(&t->node, path + 1, end) < 0)
            FAIL("%s: bad database number", which);
        return 0;
    }
    /* a list of hosts */
    for (const char *h = hp;;) {
        const char *comma = memchr(h, ',', (size_t)(path - h));
        const char *he = comma ? comma : path;
        size_t hn = (size_t)(he - h);
        trim(&h, &hn);
        t->hosts = hr_realloc(t->hosts, (size_t)(t->nhosts + 1) * sizeof(*t->hosts));
        memset(&t->hosts[t->nhosts], 0, sizeof(*t->hosts));
        t->nhosts++;
        if (parse_hostport(&t->hosts[t->nhosts - 1], h, hn, schemes[k].default_port) < 0)
            FAIL("%s: bad host or port in the list of %s", which,
                 t->mode == HR_REDIS_SENTINEL ? "sentinels" : "seed nodes");
        if (!comma)
            break;
        h = comma + 1;
    }
    if (t->mode == HR_REDIS_SENTINEL) {
        const char *name = path < end ? path + 1 : end;
        const char *slash = memchr(name, '/', (size_t)(end - name));
        const char *ne = slash ? slash : end;
        if (!(t->master = parse_master(name, (size_t)(ne - name))))
            FAIL("%s: redis+sentinel:// needs the master's name: "
                 "redis+sentinel://host:26379[,host:port...]/MASTER_NAME[/db]",
                 which);
        if (slash && parse_db(&t->node, slash + 1, end) < 0)
            FAIL("%s: bad database number", which);
    } else if (path < end && !(end - path == 1 || (end - path == 2 && path[1] == '0'))) {
        FAIL("%s: Redis Cluster has only database 0", which);
    }
    return 0;
}

#undef FAIL

int hr_redis_targets_parse(const char *list, hr_redis_target **out, char *err, size_t errlen)
{
    int n = 0;
    hr_redis_target *t = NULL;
    char which[48];
    *out = NULL;
    if (!list || !*list) {
        snprintf(err, errlen, "HERALD_REDIS_URL is empty");
        return -1;
    }
    for (const char *p = list;;) {
        /* this URL ends at the first comma that the next URL's scheme
         * follows (spaces allowed around commas) */
        const char *s0 = p + strspn(p, " ");
        const char *e = s0 + scheme_prefix(s0, strlen(s0));
        const char *next = NULL;
        for (;; e++) {
            e = strchr(e, ',');
            if (!e)
                break;
            const char *q = e + 1 + strspn(e + 1, " ");
            if (scheme_prefix(q, strlen(q))) {
                next = q;
                break;
            }
        }
        const char *u = p;
        size_t len = e ? (size_t)(e - p) : strlen(p);
        trim(&u, &len);
        t = hr_realloc(t, (size_t)(n + 1) * sizeof(*t));
        snprintf(which, sizeof(which), "HERALD_REDIS_URL (URL %d)", n + 1);
        if (parse_target(u, len, &t[n], which, err, errlen) < 0) {
            hr_redis_targets_free(t, n);
            return -1;
        }
        n++;
        if (t[n - 1].mode != t[0].mode) {
            snprintf(err, errlen,
                     "HERALD_REDIS_URL mixes schemes: every shard must be redis:// or every "
                     "shard redis+sentinel://");
            hr_redis_targets_free(t, n);
            return -1;
        }
        if (t[0].mode == HR_REDIS_CLUSTER && n > 1) {
            snprintf(err, errlen,
                     "HERALD_REDIS_URL: a redis+cluster:// URL stands alone (list every seed "
                     "node in it: redis+cluster://host:port,host:port)");
            hr_redis_targets_free(t, n);
            return -1;
        }
        if (!next)
            break;
        p = next;
    }
    *out = t;
    return n;
}

void hr_redis_targets_free(hr_redis_target *t, int n)
{
    for (int i = 0; t && i < n; i++)
        target_clear(&t[i]);
    free(t);
}

int hr_redis_url_parse(const char *url, size_t len, hr_redis_addr *out)
{
    hr_redis_target t;
    char err[8];
    memset(out, 0, sizeof(*out));
    if (parse_target(url, len, &t, "", err, sizeof(err)) < 0)
        return -1;
    if (t.mode != HR_REDIS_DIRECT) {
        target_clear(&t);
        return -1;
    }
    *out = t.node;
    return 0;
}

int hr_redis_urls_parse(const char *list, hr_redis_addr **out)
{
    hr_redis_target *t;
    char err[8];
    int n = hr_redis_targets_parse(list, &t, err, sizeof(err));
    *out = NULL;
    if (n < 0)
        return -1;
    if (t[0].mode != HR_REDIS_DIRECT) {
        hr_redis_targets_free(t, n);
        return -1;
    }
    hr_redis_addr *a = hr_calloc((size_t)n, sizeof(*a));
    for (int i = 0; i < n; i++) {
        a[i] = t[i].node;
        memset(&t[i].node, 0, sizeof(t[i].node));
    }
    hr_redis_targets_free(t, n);
    *out = a;
    return n;
}

void hr_redis_addr_clear(hr_redis_addr *a)
{
    free(a->host);
    free(a->user);
    free(a->password);
    memset(a, 0, sizeof(*a));
}

void hr_redis_addrs_free(hr_redis_addr *a, int n)
{
    for (int i = 0; i < n; i++)
        hr_redis_addr_clear(&a[i]);
    free(a);
}

int hr_redis_setup_commands(const hr_redis_addr *a, hr_redis_setup out[2], char dbbuf[16])
{
    int n = 0;
    if (a->password) {
        out[n].argv[0] = "AUTH";
        out[n].argc = 1;
        if (a->user)
            out[n].argv[out[n].argc++] = a->user;
        out[n].argv[out[n].argc++] = a->password;
        n++;
    }
    if (a->db) {
        snprintf(dbbuf, 16, "%d", a->db);
        out[n].argv[0] = "SELECT";
        out[n].argv[1] = dbbuf;
        out[n].argc = 2;
        n++;
    }
    return n;
}

char *hr_redis_key(const char *prefix, const char *kind, const char *name)
{
    size_t pl = strlen(prefix), kl = strlen(kind), nl = name ? strlen(name) : 0;
    char *k = hr_malloc(pl + kl + nl + 3);
    memcpy(k, prefix, pl);
    k[pl] = ':';
    memcpy(k + pl + 1, kind, kl + 1);
    if (name) {
        k[pl + 1 + kl] = ':';
        memcpy(k + pl + kl + 2, name, nl + 1);
    }
    return k;
}

/* 1 if p starts a "<scheme>://" (letters, digits, '+', '-', '.'). */
static int at_scheme(const char *p)
{
    const char *q = p;
    while (isalnum((unsigned char)*q) || *q == '+' || *q == '-' || *q == '.')
        q++;
    return q > p && !strncmp(q, "://", 3);
}

char *hr_redis_urls_with_sentinel_password(const char *list, const char *password)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(list), plen = strlen(password);
    /* each URL gains at most "?sentinel_password=" and 3 bytes per byte */
    size_t urls = 1;
    for (const char *c = list; (c = strchr(c, ',')); c++)
        urls++;
    char *out = hr_malloc(n + urls * (19 + 3 * plen) + 1), *o = out;
    const char *p = list;
    while (*p) {
        /* this URL ends at a comma that starts the next "<scheme>://" */
        const char *e = p;
        for (;;) {
            const char *c = strchr(e, ',');
            if (!c) {
                e = p + strlen(p);
                break;
            }
            if (at_scheme(c + 1)) {
                e = c;
                break;
            }
            e = c + 1;
        }
        memcpy(o, p, (size_t)(e - p));
        o += e - p;
        if (!strncmp(p, "redis+sentinel://", 17) && !memchr(p, '?', (size_t)(e - p))) {
            memcpy(o, "?sentinel_password=", 19);
            o += 19;
            for (const unsigned char *c = (const unsigned char *)password; *c; c++) {
                if (isalnum(*c) || strchr("-._~", *c)) {
                    *o++ = (char)*c;
                } else {
                    *o++ = '%';
                    *o++ = hex[*c >> 4];
                    *o++ = hex[*c & 15];
                }
            }
        }
        p = e;
        if (*p == ',')
            *o++ = *p++;
    }
    *o = '\0';
    return out;
}
