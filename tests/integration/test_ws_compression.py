"""permessage-deflate (RFC 7692, SPEC §9): negotiation, publications
compressed once and shared by every compressing subscriber, uncompressed
frames for the others and below HERALD_WS_COMPRESSION_MIN, compressed client
messages (fragmented, interleaved with pongs, split across reads),
decompression bombs (1009), bad compressed data (1007), and python3-websockets
with and without compression. A raw-socket client reads RSV1 and counts the
bytes on the wire."""

import asyncio
import json
import os
import time
import zlib

import websockets

from harness import (OP_CONT, OP_PONG, OP_TEXT, WS, Herald, ProtocolError, assert_error,
                     assert_result, build_frame, run_tests)

ON = {"HERALD_WS_COMPRESSION": "true"}
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"  # Chromium's and websockets'
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
CHAT = {"namespaces": {"chat": {"subscribe": "authenticated", "publish": "subscribers"}}}
TRAILER = b"\x00\x00\xff\xff"


def chat_data(i=0, text=None):
    """A realistic ~1 KB chat event (the benchmark's payload shape)."""
    return {
        "type": "chat.message", "id": "01HV6Z5W3K9Q2M7YB8T4C1N%03d" % i, "room": "room-42",
        "author": {"id": "u_83921", "name": "Alice Martin",
                   "avatar": "https://cdn.example.com/avatars/u_83921/64.png"},
        "text": text or ("Hey everyone, the release notes for 2.4 are up. Please take a look at "
                         "the migration section before Thursday's deploy, especially if you "
                         "maintain one of the plugins that use the old settings API: the "
                         "compatibility shim goes away in 2.5, and the new API needs a config "
                         "change on your side. Ping me if anything is unclear. (#%d)" % i),
        "client_msg_id": "c7f1e2a4-9b3d-4e8f-a6c5-2d1b0e9f8a7c",
        "mentions": [{"id": "u_1002", "name": "Bob"}, {"id": "u_1003", "name": "Carol"}],
        "attachments": [{"kind": "link", "url": "https://docs.example.com/releases/2.4#migration",
                         "title": "Release 2.4: migration guide"}],
        "reactions": {"thumbs_up": 3, "eyes": 1},
        "thread": {"id": "t_5521", "replies": 12, "last_reply_at": "2026-11-22T10:41:07Z"},
        "sent_at": "2026-11-22T10:42:13.512Z", "edited": False, "pinned": False, "lang": "en",
    }


def deflate(data, ctx=None):
    """A client's compressed message: raw deflate, sync flush, trailer off.
    ctx: a compressobj kept across messages (context takeover)."""
    z = ctx or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TRAILER)
    return out[:-4]


class PmdWS(WS):
    """The raw-socket client of harness.py, reading compressed frames too:
    each data frame's RSV1 and size on the wire are kept in self.frames."""

    def __init__(self, port, **kw):
        super().__init__(port, **kw)
        self.frames = []  # (opcode, rsv1, bytes on the wire)

    def _check_rsv(self, fin, rsv, op):
        if rsv & 0x30 or (rsv and (op != OP_TEXT or not fin)):
            raise ProtocolError("RSV bits %#x on opcode %d (fin %d)" % (rsv, op, bool(fin)))

    def _payload(self, fin, rsv, op, payload, wire):
        if op in (OP_TEXT, OP_CONT):
            self.frames.append((op, bool(rsv), wire))
        if rsv:
            # server_no_context_takeover: each message inflates on its own
            payload = zlib.decompressobj(-15).decompress(payload + TRAILER)
        return payload

    def send_deflated(self, text, split=(), ctx=None, pong_between=None):
        """Sends text as one compressed message: RSV1 on its first frame;
        split = sizes of the first frames (the rest goes in the last one);
        pong_between = a pong payload sent between the frames."""
        data = deflate(text.encode() if isinstance(text, str) else text, ctx)
        pieces, at = [], 0
        for size in split:
            pieces.append(data[at:at + size])
            at += size
        pieces.append(data[at:])
        out = b""
        for i, piece in enumerate(pieces):
            op = OP_TEXT if i == 0 else OP_CONT
            out += build_frame(op, piece, fin=i == len(pieces) - 1, rsv=4 if i == 0 else 0)
            if pong_between is not None and i < len(pieces) - 1:
                out += build_frame(OP_PONG, pong_between)
        self.send_raw(out)

    def cmd_deflated(self, op, **args):
        cid = self.next_id()
        msg = {"id": cid, "op": op}
        msg.update(args)
        self.send_deflated(json.dumps(msg, separators=(",", ":")))
        return self.wait_reply(cid)

    def last_frame(self):
        return self.frames[-1]


def pmd_client(h, offer=BROWSER_OFFER, sub="alice"):
    """An authenticated PmdWS that offered `offer` (None: offers nothing)."""
    ws = PmdWS(h.port)
    h.clients.append(ws)
    headers = {"Authorization": "Bearer " + h.token(sub)}
    if offer is not None:
        headers["Sec-WebSocket-Extensions"] = offer
    assert ws.connect("/ws", headers) == 101, ws.http_body
    ws.hello = ws.recv_json()
    assert ws.hello.get("push") == "connected", ws.hello
    return ws


def subscribe(ws, channel):
    assert_result(ws.cmd("subscribe", channel=channel))


#---- negotiation ------------------------------------------------------------

def test_off_by_default():
    with Herald() as h:
        ws = pmd_client(h)
        assert "sec-websocket-extensions" not in ws.http_headers, ws.http_headers
        # no extension: a compressed frame is a protocol error (RSV1)
        ws.send_deflated('{"id":1,"op":"ping"}')
        assert ws.expect_close() == 1002


def test_answer_to_offers():
    with Herald(env=ON) as h:
        tok = h.token("alice")
        cases = [
            (BROWSER_OFFER, ANSWER),
            ("permessage-deflate", ANSWER),
            ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", ANSWER),
            ("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=10", ANSWER),
            ("permessage-deflate; server_max_window_bits=10", ANSWER + "; server_max_window_bits=10"),
            # lws asks about each offer in turn: Herald takes the first it can accept
            ("permessage-deflate; foo, permessage-deflate; server_max_window_bits=9",
             ANSWER + "; server_max_window_bits=9"),
            # offers Herald declines: the upgrade goes on without compression
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; mystery", None),
            ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
            ("permessage-deflate, permessage-deflate; client_max_window_bits", None),
            ("x-webkit-deflate-frame", None),
        ]
        for offer, answer in cases:
            ws = WS(h.port)
            assert ws.connect("/ws", {"Authorization": "Bearer " + tok,
                                      "Sec-WebSocket-Extensions": offer}) == 101, offer
            assert ws.http_headers.get("sec-websocket-extensions") == answer, \
                (offer, ws.http_headers.get("sec-websocket-extensions"))
            assert ws.recv_json()["push"] == "connected"
            assert_result(ws.cmd("ping"))
            ws.abort()


def test_long_extensions_header_is_refused_not_dropped():
    # lws 4.1.6 reads the offers into 255 bytes and hangs up (no HTTP
    # answer at all) on a longer header, whether or not it knows extensions
    for env in ({}, ON):
        with Herald(env=env) as h:
            for n, status in ((254, 101), (255, 400), (1000, 400)):
                ws = WS(h.port)
                offer = "x-padding; a=" + "b" * (n - len("x-padding; a="))
                got = ws.connect("/ws", {"Authorization": "Bearer " + h.token("alice"),
                                         "Sec-WebSocket-Extensions": offer})
                assert got == status, (env, n, got)
                if status == 400:
                    assert b"Sec-WebSocket-Extensions" in ws.http_body, ws.http_body


#---- outbound: once per publication -----------------------------------------

def test_publication_compressed_for_those_who_negotiated():
    with Herald(env=ON) as h:
        z, plain = pmd_client(h), pmd_client(h, offer=None)
        for ws in (z, plain):
            subscribe(ws, "news")
        h.publish("news", chat_data())
        zmsg, pmsg = z.recv_push(), plain.recv_push()
        assert zmsg == pmsg and zmsg["data"] == chat_data(), (zmsg, pmsg)
        zop, zrsv, zwire = z.last_frame()
        pop, prsv, pwire = plain.last_frame()
        assert zrsv and not prsv, (z.frames, plain.frames)
        assert pwire > 1000 and zwire < 0.75 * pwire, (zwire, pwire)


def test_small_messages_go_uncompressed():
    with Herald(env=ON) as h:
        z = pmd_client(h)
        subscribe(z, "news")
        assert not z.last_frame()[1]  # the subscribe reply: short
        h.publish("news", {"n": 1})
        assert z.recv_push()["data"] == {"n": 1}
        assert not z.last_frame()[1]


def test_threshold_is_configurable():
    env = dict(ON, HERALD_WS_COMPRESSION_MIN="2000")
    with Herald(env=env) as h:
        z = pmd_client(h)
        subscribe(z, "news")
        h.publish("news", chat_data())  # ~1 KB: under 2000
        assert z.recv_push()["data"] == chat_data()
        assert not z.last_frame()[1], z.frames
        big = chat_data(text="word " * 600)  # ~4 KB
        h.publish("news", big)
        assert z.recv_push()["data"] == big
        assert z.last_frame()[1], z.frames


def test_mixed_subscribers_get_identical_payloads():
    """Raw compressing and plain clients (spread over both loop threads) and
    python3-websockets with and without compression: the same publications,
    in the same order, byte for byte."""
    async def listen(uri, tok, compression, n, ready):
        async with websockets.connect(uri, compression=compression, max_size=None,
                                      extra_headers={"Authorization": "Bearer " + tok}) as ws:
            await asyncio.wait_for(ws.recv(), 5)  # connected
            await ws.send(json.dumps({"id": 1, "op": "subscribe", "channel": "chat:1"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == \
                {"id": 1, "result": {"channel": "chat:1"}}
            negotiated = [e.name for e in ws.extensions]
            ready.set_result(None) if not ready.done() else None
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(n)]
            return negotiated, got

    with Herald(env=ON, config=CHAT) as h:
        raw = [pmd_client(h) for _ in range(3)] + [pmd_client(h, offer=None) for _ in range(3)]
        for ws in raw:
            subscribe(ws, "chat:1")
        datas = [chat_data(i) if i % 3 else {"short": i} for i in range(30)]
        datas.append(chat_data(99, text="z" * 70000))  # 16-bit vs 64-bit lengths
        uri = "ws://127.0.0.1:%d/ws" % h.port

        async def run():
            loop = asyncio.get_running_loop()
            readies = [loop.create_future() for _ in range(2)]
            tasks = [asyncio.create_task(listen(uri, h.token("py%d" % i), comp, len(datas), r))
                     for i, (comp, r) in enumerate(zip(("deflate", None), readies))]
            await asyncio.gather(*readies)
            for d in datas:
                await loop.run_in_executor(None, h.publish, "chat:1", d)
            return await asyncio.gather(*tasks)

        (neg_z, got_z), (neg_p, got_p) = asyncio.run(asyncio.wait_for(run(), 40))
        assert neg_z == ["permessage-deflate"] and neg_p == [], (neg_z, neg_p)
        texts = [ws.recv(timeout=10)[1] for _ in datas for ws in raw]
        per_client = [texts[i::len(raw)] for i in range(len(raw))]
        for seq in per_client + [got_z, got_p]:
            assert seq == per_client[0], "a subscriber saw different bytes"
        assert [json.loads(t)["data"] for t in per_client[0]] == datas
        # the compressing raw clients got RSV1 frames for the long ones only
        for ws in raw[:3]:
            rsv = [f[1] for f in ws.frames[-len(datas):]]
            assert rsv == [len(json.dumps(d)) > 256 for d in datas], rsv
        for ws in raw[3:]:
            assert not any(f[1] for f in ws.frames)
        # compressed once per publication (a loop thread that finds none
        # made yet makes its own: at most one per thread), sent to each of
        # the four compressing subscribers
        long_ones = sum(len(json.dumps(d)) > 256 for d in datas)
        m = h.metrics()
        threads = int(os.environ.get("HERALD_TEST_THREADS", "2"))
        assert long_ones <= m["herald_ws_deflates_total"] <= threads * long_ones, m
        assert m["herald_ws_compressed_frames_sent_total"] == 4 * long_ones, m


def test_server_max_window_bits_is_honoured():
    """A client that limits Herald's window to 2^9 bytes gets compressed
    frames only for messages that fit in it."""
    with Herald(env=ON) as h:
        ws = pmd_client(h, offer="permessage-deflate; server_max_window_bits=9")
        assert ws.http_headers["sec-websocket-extensions"] == \
            ANSWER + "; server_max_window_bits=9"
        subscribe(ws, "news")
        small, big = {"text": "ab " * 120}, chat_data()
        h.publish("news", small)
        assert ws.recv_push()["data"] == small
        assert ws.last_frame()[1]  # ~400 bytes: compressed
        h.publish("news", big)
        assert ws.recv_push()["data"] == big
        assert not ws.last_frame()[1]  # over 512 bytes: plain


#---- inbound: compressed client messages --------------------------------------

def test_compressed_commands():
    with Herald(env=ON, config=CHAT) as h:
        ws, other = pmd_client(h), pmd_client(h, offer=None)
        subscribe(other, "chat:1")
        assert_result(ws.cmd_deflated("subscribe", channel="chat:1"))
        # a publication big enough to be sent compressed, sent compressed
        data = chat_data(1)
        assert_result(ws.cmd_deflated("publish", channel="chat:1", data=data))
        assert other.recv_push()["data"] == data
        assert ws.recv_push()["data"] == data
        # plain and compressed messages mix on one connection
        assert_result(ws.cmd("ping"))
        assert_result(ws.cmd_deflated("ping"))


def test_fragmented_compressed_messages():
    """RSV1 on the first frame only, continuation frames, a pong between
    them, an empty last frame, bytes trickling in, many messages in one
    write: each arrives as one message."""
    with Herald(env=ON, config=CHAT) as h:
        ws = pmd_client(h)
        subscribe(ws, "chat:1")
        data = chat_data(2)

        def msg(cid):
            return json.dumps({"id": cid, "op": "publish", "channel": "chat:1", "data": data})

        n = len(deflate(msg(50).encode()))
        ws.send_deflated(msg(50), split=(10, n - 20))
        assert_result(ws.wait_reply(50))
        assert ws.recv_push()["data"] == data
        ws.send_deflated(msg(51), split=(5, 7, 9), pong_between=b"keepalive")
        assert_result(ws.wait_reply(51))
        assert ws.recv_push()["data"] == data
        ws.send_deflated(msg(52), split=(1, n - 1))  # an empty last frame
        assert_result(ws.wait_reply(52))
        assert ws.recv_push()["data"] == data
        # one frame, written a few bytes at a time
        frame = build_frame(OP_TEXT, deflate(b'{"id":53,"op":"ping"}'), rsv=4)
        for i in range(0, len(frame), 3):
            ws.send_raw(frame[i:i + 3])
            time.sleep(0.002)  # let the pieces arrive in separate reads (not waiting for anything)
        assert_result(ws.wait_reply(53))
        # many compressed and plain messages in one write
        burst = b"".join(build_frame(OP_TEXT, deflate(('{"id":%d,"op":"ping"}' % i).encode()),
                                     rsv=4) if i % 2 else
                         build_frame(OP_TEXT, ('{"id":%d,"op":"ping"}' % i).encode())
                         for i in range(100, 140))
        ws.send_raw(burst)
        for i in range(100, 140):
            assert_result(ws.wait_reply(i))
        # an empty compressed message is an empty message
        ws.send_raw(build_frame(OP_TEXT, deflate(b""), rsv=4))
        ws.send_raw(build_frame(OP_TEXT, b"", rsv=4))
        assert_error(ws.recv_json(), "bad_request")
        assert_error(ws.recv_json(), "bad_request")
        assert_result(ws.cmd_deflated("ping"))


def test_decompression_bomb_closes_1009():
    with Herald(env=ON) as h:
        ws, bystander = pmd_client(h), pmd_client(h)
        assert_result(ws.cmd_deflated("ping"))
        # 64 KiB (max_message) is the limit: 10 MB of spaces deflate to ~10 KB
        bomb = b'{"id":2,"op":"ping","pad":"' + b" " * 10_000_000 + b'"}'
        ws.send_deflated(bomb)
        assert ws.expect_close() == 1009
        assert_result(bystander.cmd_deflated("ping"))
        # just under the limit is fine; just over is not
        ok = b'{"id":3,"op":"ping","pad":"' + b" " * (65536 - 40) + b'"}'
        assert_result(bystander.cmd("ping"))
        bystander.send_deflated(ok)
        assert_result(bystander.wait_reply(3))
        over = b'{"id":4,"op":"ping","pad":"' + b" " * 65536 + b'"}'
        bystander.send_deflated(over)
        assert bystander.expect_close() == 1009
        assert h.running()


def test_compressed_bytes_over_the_limit_close_1009():
    """Incompressible bytes: the compressed message itself is too big (one
    frame declaring it, and many small frames adding up to it)."""
    with Herald(env=ON, args=["--max-message", "4096"]) as h:
        noise = os.urandom(8000).hex().encode()  # compresses to about half: 8 KB
        a = pmd_client(h)
        a.send_deflated(b'{"id":1,"op":"ping","pad":"' + noise + b'"}')
        assert a.expect_close() == 1009
        b = pmd_client(h)
        b.send_deflated(b'{"id":1,"op":"ping","pad":"' + noise + b'"}', split=[100] * 60)
        assert b.expect_close() == 1009


def test_bad_compressed_data_closes_1007():
    with Herald(env=ON) as h:
        cases = [
            build_frame(OP_TEXT, b"\xff\xff\xff\xff\x12\x34", rsv=4),  # not deflate
            build_frame(OP_TEXT, deflate(b'{"id":1,"op":"ping","x":"\xc3\x28"}'), rsv=4),
            build_frame(OP_TEXT, deflate(b'{"id":1,"op":"ping"}\xe2\x82'), rsv=4),  # cut UTF-8
            build_frame(OP_TEXT, b'{"id":1,"op":"ping"}\xe2\x82'),  # the same, uncompressed
        ]
        cut = deflate(b'{"id":1,"op":"ping"}\xe2\x82')  # ending in an empty frame, too
        cases.append(build_frame(OP_TEXT, cut, fin=False, rsv=4) + build_frame(OP_CONT, b""))
        for frame in cases:
            ws = pmd_client(h)
            ws.send_raw(frame)
            assert ws.expect_close() == 1007, frame
        ws = pmd_client(h)  # compressed or not, binary is refused
        ws.send_raw(build_frame(2, deflate(b'{"id":1,"op":"ping"}'), rsv=4))
        assert ws.expect_close() == 1003


def test_client_must_not_keep_its_context():
    """Herald answers client_no_context_takeover; a client that keeps its
    compression context anyway cannot be read and is closed (1007), not
    misread."""
    with Herald(env=ON) as h:
        ws = pmd_client(h)
        ctx = zlib.compressobj(6, zlib.DEFLATED, -15)
        msg = '{"id":%d,"op":"ping","pad":"the same words again and again"}'
        ws.send_deflated(msg % 1, ctx=ctx)
        assert_result(ws.wait_reply(1))
        ws.send_deflated(msg % 2, ctx=ctx)  # refers back into message 1
        assert ws.expect_close() == 1007


#---- python3-websockets ------------------------------------------------------

def test_websockets_library_with_and_without_compression():
    async def session(uri, tok, compression):
        async with websockets.connect(uri, compression=compression,
                                      extra_headers={"Authorization": "Bearer " + tok}) as ws:
            connected = json.loads(await asyncio.wait_for(ws.recv(), 5))
            tok_user, client = connected["user"], connected["client"]
            await ws.send(json.dumps({"id": 1, "op": "subscribe", "channel": "chat:9"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == 1
            data = chat_data(9)
            await ws.send(json.dumps({"id": 2, "op": "publish", "channel": "chat:9",
                                      "data": data}))
            got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert {"id": 2, "result": {}} in got, got
            assert {"push": "message", "channel": "chat:9", "data": data,
                    "from": {"user": tok_user, "client": client, "info": {}}} in got, got
            return ws.response_headers.get("Sec-WebSocket-Extensions"), \
                [(e.name, e.remote_no_context_takeover, e.local_no_context_takeover)
                 for e in ws.extensions]

    with Herald(env=ON, config=CHAT) as h:
        uri = "ws://127.0.0.1:%d/ws" % h.port
        header, exts = asyncio.run(session(uri, h.token("a"), "deflate"))
        assert header == ANSWER and exts == [("permessage-deflate", True, True)], (header, exts)
        header, exts = asyncio.run(session(uri, h.token("b"), None))
        assert header is None and exts == [], (header, exts)
    with Herald(config=CHAT) as h:  # compression off: the library's offer is declined
        uri = "ws://127.0.0.1:%d/ws" % h.port
        header, exts = asyncio.run(session(uri, h.token("a"), "deflate"))
        assert header is None and exts == [], (header, exts)


if __name__ == "__main__":
    run_tests(globals())
