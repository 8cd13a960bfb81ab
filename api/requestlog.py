"""One structured JSON line per request (a short text line on a terminal), and the
request id that ties lines together.

The lines are CloudWatch embedded metric format (EMF) documents too: each request
line carries `Requests` and `Latency` by status class, and a line per new database
connection carries the connection figures of `dataaccess.metrics`. CloudWatch Logs
turns them into metrics as the awslogs driver delivers them (docs/api.md, "Metrics").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import sys
import time
from typing import Any

from flask import Flask, Response, current_app, g, request

from dataaccess.metrics import DEFAULT_NAMESPACE, Collector, register

log = logging.getLogger("api.request")
db_log = logging.getLogger("api.database")

# The `service` dimension of the API's metrics (the functions' is their service name).
SERVICE = "api"

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
        entry.update(getattr(record, "emf", {}))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """A log record as one short line for a person at a terminal: the time, the level,
    the message, then its fields as key=value (the metrics are left to the JSON form)."""

    # Already in a request line's message ("POST /orders 201"), or shown as "12.3 ms".
    _SHOWN = frozenset({"method", "path", "status", "duration_ms"})

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [when, f"{record.levelname:<7}", record.getMessage()]
        if "duration_ms" in fields:
            parts.append(f"{fields['duration_ms']} ms")
        parts += [f"{k}={v}" for k, v in fields.items() if k not in self._SHOWN]
        line = " ".join(str(part) for part in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LOG_FORMATS = ("auto", "json", "text")


def log_formatter(log_format: str, stream: Any) -> logging.Formatter:
    """LOG_FORMAT: `json` (CloudWatch, log pipelines), `text` (a terminal), or `auto`
    (the default): text when the stream is a terminal, as under `make run`, else JSON,
    as under ECS, whose awslogs driver is no terminal."""
    chosen = log_format.strip().lower() or "auto"
    if chosen not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}; got {log_format!r}")
    if chosen == "auto":
        chosen = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    return TextFormatter() if chosen == "text" else JsonFormatter()


def configure_logging(level: str = "INFO", log_format: str = "auto") -> None:
    """Send the `api` loggers to stderr, one line per record (once per process)."""
    logger = logging.getLogger("api")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_api_lines", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(log_formatter(log_format, sys.stderr))
        handler._api_lines = True  # type: ignore[attr-defined]
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
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
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
                "duration_ms": duration_ms,
            },
            "emf": {
                "_aws": {
                    "Timestamp": int(time.time() * 1000),
                    "CloudWatchMetrics": current_app.extensions["request_metrics"],
                },
                "service": SERVICE,
                "StatusClass": f"{response.status_code // 100}xx",
                "Requests": 1,
                "Latency": duration_ms,
            },
        },
    )
    return response


def metrics_namespace() -> str:
    """The CloudWatch namespace: METRICS_NAMESPACE, else the package's default."""
    return os.environ.get("METRICS_NAMESPACE", "").strip() or DEFAULT_NAMESPACE


def _directive(namespace: str, dimensions: list[str], metrics: list[tuple[str, str]]) -> Any:
    """EMF's CloudWatchMetrics member: which root members are metrics, and of what unit."""
    return [
        {
            "Namespace": namespace,
            "Dimensions": [dimensions],
            "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics],
        }
    ]


def _log_connection_figures(collector: Collector) -> None:
    """One EMF line per connect (the pool opens few): what it and any token or secret cost.

    Called on the connecting thread; figures two threads recorded at once go in one line.
    """
    figures = collector.take()
    if figures.empty or not db_log.isEnabledFor(logging.INFO):
        return
    series = figures.as_metrics()
    directive = _directive(metrics_namespace(), ["service"], [(n, u) for n, u, _ in series])
    db_log.info(
        "database connection",
        extra={
            "fields": {"connects": figures.connects, "connect_failures": figures.connect_failures},
            "emf": {
                "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": directive},
                "service": SERVICE,
                **{name: values for name, _, values in series},
            },
        },
    )


# One per process (every app in it shares the engines' process-wide reports).
_connections = Collector(on_connect=_log_connection_figures)


def init_app(app: Flask) -> None:
    # A request line's metric directive is the same for every request: built once.
    app.extensions["request_metrics"] = _directive(
        metrics_namespace(),
        ["service", "StatusClass"],
        [("Requests", "Count"), ("Latency", "Milliseconds")],
    )
    register(_connections)
    app.before_request(_start)
    app.after_request(_finish)
