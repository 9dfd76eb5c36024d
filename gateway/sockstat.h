/*
 * sockstat.h - how many bytes the application has read from a TCP socket
 * (http.c tells pipelined requests apart with it).
 *
 * Its own module because <linux/tcp.h> (struct tcp_info with
 * tcpi_bytes_received) clashes with <netinet/tcp.h>, which libwebsockets
 * pulls in: this header includes neither.
 */
#ifndef HR_SOCKSTAT_H
#define HR_SOCKSTAT_H

#include <stdint.h>

/* Bytes received by the kernel on fd minus bytes still queued for reading:
 * what the reader has taken so far. The two numbers come from two system
 * calls and bytes may arrive between them, so the caller picks the bias:
 * upper reads the queue first (the result can only be too high), else the
 * count first (only too low). -1 when the kernel does not tell. */
int64_t hr_sock_bytes_consumed(int fd, int upper);

#endif
