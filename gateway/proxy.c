/*
 * proxy.c - requests and answers of the backend proxy (see proxy.h).
 *
 * Parsing is strict about what Herald acts on and lenient about the rest:
 * a field Herald uses must have exactly the documented type and range (a
 * mistyped one makes the whole answer "unavailable", logged with the
 * field's name, so a backend bug shows up as a clear line in the log and
 * not as a half-applied answer); keys Herald does not know are ignored, so
 * backends written for a later version keep working.
 */
#include "gateway/proxy.h"
#include "channels/channels.h"
#include "common/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const kind_names[HR_PROXY_NKINDS] = {"connect", "refresh", "subscribe",
                                                        "publish", "rpc"};

const char *hr_proxy_kind_name(hr_proxy_kind k)
{
    return (unsigned)k < HR_PROXY_NKINDS ? kind_names[k] : "unknown";
}

/*---- Requests --------------------------------------------------------------*/

/* Sets key to a string; 0, or -1 when s is NULL or not UTF-8. */
static int set_string(json_t *o, const char *key, const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? json_object_set_new(o, key, v) : -1;
}

/* user: NULL (an anonymous connection) is JSON null. */
static int set_user(json_t *o, const char *user)
{
    return user ? set_string(o, "user", user) : json_object_set_new(o, "user", json_null());
}

/* data is borrowed: the object holds a reference only while the body is
 * serialised (no copy of a large RPC payload); the value is not modified. */
static int set_data(json_t *o, const json_t *data, int required)
{
    if (!data)
        return required ? json_object_set_new(o, "data", json_null()) : 0;
    return json_object_set(o, "data", (json_t *)data);
}

char *hr_proxy_request_body(const hr_proxy_request *rq, size_t *len)
{
    json_t *o = json_object();
    int bad = set_string(o, "client", rq->client);
    switch (rq->kind) {
    case HR_PROXY_CONNECT:
        bad |= set_string(o, "transport", rq->transport);
        bad |= set_string(o, "remote_addr", rq->remote_addr);
        bad |= set_data(o, rq->data, 0);
        break;
    case HR_PROXY_REFRESH:
        bad |= set_user(o, rq->user);
        break;
    case HR_PROXY_SUBSCRIBE:
        bad |= set_user(o, rq->user);
        bad |= set_string(o, "channel", rq->channel);
        bad |= set_data(o, rq->data, 0);
        break;
    case HR_PROXY_PUBLISH:
        bad |= set_user(o, rq->user);
        bad |= set_string(o, "channel", rq->channel);
        bad |= set_data(o, rq->data, 1);
        break;
    case HR_PROXY_RPC:
        bad |= set_user(o, rq->user);
        bad |= set_string(o, "method", rq->method);
        bad |= set_data(o, rq->data, 1);
        break;
    default:
        bad = -1;
    }
    char *s = bad ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s && len)
        *len = strlen(s);
    return s;
}

/*---- Forwarded headers -----------------------------------------------------*/

/* RFC 9110 tchar */
static int tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

int hr_proxy_header_allowed(const char *name)
{
    /* the HTTP client's own framing and routing, hop-by-hop headers, and
     * the header that tells the backend a call comes from Herald */
    static const char *const owned[] = {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "expect",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "x-herald-proxy-key",
        "http2-settings",
    };
    if (!name || !*name || strlen(name) > 128)
        return 0;
    for (const char *p = name; *p; p++)
        if (!tchar((unsigned char)*p))
            return 0;
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
        if (!strcasecmp(name, owned[i]))
            return 0;
    return 1;
}

/* Field values may hold visible characters, spaces and tabs (and obs-text);
 * any other control character ends the value's chance to be forwarded. */
static int value_ok(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

hr_proxy_headers *hr_proxy_headers_build(char *const *allow, size_t nallow, const hr_header *hdrs,
                                         size_t nhdrs, const char *key)
{
    static const char key_name[] = "X-Herald-Proxy-Key";
    /* first pass: which headers go, and how many bytes they take */
    const char **name_of = nhdrs ? hr_calloc(nhdrs, sizeof(*name_of)) : NULL;
    size_t n = 0, bytes = 0;
    for (size_t i = 0; i < nhdrs; i++) {
        if (!hdrs[i].name || !hdrs[i].value || !value_ok(hdrs[i].value))
            continue;
        for (size_t k = 0; k < nallow; k++) {
            if (!strcasecmp(hdrs[i].name, allow[k]) && hr_proxy_header_allowed(allow[k])) {
                name_of[i] = allow[k];
                n++;
                bytes += strlen(allow[k]) + 2 + strlen(hdrs[i].value) + 1;
                break;
            }
        }
    }
    int with_key = key && *key && value_ok(key);
    if (with_key) {
        n++;
        bytes += sizeof(key_name) + 2 + strlen(key);
    }
    hr_proxy_headers *h = hr_malloc(sizeof(*h) + n * sizeof(h->line[0]) + bytes);
    char *p = (char *)&h->line[n];
    h->n = 0;
    for (size_t i = 0; i < nhdrs; i++) {
        if (!name_of[i])
            continue;
        h->line[h->n++] = p;
        p += sprintf(p, "%s: %s", name_of[i], hdrs[i].value) + 1;
    }
    if (with_key) {
        h->line[h->n++] = p;
        sprintf(p, "%s: %s", key_name, key);
    }
    free(name_of);
    return h;
}

/*---- Answers ---------------------------------------------------------------*/

void hr_proxy_answer_clear(hr_proxy_answer *a)
{
    free(a->user);
    json_decref(a->info);
    for (size_t i = 0; i < a->nroles; i++)
        free(a->roles[i]);
    free(a->roles);
    for (size_t i = 0; i < a->nchannels; i++)
        free(a->channels[i]);
    free(a->channels);
    json_decref(a->data);
    free(a->code);
    free(a->message);
    free(a->reason);
    memset(a, 0, sizeof(*a));
}

/* Clears a and makes it UNAVAILABLE with a formatted why; returns the
 * outcome so every refusal reads `return refuse(...)`. */
static hr_proxy_outcome vrefuse(hr_proxy_answer *a, const char *fmt, va_list ap)
{
    hr_proxy_answer_clear(a);
    a->outcome = HR_PROXY_UNAVAILABLE;
    vsnprintf(a->why, sizeof(a->why), fmt, ap);
    return HR_PROXY_UNAVAILABLE;
}

__attribute__((format(printf, 2, 3))) static hr_proxy_outcome refuse(hr_proxy_answer *a,
                                                                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(a, fmt, ap);
    va_end(ap);
    return HR_PROXY_UNAVAILABLE;
}

void hr_proxy_unavailable(hr_proxy_answer *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(out, fmt, ap);
    va_end(ap);
}

/* A string without NUL bytes of 1 (or 0 when may_be_empty) to max bytes. */
static int text_ok(const json_t *v, size_t max, int may_be_empty)
{
    if (!json_is_string(v))
        return 0;
    size_t len = json_string_length(v);
    return len <= max && (len || may_be_empty) && strlen(json_string_value(v)) == len;
}

/* A whole number of unix seconds; 0 means "does not expire". */
static int expire_ok(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) >= 0 &&
           json_integer_value(v) <= HR_PROXY_MAX_EXPIRE;
}

/* An array of strings into a malloc'ed vector; check decides each item.
 * Returns 0, or -1 naming the bad element in why. */
static int string_array(const json_t *arr, size_t max_items, int (*check)(const json_t *, size_t),
                        size_t arg, char ***out, size_t *nout, const char *field, char *why,
                        size_t whylen)
{
    if (!json_is_array(arr)) {
        snprintf(why, whylen, "\"result.%s\" is not an array", field);
        return -1;
    }
    size_t n = json_array_size(arr);
    if (n > max_items) {
        snprintf(why, whylen, "\"result.%s\" has %zu entries (at most %zu)", field, n, max_items);
        return -1;
    }
    char **v = n ? hr_calloc(n, sizeof(*v)) : NULL;
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(arr, i);
        if (!check(item, arg)) {
            snprintf(why, whylen, "\"result.%s[%zu]\" is not a valid %s", field, i,
                     !strcmp(field, "roles") ? "role" : "channel name");
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return -1;
        }
        v[i] = hr_strdup(json_string_value(item));
    }
    *out = v;
    *nout = n;
    return 0;
}

static int role_ok(const json_t *v, size_t unused)
{
    (void)unused;
    return text_ok(v, HR_PROXY_MAX_ROLE, 0);
}

static int channel_ok(const json_t *v, size_t max_len)
{
    return json_is_string(v) &&
           chan_name_valid(json_string_value(v), json_string_length(v), max_len);
}

/* {"user","expire_at"?,"info"?,"roles"?,"channels"?} */
static hr_proxy_outcome parse_connect(const json_t *r, const hr_proxy_limits *lim,
                                      hr_proxy_answer *a)
{
    const json_t *user = json_object_get(r, "user"), *exp = json_object_get(r, "expire_at"),
                 *info = json_object_get(r, "info"), *roles = json_object_get(r, "roles"),
                 *chans = json_object_get(r, "channels");
    if (!text_ok(user, HR_PROXY_MAX_USER, 0))
        return refuse(a, "\"result.user\" is not a string of 1 to %d bytes", HR_PROXY_MAX_USER);
    if (exp && !json_is_null(exp) && !expire_ok(exp))
        return refuse(a, "\"result.expire_at\" is not a whole number of unix seconds");
    if (info && !json_is_null(info) && !json_is_object(info))
        return refuse(a, "\"result.info\" is not an object");
    char why[sizeof(a->why)];
    if (roles && !json_is_null(roles) &&
        string_array(roles, HR_PROXY_MAX_ROLES, role_ok, 0, &a->roles, &a->nroles, "roles", why,
                     sizeof(why)) < 0)
        return refuse(a, "%s", why);
    if (chans && !json_is_null(chans) &&
        string_array(chans, lim->max_channels, channel_ok, lim->max_channel_len, &a->channels,
                     &a->nchannels, "channels", why, sizeof(why)) < 0)
        return refuse(a, "%s", why);
    a->user = hr_strdup(json_string_value(user));
    a->expire_at = exp && json_is_integer(exp) ? json_integer_value(exp) : 0;
    if (info && json_is_object(info))
        a->info = json_incref((json_t *)info);
    return a->outcome = HR_PROXY_RESULT;
}

/* {"expire_at"} or {"expired": true} */
static hr_proxy_outcome parse_refresh(const json_t *r, hr_proxy_answer *a)
{
    const json_t *expired = json_object_get(r, "expired"), *exp = json_object_get(r, "expire_at");
    if (expired && !json_is_boolean(expired))
        return refuse(a, "\"result.expired\" is not true or false");
    if (json_is_true(expired)) {
        a->expired = 1;
        return a->outcome = HR_PROXY_RESULT;
    }
    if (!exp || !expire_ok(exp))
        return refuse(a, "\"result.expire_at\" is missing or not a whole number of unix seconds");
    a->expire_at = json_integer_value(exp);
    return a->outcome = HR_PROXY_RESULT;
}

/* Keeps a reference to result.data; publish: optional, rpc: required. */
static hr_proxy_outcome parse_data(const json_t *r, int required, hr_proxy_answer *a)
{
    json_t *data = json_object_get(r, "data");
    if (!data && required)
        return refuse(a, "\"result.data\" is missing");
    a->data = data ? json_incref(data) : NULL;
    return a->outcome = HR_PROXY_RESULT;
}

/* {"code","message"?}: the code reaches the client as an error code, so it
 * keeps to the shape of Herald's own ("forbidden", "not_found", ...). */
static hr_proxy_outcome parse_error(const json_t *e, hr_proxy_answer *a)
{
    if (!json_is_object(e))
        return refuse(a, "\"error\" is not an object");
    const json_t *code = json_object_get(e, "code"), *msg = json_object_get(e, "message");
    int ok = text_ok(code, HR_PROXY_MAX_CODE, 0);
    const char *c = ok ? json_string_value(code) : "";
    ok = ok && c[0] >= 'a' && c[0] <= 'z';
    for (const char *p = c; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
    if (!ok)
        return refuse(a,
                      "\"error.code\" is not a code of 1 to %d bytes of [a-z0-9_] starting "
                      "with a letter",
                      HR_PROXY_MAX_CODE);
    if (msg && !json_is_null(msg) && !text_ok(msg, HR_PROXY_MAX_MESSAGE, 1))
        return refuse(a, "\"error.message\" is not a string of at most %d bytes",
                      HR_PROXY_MAX_MESSAGE);
    a->code = hr_strdup(c);
    a->message = hr_strdup(json_is_string(msg) ? json_string_value(msg) : "");
    return a->outcome = HR_PROXY_ERROR;
}

/* {"code": 4500..4999, "reason"?} */
static hr_proxy_outcome parse_disconnect(const json_t *d, hr_proxy_answer *a)
{
    if (!json_is_object(d))
        return refuse(a, "\"disconnect\" is not an object");
    const json_t *code = json_object_get(d, "code"), *reason = json_object_get(d, "reason");
    if (!json_is_integer(code) || json_integer_value(code) < 4500 ||
        json_integer_value(code) > 4999)
        return refuse(a, "\"disconnect.code\" is not a whole number from 4500 to 4999");
    if (reason && !json_is_null(reason) && !text_ok(reason, HR_PROXY_MAX_REASON, 1))
        return refuse(a, "\"disconnect.reason\" is not a string of at most %d bytes",
                      HR_PROXY_MAX_REASON);
    a->close_code = (int)json_integer_value(code);
    a->reason = hr_strdup(json_is_string(reason) ? json_string_value(reason) : "");
    return a->outcome = HR_PROXY_DISCONNECT;
}

hr_proxy_outcome hr_proxy_parse(hr_proxy_kind kind, long http_status, const char *body, size_t len,
                                const hr_proxy_limits *lim, hr_proxy_answer *out)
{
    memset(out, 0, sizeof(*out));
    if ((unsigned)kind >= HR_PROXY_NKINDS)
        return refuse(out, "unknown proxy kind");
    if (http_status != 200)
        return refuse(out, "the backend answered with status %ld (expected 200)", http_status);
    json_error_t je;
    json_t *root = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!root)
        return refuse(out, "the body is not JSON (line %d column %d)", body ? je.line : 0,
                      body ? je.column : 0);
    hr_proxy_outcome rc;
    json_t *result = json_is_object(root) ? json_object_get(root, "result") : NULL,
           *error = json_is_object(root) ? json_object_get(root, "error") : NULL,
           *disc = json_is_object(root) ? json_object_get(root, "disconnect") : NULL;
    if (!json_is_object(root))
        rc = refuse(out, "the body is not a JSON object");
    else if (!!result + !!error + !!disc != 1)
        rc = refuse(out, "the body has %s of \"result\", \"error\" and \"disconnect\"",
                    result || error || disc ? "more than one" : "none");
    else if (error)
        rc = parse_error(error, out);
    else if (disc)
        rc = parse_disconnect(disc, out);
    else if (!json_is_object(result))
        rc = refuse(out, "\"result\" is not an object");
    else {
        switch (kind) {
        case HR_PROXY_CONNECT:
            rc = parse_connect(result, lim, out);
            break;
        case HR_PROXY_REFRESH:
            rc = parse_refresh(result, out);
            break;
        case HR_PROXY_SUBSCRIBE:
            rc = out->outcome = HR_PROXY_RESULT;
            break;
        case HR_PROXY_PUBLISH:
            rc = parse_data(result, 0, out);
            break;
        case HR_PROXY_RPC:
        default:
            rc = parse_data(result, 1, out);
            break;
        }
    }
    json_decref(root);
    return rc;
}

int hr_proxy_answer_identity(hr_proxy_answer *a, auth_identity *id)
{
    if (a->outcome != HR_PROXY_RESULT || !a->user)
        return -1;
    id->sub = a->user;
    id->roles = a->roles;
    id->nroles = a->nroles;
    id->info = a->info;
    id->exp = a->expire_at;
    a->user = NULL;
    a->roles = NULL;
    a->nroles = 0;
    a->info = NULL;
    return 0;
}
