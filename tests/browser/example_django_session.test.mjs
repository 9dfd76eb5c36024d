// examples/django's session login in Chromium (issue 17): run.sh starts
// redis-server, Herald (connect/refresh/subscribe/RPC proxies pointed at the
// project's views, lifecycle events to its worker), the worker, runserver
// and nginx serving Django and Herald on one origin. Alice logs in with
// Django's own login form and chats with no JWT anywhere: the socket is
// authenticated by her session cookie through the connect proxy. She calls
// the RPC (a Django view), is refused team:board by the subscribe check (a
// Django view) and let into team:staff; bob, logged in in another browser
// context, is refused team:staff and sees alice go offline when she logs
// out: Herald's herald.disconnect reached the worker consumer, which told
// the "activity" channel.
//
// Waits for the proxy's wiring into the connection paths (gateway/): until
// then the page's socket gets no `connected`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { HERALD_BIN, REPO, launchBrowser, browserTest, freePort, until } from "./lib.mjs";

const run = promisify(execFile);
const DJANGO = path.join(REPO, "examples", "django");
const PASSWORD = "correct-horse-42";
let browser;
let project;
let redisPort;
let site;
let logFile;

const output = () => fs.readFileSync(logFile, "utf8");

before(async () => {
  redisPort = await freePort();
  const [heraldPort, djangoPort, nginxPort] = [await freePort(), await freePort(), await freePort()];
  site = `http://127.0.0.1:${nginxPort}`;
  logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "herald-example-")), "run.log");
  const out = fs.openSync(logFile, "w");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
  project = spawn("bash", [path.join(DJANGO, "run.sh")], {
    env: { ...env, HERALD_BIN, PYTHON: "/usr/bin/python3", REDIS_PORT: String(redisPort),
           HERALD_PORT: String(heraldPort), DJANGO_PORT: String(djangoPort), NGINX_PORT: String(nginxPort),
           DEMO_PASSWORD: PASSWORD },
    stdio: ["ignore", out, out],
    detached: true, // its own process group: nothing it starts outlives the test
  });
  await until(() => {
    if (project.exitCode !== null) throw new Error("run.sh exited:\n" + output());
    return output().includes("a Herald token for user alice");
  }, "run.sh to start everything", 120000, 100);
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (project && project.exitCode === null) {
    const exited = new Promise((r) => project.once("exit", r));
    process.kill(-project.pid, "SIGTERM");
    await exited;
  }
});

const lines = (page) => page.$$eval("#log li", (lis) => lis.map((li) => li.textContent));
/* Waits for a line of the page's log (exactly text, or matching the
 * regexp source pattern); a failure says what the page showed instead. */
async function waitFor(page, want, exact) {
  try {
    await page.waitForFunction(([w, ex]) => [...document.querySelectorAll("#log li")].some((li) =>
      ex ? li.textContent === w : new RegExp(w).test(li.textContent)), [want, exact], { timeout: 20000 });
  } catch (e) {
    e.message += `\nwaiting for ${JSON.stringify(want)}; the page shows ${JSON.stringify(await lines(page).catch(() => []))}`;
    throw e;
  }
}
const waitLine = (page, text) => waitFor(page, text, true);
const waitMatch = (page, pattern) => waitFor(page, pattern, false);

/* Django's login form, filled and sent as a person would; lands on the chat. */
async function logIn(page, user) {
  await page.goto(site + "/");
  assert.equal(new URL(page.url()).pathname, "/accounts/login/", "the chat asks for a login first");
  await page.fill("#id_username", user);
  await page.fill("#id_password", PASSWORD);
  await Promise.all([page.waitForURL(site + "/"), page.click("button")]);
  assert.equal(await page.textContent("#me"), user);
}

async function manage(...args) {
  const env = { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}/0`, PYTHONDONTWRITEBYTECODE: "1" };
  return run("/usr/bin/python3", ["manage.py", ...args], { cwd: DJANGO, env, timeout: 30000 });
}

test("Django session login: chat, RPC and the subscribe check with no JWT; the worker sees herald.disconnect", browserTest(() => browser, async (t, { newPage }) => {
  // a wrong password stays on the form
  const page = await newPage();
  await page.goto(site + "/accounts/login/");
  await page.fill("#id_username", "alice");
  await page.fill("#id_password", "wrong");
  await page.click("button");
  await page.waitForSelector("#login-error");

  // bob first, in a browser context (cookie jar) of his own
  const bobContext = await browser.newContext();
  try {
    const bob = await bobContext.newPage();
    await logIn(bob, "bob");
    await waitLine(bob, "connected as bob");
    await waitLine(bob, "online: bob");
    await bob.fill("#team", "staff");
    await bob.click("#join button");
    await waitLine(bob, "team:staff refused: forbidden");

    // alice
    await logIn(page, "alice");
    assert.ok(!(await page.content()).match(/eyJ[A-Za-z0-9_-]{10,}/), "no JWT in the page");
    await waitLine(page, "connected as alice");
    await waitLine(page, "online: alice, bob");
    await waitLine(bob, "alice joined");
    await page.fill("#text", "hello bob");
    await page.click("#send button");
    await waitLine(page, "alice: hello bob");
    await waitLine(bob, "alice: hello bob");

    // an RPC answered by a Django view
    await page.click("#whoami");
    await waitLine(page, "whoami: alice, teams staff");
    // the subscribe check (a Django view): team:board is refused, team:staff allowed
    await page.fill("#team", "board");
    await page.click("#join button");
    await waitLine(page, "team:board refused: forbidden");
    await page.fill("#team", "staff");
    await page.click("#join button");
    await waitLine(page, "joined team:staff");
    // the connect answer subscribed alice to user:alice: the project's notify reaches her
    await manage("notify", "alice", "your order shipped");
    await waitLine(page, "user:alice: your order shipped");

    // alice logs out: her socket goes, Herald's herald.disconnect reaches the
    // worker, and bob sees it on the activity channel
    await Promise.all([page.waitForURL(site + "/accounts/login/"), page.click("#logout")]);
    await waitMatch(bob, "^alice went offline \\(\\d+\\)$");
    // nothing went wrong but the refusals above (herald.js reports a refused
    // subscribe as an "error" event too, which the page shows)
    const refusal = /^error forbidden: subscribe team:(staff|board): only members of team (staff|board)$/;
    for (const p of [page, bob]) {
      assert.deepEqual((await lines(p).catch(() => []))
        .filter((l) => (l.startsWith("error") && !refusal.test(l)) || l.startsWith("not sent")), []);
    }
  } finally {
    await bobContext.close();
  }
}));
