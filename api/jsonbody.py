"""Request bodies: JSON or nothing, parsed once, malformed -> 400 before any view runs."""

from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

MAX_BODY_BYTES = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def parse_json_body() -> None:
    """Parse a body up front, so SpecTree (which reads it leniently) only ever sees valid JSON."""
    if request.method not in _BODY_METHODS:
        return
    # Reading the data enforces MAX_CONTENT_LENGTH (413), even without Content-Length.
    if not request.get_data(cache=True):
        return
    if not request.is_json:
        raise UnsupportedMediaType("send the body as application/json")
    try:
        request.get_json()
    except BadRequest:
        raise BadRequest("the body is not valid JSON") from None
    except RecursionError:
        # json.loads gives up on very deep nesting with RecursionError, not ValueError.
        raise BadRequest("the JSON body is nested too deeply") from None


def init_app(app: Flask) -> None:
    app.config.setdefault("MAX_CONTENT_LENGTH", MAX_BODY_BYTES)
    app.before_request(parse_json_body)
