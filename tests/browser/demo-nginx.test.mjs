// The demo chat through the compose topology without Docker: a private
// redis-server, two Herald nodes in cluster mode serving web/demo, and
// Debian's nginx in front with deploy/nginx/herald.conf (only its listen
// line and upstream servers rewritten, as tests/integration/harness.py's
// Nginx does). Two browser contexts (two users, two sets of storage) chat
// through nginx; least_conn puts their sockets on different nodes, which
// the test checks on the nodes' /metrics.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { Herald, Redis, REPO, enterDemoRoom, freePort, launchBrowser, until, waitItem } from "./lib.mjs";

const NGINX = process.env.NGINX || "/usr/sbin/nginx";
let browser, redis, nodes = [], nginx;

/* deploy/nginx/herald.conf with its one listen line and its upstream's
 * server lines pointed at this test's processes; fails loudly if the file
 * no longer has that shape. */
function site(listen, upstreams) {
  let text = fs.readFileSync(path.join(REPO, "deploy", "nginx", "herald.conf"), "utf8");
  let n = 0;
  text = text.replace(/^([ \t]*)listen\s+[^;]*;/gm, (_, ind) => (n++, `${ind}listen ${listen};`));
  assert.equal(n, 1, "herald.conf: one listen line");
  let i = 0;
  text = text.replace(/^([ \t]*)server\s+([^\s;]+)([^;]*);/gm, (m, ind, addr, rest) =>
    i < upstreams.length ? `${ind}server ${upstreams[i++]}${rest};` : m);
  assert.equal(i, upstreams.length, "herald.conf: one upstream server per node");
  return text;
}

async function startNginx(upstreams) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-browser-nginx-"));
  const port = await freePort();
  for (const d of ["client", "proxy", "fastcgi", "uwsgi", "scgi"]) fs.mkdirSync(path.join(dir, d));
  fs.writeFileSync(path.join(dir, "herald.conf"), site(`127.0.0.1:${port}`, upstreams));
  const user = process.getuid() === 0 ? "user nobody nogroup;" : "";
  fs.writeFileSync(path.join(dir, "nginx.conf"), `${user}
worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${dir}/client; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  include ${dir}/herald.conf; }
`);
  fs.chmodSync(dir, 0o755);
  const proc = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-e", path.join(dir, "error.log"), "-g", "daemon off;"], { stdio: "ignore" });
  const base = `http://127.0.0.1:${port}`;
  await until(async () => {
    try {
      return (await fetch(base + "/healthz")).status === 200;
    } catch {
      return false;
    }
  }, "nginx /healthz");
  return { proc, base, dir };
}

before(async () => {
  redis = await new Redis().start();
  const demo = path.join(REPO, "web", "demo");
  const config = JSON.parse(fs.readFileSync(path.join(demo, "herald.json"), "utf8"));
  const shared = { secret: crypto.randomBytes(24).toString("hex"), apiKey: crypto.randomBytes(16).toString("hex"), redis, config, env: { HERALD_WEB_ROOT: demo } };
  for (const id of ["n1", "n2"]) nodes.push(await new Herald({ ...shared, nodeId: id }).start());
  for (const n of nodes) await n.waitReady();
  nginx = await startNginx(nodes.map((n) => `127.0.0.1:${n.port}`));
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (nginx) {
    nginx.proc.kill("SIGTERM");
    fs.rmSync(nginx.dir, { recursive: true, force: true });
  }
  for (const n of nodes) await n.cleanup();
  if (redis) await redis.cleanup();
});

const enter = (page, user, room) => enterDemoRoom(page, nginx.base, user, room);

const connections = async (n) => {
  const text = await (await fetch(n.base + "/metrics")).text();
  return Number(/^herald_connections\{[^}]*\} (\d+)/m.exec(text)[1]);
};

test("two users in two browser contexts chat through nginx and two nodes", async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const alice = await ctxA.newPage();
    const bob = await ctxB.newPage();
    await enter(alice, "alice", "lobby");
    await enter(bob, "bob", "lobby");
    // least_conn: one socket on each node, so the chat crosses Redis
    await until(async () => (await connections(nodes[0])) === 1 && (await connections(nodes[1])) === 1, "one socket per node");
    await waitItem(alice, "#online li", "bob");
    await waitItem(bob, "#online li", "alice");
    await alice.fill("#text", "hello from node one");
    await alice.press("#text", "Enter");
    await waitItem(bob, "#messages li", "alice: hello from node one");
    await bob.fill("#text", "and back from node two");
    await bob.press("#text", "Enter");
    await waitItem(alice, "#messages li", "bob: and back from node two");
    // history lives in Redis: a reload through nginx (either node) shows both
    await bob.reload();
    await waitItem(bob, "#status", "online");
    await waitItem(bob, "#messages li", "alice: hello from node one");
    await waitItem(bob, "#messages li", "bob: and back from node two");
  } catch (e) {
    const dir = process.env.HERALD_TEST_ARTIFACTS || path.join(os.tmpdir(), "herald-browser-artifacts");
    fs.mkdirSync(dir, { recursive: true });
    for (const [i, c] of [ctxA, ctxB].entries())
      for (const p of c.pages()) await p.screenshot({ path: path.join(dir, `demo-nginx-${i}.png`) }).catch(() => {});
    throw e;
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
