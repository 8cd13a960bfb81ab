"""Request bodies: JSON or nothing, parsed once, malformed -> 400 before any view runs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

MAX_BODY_BYTES = 64 * 1024
# The methods whose bodies are read (and so can be answered 400, 413 or 415).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that a number with a fraction or exponent is read as a Decimal.

    Exact, where a float would round: the models take an integral one (50.0, 5e1)
    as the integer it is (api.schemas.JSON_INTEGER) and refuse 1.5, and a
    9007199254740993.0 is not read as ...992.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_float", Decimal)
        return super().loads(s, **kwargs)


def parse_json_body() -> None:
    """Parse a body up front, so SpecTree (which reads it leniently) only ever sees valid JSON."""
    if request.method not in BODY_METHODS:
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
