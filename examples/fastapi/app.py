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

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.responses import HTMLResponse
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from herald_client import Herald, HeraldError, mint_token

HERALD_URL = os.environ.get("HERALD_URL", "http://127.0.0.1:8080")
# what browsers connect to (behind a proxy, its public wss:// address)
HERALD_WS_URL = os.environ.get("HERALD_WS_URL") or HERALD_URL.replace("http", "ws", 1) + "/ws"
HERALD_API_KEY = os.environ["HERALD_API_KEY"]        # Herald's HERALD_API_KEY
HERALD_JWT_SECRET = os.environ["HERALD_JWT_SECRET"]  # Herald's HERALD_JWT_SECRET
HERALD_TOKEN_TTL = int(os.environ.get("HERALD_TOKEN_TTL", "900"))
SHOP_DB = os.environ.get("SHOP_DB", "shop.db")
SESSION_TTL = 3600

log = logging.getLogger("shop")
app = FastAPI(title="Shop (a Herald example)")
oauth2 = OAuth2PasswordBearer(tokenUrl="token")
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


def current_user(token: str = Depends(oauth2), conn: sqlite3.Connection = Depends(db)) -> User:
    """The logged-in user (Authorization: Bearer <the app's access token>), else 401."""
    row = conn.execute("SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id"
                       " WHERE s.token_hash = ? AND s.expires_at > ?",
                       (token_hash(token), int(time.time()))).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token",
                            headers={"WWW-Authenticate": "Bearer"})
    return User(id=row["id"], username=row["username"])


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


@app.post("/token")
def login(form: OAuth2PasswordRequestForm = Depends(), conn: sqlite3.Connection = Depends(db)):
    """OAuth2 password grant (form fields username, password): the app's own
    access token, for the Authorization header of the app's other endpoints."""
    row = conn.execute("SELECT id, password FROM users WHERE username = ?",
                       (form.username,)).fetchone()
    ok = check_password(form.password, row["password"] if row else _DUMMY_HASH)
    if row is None or not ok:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password",
                            headers={"WWW-Authenticate": "Bearer"})
    token = secrets.token_urlsafe(32)
    with _db_lock, conn:
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (int(time.time()),))
        conn.execute("INSERT INTO sessions VALUES (?, ?, ?)",
                     (token_hash(token), row["id"], int(time.time()) + SESSION_TTL))
    return {"access_token": token, "token_type": "bearer", "expires_in": SESSION_TTL}


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
