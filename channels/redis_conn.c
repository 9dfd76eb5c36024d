/*
 * redis_conn.c - an asynchronous RESP connection on a libuv loop (see
 * redis_topo.h): hiredis' redisReader parses, redisFormatCommandArgv
 * formats, and the I/O is a uv_tcp_t of our own.
 *
 * Why not hiredis' async API (redisAsyncContext + adapters/libuv.h, which
 * the Redis layer used before it moved to this): in 0.14.1 its reply
 * matching knows SUBSCRIBE and PSUBSCRIBE only, so an SSUBSCRIBE
 * confirmation or an `smessage` trips an assertion and aborts the process;
 * the libuv adapter drops poll errors,
 * so a refused connect is never reported; and redisAsyncConnect resolves
 * names with a blocking getaddrinfo. Working around all three inside
 * hiredis' context (custom read path, reply matching of our own) would
 * leave little of it, so this file keeps only hiredis' pure parts.
 *
 * Requests are a FIFO: Redis answers in order. On a pub/sub connection
 * the replies that are pushes (messages, and subscription confirmations
 * beyond what a command asked for) are told apart by their first element,
 * which is unambiguous there: in RESP2 a subscribed connection accepts
 * only subscription commands and PING (whose reply is ["pong", ""]).
 *
 * Lifetime: the struct lives until the owner called chan_rconn_close AND
 * libuv has finished with every handle and request (close callbacks,
 * cancelled writes, a cancelled getaddrinfo) AND no callback of ours is on
 * the stack (depth), so the owner may close from inside any callback.
 */
#include "redis_topo.h"

#include <errno.h>
#include <linux/sockios.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define READ_CHUNK 16384

enum { ST_RESOLVING, ST_CONNECTING, ST_SETUP, ST_READY, ST_CLOSED };

/* What a subscription command expects back. */
typedef struct sub_expect {
    char kind[16];  /* the confirmation's kind, lowercase ("ssubscribe") */
    char **names;   /* its channel arguments, in order */
    size_t n, next; /* names[next] is the next confirmation to come */
} sub_expect;

typedef struct request {
    struct request *next;
    chan_rconn_reply_fn cb;
    void *priv;
    int internal; /* a setup command: a refusal ends the connection */
    const char *what;
    uint64_t sent_ms;
    sub_expect *sub;
} request;

struct chan_rconn {
    uv_loop_t *loop;
    chan_rconn_config cfg; /* strings below are our copies */
    char *host, *user, *password, *client_name;
    char peer[300];
    int state;
    int released;      /* the owner called chan_rconn_close */
    int depth;         /* our callbacks on the stack */
    int handles;       /* uv handles not closed yet */
    int reqs;          /* uv requests in flight (getaddrinfo, connect, write) */
    int handles_close; /* uv_close was called */
    int pending_setup; /* setup replies still to come */
    int resolving;     /* the getaddrinfo request is in flight */
    char early[400];   /* a failure found in chan_rconn_open, reported from the loop */

    const char *refused_what; /* the setup command Redis refused, or NULL */
    char refused_text[300];   /* ... and Redis' words */

    uv_tcp_t tcp;
    uv_timer_t timer; /* the connect deadline, then the reply deadline */
    uv_prepare_t flush;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_write_t wreq;
    int writing;
    hr_buf out;     /* formatted, to be written */
    hr_buf held;    /* given before ready: written once setup succeeded */
    hr_buf inwrite; /* the bytes of the write in flight */
    redisReader *reader;
    request *head, *tail, *held_head, *held_tail;
    size_t nwaiting;
    char rbuf[READ_CHUNK];
};

static void maybe_free(chan_rconn *c);
static void schedule_flush(chan_rconn *c);

/*---- Requests ----------------------------------------------------------------*/

static void request_free(request *r)
{
    if (r->sub) {
        for (size_t i = 0; i < r->sub->n; i++)
            free(r->sub->names[i]);
        free(r->sub->names);
        free(r->sub);
    }
    free(r);
}

static void append_request(request **head, request **tail, request *r)
{
    r->next = NULL;
    if (*tail)
        (*tail)->next = r;
    else
        *head = r;
    *tail = r;
}

static request *pop_request(chan_rconn *c)
{
    request *r = c->head;
    if (r) {
        c->head = r->next;
        if (!c->head)
            c->tail = NULL;
        c->nwaiting--;
    }
    return r;
}

/* Answers r (reply or failure) and frees it. */
static void answer(chan_rconn *c, request *r, const redisReply *reply, const char *err)
{
    if (r->cb) {
        c->depth++;
        r->cb(c, r->priv, reply, err);
        c->depth--;
    }
    request_free(r);
}

/*---- Ending ------------------------------------------------------------------*/

static void on_handle_closed(uv_handle_t *h)
{
    chan_rconn *c = h->data;
    c->handles--;
    maybe_free(c);
}

static void maybe_free(chan_rconn *c)
{
    if (!c->released || c->handles || c->reqs || c->depth)
        return;
    redisReaderFree(c->reader);
    hr_buf_reset(&c->out);
    hr_buf_reset(&c->held);
    hr_buf_reset(&c->inwrite);
    free(c->host);
    free(c->user);
    free(c->password);
    free(c->client_name);
    free(c);
}

/* Stops all I/O, answers every waiting command with `why`, and tells the
 * owner (unless the owner itself ended it). */
static void end(chan_rconn *c, const char *why, int tell)
{
    if (c->state == ST_CLOSED)
        return;
    c->state = ST_CLOSED;
    if (!c->handles_close) {
        c->handles_close = 1;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed); /* cancels connect, writes */
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->flush, on_handle_closed);
    }
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->gai); /* fails harmlessly once it runs */
    c->depth++;
    request *r;
    while ((r = pop_request(c)))
        answer(c, r, NULL, why);
    while ((r = c->held_head)) {
        c->held_head = r->next;
        if (!c->held_head)
            c->held_tail = NULL;
        c->nwaiting--;
        answer(c, r, NULL, why);
    }
    if (tell && !c->released && c->cfg.ops->closed)
        c->cfg.ops->closed(c, c->cfg.ud, why);
    c->depth--;
    maybe_free(c);
}

static void fail(chan_rconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(chan_rconn *c, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    end(c, why, 1);
}

void chan_rconn_close(chan_rconn *c)
{
    if (!c || c->released)
        return;
    c->released = 1;
    end(c, "connection closed", 0);
    maybe_free(c);
}

/*---- Deadlines ---------------------------------------------------------------*/

static void on_timer(uv_timer_t *t)
{
    chan_rconn *c = t->data;
    if (c->early[0]) {
        fail(c, "%s", c->early);
        return;
    }
    if (c->state != ST_READY) {
        fail(c, "%s: not connected within %u ms", c->peer, c->cfg.connect_timeout_ms);
        return;
    }
    if (c->head)
        fail(c, "%s: no reply within %u ms", c->peer, c->cfg.reply_timeout_ms);
}

/* Points the timer at the oldest command's deadline (ready connections
 * with a reply timeout only). */
static void rearm_reply_timer(chan_rconn *c)
{
    if (c->state != ST_READY || !c->cfg.reply_timeout_ms)
        return;
    if (!c->head) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = uv_now(c->loop), due = c->head->sent_ms + c->cfg.reply_timeout_ms;
    uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

/*---- Writing -----------------------------------------------------------------*/

static void on_written(uv_write_t *w, int status)
{
    chan_rconn *c = w->data;
    c->reqs--;
    c->writing = 0;
    hr_buf_reset(&c->inwrite);
    if (status < 0 && c->state != ST_CLOSED)
        fail(c, "%s: write failed: %s", c->peer, uv_strerror(status));
    else
        schedule_flush(c);
    maybe_free(c);
}

/* Runs once per loop iteration, before the loop waits: everything queued
 * in this iteration leaves in one write. */
/* Starts writing everything queued. Returns 0, or a libuv error with the
 * bytes still queued. */
static int write_out(chan_rconn *c)
{
    c->inwrite = c->out;
    memset(&c->out, 0, sizeof(c->out));
    uv_buf_t b = uv_buf_init(c->inwrite.data, (unsigned)c->inwrite.len);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        c->out = c->inwrite;
        memset(&c->inwrite, 0, sizeof(c->inwrite));
        return rc;
    }
    c->writing = 1;
    c->reqs++;
    return 0;
}

static void on_flush(uv_prepare_t *p)
{
    chan_rconn *c = p->data;
    uv_prepare_stop(p);
    if (c->state == ST_CLOSED || c->state < ST_SETUP || c->writing || !c->out.len)
        return;
    int rc = write_out(c);
    if (rc < 0)
        fail(c, "%s: write failed: %s", c->peer, uv_strerror(rc));
}

void chan_rconn_flush(chan_rconn *c)
{
    /* a failure is left to the loop's flush, which reports it as usual */
    if (c && c->state == ST_READY && !c->writing && c->out.len && write_out(c) == 0)
        uv_prepare_stop(&c->flush);
}

static void schedule_flush(chan_rconn *c)
{
    if (c->state >= ST_SETUP && c->state != ST_CLOSED && !c->writing && c->out.len)
        uv_prepare_start(&c->flush, on_flush);
}

/* Formats argv into buf and queues r. */
static void enqueue(chan_rconn *c, hr_buf *buf, request *r, int argc, const char **argv,
                    const size_t *lens)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0 || !cmd)
        abort(); /* only on OOM (common.h's policy) */
    hr_buf_append(buf, cmd, (size_t)len);
    redisFreeCommand(cmd);
    r->sent_ms = uv_now(c->loop);
    c->nwaiting++;
    if (buf == &c->held) {
        append_request(&c->held_head, &c->held_tail, r);
    } else {
        int was_idle = !c->head;
        append_request(&c->head, &c->tail, r);
        if (was_idle)
            rearm_reply_timer(c);
        schedule_flush(c);
    }
}

static int is_kind(const char *cmd, size_t n, const char *kind)
{
    return n == strlen(kind) && !strncasecmp(cmd, kind, n);
}

/* The confirmation kind a subscription command gets, or NULL. */
static const char *sub_kind(const char *cmd, size_t n)
{
    static const char *const kinds[] = {"subscribe",   "ssubscribe",   "psubscribe",
                                        "unsubscribe", "sunsubscribe", "punsubscribe"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (is_kind(cmd, n, kinds[i]))
            return kinds[i];
    return NULL;
}

int chan_rconn_command(chan_rconn *c, chan_rconn_reply_fn cb, void *priv, int argc,
                       const char **argv, const size_t *lens)
{
    if (!c || c->state == ST_CLOSED || c->released || argc < 1)
        return -1;
    size_t n0 = lens ? lens[0] : strlen(argv[0]);
    const char *kind = sub_kind(argv[0], n0);
    if (kind && (!c->cfg.pubsub || argc < 2))
        return -1;
    request *r = hr_calloc(1, sizeof(*r));
    r->cb = cb;
    r->priv = priv;
    if (kind) {
        r->sub = hr_calloc(1, sizeof(*r->sub));
        snprintf(r->sub->kind, sizeof(r->sub->kind), "%s", kind);
        r->sub->n = (size_t)argc - 1;
        r->sub->names = hr_calloc(r->sub->n, sizeof(char *));
        for (int i = 1; i < argc; i++)
            r->sub->names[i - 1] = hr_strndup(argv[i], lens ? lens[i] : strlen(argv[i]));
    }
    enqueue(c, c->state == ST_READY ? &c->out : &c->held, r, argc, argv, lens);
    return 0;
}

/*---- Reading -----------------------------------------------------------------*/

/* Classifies a reply on a pub/sub connection. Returns 1 when it was a push
 * (delivered here), 0 when it answers the head request as usual. */
static int handle_push(chan_rconn *c, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || !r->element[0] ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    const redisReply *k = r->element[0];
    chan_rpush p = {0};
    char kind[16];
    if (k->len >= sizeof(kind))
        return 0;
    memcpy(kind, k->str, k->len);
    kind[k->len] = '\0';
    for (char *q = kind; *q; q++)
        *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
    p.kind = kind;
    const redisReply *ch, *pl;
    if (!strcmp(kind, "message") || !strcmp(kind, "smessage") || !strcmp(kind, "pmessage")) {
        int pm = kind[0] == 'p';
        if (r->elements != (size_t)(pm ? 4 : 3))
            return 0;
        ch = r->element[pm ? 2 : 1];
        pl = r->element[pm ? 3 : 2];
        if (ch->type != REDIS_REPLY_STRING || pl->type != REDIS_REPLY_STRING)
            return 0;
        if (pm) {
            p.pattern = r->element[1]->str;
            p.pattern_len = r->element[1]->len;
        }
        p.message = 1;
        p.channel = ch->str;
        p.channel_len = ch->len;
        p.payload = pl->str;
        p.len = pl->len;
    } else if (sub_kind(kind, strlen(kind))) {
        ch = r->element[1];
        if (r->elements != 3 || r->element[2]->type != REDIS_REPLY_INTEGER ||
            (ch->type != REDIS_REPLY_STRING && ch->type != REDIS_REPLY_NIL))
            return 0;
        if (ch->type == REDIS_REPLY_STRING) {
            p.channel = ch->str;
            p.channel_len = ch->len;
            if (kind[0] == 'p') {
                p.pattern = ch->str;
                p.pattern_len = ch->len;
            }
        }
        p.count = r->element[2]->integer;
        /* solicited: the next confirmation the head command waits for */
        request *h = c->head;
        sub_expect *e = h ? h->sub : NULL;
        if (e && e->next < e->n && !strcmp(e->kind, kind) && p.channel &&
            strlen(e->names[e->next]) == p.channel_len &&
            !memcmp(e->names[e->next], p.channel, p.channel_len)) {
            p.solicited = 1;
            e->next++;
        }
        if (c->cfg.ops->push) {
            c->depth++;
            c->cfg.ops->push(c, c->cfg.ud, &p);
            c->depth--;
        }
        /* the callback may have ended the connection (h is gone then) */
        if (p.solicited && c->state != ST_CLOSED && c->head == h && e->next == e->n) {
            pop_request(c);
            answer(c, h, r, NULL);
            rearm_reply_timer(c);
        }
        return 1;
    } else {
        return 0;
    }
    if (c->cfg.ops->push) {
        c->depth++;
        c->cfg.ops->push(c, c->cfg.ud, &p);
        c->depth--;
    }
    return 1;
}

static void on_setup_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err);

static void handle_reply(chan_rconn *c, redisReply *r)
{
    if (c->cfg.pubsub && handle_push(c, r))
        return;
    request *h = c->head;
    if (!h) {
        fail(c, "%s: a reply nobody asked for (the connection is out of step)", c->peer);
        return;
    }
    if (h->sub && r->type != REDIS_REPLY_ERROR) {
        fail(c, "%s: a reply out of step with a subscription command", c->peer);
        return;
    }
    pop_request(c);
    answer(c, h, r, NULL);
    rearm_reply_timer(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    chan_rconn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    chan_rconn *c = s->data;
    (void)buf;
    if (c->state == ST_CLOSED || n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            fail(c, "%s: the server closed the connection", c->peer);
        else
            fail(c, "%s: read failed: %s", c->peer, uv_strerror((int)n));
        return;
    }
    if (redisReaderFeed(c->reader, c->rbuf, (size_t)n) != REDIS_OK)
        abort(); /* OOM only */
    c->depth++;
    while (c->state != ST_CLOSED) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            fail(c, "%s: protocol error: %s", c->peer, c->reader->errstr);
            break;
        }
        if (!reply)
            break;
        handle_reply(c, reply);
        freeReplyObject(reply);
    }
    c->depth--;
    maybe_free(c);
}

/*---- Connecting ----------------------------------------------------------------*/

static void become_ready(chan_rconn *c)
{
    c->state = ST_READY;
    uv_timer_stop(&c->timer);
    /* what the owner queued meanwhile goes out now, in order */
    hr_buf_append(&c->out, c->held.data, c->held.len);
    hr_buf_reset(&c->held);
    while (c->held_head) {
        request *r = c->held_head;
        c->held_head = r->next;
        r->sent_ms = uv_now(c->loop);
        append_request(&c->head, &c->tail, r);
    }
    c->held_tail = NULL;
    rearm_reply_timer(c);
    schedule_flush(c);
    c->depth++;
    if (c->cfg.ops->ready)
        c->cfg.ops->ready(c, c->cfg.ud);
    c->depth--;
    maybe_free(c);
}

static void on_setup_reply(chan_rconn *c, void *priv, const redisReply *r, const char *err)
{
    const char *what = priv;
    if (!r)
        return; /* the connection ended: end() reports why */
    if (r->type == REDIS_REPLY_ERROR) {
        c->refused_what = what;
        snprintf(c->refused_text, sizeof(c->refused_text), "%.*s", (int)r->len, r->str);
        fail(c, "%s: %s refused: %.*s", c->peer, what, (int)r->len, r->str);
        return;
    }
    (void)err;
    if (--c->pending_setup == 0 && c->state == ST_SETUP)
        become_ready(c);
}

static void setup_command(chan_rconn *c, const char *what, int argc, const char **argv)
{
    request *r = hr_calloc(1, sizeof(*r));
    r->cb = on_setup_reply;
    r->priv = (void *)what;
    r->internal = 1;
    c->pending_setup++;
    enqueue(c, &c->out, r, argc, argv, NULL);
}

static void on_connected(uv_connect_t *req, int status)
{
    chan_rconn *c = req->data;
    c->reqs--;
    if (c->state == ST_CLOSED) {
        maybe_free(c);
        return;
    }
    if (status < 0) {
        fail(c, "%s: connect failed: %s", c->peer, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 30);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        fail(c, "%s: cannot read: %s", c->peer, uv_strerror(rc));
        return;
    }
    c->state = ST_SETUP;
    if (c->password) {
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (c->user)
            argv[argc++] = c->user;
        argv[argc++] = c->password;
        setup_command(c, "AUTH", argc, argv);
    }
    if (c->cfg.db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", c->cfg.db);
        const char *argv[2] = {"SELECT", db};
        setup_command(c, "SELECT", 2, argv);
    }
    if (c->client_name) {
        const char *argv[3] = {"CLIENT", "SETNAME", c->client_name};
        setup_command(c, "CLIENT SETNAME", 3, argv);
    }
    if (!c->pending_setup)
        become_ready(c);
}

static void connect_to(chan_rconn *c, const struct sockaddr *sa)
{
    c->state = ST_CONNECTING;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, sa, on_connected);
    if (rc < 0) {
        fail(c, "%s: connect failed: %s", c->peer, uv_strerror(rc));
        return;
    }
    c->reqs++;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    chan_rconn *c = req->data;
    c->reqs--;
    c->resolving = 0;
    if (c->state == ST_CLOSED) {
        uv_freeaddrinfo(res);
        maybe_free(c);
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        fail(c, "%s: cannot resolve the host name: %s", c->peer,
             status < 0 ? uv_strerror(status) : "no address");
        return;
    }
    connect_to(c, res->ai_addr);
    uv_freeaddrinfo(res);
}

chan_rconn *chan_rconn_open(uv_loop_t *loop, const chan_rconn_config *cfg)
{
    static const chan_rconn_ops no_ops;
    chan_rconn *c = hr_calloc(1, sizeof(*c));
    c->loop = loop;
    c->cfg = *cfg;
    if (!c->cfg.ops)
        c->cfg.ops = &no_ops;
    if (!c->cfg.connect_timeout_ms)
        c->cfg.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    c->host = hr_strdup(cfg->host ? cfg->host : "");
    c->user = cfg->user && cfg->password ? hr_strdup(cfg->user) : NULL;
    c->password = cfg->password ? hr_strdup(cfg->password) : NULL;
    c->client_name = cfg->client_name ? hr_strdup(cfg->client_name) : NULL;
    c->cfg.host = c->host;
    c->cfg.user = c->user;
    c->cfg.password = c->password;
    c->cfg.client_name = c->client_name;
    snprintf(c->peer, sizeof(c->peer), strchr(c->host, ':') ? "[%s]:%d" : "%s:%d", c->host,
             cfg->port);
    c->reader = redisReaderCreate();
    if (!c->reader)
        abort();
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    uv_prepare_init(loop, &c->flush);
    c->tcp.data = c->timer.data = c->flush.data = c;
    c->handles = 3;
    c->state = ST_RESOLVING;
    uv_timer_start(&c->timer, on_timer, c->cfg.connect_timeout_ms, 0);

    struct sockaddr_storage sa;
    if (uv_ip4_addr(c->host, cfg->port, (struct sockaddr_in *)&sa) == 0 ||
        uv_ip6_addr(c->host, cfg->port, (struct sockaddr_in6 *)&sa) == 0) {
        connect_to(c, (const struct sockaddr *)&sa);
        return c;
    }
    if (cfg->port < 1 || cfg->port > 65535 || !c->host[0]) {
        /* reported from the loop, as every failure is */
        snprintf(c->early, sizeof(c->early), "%s: no such address", c->peer);
        uv_timer_start(&c->timer, on_timer, 0, 0);
        return c;
    }
    char port[8];
    snprintf(port, sizeof(port), "%d", cfg->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->gai.data = c;
    int rc = uv_getaddrinfo(loop, &c->gai, on_resolved, c->host, port, &hints);
    if (rc < 0) {
        snprintf(c->early, sizeof(c->early), "%s: cannot resolve the host name: %s", c->peer,
                 uv_strerror(rc));
        uv_timer_start(&c->timer, on_timer, 0, 0);
        return c;
    }
    c->reqs++;
    c->resolving = 1;
    return c;
}

/*---- Introspection ---------------------------------------------------------------*/

int chan_rconn_ready(const chan_rconn *c)
{
    return c && c->state == ST_READY;
}

const char *chan_rconn_peer(const chan_rconn *c)
{
    return c->peer;
}

const char *chan_rconn_refused(const chan_rconn *c, const char **text)
{
    if (text)
        *text = c->refused_what ? c->refused_text : NULL;
    return c->refused_what;
}

size_t chan_rconn_waiting(const chan_rconn *c)
{
    return c->nwaiting;
}

size_t chan_rconn_unread(const chan_rconn *c)
{
    size_t total = c->reader->len - c->reader->pos;
    uv_os_fd_t fd;
    int n = 0;
    if (c->state != ST_CLOSED && uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 &&
        ioctl(fd, SIOCINQ, &n) == 0 && n > 0)
        total += (size_t)n;
    return total;
}

/*---- Helpers the other HA modules share --------------------------------------------*/

void chan_rlog(chan_rlog_fn fn, void *ud, int level, const char *event, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (fn)
        fn(ud, level, event, msg);
    else
        fprintf(stderr, "herald: %s\n", msg);
}

uint64_t chan_backoff_ms(unsigned attempt)
{
    unsigned shift = attempt < 6 ? attempt : 6;
    uint64_t cap = 100ull << shift;
    uint32_t r;
    if (cap > 5000)
        cap = 5000;
    hr_random_bytes(&r, sizeof(r));
    return 50 + r % cap;
}
