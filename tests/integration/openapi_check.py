"""openapi_check.py - every answer Herald gives the integration tests is held
against docs/openapi.json (no tests here).

harness.Herald installs `check_response` as a response hook on its HTTP
session, so every REST call any test makes through `Herald.http` is checked:
the operation must exist in the document, the status must be one it
documents (or one the document says any route may answer), the
Content-Type one of that response's media types, the body valid against its
schema (JSON Schema 2020-12, python3-jsonschema), required headers present,
and a response documented without content must have no body. A mismatch is
an AssertionError raised from the request itself, so the test that made it
fails and names the call.

Calls to paths the document does not describe (static files, deliberate
nonsense) are not checked here: test_openapi.py asserts that those answer
404 or 405 from the router.
"""

import json
import os
import re

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
DOC_PATH = os.path.normpath(os.path.join(HERE, "..", "..", "docs", "openapi.json"))

# The answers the document's description promises for any route (a path
# over 1 KiB, a client over a connection limit): problem+json.
ANY_ROUTE = ("414", "429")
JSON_TYPES = ("application/json", "application/problem+json")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


class Document:
    def __init__(self, path=DOC_PATH):
        with open(path) as f:
            self.doc = json.load(f)
        self.resolver = jsonschema.RefResolver.from_schema(self.doc)
        self.templates = []
        for template, item in self.doc["paths"].items():
            literal = re.sub(r"\{[^}]+\}", "", template)
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self.templates.append((len(literal), template, re.compile(regex), item))
        # literal paths before templated ones: /users/me before /users/{id}
        self.templates.sort(key=lambda t: -t[0])

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            node = self.resolver.resolve(node["$ref"])[1]
        return node

    def operation(self, method, path):
        """(template, operation) for a request, or None."""
        path = path.split("?", 1)[0]
        for _, template, regex, item in self.templates:
            if regex.match(path):
                op = item.get(method.lower())
                return (template, op) if op else None
        return None

    def response(self, op, status):
        responses = op["responses"]
        for key in (str(status), "%dXX" % (status // 100), "default"):
            if key in responses:
                return self.resolve(responses[key])
        if str(status) in ANY_ROUTE:
            return {"description": "any route",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        return None

    def validate(self, schema, value):
        jsonschema.Draft202012Validator(schema, resolver=self.resolver).validate(value)

    def check(self, method, path, status, headers, body):
        """Raises AssertionError when the answer is not what the document says."""
        found = self.operation(method, path)
        if not found:
            return
        template, op = found
        what = "%s %s (%s) answered %d" % (method, path.split("?", 1)[0], template, status)
        resp = self.response(op, status)
        assert resp is not None, "%s, a status docs/openapi.json does not document for it: %s" % (
            what, body[:300])
        for name, h in resp.get("headers", {}).items():
            h = self.resolve(h)
            if h.get("required"):
                assert name in headers, "%s without its %s header" % (what, name)
            if name in headers and "schema" in h:
                value = headers[name]
                if h["schema"].get("type") == "integer":
                    assert value.isdigit(), "%s: %s: %r is no integer" % (what, name, value)
                    value = int(value)
                self.validate(h["schema"], value)
        content = resp.get("content")
        if not content:
            assert not body, "%s with a body, documented without one: %r" % (what, body[:200])
            return
        ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
        media = content.get(ctype) or content.get("*/*")
        assert media is not None, "%s with Content-Type %r; documented: %s" % (what, ctype, sorted(content))
        if ctype in JSON_TYPES and "schema" in media:
            try:
                value = json.loads(body)
            except ValueError as e:
                raise AssertionError("%s with invalid JSON (%s): %r" % (what, e, body[:200]))
            try:
                self.validate(media["schema"], value)
            except jsonschema.ValidationError as e:
                raise AssertionError("%s: the body does not match docs/openapi.json: %s at %s\nbody: %s" % (
                    what, e.message[:300], "/".join(str(p) for p in e.absolute_path) or "(root)", body[:500]))


_document = None
STREAM_TYPES = ("text/event-stream", "application/x-ndjson")


def document():
    global _document
    if _document is None:
        _document = Document()
    return _document


def check_response(resp, *args, **kwargs):
    """A requests response hook (Session.hooks["response"])."""
    req = resp.request
    path = req.path_url
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    # a stream (/sse, /stream) never ends: its type is checked, not its body
    body = b"" if ctype in STREAM_TYPES else resp.content
    document().check(req.method, path, resp.status_code, resp.headers, body)
    return resp
