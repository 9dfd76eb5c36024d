// web/herald.d.ts checked with the TypeScript compiler (tsc --strict) against
// an example that uses the whole surface (types/usage.ts), including
// misuses that must not compile. Needs tests/browser/node_modules (npm ci).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));

test("herald.d.ts type-checks the documented usage and rejects misuse (tsc --strict)", () => {
  const tsc = path.join(HERE, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [
    tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler",
    "--lib", "es2022,dom", path.join(HERE, "types", "usage.ts"),
  ], { encoding: "utf8" });
  assert.equal(r.status, 0, "tsc failed:\n" + r.stdout + r.stderr);
});
