// The demo chat (in the style of the Django Channels tutorial), served by
// Herald itself: `herald --web-root web/demo --config web/demo/herald.json`.
// Registration and login through the REST API (OAuth2 password grant, then
// refresh-token grants for new access tokens), rooms in the `chat`
// namespace with presence, join/leave, the last messages on entering and
// recovery after a reconnect — all through /herald.js.
import { Herald } from "/herald.js";

const $ = (id) => document.getElementById(id);
const HISTORY = 50;

/*---- session: tokens per tab (refresh tokens are single use) ----*/

let session = JSON.parse(sessionStorage.getItem("herald-demo") || "null");

function saveSession(username, t) {
  session = { username, access: t.access_token, refresh: t.refresh_token, exp: Date.now() + t.expires_in * 1000, used: false };
  sessionStorage.setItem("herald-demo", JSON.stringify(session));
}

function clearSession() {
  session = null;
  sessionStorage.removeItem("herald-demo");
}

async function tokenRequest(params) {
  const r = await fetch("/api/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(params),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body.error_description || body.error || r.statusText);
    err.status = r.status;
    throw err;
  }
  return body;
}

async function login(username, password) {
  saveSession(username, await tokenRequest({ grant_type: "password", username, password }));
}

async function register(username, password) {
  const r = await fetch("/api/v1/users", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!r.ok) {
    const p = await r.json().catch(() => ({}));
    throw new Error(r.status === 409 ? "that username is taken" : p.detail || p.title || r.statusText);
  }
  await login(username, password);
}

/* For the client: the login's access token once, then refresh-token grants. */
async function getToken() {
  if (!session) return null;
  if (!session.used && session.exp - Date.now() > 60000) {
    session.used = true;
    sessionStorage.setItem("herald-demo", JSON.stringify(session));
    return session.access;
  }
  try {
    saveSession(session.username, await tokenRequest({ grant_type: "refresh_token", refresh_token: session.refresh }));
  } catch (e) {
    if (e.status === 400 || e.status === 401) {
      logout("your session has ended: log in again");
      return null;
    }
    throw e; /* the client retries */
  }
  session.used = true;
  sessionStorage.setItem("herald-demo", JSON.stringify(session));
  return session.access;
}

/*---- the connection ----*/

let h = null;
let room = null; /* {name, channel, sub, lastOffset, names} */
/* user id -> username, on the server's word: a publication's `from` and
 * presence carry the publisher's token info, which Herald's login puts the
 * username in (never what a message's data claims) */
const names = new Map();

function setStatus(text, cls) {
  $("status").textContent = text;
  $("status").className = "status " + cls;
}

function start() {
  h = new Herald("/ws", { getToken });
  h.on("connected", (ev) => {
    names.set(ev.user, session.username);
    setStatus("online", "online");
  });
  h.on("disconnected", (ev) => setStatus(ev.reconnect ? "reconnecting…" : `offline (${ev.code})`, ev.reconnect ? "reconnecting" : "offline"));
  h.on("error", (err) => console.warn("herald:", err.code, err.message));
  h.connect();
}

function logout(message) {
  if (room) leaveRoom();
  if (h) h.disconnect();
  h = null;
  clearSession();
  show();
  $("login-error").textContent = message || "";
}

/*---- rooms ----*/

function line(cls, ...parts) {
  const li = document.createElement("li");
  li.className = cls;
  for (const p of parts) li.append(p);
  $("messages").append(li);
  $("messages").scrollTop = $("messages").scrollHeight;
  return li;
}

/* Who published, as Herald says (`from`: absent for a backend's post). */
function nameOf(from) {
  if (!from) return "server";
  const name = from.info && typeof from.info.name === "string" ? from.info.name : null;
  if (name) names.set(from.user, name);
  return name || names.get(from.user) || `user ${from.user.slice(0, 6)}`;
}

function render(data, offset, from, live) {
  if (offset !== undefined) {
    if (offset <= room.lastOffset) return; /* already shown (history and live overlap) */
    room.lastOffset = offset;
  }
  if (!data || typeof data !== "object") return;
  if (data.type === "hello") {
    line("notice", `${nameOf(from)} entered the room`);
    if (live) refreshOnline().catch(() => {});
  } else if (data.type === "message") {
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = nameOf(from) + ": ";
    line("message", who, String(data.text));
  }
}

async function loadHistory() {
  const { publications } = await h.history(room.channel, { limit: HISTORY });
  $("messages").replaceChildren();
  room.lastOffset = -1;
  for (const p of publications) render(p.data, p.offset, p.from, false);
}

async function refreshOnline() {
  const { clients } = await h.presence(room.channel);
  for (const c of clients) nameOf(c);
  const users = [...new Set(clients.map((c) => c.user))];
  $("online").replaceChildren(...users.map((u) => Object.assign(document.createElement("li"), { textContent: names.get(u) || `user ${u.slice(0, 6)}` })));
}

function enterRoom(name) {
  const channel = "chat:" + name;
  room = { name, channel, lastOffset: -1, entered: false };
  $("room-title").textContent = name;
  $("messages").replaceChildren();
  $("room-error").textContent = "";
  const current = room;
  room.sub = h.subscribe(channel, {
    onMessage: (data, ctx) => room === current && render(data, ctx.offset, ctx.from, true),
    onJoin: (ev) => room === current && ev.user !== h.user && refreshOnline().catch(() => {}),
    onLeave: (ev) => {
      if (room !== current) return;
      line("notice", `${names.get(ev.user) || "someone"} left`);
      refreshOnline().catch(() => {});
    },
    async onSubscribed(ctx) {
      if (room !== current) return;
      try {
        if (!ctx.resubscribed || !ctx.recovered) await loadHistory(); /* first time, or a gap */
        if (!current.entered) {
          current.entered = true;
          await h.publish(channel, { type: "hello" });
        }
        await refreshOnline();
      } catch (e) {
        $("room-error").textContent = `${e.code || "error"}: ${e.message}`;
      }
    },
    onError: (e) => ($("room-error").textContent = `cannot enter: ${e.code}`),
  });
  show();
}

function leaveRoom() {
  if (room && room.sub) room.sub.unsubscribe();
  room = null;
}

/*---- the page ----*/

function show() {
  $("login").hidden = Boolean(session);
  $("logout").hidden = !session;
  $("me").textContent = session ? session.username : "";
  $("lobby").hidden = !session || Boolean(room);
  $("room").hidden = !session || !room;
  if (!session) setStatus("offline", "offline");
}

function route() {
  if (!session) return show();
  if (!h) start();
  const name = decodeURIComponent(location.hash.slice(1));
  if (room && room.name !== name) leaveRoom();
  if (name && /^[A-Za-z0-9_-]{1,50}$/.test(name) && !room) enterRoom(name);
  show();
}

async function submitLogin(action) {
  $("login-error").textContent = "";
  const username = $("username").value.trim();
  const password = $("password").value;
  try {
    await action(username, password);
    $("password").value = "";
    route();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  submitLogin(login);
});
$("register-btn").addEventListener("click", () => {
  if ($("login-form").reportValidity()) submitLogin(register);
});
$("logout").addEventListener("click", () => {
  location.hash = "";
  logout();
});
$("room-form").addEventListener("submit", (e) => {
  e.preventDefault();
  location.hash = $("room-name").value.trim();
});
$("leave").addEventListener("click", (e) => {
  e.preventDefault();
  location.hash = "";
});
$("send-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!room || !text) return;
  try {
    await h.publish(room.channel, { type: "message", text });
    $("text").value = "";
    $("room-error").textContent = "";
  } catch (err) {
    $("room-error").textContent = `not sent (${err.code}): ${err.message}`;
  }
});
window.addEventListener("hashchange", route);
route();
