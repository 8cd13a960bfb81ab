"""The SpecTree instance the views validate with, and the OpenAPI document it generates."""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from spectree import SpecTree

from .problems import raise_validation_problem
from .schemas import Problem

spec = SpecTree(
    "flask",
    title="Inventory and orders API",
    version="1.0.0",
    description="Customers, products and orders on Aurora PostgreSQL. "
    "Errors are application/problem+json (RFC 9457).",
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
        current_app.extensions["openapi_document"] = _with_security(
            _with_problem_media_type(spec.spec)
        )
    return jsonify(current_app.extensions["openapi_document"])


def _with_problem_media_type(document: dict[str, Any]) -> dict[str, Any]:
    """SpecTree documents every body as application/json; ours are problem+json for >= 400."""
    document = copy.deepcopy(document)
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in "45" and "application/json" in content:
                    content["application/problem+json"] = content.pop("application/json")
    return document


# Anonymous by design: the load balancer's and the orchestrator's probes.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
_AUTH_RESPONSES = {
    "401": "no valid bearer token (missing, expired, wrong issuer, audience or signature)",
    "403": "the token's scope or customer does not allow this",
}


def _with_security(document: dict[str, Any]) -> dict[str, Any]:
    """Bearer JWTs everywhere but the probes, with the 401 and 403 they can answer."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An OAuth 2.0 / OIDC access token from the configured issuer. The "
        "admin scope manages the catalog and acts for any customer; a token whose "
        "customer claim names a customer acts for that customer only.",
    }
    document["security"] = [{"bearerAuth": []}]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path in PUBLIC_PATHS:
                operation["security"] = []
                continue
            responses = operation.setdefault("responses", {})
            for status, description in _AUTH_RESPONSES.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/problem+json": {"schema": problem_ref}},
                    },
                )
    return document
