/* limits.c - connections per client address and per user, and client
 * addresses through trusted proxies (see limits.h). */
#include "gateway/limits.h"
#include "common/common.h"

#include <libwebsockets.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Counted tables ----------------------------------------------------------*/

/* One key's count. Every connection of that key holds a pointer to it, so
 * a release needs no lookup and no copy of the key per connection. */
struct hr_slot {
    hr_limit *owner;
    int count;
    size_t klen;
    char key[];
};

struct hr_limit {
    pthread_mutex_t mu;
    hr_map *slots; /* key -> hr_slot (locked) */
};

hr_limit *hr_limit_new(void)
{
    hr_limit *l = hr_calloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    l->slots = hr_map_new(free);
    return l;
}

void hr_limit_free(hr_limit *l)
{
    if (!l)
        return;
    hr_map_free(l->slots);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int hr_limit_take(hr_limit *l, const char *key, int max, hr_slot **slot)
{
    size_t klen = strlen(key);
    *slot = NULL;
    if (max <= 0 || !l)
        return 0; /* not limited, not counted */
    pthread_mutex_lock(&l->mu);
    hr_slot *s = hr_map_get(l->slots, key, klen);
    if (s && s->count >= max) {
        pthread_mutex_unlock(&l->mu);
        return -EUSERS;
    }
    if (!s) {
        s = hr_calloc(1, sizeof(*s) + klen + 1);
        s->owner = l;
        s->klen = klen;
        memcpy(s->key, key, klen + 1);
        hr_map_put(l->slots, s->key, klen, s);
    }
    s->count++;
    pthread_mutex_unlock(&l->mu);
    *slot = s;
    return 0;
}

void hr_slot_release(hr_slot *s)
{
    if (!s)
        return;
    hr_limit *l = s->owner;
    pthread_mutex_lock(&l->mu);
    if (--s->count == 0)
        free(hr_map_del(l->slots, s->key, s->klen));
    pthread_mutex_unlock(&l->mu);
}

/*---- Client addresses ------------------------------------------------------*/

/* An address as bytes: IPv4 in the first 4 bytes (IPv4-mapped IPv6
 * addresses are stored as IPv4, so a dual-stack socket's "::ffff:a.b.c.d"
 * and a proxy's "a.b.c.d" count as one client). */
typedef struct ipaddr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char a[16];
} ipaddr;

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void unmap_v4(ipaddr *ip)
{
    if (ip->family == AF_INET6 && !memcmp(ip->a, v4mapped, 12)) {
        memmove(ip->a, ip->a + 12, 4);
        memset(ip->a + 4, 0, 12);
        ip->family = AF_INET;
    }
}

/* Parses p[0..n) after trimming optional whitespace (SP, HTAB): IPv4,
 * IPv6, "IPv4:PORT", "[IPv6]" or "[IPv6]:PORT" (proxies that add the
 * client's port). Anything else - zone ids, host names, "unknown", an
 * empty entry - is -1. */
static int ipaddr_parse(const char *p, size_t n, ipaddr *ip)
{
    char buf[64];
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *addr = buf, *port = NULL;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (!close || (close[1] && close[1] != ':'))
            return -1;
        *close = '\0';
        addr = buf + 1;
        port = close[1] ? close + 2 : NULL;
        ip->family = AF_INET6;
    } else {
        char *colon = strchr(buf, ':');
        if (colon && !strchr(colon + 1, ':') && memchr(buf, '.', (size_t)(colon - buf))) {
            *colon = '\0'; /* IPv4:PORT */
            port = colon + 1;
        }
        ip->family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    }
    if (port) {
        size_t pl = strlen(port);
        if (pl == 0 || pl > 5 || strspn(port, "0123456789") != pl || atoi(port) > 65535)
            return -1;
    }
    memset(ip->a, 0, sizeof(ip->a));
    if (inet_pton(ip->family, addr, ip->a) != 1)
        return -1;
    unmap_v4(ip);
    return 0;
}

struct hr_netmask {
    ipaddr ip;
    int bits;
};

/* "ADDR" or "ADDR/BITS", IPv4 or IPv6 (an IPv4-mapped network is IPv4). */
static int netmask_parse(const char *s, hr_netmask *m)
{
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || strchr(s, '[') || ipaddr_parse(s, n, &m->ip) < 0 || memchr(s, ' ', n) ||
        memchr(s, '\t', n))
        return -1;
    int was_v6 = memchr(s, ':', n) != NULL;
    int max = was_v6 ? 128 : 32;
    m->bits = max;
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || b < 0 || b > max)
            return -1;
        m->bits = (int)b;
    }
    if (was_v6 && m->ip.family == AF_INET) { /* ::ffff:a.b.c.d/BITS */
        if (m->bits < 96)
            return -1;
        m->bits -= 96;
    }
    return 0;
}

int hr_netmasks_parse(char *const *list, size_t n, hr_netmask **out, char *err, size_t errlen)
{
    *out = n ? hr_calloc(n, sizeof(**out)) : NULL;
    for (size_t i = 0; i < n; i++) {
        if (netmask_parse(list[i], &(*out)[i]) < 0) {
            snprintf(err, errlen, "trusted_proxies: \"%.64s\" is not an address or ADDR/BITS",
                     list[i]);
            free(*out);
            *out = NULL;
            return -EINVAL;
        }
    }
    return 0;
}

/* Does ip fall within the first `bits` bits of net? */
static int prefix_eq(const unsigned char *ip, const unsigned char *net, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(ip, net, (size_t)full))
        return 0;
    return rest == 0 || ((ip[full] ^ net[full]) & (0xff << (8 - rest))) == 0;
}

static int trusted(const hr_netmask *m, size_t n, const ipaddr *ip)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].ip.family == ip->family && prefix_eq(ip->a, m[i].ip.a, m[i].bits))
            return 1;
    return 0;
}

/* The key the per-address limits count: the address, or with a prefix
 * shorter than the family's length its network, "NET/BITS" (one IPv6
 * client holds a /64, so counting single addresses would count nothing). */
static void ipaddr_key(const ipaddr *ip, int v4bits, int v6bits, char *out, size_t len)
{
    int max = ip->family == AF_INET ? 32 : 128;
    int bits = ip->family == AF_INET ? v4bits : v6bits;
    unsigned char a[16] = {0};
    char text[INET6_ADDRSTRLEN];
    if (bits <= 0 || bits > max)
        bits = max;
    memcpy(a, ip->a, (size_t)(bits / 8));
    if (bits % 8)
        a[bits / 8] = ip->a[bits / 8] & (unsigned char)(0xff << (8 - bits % 8));
    inet_ntop(ip->family, a, text, sizeof(text));
    if (bits == max)
        snprintf(out, len, "%s", text);
    else
        snprintf(out, len, "%s/%d", text, bits);
}

int hr_client_key(const hr_addr_policy *p, const char *peer, const char *xff, char *out, size_t len)
{
    const hr_netmask *proxies = p->proxies;
    size_t nproxies = p->nproxies;
    int v4bits = p->v4bits, v6bits = p->v6bits;
    ipaddr ip;
    if (ipaddr_parse(peer, strlen(peer), &ip) < 0) {
        snprintf(out, len, "%s", peer); /* not an IP socket: counted as it is */
        return 1;
    }
    ipaddr_key(&ip, v4bits, v6bits, out, len);
    if (!nproxies || !trusted(proxies, nproxies, &ip))
        return 1;
    if (!xff || !xff[strspn(xff, " \t")])
        return 0; /* the proxy's own request: no client to count */
    /* right to left: the entries a trusted proxy appended are its peers';
     * the first untrusted one is the client, what lies left of it was
     * written by the client and proves nothing */
    const char *end = xff + strlen(xff);
    for (;;) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        ipaddr item;
        if (ipaddr_parse(start, (size_t)(end - start), &item) < 0) {
            /* garbage (a port form we do not know, a name, an empty entry):
             * nobody to attribute it to but the proxy, whose address is
             * counted - never "no limit" */
            ipaddr_key(&ip, v4bits, v6bits, out, len);
            return 1;
        }
        ipaddr_key(&item, v4bits, v6bits, out, len);
        if (!trusted(proxies, nproxies, &item))
            return 1;
        if (start == xff)
            return 0; /* only trusted proxies: out holds the farthest */
        end = start - 1;
    }
}

/* The header is read whole (lws bounds every header block, 16 KiB): a
 * copy into a fixed buffer failed on long chains, and the request then
 * counted as the proxy's own. */
int hr_client_address(const hr_addr_policy *p, struct lws *wsi, char *out, size_t len)
{
    char peer[64];
    char *xff = NULL;
    lws_get_peer_simple(wsi, peer, sizeof(peer));
    if (p->nproxies) {
        int total = lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR);
        if (total > 0) {
            xff = hr_malloc((size_t)total + 1);
            if (lws_hdr_copy(wsi, xff, total + 1, WSI_TOKEN_X_FORWARDED_FOR) < 0)
                snprintf(xff, (size_t)total + 1, ","); /* cannot happen: counted as garbage */
        }
    }
    int rc = hr_client_key(p, peer, xff, out, len);
    free(xff);
    return rc;
}
