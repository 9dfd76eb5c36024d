// docs/openapi.json validated by a real OpenAPI validator:
// @apidevtools/swagger-parser (npm, installed by `setup.sh test` into
// tests/browser/node_modules) checks the document against the official
// OpenAPI 3.1 JSON Schema and resolves every $ref. What the schema cannot
// express (path parameters declared, operationIds unique; swagger-parser
// checks those for Swagger 2.0 only) is checked here. Broken copies
// must be refused, so the test is shown to bite. That the document matches
// the router is tests/unit/gateway/rest.c's job; that answers match its
// schemas, the integration tests' (harness.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const require = createRequire(path.join(REPO, "tests", "browser", "package.json"));
const SwaggerParser = require("@apidevtools/swagger-parser");

const load = () => JSON.parse(fs.readFileSync(path.join(REPO, "docs", "openapi.json"), "utf8"));

async function refused(mutate, what) {
  const doc = load();
  mutate(doc);
  await assert.rejects(SwaggerParser.validate(doc), undefined, `a document with ${what} was accepted`);
}

test("docs/openapi.json is a valid OpenAPI 3.1 document", async () => {
  const doc = load();
  assert.equal(doc.openapi, "3.1.0");
  const api = await SwaggerParser.validate(structuredClone(doc));
  assert.equal(api.info.title, "Herald");
  const cmake = fs.readFileSync(path.join(REPO, "CMakeLists.txt"), "utf8");
  const version = /project\(herald VERSION ([0-9.]+)/.exec(cmake)[1];
  assert.equal(doc.info.version, version, "info.version is not the project's version (CMakeLists.txt)");
});

// OpenAPI 3.1 §4.8.9 (a template's parameters are required and declared)
// and §4.8.10 (operationIds are unique); returns the problems found.
function semanticProblems(doc) {
  const problems = [];
  const ids = new Map();
  const resolve = (p) => (p.$ref ? p.$ref.split("/").slice(1).reduce((o, k) => o[k], doc) : p);
  for (const [p, item] of Object.entries(doc.paths)) {
    const templated = [...p.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const [m, op] of Object.entries(item)) {
      if (m === "parameters") continue;
      const what = `${m.toUpperCase()} ${p}`;
      if (ids.has(op.operationId)) problems.push(`${what}: operationId ${op.operationId} also on ${ids.get(op.operationId)}`);
      ids.set(op.operationId, what);
      const params = [...(item.parameters || []), ...(op.parameters || [])].map(resolve);
      const inPath = params.filter((x) => x.in === "path");
      for (const name of templated) {
        const decl = inPath.find((x) => x.name === name);
        if (!decl) problems.push(`${what}: path parameter {${name}} not declared`);
        else if (decl.required !== true) problems.push(`${what}: path parameter {${name}} not required`);
      }
      for (const x of inPath) if (!templated.includes(x.name)) problems.push(`${what}: path parameter ${x.name} not in the path`);
    }
  }
  return problems;
}

test("path parameters are declared and operationIds unique", () => {
  assert.deepEqual(semanticProblems(load()), []);
  const bites = (mutate) => { const d = load(); mutate(d); return semanticProblems(d).length > 0; };
  assert.ok(bites((d) => { delete d.paths["/api/v1/channels/{ch}/history"].parameters; }), "undeclared {ch} passed");
  assert.ok(bites((d) => { d.paths["/readyz"].get.operationId = "healthz"; }), "duplicate operationId passed");
  assert.ok(bites((d) => { d.paths["/api/v1/users/{id}"].parameters = [{ name: "uid", in: "path", required: true, schema: {} }]; }),
    "misnamed path parameter passed");
});

test("every operation has an id, a tag, a summary and documented errors", () => {
  const doc = load();
  const tags = new Set(doc.tags.map((t) => t.name));
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(item)) {
      if (m === "parameters") continue;
      const what = `${m.toUpperCase()} ${p}`;
      assert.ok(op.operationId && op.summary, `${what}: no operationId or summary`);
      assert.ok(op.tags?.length && op.tags.every((t) => tags.has(t)), `${what}: undeclared tag`);
      const codes = Object.keys(op.responses);
      assert.ok(codes.some((c) => /^[123]/.test(c)), `${what}: no success response`);
      assert.ok(codes.some((c) => /^[45]/.test(c)), `${what}: no error response`);
    }
  }
});

test("the validator refuses broken documents", async () => {
  await refused((d) => { d.openapi = "3.1"; }, "a malformed openapi version");
  await refused((d) => { d.paths["/api/v1/publish"].post.responses["2OO"] = { description: "x" }; },
    "a response code that is no status");
  await refused((d) => { delete d.paths["/api/v1/publish"].post.responses["200"].description; },
    "a response without a description");
  await refused((d) => {
    d.paths["/api/v1/publish"].post.requestBody.content["application/json"].schema = { $ref: "#/components/schemas/Nope" };
  }, "a dangling $ref");
  await refused((d) => { d.components.securitySchemes.apiKey.in = "body"; }, "an invalid security scheme");
});
