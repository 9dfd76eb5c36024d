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
 * what the reader has taken so far. Exact, or -1 (the kernel does not
 * tell, or bytes kept arriving while it was asked). Only the calling
 * thread may read fd: the queue is read before and after the count, and
 * an unchanged queue means no byte arrived in between. A one-sided bound
 * is not enough for http.c: one segment landing between the two system
 * calls made a pipelined request look freshly read (a 100% CPU spin). */
int64_t hr_sock_bytes_consumed(int fd);

#endif
