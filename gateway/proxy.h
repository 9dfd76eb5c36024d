/*
 * proxy.h - the backend proxy protocol of SPEC §8, without any I/O.
 *
 * Herald asks the application's backend (Django, FastAPI, ...) instead of,
 * or besides, checking a JWT: whether a connection may connect and as whom
 * (connect), whether its session still stands (refresh), whether it may
 * subscribe or publish, and what an RPC returns. Each call is a POST of a
 * JSON object; the backend answers 200 with exactly one of
 *   {"result": {...}}                            the call succeeded
 *   {"error": {"code": "...", "message": "..."}} the client gets that error
 *   {"disconnect": {"code": 4500-4999, "reason": "..."}}  close the client
 * and anything else - another status, a body that is not such an object, a
 * field of the wrong type - is "unavailable" for the client.
 *
 * This module builds the request bodies and the forwarded header lines, and
 * turns an answer into a checked, typed hr_proxy_answer: every field the
 * gateway will act on has been validated here (user a non-empty string,
 * expire_at a whole number, channels valid channel names, ...), so callers
 * never look at the backend's JSON themselves. Pure: unit tested
 * (tests/unit/gateway/proxy.c) and fuzzed (fuzz/fuzz_proxy.c). The HTTP client
 * is backend.h; proxy_call.h joins the two.
 */
#ifndef HR_PROXY_H
#define HR_PROXY_H

#include "auth/auth.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum hr_proxy_kind {
    HR_PROXY_CONNECT = 0,
    HR_PROXY_REFRESH,
    HR_PROXY_SUBSCRIBE,
    HR_PROXY_PUBLISH,
    HR_PROXY_RPC,
} hr_proxy_kind;
#define HR_PROXY_NKINDS 5

/* "connect", "refresh", "subscribe", "publish", "rpc" (metrics labels, logs). */
const char *hr_proxy_kind_name(hr_proxy_kind k);

/*---- Requests --------------------------------------------------------------*/

/* What one call tells the backend (SPEC §8's table). Borrowed strings; a
 * field a kind does not use is ignored. */
typedef struct hr_proxy_request {
    hr_proxy_kind kind;
    const char *client;      /* every kind: the client id */
    const char *user;        /* refresh, subscribe, publish, rpc; NULL (anonymous): null */
    const char *transport;   /* connect: "websocket", "sse" or "stream" */
    const char *remote_addr; /* connect: the client's address */
    const char *channel;     /* subscribe, publish */
    const char *method;      /* rpc */
    const json_t *data;      /* connect, subscribe: NULL = omitted; publish, rpc: NULL = null */
} hr_proxy_request;

/* The request body as compact JSON: a malloc'ed NUL-terminated string the
 * caller frees, its length in *len. NULL when a field the kind needs is
 * missing or a string is not UTF-8. */
char *hr_proxy_request_body(const hr_proxy_request *rq, size_t *len);

/* One header of the client's original HTTP request, as received. */
typedef struct hr_header {
    const char *name;
    const char *value;
} hr_header;

/* The header lines every call of one connection sends: for each header of
 * the client's request whose name is in allow[0..nallow) (case-insensitive;
 * HERALD_PROXY_HEADERS), "Name: value" with the configured spelling of the
 * name, in the client's order; a value holding a control character other
 * than a tab (CR, LF, NUL, ...) is dropped, since it could smuggle a header
 * of its own. Then "X-Herald-Proxy-Key: <key>" when key is set. Nothing
 * else is ever forwarded. One allocation (free() it); never NULL. */
typedef struct hr_proxy_headers {
    size_t n;
    const char *line[]; /* n lines, pointing into the same allocation */
} hr_proxy_headers;

hr_proxy_headers *hr_proxy_headers_build(char *const *allow, size_t nallow, const hr_header *hdrs,
                                         size_t nhdrs, const char *key);

/* Is name acceptable in HERALD_PROXY_HEADERS? A token (RFC 9110) that is
 * not a header the HTTP client owns (Host, Content-Length, Content-Type,
 * Transfer-Encoding, Connection, Expect, ...) nor X-Herald-Proxy-Key.
 * Returns 1 if so. */
int hr_proxy_header_allowed(const char *name);

/*---- Answers ---------------------------------------------------------------*/

typedef enum hr_proxy_outcome {
    HR_PROXY_RESULT = 0, /* {"result": ...}, checked for the kind */
    HR_PROXY_ERROR,      /* {"error": ...}: send the client code and message */
    HR_PROXY_DISCONNECT, /* {"disconnect": ...}: close the client */
    HR_PROXY_UNAVAILABLE /* anything else: "unavailable" (connect: close 1013) */
} hr_proxy_outcome;

/* What an answer may contain, from the configuration. */
typedef struct hr_proxy_limits {
    size_t max_channel_len; /* HERALD_MAX_CHANNEL_LEN */
    size_t max_channels;    /* connect result's channels (HERALD_MAX_SUBSCRIPTIONS) */
} hr_proxy_limits;

/* Longest texts accepted from the backend. A close reason must fit a
 * close frame (125 bytes with the code). */
#define HR_PROXY_MAX_USER 255
#define HR_PROXY_MAX_ROLES 64
#define HR_PROXY_MAX_ROLE 255
#define HR_PROXY_MAX_CODE 64
#define HR_PROXY_MAX_MESSAGE 1024
#define HR_PROXY_MAX_REASON 123
/* expire_at: unix seconds up to the end of year 9999 */
#define HR_PROXY_MAX_EXPIRE 253402300799LL

/* A parsed answer. Strings are malloc'ed and json_t references owned by the
 * answer until hr_proxy_answer_clear; a caller may take one (set the field
 * to NULL) to keep it. */
typedef struct hr_proxy_answer {
    hr_proxy_outcome outcome;

    /* RESULT, connect */
    char *user;        /* non-empty */
    int64_t expire_at; /* connect, refresh: unix s; 0 = does not expire */
    json_t *info;      /* an object, or NULL */
    char **roles;      /* non-empty strings */
    size_t nroles;
    char **channels; /* valid channel names, to subscribe at once */
    size_t nchannels;
    /* RESULT, refresh */
    int expired; /* {"expired": true}: close 4001 */
    /* RESULT, publish (replacement, or NULL: publish as sent) and rpc (the
     * reply's data, JSON null when the backend gave null) */
    json_t *data;

    /* ERROR */
    char *code;    /* [a-z][a-z0-9_]*, at most HR_PROXY_MAX_CODE bytes */
    char *message; /* may be "" */

    /* DISCONNECT */
    int close_code; /* 4500..4999 */
    char *reason;   /* may be "" */

    /* UNAVAILABLE: why, for logs; names the field, never quotes the body */
    char why[192];
} hr_proxy_answer;

/* Turns the backend's answer (the HTTP status and body) to a call of kind
 * into *out (overwritten; clear it afterwards whatever the outcome).
 * Returns out->outcome. */
hr_proxy_outcome hr_proxy_parse(hr_proxy_kind kind, long http_status, const char *body, size_t len,
                                const hr_proxy_limits *lim, hr_proxy_answer *out);

/* Fills *out as UNAVAILABLE with a formatted why (a transport failure:
 * timeout, refused, overloaded). */
void hr_proxy_unavailable(hr_proxy_answer *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Frees what the answer owns and zeroes it. */
void hr_proxy_answer_clear(hr_proxy_answer *a);

/* A connect RESULT as the identity of the connection: user, roles, info
 * and expire_at move from a into *id (which the caller clears); the
 * answer's channels stay in a (they are subscriptions, not grants).
 * Returns 0, or -1 when a is not a connect RESULT (id untouched). */
int hr_proxy_answer_identity(hr_proxy_answer *a, auth_identity *id);

#endif
