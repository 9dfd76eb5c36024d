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

/* SIOCINQ, TCP_INFO, SIOCINQ until the two queue lengths agree: arriving
 * bytes grow the queue (nobody else reads it), so equal lengths bracket a
 * count with no arrival in between. A few tries; a peer sending that fast
 * gets -1, which callers treat as "cannot tell". */
int64_t hr_sock_bytes_consumed(int fd)
{
    if (fd < 0)
        return -1;
    for (int tries = 0; tries < 8; tries++) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        int before = 0, after = 0;
        if (ioctl(fd, SIOCINQ, &before) < 0 ||
            getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
            len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received) ||
            ioctl(fd, SIOCINQ, &after) < 0)
            return -1;
        if (before == after)
            return (int64_t)ti.tcpi_bytes_received - after;
    }
    return -1;
}
