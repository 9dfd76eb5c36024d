/*
 * live.js - the demo's listen-only page (live.html?room=NAME): a live count
 * of a chat room's messages, over Server-Sent Events with herald.js'
 * HeraldEvents (docs/sse.md). The count is the room's history offset: the
 * `subscribed` event says where the room stands, every message moves it.
 * It uses the chat page's login (sessionStorage of this tab).
 */
import { HeraldEvents } from "/herald.js";

const $ = (id) => document.getElementById(id);
const room = new URLSearchParams(location.search).get("room") || "lobby";
$("room-title").textContent = room;

/* The chat page's session: its access token while fresh, else a
 * refresh-token grant (refresh tokens are single use: the new pair is kept). */
async function getToken() {
  const s = JSON.parse(sessionStorage.getItem("herald-demo") || "null");
  if (!s) throw new Error("log in on the chat page first");
  if (s.exp - Date.now() > 60000) return s.access;
  const r = await fetch("/api/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: s.refresh }),
  });
  if (!r.ok) throw new Error("your session has ended: log in on the chat page again");
  const t = await r.json();
  const next = { ...s, access: t.access_token, refresh: t.refresh_token, exp: Date.now() + t.expires_in * 1000 };
  sessionStorage.setItem("herald-demo", JSON.stringify(next));
  return next.access;
}

function status(text, cls) {
  $("status").textContent = text;
  $("status").className = "status " + cls;
}

const ev = new HeraldEvents("/sse", { channels: ["chat:" + room], getToken });
ev.on("subscribed", (push) => {
  status("live", "online");
  if (typeof push.offset === "number") $("count").textContent = String(push.offset);
});
ev.on("message", (data, ctx) => {
  if (typeof ctx.offset === "number") $("count").textContent = String(ctx.offset);
  const who = ctx.from ? (ctx.from.info && ctx.from.info.name) || ctx.from.user : "server";
  $("last").textContent = `${who}: ${data && typeof data.text === "string" ? data.text : JSON.stringify(data)}`;
});
ev.on("error", () => status("reconnecting", "offline"));
ev.on("close", ({ code, reason }) => status(`closed (${code} ${reason})`, "offline"));
ev.connect().catch((e) => {
  $("live-error").textContent = e.message;
});
