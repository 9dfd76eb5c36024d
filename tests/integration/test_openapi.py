"""test_openapi.py - docs/openapi.json and the running server agree.

* GET /api/v1/openapi.json serves docs/openapi.json byte for byte (compiled
  in), with an ETag and 304s, and its info.version is the binary's.
* Every documented operation reaches a route on a live server (no 404 from
  the router, no 405), and every other method on a documented path is 405
  with an Allow header naming exactly the documented methods.
* A tour makes every documented operation succeed once and meets the common
  errors, with harness.Herald's hook (openapi_check.py) checking each answer
  against the document: statuses, media types, body schemas, headers.
* /docs: Swagger UI from swagger_ui (npm's swagger-ui-dist, installed by
  setup.sh in web/swagger-ui), 404 problem without it, no file outside it;
  a swagger_ui without Swagger UI in it is refused at start. The page in a
  real browser: tests/browser/docs.test.mjs.
* A plain GET of /ws is 426 with Upgrade: websocket.
"""

import json
import os
import re
import secrets
import subprocess
import tempfile

import requests

from harness import REPO, Herald, herald_bin, project_version, run_tests
from openapi_check import DOC_PATH, METHODS, document

SWAGGER_UI = os.path.join(REPO, "web", "swagger-ui", "node_modules", "swagger-ui-dist")
CONFIG = {"namespaces": {
    "room": {"subscribe": "authenticated", "publish": "authenticated", "presence": True,
             "history_size": 10, "history_ttl": 300},
}}


def doc():
    with open(DOC_PATH) as f:
        return json.load(f)


def concrete(template):
    return re.sub(r"\{([^}]+)\}", lambda m: m.group(1) + "1", template)


def swagger_ui_dir():
    assert os.path.isfile(os.path.join(SWAGGER_UI, "swagger-ui-bundle.js")), \
        "%s missing: ./setup.sh test installs it (npm ci in web/swagger-ui)" % SWAGGER_UI
    return SWAGGER_UI


#---- the document itself -------------------------------------------------------

def test_served_document_is_docs_openapi_json():
    with open(DOC_PATH, "rb") as f:
        on_disk = f.read()
    with Herald() as h:
        r = h.http("GET", "/api/v1/openapi.json")
        assert r.status_code == 200, r.status_code
        assert r.headers["Content-Type"].split(";")[0] == "application/json", r.headers["Content-Type"]
        assert r.content == on_disk, "the served document is not docs/openapi.json (rebuild?)"
        etag = r.headers["ETag"]
        again = h.http("GET", "/api/v1/openapi.json", headers={"If-None-Match": etag})
        assert again.status_code == 304 and not again.content, again.status_code
        version = subprocess.run([herald_bin(), "--version"], capture_output=True, text=True).stdout
    assert json.loads(on_disk)["info"]["version"] == project_version(), "info.version is stale"
    assert project_version() in version, version


def test_every_documented_operation_is_routed():
    d = doc()
    with Herald() as h:
        for template, item in d["paths"].items():
            path = concrete(template)
            documented = sorted(m.upper() for m in item if m in METHODS)
            for m in documented:
                r = h.session.request(m, h.base + path, data=b"" if m == "POST" else None,
                                      hooks={"response": []})
                router_404 = r.status_code == 404 and "no such resource" in r.text
                assert not router_404 and r.status_code != 405, \
                    "%s %s is documented but not routed: %d %s" % (m, path, r.status_code, r.text[:200])
            for m in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                if m in documented:
                    continue
                r = h.session.request(m, h.base + path, data=b"" if m in ("POST", "PUT", "PATCH") else None)
                assert r.status_code == 405, "%s %s: %d, want 405 (undocumented method)" % (m, path, r.status_code)
                allow = sorted(a.strip() for a in r.headers.get("Allow", "").split(","))
                assert allow == documented, "%s: Allow %r, documented %r" % (path, allow, documented)


def test_the_hook_bites():
    """openapi_check refuses an answer the document does not describe."""
    d = document()
    problem = b'{"type":"about:blank","title":"Conflict","status":409,"detail":"x"}'
    hdrs = {"Content-Type": "application/problem+json"}
    for args, why in [
        (("POST", "/api/v1/publish", 409, hdrs, problem), "an undocumented status"),
        (("POST", "/api/v1/publish", 200, {"Content-Type": "application/json"}, b'{"offset":"7"}'),
         "a body against its schema"),
        (("POST", "/api/v1/publish", 200, {"Content-Type": "text/plain"}, b"{}"), "a wrong media type"),
        (("GET", "/readyz", 503, hdrs, problem.replace(b"409", b"503")), "a missing Retry-After"),
        (("DELETE", "/api/v1/users/abc", 204, {}, b"{}"), "a body on a 204"),
        (("GET", "/api/v1/users/me", 200, {"Content-Type": "application/json"},
          b'{"id":"x","username":"a","roles":[],"created_at":1}'), "a malformed user id"),
    ]:
        try:
            d.check(*args)
        except AssertionError:
            continue
        raise AssertionError("openapi_check accepted %s: %r" % (why, args))
    d.check("GET", "/no/such/path", 404, hdrs, problem)  # not an operation: not its business


#---- every operation, through the hook -----------------------------------------

def test_tour_of_every_operation():
    """Each documented operation succeeds once, and the usual errors are met;
    the session's hook validates every answer against the document."""
    seen = set()

    def call(h, method, path, want, **kw):
        r = h.http(method, path, **kw)
        assert r.status_code == want, "%s %s: %d, want %d: %s" % (method, path, r.status_code, want, r.text[:300])
        op = document().operation(method, path)
        if op:
            seen.add((method.lower(), op[0]))
        return r

    with Herald(config=CONFIG, env={"HERALD_SWAGGER_UI": swagger_ui_dir()}) as h:
        key = h.api_headers()
        call(h, "GET", "/healthz", 200)
        call(h, "GET", "/readyz", 200)
        call(h, "GET", "/metrics", 200)
        call(h, "GET", "/herald.js", 200)
        call(h, "GET", "/api/v1/openapi.json", 200)
        call(h, "GET", "/docs", 200)
        call(h, "GET", "/docs/swagger-ui.css", 200)
        call(h, "GET", "/ws", 426)

        user = call(h, "POST", "/api/v1/users", 201,
                    json={"username": "tour-" + secrets.token_hex(3), "password": "correct horse battery"}).json()
        call(h, "POST", "/api/v1/users", 409, json={"username": user["username"], "password": "correct horse battery"})
        call(h, "POST", "/api/v1/users", 422, json={"username": "x", "password": "short"})
        call(h, "POST", "/api/v1/users", 400, data="{", headers={"Content-Type": "application/json"})
        tokens = call(h, "POST", "/api/v1/auth/token", 200, data={
            "grant_type": "password", "username": user["username"], "password": "correct horse battery"}).json()
        call(h, "POST", "/api/v1/auth/token", 200, data={"grant_type": "refresh_token",
                                                          "refresh_token": tokens["refresh_token"]})
        call(h, "POST", "/api/v1/auth/token", 400, data={"grant_type": "password", "username": user["username"],
                                                          "password": "wrong wrong wrong"})
        call(h, "POST", "/api/v1/auth/token", 400, data={"grant_type": "client_credentials"})
        bearer = {"Authorization": "Bearer " + tokens["access_token"]}
        call(h, "GET", "/api/v1/users/me", 200, headers=bearer)
        call(h, "GET", "/api/v1/users/me", 401)
        call(h, "GET", "/api/v1/users/me", 404, headers={"Authorization": "Bearer " + h.jwt(sub="ghost")})
        call(h, "GET", "/api/v1/users/" + user["id"], 200, headers=key)
        call(h, "GET", "/api/v1/users/" + user["id"], 403, headers=bearer)
        call(h, "GET", "/api/v1/users/" + "0" * 32, 404, headers=key)

        for path in ("/sse", "/stream"):  # listen-only streams: headers, then closed
            r = h.session.get(h.base + path + "?channel=room:a", headers=bearer, stream=True, timeout=10)
            assert r.status_code == 200, (path, r.status_code)
            r.close()
            seen.add(("get", document().operation("GET", path)[0]))
            call(h, "GET", path + "?channel=bad%20name", 400, headers=bearer)
            call(h, "GET", path + "?channel=room:a", 401)

        ws = h.client(user["id"], token=tokens["access_token"])
        assert "result" in ws.cmd("subscribe", channel="room:a")
        call(h, "POST", "/api/v1/publish", 200, json={"channel": "room:a", "data": {"n": 1}}, headers=key)
        call(h, "POST", "/api/v1/publish", 401, json={"channel": "room:a", "data": 1})
        call(h, "POST", "/api/v1/publish", 403, json={"channel": "room:a", "data": 1}, headers=bearer)
        call(h, "POST", "/api/v1/publish", 422, json={"channel": "bad name", "data": 1}, headers=key)
        call(h, "POST", "/api/v1/broadcast", 200, json={"channels": ["room:a", "bad name", "news"], "data": 2},
             headers=key)
        call(h, "GET", "/api/v1/channels/room:a/presence", 200, headers=key)
        call(h, "GET", "/api/v1/channels/news/presence", 404, headers=key)
        hist = call(h, "GET", "/api/v1/channels/room:a/history?limit=5", 200, headers=key).json()
        assert [p["data"] for p in hist["publications"]] == [{"n": 1}, 2], hist
        call(h, "GET", "/api/v1/channels/room:a/history?limit=-1", 422, headers=key)
        long_channel = "room:" + "x" * 250  # the longest name: the path still fits
        call(h, "GET", "/api/v1/channels/%s/history" % long_channel, 200, headers=key)
        call(h, "POST", "/api/v1/channels/news/members", 204, json={"user": user["id"]}, headers=key)
        while True:  # the publications above may still be ahead of it
            push = ws.recv_json()
            if push.get("push") == "subscribed":
                break
        assert push["channel"] == "news", push
        call(h, "DELETE", "/api/v1/channels/news/members/" + user["id"], 204, headers=key)
        call(h, "POST", "/api/v1/users/%s/disconnect" % user["id"], 204, data=b"", headers=key)
        call(h, "DELETE", "/api/v1/users/" + user["id"], 204, headers=key)
        call(h, "DELETE", "/api/v1/users/" + user["id"], 404, headers=key)

    documented = {(m, t) for t, item in doc()["paths"].items() for m in item if m in METHODS}
    missing = sorted(documented - seen)
    assert not missing, "the tour skipped documented operations: %r" % missing


#---- /docs ---------------------------------------------------------------------

def test_docs_without_swagger_ui_is_a_clear_404():
    with Herald() as h:
        for path in ("/docs", "/docs/swagger-ui-bundle.js"):
            r = h.http("GET", path)
            assert r.status_code == 404, (path, r.status_code)
            assert "swagger_ui" in r.json()["detail"], r.text


def test_docs_serves_swagger_ui():
    ui = swagger_ui_dir()
    with Herald(env={"HERALD_SWAGGER_UI": ui}) as h:
        page = h.http("GET", "/docs")
        assert page.headers["Content-Type"].startswith("text/html"), page.headers
        scripts = re.findall(r'<script src="([^"]+)"', page.text)
        assert scripts == ["docs/swagger-ui-bundle.js", "docs/swagger-ui-standalone-preset.js",
                           "docs/herald-init.js"], scripts
        for src in scripts + re.findall(r'href="(docs/[^"]+)"', page.text):
            r = h.http("GET", "/" + src)
            assert r.status_code == 200, (src, r.status_code)
            if src.endswith(".js"):
                assert r.headers["Content-Type"].startswith("application/javascript"), (src, r.headers)
        with open(os.path.join(ui, "swagger-ui-bundle.js"), "rb") as f:
            assert h.http("GET", "/docs/swagger-ui-bundle.js").content == f.read()
        init = h.http("GET", "/docs/herald-init.js").text
        assert "api/v1/openapi.json" in init and "petstore" not in init, init
        # nothing outside the directory, nothing hidden
        for path in ("/docs/..%2f..%2fpackage.json", "/docs/.bin", "/docs/..", "/docs/nope.js"):
            r = h.http("GET", path)
            assert r.status_code in (404, 400), (path, r.status_code)


def test_swagger_ui_must_hold_swagger_ui():
    with tempfile.TemporaryDirectory() as empty:
        conf = os.path.join(empty, "herald.json")
        with open(conf, "w") as f:
            json.dump({"swagger_ui": empty}, f)
        p = subprocess.run([herald_bin(), "check-config", conf], capture_output=True, text=True, timeout=10)
        assert p.returncode != 0 and "swagger-ui-bundle.js" in p.stderr, (p.returncode, p.stderr)
        h = Herald(env={"HERALD_SWAGGER_UI": empty})
        try:
            # refused before serving: exits at once (a timeout here fails the test)
            p = h.run(["serve"], timeout=10)
        finally:
            h.discard()
        err = p.stderr.decode(errors="replace")
        assert p.returncode != 0 and "swagger-ui-bundle.js" in err, (p.returncode, err)


def test_plain_get_of_ws_is_426():
    with Herald() as h:
        r = h.http("GET", "/ws")
        assert r.status_code == 426 and r.headers.get("Upgrade") == "websocket", (r.status_code, r.headers)
        assert r.json()["status"] == 426
        # a real upgrade still works
        ws = h.client("alice")
        assert ws.hello["push"] == "connected"


if __name__ == "__main__":
    run_tests(globals())
