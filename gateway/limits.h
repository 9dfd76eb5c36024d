/*
 * limits.h - what one client may hold of a public gateway: connections per
 * client address and per user (counted tables shared by every loop), and
 * the client address itself, read through trusted proxies only.
 *
 * The handshake rate per address uses auth's throttle (a token bucket);
 * see ws_upgrade.c.
 */
#ifndef HR_LIMITS_H
#define HR_LIMITS_H

#include <stddef.h>

struct lws;

/*---- Counted tables --------------------------------------------------------*/

typedef struct hr_limit hr_limit; /* key -> count of connections (locked inside) */
typedef struct hr_slot hr_slot;   /* one key's count, held by its connections */

hr_limit *hr_limit_new(void);
void hr_limit_free(hr_limit *l);
/* Counts one more connection of key unless max are held already. Returns
 * 0 with *slot the place to give back when the connection ends (NULL when
 * max <= 0: not limited, not counted), or -EUSERS when key holds max
 * connections (*slot NULL). Any thread. */
int hr_limit_take(hr_limit *l, const char *key, int max, hr_slot **slot);
/* Gives the slot's count back (NULL ok). Any thread. */
void hr_slot_release(hr_slot *s);

/*---- Client addresses ------------------------------------------------------*/

typedef struct hr_netmask hr_netmask; /* ADDR/BITS */

/* Who a request counts as: the trusted proxies and the prefix lengths
 * addresses are counted per. */
typedef struct hr_addr_policy {
    hr_netmask *proxies; /* trusted_proxies, parsed (hr_netmasks_parse) */
    size_t nproxies;
    int v4bits, v6bits; /* ipv4_prefix, ipv6_prefix */
} hr_addr_policy;

/* Parses trusted_proxies ("ADDR" or "ADDR/BITS"); *out is malloc'ed (NULL
 * for n == 0). Returns 0, or -EINVAL with a message naming the bad entry
 * in err (a configuration error the operator must see). */
int hr_netmasks_parse(char *const *list, size_t n, hr_netmask **out, char *err, size_t errlen);

/* The key the per-address limits count a request under (pure): the peer
 * (text from lws_get_peer_simple), or when the peer is a trusted proxy the
 * rightmost entry of xff (the X-Forwarded-For value, NULL = absent) that is
 * not a trusted proxy; an entry that does not parse counts as the peer.
 * IPv4-mapped IPv6 counts as IPv4; IPv4 per /v4bits, IPv6 per /v6bits
 * ("NET/BITS" below the full length). Returns 1, or 0 when only trusted
 * proxies are known (no client: not limited). */
int hr_client_key(const hr_addr_policy *p, const char *peer, const char *xff, char *out,
                  size_t len);
/* hr_client_key for a request (the X-Forwarded-For header read whole). */
int hr_client_address(const hr_addr_policy *p, struct lws *wsi, char *out, size_t len);

#endif
