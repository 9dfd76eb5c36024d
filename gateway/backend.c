/*
 * backend.c - libcurl's multi interface on a libuv loop (see backend.h).
 *
 * Shape: curl owns the connections and the HTTP state; we own the loop.
 * curl asks for sockets to be watched (sock_cb: one uv_poll_t per socket,
 * hung on the socket with curl_multi_assign) and for a wake-up (timer_cb:
 * one uv_timer_t); both hand control back through curl_multi_socket_action,
 * after which finished transfers are collected (collect_done) and waiting
 * requests take the freed slots (start_waiting).
 *
 * A request is in one of three places: the wait queue (no curl handle yet),
 * in flight (an easy handle in the multi), or finishing (its callback is
 * about to run). Callbacks only ever run from collect_done, expire_waiting
 * or hr_backend_close, all reached from libuv callbacks or the owner's own
 * close, so a caller of hr_backend_post never sees its callback re-entered.
 */
#include "gateway/backend.h"
#include "common/common.h"
#include "common/log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum req_state { REQ_WAITING, REQ_INFLIGHT, REQ_FINISHING } req_state;

struct hr_backend_req {
    hr_backend *b;
    hr_backend_req *prev, *next; /* in b->waiting or b->inflight */
    req_state state;
    int cancelled; /* finishing, cancelled by an earlier callback of the batch */
    CURL *easy;    /* in flight only */
    struct curl_slist *headers;
    char *url;
    char *body;
    size_t body_len;
    hr_buf resp;
    int too_large;
    CURLcode rc; /* finishing: how the transfer ended */
    uint64_t start_us, deadline_us;
    hr_backend_cb cb;
    void *ud;
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct req_list {
    hr_backend_req *head, *tail;
    int n;
} req_list;

/* One socket curl asked us to watch. Freed in its handle's close callback,
 * which may run after curl has closed (and the kernel reused) the fd: the
 * poll is stopped first, so libuv no longer watches that number. */
typedef struct sock_ctx {
    uv_poll_t poll;
    hr_backend *b;
    curl_socket_t fd;
    struct sock_ctx *prev, *next; /* in b->socks */
} sock_ctx;

struct hr_backend {
    uv_loop_t *uv;
    CURLM *multi;
    hr_backend_opts opts;
    char *ca_file;
    uv_timer_t curl_timer; /* curl's own timeouts */
    uv_timer_t wait_timer; /* the oldest waiting request's deadline */
    req_list waiting;      /* FIFO; deadlines in order (one timeout for all) */
    req_list inflight;
    sock_ctx *socks;
    int open_handles; /* uv handles not yet closed; freed at 0 once closing */
    int depth;        /* inside a completion callback: teardown waits */
    int closing;      /* hr_backend_close was called */
    int closed;       /* teardown done (handles closing) */
};

/*---- Lists -----------------------------------------------------------------*/

static void list_push(req_list *l, hr_backend_req *r)
{
    r->prev = l->tail;
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_remove(req_list *l, hr_backend_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

/*---- Requests --------------------------------------------------------------*/

const char *hr_backend_status_name(hr_backend_status s)
{
    switch (s) {
    case HR_BACKEND_OK:
        return "ok";
    case HR_BACKEND_TIMEOUT:
        return "timeout";
    case HR_BACKEND_TOO_LARGE:
        return "too_large";
    case HR_BACKEND_FAILED:
        return "failed";
    case HR_BACKEND_CANCELLED:
        return "cancelled";
    case HR_BACKEND_OVERLOADED:
        return "overloaded";
    }
    return "unknown";
}

static void req_free(hr_backend_req *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->url);
    free(r->body);
    hr_buf_reset(&r->resp);
    free(r);
}

/* Runs the callback (unless cancelled meanwhile) and frees the request. The
 * request is already out of every list and out of the multi. */
static void req_complete(hr_backend *b, hr_backend_req *r, hr_backend_status st, const char *error)
{
    hr_backend_result res = {.status = st, .error = error};
    res.elapsed_us = hr_now_us() - r->start_us;
    if (r->easy) {
        long conns = 0;
        curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &conns);
        res.new_connections = (int)conns;
        if (st == HR_BACKEND_OK) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.http_status);
            res.body = r->resp.data ? r->resp.data : "";
            res.body_len = r->resp.len;
        }
    }
    if (!r->cancelled) {
        b->depth++;
        r->cb(r->ud, &res);
        b->depth--;
    }
    req_free(r);
}

/* Collects response bytes up to max_body. Returning less than asked makes
 * curl fail the transfer (CURLE_WRITE_ERROR), which is how an oversized
 * body stops arriving; CURLOPT_MAXFILESIZE already refused the ones that
 * announced their size. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    hr_backend_req *r = ud;
    size_t len = size * n;
    if (r->resp.len + len > r->b->opts.max_body) {
        r->too_large = 1;
        return 0;
    }
    hr_buf_append(&r->resp, p, len);
    return len;
}

/* Moves a waiting (or new) request into the multi. Returns 0, or -1 with
 * the request untouched but for its easy handle (freed). */
static int req_start(hr_backend *b, hr_backend_req *r)
{
    uint64_t now = hr_now_us();
    long left_ms = r->deadline_us > now ? (long)((r->deadline_us - now + 999) / 1000) : 1;
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)b->opts.max_body);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* a request cancelled while its host name is being resolved must not
     * wait for the resolver thread (curl joins it otherwise: the loop would
     * block for as long as DNS takes) */
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* never http_proxy & co. */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (b->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, b->ca_file);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    r->easy = e;
    if (curl_multi_add_handle(b->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        r->easy = NULL;
        return -1;
    }
    r->state = REQ_INFLIGHT;
    list_push(&b->inflight, r);
    return 0;
}

/* A transfer's outcome in the caller's terms. */
static hr_backend_status map_rc(hr_backend_req *r, const char **error)
{
    switch (r->rc) {
    case CURLE_OK:
        *error = NULL;
        return HR_BACKEND_OK;
    case CURLE_OPERATION_TIMEDOUT:
        *error = "no answer within the timeout";
        return HR_BACKEND_TIMEOUT;
    case CURLE_FILESIZE_EXCEEDED:
        *error = "response body over the limit";
        return HR_BACKEND_TOO_LARGE;
    case CURLE_WRITE_ERROR:
        if (r->too_large) {
            *error = "response body over the limit";
            return HR_BACKEND_TOO_LARGE;
        }
        /* fall through */
    default:
        *error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc);
        return HR_BACKEND_FAILED;
    }
}

static void arm_wait_timer(hr_backend *b);

/* Waiting requests whose deadline has passed time out where they stand:
 * they never reach the backend. */
static void expire_waiting(hr_backend *b)
{
    uint64_t now = hr_now_us();
    while (b->waiting.head && b->waiting.head->deadline_us <= now && !b->closing) {
        hr_backend_req *r = b->waiting.head;
        list_remove(&b->waiting, r);
        r->state = REQ_FINISHING;
        req_complete(b, r, HR_BACKEND_TIMEOUT, "no free slot within the timeout");
    }
}

/* Fills free slots from the head of the queue. A request that cannot start
 * (curl refused the handle) fails through its callback. */
static void start_waiting(hr_backend *b)
{
    while (!b->closing && b->waiting.head && b->inflight.n < b->opts.max_inflight) {
        hr_backend_req *r = b->waiting.head;
        list_remove(&b->waiting, r);
        if (req_start(b, r) < 0) {
            r->state = REQ_FINISHING;
            req_complete(b, r, HR_BACKEND_FAILED, "cannot start the transfer");
        }
    }
    arm_wait_timer(b);
}

static void teardown(hr_backend *b);

/* Takes every finished transfer out of curl first, then runs their
 * callbacks: a callback may cancel a request of the same batch (marked,
 * skipped) or post new ones without disturbing the walk. */
static void collect_done(hr_backend *b)
{
    req_list done = {0};
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(b->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        hr_backend_req *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (!r)
            continue;
        r->rc = m->data.result;
        list_remove(&b->inflight, r);
        curl_multi_remove_handle(b->multi, r->easy);
        r->state = REQ_FINISHING;
        list_push(&done, r);
    }
    while (done.head) {
        hr_backend_req *r = done.head;
        list_remove(&done, r);
        const char *error = NULL;
        hr_backend_status st = map_rc(r, &error);
        if (b->closing && !r->cancelled)
            st = HR_BACKEND_CANCELLED, error = "the client is closing";
        req_complete(b, r, st, error);
    }
    expire_waiting(b);
    start_waiting(b);
    if (b->closing && !b->closed && b->depth == 0)
        teardown(b);
}

/*---- Driving curl from libuv -----------------------------------------------*/

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_ctx *s = h->data;
    hr_backend *b = s->b;
    int flags = 0, running = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(b->multi, s->fd, flags, &running);
    collect_done(b);
}

static void on_curl_timer(uv_timer_t *t)
{
    hr_backend *b = t->data;
    int running = 0;
    curl_multi_socket_action(b->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect_done(b);
}

static void on_wait_timer(uv_timer_t *t)
{
    hr_backend *b = t->data;
    b->depth++;
    expire_waiting(b);
    b->depth--;
    arm_wait_timer(b);
    if (b->closing && !b->closed && b->depth == 0)
        teardown(b);
}

/* The queue's head has the earliest deadline. */
static void arm_wait_timer(hr_backend *b)
{
    if (b->closed)
        return;
    if (!b->waiting.head) {
        uv_timer_stop(&b->wait_timer);
        return;
    }
    uint64_t now = hr_now_us(), due = b->waiting.head->deadline_us;
    uv_timer_start(&b->wait_timer, on_wait_timer, due > now ? (due - now + 999) / 1000 : 0, 0);
}

static void handle_closed(uv_handle_t *h)
{
    hr_backend *b = h->data;
    if (h->type == UV_POLL)
        free((sock_ctx *)h); /* the poll handle is sock_ctx's first member */
    if (--b->open_handles == 0 && b->closed) {
        free(b->ca_file);
        free(b);
    }
}

/* Stops watching a socket and forgets it (curl is about to close it). */
static void sock_forget(hr_backend *b, sock_ctx *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        b->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    s->poll.data = b; /* handle_closed needs the client */
    uv_close((uv_handle_t *)&s->poll, handle_closed);
}

/* CURLMOPT_SOCKETFUNCTION: what curl wants to hear about fd. */
static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    hr_backend *b = userp;
    sock_ctx *s = socketp;
    (void)e;
    if (b->closed)
        return 0;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(b->multi, fd, NULL);
            sock_forget(b, s);
        }
        return 0;
    }
    if (!s) {
        s = hr_calloc(1, sizeof(*s));
        s->b = b;
        s->fd = fd;
        if (uv_poll_init_socket(b->uv, &s->poll, fd) != 0) {
            hr_warn("backend", "cannot watch a backend socket");
            free(s);
            return -1; /* curl fails the transfer */
        }
        b->open_handles++;
        s->poll.data = s;
        s->next = b->socks;
        if (b->socks)
            b->socks->prev = s;
        b->socks = s;
        curl_multi_assign(b->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    s->poll.data = s;
    if (uv_poll_start(&s->poll, events, on_poll) != 0) {
        hr_warn("backend", "cannot watch a backend socket");
        return -1;
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: -1 cancels; otherwise wake curl after ms (0: on
 * the next iteration, never from inside this call). */
static int timer_cb(CURLM *multi, long ms, void *userp)
{
    hr_backend *b = userp;
    (void)multi;
    if (b->closed)
        return 0;
    if (ms < 0)
        uv_timer_stop(&b->curl_timer);
    else
        uv_timer_start(&b->curl_timer, on_curl_timer, (uint64_t)ms, 0);
    return 0;
}

/*---- Life cycle ------------------------------------------------------------*/

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ready;

/* libcurl's global state, set up once per process before the first multi
 * (curl_global_init is only thread-safe where curl says so). */
static void curl_init_once(void)
{
    curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (curl_ready && !(v->features & CURL_VERSION_ASYNCHDNS))
        hr_warn("backend",
                "libcurl %s resolves names synchronously: use IP addresses in backend URLs",
                v->version);
}

hr_backend *hr_backend_new(uv_loop_t *uv, const hr_backend_opts *opts)
{
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ready) {
        hr_error("backend", "libcurl did not initialise");
        return NULL;
    }
    if (opts->timeout_ms <= 0 || opts->max_inflight <= 0 || opts->max_queue < 0 ||
        !opts->max_body) {
        hr_error("backend", "invalid backend client options");
        return NULL;
    }
    hr_backend *b = hr_calloc(1, sizeof(*b));
    b->uv = uv;
    b->opts = *opts;
    b->ca_file = opts->ca_file ? hr_strdup(opts->ca_file) : NULL;
    b->opts.ca_file = b->ca_file;
    if (!(b->multi = curl_multi_init())) {
        hr_error("backend", "curl_multi_init failed");
        free(b->ca_file);
        free(b);
        return NULL;
    }
    long cap = opts->max_inflight;
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETDATA, b);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERDATA, b);
    /* Every running request may need a connection, and no more may ever
     * exist: the pool is as large as the in-flight bound. Idle ones stay
     * cached (keep-alive) up to the same number. */
    curl_multi_setopt(b->multi, CURLMOPT_MAX_HOST_CONNECTIONS, cap);
    curl_multi_setopt(b->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, cap);
    curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, cap);
    uv_timer_init(uv, &b->curl_timer);
    uv_timer_init(uv, &b->wait_timer);
    b->curl_timer.data = b->wait_timer.data = b;
    b->open_handles = 2;
    return b;
}

/* Case-insensitive "http://" or "https://" prefix with something after. */
static int url_ok(const char *url)
{
    size_t n = !strncasecmp(url, "http://", 7) ? 7 : !strncasecmp(url, "https://", 8) ? 8 : 0;
    return n && url[n];
}

/* A header line with CR or LF would let its value add headers of its own;
 * the proxy module never builds one, this is the last line of defence. */
static int headers_ok(const char *const *headers, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strpbrk(headers[i], "\r\n"))
            return 0;
    return 1;
}

/* curl_slist_append, with the allocation policy of common.h: abort on OOM
 * (curl returns NULL and keeps the list, which would leak). */
static struct curl_slist *slist_add(struct curl_slist *l, const char *s)
{
    struct curl_slist *n = curl_slist_append(l, s);
    if (!n)
        hr_fatal("out_of_memory", "curl_slist_append failed");
    return n;
}

hr_backend_req *hr_backend_post(hr_backend *b, const char *url, const char *const *headers,
                                size_t nheaders, const char *body, size_t len, hr_backend_cb cb,
                                void *ud, hr_backend_status *why)
{
    hr_backend_status dummy;
    if (!why)
        why = &dummy;
    if (b->closing || !url_ok(url) || !headers_ok(headers, nheaders)) {
        *why = HR_BACKEND_FAILED;
        return NULL;
    }
    int run_now = b->inflight.n < b->opts.max_inflight && !b->waiting.head;
    if (!run_now && b->waiting.n >= b->opts.max_queue) {
        *why = HR_BACKEND_OVERLOADED;
        return NULL;
    }
    hr_backend_req *r = hr_calloc(1, sizeof(*r));
    r->b = b;
    r->cb = cb;
    r->ud = ud;
    r->url = hr_strdup(url);
    r->body = hr_malloc(len + 1);
    memcpy(r->body, body, len);
    r->body[len] = '\0';
    r->body_len = len;
    struct curl_slist *h = NULL;
    for (size_t i = 0; i < nheaders; i++)
        h = slist_add(h, headers[i]);
    h = slist_add(h, "Content-Type: application/json");
    /* curl 7.88 would otherwise send "Expect: 100-continue" with bodies
     * over 1 MiB and wait up to a second for an interim answer that many
     * servers never give */
    h = slist_add(h, "Expect:");
    r->headers = h;
    r->start_us = hr_now_us();
    r->deadline_us = r->start_us + (uint64_t)b->opts.timeout_ms * 1000;
    if (run_now) {
        if (req_start(b, r) < 0) {
            req_free(r);
            *why = HR_BACKEND_FAILED;
            return NULL;
        }
    } else {
        r->state = REQ_WAITING;
        list_push(&b->waiting, r);
        arm_wait_timer(b);
    }
    return r;
}

void hr_backend_cancel(hr_backend_req *r)
{
    if (!r)
        return;
    hr_backend *b = r->b;
    switch (r->state) {
    case REQ_WAITING:
        list_remove(&b->waiting, r);
        arm_wait_timer(b);
        req_free(r);
        break;
    case REQ_INFLIGHT:
        list_remove(&b->inflight, r);
        curl_multi_remove_handle(b->multi, r->easy); /* closes a half-used connection */
        req_free(r);
        /* the slot is free: let a waiting request have it on the next
         * iteration, not inside the caller's call. Running curl's timeout
         * early is safe: after a CURL_SOCKET_TIMEOUT action curl calls
         * timer_cb again even when its next expiry did not change. */
        uv_timer_start(&b->curl_timer, on_curl_timer, 0, 0);
        break;
    case REQ_FINISHING:
        r->cancelled = 1; /* collect_done frees it without calling back */
        break;
    }
}

int hr_backend_inflight(const hr_backend *b)
{
    return b->inflight.n;
}

int hr_backend_queued(const hr_backend *b)
{
    return b->waiting.n;
}

/* No-op socket callback for curl_multi_cleanup: our poll handles are
 * already closing by then. */
static int sock_cb_closed(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e, (void)fd, (void)what, (void)userp, (void)socketp;
    return 0;
}

/* Everything outstanding is answered "cancelled", then curl closes its
 * connections and our handles close; the last close frees b. */
static void teardown(hr_backend *b)
{
    b->depth++; /* callbacks below must not re-enter teardown */
    while (b->waiting.head || b->inflight.head) {
        hr_backend_req *r = b->waiting.head ? b->waiting.head : b->inflight.head;
        if (r->state == REQ_WAITING) {
            list_remove(&b->waiting, r);
        } else {
            list_remove(&b->inflight, r);
            curl_multi_remove_handle(b->multi, r->easy);
        }
        r->state = REQ_FINISHING;
        req_complete(b, r, HR_BACKEND_CANCELLED, "the client is closing");
    }
    b->depth--;
    b->closed = 1;
    while (b->socks)
        sock_forget(b, b->socks);
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETFUNCTION, sock_cb_closed);
    curl_multi_cleanup(b->multi);
    b->multi = NULL;
    uv_close((uv_handle_t *)&b->curl_timer, handle_closed);
    uv_close((uv_handle_t *)&b->wait_timer, handle_closed);
}

void hr_backend_close(hr_backend *b)
{
    if (!b || b->closing)
        return;
    b->closing = 1;
    if (b->depth == 0)
        teardown(b);
}
