/*
 * local.c - the in-process channel layer (embedded mode).
 *
 * Fan-out is core.c's; this file adds what a single node keeps in memory:
 * history (a ring per channel, bounded by the namespace's size and TTL,
 * with a random epoch per ring so a restart is never mistaken for
 * continuity), presence, and join/leave pushes. Everything completes before
 * it returns.
 *
 * One mutex guards history and presence. A history publication takes its
 * offset and is dispatched under it, so offsets and delivery order agree;
 * publications to channels without history never take it.
 */
#include "layer_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Operations between two sweeps of expired histories. */
#define SWEEP_EVERY 1024
/* Epoch generations: one counter per slot of channel names (see
 * unborn_pos). */
#define GEN_SLOTS 4096
/* A ring's first allocation; it doubles up to history_size. */
#define RING_MIN 4

typedef struct hist_entry {
    uint64_t offset;
    int64_t at; /* unix seconds */
    char *data;
    char *from; /* NULL: a backend's publication */
} hist_entry;

/* A channel's stream, created by its first publication or subscriber:
 * reading a channel creates nothing. */
typedef struct local_hist {
    chan_pos top;
    hist_entry *ring; /* `alloc` slots, grown up to cap; NULL while empty */
    size_t head, n, alloc, cap;
    int ttl;
    int64_t last_pub;
} local_hist;

typedef struct local_layer {
    chan_layer base;
    pthread_mutex_t mu;
    chan_tab hist;    /* channel -> local_hist */
    hr_map *presence; /* channel -> hr_map(client -> entry JSON text) */
    unsigned since_sweep;
    char universe[17];       /* random per process: epochs never survive a restart */
    uint32_t gen[GEN_SLOTS]; /* streams born per slot */
} local_layer;

static local_layer *ll(chan_layer *l)
{
    return (local_layer *)l;
}

/*---- History ---------------------------------------------------------------*/

static void entry_free(hist_entry *e)
{
    free(e->data);
    free(e->from);
}

static void hist_free(void *p)
{
    local_hist *h = p;
    for (size_t i = 0; i < h->n; i++)
        entry_free(&h->ring[(h->head + i) % h->alloc]);
    free(h->ring);
    free(h);
}

/* h: chan_hash of the channel's name (hr_hash, as before it was passed
 * along). */
static uint32_t *gen_of(local_layer *L, uint64_t h)
{
    return &L->gen[h % GEN_SLOTS];
}

/* The position of a channel without a stream: offset 0 and the epoch its
 * next birth will take - "<universe>-<generation of its slot>". A birth
 * moves its slot's generation on, so a stream born again after it was
 * freed never reuses an epoch (a client's old position cannot match it),
 * while a subscriber told this epoch before the first publication keeps
 * it. Under mu. */
static void unborn_pos(local_layer *L, uint64_t h, chan_pos *pos)
{
    pos->offset = 0;
    snprintf(pos->epoch, sizeof(pos->epoch), "%s-%u", L->universe, *gen_of(L, h));
}

static void hist_sweep(local_layer *L, int64_t now);

/* Every SWEEP_EVERY operations, expired entries are dropped and streams
 * left empty, idle and without subscribers are freed. Under mu. */
static void maybe_sweep(local_layer *L)
{
    if (++L->since_sweep >= SWEEP_EVERY) {
        L->since_sweep = 0;
        hist_sweep(L, (int64_t)time(NULL));
    }
}

/* A channel's stream, or NULL (nothing published). Under mu. */
static local_hist *hist_find(local_layer *L, const char *channel, uint64_t h)
{
    maybe_sweep(L);
    return chan_tab_get(&L->hist, channel, strlen(channel), h);
}

/* A channel's stream, born on its first publication. Under mu. */
static local_hist *hist_get(local_layer *L, const char *channel, uint64_t hash, const chan_opts *o)
{
    local_hist *h = hist_find(L, channel, hash);
    if (!h) {
        h = hr_calloc(1, sizeof(*h));
        unborn_pos(L, hash, &h->top);
        (*gen_of(L, hash))++;
        h->cap = (size_t)o->history_size;
        chan_tab_put(&L->hist, channel, strlen(channel), hash, h);
    }
    h->ttl = o->history_ttl;
    return h;
}

/* Makes room for one more entry: the ring grows (doubling, up to cap),
 * then the oldest entry goes. */
static void hist_room(local_hist *h)
{
    if (h->n < h->alloc)
        return;
    if (h->alloc < h->cap) {
        size_t na = h->alloc ? h->alloc * 2 : RING_MIN;
        if (na > h->cap)
            na = h->cap;
        hist_entry *r = hr_calloc(na, sizeof(*r));
        for (size_t i = 0; i < h->n; i++)
            r[i] = h->ring[(h->head + i) % h->alloc];
        free(h->ring);
        h->ring = r;
        h->alloc = na;
        h->head = 0;
        return;
    }
    entry_free(&h->ring[h->head]);
    h->head = (h->head + 1) % h->alloc;
    h->n--;
}

static void hist_append(local_hist *h, const char *data, size_t len, const char *from, int64_t now)
{
    hist_room(h);
    hist_entry *e = &h->ring[(h->head + h->n) % h->alloc];
    e->offset = ++h->top.offset;
    e->at = now;
    e->data = hr_strndup(data, len);
    e->from = from ? hr_strdup(from) : NULL;
    h->n++;
    h->last_pub = now;
}

/* Drops expired entries; frees the streams nobody published to for longer
 * than their TTL and nobody on this node is subscribed to (their epoch
 * goes with them: a later subscriber is told "not recovered"). A stream
 * with subscribers stays, so they never see its offsets start again. */
static void hist_sweep(local_layer *L, int64_t now)
{
    const char *key;
    uint64_t kh;
    void *val;
    struct {
        char *name;
        uint64_t h;
    } *dead = NULL;
    size_t ndead = 0;
    for (size_t it = 0; chan_tab_next(&L->hist, &it, &key, &kh, &val);) {
        local_hist *h = val;
        if (h->ttl <= 0) {
            /* kept for good once published to; one a subscriber made and
             * nobody published to goes with its last subscriber */
            if (h->top.offset == 0 && !chan_channel_mask(&L->base, key, kh)) {
                dead = hr_realloc(dead, (ndead + 1) * sizeof(*dead));
                dead[ndead].name = hr_strdup(key);
                dead[ndead++].h = kh;
            }
            continue;
        }
        while (h->n && now - h->ring[h->head].at > h->ttl) {
            entry_free(&h->ring[h->head]);
            h->head = (h->head + 1) % h->alloc;
            h->n--;
        }
        if (h->n == 0 && h->ring) {
            free(h->ring);
            h->ring = NULL;
            h->alloc = h->head = 0;
        }
        if (h->n == 0 && now - h->last_pub > h->ttl && !chan_channel_mask(&L->base, key, kh)) {
            dead = hr_realloc(dead, (ndead + 1) * sizeof(*dead));
            dead[ndead].name = hr_strdup(key);
            dead[ndead++].h = kh;
        }
    }
    for (size_t i = 0; i < ndead; i++) {
        hist_free(chan_tab_del(&L->hist, dead[i].name, strlen(dead[i].name), dead[i].h));
        free(dead[i].name);
    }
    free(dead);
}

/* Copies the live entries after `after`, at most limit (< 0: all), into a
 * malloc'ed array; *n receives the count. With from_end, the newest ones. */
static chan_pub *hist_copy(const local_hist *h, uint64_t after, int64_t limit, int from_end,
                           int64_t now, size_t *n)
{
    chan_pub *out = hr_calloc(h->n ? h->n : 1, sizeof(*out));
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++) {
        const hist_entry *e = &h->ring[(h->head + i) % h->alloc];
        if (e->offset <= after || (h->ttl > 0 && now - e->at > h->ttl))
            continue;
        out[k].offset = e->offset;
        out[k].data = e->data; /* borrowed until duplicated below */
        out[k].from = e->from;
        k++;
    }
    size_t first = 0;
    if (limit >= 0 && (size_t)limit < k) {
        first = from_end ? k - (size_t)limit : 0;
        k = (size_t)limit;
    }
    memmove(out, out + first, k * sizeof(*out));
    for (size_t i = 0; i < k; i++) {
        out[i].data = hr_strdup(out[i].data);
        out[i].from = out[i].from ? hr_strdup(out[i].from) : NULL;
    }
    *n = k;
    return out;
}

static void pubs_free(chan_pub *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        free(p[i].data);
        free(p[i].from);
    }
    free(p);
}

/*---- Publish ---------------------------------------------------------------*/

static void local_publish(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                          const char *data_json, size_t data_len, const char *from,
                          chan_publish_cb cb, void *ud)
{
    local_layer *L = ll(l);
    uint64_t offset = 0, hash = chan_hash(channel, strlen(channel)); /* once for the whole way */
    (void)thread;
    if (o->history_size > 0) {
        int64_t now = (int64_t)time(NULL);
        pthread_mutex_lock(&L->mu);
        local_hist *h = hist_get(L, channel, hash, o);
        hist_append(h, data_json, data_len, from, now);
        offset = h->top.offset;
        chan_msg *m = chan_msg_publication_h(channel, hash, data_json, data_len, offset, from);
        chan_dispatch(l, m); /* under mu: offsets and delivery agree */
        pthread_mutex_unlock(&L->mu);
        chan_msg_unref(m);
    } else {
        chan_msg *m = chan_msg_publication_h(channel, hash, data_json, data_len, 0, from);
        chan_dispatch(l, m);
        chan_msg_unref(m);
    }
    if (cb)
        cb(ud, 0, offset, 0);
}

/*---- Presence and join/leave -----------------------------------------------*/

static void presence_free(void *p)
{
    hr_map_free(p);
}

static char *presence_entry(const chan_sub *s)
{
    json_t *info = s->info ? json_loads(s->info, 0, NULL) : NULL;
    json_t *o = json_pack("{s:s, s:s, s:o}", "client", s->client, "user", s->user, "info",
                          info ? info : json_object());
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

static void presence_put(local_layer *L, const chan_sub *s, int add)
{
    size_t clen = strlen(s->channel), klen = strlen(s->client);
    pthread_mutex_lock(&L->mu);
    hr_map *m = hr_map_get(L->presence, s->channel, clen);
    if (add) {
        if (!m) {
            m = hr_map_new(free);
            hr_map_put(L->presence, s->channel, clen, m);
        }
        free(hr_map_del(m, s->client, klen));
        hr_map_put(m, s->client, klen, presence_entry(s));
    } else if (m) {
        free(hr_map_del(m, s->client, klen));
        if (hr_map_count(m) == 0)
            presence_free(hr_map_del(L->presence, s->channel, clen));
    }
    pthread_mutex_unlock(&L->mu);
}

static void join_leave(chan_layer *l, const chan_sub *s, int join)
{
    size_t len;
    char *t = chan_join_leave_text(join, s->channel, s->client, s->user, &len);
    chan_msg *m = chan_msg_for_channel_h(t, len, s->channel, s->hash, 0);
    free(t);
    chan_dispatch(l, m);
    chan_msg_unref(m);
}

/*---- Subscribe -------------------------------------------------------------*/

static void local_subscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    local_layer *L = ll(l);
    chan_sub_result r = {0};
    chan_pub *pubs = NULL;
    (void)thread;
    if (s->opts.history_size > 0) {
        int64_t now = (int64_t)time(NULL);
        pthread_mutex_lock(&L->mu);
        /* a subscriber makes the stream: the epoch it is told is the one
         * the first publication takes (an unborn channel's epoch would move
         * on when another channel of its slot is born first) */
        local_hist *h = hist_get(L, s->channel, s->hash, &s->opts);
        r.history = 1;
        r.pos = h->top;
        if (s->has_since)
            pubs = hist_copy(h, s->since.offset, -1, 0, now, &r.npubs);
        pthread_mutex_unlock(&L->mu);
        r.pubs = pubs;
        r.recovered = s->has_since && chan_recovered(&s->since, &r.pos, pubs, r.npubs);
    }
    chan_sub_hold(s);
    chan_sub_complete(l, s, &r);
    pubs_free(pubs, r.npubs);
    if (!s->removed && s->opts.presence && s->client)
        presence_put(L, s, 1);
    if (!s->removed && s->opts.join_leave && s->client)
        join_leave(l, s, 1);
    chan_sub_release(s);
}

static void local_unsubscribe(chan_layer *l, unsigned thread, chan_sub *s)
{
    (void)thread;
    if (s->opts.presence && s->client)
        presence_put(ll(l), s, 0);
    if (s->opts.join_leave && s->client)
        join_leave(l, s, 0);
}

/*---- Reads and control -----------------------------------------------------*/

static void local_history(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                          const chan_pos *since, int64_t limit, chan_history_cb cb, void *ud)
{
    local_layer *L = ll(l);
    chan_history h = {0};
    chan_pub *pubs;
    (void)thread;
    (void)o;
    uint64_t hash = chan_hash(channel, strlen(channel));
    pthread_mutex_lock(&L->mu);
    local_hist *lh = hist_find(L, channel, hash);
    /* with since: the oldest after it; without: the newest `limit` */
    if (lh) {
        h.top = lh->top;
        pubs = hist_copy(lh, since ? since->offset : 0, limit, since == NULL, (int64_t)time(NULL),
                         &h.npubs);
    } else {
        unborn_pos(L, hash, &h.top);
        pubs = NULL;
    }
    pthread_mutex_unlock(&L->mu);
    h.pubs = pubs;
    cb(ud, &h);
    pubs_free(pubs, h.npubs);
}

static void local_presence(chan_layer *l, unsigned thread, const char *channel, const chan_opts *o,
                           chan_presence_cb cb, void *ud)
{
    local_layer *L = ll(l);
    hr_buf b = {0};
    const char *key;
    void *val;
    (void)thread;
    (void)o;
    hr_buf_append(&b, "[", 1);
    pthread_mutex_lock(&L->mu);
    hr_map *m = hr_map_get(L->presence, channel, strlen(channel));
    for (size_t it = 0, i = 0; m && hr_map_next(m, &it, &key, NULL, &val); i++) {
        if (i)
            hr_buf_append(&b, ",", 1);
        hr_buf_append(&b, val, strlen(val));
    }
    pthread_mutex_unlock(&L->mu);
    hr_buf_append(&b, "]", 1);
    chan_presence p = {.status = 0, .clients = b.data, .len = b.len};
    cb(ud, &p);
    hr_buf_reset(&b);
}

static void local_control(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb,
                          void *ud)
{
    (void)thread;
    l->host.control(l->host.ud, c);
    if (cb)
        cb(ud, 0);
}

static void local_destroy(chan_layer *l)
{
    local_layer *L = ll(l);
    chan_tab_clear(&L->hist, hist_free);
    hr_map_free(L->presence);
    pthread_mutex_destroy(&L->mu);
    free(L);
}

static const chan_layer_ops local_ops = {
    .name = "local",
    .publish = local_publish,
    .subscribe = local_subscribe,
    .unsubscribe = local_unsubscribe,
    .history = local_history,
    .presence = local_presence,
    .control = local_control,
    .destroy = local_destroy,
};

chan_layer *chan_local_new(const chan_host *host)
{
    local_layer *L = hr_calloc(1, sizeof(*L));
    chan_layer_init(&L->base, &local_ops, host);
    pthread_mutex_init(&L->mu, NULL);
    chan_tab_init(&L->hist);
    hr_random_hex(L->universe, 8);
    L->presence = hr_map_new(presence_free);
    return &L->base;
}
