"""Every error as application/problem+json (RFC 9457), mapped from exception types."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from dataaccess import errors
from dataaccess.resilience import is_unavailable

from .auth import AuthUnavailableError, ForbiddenError, UnauthenticatedError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5

# (error type, status, problem type slug, title); the first match wins, so
# subclasses come before their bases.
_DOMAIN: tuple[tuple[type[errors.DomainError], int, str, str], ...] = (
    (errors.InsufficientStockError, 409, "insufficient-stock", "Insufficient stock"),
    (
        errors.IdempotencyKeyReusedError,
        422,
        "idempotency-key-reused",
        "Idempotency key reused with a different request",
    ),
    (errors.AlreadyExistsError, 409, "already-exists", "Already exists"),
    (errors.ConflictError, 409, "conflict", "Conflict"),
    (errors.NotFoundError, 404, "not-found", "Not found"),
    (errors.InvalidRequestError, 422, "invalid-request", "Invalid request"),
)


def problem_type(slug: str) -> str:
    return f"urn:problem:inventory:{slug}"


class RequestValidationError(Exception):
    """The request's query, headers or JSON body does not match its declared model."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__("request validation failed")
        self.error = error


def problem(status: int, type_: str, title: str, detail: str, **extra: Any) -> Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


def raise_validation_problem(
    req: Any, resp: Any, error: Exception | None, instance: Any, adapter: Any
) -> None:
    """SpecTree `before` hook: hand its validation errors to our error handler."""
    if isinstance(error, ValidationError):
        raise RequestValidationError(error)


def _validation(exc: RequestValidationError) -> Response:
    # Without the input values: they may hold anything, including secrets.
    details = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.error.errors(include_url=False, include_input=False, include_context=False)
    ]
    return problem(
        422,
        problem_type("validation-error"),
        "Request validation failed",
        "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in details),
        errors=details,
    )


def _http(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = problem(status, "about:blank", exc.name, exc.description or exc.name)
    # Keep what the exception says about the response (e.g. Allow on a 405).
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _domain(exc: errors.DomainError) -> Response:
    for error_type, status, slug, title in _DOMAIN:
        if isinstance(exc, error_type):
            extra = {"sku": exc.sku} if isinstance(exc, errors.InsufficientStockError) else {}
            return problem(status, problem_type(slug), title, str(exc), **extra)
    return _other_error(exc)


def _unavailable(exc: Exception) -> Response:
    # The type only: a DBAPI message can carry SQL and its parameter values.
    log.warning("database unavailable: %s", type(exc).__name__)
    response = problem(
        503,
        problem_type("database-unavailable"),
        "Service unavailable",
        "the database is not reachable right now; retry later",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _data_error(exc: sa_exc.DataError) -> Response:
    # SQLSTATE class 22: the input was out of range for a column. The models
    # should have refused it first; this keeps a gap there from becoming a 500.
    log.warning("data error from the database: %s", type(exc.orig).__name__)
    return problem(
        422, problem_type("invalid-request"), "Invalid request", "a value is out of range"
    )


def _other_error(exc: Exception) -> Response:
    """Everything without a handler of its own: unavailable (503), bad data (422), else 500."""
    # The database (or its credential source) is unreachable, timed out, or no
    # longer a writer (a failover): dataaccess.resilience decides, by type and
    # SQLSTATE. A 503 with Retry-After tells the client to try again.
    if is_unavailable(exc):
        return _unavailable(exc)
    if isinstance(exc, sa_exc.DataError):
        return _data_error(exc)
    if isinstance(exc, sa_exc.StatementError):
        # Not log.exception: the message and traceback locals hold SQL parameters.
        log.error("unexpected database error: %s", type(exc.orig or exc).__name__)
    else:
        log.exception("unhandled error")
    return problem(
        500, "about:blank", "Internal Server Error", "an unexpected error occurred; it is logged"
    )


def _unauthenticated(exc: UnauthenticatedError) -> Response:
    response = problem(401, problem_type("unauthenticated"), "Unauthorized", str(exc))
    # RFC 6750: an error code only when a token was presented.
    presented = request.headers.get("Authorization") is not None
    challenge = 'Bearer realm="inventory"' + (', error="invalid_token"' if presented else "")
    response.headers["WWW-Authenticate"] = challenge
    return response


def _forbidden(exc: ForbiddenError) -> Response:
    response = problem(403, problem_type("forbidden"), "Forbidden", str(exc))
    response.headers["WWW-Authenticate"] = 'Bearer realm="inventory", error="insufficient_scope"'
    return response


def _auth_unavailable(exc: AuthUnavailableError) -> Response:
    log.warning("token keys unavailable: %s", exc)
    response = problem(503, problem_type("auth-unavailable"), "Service unavailable", str(exc))
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def register(app: Flask) -> None:
    """Install the handlers: every error response, ours or Flask's, is problem+json."""
    app.register_error_handler(UnauthenticatedError, _unauthenticated)
    app.register_error_handler(ForbiddenError, _forbidden)
    app.register_error_handler(AuthUnavailableError, _auth_unavailable)
    app.register_error_handler(RequestValidationError, _validation)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(errors.DomainError, _domain)
    app.register_error_handler(Exception, _other_error)
