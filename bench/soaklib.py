"""soaklib.py - what the soak test (bench/soak.py) and its chaos mode
(bench/soak_chaos.py) both use: raw asyncio WebSocket and HTTP clients, a
server process' /proc view (RSS, descriptors and what each one is, TCP state)
and the report's small helpers.

Neither mode imports the other: soak.py runs the embedded/cluster soak and,
with --chaos, hands its arguments to soak_chaos.main(); both take their shared
pieces from here, so this module knows neither.
"""

import asyncio
import base64
import collections
import hashlib
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import build_frame, parse_metrics  # noqa: E402

CMD_TIMEOUT = 15.0           # a reply or HTTP answer later than this is an error (the default wait)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


#---- raw asyncio WebSocket and HTTP clients ------------------------------------------

class Closed(Exception):
    """The connection ended: code from the close frame, 1006 without one."""

    def __init__(self, code, reason=""):
        super().__init__("closed %s %r" % (code, reason))
        self.code, self.reason = code, reason


class Refused(Exception):
    """The upgrade was answered with another status than 101."""

    def __init__(self, status, body=b""):
        super().__init__("upgrade refused with HTTP %s: %r" % (status, body[:200]))
        self.status, self.body = status, body


class ProtocolError(Exception):
    pass


def parse_head(head):
    """(status, {lower-case name: value}) of an HTTP response head (bytes,
    up to the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


class RawWS:
    """A minimal asyncio WebSocket client (own framing, so it can stop
    reading, send bad frames, or vanish with a FIN or an RST)."""

    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port = host, port
        self.reader = self.writer = None
        self.close_info = None
        self.close_sent = False
        self.closed_wall = None

    async def open(self, path="/ws", headers=None, rcvbuf=None, limit=1 << 20, timeout=CMD_TIMEOUT):
        """Opening handshake; returns 101 or raises Refused / OSError."""
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await asyncio.wait_for(loop.sock_connect(s, (self.host, self.port)), timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.reader, self.writer = await asyncio.open_connection(sock=s, limit=limit)
        except BaseException:
            s.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (self.host, self.port),
                 "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key,
                 "Sec-WebSocket-Version: 13"] + ["%s: %s" % kv for kv in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.abort()
            raise ConnectionError("connection closed during the handshake: %r" % e)
        except BaseException:
            self.abort()
            raise
        status, hdrs = parse_head(head)
        if status != 101:
            body = b""
            try:
                n = int(hdrs.get("content-length", "0") or 0)
                body = await asyncio.wait_for(self.reader.readexactly(n), 5) if n else b""
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
                pass
            self.abort()
            raise Refused(status, body)
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            self.abort()
            raise ProtocolError("bad Sec-WebSocket-Accept")
        return 101

    def send_frame(self, op, payload=b""):
        if self.writer is None or self.writer.transport.is_closing():
            return
        self.writer.write(build_frame(op, payload))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_close(self, code=1000):
        if not self.close_sent:
            self.send_frame(OP_CLOSE, struct.pack(">H", code))
            self.close_sent = True

    async def _frame(self):
        b = await self.reader.readexactly(2)
        fin, op, n = b[0] & 0x80, b[0] & 0x0F, b[1] & 0x7F
        if b[1] & 0x80:
            raise ProtocolError("masked server frame")
        if b[0] & 0x70:
            raise ProtocolError("server frame with RSV bits")
        if n == 126:
            n = struct.unpack(">H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
        return bool(fin), op, (await self.reader.readexactly(n) if n else b"")

    def _ended(self, code, reason=""):
        self.close_info = (code, reason)
        self.closed_wall = time.time()
        self.abort()
        return Closed(code, reason)

    async def recv(self):
        """The next text message (str); raises Closed at the end."""
        if self.close_info:
            raise Closed(*self.close_info)
        frag_op, frag = None, bytearray()
        while True:
            try:
                fin, op, payload = await self._frame()
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                raise self._ended(1006)
            if op == OP_PING:
                self.send_frame(OP_PONG, payload)
            elif op == OP_PONG:
                pass
            elif op == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                if not self.close_sent:
                    self.send_frame(OP_CLOSE, payload[:2])
                    self.close_sent = True
                raise self._ended(code, reason)
            elif op in (OP_TEXT, OP_BINARY):
                if frag_op is not None:
                    raise ProtocolError("data frame inside a fragmented message")
                if op == OP_BINARY:
                    raise ProtocolError("binary message from the server")
                if fin:
                    return payload.decode("utf-8")
                frag_op, frag = op, bytearray(payload)
            elif op == OP_CONT:
                if frag_op is None:
                    raise ProtocolError("continuation without a message")
                frag += payload
                if fin:
                    return bytes(frag).decode("utf-8")
            else:
                raise ProtocolError("opcode %d" % op)

    def abort(self, rst=False):
        if self.writer is None:
            return
        if rst:
            sock = self.writer.get_extra_info("socket")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, AttributeError):
                pass
            self.writer.transport.abort()
        else:
            self.writer.close()


class HTTP:
    """A keep-alive HTTP/1.1 client on asyncio streams (Content-Length bodies)."""

    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port = host, port
        self.r = self.w = None

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    def local_port(self):
        if self.w is None:
            return None
        try:
            return self.w.get_extra_info("sockname")[1]
        except (TypeError, IndexError):
            return None

    async def _connect(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
        self.w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def request(self, method, path, json_body=None, form=None, headers=None,
                      timeout=CMD_TIMEOUT, retry=None):
        """(status, headers, parsed JSON or bytes). A request on a reused
        connection the server had closed is resent once, unless retry=False
        (publishes: a resend could duplicate)."""
        body, hdrs = b"", {"Host": "%s:%d" % (self.host, self.port)}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if body or method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = str(len(body))
        hdrs.update(headers or {})
        req = ("%s %s HTTP/1.1\r\n" % (method, path)
               + "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n").encode() + body
        if retry is None:
            retry = method == "GET"
        try:
            return await asyncio.wait_for(self._exchange(req, retry), timeout)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, req, retry):
        fresh = self.w is None
        if fresh:
            await self._connect()
        try:
            self.w.write(req)
            head = await self.r.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if fresh or not retry:
                raise ConnectionError("connection closed before an answer")
            await self._connect()
            self.w.write(req)
            head = await self.r.readuntil(b"\r\n\r\n")
        status, hdrs = parse_head(head)
        n = int(hdrs.get("content-length", "0") or 0)
        raw = await self.r.readexactly(n) if n else b""
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        data = raw
        if raw and "json" in hdrs.get("content-type", ""):
            try:
                data = json.loads(raw)
            except ValueError:
                pass
        return status, hdrs, data



#---- Herald's protocol over RawWS ----------------------------------------------------------

CONNECT_ID = 0x7fff0000  # the id of the connect command (via="op"), outside what cmd ids reach


async def ws_connect(ws, token, via, timeout):
    """Opens ws (a RawWS) and authenticates it with token, sent as herald.js
    can: via "query" (?token=), "header" (Authorization: Bearer) or "op" (the
    connect command after the upgrade). Returns the `connected` push (a
    dict); raises Refused, ProtocolError, Closed, OSError or
    asyncio.TimeoutError (each wait is bounded by timeout)."""
    if via == "query":
        await ws.open("/ws?token=" + token, timeout=timeout)
    elif via == "header":
        await ws.open("/ws", {"Authorization": "Bearer " + token}, timeout=timeout)
    else:
        await ws.open("/ws", timeout=timeout)
        ws.send_text(json.dumps({"id": CONNECT_ID, "op": "connect", "token": token}))
    hello = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if hello.get("push") != "connected":
        raise ProtocolError("first frame %r" % hello)
    if via == "op":
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if reply.get("id") != CONNECT_ID or "result" not in reply:
            raise ProtocolError("connect reply %r" % reply)
    return hello


def route_frame(obj, pending, on_push):
    """Hands a parsed server frame to the future of the command it answers
    (taken out of pending) or, a push, to on_push (may be None). Returns None
    when that was done, "unmatched" for a reply no pending command waits for,
    "neither" for a frame with neither "push" nor "id"."""
    if "push" not in obj and "id" in obj:
        fut = pending.pop(obj["id"], None)
        if fut is None:
            return "unmatched"
        if not fut.done():
            fut.set_result(obj)
    elif "push" in obj:
        if on_push:
            on_push(obj)
    else:
        return "neither"
    return None


class Session:
    """One Herald WebSocket session on a RawWS: command() sends a command
    whose reply resolves a future, route_frame() hands pushes to on_push.
    Subclasses write _reader(), the task that reads the frames: what counts
    as an error there differs (soak.py's Client records it, soak_chaos.py's
    Conn fails the run)."""

    def __init__(self, port):
        self.ws = RawWS(port)
        self.pending = {}        # {command id: future of its reply}
        self.next_id = 1
        self.on_push = None
        self.closed = asyncio.Event()
        self.by_us = False       # we closed it (its close code is not counted)
        self.hello = None        # the `connected` push
        self.task = None         # _reader()

    async def open(self, token, via, timeout):
        """ws_connect(), then starts _reader(); returns the `connected` push."""
        self.hello = await ws_connect(self.ws, token, via, timeout)
        self.task = asyncio.ensure_future(self._reader())
        return self.hello

    async def _reader(self):
        raise NotImplementedError

    def command(self, op, args):
        """Sends {"id", "op": op, **args}; returns (id, the future its reply
        resolves). The caller takes the id out of pending when it stops
        waiting."""
        cid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[cid] = fut
        msg = {"id": cid, "op": op}
        msg.update(args)
        self.ws.send_text(json.dumps(msg, separators=(",", ":")))
        return cid, fut

#---- a server process seen through /proc ------------------------------------------------

TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def hexaddr(text):
    """'0100007F:1F90' -> '127.0.0.1:8080' (IPv4 only; others verbatim)."""
    host, _, port = text.partition(":")
    if len(host) != 8:
        return text
    return "%s:%d" % (socket.inet_ntoa(struct.pack("<I", int(host, 16))), int(port, 16))


def maps_have_asan(pid):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False



def proc_stats(pid):
    """{rss_kb, fds, threads, cpu_s} of process pid (None: no process, or
    each value /proc no longer had)."""
    out = {"rss_kb": None, "fds": None, "threads": None, "cpu_s": None}
    if pid is None:
        return out
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out["cpu_s"] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_kb"] = int(line.split()[1])
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        pass
    return out


def fd_targets(pid):
    """{fd: link target} of process pid's open descriptors ({} for None)."""
    out = {}
    if pid is None:
        return out
    d = "/proc/%d/fd" % pid
    try:
        for fd in os.listdir(d):
            try:
                out[int(fd)] = os.readlink(os.path.join(d, fd))
            except OSError:
                pass
    except OSError:
        pass
    return out


def tcp_sockets(pid):
    """{socket inode: /proc/net/tcp{,6} row split in fields} as process pid
    sees its network namespace (field 1 local, 2 remote address, 3 state)."""
    out = {}
    for name in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    p = line.split()
                    out[p[9]] = p
        except OSError:
            pass
    return out


def socket_inode(target):
    """The inode of an fd's link target 'socket:[N]' (a str), else None."""
    m = re.match(r"socket:\[(\d+)\]", target)
    return m.group(1) if m else None


def describe_fds(pid, fds):
    """'fd N: target (TCP state local -> remote)' for each of fds ({fd:
    target}, of process pid)."""
    tcp = tcp_sockets(pid)
    out = []
    for fd, target in sorted(fds.items()):
        p = tcp.get(socket_inode(target))
        extra = ""
        if p is not None:
            extra = " (TCP %s %s -> %s)" % (TCP_STATES.get(p[3], p[3]), hexaddr(p[1]), hexaddr(p[2]))
        out.append("fd %d: %s%s" % (fd, target, extra))
    return out


def fd_summary(pid, fds, names):
    """{what: count} of fds ({fd: target}, of process pid): TCP peers by name
    (names: remote port -> name), listening sockets, other sockets, files."""
    out = collections.Counter()
    tcp = tcp_sockets(pid)
    for target in fds.values():
        inode = socket_inode(target)
        if inode is None:
            out["file/pipe/other"] += 1
        elif inode in tcp:
            p = tcp[inode]
            rport = int(p[2].rsplit(":", 1)[1], 16)
            out["listening" if p[3] == "0A" else "TCP to " + names.get(rport, "a client")] += 1
        else:
            out["other socket"] += 1
    return out


async def fetch_metrics(http, timeout=CMD_TIMEOUT):
    """{metric: value} of GET /metrics on http (an HTTP client)."""
    status, _, body = await http.request("GET", "/metrics", timeout=timeout)
    if status != 200:
        raise RuntimeError("/metrics answered %s" % status)
    return parse_metrics(body.decode() if isinstance(body, bytes) else body)


#---- the report ---------------------------------------------------------------------------

def slope(points):
    """Least-squares slope of [(t, v)] (v per second)."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if den == 0 else sum((t - mt) * (v - mv) for t, v in points) / den


def fmt(v):
    if v is None:
        return "-"
    return str(int(v)) if float(v).is_integer() else "%g" % v


async def sleep_until(event, seconds):
    """Sleeps, waking early when event (an asyncio.Event) is set; True if it was."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


def tally(counts, examples, kind, detail, t, verbose, label):
    """Counts kind in counts (a Counter) and keeps the first five details
    (at t seconds into the run) in examples[kind] (a defaultdict(list));
    verbose: also printed at once, as "label kind: detail"."""
    counts[kind] += 1
    if len(examples[kind]) < 5:
        examples[kind].append("t=%.1fs %s" % (t, detail))
    if verbose:
        print("%s %s: %s" % (label, kind, detail), file=sys.stderr, flush=True)


def where(task):
    """The chain of coroutines an asyncio task waits in ("f:line > g:line")."""
    chain, coro = [], task.get_coro()
    while coro is not None and len(chain) < 12:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append("%s:%d" % (frame.f_code.co_name, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(chain)


def write_section(path, text, cmd, marker, heading, new_doc=None):
    """Puts the report (text, and the command that made it) between the
    markers <!-- BEGIN marker --> and <!-- END marker --> of the markdown file
    path; absent markers: appended under a new "## heading". A missing file
    starts as new_doc (None: the open's error is raised)."""
    begin, end = "<!-- BEGIN %s -->" % marker, "<!-- END %s -->" % marker
    block = "%s\n```sh\n%s\n```\n\n```\n%s\n```\n%s" % (begin, cmd, text, end)
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        if new_doc is None:
            raise
        doc = new_doc
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n## %s\n\n" % heading + block + "\n"
    with open(path, "w") as f:
        f.write(doc)
