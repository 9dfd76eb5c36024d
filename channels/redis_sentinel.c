/*
 * redis_sentinel.c - finds the master a set of Redis Sentinels name and
 * follows it through failovers (see redis_topo.h for the contract).
 *
 * Three connections at most, each a chan_rconn: `q` asks one sentinel
 * (SENTINEL get-master-addr-by-name), `v` checks a candidate master
 * (ROLE), `sub` listens to one sentinel's +switch-master. A callback from
 * a connection we have let go of is recognised by comparing it with the
 * one we hold (we forget our pointer before closing), as redis.c does
 * with hiredis contexts.
 *
 * Why ROLE: a sentinel's answer can be stale (it has not learnt of a
 * failover yet, or was partitioned) and Herald must not write history
 * into a replica (READONLY) or, worse, into a demoted master that another
 * sentinel majority has already replaced.
 */
#include "redis_topo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_POLL_MS 10000

enum { VIA_ROUND, VIA_SWITCH };

struct chan_sentinel {
    uv_loop_t *loop;
    hr_redis_addr *sentinels; /* host, port */
    int n;
    char *name, *suser, *spass, *user, *pass, *client_name;
    unsigned connect_timeout_ms, poll_ms;
    void (*master_cb)(void *ud, const char *host, int port);
    chan_rlog_fn log;
    void *ud;

    int stopping;
    int timers; /* open uv timers: the struct is freed when none is left */
    uv_timer_t retry, poll, sub_retry;

    /* discovery */
    int round; /* a round over the sentinels is under way */
    int tried; /* sentinels asked in this round */
    int cur;   /* the sentinel to ask (the last good one first) */
    unsigned attempt;
    chan_rconn *q;
    int q_idx;
    int polling; /* q's question is a poll, not part of a round */
    chan_rconn *v;
    int v_via;
    char cand_host[256];
    int cand_port;

    /* what the owner was told */
    char *master_host;
    int master_port;

    /* +switch-master */
    chan_rconn *sub;
    int sub_idx, sub_ok, sub_lost;
    unsigned sub_attempt;
};

static void ask(chan_sentinel *s);
static void round_start(chan_sentinel *s);
static void sub_start(chan_sentinel *s);

static const char *sentinel_name(chan_sentinel *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, strchr(s->sentinels[i].host, ':') ? "[%s]:%d" : "%s:%d",
             s->sentinels[i].host, s->sentinels[i].port);
    return buf;
}

static void drop(chan_rconn **c)
{
    chan_rconn *old = *c;
    *c = NULL; /* before closing: its callbacks then see it is not ours */
    chan_rconn_close(old);
}

static chan_rconn *open_to(chan_sentinel *s, const char *host, int port, int sentinel, int pubsub,
                           const chan_rconn_ops *ops)
{
    chan_rconn_config cfg = {.host = host,
                             .port = port,
                             .user = sentinel ? s->suser : s->user,
                             .password = sentinel ? s->spass : s->pass,
                             .client_name = s->client_name,
                             .pubsub = pubsub,
                             .connect_timeout_ms = s->connect_timeout_ms,
                             .reply_timeout_ms = pubsub ? 0 : s->connect_timeout_ms,
                             .ops = ops,
                             .ud = s};
    return chan_rconn_open(s->loop, &cfg);
}

/*---- What the owner hears ----------------------------------------------------------*/

static void report_gone(chan_sentinel *s)
{
    if (!s->master_host)
        return;
    free(s->master_host);
    s->master_host = NULL;
    s->master_port = 0;
    if (!s->stopping)
        s->master_cb(s->ud, NULL, 0);
}

static void on_poll(uv_timer_t *t);

/* host:port said ROLE master: tell the owner if it is news, then follow. */
static void confirmed(chan_sentinel *s, const char *host, int port)
{
    s->round = 0;
    s->attempt = 0;
    uv_timer_stop(&s->retry);
    uv_timer_start(&s->poll, on_poll, s->poll_ms, s->poll_ms);
    sub_start(s);
    if (s->master_host && s->master_port == port && !strcmp(s->master_host, host))
        return;
    if (s->master_host)
        report_gone(s); /* a switch we learnt of by asking, not by +switch-master */
    if (s->stopping)
        return;
    s->master_host = hr_strdup(host);
    s->master_port = port;
    chan_rlog(s->log, s->ud, CHAN_RLOG_INFO, "sentinel_master", "%s: master %s is at %s:%d",
              s->name, s->name, host, port);
    s->master_cb(s->ud, s->master_host, port);
}

/*---- Checking a candidate with ROLE ----------------------------------------------------*/

static void v_closed(chan_rconn *c, void *ud, const char *why)
{
    (void)c;
    (void)ud;
    (void)why; /* the ROLE callback has the reason */
}

static const chan_rconn_ops v_ops = {NULL, v_closed, NULL};

/* The candidate failed the check: the next sentinel (in a round), or a
 * round (after a +switch-master whose new master does not check out). */
static void candidate_failed(chan_sentinel *s)
{
    if (s->v_via == VIA_ROUND) {
        s->tried++;
        s->cur = (s->cur + 1) % s->n;
        ask(s);
    } else {
        round_start(s);
    }
}

static void on_role(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    chan_sentinel *s = priv;
    if (c != s->v || s->stopping)
        return;
    drop(&s->v);
    const redisReply *role =
        r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 ? r->element[0] : NULL;
    if (role && role->type == REDIS_REPLY_STRING && role->len == 6 &&
        !memcmp(role->str, "master", 6)) {
        confirmed(s, s->cand_host, s->cand_port);
        return;
    }
    if (role && role->type == REDIS_REPLY_STRING)
        chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_stale",
                  "%s: %s:%d was named master but says it is a %.*s: asking another sentinel",
                  s->name, s->cand_host, s->cand_port, (int)role->len, role->str);
    else
        chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_master_check",
                  "%s: cannot check %s:%d with ROLE: %s", s->name, s->cand_host, s->cand_port,
                  r && r->type == REDIS_REPLY_ERROR ? r->str
                  : r                               ? "unexpected reply"
                                                    : err);
    candidate_failed(s);
}

static void check(chan_sentinel *s, const char *host, size_t hlen, int port, int via)
{
    if (s->v)
        drop(&s->v);
    if (hlen >= sizeof(s->cand_host))
        hlen = sizeof(s->cand_host) - 1;
    memcpy(s->cand_host, host, hlen);
    s->cand_host[hlen] = '\0';
    s->cand_port = port;
    s->v_via = via;
    s->v = open_to(s, s->cand_host, port, 0, 0, &v_ops);
    const char *argv[1] = {"ROLE"};
    chan_rconn_command(s->v, on_role, s, 1, argv, NULL);
}

/*---- Asking the sentinels ------------------------------------------------------------*/

static void q_closed(chan_rconn *c, void *ud, const char *why)
{
    chan_sentinel *s = ud;
    (void)why; /* a question waiting was answered with the reason first */
    if (c == s->q)
        drop(&s->q); /* lost while idle: the next question opens another */
}

static const chan_rconn_ops q_ops = {NULL, q_closed, NULL};

static void on_retry(uv_timer_t *t)
{
    round_start(t->data);
}

/* "ip", "port" from SENTINEL get-master-addr-by-name; 0 if not that. */
static int parse_addr(const redisReply *r, const char **host, size_t *hlen, int *port)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[0]->len == 0 || r->element[1]->len == 0 || r->element[1]->len > 5 ||
        strspn(r->element[1]->str, "0123456789") != r->element[1]->len)
        return 0;
    long p = atol(r->element[1]->str);
    if (p < 1 || p > 65535)
        return 0;
    *host = r->element[0]->str;
    *hlen = r->element[0]->len;
    *port = (int)p;
    return 1;
}

static void on_addr(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    chan_sentinel *s = priv;
    char sn[300];
    const char *host;
    size_t hlen;
    int port, polling = s->polling;
    if (c != s->q || s->stopping)
        return;
    s->polling = 0;
    sentinel_name(s, s->q_idx, sn, sizeof(sn));
    if (parse_addr(r, &host, &hlen, &port)) {
        if (!polling) {
            check(s, host, hlen, port, VIA_ROUND);
        } else if (!s->master_host || s->master_port != port || strlen(s->master_host) != hlen ||
                   memcmp(s->master_host, host, hlen)) {
            chan_rlog(s->log, s->ud, CHAN_RLOG_INFO, "sentinel_switch",
                      "%s: sentinel %s names another master: checking it", s->name, sn);
            report_gone(s);
            if (s->stopping)
                return; /* the owner stopped us from its callback */
            s->round = 1;
            s->tried = 0;
            check(s, host, hlen, port, VIA_ROUND);
        }
        return;
    }
    if (!r) { /* err names the sentinel */
        chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_unreachable", "%s: sentinel %s", s->name,
                  err);
        drop(&s->q);
    } else if (r->type == REDIS_REPLY_NIL) {
        chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_unknown_master",
                  "%s: sentinel %s does not know a master of that name", s->name, sn);
    } else {
        chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_bad_answer",
                  "%s: sentinel %s answered %s%.*s", s->name, sn,
                  r->type == REDIS_REPLY_ERROR ? "" : "something else than an address",
                  r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
                  r->type == REDIS_REPLY_ERROR ? r->str : "");
        drop(&s->q); /* perhaps not a sentinel: do not ask it again first */
    }
    if (polling) { /* the follower keeps its master; the next poll asks another */
        s->cur = (s->cur + 1) % s->n;
        return;
    }
    s->tried++;
    s->cur = (s->cur + 1) % s->n;
    ask(s);
}

/* Asks sentinel s->cur, or ends a round that found nothing. */
static void ask(chan_sentinel *s)
{
    char sn[300];
    if (s->stopping)
        return;
    if (s->tried >= s->n) {
        uint64_t ms = chan_backoff_ms(s->attempt++);
        chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_no_master",
                  "%s: no sentinel named a master that checks out; asking again in %llu ms",
                  s->name, (unsigned long long)ms);
        s->round = 0;
        uv_timer_start(&s->retry, on_retry, ms, 0);
        return;
    }
    if (s->q && s->q_idx != s->cur)
        drop(&s->q);
    if (!s->q) {
        s->q_idx = s->cur;
        s->q = open_to(s, s->sentinels[s->cur].host, s->sentinels[s->cur].port, 1, 0, &q_ops);
    }
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->name};
    if (chan_rconn_command(s->q, on_addr, s, 3, argv, NULL) < 0) {
        chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_unreachable", "%s: sentinel %s: %s",
                  s->name, sentinel_name(s, s->cur, sn, sizeof(sn)), "connection lost");
        drop(&s->q);
        s->tried++;
        s->cur = (s->cur + 1) % s->n;
        ask(s);
    }
}

static void round_start(chan_sentinel *s)
{
    if (s->stopping || s->round)
        return;
    uv_timer_stop(&s->retry);
    s->round = 1;
    s->tried = 0;
    s->polling = 0;
    ask(s);
}

/* Every poll_ms while following: asks the current sentinel once (a
 * missed +switch-master costs at most this long). */
static void on_poll(uv_timer_t *t)
{
    chan_sentinel *s = t->data;
    if (s->stopping || s->round || s->v || s->polling)
        return;
    if (!s->q) {
        s->q_idx = s->cur;
        s->q = open_to(s, s->sentinels[s->cur].host, s->sentinels[s->cur].port, 1, 0, &q_ops);
    }
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->name};
    s->polling = chan_rconn_command(s->q, on_addr, s, 3, argv, NULL) == 0;
    if (!s->polling) {
        drop(&s->q);
        s->cur = (s->cur + 1) % s->n;
    }
}

/*---- +switch-master --------------------------------------------------------------------*/

static void on_sub_retry(uv_timer_t *t)
{
    sub_start(t->data);
}

static void sub_closed(chan_rconn *c, void *ud, const char *why)
{
    chan_sentinel *s = ud;
    if (c != s->sub || s->stopping)
        return;
    drop(&s->sub);
    chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_sub_lost",
              "%s: lost the +switch-master subscription: sentinel %s", s->name, why);
    s->sub_lost = s->sub_lost || s->sub_ok;
    s->sub_ok = 0;
    s->sub_idx = (s->sub_idx + 1) % s->n;
    uv_timer_start(&s->sub_retry, on_sub_retry, chan_backoff_ms(s->sub_attempt++), 0);
}

/* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
static void on_switch(chan_sentinel *s, const char *p, size_t len)
{
    char buf[600], *f[5], *save = NULL;
    int n = 0;
    if (len >= sizeof(buf))
        return;
    memcpy(buf, p, len);
    buf[len] = '\0';
    for (char *t = strtok_r(buf, " ", &save); t && n < 5; t = strtok_r(NULL, " ", &save))
        f[n++] = t;
    if (n != 5 || strcmp(f[0], s->name))
        return;
    int port = atoi(f[4]);
    if (port < 1 || port > 65535)
        return;
    chan_rlog(s->log, s->ud, CHAN_RLOG_WARN, "sentinel_switch",
              "%s: +switch-master from %s:%s to %s:%d", s->name, f[1], f[2], f[3], port);
    report_gone(s);
    if (s->stopping)
        return;
    /* the announced master is checked at once; a question under way is
     * dropped (its answer may predate the switch) */
    drop(&s->q);
    s->round = s->polling = 0;
    uv_timer_stop(&s->retry);
    check(s, f[3], strlen(f[3]), port, VIA_SWITCH);
}

static void sub_push(chan_rconn *c, void *ud, const chan_rpush *p)
{
    chan_sentinel *s = ud;
    if (c != s->sub || s->stopping || !p->message)
        return;
    static const char topic[] = "+switch-master";
    if (p->channel_len == sizeof(topic) - 1 && !memcmp(p->channel, topic, sizeof(topic) - 1))
        on_switch(s, p->payload, p->len);
}

static void on_subscribed(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    chan_sentinel *s = priv;
    (void)err;
    if (c != s->sub || s->stopping || !r)
        return; /* a lost connection: sub_closed reports it */
    char sn[300], why[700];
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "%s: SUBSCRIBE refused: %s",
                 sentinel_name(s, s->sub_idx, sn, sizeof(sn)), r->str);
        sub_closed(c, s, why);
        return;
    }
    chan_rlog(s->log, s->ud, CHAN_RLOG_DEBUG, "sentinel_subscribed",
              "%s: following +switch-master on sentinel %s", s->name,
              sentinel_name(s, s->sub_idx, sn, sizeof(sn)));
    s->sub_ok = 1;
    s->sub_attempt = 0;
    if (s->sub_lost) { /* a switch may have happened meanwhile */
        s->sub_lost = 0;
        on_poll(&s->poll);
    }
}

static const chan_rconn_ops sub_ops = {NULL, sub_closed, sub_push};

static void sub_start(chan_sentinel *s)
{
    if (s->stopping || s->sub)
        return;
    s->sub =
        open_to(s, s->sentinels[s->sub_idx].host, s->sentinels[s->sub_idx].port, 1, 1, &sub_ops);
    const char *argv[2] = {"SUBSCRIBE", "+switch-master"};
    chan_rconn_command(s->sub, on_subscribed, s, 2, argv, NULL);
}

/*---- Life cycle --------------------------------------------------------------------------*/

chan_sentinel *chan_sentinel_start(uv_loop_t *loop, const chan_sentinel_config *cfg)
{
    if (!cfg->nsentinels || !cfg->master_name || !*cfg->master_name || !cfg->master)
        return NULL;
    chan_sentinel *s = hr_calloc(1, sizeof(*s));
    s->loop = loop;
    s->n = cfg->nsentinels;
    s->sentinels = hr_calloc((size_t)s->n, sizeof(*s->sentinels));
    for (int i = 0; i < s->n; i++) {
        s->sentinels[i].host = hr_strdup(cfg->sentinels[i].host);
        s->sentinels[i].port = cfg->sentinels[i].port;
    }
#define DUP(x) ((x) ? hr_strdup(x) : NULL)
    s->name = hr_strdup(cfg->master_name);
    s->suser = DUP(cfg->sentinel_user);
    s->spass = DUP(cfg->sentinel_password);
    s->user = DUP(cfg->user);
    s->pass = DUP(cfg->password);
    s->client_name = DUP(cfg->client_name);
#undef DUP
    s->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 2000;
    s->poll_ms = cfg->poll_ms ? cfg->poll_ms : DEFAULT_POLL_MS;
    s->master_cb = cfg->master;
    s->log = cfg->log;
    s->ud = cfg->ud;
    uv_timer_init(loop, &s->retry);
    uv_timer_init(loop, &s->poll);
    uv_timer_init(loop, &s->sub_retry);
    s->retry.data = s->poll.data = s->sub_retry.data = s;
    s->timers = 3;
    round_start(s);
    return s;
}

void chan_sentinel_recheck(chan_sentinel *s)
{
    if (!s || s->stopping)
        return;
    report_gone(s);
    if (s->stopping || s->round || (s->v && s->v_via == VIA_SWITCH))
        return; /* already looking */
    s->attempt = 0;
    round_start(s);
}

const char *chan_sentinel_master(const chan_sentinel *s, int *port)
{
    *port = s->master_port;
    return s->master_host;
}

static void on_timer_closed(uv_handle_t *h)
{
    chan_sentinel *s = h->data;
    if (--s->timers)
        return;
    hr_redis_addrs_free(s->sentinels, s->n);
    free(s->name);
    free(s->suser);
    free(s->spass);
    free(s->user);
    free(s->pass);
    free(s->client_name);
    free(s->master_host);
    free(s);
}

void chan_sentinel_stop(chan_sentinel *s)
{
    if (!s || s->stopping)
        return;
    s->stopping = 1;
    drop(&s->q);
    drop(&s->v);
    drop(&s->sub);
    uv_close((uv_handle_t *)&s->retry, on_timer_closed);
    uv_close((uv_handle_t *)&s->poll, on_timer_closed);
    uv_close((uv_handle_t *)&s->sub_retry, on_timer_closed);
}
