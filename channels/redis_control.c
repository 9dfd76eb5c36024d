/*
 * redis_control.c - control messages between nodes (server-side membership,
 * disconnects, revocations) on the control topic of the first shard: signed
 * with HMAC-SHA256 under a key derived from the cluster's secret, stamped,
 * and never obeyed twice. See redis_internal.h.
 */
#include "redis_internal.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*---- Control messages (home thread) -----------------------------------------*/

/* Wall-clock milliseconds: control messages are stamped by one node and
 * checked by another. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* HMAC-SHA256(key, topic "\n" body) as 64 hex digits into hex[65]: the
 * topic binds a message to its deployment (prefix). */
static void control_mac(const redis_layer *L, const unsigned char key[32], const char *body,
                        size_t len, char hex[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    size_t tlen = strlen(L->control_topic);
    unsigned char *msg = hr_malloc(tlen + 1 + len);
    memcpy(msg, L->control_topic, tlen);
    msg[tlen] = '\n';
    memcpy(msg + tlen + 1, body, len);
    HMAC(EVP_sha256(), key, 32, msg, tlen + 1 + len, mac, &mlen);
    free(msg);
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

/* Logs a refused control message, at most once a second (anyone allowed to
 * publish on the topic could flood the log otherwise). */
static void control_refused(redis_layer *L, const char *why)
{
    uint64_t now = hr_now_ms();
    atomic_fetch_add(&L->control_rejected, 1);
    if (now - L->ctl_logged_ms < 1000 && L->ctl_logged_ms)
        return;
    L->ctl_logged_ms = now;
    chan_log(&L->base, CHAN_LOG_WARN, "control_rejected",
             "dropped a control message: %s (herald_redis_control_rejected_total)", why);
}

/* Forgets nonces whose window has passed. */
static void control_sweep(redis_layer *L, int64_t now)
{
    const char *key;
    size_t klen;
    void *val;
    char **dead = NULL;
    size_t ndead = 0;
    for (size_t it = 0; hr_map_next(L->ctl_seen, &it, &key, &klen, &val);) {
        if ((int64_t)(intptr_t)val < now) {
            dead = hr_realloc(dead, (ndead + 1) * sizeof(*dead));
            dead[ndead++] = hr_strndup(key, klen);
        }
    }
    for (size_t i = 0; i < ndead; i++) {
        hr_map_del(L->ctl_seen, dead[i], strlen(dead[i]));
        free(dead[i]);
    }
    free(dead);
}

/* Control messages make nodes add users to channels, disconnect and
 * revoke them: a node obeys only what another node signed with the
 * cluster's secret ("<mac> <JSON>"), stamped within CONTROL_WINDOW_MS of
 * now, and never the same nonce twice. Publishing on the topic is not
 * enough: backends that publish through Redis may. */
void rd_control_receive(redis_layer *L, const char *payload, size_t len)
{
    char want[65];
    const char *body = payload + 65;
    size_t blen = len > 65 ? len - 65 : 0;
    int signed_ok = 0;
    if (len <= 65 || payload[64] != ' ') {
        control_refused(L, "not signed");
        return;
    }
    for (size_t i = 0; i < L->nctl_keys; i++) {
        control_mac(L, L->ctl_keys[i], body, blen, want);
        signed_ok |= hr_secure_eq(want, 64, payload, 64);
    }
    if (!signed_ok) {
        control_refused(L, "bad signature (not from a node with this cluster's secret)");
        return;
    }
    json_t *o = json_loadb(body, blen, 0, NULL);
    json_t *ts = json_object_get(o, "ts");
    const char *nonce = json_string_value(json_object_get(o, "nonce"));
    int64_t now = wall_ms();
    if (!json_is_integer(ts) || !nonce || !*nonce || strlen(nonce) > 64) {
        control_refused(L, "no timestamp or nonce");
        json_decref(o);
        return;
    }
    int64_t t = json_integer_value(ts);
    if (t < now - CONTROL_WINDOW_MS || t > now + CONTROL_WINDOW_MS) {
        control_refused(L, "outside the time window (replayed, or the nodes' clocks disagree)");
        json_decref(o);
        return;
    }
    if (hr_map_get(L->ctl_seen, nonce, strlen(nonce))) {
        control_refused(L, "replayed");
        json_decref(o);
        return;
    }
    if (hr_map_count(L->ctl_seen) >= L->ctl_sweep_at) {
        control_sweep(L, now);
        L->ctl_sweep_at = 2 * hr_map_count(L->ctl_seen) + 1024;
    }
    hr_map_put(L->ctl_seen, nonce, strlen(nonce), (void *)(intptr_t)(t + CONTROL_WINDOW_MS + 1));

    const char *op = json_string_value(json_object_get(o, "op"));
    chan_control c = {0};
    c.user = json_string_value(json_object_get(o, "user"));
    c.channel = json_string_value(json_object_get(o, "channel"));
    c.code = (int)json_integer_value(json_object_get(o, "code"));
    c.at = json_integer_value(json_object_get(o, "at"));
    if (op && !strcmp(op, "member_add"))
        c.op = CHAN_CTL_MEMBER_ADD;
    else if (op && !strcmp(op, "member_remove"))
        c.op = CHAN_CTL_MEMBER_REMOVE;
    else if (op && !strcmp(op, "disconnect"))
        c.op = CHAN_CTL_DISCONNECT;
    else if (op && !strcmp(op, "revoke"))
        c.op = CHAN_CTL_REVOKE;
    if (!c.op || !c.user ||
        ((c.op == CHAN_CTL_MEMBER_ADD || c.op == CHAN_CTL_MEMBER_REMOVE) &&
         (!c.channel || !chan_name_valid(c.channel, strlen(c.channel), 255)))) {
        atomic_fetch_add(&L->bad_messages, 1);
        chan_log(&L->base, CHAN_LOG_WARN, "control_malformed",
                 "dropped a malformed control message");
    } else {
        L->base.host.control(L->base.host.ud, &c);
    }
    json_decref(o);
}

static void status_reply(chan_rconn *conn, void *priv, const redisReply *r, const char *err)
{
    rd_req *q = priv;
    chan_status_cb cb = (chan_status_cb)(void (*)(void))q->cb;
    (void)conn, (void)err;
    if (!rd_reply_check(&q->lp->L->shards[0], r))
        rd_log_reply_error(q->lp->L, "control message", r);
    if (rd_req_done(q) && cb)
        cb(q->ud, !r || r->type == REDIS_REPLY_ERROR ? -EAGAIN : 0);
    free(q);
}

static const char *control_op_name(chan_control_op op)
{
    switch (op) {
    case CHAN_CTL_MEMBER_ADD:
        return "member_add";
    case CHAN_CTL_MEMBER_REMOVE:
        return "member_remove";
    case CHAN_CTL_DISCONNECT:
        return "disconnect";
    case CHAN_CTL_REVOKE:
        return "revoke";
    case CHAN_CTL_RESYNC:
        break;
    }
    return "unknown";
}

/* Signs and publishes c on the first shard's control topic, from the
 * caller's loop. */
void rd_control(chan_layer *l, unsigned thread, const chan_control *c, chan_status_cb cb, void *ud)
{
    redis_layer *L = rd_layer(l);
    rd_loop *lp = &L->loops[thread];
    shard *sh = &L->shards[0];
    if (!rd_route_up(lp, sh, NULL)) {
        if (cb)
            cb(ud, -EAGAIN);
        return;
    }
    json_t *o =
        json_pack("{s:s, s:s}", "op", control_op_name(c->op), "user", c->user ? c->user : "");
    if (c->channel)
        json_object_set_new(o, "channel", json_string(c->channel));
    if (c->code)
        json_object_set_new(o, "code", json_integer(c->code));
    if (c->at)
        json_object_set_new(o, "at", json_integer(c->at));
    char nonce[33];
    hr_random_hex(nonce, 16);
    json_object_set_new(o, "ts", json_integer(wall_ms()));
    json_object_set_new(o, "nonce", json_string(nonce));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body)
        abort();
    size_t blen = strlen(body);
    char *text = hr_malloc(65 + blen + 1);
    control_mac(L, L->ctl_keys[0], body, blen, text);
    text[64] = ' ';
    memcpy(text + 65, body, blen + 1);
    free(body);
    const char *argv[3] = {rd_publish_cmd(L), L->control_topic, text};
    rd_req *q = rd_req_new(lp, (void *)cb, ud, sizeof(*q));
    int rc = rd_lconn_cmd(lp, sh, NULL, status_reply, q, 3, argv, NULL);
    free(text);
    if (rc < 0) {
        rd_req_done(q);
        free(q);
        if (cb)
            cb(ud, rc);
    }
}
