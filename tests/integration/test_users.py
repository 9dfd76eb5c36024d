"""Users, the OAuth2 token endpoint and the admin user routes, run against
both user stores.

Every case below is a function `case_NAME(store)`; the loop at the end of the
file turns each into `test_NAME_sqlite` (embedded mode: the SQLite file
HERALD_DB) and `test_NAME_redis` (HERALD_REDIS_URL pointing at a private
redis-server the test starts), so both stores must pass exactly the same
contract. `store.server(env=...)` starts a Herald on that store; starting it
twice in one case reuses the same data (same SQLite file / same Redis, same
JWT secret), which is how restarts are tested. After every case the server
must still answer /healthz and exit 0 on SIGTERM (the harness checks the
exit status)."""

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time

import requests

from harness import (Herald, Redis, assert_error, assert_problem, assert_result, jwt_parts,
                     jwt_verify_hs256, run_tests)

USERS = "/api/v1/users"
TOKEN = "/api/v1/auth/token"
ID_RE = re.compile(r"^[0-9a-f]{32}$")
PW = "correct horse battery staple"  # long, not common, never equal to a username
PW2 = "another Good passphrase 42"


#---- stores -------------------------------------------------------------------

class Store:
    """The backing store of one case: a SQLite path or a private Redis."""

    def __init__(self, kind):
        self.kind = kind
        self.secret = secrets.token_hex(24)
        self.dir = tempfile.mkdtemp(prefix="herald-users-")
        self.db = os.path.join(self.dir, "herald.db")
        self.redis = None

    @contextlib.contextmanager
    def server(self, env=None, **kw):
        """A running Herald on this store; checks /healthz before it stops."""
        env = dict(env or {})
        env.setdefault("HERALD_JWT_SECRET", self.secret)
        if self.kind == "redis":
            if self.redis is None:
                self.redis = Redis().start()
            kw["redis"] = self.redis
        else:
            env.setdefault("HERALD_DB", self.db)
        h = Herald(env=env, **kw)
        h.secret = env["HERALD_JWT_SECRET"]
        with h:
            yield h
            assert h.healthy(), "herald no longer answers /healthz after the case"

    def files_bytes(self):
        """Everything the SQLite store wrote (db, WAL, journal)."""
        out = b""
        for name in os.listdir(self.dir):
            if name.startswith("herald.db"):
                with open(os.path.join(self.dir, name), "rb") as f:
                    out += f.read()
        return out

    def redis_dump(self):
        """Every key and value in Redis as one text blob (strings, hashes, sets, lists, zsets)."""
        r = self.redis
        parts = []
        for key in r.keys("*"):
            parts.append(key)
            t = r.cmd("TYPE", key)
            if t == "string":
                parts.append(r.cmd("GET", key) or "")
            elif t == "hash":
                parts += r.cmd("HGETALL", key)
            elif t == "set":
                parts += r.cmd("SMEMBERS", key)
            elif t == "list":
                parts += r.cmd("LRANGE", key, 0, -1)
            elif t == "zset":
                parts += r.cmd("ZRANGE", key, 0, -1)
        return "\n".join(str(p) for p in parts)

    def close(self):
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


#---- helpers -------------------------------------------------------------------

def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def assert_json(resp, status):
    assert resp.status_code == status, "HTTP %d, want %d: %s" % (resp.status_code, status, resp.text[:300])
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    assert ctype == "application/json", "Content-Type %r on a %d" % (ctype, status)
    return resp.json()


def assert_user(body, username, roles=()):
    assert set(body) == {"id", "username", "roles", "created_at"}, "user members: %r" % body
    assert isinstance(body["id"], str) and ID_RE.match(body["id"]), "id %r is not 32 hex chars" % body["id"]
    assert body["username"] == username, "username %r, want %r" % (body["username"], username)
    assert isinstance(body["roles"], list) and sorted(body["roles"]) == sorted(roles), \
        "roles %r, want %r" % (body["roles"], list(roles))
    ca = body["created_at"]
    assert isinstance(ca, int) and not isinstance(ca, bool) and abs(ca - time.time()) < 120, \
        "created_at %r is not the unix time of creation" % ca
    return body


def assert_oauth_error(resp, error, status=400):
    """An RFC 6749 §5.2 error body (not problem+json)."""
    body = assert_json(resp, status)
    assert body.get("error") == error, "error %r, want %r: %r" % (body.get("error"), error, body)
    assert "error_description" not in body or isinstance(body["error_description"], str), body
    return body


def assert_no_store(resp):
    cc = resp.headers.get("Cache-Control", "")
    assert "no-store" in cc.lower(), "Cache-Control %r on a token response, want no-store" % cc


def check_token_response(h, resp, user):
    """A 200 token response for `user`; returns (access, refresh, claims)."""
    body = assert_json(resp, 200)
    assert_no_store(resp)
    assert set(body) >= {"access_token", "token_type", "expires_in", "refresh_token"}, body
    assert body["token_type"] == "bearer", body
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0, body
    assert isinstance(body["refresh_token"], str) and len(body["refresh_token"]) >= 32, body
    access = body["access_token"]
    head, claims, _ = jwt_parts(access)
    assert head.get("alg") == "HS256", head
    assert jwt_verify_hs256(access, h.secret), "access token does not verify with the server's secret"
    assert claims.get("sub") == user["id"], "sub %r, want the user id %r" % (claims.get("sub"), user["id"])
    assert claims.get("name") == user["username"], "name %r, want %r" % (claims.get("name"), user["username"])
    assert sorted(claims.get("roles") or []) == sorted(user["roles"]), claims
    now = time.time()
    assert isinstance(claims.get("iat"), int) and abs(claims["iat"] - now) < 60, claims
    assert isinstance(claims.get("exp"), int) and abs(claims["exp"] - claims["iat"] - body["expires_in"]) <= 2, \
        "exp - iat = %r, expires_in %r" % (claims.get("exp", 0) - claims.get("iat", 0), body["expires_in"])
    assert isinstance(claims.get("jti"), str) and claims["jti"], claims
    return access, body["refresh_token"], claims


def delete(h, path, headers=None):
    """DELETE (requests sends "Content-Length: 0", as most clients do); a
    server that never answers fails in 3 s with a clear message."""
    try:
        return h.http("DELETE", path, headers=headers, timeout=3)
    except requests.RequestException as e:
        raise AssertionError("DELETE %s (Content-Length: 0) got no HTTP response: %s" % (path, e))


def login_resp(h, username, password):
    return h.token_request(grant_type="password", username=username, password=password)


def signup(h, username, password=PW, roles=None):
    """Registers with the API key and logs in; (user, access, refresh)."""
    user = h.create_user(username, password, roles)
    body = h.login(username, password)
    return user, body["access_token"], body["refresh_token"]


def ws_with(h, access):
    """A WS authenticated with `access` at the handshake."""
    return h.client(token=access)


def refused_handshake(h, tok):
    ws = h.ws()
    return ws.connect("/ws", bearer(tok))


#---- registration ----------------------------------------------------------------

def case_register_returns_user(store):
    with store.server() as h:
        r = h.register("alice", PW)
        user = assert_user(assert_json(r, 201), "alice")
        assert PW not in r.text and "argon" not in r.text.lower(), "password material in the reply: %s" % r.text
        got = assert_json(h.http("GET", USERS + "/" + user["id"], headers=h.api_headers()), 200)
        assert got == user, "GET returned %r, POST %r" % (got, user)
        other = assert_user(assert_json(h.register("bob", PW), 201), "bob")
        assert other["id"] != user["id"], "two users with one id"


def case_roles_only_by_admins(store):
    with store.server() as h:
        # API key sets roles
        mod = assert_user(assert_json(h.register("moddy", PW, ["mod", "admin"], h.api_headers()), 201),
                          "moddy", ["mod", "admin"])
        # an anonymous caller may register, but not choose roles
        assert_problem(h.register("sneaky", PW, ["admin"]), 403)
        # a normal user's token may not set roles either
        _, plain_tok, _ = signup(h, "plain")
        assert_problem(h.register("sneaky2", PW, ["admin"], bearer(plain_tok)), 403)
        # an admin's token may
        admin_tok = h.login("moddy", PW)["access_token"]
        assert_user(assert_json(h.register("helper", PW, ["helper"], bearer(admin_tok)), 201),
                    "helper", ["helper"])
        # the roles reach the access token
        _, _, claims = check_token_response(h, login_resp(h, "moddy", PW), mod)
        assert sorted(claims["roles"]) == ["admin", "mod"], claims
        # invalid role strings are 422
        for bad in ["", "has space", "x" * 65, "new\nline"]:
            assert_problem(h.register("r" + secrets.token_hex(3), PW, [bad], h.api_headers()), 422)
        # the refused registrations created nobody
        assert_json(h.register("sneaky", PW), 201)
        assert_json(h.register("sneaky2", PW), 201)


def case_duplicate_username_case_insensitive(store):
    with store.server() as h:
        first = assert_user(assert_json(h.register("bob", PW), 201), "bob")
        for name in ("bob", "Bob", "BOB", "bOb"):
            assert_problem(h.register(name, PW2), 409)
        # also through the API key (admins do not bypass uniqueness)
        assert_problem(h.register("BoB", PW2, headers=h.api_headers()), 409)
        # the original account is intact: old password works, new one does not
        check_token_response(h, login_resp(h, "bob", PW), first)
        assert_oauth_error(login_resp(h, "bob", PW2), "invalid_grant")
        # a mixed-case original blocks its lower-case twin too
        assert_user(assert_json(h.register("Carol", PW), 201), "Carol")
        assert_problem(h.register("carol", PW), 409)


def case_invalid_usernames_422(store):
    with store.server() as h:
        bad = ["", "x" * 65, "é" * 33, "ctl\x01char", "tab\there", "new\nline", "esc\x1b[0m", "del\x7f", " lead", "trail ", " both ", "\t", " "]
        for name in bad:
            assert_problem(h.register(name, PW), 422)
        for body in [{"password": PW}, {"username": "nopw"}, {"username": 5, "password": PW},
                     {"username": None, "password": PW}, {"username": ["a"], "password": PW},
                     {"username": "okname", "password": 12345678},
                     {"username": "okname", "password": PW, "roles": "admin"}]:
            assert_problem(h.http("POST", USERS, json=body, headers=h.api_headers()), 422)
        for raw in ["{", "not json", ""]:
            r = h.http("POST", USERS, data=raw, headers={"Content-Type": "application/json"})
            assert_problem(r, 400)
        # the limits are bytes, inclusive
        assert_user(assert_json(h.register("x" * 64, PW), 201), "x" * 64)
        assert_user(assert_json(h.register("é" * 32, PW), 201), "é" * 32)
        # names that were refused were not stored
        assert_user(assert_json(h.register("okname", PW), 201), "okname")


def case_nul_in_username_422(store):
    """"nul\u0000byte" is valid JSON with a control character in the
    username: 422 like the others (not 400 "invalid JSON"), and no user
    named "nul" may come out of it (C-string truncation)."""
    with store.server() as h:
        assert_problem(h.register("nul\x00byte", PW), 422)
        assert_problem(h.register("\x00", PW), 422)
        assert_user(assert_json(h.register("nul", PW), 201), "nul")


def case_weak_passwords_422(store):
    with store.server() as h:
        for pw in ["", "short", "7chars!", "password", "12345678", "qwertyuiop", "weakling1"]:
            assert_problem(h.register("weakling1", pw), 422)
        # 8 bytes of something uncommon is enough
        user = assert_user(assert_json(h.register("weakling1", "Zq8#kP2m"), 201), "weakling1")
        check_token_response(h, login_resp(h, "weakling1", "Zq8#kP2m"), user)
        # a very long password is either accepted or refused, never a crash
        r = h.register("longpw", "L0ng" * 1024)
        assert r.status_code in (201, 422), (r.status_code, r.text[:200])
        if r.status_code == 422:
            assert_problem(r, 422)


def case_injection_shaped_usernames_verbatim(store):
    names = ["robert'); DROP TABLE users;--", "a\" OR 1=1 --", "名前", "*", "user:*", "a?c",
             "[ab]", "%", "_", "a%", "x' OR 'x'='x", "\\", "{\"json\":1}", "<script>"]
    with store.server() as h:
        users = {}
        for name in names:
            users[name] = assert_user(assert_json(h.register(name, PW), 201), name)
        for name, user in users.items():
            got = assert_json(h.http("GET", USERS + "/" + user["id"], headers=h.api_headers()), 200)
            assert got == user, "GET %s: %r, want %r" % (user["id"], got, user)
            access, _, _ = check_token_response(h, login_resp(h, name, PW), user)
            me = assert_json(h.http("GET", USERS + "/me", headers=bearer(access)), 200)
            assert me == user, (me, user)
        # wildcard-looking names match only themselves
        assert_problem(h.register("A%", PW), 409)  # case-fold twin of "a%"
        assert_oauth_error(login_resp(h, "a_c", PW), "invalid_grant")
        assert_oauth_error(login_resp(h, "ab", PW), "invalid_grant")
        assert_oauth_error(login_resp(h, "anything", PW), "invalid_grant")
        # the table is still there
        assert_user(assert_json(h.register("after", PW), 201), "after")


#---- token endpoint ----------------------------------------------------------------

def case_login_issues_tokens(store):
    with store.server() as h:
        user = h.create_user("dora", PW)
        a1, r1, c1 = check_token_response(h, login_resp(h, "dora", PW), user)
        a2, r2, c2 = check_token_response(h, login_resp(h, "dora", PW), user)
        assert c1["jti"] != c2["jti"], "two logins share a jti"
        assert r1 != r2, "two logins share a refresh token"
        assert a1 != a2
        # both sessions work
        for tok in (a1, a2):
            assert assert_json(h.http("GET", USERS + "/me", headers=bearer(tok)), 200) == user


def case_login_errors_are_rfc6749(store):
    with store.server() as h:
        h.create_user("erin", PW)
        r = login_resp(h, "erin", "wrong password!")
        assert_oauth_error(r, "invalid_grant")
        assert "access_token" not in r.text
        assert_oauth_error(login_resp(h, "nobody-here", PW), "invalid_grant")
        assert_oauth_error(h.token_request(username="erin", password=PW), "invalid_request")
        assert_oauth_error(h.token_request(grant_type="password", username="erin"), "invalid_request")
        assert_oauth_error(h.token_request(grant_type="password", password=PW), "invalid_request")
        assert_oauth_error(h.token_request(grant_type="refresh_token"), "invalid_request")
        for grant in ("client_credentials", "authorization_code", "implicit", "PASSWORD", "x"):
            assert_oauth_error(h.token_request(grant_type=grant, username="erin", password=PW),
                               "unsupported_grant_type")
        assert_oauth_error(h.token_request(grant_type="refresh_token", refresh_token="not-a-token"),
                           "invalid_grant")
        assert_oauth_error(h.token_request(grant_type="refresh_token", refresh_token="A" * 43),
                           "invalid_grant")
        # an empty body and a body of garbage
        assert_oauth_error(h.http("POST", TOKEN, data=b"",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}),
                           "invalid_request")
        assert_oauth_error(h.http("POST", TOKEN, data=b"%zz&&==&grant_type",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}),
                           "invalid_request")
        # still fine for the right password (2 failures < the default 5)
        assert_json(login_resp(h, "erin", PW), 200)


def case_refresh_rotates(store):
    with store.server() as h:
        user = h.create_user("fred", PW)
        _, r1, c1 = check_token_response(h, login_resp(h, "fred", PW), user)
        a2, r2, c2 = check_token_response(h, h.token_request(grant_type="refresh_token", refresh_token=r1), user)
        assert r2 != r1, "the refresh grant returned the same refresh token"
        assert c2["jti"] != c1["jti"]
        assert assert_json(h.http("GET", USERS + "/me", headers=bearer(a2)), 200) == user
        # r1 is spent
        assert_oauth_error(h.token_request(grant_type="refresh_token", refresh_token=r1), "invalid_grant")
        # r2 works once
        _, r3, _ = check_token_response(h, h.token_request(grant_type="refresh_token", refresh_token=r2), user)
        assert_oauth_error(h.token_request(grant_type="refresh_token", refresh_token=r2), "invalid_grant")
        assert r3 not in (r1, r2)


def case_refresh_is_single_use_under_concurrency(store):
    with store.server() as h:
        user = h.create_user("gail", PW)
        _, r1, _ = check_token_response(h, login_resp(h, "gail", PW), user)
        results = []

        def use():
            resp = requests.post(h.base + TOKEN, data={"grant_type": "refresh_token", "refresh_token": r1},
                                 timeout=10)
            results.append(resp.status_code)

        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200] + [400] * 7, "8 concurrent uses of one refresh token: %r" % results


def case_login_throttling(store):
    with store.server(env={"HERALD_LOGIN_MAX_FAILURES": "3"}) as h:
        carol = h.create_user("carol", PW)
        h.create_user("dave", PW)
        for _ in range(3):
            assert_oauth_error(login_resp(h, "carol", "not her password"), "invalid_grant")
        r = login_resp(h, "carol", PW)  # right password, but throttled
        body = assert_oauth_error(r, "too_many_attempts", status=429)
        ra = r.headers.get("Retry-After", "")
        assert ra.isdigit() and 0 < int(ra) <= 300, "Retry-After %r, want integer seconds in 1..300" % ra
        assert "access_token" not in body
        # the same account under another spelling shares the budget
        assert_oauth_error(login_resp(h, "CAROL", PW), "too_many_attempts", status=429)
        # another username from the same address is still fine
        assert_json(login_resp(h, "dave", PW), 200)
        # address budget is 4 x 3 = 12 failures; 3 so far, add 8 on other names (<3 each)
        for i in range(8):
            assert_oauth_error(login_resp(h, "ghost%d" % (i // 2), "nope nope"), "invalid_grant")
        assert_json(login_resp(h, "dave", PW), 200)  # 11 failures: still allowed
        assert_oauth_error(login_resp(h, "ghost9", "nope nope"), "invalid_grant")  # 12th
        r = login_resp(h, "dave", PW)
        assert_oauth_error(r, "too_many_attempts", status=429)
        ra = r.headers.get("Retry-After", "")
        assert ra.isdigit() and int(ra) > 0, "Retry-After %r" % ra
        # registration and refresh are not login attempts; carol's account is not harmed
        assert h.http("GET", USERS + "/" + carol["id"], headers=h.api_headers()).status_code == 200


def case_login_throttle_window_ends(store):
    # a token bucket of 2 attempts, one back every 12 / 2 = 6 s: the two
    # failures (two Argon2id checks) must fit in 6 s for the third attempt
    # to be refused, even under AddressSanitizer on a loaded machine
    with store.server(env={"HERALD_LOGIN_MAX_FAILURES": "2", "HERALD_LOGIN_WINDOW": "12"}) as h:
        user = h.create_user("hank", PW)
        for _ in range(2):
            assert_oauth_error(login_resp(h, "hank", "bad guess!"), "invalid_grant")
        r = login_resp(h, "hank", PW)
        assert_oauth_error(r, "too_many_attempts", status=429)
        wait = int(r.headers.get("Retry-After", "0"))
        assert 0 < wait <= 6, "Retry-After %r, want at most 6 s (one attempt back every 6 s)" \
            % r.headers.get("Retry-After")
        time.sleep(wait)  # Retry-After is rounded up: an attempt is back by then
        check_token_response(h, login_resp(h, "hank", PW), user)


#---- /users/me, /users/{id} ------------------------------------------------------------

def case_me(store):
    with store.server() as h:
        user, access, _ = signup(h, "ivy")
        assert assert_json(h.http("GET", USERS + "/me", headers=bearer(access)), 200) == user
        assert_problem(h.http("GET", USERS + "/me"), 401)
        assert_problem(h.http("GET", USERS + "/me", headers=h.api_headers()), 401)
        assert_problem(h.http("GET", USERS + "/me", headers=bearer("not.a.jwt")), 401)
        assert_problem(h.http("GET", USERS + "/me", headers=bearer(h.jwt(sub=user["id"], exp=1))), 401)
        # a valid token whose sub is not a stored user
        assert_problem(h.http("GET", USERS + "/me", headers=bearer(h.token("ghost"))), 404)
        assert_problem(h.http("GET", USERS + "/me", headers=bearer(h.token("0" * 32))), 404)


def case_get_user_admin_only(store):
    with store.server() as h:
        user, access, _ = signup(h, "jack")
        _, admin_tok, _ = signup(h, "boss", roles=["admin"])
        path = USERS + "/" + user["id"]
        assert assert_json(h.http("GET", path, headers=h.api_headers()), 200) == user
        assert assert_json(h.http("GET", path, headers={"Authorization": "ApiKey " + h.api_key}), 200) == user
        assert assert_json(h.http("GET", path, headers=bearer(admin_tok)), 200) == user
        assert_problem(h.http("GET", path, headers=bearer(access)), 403)  # even for one's own id
        assert_problem(h.http("GET", path, headers=bearer(h.token("x", roles=["publisher"]))), 403)
        assert_problem(h.http("GET", path), 401)
        assert_problem(h.http("GET", path, headers={"X-API-Key": "wrong"}), 401)
        for unknown in ("0" * 32, "f" * 32, "nope", user["id"][:-1], user["id"].upper()):
            assert_problem(h.http("GET", USERS + "/" + unknown, headers=h.api_headers()), 404)


#---- WebSocket identity -----------------------------------------------------------------

def case_ws_with_login_token(store):
    with store.server() as h:
        user, access, _ = signup(h, "kate")
        ws = ws_with(h, access)
        assert ws.hello.get("user") == user["id"], "connected push %r, want user %r" % (ws.hello, user["id"])
        assert ws.hello.get("expires_at") == jwt_parts(access)[1]["exp"], ws.hello
        # the personal channel of that id is hers
        assert_result(ws.cmd("subscribe", channel="user:" + user["id"]))
        # the connect op works with the same token
        ws2 = h.ws()
        assert ws2.connect("/ws") == 101
        ws2.send_json({"id": 1, "op": "connect", "token": access})
        assert ws2.recv_push("connected").get("user") == user["id"]
        res = assert_result(ws2.wait_reply(1))
        assert res.get("user") == user["id"], res
        ws2._next_id = 2
        assert_result(ws2.cmd("subscribe", channel="user:" + user["id"]))
        other, other_tok, _ = signup(h, "liam")
        assert_error(ws_with(h, other_tok).cmd("subscribe", channel="user:" + user["id"]), "forbidden")
        h.publish("user:" + user["id"], {"hi": "kate"})
        for c in (ws, ws2):
            assert c.recv_push() == {"push": "message", "channel": "user:" + user["id"], "data": {"hi": "kate"}}


#---- delete / disconnect -------------------------------------------------------------------

def case_delete_user(store):
    with store.server() as h:
        user, access, refresh = signup(h, "mona")
        other, other_tok, _ = signup(h, "ned")
        path = USERS + "/" + user["id"]
        socks = [ws_with(h, access), ws_with(h, access)]
        assert_result(socks[0].cmd("subscribe", channel="news"))
        bystander = ws_with(h, other_tok)
        # who may not
        assert_problem(delete(h, path, headers=bearer(other_tok)), 403)
        assert_problem(delete(h, path, headers=bearer(access)), 403)  # not even oneself
        assert_problem(delete(h, path), 401)
        assert_result(socks[1].cmd("ping"))  # nothing happened yet
        # the API key may
        r = delete(h, path, headers=h.api_headers())
        assert r.status_code == 204, "DELETE: HTTP %d %s" % (r.status_code, r.text[:200])
        assert r.content == b"", "204 with a body: %r" % r.content[:100]
        for ws in socks:
            assert ws.expect_close(timeout=3) == 4003, "deleted user's socket: close %r" % (ws.close_info,)
        assert_result(bystander.cmd("ping"))
        assert_problem(h.http("GET", path, headers=h.api_headers()), 404)
        assert_problem(delete(h, path, headers=h.api_headers()), 404)
        # every credential of the deleted user is dead
        assert refused_handshake(h, access) == 401, "deleted user's token still upgrades"
        ws = h.ws()
        assert ws.connect("/ws") == 101
        ws.send_json({"id": 1, "op": "connect", "token": access})
        assert_error(ws.wait_reply(1), "unauthorized")
        assert ws.expect_close() == 4001
        assert_problem(h.http("GET", USERS + "/me", headers=bearer(access)), 401)
        assert_oauth_error(h.token_request(grant_type="refresh_token", refresh_token=refresh), "invalid_grant")
        assert_oauth_error(login_resp(h, "mona", PW), "invalid_grant")
        # the name is free again, for a new account with a new id
        again = assert_user(assert_json(h.register("mona", PW2), 201), "mona")
        assert again["id"] != user["id"]
        fresh = h.login("mona", PW2)["access_token"]
        assert ws_with(h, fresh).hello["user"] == again["id"]
        assert refused_handshake(h, access) == 401, "old token revived by re-registration"


def case_delete_user_by_admin_token(store):
    with store.server() as h:
        _, admin_tok, _ = signup(h, "root", roles=["admin"])
        user, access, _ = signup(h, "oscar")
        ws = ws_with(h, access)
        r = delete(h, USERS + "/" + user["id"], headers=bearer(admin_tok))
        assert r.status_code == 204, (r.status_code, r.text[:200])
        assert ws.expect_close(timeout=3) == 4003
        assert_problem(h.http("GET", USERS + "/" + user["id"], headers=bearer(admin_tok)), 404)


def case_disconnect_user(store):
    with store.server() as h:
        user, access, _ = signup(h, "pia")
        other, other_tok, _ = signup(h, "quinn")
        path = USERS + "/" + user["id"] + "/disconnect"
        socks = [ws_with(h, access) for _ in range(3)]
        bystander = ws_with(h, other_tok)
        assert_problem(h.http("POST", path, headers=bearer(other_tok)), 403)
        assert_problem(h.http("POST", path, headers=bearer(access)), 403)
        assert_problem(h.http("POST", path), 401)
        r = h.http("POST", path, headers=h.api_headers())
        assert r.status_code == 204, "disconnect: HTTP %d %s" % (r.status_code, r.text[:200])
        for ws in socks:
            assert ws.expect_close(timeout=3) == 4003, ws.close_info
        assert_result(bystander.cmd("ping"))
        # the user is kept and may come straight back with the same token
        assert assert_json(h.http("GET", USERS + "/" + user["id"], headers=h.api_headers()), 200) == user
        back = ws_with(h, access)
        assert back.hello["user"] == user["id"]
        assert_result(back.cmd("ping"))
        assert assert_json(h.http("GET", USERS + "/me", headers=bearer(access)), 200) == user


#---- open registration off ---------------------------------------------------------------

def case_closed_registration(store):
    with store.server(env={"HERALD_OPEN_REGISTRATION": "false"}) as h:
        assert_problem(h.register("walkin", PW), 401)
        assert_problem(h.register("walkin", PW, headers={"X-API-Key": "wrong"}), 401)
        user, access, _ = signup(h, "member")  # via the API key
        assert_problem(h.register("walkin", PW, headers=bearer(access)), 403)
        assert_problem(h.register("walkin", PW, headers=bearer(h.token("svc"))), 403)
        _, admin_tok, _ = signup(h, "chief", roles=["admin"])
        assert_user(assert_json(h.register("walkin", PW, headers=bearer(admin_tok)), 201), "walkin")
        assert_user(assert_json(h.register("walkin2", PW, headers={"Authorization": "ApiKey " + h.api_key}), 201),
                    "walkin2")


#---- command line ----------------------------------------------------------------------

def case_cli_user_add(store):
    with store.server() as h:
        p = h.run(["user", "add", "rita", "--role", "admin"], input=(PW + "\n").encode())
        assert p.returncode == 0, "user add: exit %d, stderr %r" % (p.returncode, p.stderr)
        out = json.loads(p.stdout.decode())
        assert ID_RE.match(out.get("id", "")) and out.get("username") == "rita" and out.get("roles") == ["admin"], out
        assert PW not in p.stdout.decode() + p.stderr.decode()
        # duplicate (any case) fails with a message and changes nothing
        for name in ("rita", "RITA"):
            p = h.run(["user", "add", name], input=(PW2 + "\n").encode())
            assert p.returncode != 0, "duplicate user add exited 0: %r" % p.stdout
            assert p.stderr.strip(), "duplicate user add gave no message"
        # a weak password is refused too
        p = h.run(["user", "add", "weak"], input=b"password\n")
        assert p.returncode != 0 and p.stderr.strip(), (p.returncode, p.stderr)
        # the running server sees the user at once, roles included
        rita = out
        access, _, claims = check_token_response(h, login_resp(h, "rita", PW), dict(out))
        assert claims["roles"] == ["admin"]
        assert_oauth_error(login_resp(h, "rita", PW2), "invalid_grant")
        # her token is an admin's
        plain, plain_tok, _ = signup(h, "sam")
        got = assert_json(h.http("GET", USERS + "/" + plain["id"], headers=bearer(access)), 200)
        assert got == plain
        me = assert_json(h.http("GET", USERS + "/me", headers=bearer(access)), 200)
        assert me["id"] == rita["id"] and me["username"] == "rita" and me["roles"] == ["admin"], me
        r = delete(h, USERS + "/" + plain["id"], headers=bearer(access))
        assert r.status_code == 204, (r.status_code, r.text)
        # an injection-shaped name through the CLI, no roles
        evil = "robert'); DROP TABLE users;--"
        p = h.run(["user", "add", evil], input=(PW + "\n").encode())
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.decode())
        assert out.get("username") == evil and out.get("roles") == [], out
        check_token_response(h, login_resp(h, evil, PW), dict(out, created_at=0))


#---- storage --------------------------------------------------------------------------

def case_secrets_not_stored_in_clear(store):
    with store.server() as h:
        pw = "unique-" + secrets.token_hex(8)
        user = h.create_user("tess", pw)
        body = h.login("tess", pw)
        rotated = h.token_request(grant_type="refresh_token", refresh_token=body["refresh_token"]).json()
        blob = store.files_bytes().decode("latin-1") if store.kind == "sqlite" else store.redis_dump()
        assert user["id"] in blob, "the store does not contain the user id (wrong file/instance?)"
        assert pw not in blob, "the password is stored in clear"
        assert "$argon2id$" in blob, "no Argon2id hash in the store"
        for tok in (body["refresh_token"], rotated["refresh_token"]):
            assert tok not in blob, "a refresh token is stored in clear"


def case_concurrent_registration_one_winner(store):
    with store.server() as h:
        codes = []

        def reg(i):
            r = requests.post(h.base + USERS, json={"username": "Race" if i % 2 else "race", "password": PW},
                              timeout=15)
            codes.append(r.status_code)

        threads = [threading.Thread(target=reg, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [201] + [409] * 7, "8 concurrent registrations of one name: %r" % codes


def case_restart_keeps_users_and_revocations(store):
    with store.server() as h:
        keep, keep_tok, keep_refresh = signup(h, "uma")
        gone, gone_tok, gone_refresh = signup(h, "vic")
        r = delete(h, USERS + "/" + gone["id"], headers=h.api_headers())
        assert r.status_code == 204, r.status_code
    with store.server() as h:
        assert assert_json(h.http("GET", USERS + "/me", headers=bearer(keep_tok)), 200) == keep
        check_token_response(h, h.token_request(grant_type="refresh_token", refresh_token=keep_refresh), keep)
        check_token_response(h, login_resp(h, "uma", PW), keep)
        assert_problem(h.http("GET", USERS + "/" + gone["id"], headers=h.api_headers()), 404)
        assert refused_handshake(h, gone_tok) == 401, "deleted user's token accepted after a restart"
        assert_problem(h.http("GET", USERS + "/me", headers=bearer(gone_tok)), 401)
        assert_oauth_error(h.token_request(grant_type="refresh_token", refresh_token=gone_refresh),
                           "invalid_grant")
        assert_problem(h.register("UMA", PW), 409)


#---- generate test_<case>_<store> ------------------------------------------------------------

def _bind(case, kind):
    def test():
        store = Store(kind)
        try:
            case(store)
        finally:
            store.close()
    test.__name__ = "test_%s_%s" % (case.__name__[5:], kind)
    return test


for _name, _case in list(globals().items()):
    if _name.startswith("case_") and callable(_case):
        for _kind in ("sqlite", "redis"):
            _t = _bind(_case, _kind)
            globals()[_t.__name__] = _t


#---- Redis only: several nodes on one store ---------------------------------------------------

def test_two_nodes_share_users_redis():
    """Users live in Redis: any node serves any user, refresh tokens rotate
    across nodes, and a deletion on one node is seen by the store everywhere."""
    store = Store("redis")
    try:
        with store.server() as a, store.server() as b:
            user = a.create_user("wade", PW)
            check_token_response(b, login_resp(b, "wade", PW), user)
            assert_problem(b.register("WADE", PW), 409)
            _, r1, _ = check_token_response(a, login_resp(a, "wade", PW), user)
            _, r2, _ = check_token_response(b, b.token_request(grant_type="refresh_token", refresh_token=r1), user)
            assert_oauth_error(a.token_request(grant_type="refresh_token", refresh_token=r1), "invalid_grant")
            assert assert_json(b.http("GET", USERS + "/" + user["id"], headers=b.api_headers()), 200) == user
            r = delete(a, USERS + "/" + user["id"], headers=a.api_headers())
            assert r.status_code == 204, r.status_code
            assert_problem(b.http("GET", USERS + "/" + user["id"], headers=b.api_headers()), 404)
            assert_oauth_error(b.token_request(grant_type="refresh_token", refresh_token=r2), "invalid_grant")
            assert_oauth_error(login_resp(b, "wade", PW), "invalid_grant")
    finally:
        store.close()


def test_deletion_reaches_other_nodes_redis():
    """A user deleted through node A: within the revocation poll period (2 s)
    node B closes that user's sockets with 4003 and refuses their token."""
    store = Store("redis")
    try:
        with store.server() as a, store.server() as b:
            user, access, _ = signup(a, "quinn")
            other, other_tok, _ = signup(a, "rory")
            ws = ws_with(b, access)
            bystander = ws_with(b, other_tok)
            assert_json(b.http("GET", USERS + "/me", headers=bearer(access)), 200)
            r = delete(a, USERS + "/" + user["id"], headers=a.api_headers())
            assert r.status_code == 204, r.status_code
            assert ws.expect_close(timeout=6) == 4003, "node B kept the socket: %r" % (ws.close_info,)
            assert refused_handshake(b, access) == 401, "node B still accepts the deleted user's token"
            assert_problem(b.http("GET", USERS + "/me", headers=bearer(access)), 401)
            assert_result(bystander.cmd("ping"))
    finally:
        store.close()


def test_redis_prefix_separates_deployments_redis():
    """Two deployments with different HERALD_REDIS_PREFIX on one Redis do not
    see each other's users, and every key Herald writes carries its prefix."""
    with Redis() as r:
        with Herald(redis=r, env={"HERALD_REDIS_PREFIX": "one"}) as a, \
                Herald(redis=r, env={"HERALD_REDIS_PREFIX": "two"}) as b:
            assert_json(a.register("xena", PW), 201)
            assert_json(b.register("xena", PW2), 201)
            assert_json(login_resp(a, "xena", PW), 200)
            assert_oauth_error(login_resp(a, "xena", PW2), "invalid_grant")
            assert_json(login_resp(b, "xena", PW2), 200)
            keys = r.keys("*")
            assert keys, "nothing stored in Redis"
            stray = [k for k in keys if not (k.startswith("one") or k.startswith("two"))]
            assert not stray, "keys outside the configured prefixes: %r" % stray[:10]


if __name__ == "__main__":
    run_tests(globals())
