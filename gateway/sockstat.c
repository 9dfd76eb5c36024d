/*
 * sockstat.c - how many bytes the application has read from a TCP socket.
 *
 * Its own file because <linux/tcp.h> (struct tcp_info with
 * tcpi_bytes_received) clashes with <netinet/tcp.h>.
 */
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Declared in http.h, which cannot be included here (it pulls in
 * <netinet/tcp.h> through libwebsockets). */
int64_t hr_sock_bytes_consumed(int fd, int upper);

/* Bytes received by the kernel minus bytes still queued for reading: what
 * lws has read so far. The two numbers come from two system calls and
 * bytes may arrive between them, so the caller picks the bias: upper reads
 * the queue first (the result can only be too high), else the count
 * first (only too low). -1 when the kernel does not tell. */
int64_t hr_sock_bytes_consumed(int fd, int upper)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    int queued = 0;
    if (fd < 0)
        return -1;
    if (upper && ioctl(fd, SIOCINQ, &queued) < 0)
        return -1;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
        return -1;
    if (!upper && ioctl(fd, SIOCINQ, &queued) < 0)
        return -1;
    return (int64_t)ti.tcpi_bytes_received - queued;
}
