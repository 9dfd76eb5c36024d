"""A FastAPI shop that puts Herald in front of its users.

- Its own users: a SQLite table, passwords hashed with hashlib.scrypt.
- Its own OAuth2 password login (`POST /token`, FastAPI's OAuth2PasswordBearer):
  the app's access tokens are random strings it keeps (hashed) in SQLite.
- `GET /herald-token`: a Herald JWT for the logged-in user (HS256, minted with
  herald_client.mint_token and the secret Herald verifies with). The browser
  connects to Herald with it; Herald never sees the app's passwords or tokens.
- `POST /orders`: a domain event. The order is stored, then published through
  herald_client to the buyer's personal channel `user:<id>` (only that user can
  subscribe to it) and, without personal details, to the public channel `orders`.
- A cookie session, and sockets with no token at all: `POST /login` sets the
  app's session cookie; the page at `/session` opens its Herald socket without
  a token, and Herald's backend proxy (HERALD_PROXY_CONNECT_URL, ...) asks the
  app who it is - the `/herald/*` routes below, FastAPI dependencies of
  herald_client.proxy - with the handshake's Cookie header. The same routes
  check subscriptions to `order:<id>` (the buyer only) and answer RPCs.

Run it with ./run.sh (starts Herald too) or, with Herald already running:
    HERALD_URL=http://127.0.0.1:8080 HERALD_API_KEY=... HERALD_JWT_SECRET=... \
        python3 -m uvicorn app:app --port 8000
"""

import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time

from typing import Optional

from fastapi import Depends, FastAPI, Form, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from herald_client import Herald, HeraldError, mint_token
from herald_client.proxy import (ProxyError, ProxyRequest, add_fastapi_handlers, connect_result,
                                 fastapi_call, refresh_expired, refresh_result, rpc_result,
                                 subscribe_result)

HERALD_URL = os.environ.get("HERALD_URL", "http://127.0.0.1:8080")
# what browsers connect to (behind a proxy, its public wss:// address)
HERALD_WS_URL = os.environ.get("HERALD_WS_URL") or HERALD_URL.replace("http", "ws", 1) + "/ws"
HERALD_API_KEY = os.environ["HERALD_API_KEY"]        # Herald's HERALD_API_KEY
HERALD_JWT_SECRET = os.environ["HERALD_JWT_SECRET"]  # Herald's HERALD_JWT_SECRET
HERALD_TOKEN_TTL = int(os.environ.get("HERALD_TOKEN_TTL", "900"))
SHOP_DB = os.environ.get("SHOP_DB", "shop.db")
SESSION_TTL = 3600
SESSION_COOKIE = "shop_session"
# Herald's HERALD_PROXY_KEY: its proxy calls carry it in X-Herald-Proxy-Key
HERALD_PROXY_KEY = os.environ.get("HERALD_PROXY_KEY", "")
# how long Herald trusts a session socket before asking /herald/refresh again
HERALD_SESSION_CHECK = int(os.environ.get("HERALD_SESSION_CHECK", "60"))
# the origins whose pages may open session sockets (empty: no check)
SITE_ORIGINS = [o for o in os.environ.get("SITE_ORIGINS", "").split(",") if o]

log = logging.getLogger("shop")
app = FastAPI(title="Shop (a Herald example)")
oauth2 = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)
# one client for the whole app: thread-safe, keeps its connection alive,
# retries what can be retried (the sync endpoints below run on a thread pool)
herald = Herald(HERALD_URL, api_key=HERALD_API_KEY)


#---- storage -------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL,
                                  password TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL,
                                     expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,
                                   item TEXT NOT NULL, quantity INTEGER NOT NULL,
                                   created_at INTEGER NOT NULL);
"""
_db_lock = threading.Lock()  # one writer at a time is all this example needs


def db():
    """A connection per request (FastAPI may run a dependency and its
    endpoint on different threads of its pool: hence check_same_thread)."""
    conn = sqlite3.connect(SHOP_DB, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


@app.on_event("startup")
def create_tables():
    with sqlite3.connect(SHOP_DB) as conn:
        conn.executescript(SCHEMA)


@app.on_event("shutdown")
def close_herald():
    herald.close()


#---- passwords (hashlib.scrypt) and the app's own sessions ----------------------

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


def hash_password(password):
    salt = os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return "scrypt$%d$%d$%d$%s$%s" % (SCRYPT["n"], SCRYPT["r"], SCRYPT["p"], salt.hex(), dk.hex())


def check_password(password, stored):
    _, n, r, p, salt, want = stored.split("$")
    dk = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                        p=int(p), dklen=len(want) // 2)
    return hmac.compare_digest(dk.hex(), want)


# checked against when the username is unknown, so both cases take as long
_DUMMY_HASH = hash_password(secrets.token_hex(16))


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


class User(BaseModel):
    id: int
    username: str


def session_user(conn, token):
    """The user of a live session (an access token or a session cookie), or None."""
    if not token:
        return None
    row = conn.execute("SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id"
                       " WHERE s.token_hash = ? AND s.expires_at > ?",
                       (token_hash(token), int(time.time()))).fetchone()
    return User(id=row["id"], username=row["username"]) if row else None


def cookie_user(request: Request, conn: sqlite3.Connection = Depends(db)) -> Optional[User]:
    """The user of the session cookie, or None. On Herald's proxy calls the
    cookie is the browser's: Herald forwards the socket handshake's Cookie."""
    return session_user(conn, request.cookies.get(SESSION_COOKIE))


def current_user(token: Optional[str] = Depends(oauth2), conn: sqlite3.Connection = Depends(db),
                 by_cookie: Optional[User] = Depends(cookie_user)) -> User:
    """The logged-in user (Authorization: Bearer <the app's access token>, or
    the session cookie of POST /login), else 401."""
    user = session_user(conn, token) if token else by_cookie
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token",
                            headers={"WWW-Authenticate": "Bearer"})
    return user


#---- users and login -----------------------------------------------------------

class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64, regex=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=8, max_length=1024)


@app.post("/users", status_code=201, response_model=User)
def register(body: NewUser, conn: sqlite3.Connection = Depends(db)):
    hashed = hash_password(body.password)
    try:
        with _db_lock, conn:
            cur = conn.execute("INSERT INTO users (username, password) VALUES (?, ?)",
                               (body.username, hashed))
    except sqlite3.IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, "username taken")
    return User(id=cur.lastrowid, username=body.username)


def new_session(conn, username, password):
    """Checks the password and opens a session: its token, or 401."""
    row = conn.execute("SELECT id, password FROM users WHERE username = ?",
                       (username,)).fetchone()
    ok = check_password(password, row["password"] if row else _DUMMY_HASH)
    if row is None or not ok:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password",
                            headers={"WWW-Authenticate": "Bearer"})
    token = secrets.token_urlsafe(32)
    with _db_lock, conn:
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (int(time.time()),))
        conn.execute("INSERT INTO sessions VALUES (?, ?, ?)",
                     (token_hash(token), row["id"], int(time.time()) + SESSION_TTL))
    return token


@app.post("/token")
def login(form: OAuth2PasswordRequestForm = Depends(), conn: sqlite3.Connection = Depends(db)):
    """OAuth2 password grant (form fields username, password): the app's own
    access token, for the Authorization header of the app's other endpoints."""
    token = new_session(conn, form.username, form.password)
    return {"access_token": token, "token_type": "bearer", "expires_in": SESSION_TTL}


@app.post("/login", response_model=User)
def login_cookie(response: Response, username: str = Form(...), password: str = Form(...),
                 conn: sqlite3.Connection = Depends(db)):
    """The same login for pages: the session goes in an HttpOnly cookie
    (SameSite=Lax: other sites' pages cannot send it along with a POST)."""
    token = new_session(conn, username, password)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL, httponly=True,
                        samesite="lax")
    return session_user(conn, token)


@app.post("/logout", status_code=204)
def logout(request: Request, conn: sqlite3.Connection = Depends(db)):
    """Ends the cookie's session: its sockets close (4001) at Herald's next
    refresh call."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with _db_lock, conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@app.get("/me", response_model=User)
def me(user: User = Depends(current_user)):
    return user


@app.get("/herald-token")
def herald_token(user: User = Depends(current_user)):
    """A Herald JWT for the logged-in user: `sub` is the user's id, so the
    user may subscribe to `user:<id>`; `info` shows up in presence. Browsers
    call this again before it expires (herald.js: getToken)."""
    token = mint_token(HERALD_JWT_SECRET, str(user.id), ttl=HERALD_TOKEN_TTL,
                       info={"name": user.username})
    return {"token": token, "expires_in": HERALD_TOKEN_TTL, "url": HERALD_WS_URL,
            "channels": ["user:%d" % user.id, "orders"]}


#---- a domain event: an order --------------------------------------------------

class NewOrder(BaseModel):
    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(1, ge=1, le=1000)


@app.post("/orders", status_code=201)
def create_order(body: NewOrder, user: User = Depends(current_user),
                 conn: sqlite3.Connection = Depends(db)):
    now = int(time.time())
    with _db_lock, conn:
        cur = conn.execute("INSERT INTO orders (user_id, item, quantity, created_at)"
                           " VALUES (?, ?, ?, ?)", (user.id, body.item, body.quantity, now))
    order = {"id": cur.lastrowid, "item": body.item, "quantity": body.quantity,
             "created_at": now}
    # The order is stored: telling the browsers is best effort. (An app that
    # must never lose a notification writes it to an outbox table in the same
    # transaction and publishes from there.)
    notified = True
    try:
        herald.publish("user:%d" % user.id, {"type": "order.created", "order": order})
        herald.publish("orders", {"type": "order.created", "item": body.item,
                                  "quantity": body.quantity})
    except HeraldError as e:  # ConnectionFailed, Unavailable, ...: already retried
        log.warning("order %d: not published to Herald: %s", order["id"], e)
        notified = False
    return {"order": order, "notified": notified}


@app.post("/orders/{order_id}/ship")
def ship_order(order_id: int, user: User = Depends(current_user),
               conn: sqlite3.Connection = Depends(db)):
    """(A warehouse's job in a real shop.) Tells whoever watches order:<id>."""
    order_of(conn, order_id, user.id)
    try:
        herald.publish("order:%d" % order_id, {"type": "order.shipped", "id": order_id})
    except HeraldError as e:
        log.warning("order %d: shipping not published to Herald: %s", order_id, e)
        return {"shipped": order_id, "notified": False}
    return {"shipped": order_id, "notified": True}


def order_of(conn, order_id, user_id):
    """The order if it is user_id's, else 404."""
    row = conn.execute("SELECT id, item, quantity, created_at FROM orders"
                       " WHERE id = ? AND user_id = ?", (order_id, user_id)).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such order")
    return dict(row)


#---- Herald's backend proxy: sockets with no token ---------------------------------
#
# Herald runs with HERALD_PROXY_CONNECT_URL=http://APP/herald/connect (and
# refresh, subscribe, rpc) and HERALD_PROXY_KEY. fastapi_call(kind, key) is the
# dependency that checks the key (403) and parses Herald's request (400);
# raising ProxyError answers {"error": ...} (add_fastapi_handlers). The
# browser's cookie comes with the call, so cookie_user works as for a page.
# `call.user` is who Herald authenticated the socket as (here the user id).

add_fastapi_handlers(app)


def _proxy_user(call: ProxyRequest, conn) -> User:
    row = conn.execute("SELECT id, username FROM users WHERE id = ?",
                       (int(call.user) if call.user and call.user.isdigit() else -1,)).fetchone()
    if row is None:
        raise ProxyError("unauthorized", "log in first")
    return User(id=row["id"], username=row["username"])


@app.post("/herald/connect")
def herald_connect(request: Request, call: ProxyRequest = Depends(fastapi_call("connect", key=HERALD_PROXY_KEY)),
                   user: Optional[User] = Depends(cookie_user)):
    """A socket without a token: the session cookie's user, subscribed at once
    to its personal channel and the public one."""
    if SITE_ORIGINS and request.headers.get("Origin") not in SITE_ORIGINS:
        raise ProxyError("forbidden", "sockets of this site only")
    if user is None:
        raise ProxyError("unauthorized", "log in first")
    return connect_result(str(user.id), expire_at=int(time.time()) + HERALD_SESSION_CHECK,
                          info={"name": user.username}, channels=["user:%d" % user.id, "orders"])


@app.post("/herald/refresh")
def herald_refresh(call: ProxyRequest = Depends(fastapi_call("refresh", key=HERALD_PROXY_KEY)),
                   user: Optional[User] = Depends(cookie_user)):
    """Does the socket's session still stand (not logged out, not expired)?"""
    if user is None or str(user.id) != call.user:
        return refresh_expired()
    return refresh_result(int(time.time()) + HERALD_SESSION_CHECK)


@app.post("/herald/subscribe")
def herald_subscribe(call: ProxyRequest = Depends(fastapi_call("subscribe", key=HERALD_PROXY_KEY)),
                     conn: sqlite3.Connection = Depends(db)):
    """Namespace "order" has "subscribe_proxy": true (herald.json): order:<id>
    is for its buyer only."""
    user = _proxy_user(call, conn)
    _, _, order_id = call.channel.partition(":")
    try:
        order_of(conn, int(order_id), user.id)
    except (ValueError, HTTPException):
        raise ProxyError("forbidden", "not your order") from None
    return subscribe_result()


@app.post("/herald/rpc")
def herald_rpc(call: ProxyRequest = Depends(fastapi_call("rpc", key=HERALD_PROXY_KEY)),
               conn: sqlite3.Connection = Depends(db)):
    """h.rpc("orders.list") in the page lands here."""
    user = _proxy_user(call, conn)
    if call.method == "orders.list":
        return rpc_result(list_orders(conn, user.id))
    raise ProxyError("not_found", "no method %s" % call.method)


def list_orders(conn, user_id):
    rows = conn.execute("SELECT id, item, quantity FROM orders WHERE user_id = ? ORDER BY id",
                        (user_id,)).fetchall()
    return [dict(r) for r in rows]


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


#---- a page to try it in a browser ----------------------------------------------

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Shop</title>
<form id="login">
  <input id="username" placeholder="username" autocomplete="username">
  <input id="password" type="password" placeholder="password" autocomplete="current-password">
  <button>Register + log in</button>
</form>
<form id="order" hidden><input id="item" value="teapot"> <button>Order</button></form>
<ul id="log"></ul>
<script type="module">
  import { Herald } from "%(herald_js)s";
  const show = (t) => document.getElementById("log").append(
      Object.assign(document.createElement("li"), { textContent: t }));
  let access = null;
  const api = async (method, path, body, form) => {
    const headers = access ? { Authorization: "Bearer " + access } : {};
    if (body && !form) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers,
        body: form ? new URLSearchParams(body) : body && JSON.stringify(body) });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  };
  document.getElementById("login").onsubmit = async (e) => {
    e.preventDefault();
    const username = document.getElementById("username").value;
    const password = document.getElementById("password").value;
    await api("POST", "/users", { username, password }).catch(() => {});  // taken: just log in
    access = (await api("POST", "/token", { username, password }, true)).access_token;
    const first = await api("GET", "/herald-token");
    const h = new Herald(first.url, { getToken: async () => (await api("GET", "/herald-token")).token });
    h.on("connected", (ev) => show("connected to Herald as user " + ev.user));
    for (const ch of first.channels)
      h.subscribe(ch, { onMessage: (data) => show(ch + ": " + JSON.stringify(data)) });
    h.connect();
    document.getElementById("login").hidden = true;
    document.getElementById("order").hidden = false;
  };
  document.getElementById("order").onsubmit = async (e) => {
    e.preventDefault();
    await api("POST", "/orders", { item: document.getElementById("item").value, quantity: 1 });
  };
</script>
"""


@app.get("/", response_class=HTMLResponse)
def page():
    return PAGE % {"herald_js": HERALD_URL + "/herald.js"}


# The same shop signed in with a cookie: the socket has no token. Open it on
# the host of Herald's URL (127.0.0.1): cookies go to every port of their host,
# so the browser sends this app's cookie with the handshake to Herald.
SESSION_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Shop (session)</title>
<form id="login">
  <input id="username" placeholder="username" autocomplete="username">
  <input id="password" type="password" placeholder="password" autocomplete="current-password">
  <button>Register + log in</button>
</form>
<form id="order" hidden><input id="item" value="teapot"> <button>Order</button></form>
<form id="watch" hidden><input id="order-id" placeholder="order id"> <button>Watch order</button></form>
<button id="mine" hidden>My orders</button>
<ul id="log"></ul>
<script type="module">
  import { Herald } from "%(herald_js)s";
  const show = (t) => document.getElementById("log").append(
      Object.assign(document.createElement("li"), { textContent: t }));
  const api = async (method, path, body, form) => {
    const headers = body && !form ? { "Content-Type": "application/json" } : {};
    const r = await fetch(path, { method, headers,
        body: form ? new URLSearchParams(body) : body && JSON.stringify(body) });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  };
  // no token: Herald asks the app (POST /herald/connect) with this page's cookie
  const h = new Herald("%(ws_url)s");
  h.on("connected", (ev) => show("connected to Herald as user " + ev.user));
  h.on("error", (err) => show("error " + err.code + ": " + err.message));
  // user:<id> and orders: subscribed by the app's connect answer (server-side)
  h.on("message", (data, ctx) => show(ctx.channel + ": " + JSON.stringify(data)));
  const watch = (id) => {
    const channel = "order:" + id;
    h.subscribe(channel, { onMessage: (data) => show(channel + ": " + JSON.stringify(data)) })
      .ready.then(() => show("watching " + channel), (err) => show(channel + " refused: " + err.code));
  };
  document.getElementById("login").onsubmit = async (e) => {
    e.preventDefault();
    const username = document.getElementById("username").value;
    const password = document.getElementById("password").value;
    await api("POST", "/users", { username, password }).catch(() => {});  // taken: just log in
    await api("POST", "/login", { username, password }, true);  // sets the session cookie
    h.connect();
    document.getElementById("login").hidden = true;
    for (const id of ["order", "watch", "mine"]) document.getElementById(id).hidden = false;
  };
  document.getElementById("order").onsubmit = async (e) => {
    e.preventDefault();
    const { order } = await api("POST", "/orders", { item: document.getElementById("item").value, quantity: 1 });
    watch(order.id);
  };
  document.getElementById("watch").onsubmit = (e) => {
    e.preventDefault();
    watch(document.getElementById("order-id").value);
  };
  // an RPC answered by the app (POST /herald/rpc)
  document.getElementById("mine").onclick = async () => {
    const orders = await h.rpc("orders.list");
    show("my orders: " + orders.map((o) => o.id + " " + o.item).join(", "));
  };
</script>
"""


@app.get("/session", response_class=HTMLResponse)
def session_page():
    return SESSION_PAGE % {"herald_js": HERALD_URL + "/herald.js", "ws_url": HERALD_WS_URL}
