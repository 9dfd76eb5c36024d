/* sockstat.c - how many bytes the application has read from a TCP socket
 * (see sockstat.h). */
#include "gateway/sockstat.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* TCP_INFO's count and SIOCINQ's queue, in the order the bias asks for. */
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
