"""ports.py - loopback ports for the processes a test starts, without the
bind-and-release race.

Finding a port by binding port 0 and closing the socket again (the old
free_port) leaves a window in which any other process can get the same port
from the kernel: under `ctest -j2`, another test's bind(0) or an outgoing
connection. Here the reserving socket stays bound (SO_REUSEADDR, never
listening) for as long as this process lives, or until release_port():

- the kernel hands a bound port to nobody else: bind(0) and connect() skip
  it, so no other test, and no client socket, can get it meanwhile;
- a server told to use the port can still bind and listen on it, because
  Linux lets a socket with SO_REUSEADDR bind a port whose other sockets
  (ours) are not listening. redis-server, nginx, Herald, Python's and
  node's servers, Django's runserver and uvicorn all set SO_REUSEADDR;
- it stays reserved while the server is down, so a restart on the same
  port (a Redis outage, a node restart) finds it free.

Herald itself needs none of this: the harness starts it on port 0 and reads
the port it chose from its "listening" log line.

Run as a script (`python3 ports.py`), it serves reservations to a process
that cannot hold such a socket itself (node: its net module only binds
listening sockets): each line "reserve" on stdin gets a port number on
stdout; it exits, releasing everything, when stdin closes.
"""

import socket
import sys

_held = {}  # port -> the socket that holds it


def reserve_port(host="127.0.0.1"):
    """A TCP port on host that nobody else can be handed until this process
    exits (or release_port). Servers binding it with SO_REUSEADDR can."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    port = s.getsockname()[1]
    _held[port] = s
    return port


def reserve_exact(port, host="127.0.0.1"):
    """Reserves this very port (as reserve_port does) when nobody listens
    on it and no other process holds it without SO_REUSEADDR; True then,
    else False. For a port that must sit at a fixed distance from another
    (a Redis Cluster node's bus port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return False
    _held[port] = s
    return True


def release_port(port):
    """Gives a reserved port back (nothing if it was not reserved here)."""
    s = _held.pop(port, None)
    if s is not None:
        s.close()


def serve(stdin=sys.stdin, stdout=sys.stdout):
    for line in stdin:
        words = line.split()
        if words[:1] == ["reserve"]:
            stdout.write("%d\n" % reserve_port())
        elif words[:1] == ["release"] and len(words) == 2 and words[1].isdigit():
            release_port(int(words[1]))
            stdout.write("ok\n")
        else:
            stdout.write("error\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
