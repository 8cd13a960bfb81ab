"""The SpecTree instance the views validate with, and the OpenAPI document it generates."""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from spectree import SpecTree

from .jsonbody import BODY_METHODS, MAX_BODY_BYTES
from .problems import raise_validation_problem
from .schemas import Problem

spec = SpecTree(
    "flask",
    title="Inventory and orders API",
    version="1.0.0",
    description="Customers, products and orders on Aurora PostgreSQL. "
    "Errors are application/problem+json (RFC 9457), but for two answers of the HTTP server "
    "itself (414, and 431 for one header line too long). Each operation lists what it "
    "answers; a request to no operation gets 404 (no such path) or 405 (with Allow).",
    # Only the views decorated with spec.validate are documented (and validated).
    mode="strict",
    # Request models come from the decorator, not from view annotations.
    annotations=False,
    before=raise_validation_problem,
    validation_error_status=422,
    validation_error_model=Problem,
    # Plain model names in components/schemas (the default appends a hash).
    naming_strategy=lambda model: model.__name__,
)

bp = Blueprint("openapi", __name__)


def output_only(**kwargs: Any) -> Any:
    """`spec.validate` for a view with no request model that returns a response model it built.

    The view's response model validated its fields when the view constructed it,
    and there is no request model to check; SpecTree's per-request validation
    would only parse the headers and cookies and validate the response a second
    time. The view is documented all the same.
    """
    return spec.validate(skip_validation=True, **kwargs)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document, generated from the models that validate the requests."""
    if "openapi_document" not in current_app.extensions:
        current_app.extensions["openapi_document"] = complete(spec.spec)
    return jsonify(current_app.extensions["openapi_document"])


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """SpecTree's document plus what the app does around the views, so it says all of it.

    SpecTree documents the views' own models and statuses. Around them the app
    authenticates (api.auth), parses bodies (api.jsonbody), reaches the database
    and maps errors (api.problems); each can answer more, and these are added
    here by the rule that produces them, so a new view gets them without listing them.
    tests/api/test_api_contract.py holds the document to what the app answers.
    """
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    components["headers"] = _HEADERS
    components.setdefault("securitySchemes", {})["bearerAuth"] = _BEARER
    document["security"] = [{"bearerAuth": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            _problem_media_type(responses)
            if not _validated(operation):
                # SpecTree documents a 422 for every view, even one with nothing
                # to validate (its path ids out of range are 404s).
                responses.pop("422", None)
            for status, description, headers in _added_responses(path, method):
                response = responses.setdefault(status, _problem(description))
                response.setdefault("headers", {}).update({name: _ref(name) for name in headers})
            for status, response in _SERVER_RESPONSES.items():
                responses.setdefault(status, copy.deepcopy(response))
            if path in PUBLIC_PATHS:
                operation["security"] = []
            for status, response in responses.items():
                if status not in _SERVER_RESPONSES:  # the app's answers carry its headers
                    response.setdefault("headers", {}).update(_headers_for(path, method, status))
                if (method, path, status) == ("get", "/products", "200"):
                    response["links"] = {"NextPage": _NEXT_PAGE}
            operation["responses"] = dict(sorted(responses.items()))
    return document


def _problem_media_type(responses: dict[str, Any]) -> None:
    """SpecTree documents every body as application/json; ours are problem+json for >= 400."""
    for status, response in responses.items():
        content = response.get("content", {})
        if status[:1] in "45" and "application/json" in content:
            content["application/problem+json"] = content.pop("application/json")


# Anonymous by design: the load balancer's and the orchestrator's probes.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
# Reaches neither the database nor the token issuer: nothing it depends on can be down.
_NO_DEPENDENCIES = frozenset({"/healthz"})

_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "An OAuth 2.0 / OIDC access token from the configured issuer. The "
    "admin scope manages the catalog and acts for any customer; a token whose "
    "customer claim names a customer acts for that customer only.",
}


# Keyset pagination as a link, for readers and for schemathesis' stateful phase.
_NEXT_PAGE = {
    "operationId": "get__products",
    "parameters": {"next": "$response.body#/next"},
    "description": "the following page (none when `next` is null)",
}


def _header(description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_HEADERS = {
    "X-Request-Id": _header(
        "this request's id, as in its log line: the request's own X-Request-Id when sane, "
        "else the load balancer's trace root, else a new one",
        {"type": "string", "pattern": r"^[A-Za-z0-9._:=/+-]{1,128}$"},
        required=False,
    ),
    "Location": _header("the path of the resource created", {"type": "string"}, required=True),
    "Retry-After": _header(
        "seconds to wait before trying again", {"type": "integer", "minimum": 0}, required=True
    ),
    "WWW-Authenticate": _header(
        "the Bearer challenge (RFC 6750), with `error` once a token was presented",
        {"type": "string", "pattern": "^Bearer "},
        required=True,
    ),
    "Idempotent-Replayed": _header(
        "`true` when an Idempotency-Key replayed an earlier order instead of placing one",
        {"type": "string", "enum": ["true"]},
        required=False,
    ),
}


_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }


# What the HTTP server (api/gunicorn.conf.py) answers before the app sees a request, so
# whatever the operation. gunicorn's own parser answers 414 and a 431 for one header
# line as text/html; the buffering worker's 408 and 431 (the whole head) are problem+json.
_HTML = {"text/html": {"schema": {"type": "string"}}}
_SERVER_RESPONSES = {
    "408": _problem("the request did not arrive within the read timeout (30 s by default)"),
    "414": {"description": "the request line is longer than 4094 bytes", "content": _HTML},
    "431": {
        "description": "the head is larger than 64 KiB (problem+json), or one header line is "
        "longer than 8190 bytes or there are more than 100 (text/html)",
        "content": {"application/problem+json": {"schema": _PROBLEM}, **_HTML},
    },
}


def _added_responses(path: str, method: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """The statuses the app around this operation's view can answer, each with why."""
    added: list[tuple[str, str, tuple[str, ...]]] = []
    if method.upper() in BODY_METHODS:  # api.jsonbody reads every such body first
        added += [
            ("400", "the body is not valid JSON, or is nested too deeply", ()),
            ("413", f"the body is larger than {MAX_BODY_BYTES // 1024} KiB", ()),
            ("415", "a body that is not `application/json`", ()),
        ]
    if path not in PUBLIC_PATHS:  # api.auth
        added += [
            (
                "401",
                "no valid bearer token (missing, expired, wrong issuer, audience or signature)",
                ("WWW-Authenticate",),
            ),
            (
                "403",
                "the token's scope or customer does not allow this",
                ("WWW-Authenticate",),
            ),
        ]
    if path not in _NO_DEPENDENCIES:  # api.problems: unavailable -> 503
        added.append(
            (
                "503",
                "the database (or the token issuer's keys) is unavailable right now; "
                "retry after Retry-After seconds",
                ("Retry-After",),
            )
        )
    return added


def _validated(operation: dict[str, Any]) -> bool:
    """Whether the operation has a body, query or header model that a request can fail."""
    return "requestBody" in operation or any(
        parameter.get("in") != "path" for parameter in operation.get("parameters", [])
    )


def _headers_for(path: str, method: str, status: str) -> dict[str, Any]:
    headers = {"X-Request-Id": _ref("X-Request-Id")}
    if status == "201":
        headers["Location"] = _ref("Location")
        if (method, path) == ("post", "/orders"):
            headers["Idempotent-Replayed"] = _ref("Idempotent-Replayed")
    return headers
