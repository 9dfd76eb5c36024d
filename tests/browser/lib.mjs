// Helpers of the browser tests (no tests here): a real Herald process, a
// private redis-server, a TCP proxy that can drop or black-hole the
// browser's sockets, HS256 tokens, and Debian's Chromium driven by
// playwright-core (no browser download) with a screenshot kept when a test
// fails.
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { before, after } from "node:test";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, "..", "..");

export const HERALD_BIN = process.env.HERALD_BIN || path.join(REPO, "build", "herald");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const REDIS_SERVER = process.env.REDIS_SERVER || "/usr/bin/redis-server";
/* where screenshots and page logs of failed tests go */
export const ARTIFACTS = process.env.HERALD_TEST_ARTIFACTS || path.join(os.tmpdir(), "herald-browser-artifacts");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(pred, what = "condition", timeout = 10000, interval = 25) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await pred();
    if (last) return last;
    await sleep(interval);
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/* Ports for the servers a test starts (redis-server, nginx, an example's
 * app), reserved for the rest of this process by tests/integration/ports.py
 * (see there): a bound, never listening socket with SO_REUSEADDR keeps
 * every other process from being handed the port, while the server can
 * still bind it. node's net module cannot hold such a socket, so one
 * python3 helper per process holds them and exits when we do (its stdin
 * closes). Finding a port by listening on 0 and closing again left a
 * window in which another test could take it. Herald itself is started on
 * port 0 and its port read from its log; the Proxy listens on 0. */
let holder;
function portHolder() {
  if (!holder) {
    const proc = spawn("/usr/bin/python3", [path.join(REPO, "tests", "integration", "ports.py")], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const waiters = [];
    let buf = "";
    proc.stdout.setEncoding("utf8");
    proc.stdout.on("data", (d) => {
      buf += d;
      for (let i; (i = buf.indexOf("\n")) >= 0; ) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        waiters.shift()?.resolve(line);
      }
      if (!waiters.length) proc.stdout.unref(); // idle: do not keep node alive
    });
    proc.on("exit", (code) => {
      for (const w of waiters.splice(0)) w.reject(new Error(`ports.py exited with ${code}`));
      holder = undefined;
    });
    proc.unref();
    proc.stdin.unref();
    proc.stdout.unref();
    holder = {
      ask(cmd) {
        return new Promise((resolve, reject) => {
          waiters.push({ resolve, reject });
          proc.stdout.ref(); // an answer is due: keep node alive for it
          proc.stdin.write(cmd + "\n");
        });
      },
    };
  }
  return holder;
}

export async function freePort() {
  const line = await portHolder().ask("reserve");
  const port = Number(line);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`ports.py answered ${JSON.stringify(line)}`);
  return port;
}

/*---- tokens ----*/

const b64url = (buf) => Buffer.from(buf).toString("base64url");

export function jwt(secret, claims) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ iat: now, exp: now + 3600, ...claims }));
  const sig = crypto.createHmac("sha256", secret).update(head + "." + body).digest();
  return head + "." + body + "." + b64url(sig);
}

/*---- processes ----*/

function waitExit(proc, timeout) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode ?? proc.signalCode);
    const t = setTimeout(() => {
      proc.kill("SIGKILL");
    }, timeout);
    proc.once("exit", (code, sig) => {
      clearTimeout(t);
      resolve(code ?? sig);
    });
  });
}

export const NAMESPACES = {
  chat: { subscribe: "authenticated", publish: "subscribers", presence: true, join_leave: true, history_size: 100, history_ttl: 300 },
  plain: { subscribe: "authenticated", publish: "authenticated" },
  "": { subscribe: "authenticated", publish: "none" },
};

/** One herald process; restart() keeps port and store. Without `port` it
 * listens on port 0 (a port the system chooses, no race with other tests)
 * and start() reads the port from its "listening" log line. */
export class Herald {
  constructor({ secret, apiKey, redis, nodeId = "t", env = {}, config = { namespaces: NAMESPACES }, port } = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-browser-"));
    this.secret = secret || crypto.randomBytes(24).toString("hex");
    this.apiKey = apiKey || crypto.randomBytes(16).toString("hex");
    this.port = port;
    fs.writeFileSync(path.join(this.dir, "config.json"), JSON.stringify(config));
    this.env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("HERALD_")) this.env[k] = v;
    Object.assign(this.env, {
      HERALD_DB: path.join(this.dir, "herald.db"),
      HERALD_JWT_SECRET: this.secret,
      HERALD_API_KEY: this.apiKey,
      HERALD_CONFIG: path.join(this.dir, "config.json"),
      HERALD_LOG_FORMAT: "json",
      HERALD_NODE_ID: nodeId,
      HERALD_THREADS: process.env.HERALD_TEST_THREADS || "2",
      HERALD_MAX_CONNS_PER_ADDRESS: "0",
      HERALD_HANDSHAKE_RATE: "0",
      HERALD_SHUTDOWN_GRACE_MS: "500",
      ...env,
    });
    if (redis) this.env.HERALD_REDIS_URL = redis.url;
    this.log = "";
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  token(sub, ttl = 3600, extra = {}) {
    return jwt(this.secret, { sub, exp: Math.floor(Date.now() / 1000) + ttl, ...extra });
  }

  async start(timeout = 30000) {
    this.env.HERALD_LISTEN = `127.0.0.1:${this.port || 0}`;
    this.proc = spawn(HERALD_BIN, [], { env: this.env, stdio: ["ignore", "ignore", "pipe"] });
    this.proc.stderr.on("data", (d) => {
      this.log += d.toString();
      if (this.log.length > 200000) this.log = this.log.slice(-100000);
    });
    const end = Date.now() + timeout;
    while (!this.port) {
      const m = /listening on \S+:(\d+) with/.exec(this.log);
      if (m) this.port = Number(m[1]);
      else if (this.proc.exitCode !== null) throw new Error(`herald exited with ${this.proc.exitCode}:\n${this.log.slice(-3000)}`);
      else if (Date.now() > end) throw new Error("herald logged no listening line:\n" + this.log.slice(-3000));
      else await sleep(20);
    }
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`herald exited with ${this.proc.exitCode}:\n${this.log.slice(-3000)}`);
      try {
        const r = await fetch(this.base + "/healthz");
        if (r.status === 200) return this;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > end) throw new Error("herald did not answer /healthz:\n" + this.log.slice(-3000));
      await sleep(50);
    }
  }

  async waitReady(timeout = 15000) {
    await until(async () => {
      try {
        return (await fetch(this.base + "/readyz")).status === 200;
      } catch {
        return false;
      }
    }, this.base + " /readyz", timeout);
  }

  /** SIGTERM (clients get 1001); returns the exit status. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return this.proc && this.proc.exitCode;
    this.proc.kill("SIGTERM");
    return waitExit(this.proc, 10000);
  }

  async restart() {
    await this.stop();
    return this.start();
  }

  async cleanup() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** A REST call as a backend (API key). */
  async api(method, p, body) {
    const r = await fetch(this.base + p, {
      method,
      headers: { "X-API-Key": this.apiKey, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }

  publish(channel, data) {
    return this.api("POST", "/api/v1/publish", { channel, data });
  }

  async metric(name) {
    const text = await (await fetch(this.base + "/metrics")).text();
    let sum = 0;
    for (const line of text.split("\n")) if (line.startsWith(name + "{") || line.startsWith(name + " ")) sum += Number(line.split(/\s+/).pop());
    return sum;
  }
}

/** A private redis-server on a free port, nothing on disk; halt()/start()
 * make an outage on the same port. */
export class Redis {
  async start() {
    if (!this.port) this.port = await freePort();
    this.dir = this.dir || fs.mkdtempSync(path.join(os.tmpdir(), "herald-browser-redis-"));
    this.url = `redis://127.0.0.1:${this.port}/0`;
    this.proc = spawn(REDIS_SERVER, ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir], {
      stdio: "ignore",
    });
    await until(() => new Promise((resolve) => {
      const s = net.connect(this.port, "127.0.0.1");
      s.on("connect", () => s.write("PING\r\n"));
      s.on("data", (d) => {
        s.destroy();
        resolve(d.toString().startsWith("+PONG"));
      });
      s.on("error", () => resolve(false));
    }), "redis-server PING");
    return this;
  }

  async halt() {
    this.proc.kill("SIGKILL");
    await waitExit(this.proc, 5000);
  }

  async cleanup() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill("SIGTERM");
      await waitExit(this.proc, 5000);
    }
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP proxy in front of Herald for the browser's WebSockets: drop() cuts
 * every connection (the browser sees 1006), refuse=true closes new ones at
 * once (the server looks down), blackhole=true stops forwarding without
 * closing anything (a dead network: only a ping notices). `target` may be
 * changed (fail over to another node).
 */
export class Proxy {
  constructor(targetPort) {
    this.target = targetPort;
    this.refuse = false;
    this.blackhole = false;
    this.conns = new Set();
    this.accepted = 0;
  }

  async start() {
    this.server = net.createServer((c) => {
      this.accepted++;
      if (this.refuse) {
        c.destroy();
        return;
      }
      const up = net.connect(this.target, "127.0.0.1");
      const pair = { c, up };
      this.conns.add(pair);
      const forward = (from, to) => from.on("data", (d) => {
        if (!this.blackhole) to.write(d);
      });
      forward(c, up);
      forward(up, c);
      const end = () => {
        c.destroy();
        up.destroy();
        this.conns.delete(pair);
      };
      c.on("close", end);
      up.on("close", end);
      c.on("error", end);
      up.on("error", end);
    });
    await new Promise((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = this.server.address().port;
    return this;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Resets every connection (RST: the browser sees an abnormal close). */
  drop() {
    for (const { c, up } of this.conns) {
      c.resetAndDestroy ? c.resetAndDestroy() : c.destroy();
      up.destroy();
    }
    this.conns.clear();
  }

  async close() {
    this.drop();
    await new Promise((r) => this.server.close(r));
  }
}

/*---- the browser ----*/

let chromium;
export async function launchBrowser() {
  if (!chromium) {
    try {
      ({ chromium } = await import("playwright-core"));
    } catch (e) {
      throw new Error("playwright-core is missing: run `npm ci` in tests/browser (./setup.sh test does): " + e.message);
    }
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (./setup.sh test does)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}

/* The test page. Chromium's Local Network Access checks block sockets to
 * 127.0.0.1 from a page that did not come from a local address (one made
 * up with page.route counts as public), so the page is a real response of
 * Herald's (/healthz, `origin` may also be the proxy in front of it: another
 * origin), turned into a small page that imports the client as a developer
 * would and shows a log that the screenshot of a failed test captures. */
async function newPage(context) {
  const page = await context.newPage();
  page.consoleLines = [];
  page.on("console", (m) => page.consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => page.consoleLines.push(`[pageerror] ${e.message}`));
  return page;
}

export async function openPage(context, origin, moduleUrl = "/herald.js") {
  const page = await newPage(context);
  await page.goto(origin + "/healthz");
  await page.evaluate(async (moduleUrl) => {
    document.documentElement.innerHTML =
      "<head><title>herald.js in Chromium</title></head><body><h3>herald.js test page</h3><pre id='log'></pre></body>";
    window.herald = await import(moduleUrl);
    window.events = [];
    window.log = (...a) => {
      const line = a.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join(" ");
      window.events.push(line);
      document.getElementById("log").textContent += line + "\n";
    };
  }, moduleUrl);
  return page;
}

/**
 * Runs fn(t, ctx) with a fresh browser context (ctx: context, open,
 * newPage); on failure keeps a screenshot and the console of every page
 * opened through ctx under ARTIFACTS, named after the test.
 */
export function browserTest(browserRef, fn, contextOptions = {}) {
  return async (t) => {
    const context = await browserRef().newContext(contextOptions);
    const pages = [];
    const ctx = {
      context,
      /* the test page at origin (see openPage) */
      open: async (origin, moduleUrl) => {
        const p = await openPage(context, origin, moduleUrl);
        pages.push(p);
        return p;
      },
      /* a blank page (screenshot kept on failure too) */
      newPage: async () => {
        const p = await newPage(context);
        pages.push(p);
        return p;
      },
    };
    try {
      await fn(t, ctx);
    } catch (e) {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      const name = t.name.replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 80);
      let i = 0;
      for (const p of pages) {
        const base = path.join(ARTIFACTS, `${name}-${i++}`);
        try {
          await p.screenshot({ path: base + ".png", fullPage: true });
        } catch {
          /* the page may be gone */
        }
        fs.writeFileSync(base + ".console.txt", p.consoleLines.join("\n") + "\n");
      }
      e.message += `\n(screenshots and page consoles in ${ARTIFACTS}/${name}-*)`;
      throw e;
    } finally {
      await context.close();
    }
  };
}

/*---- pages the tests serve and drive ----*/

/* The chat page of docs/clients/javascript.md, as written. */
export function readmePage() {
  const doc = fs.readFileSync(path.join(REPO, "docs", "clients", "javascript.md"), "utf8");
  const m = doc.match(/```html\n([\s\S]*?)```/);
  if (!m) throw new Error("no ```html block in docs/clients/javascript.md");
  return m[1];
}

/* Serves html at / (404 elsewhere) from a free loopback port: another
 * local origin than Herald's, as the page's readers serve it. Resolves to
 * { port, close() }. */
export async function servePage(html) {
  const port = await freePort();
  const site = http.createServer((req, res) => {
    if (req.url.split("?")[0] === "/") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      res.end(html);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => site.listen(port, "127.0.0.1", r));
  return { port, close: () => new Promise((r) => site.close(r)) };
}

/* The texts of the elements matching sel; waiting for one with text. */
export const items = (page, sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent));
export const waitItem = (page, sel, text, timeout = 15000) =>
  page.waitForFunction(([s, t]) => [...document.querySelectorAll(s)].some((e) => e.textContent === t), [sel, text], { timeout });

/* The demo chat (web/demo) at origin: registers user, enters room and waits
 * until it is online there. */
export async function enterDemoRoom(page, origin, user, room) {
  await page.goto(origin + "/");
  await page.fill("#username", user);
  await page.fill("#password", `${user} has a long passphrase`);
  await page.click("#register-btn");
  await page.waitForSelector("#lobby:not([hidden])");
  await page.fill("#room-name", room);
  await page.click("#room-form button");
  await page.waitForSelector("#room:not([hidden])");
  await waitItem(page, "#status", "online");
}

/* The servers of a test file that drives Chromium against one Herald: it
 * registers the file's before and after hooks (a Herald with options, a
 * Proxy in front of it, a Chromium) and returns an object whose hd, proxy
 * and browser are set once `before` has run. */
export function heraldProxyBrowser(options) {
  const env = {};
  before(async () => {
    env.hd = await new Herald(options).start();
    env.proxy = await new Proxy(env.hd.port).start();
    env.browser = await launchBrowser();
  });
  after(async () => {
    if (env.browser) await env.browser.close();
    if (env.proxy) await env.proxy.close();
    if (env.hd) await env.hd.cleanup();
  });
  return env;
}

// examples/fastapi/run.sh (Herald and the app) on free ports, in a process
// group of its own so that nothing it starts outlives the test; resolves
// once the app answers /healthz. Returns {appPort, logFile, stop()}.
export async function startFastapiExample() {
  const appPort = await freePort();
  const heraldPort = await freePort();
  const logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "herald-example-")), "run.log");
  const out = fs.openSync(logFile, "w");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
  const shop = spawn("bash", [path.join(REPO, "examples", "fastapi", "run.sh")], {
    env: { ...env, HERALD_BIN, PYTHON: "/usr/bin/python3", HERALD_PORT: String(heraldPort), APP_PORT: String(appPort) },
    stdio: ["ignore", out, out],
    detached: true,
  });
  const stop = async () => {
    if (shop.exitCode !== null) return;
    const exited = new Promise((r) => shop.once("exit", r));
    process.kill(-shop.pid, "SIGTERM");
    await exited;
  };
  try {
    await until(async () => {
      if (shop.exitCode !== null) throw new Error("run.sh exited:\n" + fs.readFileSync(logFile, "utf8"));
      try {
        return (await fetch(`http://127.0.0.1:${appPort}/healthz`)).ok;
      } catch {
        return false;
      }
    }, "the shop to answer", 60000, 100);
  } catch (e) {
    await stop();
    throw e;
  }
  return { appPort, logFile, stop };
}

// The FastAPI example and a browser for one test file: started before its
// tests, stopped after them. Returns {browser, appPort}, filled in by then.
export function useFastapiExample() {
  const ex = {};
  let shop;
  before(async () => {
    shop = await startFastapiExample();
    ex.appPort = shop.appPort;
    ex.browser = await launchBrowser();
  });
  after(async () => {
    if (ex.browser) await ex.browser.close();
    if (shop) await shop.stop();
  });
  return ex;
}
