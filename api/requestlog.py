"""One structured JSON line per request, and the request id that ties lines together."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import sys
import time
from typing import Any

from flask import Flask, Response, g, request

log = logging.getLogger("api.request")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:=/+-]{1,128}$")
_TRACE_ROOT = re.compile(r"(?:^|;)\s*Root=([A-Za-z0-9-]{1,64})")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object; fields passed as `extra={"fields": {...}}` are merged."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send the `api` loggers to stderr as JSON lines (once per process)."""
    logger = logging.getLogger("api")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)


def request_id() -> str:
    """X-Request-Id when sane, else the ALB's X-Amzn-Trace-Id root, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    if _REQUEST_ID.match(given):
        return given
    trace = _TRACE_ROOT.search(request.headers.get("X-Amzn-Trace-Id", ""))
    if trace:
        return trace.group(1)
    # 128 random bits as 32 hex digits, like a uuid4's, without a getrandom() system call
    # per request: an id only has to be unique, not secret (random reseeds after fork).
    return f"{random.getrandbits(128):032x}"


def _start() -> None:
    g.request_started = time.perf_counter()
    g.request_id = request_id()


def _finish(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "")
    if not log.isEnabledFor(logging.INFO):
        return response
    started = g.get("request_started", time.perf_counter())
    # The path only: query strings and bodies are not logged.
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "fields": {
                "request_id": g.get("request_id"),
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        },
    )
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
