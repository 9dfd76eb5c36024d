/*
 * redis_url.c - HERALD_REDIS_URL: one or several redis:// URLs (the shards).
 * Pure parsing, shared by the user store (auth/store_redis.c, first shard)
 * and the Redis channel layer (channels/redis.c, every shard).
 */
#include "common.h"

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

/* Parses "host[:port]" or "[v6addr][:port]". */
static int parse_hostport(hr_redis_addr *a, const char *p, size_t n)
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
    a->port = 6379;
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

int hr_redis_url_parse(const char *url, size_t len, hr_redis_addr *out)
{
    static const char scheme[] = "redis://";
    const char *end = url + len;
    memset(out, 0, sizeof(*out));
    if (len < sizeof(scheme) || strncmp(url, scheme, sizeof(scheme) - 1))
        return -1;
    const char *auth = url + sizeof(scheme) - 1;
    const char *path = memchr(auth, '/', (size_t)(end - auth));
    if (!path)
        path = end;
    const char *at = memchr(auth, '@', (size_t)(path - auth));
    const char *hp = at ? at + 1 : auth;
    if ((at && parse_userinfo(out, auth, (size_t)(at - auth)) < 0) ||
        parse_hostport(out, hp, (size_t)(path - hp)) < 0 ||
        (path < end && parse_db(out, path + 1, end) < 0)) {
        hr_redis_addr_clear(out);
        return -1;
    }
    return 0;
}

int hr_redis_urls_parse(const char *list, hr_redis_addr **out)
{
    int n = 0;
    hr_redis_addr *a = NULL;
    const char *p = list;
    *out = NULL;
    if (!list || !*list)
        return -1;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && (*p == ' '))
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        a = hr_realloc(a, (size_t)(n + 1) * sizeof(*a));
        if (hr_redis_url_parse(p, len, &a[n]) < 0) {
            hr_redis_addrs_free(a, n);
            return -1;
        }
        n++;
        if (!comma)
            break;
        p = comma + 1;
    }
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
