"""Requests generated from an OpenAPI document, and the WAF settings derived from it (no lab needed)."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import jsonschema
import pytest

from billkit.lab import openapi_probe as probe
from billkit.lab.app import waf_vars

STEP_UP_TODAY = {
    "POST /api/cards/{token}/detokenize",
    "POST /api/users/{user_id}/roles",
    "DELETE /api/users/{user_id}/roles/{role}",
}


@pytest.fixture(scope="module")
def app_doc() -> dict[str, Any]:
    return probe.app_openapi()


def _validate(value: Any, schema: Any, doc: dict[str, Any], what: str) -> None:
    root = {**schema, "components": doc.get("components", {})} if isinstance(schema, dict) else schema
    errors = [e.message for e in jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())
              .iter_errors(value)]  # fmt: skip
    assert not errors, f"{what}: {value!r} is invalid: {errors}"


def _check_request(r: probe.ProbeRequest, doc: dict[str, Any]) -> None:
    op = r.operation
    assert re.fullmatch(probe.path_regex(op.path), r.path), (str(op), r.path)
    segments = dict(zip(op.path.split("/"), r.path.split("/"), strict=True))
    for p in op.params_in("path"):
        raw = urllib.parse.unquote(segments["{" + p["name"] + "}"])
        value = int(raw) if p["schema"].get("type") == "integer" else raw
        _validate(value, p["schema"], doc, f"{op} path parameter {p['name']}")
    for p in op.params_in("query"):
        _validate(r.params[p["name"]], p["schema"], doc, f"{op} query parameter {p['name']}")
    for p in op.params_in("header"):
        _validate(r.headers[p["name"]], p["schema"], doc, f"{op} header {p['name']}")
    body = (op.spec.get("requestBody") or {}).get("content", {})
    if not body:
        assert r.media_type is None and r.content is None
        return
    assert r.media_type in body and r.headers["Content-Type"] == r.media_type
    _validate(r.body, body[r.media_type]["schema"], doc, f"{op} body")
    if r.media_type == "application/json":
        assert json.loads(r.content or b"") == r.body


@pytest.mark.control("APP-04")
def test_every_operation_of_the_app_gets_a_request_its_schemas_accept(app_doc: dict[str, Any]) -> None:
    requests = probe.probe_requests(app_doc)
    assert {str(r.operation) for r in requests} == {str(op) for op in probe.operations(app_doc)}
    assert len(requests) >= 30  # the app's API today: a generator that loses operations fails here
    for r in requests:
        _check_request(r, app_doc)
    assert requests[-1].line() == "POST /api/logout"  # ending the session comes last
    by_op = {str(r.operation): r for r in requests}
    # The headers the operations declare are sent: the step-up code and the payment's idempotency key.
    assert "x-step-up-code" in by_op["DELETE /api/users/{user_id}/roles/{role}"].headers
    assert "idempotency-key" in by_op["POST /api/invoices/{iid}/payments"].headers
    # Free text carries real punctuation where the schema allows it; IDs point at nothing.
    assert by_op["POST /api/customers"].body["name"] == probe.TEXTS[0]
    assert by_op["GET /api/invoices/{iid}"].path == f"/api/invoices/{probe.PROBE_ID}"
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", by_op["POST /api/customers"].body["email"])


# Routes the app does not have yet, in the shapes its schemas take (and some it may): the generator
# must cover them without being told.
FUTURE: dict[str, Any] = {
    "openapi": "3.1.0",
    "paths": {
        "/api/role-requests/{request_id}/approve": {
            "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "post": {
                "parameters": [{"name": "x-step-up-code", "in": "header", "schema": {
                    "anyOf": [{"type": "string", "maxLength": 40}, {"type": "null"}]}}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Decision"}}}},
            },
        },
        "/api/users/{user_id}/disable": {
            "post": {"parameters": [{"$ref": "#/components/parameters/UserId"}]},
        },
        "/api/plans/{code}": {
            "put": {
                "parameters": [{"name": "code", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}},
                               {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "exclusiveMinimum": 0,
                                                                        "exclusiveMaximum": 50}}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Plan"}}}},
            },
        },
        "/api/feedback": {
            "post": {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["message"],
                "properties": {"message": {"type": "string", "minLength": 3, "maxLength": 10},
                               "score": {"type": "integer", "minimum": 1, "maximum": 5}}}}}}},
        },
    },
    "components": {
        "parameters": {"UserId": {"name": "user_id", "in": "path", "required": True,
                                  "schema": {"type": "integer", "minimum": 1, "maximum": 99}}},
        "schemas": {
            "Decision": {"type": "object", "required": ["decision", "reason"], "properties": {
                "decision": {"enum": ["approve", "reject"]},
                "reason": {"$ref": "#/components/schemas/Reason"},
                "ticket": {"type": "string", "pattern": r"^(INC|CHG)\d{6}$"},
            }},
            "Reason": {"type": "string", "minLength": 40, "maxLength": 60, "pattern": r"^[^\x00-\x1f]+$"},
            "Plan": {"allOf": [
                {"$ref": "#/components/schemas/Named"},
                {"type": "object", "required": ["price", "tags", "rate"], "properties": {
                    "price": {"type": "integer", "minimum": 100, "multipleOf": 25, "maximum": 10_000},
                    "rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "tags": {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "string",
                                                                                   "maxLength": 4}},
                    "contact": {"oneOf": [{"type": "null"}, {"type": "string", "format": "email"}]},
                    "starts": {"type": "string", "format": "date"},
                    "kind": {"const": "monthly"},
                }},
            ]},
            "Named": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string",
                                                                                    "maxLength": 12}}},
        },
    },
}  # fmt: skip


@pytest.mark.control("APP-04")
def test_routes_the_app_will_gain_are_covered_without_a_list() -> None:
    requests = {str(r.operation): r for r in probe.probe_requests(FUTURE)}
    assert set(requests) == {
        "POST /api/role-requests/{request_id}/approve",
        "POST /api/users/{user_id}/disable",
        "PUT /api/plans/{code}",
        "POST /api/feedback",
    }
    for r in requests.values():
        _check_request(r, FUTURE)
    assert requests["POST /api/users/{user_id}/disable"].path == "/api/users/99/disable"  # bounds kept
    assert re.fullmatch(r"/api/plans/[A-Z]{2}-\d{3}", requests["PUT /api/plans/{code}"].path)
    assert requests["POST /api/feedback"].content == b"message=probe&score=5"
    assert probe.allowed_methods(FUTURE) == ["HEAD", "OPTIONS", "POST", "PUT"]
    assert probe.step_up_request_patterns(FUTURE) == ["^POST /api/role-requests/[^/]+/approve$"]


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s]+$",
        r"^[A-Z]{3}$",
        r"^[a-z2-7]{4}(-[a-z2-7]{4}){3}$",
        r"^(ab|cd)-\d{2,4}(?:x|y)?\1$",
        r"\AINV-[0-9]+\Z",
        r"^(?=.*\d)[a-z\d]{8,}$",
        r"^[^\x00-\x08\x0b-\x1f\x7f]+$",
        r"^\w+\.\W\S\s\D$",
    ],
)
def test_strings_from_patterns_match_them(pattern: str) -> None:
    value = probe.example({"type": "string", "pattern": pattern}, {}, texts=())
    assert re.search(pattern, value), (pattern, value)


def test_a_schema_nothing_satisfies_is_named() -> None:
    with pytest.raises(probe.SchemaError, match="pattern"):
        probe.example({"type": "string", "pattern": "^[a-z]{5}$", "maxLength": 3}, {})
    with pytest.raises(probe.SchemaError, match="unresolvable reference #/components/schemas/Gone"):
        probe.example({"$ref": "#/components/schemas/Gone"}, {})
    with pytest.raises(probe.SchemaError, match="circular"):
        probe.example({"$ref": "#/a"}, {"a": {"$ref": "#/a"}})


@pytest.mark.control("APP-04", layer="host")
def test_the_waf_allows_exactly_the_methods_of_the_apps_api(app_doc: dict[str, Any]) -> None:
    methods = {op.method for op in probe.operations(app_doc)}
    assert methods == {"GET", "POST", "DELETE"}  # DELETE revokes a role: the WAF refused it once
    assert waf_vars()["waf_allowed_methods"] == ["DELETE", "GET", "HEAD", "OPTIONS", "POST"]


@pytest.mark.control("HRD-03", "NET-07", layer="host")
def test_the_step_up_rate_limit_covers_every_step_up_operation_and_nothing_else(app_doc: dict[str, Any]) -> None:
    patterns = waf_vars()["waf_step_up_requests"]
    assert isinstance(patterns, list) and patterns
    step_up = {str(op) for op in probe.operations(app_doc) if op.step_up}
    assert step_up >= STEP_UP_TODAY
    for r in probe.probe_requests(app_doc):
        limited = any(re.search(p, r.line()) for p in patterns)
        assert limited == (str(r.operation) in step_up), f"{r.line()}: limited={limited}"
        if limited:  # the same path with another method is a different operation
            assert not any(re.search(p, "GET " + r.path) for p in patterns)
    # Each pattern is anchored and matches one path segment per parameter, not a prefix.
    assert not any(re.search(p, "POST /api/cards/a/b/detokenize") for p in patterns)
    assert not any(re.search(p, "POST /api/cards/x/detokenize/more") for p in patterns)
