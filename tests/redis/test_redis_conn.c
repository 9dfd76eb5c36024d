/* test_redis_conn.c - the asynchronous RESP connection (chan_rconn,
 * channels/redis_conn.c) against real redis-server 7 processes this test
 * starts on free loopback ports: pipelined commands in order, AUTH with a
 * user and SELECT (and Redis' own refusals reaching the owner), connect
 * and reply deadlines, a server that dies, sharded pub/sub (SSUBSCRIBE,
 * smessage) beside plain pub/sub, and closing from inside callbacks. */
#include "channels/redis_topo.h"
#include "redis_proc.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>

static uv_loop_t loop;

/*---- What a connection told us -------------------------------------------------*/

#define MAX_PUSH 64

typedef struct pushed {
    char kind[16], channel[64], pattern[64], payload[64];
    size_t len;
    long long count;
    int solicited, message, has_channel;
} pushed;

typedef struct events {
    int ready, closed;
    char why[512];
    char refused[64], refused_text[300]; /* chan_rconn_refused in ops->closed */
    int npush;
    pushed push[MAX_PUSH];
    int close_on_push; /* close the connection from inside the Nth push */
    chan_rconn *self;
} events;

static void ev_ready(chan_rconn *c, void *ud)
{
    (void)c;
    ((events *)ud)->ready++;
}

static void ev_closed(chan_rconn *c, void *ud, const char *why)
{
    events *e = ud;
    const char *text = NULL, *what = chan_rconn_refused(c, &text);
    e->closed++;
    snprintf(e->why, sizeof(e->why), "%s", why);
    snprintf(e->refused, sizeof(e->refused), "%s", what ? what : "");
    snprintf(e->refused_text, sizeof(e->refused_text), "%s", text ? text : "");
}

static void copy_str(char *dst, size_t cap, const char *s, size_t n)
{
    if (!s) {
        dst[0] = '\0';
        return;
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static void ev_push(chan_rconn *c, void *ud, const chan_rpush *p)
{
    events *e = ud;
    if (e->npush < MAX_PUSH) {
        pushed *q = &e->push[e->npush];
        copy_str(q->kind, sizeof(q->kind), p->kind, strlen(p->kind));
        copy_str(q->channel, sizeof(q->channel), p->channel, p->channel_len);
        copy_str(q->pattern, sizeof(q->pattern), p->pattern, p->pattern_len);
        copy_str(q->payload, sizeof(q->payload), p->payload, p->len);
        q->has_channel = p->channel != NULL;
        q->len = p->len;
        q->count = p->count;
        q->solicited = p->solicited;
        q->message = p->message;
    }
    e->npush++;
    if (e->close_on_push && e->npush == e->close_on_push) {
        chan_rconn_close(c);
        e->self = NULL;
    }
}

static const chan_rconn_ops ev_ops = {ev_ready, ev_closed, ev_push};

static chan_rconn *open_conn(events *e, int port, const char *user, const char *password, int db,
                             int pubsub)
{
    chan_rconn_config cfg = {.host = "127.0.0.1",
                             .port = port,
                             .user = user,
                             .password = password,
                             .db = db,
                             .pubsub = pubsub,
                             .connect_timeout_ms = 5000,
                             .ops = &ev_ops,
                             .ud = e};
    memset(e, 0, sizeof(*e));
    e->self = chan_rconn_open(&loop, &cfg);
    return e->self;
}

/*---- Replies -------------------------------------------------------------------*/

typedef struct answer {
    int done;
    int null; /* no reply: the connection ended */
    int type;
    char str[512];
    size_t len;
    long long integer;
    size_t elements;
    char err[512];
    int seq;
} answer;

static int answered, order_ok = 1;

static void on_answer(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    answer *a = priv;
    (void)c;
    a->done = 1;
    a->seq = answered++;
    if (!r) {
        a->null = 1;
        snprintf(a->err, sizeof(a->err), "%s", err ? err : "");
        return;
    }
    a->type = r->type;
    a->integer = r->integer;
    a->elements = r->elements;
    a->len = r->len;
    if (r->str)
        copy_str(a->str, sizeof(a->str), r->str, r->len);
}

static int cmd(chan_rconn *c, answer *a, const char *arg0, ...)
{
    const char *argv[16];
    int argc = 0;
    va_list ap;
    va_start(ap, arg0);
    for (const char *s = arg0; s && argc < 16; s = va_arg(ap, const char *))
        argv[argc++] = s;
    va_end(ap);
    memset(a, 0, sizeof(*a));
    return chan_rconn_command(c, on_answer, a, argc, argv, NULL);
}

/* Replies of the pipelined test: each must come in the order asked. */
typedef struct seq_answer {
    int want;
    int got;
    char value[32];
} seq_answer;

static int seq_next, seq_done;

static void on_seq(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    seq_answer *a = priv;
    (void)c;
    (void)err;
    if (a->want != seq_next++)
        order_ok = 0;
    a->got = 1;
    if (r && r->type == REDIS_REPLY_STRING)
        copy_str(a->value, sizeof(a->value), r->str, r->len);
    seq_done++;
}

static void finish_loop(void)
{
    CHECK(run_to_empty(&loop, 10000));
}

/*---- Tests -----------------------------------------------------------------------*/

/* Thousands of commands queued before the connection is even up come back
 * in order; binary values survive; Redis' own error text reaches us. */
static void test_pipelined_commands(void)
{
    redis_proc *rp = redis_start(NULL, NULL);
    events e;
    chan_rconn *c = open_conn(&e, rp->port, NULL, NULL, 0, 0);
    enum { N = 2000 };
    seq_answer *a = calloc(2 * N, sizeof(*a));
    char key[32], val[32];
    seq_next = seq_done = 0;
    order_ok = 1;
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        const char *set[3] = {"SET", key, val}, *get[2] = {"GET", key};
        a[2 * i].want = 2 * i;
        a[2 * i + 1].want = 2 * i + 1;
        CHECK(chan_rconn_command(c, on_seq, &a[2 * i], 3, set, NULL) == 0);
        CHECK(chan_rconn_command(c, on_seq, &a[2 * i + 1], 2, get, NULL) == 0);
    }
    CHECK(chan_rconn_waiting(c) == 2 * N && !chan_rconn_ready(c));
    static const char bin[] = "a\0b\r\nc";
    const char *setb[3] = {"SET", "bin", bin};
    size_t lens[3] = {3, 3, sizeof(bin) - 1};
    answer sb, gb, bad;
    memset(&sb, 0, sizeof(sb));
    CHECK(chan_rconn_command(c, on_answer, &sb, 3, setb, lens) == 0);
    cmd(c, &gb, "GET", "bin", NULL);
    cmd(c, &bad, "NOSUCHCOMMAND", "x", NULL);
    CHECK(run_until(&loop, &bad.done, 20000));
    CHECK(e.ready == 1 && !e.closed && chan_rconn_ready(c));
    CHECK(seq_done == 2 * N && order_ok);
    CHECK(!strcmp(a[1].value, "v0") && !strcmp(a[2 * N - 1].value, "v1999"));
    CHECK(gb.type == REDIS_REPLY_STRING && gb.len == sizeof(bin) - 1 &&
          !memcmp(gb.str, bin, gb.len));
    CHECK(bad.type == REDIS_REPLY_ERROR && !strncmp(bad.str, "ERR unknown command", 19));
    CHECK(chan_rconn_waiting(c) == 0);
    CHECK(!strncmp(chan_rconn_peer(c), "127.0.0.1:", 10) &&
          atoi(chan_rconn_peer(c) + 10) == rp->port);
    /* chan_rconn_flush: what was queued leaves now, before the loop runs
     * again (another client sees it meanwhile) */
    answer fl;
    cmd(c, &fl, "SET", "flushed", "1", NULL);
    chan_rconn_flush(c);
    redisContext *s = redis_sync(rp);
    int seen = 0;
    for (int i = 0; i < 500 && !seen; i++) {
        redisReply *r = redisCommand(s, "GET flushed");
        seen = r && r->type == REDIS_REPLY_STRING;
        freeReplyObject(r);
        if (!seen)
            usleep(10000);
    }
    CHECK(seen);
    redisFree(s);
    CHECK(run_until(&loop, &fl.done, 10000) && fl.type == REDIS_REPLY_STATUS);
    chan_rconn_close(c);
    CHECK(e.closed == 0); /* the owner's close is not reported back */
    finish_loop();
    free(a);
    redis_stop(rp);
}

/* AUTH with an ACL user, SELECT and CLIENT SETNAME happen before any of
 * the owner's commands; a refusal ends the connection with Redis' text. */
static void test_auth_select(void)
{
    redis_proc *rp = redis_start("pw", NULL);
    redisReply *r = redis_do(rp, "ACL SETUSER alice on >apw ~* &* +@all");
    CHECK(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);

    /* the right user and password, database 3, a name */
    events e;
    chan_rconn_config cfg = {.host = "127.0.0.1",
                             .port = rp->port,
                             .user = "alice",
                             .password = "apw",
                             .db = 3,
                             .client_name = "herald-test-conn",
                             .ops = &ev_ops,
                             .ud = &e};
    memset(&e, 0, sizeof(e));
    chan_rconn *c = chan_rconn_open(&loop, &cfg);
    answer set, who;
    cmd(c, &set, "SET", "x", "in-db-3", NULL);
    cmd(c, &who, "ACL", "WHOAMI", NULL);
    CHECK(run_until(&loop, &who.done, 10000));
    CHECK(e.ready == 1 && set.type == REDIS_REPLY_STATUS && !strcmp(who.str, "alice"));
    redisContext *s = redis_sync(rp);
    r = redisCommand(s, "SELECT 3");
    freeReplyObject(r);
    r = redisCommand(s, "GET x");
    CHECK(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "in-db-3"));
    freeReplyObject(r);
    r = redisCommand(s, "CLIENT LIST");
    CHECK(r && r->type == REDIS_REPLY_STRING && strstr(r->str, "name=herald-test-conn"));
    freeReplyObject(r);
    redisFree(s);
    chan_rconn_close(c);

    /* a wrong password: nothing of the owner's runs, everyone hears why */
    c = open_conn(&e, rp->port, "alice", "wrong", 0, 0);
    answer get;
    cmd(c, &get, "GET", "x", NULL);
    CHECK(run_until(&loop, &e.closed, 10000));
    CHECK(!e.ready && strstr(e.why, "AUTH refused") && strstr(e.why, "WRONGPASS"));
    CHECK(!strcmp(e.refused, "AUTH") && !strncmp(e.refused_text, "WRONGPASS", 9));
    CHECK(get.done && get.null && !strcmp(get.err, e.why));
    CHECK(chan_rconn_command(c, on_answer, &get, 1, (const char *[]){"PING"}, NULL) < 0);
    chan_rconn_close(c);

    /* no password: Redis answers each command NOAUTH, and we pass it on */
    c = open_conn(&e, rp->port, NULL, NULL, 0, 0);
    cmd(c, &get, "GET", "x", NULL);
    CHECK(run_until(&loop, &get.done, 10000));
    CHECK(e.ready && get.type == REDIS_REPLY_ERROR && !strncmp(get.str, "NOAUTH", 6));
    chan_rconn_close(c);

    /* a database that does not exist */
    c = open_conn(&e, rp->port, NULL, "pw", 99999, 0);
    CHECK(run_until(&loop, &e.closed, 10000));
    CHECK(!e.ready && strstr(e.why, "SELECT refused") && strstr(e.why, "out of range"));
    CHECK(!strcmp(e.refused, "SELECT") && strstr(e.refused_text, "out of range"));
    chan_rconn_close(c);
    finish_loop();
    redis_stop(rp);
}

/* Nobody listening, a server that never answers, names. */
static void test_connect_failures(void)
{
    events e;
    int port = test_free_port();
    chan_rconn *c = open_conn(&e, port, NULL, NULL, 0, 0);
    answer a;
    cmd(c, &a, "PING", NULL);
    CHECK(run_until(&loop, &e.closed, 10000));
    CHECK(!e.ready && strstr(e.why, "connect failed") && strstr(e.why, "refused"));
    CHECK(e.refused[0] == '\0'); /* a refused connect is no refused setup */
    CHECK(a.done && a.null);
    chan_rconn_close(c);

    /* accepted by the kernel, never answered: the setup deadline */
    int silent_port, fd = test_silent_listener(&silent_port);
    chan_rconn_config cfg = {.host = "127.0.0.1",
                             .port = silent_port,
                             .password = "pw",
                             .connect_timeout_ms = 300,
                             .ops = &ev_ops,
                             .ud = &e};
    memset(&e, 0, sizeof(e));
    c = chan_rconn_open(&loop, &cfg);
    CHECK(run_until(&loop, &e.closed, 10000));
    CHECK(!e.ready && strstr(e.why, "not connected within 300 ms"));
    chan_rconn_close(c);

    /* no setup, so ready at once; then the reply deadline (a connect
     * deadline of its own, so a slow connect cannot pass for it) */
    cfg.password = NULL;
    cfg.connect_timeout_ms = 10000;
    cfg.reply_timeout_ms = 300;
    memset(&e, 0, sizeof(e));
    c = chan_rconn_open(&loop, &cfg);
    cmd(c, &a, "PING", NULL);
    CHECK(run_until(&loop, &e.closed, 10000));
    CHECK(e.ready && strstr(e.why, "no reply within 300 ms") && a.null);
    chan_rconn_close(c);
    close(fd);

    /* no address at all, reported from the loop like any failure */
    cfg.host = "";
    memset(&e, 0, sizeof(e));
    c = chan_rconn_open(&loop, &cfg);
    CHECK(!e.closed);
    CHECK(run_until(&loop, &e.closed, 10000));
    CHECK(strstr(e.why, "no such address") != NULL);
    chan_rconn_close(c);

    /* a name resolved on the thread pool */
    redis_proc *rp = redis_start(NULL, NULL);
    cfg.host = "localhost";
    cfg.port = rp->port;
    memset(&e, 0, sizeof(e));
    c = chan_rconn_open(&loop, &cfg);
    cmd(c, &a, "PING", NULL);
    CHECK(run_until(&loop, &a.done, 10000));
    CHECK(e.ready && a.type == REDIS_REPLY_STATUS && !strcmp(a.str, "PONG"));
    chan_rconn_close(c);
    finish_loop();
    redis_stop(rp);
}

static int blocked_clients(redis_proc *rp)
{
    redisReply *r = redis_do(rp, "INFO clients");
    const char *p = r && r->str ? strstr(r->str, "blocked_clients:") : NULL;
    int n = p ? atoi(p + 16) : -1;
    if (r)
        freeReplyObject(r);
    return n;
}

static redis_proc *g_rp;

static int one_blocked(void *ctx)
{
    (void)ctx;
    return blocked_clients(g_rp) == 1;
}

/* The server is SIGKILLed with a command waiting: the owner hears it once,
 * the waiting command is answered without a reply. */
static void test_server_dies(void)
{
    redis_proc *rp = redis_start(NULL, NULL);
    events e;
    chan_rconn *c = open_conn(&e, rp->port, NULL, NULL, 0, 0);
    answer blpop;
    cmd(c, &blpop, "BLPOP", "q", "0", NULL);
    g_rp = rp;
    CHECK(run_while_not(&loop, one_blocked, NULL, 10000));
    redis_kill(rp);
    CHECK(run_until(&loop, &e.closed, 10000));
    CHECK(e.closed == 1 && blpop.null && !strcmp(blpop.err, e.why));
    CHECK(strstr(e.why, "closed the connection") || strstr(e.why, "reset"));
    chan_rconn_close(c);
    finish_loop();
    redis_stop(rp);
}

static int find_push(const events *e, const char *kind, const char *channel, int from)
{
    for (int i = from; i < e->npush && i < MAX_PUSH; i++)
        if (!strcmp(e->push[i].kind, kind) && !strcmp(e->push[i].channel, channel))
            return i;
    return -1;
}

static int g_before;
static events *g_events;

static int later_message_on_a(void *ctx)
{
    (void)ctx;
    return find_push(g_events, "smessage", "a", g_before) >= 0;
}

/* SSUBSCRIBE and smessage, beside SUBSCRIBE / PSUBSCRIBE and PING on the
 * same connection: what hiredis 0.14's async API aborts on. */
static void test_sharded_pubsub(void)
{
    redis_proc *rp = redis_start(NULL, NULL);
    events pe, se;
    chan_rconn *pub = open_conn(&pe, rp->port, NULL, NULL, 0, 0);
    chan_rconn *sub = open_conn(&se, rp->port, NULL, NULL, 0, 1);
    answer ss, s2, ps, ping, a;
    CHECK(cmd(pub, &a, "SSUBSCRIBE", "a", NULL) < 0); /* not a pub/sub connection */
    CHECK(cmd(sub, &a, "SUNSUBSCRIBE", NULL) < 0);    /* replies cannot be matched */
    CHECK(cmd(sub, &ss, "SSUBSCRIBE", "a", "b", NULL) == 0);
    CHECK(cmd(sub, &s2, "SUBSCRIBE", "c", NULL) == 0);
    CHECK(cmd(sub, &ps, "PSUBSCRIBE", "p*", NULL) == 0);
    CHECK(cmd(sub, &ping, "PING", NULL) == 0);
    CHECK(run_until(&loop, &ping.done, 10000));
    /* one answer per command, after all of its confirmations */
    CHECK(ss.done && ss.type == REDIS_REPLY_ARRAY && ss.elements == 3 && s2.done && ps.done);
    CHECK(ss.seq < s2.seq && s2.seq < ps.seq && ps.seq < ping.seq);
    CHECK(ping.type == REDIS_REPLY_ARRAY && ping.elements == 2); /* ["pong", ""] */
    CHECK(se.npush == 4);
    CHECK(!strcmp(se.push[0].kind, "ssubscribe") && !strcmp(se.push[0].channel, "a") &&
          se.push[0].count == 1 && se.push[0].solicited && !se.push[0].message);
    CHECK(!strcmp(se.push[1].channel, "b") && se.push[1].count == 2 && se.push[1].solicited);
    CHECK(!strcmp(se.push[2].kind, "subscribe") && !strcmp(se.push[3].kind, "psubscribe") &&
          !strcmp(se.push[3].pattern, "p*"));

    /* messages of all three kinds; binary payloads */
    const char *sp[3] = {"SPUBLISH", "a", "x\0y"};
    size_t sl[3] = {8, 1, 3};
    answer r1, r2, r3, un, last;
    memset(&r1, 0, sizeof(r1));
    CHECK(chan_rconn_command(pub, on_answer, &r1, 3, sp, sl) == 0);
    cmd(pub, &r2, "PUBLISH", "c", "plain", NULL);
    cmd(pub, &r3, "PUBLISH", "p1", "pattern", NULL);
    /* the three ran (their messages are queued for `sub` before anything
     * sent on it next is answered): two connections, no order otherwise */
    CHECK(run_until(&loop, &r3.done, 10000));
    CHECK(cmd(sub, &un, "SUNSUBSCRIBE", "b", NULL) == 0);
    CHECK(run_until(&loop, &un.done, 10000));
    int m = find_push(&se, "smessage", "a", 0);
    CHECK(r1.integer == 1 && m >= 0 && se.push[m].message && se.push[m].len == 3 &&
          !memcmp(se.push[m].payload, "x\0y", 3));
    CHECK(find_push(&se, "message", "c", 0) >= 0);
    int pm = find_push(&se, "pmessage", "p1", 0);
    CHECK(pm >= 0 && !strcmp(se.push[pm].pattern, "p*") && !strcmp(se.push[pm].payload, "pattern"));
    int u = find_push(&se, "sunsubscribe", "b", 0);
    CHECK(u >= 0 && se.push[u].solicited && se.push[u].count == 1);
    /* b is gone: a publication there never arrives, one on a after it does */
    g_before = se.npush;
    g_events = &se;
    cmd(pub, &r1, "SPUBLISH", "b", "lost", NULL);
    cmd(pub, &last, "SPUBLISH", "a", "last", NULL);
    CHECK(run_while_not(&loop, later_message_on_a, NULL, 10000));
    CHECK(find_push(&se, "smessage", "b", 0) < 0);
    CHECK(r1.integer == 0);
    chan_rconn_close(sub);
    chan_rconn_close(pub);
    finish_loop();
    redis_stop(rp);
}

static int closer_calls;

static void close_in_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    (void)priv;
    (void)r;
    (void)err;
    if (closer_calls++ == 0)
        chan_rconn_close(c);
}

/* The owner may end a connection from inside its callbacks. */
static void test_close_from_callbacks(void)
{
    redis_proc *rp = redis_start(NULL, NULL);
    events e;
    chan_rconn *c = open_conn(&e, rp->port, NULL, NULL, 0, 0);
    answer a, b;
    const char *ping[1] = {"PING"};
    closer_calls = 0;
    CHECK(chan_rconn_command(c, close_in_reply, NULL, 1, ping, NULL) == 0);
    cmd(c, &a, "PING", NULL);
    cmd(c, &b, "PING", NULL);
    CHECK(run_until(&loop, &b.done, 10000));
    CHECK(closer_calls == 1 && a.null && b.null && !strcmp(a.err, "connection closed"));
    CHECK(e.ready == 1 && e.closed == 0);

    /* ... and from a push, in the middle of a command's confirmations */
    c = open_conn(&e, rp->port, NULL, NULL, 0, 1);
    e.close_on_push = 1;
    cmd(c, &a, "SSUBSCRIBE", "a", "b", "c", NULL);
    CHECK(run_until(&loop, &a.done, 10000));
    CHECK(a.null && e.npush == 1 && e.closed == 0);
    finish_loop();
    redis_stop(rp);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    RUN(test_pipelined_commands);
    RUN(test_auth_select);
    RUN(test_connect_failures);
    RUN(test_server_dies);
    RUN(test_sharded_pubsub);
    RUN(test_close_from_callbacks);
    CHECK(uv_loop_close(&loop) == 0); /* every handle of every connection was closed */
    return TEST_DONE();
}
