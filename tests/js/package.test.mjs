// web/package.json: the client installs with npm from the repository (a
// local path, offline) and resolves by its package name, with its types.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "web");
const pkg = JSON.parse(fs.readFileSync(path.join(WEB, "package.json"), "utf8"));

function npm(args, cwd) {
  const r = spawnSync("npm", args, { cwd, encoding: "utf8", env: { ...process.env, npm_config_update_notifier: "false" } });
  assert.equal(r.status, 0, `npm ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test("package.json: an ES module with exports and types", () => {
  assert.equal(pkg.type, "module");
  assert.equal(pkg.exports["."].import, "./herald.js");
  assert.equal(pkg.exports["."].types, "./herald.d.ts");
  assert.equal(pkg.types, "./herald.d.ts");
  assert.equal(pkg.dependencies, undefined, "no dependencies");
});

test("npm pack ships herald.js and herald.d.ts", () => {
  const out = JSON.parse(npm(["pack", "--dry-run", "--json"], WEB));
  const files = out[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, ["herald.d.ts", "herald.js", "package.json"]);
});

test("npm install <repo>/web, then import it by name", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-npm-"));
  try {
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    npm(["install", "--offline", "--no-audit", "--no-fund", "--install-links", WEB], dir);
    fs.writeFileSync(path.join(dir, "main.js"), 'import { Herald, HeraldError } from "herald-client";\nconsole.log(typeof Herald, new HeraldError("forbidden").code);\n');
    const r = spawnSync(process.execPath, ["main.js"], { cwd: dir, encoding: "utf8" });
    assert.equal(r.stdout.trim(), "function forbidden", r.stderr);
    assert.ok(fs.existsSync(path.join(dir, "node_modules", "herald-client", "herald.d.ts")));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
