// examples/django driving a real browser: run.sh starts redis-server, Herald
// with the Django Channels bridge, the project's worker and runserver; the
// chat page of docs/clients/javascript.md (taken as written, only Herald's
// address changed) connects with the token run.sh printed. The
// project's own code reaches it: `manage.py announce` (group_send to
// "chat..lobby") and the worker consumer's answer to a message the page sent.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { HERALD_BIN, REPO, launchBrowser, browserTest, freePort, readmePage, servePage, until } from "./lib.mjs";

const run = promisify(execFile);
const DJANGO = path.join(REPO, "examples", "django");
let browser;
let project;
let site;
let sitePort;
let redisPort;
let logFile;
let token;

const output = () => fs.readFileSync(logFile, "utf8");

before(async () => {
  redisPort = await freePort();
  const heraldPort = await freePort();
  const djangoPort = await freePort();
  const nginxPort = await freePort();
  logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "herald-example-")), "run.log");
  const out = fs.openSync(logFile, "w");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
  project = spawn("bash", [path.join(DJANGO, "run.sh")], {
    env: { ...env, HERALD_BIN, PYTHON: "/usr/bin/python3", REDIS_PORT: String(redisPort),
           HERALD_PORT: String(heraldPort), DJANGO_PORT: String(djangoPort), NGINX_PORT: String(nginxPort) },
    stdio: ["ignore", out, out],
    detached: true, // its own process group: nothing it starts outlives the test
  });
  await until(() => {
    if (project.exitCode !== null) throw new Error("run.sh exited:\n" + output());
    const line = output().split("\n").find((l) => l.startsWith("eyJ"));
    if (line) token = line.trim();
    return !!token;
  }, "run.sh to print a token", 90000, 100);

  site = await servePage(readmePage().replaceAll("127.0.0.1:8080", `127.0.0.1:${heraldPort}`));
  sitePort = site.port;
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.close();
  if (project && project.exitCode === null) {
    const exited = new Promise((r) => project.once("exit", r));
    process.kill(-project.pid, "SIGTERM");
    await exited;
  }
});

const lines = (page) => page.$$eval("#log li", (lis) => lis.map((li) => li.textContent));
const waitLine = (page, text) =>
  page.waitForFunction((t) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === t), text, { timeout: 15000 });

async function manage(...args) {
  const env = { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}/0`, PYTHONDONTWRITEBYTECODE: "1" };
  return run("/usr/bin/python3", ["manage.py", ...args], { cwd: DJANGO, env, timeout: 30000 });
}

test("the Django example's code reaches the docs' chat page", browserTest(() => browser, async (t, { newPage }) => {
  const page = await newPage();
  await page.goto(`http://localhost:${sitePort}/?token=${token}`);
  await waitLine(page, "connected as alice");
  await waitLine(page, "online: alice");
  // RedisChannelLayer: Herald's node is in group chat..lobby once it ZADDs itself
  await until(async () => {
    const { stdout } = await run("redis-cli", ["-p", String(redisPort), "ZRANGE", "asgi:group:chat..lobby", "0", "-1"]);
    return stdout.split("\n").some((m) => m.startsWith("herald."));
  }, "Herald in group chat..lobby");
  await manage("announce", "chat:lobby", "welcome");
  await waitLine(page, "django: welcome");
  await page.fill("#text", "!ping");
  await page.press("#text", "Enter"); // not a click: the log above the form may still grow
  await waitLine(page, "alice: !ping");
  await waitLine(page, "bot: pong, alice");
  assert.deepEqual((await lines(page)).filter((l) => l.startsWith("error") || l.startsWith("not sent")), []);
}));
