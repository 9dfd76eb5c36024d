/* client.h - the client end of a load generator's socket, written once for
 * herald-loadgen's two modes (loadgen.c, scenario.c): connect with a bound
 * source address, send a buffer, frame a masked WebSocket message, the
 * upgrade request and its response, the next frame from a server, and the
 * read loop. Each function works on a descriptor and buffers the caller
 * owns; what a connection is (its state, roles, counters) stays with the
 * caller. Non-blocking sockets, edge-triggered epoll. */
#ifndef HERALD_BENCH_CLIENT_H
#define HERALD_BENCH_CLIENT_H

#include "bench_common.h"

#include <stddef.h>
#include <stdint.h>

/* The failures the bc_* functions below report (as negative errno
 * values), as indexes a caller's error counters start with:
 * bc_fault(err) says which. */
enum bc_fault {
    BC_HTTP_STATUS, /* -ECONNREFUSED: the upgrade's status was not 101 */
    BC_BAD_ACCEPT,  /* -EACCES: a wrong Sec-WebSocket-Accept */
    BC_BAD_HTTP,    /* -EMSGSIZE, -EBADMSG: an HTTP head too long or not understood */
    BC_BAD_FRAME,   /* -EPROTO: a malformed WebSocket frame */
    BC_TOO_BIG,     /* -E2BIG: a WebSocket message over the caller's maximum */
    BC_NFAULTS
};
int bc_fault(int err);

/* Counts v in a small (key, count) table of cap slots; the last slot
 * absorbs overflow. */
void bc_tally(int *keys, int *counts, int *n, int cap, int v);

/* A non-blocking TCP socket (TCP_NODELAY) connecting to host:port (IPv4),
 * bound first to 127.0.0.<src_first + i % src_count> when src_count > 0:
 * each source address has its own ephemeral ports, and
 * IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), which only needs
 * the 4-tuple to be unique. Returns the descriptor (connect under way) or
 * -errno (nothing left open). */
int bc_connect(const char *host, int port, int src_first, int src_count, uint32_t i);

/* Whether a connect started by bc_connect failed: its SO_ERROR (0: it
 * completed). */
int bc_connect_error(int fd);

/* Sends what out holds until it is empty or the socket would block
 * (edge-triggered EPOLLOUT resumes it). Returns 0, or -errno when the
 * socket failed. */
int bc_send(int fd, hr_buf *out);

/* Appends a final masked client frame (RFC 6455 5.3: a fresh mask from
 * rng per frame) with opcode and p[0..n) to out. */
void bc_ws_frame(hr_buf *out, uint64_t *rng, int opcode, const void *p, size_t n);

/* Writes into req (cap bytes) the upgrade request for target on host:port,
 * with a fresh key from rng, offering permessage-deflate when deflate and
 * adding extra (NULL, or whole header lines such as "Cookie: a=b\r\n");
 * accept gets the Sec-WebSocket-Accept the server must answer (28
 * characters and a NUL). Returns the request's length. */
size_t bc_upgrade_request(char *req, size_t cap, const char *target, const char *host, int port,
                          int deflate, const char *extra, uint64_t *rng, char accept[29]);

/* The server's answer to the upgrade request, at p[0..n). Returns the
 * length of its head when it is a 101 with Sec-WebSocket-Accept `accept`
 * (*pmd: it accepted permessage-deflate), 0 while the head is incomplete,
 * -ECONNREFUSED when the status is not 101 (*status says which), -EACCES
 * when the accept key is wrong, -EMSGSIZE when no head ends within
 * max_head bytes. */
int bc_upgrade_response(const char *p, size_t n, size_t max_head, const char accept[28],
                        int *status, int *pmd);

/* One HTTP response with a Content-Length body at p[0..n) (pipelined
 * responses follow each other). Returns its whole length with *status,
 * 0 while it is incomplete, -EMSGSIZE when no head ends within max_head
 * bytes, -EBADMSG without a Content-Length (chunked bodies are not
 * expected). */
int bc_http_response(const char *p, size_t n, size_t max_head, int *status);

/* The next frame from a server at p[0..n). Returns the frame's whole
 * length with *f filled and its payload (p + f->hdrlen) unmasked in place
 * (servers must not mask: f->masked says this one did), 0 while the frame
 * is incomplete, -EPROTO when it is malformed (RSV1 only when rsv1_ok),
 * -E2BIG when its payload is over max. */
int bc_ws_next(uint8_t *p, size_t n, size_t max, int rsv1_ok, hr_ws_frame *f);

/* A text or continuation frame f with payload p: a whole message, or a
 * part of one that msg collects. Returns 1 when a message is complete, at
 * *m (mn bytes): p itself for an unfragmented one, else msg's content,
 * which the caller empties (hr_buf_consume) once done with it; 0 while
 * parts are missing; -E2BIG when the message would be over max. */
int bc_ws_message(hr_buf *msg, const hr_ws_frame *f, uint8_t *p, size_t max, const char **m,
                  size_t *mn);

/* Answers a close frame with payload p[0..n): appends the masked echo of
 * its code to out. Returns the code (1005: none given). */
int bc_ws_close_reply(hr_buf *out, uint64_t *rng, const uint8_t *p, size_t n);

/* Bytes for a connection: they are parsed in place when nothing is
 * pending, else appended to its partial input `in` first. input(conn, p, n,
 * now) returns how many bytes it used; the rest waits in `in`. *fd is the
 * connection's descriptor, which input sets to -1 when it closes the
 * connection (nothing is kept then). */
typedef size_t (*bc_input_fn)(void *conn, uint8_t *p, size_t n, uint64_t now);
void bc_feed(void *conn, const int *fd, hr_buf *in, uint8_t *p, size_t n, bc_input_fn input,
             uint64_t now);

/* Reads what *fd has into buf (cap bytes) and bc_feed()s each read, at
 * most `reads` times. ev: the epoll flags that woke it (0: unknown). A
 * short read drained the socket: with EPOLLET any later byte raises a new
 * event, so the recv() that would say EAGAIN is skipped - not when the
 * event also reported a hang-up (that edge has fired already, and the EOF
 * behind the data would never be read). Returns 1 when still readable
 * after `reads` reads (call again next iteration: no new event comes), 0
 * when drained or closed by input, -EPIPE at EOF, -errno when recv failed. */
int bc_read(void *conn, const int *fd, hr_buf *in, uint32_t ev, uint8_t *buf, size_t cap, int reads,
            bc_input_fn input, uint64_t now);

/* A publication's payload: buf holds n bytes of a JSON object that end
 * inside an opened string ("...,\"x\":\""); pads that string with 'x' so
 * that the whole is `size` bytes (when it fits in cap) and closes it.
 * Returns the payload's length. */
size_t bc_pad_payload(char *buf, size_t cap, int n, size_t size);

/* Raises the soft descriptor limit to need when the hard one allows.
 * Returns 0, or -EMFILE when the limit stays below need (*limit: what it
 * is). */
int bc_fd_limit(unsigned long long need, unsigned long long *limit);

#endif
