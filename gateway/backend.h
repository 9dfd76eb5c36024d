/*
 * backend.h - an asynchronous HTTP client for calls to the application's
 * backend (the proxies and event webhooks of SPEC §8), one per loop thread.
 *
 * It is libcurl's multi interface driven by the loop's own libuv loop: curl
 * tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION -> one uv_poll_t
 * per socket) and when to wake it (CURLMOPT_TIMERFUNCTION -> a uv_timer_t),
 * and we hand readiness back with curl_multi_socket_action. Nothing blocks
 * the loop: name resolution runs on curl's resolver thread (Debian's
 * libcurl4-openssl is built with the threaded resolver), connects, TLS and
 * I/O are non-blocking.
 *
 * What a caller gets, and what it can rely on:
 * - A request is a POST of a JSON body with the caller's header lines and
 *   "Content-Type: application/json". Its completion callback runs exactly
 *   once, on the loop thread, from inside a libuv callback - never from
 *   inside hr_backend_post - unless the request is cancelled first.
 * - Connections to the backend are kept alive and reused by later requests
 *   (one connection cache per loop). At most max_inflight requests run at
 *   once, and curl may open at most that many connections, so a storm of
 *   5,000 connects costs max_inflight backend connections, not 5,000.
 *   Requests over max_inflight wait in a FIFO queue of at most max_queue;
 *   over that, hr_backend_post refuses at once (the caller answers
 *   "unavailable").
 * - Every request ends within timeout_ms of hr_backend_post (time spent
 *   queued included), with HR_BACKEND_TIMEOUT if the backend was too slow.
 * - A response body over max_body bytes ends the transfer
 *   (HR_BACKEND_TOO_LARGE): memory per request is bounded.
 * - Redirects are not followed (a 3xx is a response like any other), only
 *   http:// and https:// are spoken, TLS certificates and host names are
 *   verified (against ca_file when given, else the system's CA store), and
 *   http_proxy/https_proxy from the environment are ignored: Herald calls
 *   the backend directly.
 *
 * Threads: every function must be called on the thread running the uv
 * loop given to hr_backend_new. One hr_backend per loop thread.
 */
#ifndef HR_BACKEND_H
#define HR_BACKEND_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct hr_backend hr_backend;
typedef struct hr_backend_req hr_backend_req;

typedef struct hr_backend_opts {
    long timeout_ms;     /* per request, queueing included; > 0 */
    int max_inflight;    /* requests running at once (this loop's share); > 0 */
    int max_queue;       /* requests waiting for a slot; 0 = none wait */
    size_t max_body;     /* largest response body accepted, bytes; > 0 */
    const char *ca_file; /* PEM bundle to verify backends with; NULL = system store */
} hr_backend_opts;

/* How a request ended: 0 or a negative errno value, named. */
typedef enum hr_backend_status {
    HR_BACKEND_OK = 0,                 /* an HTTP response arrived (whatever its status code) */
    HR_BACKEND_TIMEOUT = -ETIMEDOUT,   /* no complete response within timeout_ms */
    HR_BACKEND_TOO_LARGE = -EMSGSIZE,  /* the response body exceeded max_body */
    HR_BACKEND_FAILED = -EIO,          /* no response: refused, reset, DNS, TLS, not HTTP, ... */
    HR_BACKEND_CANCELLED = -ECANCELED, /* the client closed before the request ended */
    HR_BACKEND_OVERLOADED = -EBUSY,    /* hr_backend_post: in-flight and queue bounds reached */
} hr_backend_status;

/* What a completion callback is given. Everything is borrowed: valid only
 * during the callback. */
typedef struct hr_backend_result {
    hr_backend_status status;
    long http_status; /* HR_BACKEND_OK: the response's status code, else 0 */
    const char *body; /* HR_BACKEND_OK: the body, NUL-terminated (may hold NULs) */
    size_t body_len;
    const char *error;   /* other statuses: why, for logs (never the request's data) */
    uint64_t elapsed_us; /* from hr_backend_post to completion */
    int new_connections; /* connections this request opened (0 = one was reused) */
} hr_backend_result;

/* Runs once per request on the loop thread. The request handle is invalid
 * once it returns. The callback may post new requests and cancel others. */
typedef void (*hr_backend_cb)(void *ud, const hr_backend_result *r);

/* A short stable name for a status ("ok", "timeout", "too_large", ...). */
const char *hr_backend_status_name(hr_backend_status s);

/* Creates the client on uv (not yet running anything). Initialises libcurl
 * once per process. Returns NULL (logged) when curl cannot start or opts
 * are out of range. */
hr_backend *hr_backend_new(uv_loop_t *uv, const hr_backend_opts *opts);

/* POSTs body[0..len) to url with the header lines ("Name: value", no CR or
 * LF; the caller is responsible for what it forwards) plus
 * "Content-Type: application/json". url, headers and body are copied: the
 * caller keeps ownership of its arguments. Returns the request, whose
 * callback will run once; or NULL without calling cb, with *why set to
 * HR_BACKEND_OVERLOADED (bounds reached) or HR_BACKEND_FAILED (the client
 * is closing, or url is not http(s)). */
hr_backend_req *hr_backend_post(hr_backend *b, const char *url, const char *const *headers,
                                size_t nheaders, const char *body, size_t len, hr_backend_cb cb,
                                void *ud, hr_backend_status *why);

/* Abandons a request whose callback has not run yet: it never will. Its
 * connection is closed if the request was in the middle of a transfer. */
void hr_backend_cancel(hr_backend_req *r);

/* Requests running / waiting right now (gauges). */
int hr_backend_inflight(const hr_backend *b);
int hr_backend_queued(const hr_backend *b);

/* Closes the client: every outstanding request's callback runs now with
 * HR_BACKEND_CANCELLED, kept-alive connections are closed, and the uv
 * handles close; the client frees itself once they have (the loop must run
 * on). Called from inside a completion callback, it takes effect when that
 * callback returns. NULL ok. */
void hr_backend_close(hr_backend *b);

#endif
