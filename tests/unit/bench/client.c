/* Unit tests for bench/client.c, the pure parts of the loadgen's sockets:
 * the upgrade request and response, HTTP responses, frames from a server,
 * fragmented messages, close replies, payload padding, the fault table. */
#include "bench/client.h"
#include "testing.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void upgrade(void)
{
    char req[1024], accept[29];
    uint64_t rng = 42;
    size_t n = bc_upgrade_request(req, sizeof req, "/ws?token=t", "127.0.0.1", 8080, 1, NULL, &rng,
                                  accept);
    CHECK(n == strlen(req));
    CHECK(!strncmp(req, "GET /ws?token=t HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n", 48));
    CHECK(strstr(req, "permessage-deflate") != NULL);
    CHECK(n > 4 && !strcmp(req + n - 4, "\r\n\r\n"));
    /* the accept key is the one the key in the request asks for */
    const char *k = strstr(req, "Sec-WebSocket-Key: ");
    char want[29];
    ws_accept_key(k + 19, 24, want);
    CHECK_STR(accept, want);
    CHECK(strlen(accept) == 28);
    n = bc_upgrade_request(req, sizeof req, "/ws", "h", 1, 0, "Cookie: a=b\r\n", &rng, accept);
    CHECK(strstr(req, "Extensions") == NULL && n == strlen(req));
    CHECK(strstr(req, "\r\nCookie: a=b\r\n\r\n") != NULL);

    char resp[512];
    int len = snprintf(resp, sizeof resp,
                       "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: %s\r\n"
                       "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                       accept);
    int status = 0, pmd = 0;
    CHECK(bc_upgrade_response(resp, (size_t)len - 1, 16384, accept, &status, &pmd) == 0);
    CHECK(bc_upgrade_response(resp, (size_t)len, 16384, accept, &status, &pmd) == len);
    CHECK(status == 101 && pmd == 1);
    CHECK(bc_upgrade_response(resp, (size_t)len - 1, 10, accept, &status, &pmd) == -EMSGSIZE);
    char other[29];
    memcpy(other, accept, 29);
    other[0] = other[0] == 'A' ? 'B' : 'A';
    CHECK(bc_upgrade_response(resp, (size_t)len, 16384, other, &status, &pmd) == -EACCES);
    const char *refused = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    CHECK(bc_upgrade_response(refused, strlen(refused), 16384, accept, &status, &pmd) ==
          -ECONNREFUSED);
    CHECK(status == 401);
    CHECK(bc_fault(-ECONNREFUSED) == BC_HTTP_STATUS && bc_fault(-EACCES) == BC_BAD_ACCEPT);
    CHECK(bc_fault(-EMSGSIZE) == BC_BAD_HTTP && bc_fault(-EBADMSG) == BC_BAD_HTTP);
}

static void http_responses(void)
{
    const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503 X\r\n"
                      "content-length: 0\r\n\r\n";
    size_t n = strlen(two);
    int status = 0;
    int first = bc_http_response(two, n, 16384, &status);
    CHECK(first == 40 && status == 200);
    CHECK(bc_http_response(two + first, n - (size_t)first, 16384, &status) ==
              (int)(n - (size_t)first) &&
          status == 503);
    CHECK(bc_http_response(two, 39, 16384, &status) == 0); /* body incomplete */
    CHECK(bc_http_response(two, 20, 16384, &status) == 0); /* head incomplete */
    CHECK(bc_http_response(two, 20, 10, &status) == -EMSGSIZE);
    const char *chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n";
    CHECK(bc_http_response(chunked, strlen(chunked), 16384, &status) == -EBADMSG);
}

static void frames(void)
{
    hr_buf out = {0};
    uint64_t rng = 7;
    bc_ws_frame(&out, &rng, HR_WS_OP_TEXT, "hello", 5);
    CHECK(out.len == 2 + 4 + 5);
    hr_ws_frame f;
    uint8_t *p = (uint8_t *)out.data;
    /* masked (as a client sends it): unmasked in place, f.masked says so */
    CHECK(bc_ws_next(p, out.len, 100, 0, &f) == (int)out.len);
    CHECK(f.masked && f.fin && f.opcode == HR_WS_OP_TEXT && !memcmp(p + f.hdrlen, "hello", 5));
    CHECK(bc_ws_next(p, out.len - 1, 100, 0, &f) == 0);
    CHECK(bc_ws_next(p, out.len, 4, 0, &f) == -E2BIG);
    p[0] |= 0x40; /* RSV1 without permessage-deflate */
    CHECK(bc_ws_next(p, out.len, 100, 0, &f) == -EPROTO);
    CHECK(bc_ws_next(p, out.len, 100, 1, &f) == (int)out.len && f.rsv1);
    CHECK(bc_fault(-EPROTO) == BC_BAD_FRAME && bc_fault(-E2BIG) == BC_TOO_BIG);

    /* a close frame is answered with its code, masked */
    hr_buf_reset(&out);
    const uint8_t close[] = {0x03, 0xe9, 'b', 'y', 'e'};
    CHECK(bc_ws_close_reply(&out, &rng, close, sizeof close) == 1001);
    p = (uint8_t *)out.data;
    CHECK(bc_ws_next(p, out.len, 100, 0, &f) == (int)out.len);
    CHECK(f.opcode == HR_WS_OP_CLOSE && f.len == 2 && p[f.hdrlen] == 0x03 &&
          p[f.hdrlen + 1] == 0xe9);
    hr_buf_reset(&out);
    CHECK(bc_ws_close_reply(&out, &rng, close, 0) == 1005);
    CHECK(out.len == 2 + 4); /* no code: an empty close */
    hr_buf_reset(&out);
}

static void messages(void)
{
    hr_buf msg = {0};
    const char *m = NULL;
    size_t mn = 0;
    uint8_t whole[] = "whole";
    hr_ws_frame f = {.fin = 1, .opcode = HR_WS_OP_TEXT, .len = 5};
    CHECK(bc_ws_message(&msg, &f, whole, 100, &m, &mn) == 1);
    CHECK(m == (const char *)whole && mn == 5 && hr_buf_pending(&msg) == 0);
    uint8_t a[] = "frag", b[] = "ment";
    hr_ws_frame first = {.fin = 0, .opcode = HR_WS_OP_TEXT, .len = 4};
    hr_ws_frame last = {.fin = 1, .opcode = HR_WS_OP_CONT, .len = 4};
    CHECK(bc_ws_message(&msg, &first, a, 100, &m, &mn) == 0);
    CHECK(bc_ws_message(&msg, &last, b, 100, &m, &mn) == 1);
    CHECK(mn == 8 && !memcmp(m, "fragment", 8));
    hr_buf_consume(&msg, hr_buf_pending(&msg));
    CHECK(bc_ws_message(&msg, &first, a, 6, &m, &mn) == 0);
    CHECK(bc_ws_message(&msg, &last, b, 6, &m, &mn) == -E2BIG);
    hr_buf_reset(&msg);
}

static void padding_and_tally(void)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"s\":1,\"x\":\"");
    size_t len = bc_pad_payload(buf, sizeof buf, n, 20);
    CHECK(len == 20 && !strcmp(buf, "{\"s\":1,\"x\":\"xxxxxx\"}"));
    n = snprintf(buf, sizeof buf, "{\"s\":1,\"x\":\"");
    CHECK(bc_pad_payload(buf, sizeof buf, n, 5) == (size_t)n + 2); /* too small: no padding */
    n = snprintf(buf, sizeof buf, "{\"s\":1,\"x\":\"");
    CHECK(bc_pad_payload(buf, sizeof buf, n, 1000) == sizeof buf - 1); /* cut to cap */
    CHECK(strlen(buf) == sizeof buf - 1);

    int keys[3], counts[3], nk = 0;
    bc_tally(keys, counts, &nk, 3, 7);
    bc_tally(keys, counts, &nk, 3, 7);
    bc_tally(keys, counts, &nk, 3, 8);
    bc_tally(keys, counts, &nk, 3, 9);
    bc_tally(keys, counts, &nk, 3, 10); /* overflow: the last slot */
    CHECK(nk == 3 && keys[0] == 7 && counts[0] == 2 && counts[1] == 1 && counts[2] == 2);

    unsigned long long limit = 0;
    CHECK(bc_fd_limit(16, &limit) == 0 && limit >= 16);
}

int main(void)
{
    RUN(upgrade);
    RUN(http_responses);
    RUN(frames);
    RUN(messages);
    RUN(padding_and_tally);
    TEST_DONE();
}
