"""The app's API as its OpenAPI document describes it, for the edge that must follow it.

- ``allowed_methods``: the HTTP methods the API uses (the WAF allows exactly those, APP-04);
- ``step_up_request_patterns``: "METHOD path" regexes of the operations that take an
  ``X-Step-Up-Code`` header (the WAF rate-limits them, HRD-03);
- ``probe_requests``: one valid request per operation (path, query and header parameters and a
  JSON or form body generated from the operation's schemas), for the edge check that proves the
  WAF passes every operation of the app (APP-04).

``billkit up`` derives the first two from ``app_openapi()`` (the app's routes, built without its
services); the edge check fetches the live document through the WAF. Nothing here lists routes, so
a new route is covered the moment the app declares it.
"""

from __future__ import annotations

import importlib
import json
import re
import string
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# The stdlib's regular-expression parser (sre_parse, whose old name warns that it is deprecated).
sre: Any = importlib.import_module("re._constants")
sre_parse: Any = importlib.import_module("re._parser")

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
STEP_UP_HEADER = "x-step-up-code"
# HEAD (health checks, link checkers) and OPTIONS (CORS preflight) are answered by any site: the CRS
# lists them among its default allowed methods, and refusing them would be a false positive.
ALWAYS_ALLOWED = ("HEAD", "OPTIONS")
# Integers take this value when their bounds allow it: IDs in a probe point at nothing, so a probe
# request can neither change nor reveal a real record. It fits PostgreSQL's integer.
PROBE_ID = 2_000_000_000
# Free text in bodies carries the punctuation real names and addresses have (the CRS must pass it);
# a field whose constraints refuse it gets a plain token instead.
TEXTS = ("Seán O'Brien-Müller & Co. (test)",)
PLAIN = "probe"
_FORMATS = {
    "email": "probe@example.org",
    "date": "2030-01-31",
    "date-time": "2030-01-31T12:00:00Z",
    "time": "12:00:00",
    "uuid": "6f1c9a52-3b7e-4d1a-9c2e-8a5b0e4f7d31",
    "uri": "https://example.org/probe",
    "hostname": "probe.example.org",
    "ipv4": "192.0.2.10",
    "ipv6": "2001:db8::10",
}
# Characters tried for a regex character class, nicest first; then all of printable ASCII.
_ALPHABET = "".join(dict.fromkeys(PLAIN + string.ascii_letters + string.digits + " .-_@" + string.punctuation))
_MAX_DEPTH = 24


class SchemaError(ValueError):
    """A schema this generator cannot satisfy (it names the schema and why)."""


# --- the document ----------------------------------------------------------------------------------


def app_openapi() -> dict[str, Any]:
    """The billing app's OpenAPI document from its routes alone (no database, Vault or settings)."""
    from fastapi import FastAPI

    from app_stub.main import include_routers

    probe = FastAPI(title="billkit billing app", version="1.0")
    include_routers(probe)  # routes only; no handler is ever called
    return probe.openapi()


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # the OpenAPI path template, e.g. /api/users/{user_id}/roles
    spec: dict[str, Any] = field(repr=False, compare=False)

    @property
    def parameters(self) -> list[dict[str, Any]]:
        return self.spec.get("parameters", [])

    def params_in(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.parameters if p.get("in") == where]

    @property
    def step_up(self) -> bool:
        """The operation takes a step-up code (MFA-04): the edge rate-limits it."""
        return any(p["name"].lower() == STEP_UP_HEADER for p in self.params_in("header"))

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def operations(doc: dict[str, Any]) -> list[Operation]:
    """Every operation of the document, in its order; path-level parameters are merged in."""
    out = []
    for path, item in doc.get("paths", {}).items():
        shared = [_resolve(p, doc) for p in item.get("parameters", [])]
        for method in HTTP_METHODS:
            if method not in item:
                continue
            spec = dict(item[method])
            own = [_resolve(p, doc) for p in spec.get("parameters", [])]
            names = {(p["name"], p["in"]) for p in own}
            spec["parameters"] = [p for p in shared if (p["name"], p["in"]) not in names] + own
            if "requestBody" in spec:
                spec["requestBody"] = _resolve(spec["requestBody"], doc)
            out.append(Operation(method.upper(), path, spec))
    return out


def allowed_methods(doc: dict[str, Any]) -> list[str]:
    """The methods the API uses, and HEAD and OPTIONS: what the WAF allows (CRS tx.allowed_methods)."""
    return sorted({op.method for op in operations(doc)} | set(ALWAYS_ALLOWED))


def path_regex(template: str) -> str:
    """The path template as a regex body: each {parameter} is one non-empty segment."""
    parts = re.split(r"(\{[^}/]+\})", template)
    return "".join("[^/]+" if p.startswith("{") and p.endswith("}") else _nginx_escape(p) for p in parts)


def _nginx_escape(text: str) -> str:
    # re.escape also escapes "-", "/" and spaces, which PCRE does not need; escape only what is special.
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def step_up_request_patterns(doc: dict[str, Any]) -> list[str]:
    """Anchored regexes over "METHOD path" for the step-up operations (nginx map keys, PCRE)."""
    return sorted({f"^{op.method} {path_regex(op.path)}$" for op in operations(doc) if op.step_up})


# --- values from schemas ---------------------------------------------------------------------------


def _resolve(schema: Any, doc: dict[str, Any]) -> Any:
    seen = set()
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaError(f"only local references are supported, not {ref!r}")
        if ref in seen:
            raise SchemaError(f"circular reference {ref}")
        seen.add(ref)
        target: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise SchemaError(f"unresolvable reference {ref}")
            target = target[part]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **rest} if rest and isinstance(target, dict) else target
    return schema


def _merge_all_of(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        part = _resolve(part, doc)
        if "allOf" in part:
            part = _merge_all_of(part, doc)
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = sorted({*merged.get("required", []), *value})
            elif key in ("minimum", "minLength", "minItems", "exclusiveMinimum"):
                merged[key] = max(merged.get(key, value), value)
            elif key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum"):
                merged[key] = min(merged.get(key, value), value)
            else:
                merged.setdefault(key, value)
    return merged


def _type_of(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("pattern", "minLength", "maxLength", "format")):
            return "string"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
    return t


def example(schema: Any, doc: dict[str, Any], texts: Iterable[str] = TEXTS, _depth: int = 0) -> Any:
    """A value that validates against ``schema`` ($ref, allOf/anyOf/oneOf, enum/const, type, pattern,
    formats, lengths, bounds, required and optional properties, item counts).

    Strings try ``texts`` first (realistic free text), then the schema's own examples, then a plain
    token, then a string generated from the pattern. Integers prefer ``PROBE_ID``.
    """
    if _depth > _MAX_DEPTH:
        raise SchemaError("schema nests too deep (a recursive reference?)")
    schema = _resolve(schema, doc)
    if schema is True or schema == {}:
        return PLAIN
    if not isinstance(schema, dict):
        raise SchemaError(f"not a schema: {schema!r}")
    if "allOf" in schema:
        schema = _merge_all_of(schema, doc)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        values = [v for v in schema["enum"] if v is not None] or schema["enum"]
        return values[0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [_resolve(b, doc) for b in schema[key]]
            chosen = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")] or branches
            base = {k: v for k, v in schema.items() if k not in (key, "title", "description", "default")}
            return example({**base, **chosen[0]} if base else chosen[0], doc, texts, _depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        props = schema.get("properties", {})
        out = {name: example(sub, doc, texts, _depth + 1) for name, sub in props.items()}
        for name in schema.get("required", []):
            out.setdefault(name, PLAIN)
        return out
    if kind == "array":
        lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
        n = max(lo, 1) if hi is None else min(max(lo, 1), int(hi))
        prefix = schema.get("prefixItems", [])
        items = [example(s, doc, texts, _depth + 1) for s in prefix[:n]]
        while len(items) < n:
            items.append(example(schema.get("items", {}), doc, texts, _depth + 1))
        if schema.get("uniqueItems") and len({repr(i) for i in items}) < len(items):
            raise SchemaError(f"cannot make {n} distinct items for {schema.get('title', 'an array')}")
        return items
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string" or kind is None:
        return _string(schema, texts)
    raise SchemaError(f"unsupported type {kind!r}")


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    step = 1 if integer else 0.5
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(xlo, bool):  # OpenAPI 3.0: a flag on minimum
        lo, xlo = (None, lo) if xlo else (lo, None)
    if isinstance(xhi, bool):
        hi, xhi = (None, hi) if xhi else (hi, None)
    if xlo is not None:
        lo = max(lo, xlo + step) if lo is not None else xlo + step
    if xhi is not None:
        hi = min(hi, xhi - step) if hi is not None else xhi - step
    value: float = PROBE_ID
    if hi is not None:
        value = min(value, hi)
    if lo is not None:
        value = max(value, lo)
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"empty range [{lo}, {hi}]")
    multiple = schema.get("multipleOf")
    if multiple:
        value = (value // multiple) * multiple
        if lo is not None and value < lo:
            value += multiple
    if integer:
        value = int(value)
        if lo is not None and value < lo:
            value += 1
    return value


def _string_ok(value: str, schema: dict[str, Any]) -> bool:
    if len(value) < int(schema.get("minLength", 0)):
        return False
    if "maxLength" in schema and len(value) > int(schema["maxLength"]):
        return False
    pattern = schema.get("pattern")
    return not (pattern and re.search(pattern, value) is None)


def _string(schema: dict[str, Any], texts: Iterable[str]) -> str:
    candidates = [*schema.get("examples", []), schema.get("example"), *texts, schema.get("default"), PLAIN]
    fmt = schema.get("format")
    if fmt in _FORMATS:
        candidates.insert(0, _FORMATS[fmt])
    elif fmt == "binary":
        candidates.insert(0, "probe-file-content")
    for value in candidates:
        if isinstance(value, str) and _string_ok(value, schema):
            return value
    if "pattern" in schema:
        return _from_pattern(schema["pattern"], schema)
    n = max(int(schema.get("minLength", 0)), min(len(PLAIN), int(schema.get("maxLength", len(PLAIN)))))
    value = (PLAIN * (n // len(PLAIN) + 1))[:n]
    if not _string_ok(value, schema):
        raise SchemaError(f"no string satisfies {schema}")
    return value


# --- strings from regular expressions ------------------------------------------------------------------


def _category(name: Any) -> Callable[[str], bool]:
    tests: dict[Any, Callable[[str], bool]] = {
        sre.CATEGORY_DIGIT: str.isdigit,
        sre.CATEGORY_NOT_DIGIT: lambda c: not c.isdigit(),
        sre.CATEGORY_SPACE: str.isspace,
        sre.CATEGORY_NOT_SPACE: lambda c: not c.isspace(),
        sre.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
        sre.CATEGORY_NOT_WORD: lambda c: not (c.isalnum() or c == "_"),
    }
    if name not in tests:
        raise SchemaError(f"unsupported character category {name}")
    return tests[name]


def _in_class(ch: str, items: list[tuple[Any, Any]]) -> bool:
    negate, hit = False, False
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            hit = hit or ord(ch) == av
        elif op is sre.RANGE:
            hit = hit or av[0] <= ord(ch) <= av[1]
        elif op is sre.CATEGORY:
            hit = hit or _category(av)(ch)
        else:
            raise SchemaError(f"unsupported item {op} in a character class")
    return hit != negate


def _pick(test: Callable[[str], bool], position: int) -> str:
    n = len(_ALPHABET)
    for k in range(n):
        ch = _ALPHABET[(position + k) % n]
        if test(ch):
            return ch
    for code in range(0xA0, 0x3000):
        if test(chr(code)):
            return chr(code)
    raise SchemaError("no character satisfies a character class")


class _Gen:
    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.groups: dict[int, str] = {}

    def seq(self, items: Any) -> str:
        return "".join(self.one(op, av) for op, av in items)

    def one(self, op: Any, av: Any, position: int = 0) -> str:
        """The text for one node; ``position`` (within a repetition) varies the characters chosen."""
        if op is sre.LITERAL:
            return chr(av)
        if op is sre.NOT_LITERAL:
            return _pick(lambda c: ord(c) != av, position)
        if op is sre.ANY:
            return _pick(lambda c: c != "\n", position)
        if op is sre.IN:
            return _pick(lambda c: _in_class(c, av), position)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            count = max(lo, self.repeat if hi == sre.MAXREPEAT else min(self.repeat, hi))
            return "".join(self.one(o, a, i) for i in range(count) for o, a in sub)
        if op is sre.SUBPATTERN:
            group, _, _, sub = av
            text = self.seq(sub)
            if group is not None:
                self.groups[group] = text
            return text
        if op is getattr(sre, "ATOMIC_GROUP", None):
            return self.seq(av)
        if op is sre.BRANCH:
            return self.seq(av[1][0])
        if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            return ""  # anchors and lookarounds: the result is checked against the whole pattern
        if op is sre.GROUPREF:
            return self.groups.get(av, "")
        raise SchemaError(f"unsupported regular expression construct {op}")


def _from_pattern(pattern: str, schema: dict[str, Any]) -> str:
    try:
        tree = sre_parse.parse(pattern)
    except re.error as exc:
        raise SchemaError(f"invalid pattern {pattern!r}: {exc}") from None
    lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
    tried = []
    for repeat in dict.fromkeys((len(PLAIN), 1, 3, 8, 16, lo, max(lo, 1), hi or 0, 64)):
        value = _Gen(repeat).seq(tree)
        tried.append(value)
        if _string_ok(value, {**schema, "pattern": pattern}):
            return value
    raise SchemaError(f"no generated string satisfies pattern {pattern!r} with lengths {lo}..{hi} (tried {tried})")


# --- requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRequest:
    operation: Operation
    path: str  # the concrete path: parameters filled in and quoted
    params: dict[str, Any]  # query parameters
    headers: dict[str, str]  # the declared header parameters, and Content-Type when there is a body
    body: Any = None  # the generated body (a JSON value or a form's fields)
    media_type: str | None = None  # None: no body

    @property
    def method(self) -> str:
        return self.operation.method

    @property
    def content(self) -> bytes | None:
        if self.media_type is None:
            return None
        if self.media_type == FORM:
            fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.body.items()}
            return urllib.parse.urlencode(fields).encode()
        return json.dumps(self.body, ensure_ascii=False).encode()

    def line(self) -> str:
        """ "METHOD path": what the WAF's step-up rate limit matches."""
        return f"{self.method} {self.path}"


FORM = "application/x-www-form-urlencoded"


def _param_value(param: dict[str, Any], doc: dict[str, Any]) -> Any:
    schema = param.get("schema")
    if schema is None:  # a parameter described by content (rare): the media type's schema
        schema = next(iter(param.get("content", {}).values()), {}).get("schema", {})
    return example(schema, doc, texts=())  # identifiers, not free text


def probe_request(op: Operation, doc: dict[str, Any], texts: Iterable[str] = TEXTS) -> ProbeRequest:
    """One valid request for ``op``: every parameter it declares, and a body when it takes one."""
    path = op.path
    for p in op.params_in("path"):
        path = path.replace("{" + p["name"] + "}", urllib.parse.quote(str(_param_value(p, doc)), safe=""))
    if "{" in path:
        raise SchemaError(f"{op}: a path parameter is not declared")
    params = {p["name"]: _param_value(p, doc) for p in op.params_in("query")}
    headers = {p["name"]: str(_param_value(p, doc)) for p in op.params_in("header")}
    content = (op.spec.get("requestBody") or {}).get("content", {})
    if not content:
        return ProbeRequest(op, path, params, headers)
    media = next((m for m in content if m == "application/json" or m.endswith("+json")), None)
    if media is None and FORM in content:
        media = FORM
    if media is None:
        raise SchemaError(f"{op}: no supported request body media type in {sorted(content)}")
    body = example(content[media].get("schema", {}), doc, texts)
    if media == FORM and not isinstance(body, dict):
        raise SchemaError(f"{op}: a form body must be an object")
    return ProbeRequest(op, path, params, {**headers, "Content-Type": media}, body, media)


def ends_session(op: Operation) -> bool:
    return op.path.rstrip("/").endswith("/logout")


def probe_requests(doc: dict[str, Any], texts: Iterable[str] = TEXTS) -> list[ProbeRequest]:
    """A request for every operation; those that end the session (logout) come last."""
    texts = tuple(texts)
    ops = sorted(operations(doc), key=ends_session)  # stable: the document's order otherwise
    return [probe_request(op, doc, texts) for op in ops]
