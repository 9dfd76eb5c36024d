/*
 * limits.c - what one client may hold of a public gateway: connections per
 * client address and per user (counted tables shared by every loop), and
 * the client address itself, read through trusted proxies only.
 *
 * The handshake rate per address uses auth's throttle (a token bucket of
 * handshake_rate, refilled at handshake_rate a second); see admit_address
 * in ws.c.
 */
#include "node.h"

#include <arpa/inet.h>
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

hr_slot *hr_limit_take(hr_limit *l, const char *key, int max, int *refused)
{
    size_t klen = strlen(key);
    *refused = 0;
    if (max <= 0 || !l)
        return NULL; /* not limited, not counted */
    pthread_mutex_lock(&l->mu);
    hr_slot *s = hr_map_get(l->slots, key, klen);
    if (s && s->count >= max) {
        pthread_mutex_unlock(&l->mu);
        *refused = 1;
        return NULL;
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
    return s;
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

/*---- Trusted proxies ---------------------------------------------------------*/

struct hr_netmask {
    int family;
    unsigned char addr[16];
    int bits;
};

/* "ADDR" or "ADDR/BITS", IPv4 or IPv6. */
static int netmask_parse(const char *s, hr_netmask *m)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    m->family = strchr(buf, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(m->family, buf, m->addr) != 1)
        return -1;
    int max = m->family == AF_INET ? 32 : 128;
    m->bits = max;
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || b < 0 || b > max)
            return -1;
        m->bits = (int)b;
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
            return -1;
        }
    }
    return 0;
}

static int netmask_contains(const hr_netmask *m, const char *text)
{
    unsigned char a[16];
    int family = strchr(text, ':') ? AF_INET6 : AF_INET;
    if (family != m->family || inet_pton(family, text, a) != 1)
        return 0;
    int full = m->bits / 8, rest = m->bits % 8;
    if (memcmp(a, m->addr, (size_t)full))
        return 0;
    return rest == 0 || ((a[full] ^ m->addr[full]) & (0xff << (8 - rest))) == 0;
}

int hr_netmasks_contain(const hr_netmask *m, size_t n, const char *addr)
{
    /* an IPv4 peer on a dual-stack socket reads "::ffff:a.b.c.d" */
    if (!strncmp(addr, "::ffff:", 7) && strchr(addr + 7, '.'))
        addr += 7;
    for (size_t i = 0; i < n; i++)
        if (netmask_contains(&m[i], addr))
            return 1;
    return 0;
}

/* Trims spaces around one X-Forwarded-For element into out. */
static void xff_item(const char *p, size_t n, char *out, size_t len)
{
    while (n && *p == ' ')
        p++, n--;
    while (n && p[n - 1] == ' ')
        n--;
    if (n >= len)
        n = len - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* The peer, unless it is a trusted proxy: then the rightmost
 * X-Forwarded-For entry that is not one (entries further left were written
 * by whoever the client is, and prove nothing). */
int hr_client_address(const hr_node *node, struct lws *wsi, char *out, size_t len)
{
    char xff[1024];
    lws_get_peer_simple(wsi, out, len);
    if (!node->nproxies || !hr_netmasks_contain(node->proxies, node->nproxies, out))
        return 1;
    int n = lws_hdr_copy(wsi, xff, sizeof(xff), WSI_TOKEN_X_FORWARDED_FOR);
    if (n <= 0)
        return 0;
    const char *end = xff + n;
    while (end > xff) {
        const char *comma = end;
        while (comma > xff && comma[-1] != ',')
            comma--;
        char item[64];
        unsigned char probe[16];
        xff_item(comma, (size_t)(end - comma), item, sizeof(item));
        if (inet_pton(strchr(item, ':') ? AF_INET6 : AF_INET, item, probe) != 1)
            return 0; /* garbage: nobody to attribute the request to */
        snprintf(out, len, "%s", item);
        if (!hr_netmasks_contain(node->proxies, node->nproxies, item))
            return 1;
        end = comma > xff ? comma - 1 : xff;
    }
    return 0;
}
