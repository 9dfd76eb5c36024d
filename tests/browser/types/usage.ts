// Compiled by types.test.mjs with tsc --strict --noEmit: the declarations
// in web/herald.d.ts must describe docs/clients/javascript.md's example, and misuse must not
// compile (each @ts-expect-error fails the build if no error is there).
import Herald, { Herald as Named, HeraldError, type MessageContext, type SubscribedContext } from "../../../web/herald.js";

const h: Herald = new Named("/ws", { getToken: async () => "jwt", backoff: { base: 250, max: 10000 } });
const h2 = new Herald("wss://example.test/ws", { token: "jwt", pingInterval: 20000 });

const off: () => void = h.on("connected", (ev) => {
  const user: string = ev.user;
  const exp: number | null = ev.expiresAt;
  void user;
  void exp;
});
off();
h.on("disconnected", (ev) => {
  const again: boolean = ev.reconnect;
  const code: number = ev.code;
  void again;
  void code;
});
h.on("error", (err: HeraldError) => console.log(err.code, err.message));

const sub = h.subscribe("chat:lobby", {
  onMessage(data, ctx: MessageContext) {
    if (ctx.recovered === false) console.log("gap before", ctx.offset);
    const by: string = ctx.from ? ctx.from.user : "a backend";
    console.log(by, ctx.from?.client, ctx.from?.info, data);
  },
  onJoin: (ev) => console.log(ev.user, "joined", ev.channel),
  onLeave: (ev) => console.log(ev.client, "left"),
  onSubscribed: (ctx: SubscribedContext) => {
    if (ctx.resubscribed && !ctx.recovered) console.log("reload", ctx.epoch);
  },
});
sub.ready.then((ctx) => console.log(ctx.channel));
sub.unsubscribe();

async function use() {
  const r = await h.publish("chat:lobby", { text: "hi", n: [1, 2, null] });
  const offset: number | undefined = r.offset;
  const who = await h.presence("chat:lobby");
  const users: string[] = who.clients.map((c) => c.user);
  const hist = await h.history("chat:lobby", { limit: 10 });
  const first = hist.publications[0]?.data;
  const author: string | undefined = hist.publications[0]?.from?.user;
  await h.history("chat:lobby", { since: { offset: hist.offset, epoch: hist.epoch } });
  try {
    await h.publish("news", 1);
  } catch (e) {
    if (e instanceof HeraldError && e.code === "forbidden") console.log("not allowed");
  }
  return [offset, users, first, author];
}
void use;
h.connect();
h2.disconnect();

// @ts-expect-error: an unknown event
h.on("message-typo", () => {});
// @ts-expect-error: data must be JSON, not a function
h.publish("c", () => 1);
// @ts-expect-error: history's limit is a number
h.history("c", { limit: "10" });
// @ts-expect-error: the channel is a string
h.subscribe(42);
// @ts-expect-error: token must be a string
new Herald("/ws", { token: 1 });

// connecting without a token (a cookie session through Herald's connect
// proxy), with data for the backend; the backend's RPC
const cookie = new Herald("/ws", { data: { room: "lobby" } });
const lazy = new Herald("/ws", { data: async () => ({ tz: "UTC" }) });
cookie.on("disconnected", (ev) => {
  if (ev.error) console.log("refused:", ev.error.code, ev.code);
});
async function callBackend() {
  const me = await cookie.rpc<{ username: string }>("whoami");
  const name: string = me.username;
  const any = await cookie.rpc("echo", { n: [1, 2] });
  return [name, any];
}
void callBackend;
void lazy;
// @ts-expect-error: the method is a string
cookie.rpc(7);
// @ts-expect-error: data must be JSON, not a function returning a function
new Herald("/ws", { data: () => () => 1 });
