/* tests/unit/gateway/proxy.c - the backend proxy protocol of gateway/proxy.c (SPEC §8):
 * request bodies, forwarded headers, and every rule an answer is checked
 * against. */
#include "gateway/proxy.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>

static const hr_proxy_limits LIM = {.max_channel_len = 32, .max_channels = 3};

/* Parses body as an answer to kind with status 200. */
static hr_proxy_outcome parse(hr_proxy_kind kind, const char *body, hr_proxy_answer *a)
{
    return hr_proxy_parse(kind, 200, body, strlen(body), &LIM, a);
}

/* Is body refused as an answer to kind, with why mentioning want? */
static int refused(hr_proxy_kind kind, const char *body, const char *want)
{
    hr_proxy_answer a;
    int ok =
        parse(kind, body, &a) == HR_PROXY_UNAVAILABLE && a.why[0] && (!want || strstr(a.why, want));
    if (!ok)
        fprintf(stderr, "  %s: %s -> outcome %d, why \"%s\" (want \"%s\")\n",
                hr_proxy_kind_name(kind), body, a.outcome, a.why, want ? want : "");
    hr_proxy_answer_clear(&a);
    return ok;
}

/* The body of rq as a JSON object (caller decrefs), or NULL. */
static json_t *body_of(const hr_proxy_request *rq)
{
    size_t len = 0;
    char *s = hr_proxy_request_body(rq, &len);
    if (!s)
        return NULL;
    json_t *o = json_loadb(s, len, 0, NULL);
    CHECK(o && strlen(s) == len);
    free(s);
    return o;
}

static const char *str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void test_kind_names(void)
{
    CHECK_STR(hr_proxy_kind_name(HR_PROXY_CONNECT), "connect");
    CHECK_STR(hr_proxy_kind_name(HR_PROXY_REFRESH), "refresh");
    CHECK_STR(hr_proxy_kind_name(HR_PROXY_SUBSCRIBE), "subscribe");
    CHECK_STR(hr_proxy_kind_name(HR_PROXY_PUBLISH), "publish");
    CHECK_STR(hr_proxy_kind_name(HR_PROXY_RPC), "rpc");
    CHECK_STR(hr_proxy_kind_name((hr_proxy_kind)99), "unknown");
}

static void test_request_bodies(void)
{
    json_t *data = json_pack("{s:s,s:i}", "room", "lobby", "n", 3);
    hr_proxy_request rq = {.kind = HR_PROXY_CONNECT,
                           .client = "node.1",
                           .transport = "websocket",
                           .remote_addr = "10.0.0.7",
                           .user = "ignored",
                           .channel = "ignored"};
    json_t *o = body_of(&rq);
    CHECK(o && json_object_size(o) == 3);
    CHECK_STR(str(o, "client"), "node.1");
    CHECK_STR(str(o, "transport"), "websocket");
    CHECK_STR(str(o, "remote_addr"), "10.0.0.7");
    CHECK(!json_object_get(o, "data")); /* no connect data: omitted */
    json_decref(o);
    rq.data = data;
    o = body_of(&rq);
    CHECK(o && json_equal(json_object_get(o, "data"), data));
    json_decref(o);

    rq = (hr_proxy_request){.kind = HR_PROXY_REFRESH, .client = "node.1", .user = "alice"};
    o = body_of(&rq);
    CHECK(o && json_object_size(o) == 2 && !strcmp(str(o, "user"), "alice"));
    json_decref(o);

    rq = (hr_proxy_request){
        .kind = HR_PROXY_SUBSCRIBE, .client = "n.2", .user = "bob", .channel = "chat:a"};
    o = body_of(&rq);
    CHECK(o && json_object_size(o) == 3 && !strcmp(str(o, "channel"), "chat:a"));
    json_decref(o);

    rq.kind = HR_PROXY_PUBLISH; /* publish always carries data: null when none */
    o = body_of(&rq);
    CHECK(o && json_object_size(o) == 4 && json_is_null(json_object_get(o, "data")));
    json_decref(o);
    rq.data = data;
    o = body_of(&rq);
    CHECK(o && json_equal(json_object_get(o, "data"), data));
    json_decref(o);

    /* an anonymous connection has no user: null */
    rq = (hr_proxy_request){.kind = HR_PROXY_SUBSCRIBE, .client = "n.2", .channel = "public:a"};
    o = body_of(&rq);
    CHECK(o && json_is_null(json_object_get(o, "user")));
    json_decref(o);

    rq = (hr_proxy_request){.kind = HR_PROXY_RPC,
                            .client = "n.3",
                            .user = "carol",
                            .method = "orders.list",
                            .data = data};
    o = body_of(&rq);
    CHECK(o && json_object_size(o) == 4 && !strcmp(str(o, "method"), "orders.list") &&
          json_equal(json_object_get(o, "data"), data));
    json_decref(o);
    CHECK(data->refcount == 1); /* borrowed, not kept */

    /* a field the kind needs is missing, or a string is not UTF-8 */
    rq.method = NULL;
    CHECK(!hr_proxy_request_body(&rq, NULL));
    rq = (hr_proxy_request){.kind = HR_PROXY_CONNECT, .client = "n.1", .transport = "sse"};
    CHECK(!hr_proxy_request_body(&rq, NULL));
    rq =
        (hr_proxy_request){.kind = HR_PROXY_REFRESH, .client = "n.1", .user = "bad \xff\xfe utf-8"};
    CHECK(!hr_proxy_request_body(&rq, NULL));
    rq = (hr_proxy_request){.kind = (hr_proxy_kind)7, .client = "n.1"};
    CHECK(!hr_proxy_request_body(&rq, NULL));
    json_decref(data);
}

static void test_headers(void)
{
    char *allow[] = {"Cookie", "Authorization", "User-Agent", "X-Forwarded-For", "Host"};
    hr_header in[] = {
        {"cookie", "sessionid=abc; csrftoken=x"},
        {"X-Secret", "do not forward"},
        {"Host", "herald.example"}, /* configured, but the HTTP client's own */
        {"USER-AGENT", "Mozilla/5.0\tthing"},
        {"X-Forwarded-For", "1.2.3.4"},
        {"X-Forwarded-For", "5.6.7.8"},
        {"Authorization", "Bearer x\r\nX-Injected: 1"}, /* a smuggled header: dropped */
        {"Origin", "https://app.example"},              /* not configured */
    };
    hr_proxy_headers *h = hr_proxy_headers_build(allow, 5, in, 8, "k3y");
    CHECK(h->n == 5);
    if (h->n == 5) {
        CHECK_STR(h->line[0], "Cookie: sessionid=abc; csrftoken=x");
        CHECK_STR(h->line[1], "User-Agent: Mozilla/5.0\tthing");
        CHECK_STR(h->line[2], "X-Forwarded-For: 1.2.3.4");
        CHECK_STR(h->line[3], "X-Forwarded-For: 5.6.7.8");
        CHECK_STR(h->line[4], "X-Herald-Proxy-Key: k3y");
    }
    free(h);
    /* no key, nothing configured: nothing at all */
    h = hr_proxy_headers_build(NULL, 0, in, 8, NULL);
    CHECK(h->n == 0);
    free(h);
    h = hr_proxy_headers_build(allow, 5, NULL, 0, "");
    CHECK(h->n == 0);
    free(h);
    /* a key that could not be a header value is not sent */
    h = hr_proxy_headers_build(allow, 1, in, 1, "bad\nkey");
    CHECK(h->n == 1 && !strcmp(h->line[0], "Cookie: sessionid=abc; csrftoken=x"));
    free(h);

    CHECK(hr_proxy_header_allowed("Cookie"));
    CHECK(hr_proxy_header_allowed("X-Request-Id"));
    CHECK(hr_proxy_header_allowed("accept-language"));
    const char *no[] = {"Host",
                        "content-length",
                        "Content-Type",
                        "Transfer-Encoding",
                        "Connection",
                        "Expect",
                        "Upgrade",
                        "TE",
                        "Keep-Alive",
                        "X-Herald-Proxy-Key",
                        "",
                        "Bad Name",
                        "Bad:Name",
                        "Ünicode"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        CHECK(!hr_proxy_header_allowed(no[i]));
    CHECK(!hr_proxy_header_allowed(NULL));
}

static void test_envelope(void)
{
    hr_proxy_answer a;
    /* anything but 200 */
    long statuses[] = {201, 204, 301, 302, 400, 403, 500, 503};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        const char *body = "{\"result\":{}}";
        CHECK(hr_proxy_parse(HR_PROXY_SUBSCRIBE, statuses[i], body, strlen(body), &LIM, &a) ==
              HR_PROXY_UNAVAILABLE);
        CHECK(strstr(a.why, "status"));
        hr_proxy_answer_clear(&a);
    }
    CHECK(hr_proxy_parse(HR_PROXY_SUBSCRIBE, 200, NULL, 0, &LIM, &a) == HR_PROXY_UNAVAILABLE);
    hr_proxy_answer_clear(&a);
    CHECK(refused(HR_PROXY_SUBSCRIBE, "", "not JSON"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "<html>SECRET</html>", "not JSON"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "{\"result\":{}} trailing", "not JSON"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "[{\"result\":{}}]", "not a JSON object"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "{}", "none"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "{\"ok\":true}", "none"));
    CHECK(
        refused(HR_PROXY_SUBSCRIBE, "{\"result\":{},\"error\":{\"code\":\"x\"}}", "more than one"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "{\"result\":{},\"result\":{}}", "not JSON"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "{\"result\":[]}", "\"result\" is not an object"));
    CHECK(refused(HR_PROXY_SUBSCRIBE, "{\"result\":null}", "\"result\" is not an object"));
    /* the why never quotes the body */
    CHECK(parse(HR_PROXY_SUBSCRIBE, "{\"SECRET\":1}", &a) == HR_PROXY_UNAVAILABLE &&
          !strstr(a.why, "SECRET"));
    hr_proxy_answer_clear(&a);
    /* keys Herald does not know are ignored */
    CHECK(parse(HR_PROXY_SUBSCRIBE, "{\"result\":{\"later\":1},\"meta\":2}", &a) ==
          HR_PROXY_RESULT);
    hr_proxy_answer_clear(&a);
}

static void test_error_answers(void)
{
    hr_proxy_answer a;
    CHECK(parse(HR_PROXY_CONNECT, "{\"error\":{\"code\":\"forbidden\",\"message\":\"no\"}}", &a) ==
          HR_PROXY_ERROR);
    CHECK_STR(a.code, "forbidden");
    CHECK_STR(a.message, "no");
    CHECK(!a.user);
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_RPC, "{\"error\":{\"code\":\"out_of_stock_2\"}}", &a) == HR_PROXY_ERROR);
    CHECK_STR(a.code, "out_of_stock_2");
    CHECK_STR(a.message, "");
    hr_proxy_answer_clear(&a);
    CHECK(refused(HR_PROXY_RPC, "{\"error\":\"forbidden\"}", "\"error\" is not an object"));
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{}}", "error.code"));
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{\"code\":403}}", "error.code"));
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{\"code\":\"\"}}", "error.code"));
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{\"code\":\"Forbidden\"}}", "error.code"));
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{\"code\":\"9lives\"}}", "error.code"));
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{\"code\":\"a b\"}}", "error.code"));
    /* jansson refuses \u0000 (no JSON_ALLOW_NUL) before Herald looks */
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{\"code\":\"a\\u0000b\"}}", NULL));
    char big[256];
    snprintf(big, sizeof(big), "{\"error\":{\"code\":\"%065d\"}}", 0);
    big[18] = 'a'; /* a letter first: only the length is wrong */
    CHECK(refused(HR_PROXY_RPC, big, "error.code"));
    CHECK(refused(HR_PROXY_RPC, "{\"error\":{\"code\":\"x\",\"message\":5}}", "error.message"));
    char *long_msg = malloc(HR_PROXY_MAX_MESSAGE + 64);
    int n = sprintf(long_msg, "{\"error\":{\"code\":\"x\",\"message\":\"");
    memset(long_msg + n, 'm', HR_PROXY_MAX_MESSAGE + 1);
    strcpy(long_msg + n + HR_PROXY_MAX_MESSAGE + 1, "\"}}");
    CHECK(refused(HR_PROXY_RPC, long_msg, "error.message"));
    strcpy(long_msg + n + HR_PROXY_MAX_MESSAGE, "\"}}"); /* exactly the limit */
    CHECK(parse(HR_PROXY_RPC, long_msg, &a) == HR_PROXY_ERROR &&
          strlen(a.message) == HR_PROXY_MAX_MESSAGE);
    hr_proxy_answer_clear(&a);
    free(long_msg);
}

static void test_disconnect_answers(void)
{
    hr_proxy_answer a;
    CHECK(parse(HR_PROXY_SUBSCRIBE, "{\"disconnect\":{\"code\":4500,\"reason\":\"banned\"}}", &a) ==
          HR_PROXY_DISCONNECT);
    CHECK(a.close_code == 4500);
    CHECK_STR(a.reason, "banned");
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_CONNECT, "{\"disconnect\":{\"code\":4999}}", &a) == HR_PROXY_DISCONNECT);
    CHECK(a.close_code == 4999 && a.reason && !*a.reason);
    hr_proxy_answer_clear(&a);
    const char *bad[] = {
        "{\"disconnect\":{\"code\":4499}}",
        "{\"disconnect\":{\"code\":5000}}",
        "{\"disconnect\":{\"code\":1000}}",
        "{\"disconnect\":{\"code\":4500.0}}",
        "{\"disconnect\":{\"code\":\"4500\"}}",
        "{\"disconnect\":{}}",
        "{\"disconnect\":4500}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(refused(HR_PROXY_CONNECT, bad[i], "disconnect"));
    char body[256];
    char reason[HR_PROXY_MAX_REASON + 2];
    memset(reason, 'r', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = 0; /* 124 bytes: over a close frame */
    snprintf(body, sizeof(body), "{\"disconnect\":{\"code\":4501,\"reason\":\"%s\"}}", reason);
    CHECK(refused(HR_PROXY_CONNECT, body, "disconnect.reason"));
    reason[HR_PROXY_MAX_REASON] = 0;
    snprintf(body, sizeof(body), "{\"disconnect\":{\"code\":4501,\"reason\":\"%s\"}}", reason);
    CHECK(parse(HR_PROXY_CONNECT, body, &a) == HR_PROXY_DISCONNECT);
    hr_proxy_answer_clear(&a);
    CHECK(refused(HR_PROXY_CONNECT, "{\"disconnect\":{\"code\":4501,\"reason\":[]}}",
                  "disconnect.reason"));
}

static void test_connect_result(void)
{
    hr_proxy_answer a;
    CHECK(parse(HR_PROXY_CONNECT,
                "{\"result\":{\"user\":\"42\",\"expire_at\":1900000000,\"info\":{\"name\":"
                "\"Ann\"},\"roles\":[\"staff\",\"admin\"],\"channels\":[\"user:42\",\"news\"]}}",
                &a) == HR_PROXY_RESULT);
    CHECK_STR(a.user, "42");
    CHECK(a.expire_at == 1900000000);
    CHECK(json_is_object(a.info) &&
          !strcmp(json_string_value(json_object_get(a.info, "name")), "Ann"));
    CHECK(a.nroles == 2 && !strcmp(a.roles[0], "staff") && !strcmp(a.roles[1], "admin"));
    CHECK(a.nchannels == 2 && !strcmp(a.channels[0], "user:42") && !strcmp(a.channels[1], "news"));
    auth_identity id = {0};
    CHECK(hr_proxy_answer_identity(&a, &id) == 0);
    CHECK_STR(id.sub, "42");
    CHECK(id.nroles == 2 && id.exp == 1900000000 && json_is_object(id.info));
    CHECK(!a.user && !a.roles && !a.info && a.nchannels == 2); /* channels stay */
    auth_identity_clear(&id);
    hr_proxy_answer_clear(&a);

    /* only user is required; nulls mean absent */
    CHECK(parse(HR_PROXY_CONNECT,
                "{\"result\":{\"user\":\"u\",\"expire_at\":null,\"info\":null,\"roles\":null,"
                "\"channels\":null}}",
                &a) == HR_PROXY_RESULT);
    CHECK(a.expire_at == 0 && !a.info && !a.nroles && !a.nchannels);
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"expire_at\":0}}", &a) ==
          HR_PROXY_RESULT);
    CHECK(a.expire_at == 0);
    hr_proxy_answer_clear(&a);

    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{}}", "result.user"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":42}}", "result.user"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"\"}}", "result.user"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":null}}", "result.user"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"a\\u0000b\"}}", NULL));
    char body[512];
    snprintf(body, sizeof(body), "{\"result\":{\"user\":\"%0256d\"}}", 7);
    CHECK(refused(HR_PROXY_CONNECT, body, "result.user"));
    const char *bad_exp[] = {"1.5", "-1", "\"1900000000\"", "true", "253402300800"};
    for (size_t i = 0; i < sizeof(bad_exp) / sizeof(bad_exp[0]); i++) {
        snprintf(body, sizeof(body), "{\"result\":{\"user\":\"u\",\"expire_at\":%s}}", bad_exp[i]);
        CHECK(refused(HR_PROXY_CONNECT, body, "result.expire_at"));
    }
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"info\":[1]}}", "result.info"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"info\":\"x\"}}", "result.info"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"roles\":\"admin\"}}",
                  "result.roles"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"roles\":[\"a\",1]}}",
                  "result.roles[1]"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"roles\":[\"\"]}}",
                  "result.roles[0]"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"channels\":{}}}",
                  "result.channels"));
    CHECK(refused(HR_PROXY_CONNECT,
                  "{\"result\":{\"user\":\"u\",\"roles\":[\"ok\"],\"channels\":[\"a b\"]}}",
                  "result.channels[0]"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"channels\":[\"ok\",\"\"]}}",
                  "result.channels[1]"));
    CHECK(refused(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"channels\":[\"a\",[\"b\"]]}}",
                  "result.channels[1]"));
    /* LIM: names up to 32 bytes, 3 channels */
    CHECK(refused(
        HR_PROXY_CONNECT,
        "{\"result\":{\"user\":\"u\",\"channels\":[\"a23456789012345678901234567890123\"]}}",
        "result.channels[0]"));
    CHECK(refused(HR_PROXY_CONNECT,
                  "{\"result\":{\"user\":\"u\",\"channels\":[\"a\",\"b\",\"c\",\"d\"]}}",
                  "4 entries"));
    CHECK(parse(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"channels\":[\"a\",\"b\",\"c\"]}}",
                &a) == HR_PROXY_RESULT &&
          a.nchannels == 3);
    hr_proxy_answer_clear(&a);
    /* not a connect RESULT: no identity */
    auth_identity none = {0};
    CHECK(parse(HR_PROXY_CONNECT, "{\"error\":{\"code\":\"forbidden\"}}", &a) == HR_PROXY_ERROR);
    CHECK(hr_proxy_answer_identity(&a, &none) == -1 && !none.sub);
    hr_proxy_answer_clear(&a);
}

static void test_refresh_result(void)
{
    hr_proxy_answer a;
    CHECK(parse(HR_PROXY_REFRESH, "{\"result\":{\"expire_at\":1900000000}}", &a) ==
          HR_PROXY_RESULT);
    CHECK(a.expire_at == 1900000000 && !a.expired);
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_REFRESH, "{\"result\":{\"expired\":true}}", &a) == HR_PROXY_RESULT);
    CHECK(a.expired);
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_REFRESH, "{\"result\":{\"expired\":false,\"expire_at\":5}}", &a) ==
          HR_PROXY_RESULT);
    CHECK(!a.expired && a.expire_at == 5);
    hr_proxy_answer_clear(&a);
    CHECK(refused(HR_PROXY_REFRESH, "{\"result\":{}}", "result.expire_at"));
    CHECK(refused(HR_PROXY_REFRESH, "{\"result\":{\"expired\":false}}", "result.expire_at"));
    CHECK(refused(HR_PROXY_REFRESH, "{\"result\":{\"expired\":1}}", "result.expired"));
    CHECK(refused(HR_PROXY_REFRESH, "{\"result\":{\"expire_at\":\"soon\"}}", "result.expire_at"));
}

static void test_publish_rpc_results(void)
{
    hr_proxy_answer a;
    CHECK(parse(HR_PROXY_SUBSCRIBE, "{\"result\":{}}", &a) == HR_PROXY_RESULT);
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_PUBLISH, "{\"result\":{}}", &a) == HR_PROXY_RESULT && !a.data);
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_PUBLISH, "{\"result\":{\"data\":{\"text\":\"clean\"}}}", &a) ==
          HR_PROXY_RESULT);
    CHECK(json_is_object(a.data) &&
          !strcmp(json_string_value(json_object_get(a.data, "text")), "clean"));
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_PUBLISH, "{\"result\":{\"data\":null}}", &a) == HR_PROXY_RESULT);
    CHECK(json_is_null(a.data)); /* publish null instead */
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_RPC, "{\"result\":{\"data\":[1,2,3]}}", &a) == HR_PROXY_RESULT);
    CHECK(json_is_array(a.data) && json_array_size(a.data) == 3);
    hr_proxy_answer_clear(&a);
    CHECK(parse(HR_PROXY_RPC, "{\"result\":{\"data\":null}}", &a) == HR_PROXY_RESULT &&
          json_is_null(a.data));
    hr_proxy_answer_clear(&a);
    CHECK(refused(HR_PROXY_RPC, "{\"result\":{}}", "result.data"));
}

static void test_unavailable_helper(void)
{
    hr_proxy_answer a;
    CHECK(parse(HR_PROXY_CONNECT, "{\"result\":{\"user\":\"u\",\"roles\":[\"r\"]}}", &a) ==
          HR_PROXY_RESULT);
    hr_proxy_unavailable(&a, "timeout after %d ms", 5000); /* clears what a held */
    CHECK(a.outcome == HR_PROXY_UNAVAILABLE && !a.user && !a.roles);
    CHECK_STR(a.why, "timeout after 5000 ms");
    hr_proxy_answer_clear(&a);
    CHECK(hr_proxy_parse((hr_proxy_kind)9, 200, "{}", 2, &LIM, &a) == HR_PROXY_UNAVAILABLE);
    hr_proxy_answer_clear(&a);
}

int main(void)
{
    RUN(test_kind_names);
    RUN(test_request_bodies);
    RUN(test_headers);
    RUN(test_envelope);
    RUN(test_error_answers);
    RUN(test_disconnect_answers);
    RUN(test_connect_result);
    RUN(test_refresh_result);
    RUN(test_publish_rpc_results);
    RUN(test_unavailable_helper);
    return TEST_DONE();
}
