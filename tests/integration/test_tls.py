"""TLS (HERALD_TLS_CERT / HERALD_TLS_KEY): the port serves https:// and
wss:// only. A throwaway certificate from the openssl CLI; real TLS clients
(requests, websockets over Python's ssl)."""

import asyncio
import json
import os
import socket
import ssl
import subprocess
import tempfile

import requests
import urllib3
import warnings
import websockets

from harness import Herald, run_tests

warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are tried on purpose
urllib3.disable_warnings()  # the harness' own health checks do not verify the throwaway cert
TMP = tempfile.mkdtemp(prefix="herald-tls-")
CERT, KEY = os.path.join(TMP, "cert.pem"), os.path.join(TMP, "key.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", KEY, "-out", CERT, "-days", "1", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
               check=True, capture_output=True)


def tls_herald(env=None):
    e = {"HERALD_TLS_CERT": CERT, "HERALD_TLS_KEY": KEY}
    e.update(env or {})
    return Herald(env=e, https=True)


def ctx():
    c = ssl.create_default_context(cafile=CERT)
    return c


def test_https_rest():
    with tls_herald() as h:
        r = requests.get("https://127.0.0.1:%d/healthz" % h.port, verify=CERT, timeout=5)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        # keep-alive: several requests on one TLS connection
        with requests.Session() as s:
            for i in range(5):
                r = s.post("https://127.0.0.1:%d/api/v1/publish" % h.port, verify=CERT,
                           json={"channel": "news", "data": i}, headers=h.api_headers(), timeout=5)
                assert r.status_code == 200, r.text


def test_plain_http_is_not_served():
    """Plain HTTP on the TLS port: the TLS handshake fails and the
    connection is closed (a TLS alert at most), no HTTP answer of any kind.
    A connection left open does not pass (a timeout used to)."""
    with tls_herald() as h:
        with socket.create_connection(("127.0.0.1", h.port), timeout=20) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise AssertionError("plain HTTP left the TLS connection open (got %r)" % data[:80])
        assert not data.startswith(b"HTTP/"), "answered plain HTTP: %r" % data[:80]
        assert not data or data[:1] == b"\x15", "sent %r, want nothing or a TLS alert" % data[:80]
        # and the port still serves TLS
        r = requests.get("https://127.0.0.1:%d/healthz" % h.port, verify=CERT, timeout=20)
        assert r.status_code == 200


def test_wss_subscribe_and_large_publication():
    big = "x" * 300000  # more than one TLS record and than a socket buffer

    async def run(h):
        tok = h.token("alice")
        async with websockets.connect("wss://127.0.0.1:%d/ws?token=%s" % (h.port, tok), ssl=ctx(),
                                      max_size=2 ** 21) as ws:
            hello = json.loads(await ws.recv())
            assert hello["push"] == "connected"
            await ws.send(json.dumps({"id": 1, "op": "subscribe", "channel": "news"}))
            assert json.loads(await ws.recv())["id"] == 1
            loop = asyncio.get_running_loop()
            for i in range(3):
                await loop.run_in_executor(None, lambda i=i: requests.post(
                    "https://127.0.0.1:%d/api/v1/publish" % h.port, verify=CERT,
                    json={"channel": "news", "data": {"i": i, "big": big}},
                    headers=h.api_headers(), timeout=10))
            for i in range(3):
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert m["data"]["i"] == i and len(m["data"]["big"]) == len(big)

    with tls_herald(env={"HERALD_MAX_BODY": "2000000"}) as h:
        asyncio.run(run(h))


def handshake(**opts):
    """TLS handshake with the given ssl.SSLContext settings; returns the
    negotiated (version, cipher) or the exception."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(CERT)
    for k, v in opts.items():
        if k == "ciphers":
            c.set_ciphers(v)
        else:
            setattr(c, k, v)
    def run(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with c.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    return s.version(), s.cipher()[0]
        except (ssl.SSLError, OSError) as e:
            return e
    return run


def test_sse_over_tls_is_http11_even_when_h2_is_offered():
    """A browser offers h2 by ALPN: Herald picks http/1.1 (its streams are
    written straight to the socket); SSE then works over TLS, big events
    (several TLS records, partial writes) included."""
    big = "y" * 300000
    with tls_herald() as h:
        c = ctx()
        c.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", h.port), timeout=20) as raw, \
                c.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "http/1.1", s.selected_alpn_protocol()
            s.sendall(("GET /sse?channel=news&token=%s HTTP/1.1\r\nHost: localhost\r\n\r\n"
                       % h.jwt(sub="alice")).encode())
            buf = b""
            while b"event: subscribed" not in buf:
                chunk = s.recv(65536)
                assert chunk, buf
                buf += chunk
            assert buf.startswith(b"HTTP/1.1 200 OK"), buf[:100]
            for data in ({"big": big}, {"n": 2}):
                r = requests.post("https://127.0.0.1:%d/api/v1/publish" % h.port, verify=CERT, timeout=20,
                                  json={"channel": "news", "data": data}, headers=h.api_headers())
                assert r.status_code == 200, r.text
            while b'"n":2' not in buf:
                chunk = s.recv(65536)
                assert chunk, buf[-200:]
                buf += chunk
            datas = [json.loads(line[6:]) for line in buf.split(b"\n") if line.startswith(b"data: ")]
            msgs = [d["data"] for d in datas if d.get("push") == "message"]
            assert msgs == [{"big": big}, {"n": 2}], [str(m)[:50] for m in msgs]


def test_only_tls12_and_newer_with_modern_ciphers():
    with tls_herald() as h:
        v = handshake()(h.port)
        assert v[0] == "TLSv1.3", v
        v = handshake(maximum_version=ssl.TLSVersion.TLSv1_2)(h.port)
        assert v[0] == "TLSv1.2" and ("GCM" in v[1] or "CHACHA20" in v[1]), v
        # TLS 1.1 (allowed on the client side for the attempt) is refused
        old = handshake(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1,
                        ciphers="ALL:@SECLEVEL=0")(h.port)
        assert isinstance(old, Exception), old
        # a CBC-only TLS 1.2 client finds no common cipher
        cbc = handshake(maximum_version=ssl.TLSVersion.TLSv1_2, ciphers="AES128-SHA:AES256-SHA")(h.port)
        assert isinstance(cbc, Exception), cbc


def test_cert_without_key_is_refused():
    h = Herald(env={"HERALD_TLS_CERT": CERT})
    p = h.run(["serve"], timeout=10)
    h.discard()
    assert p.returncode != 0 and b"tls_key" in p.stderr


if __name__ == "__main__":
    run_tests(globals())
