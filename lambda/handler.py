"""Lambda entry points: `handler.stock_events_handler` (SQS) and `handler.report_handler`.

The logger and the batch processor live at module scope; the Database (engines,
pool, cached credentials) is module-scope state built on the first invocation
that needs it, so a cold start that never reaches the database never connects
and warm invocations reuse one pooled, pre-pinged connection.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy.exc import DBAPIError

from dataaccess import Database, Settings, reports, services
from dataaccess.credentials import CredentialProvider, provider_for
from dataaccess.errors import DomainError
from dataaccess.services import StockEventIn

logger = Logger()  # service name from POWERTOOLS_SERVICE_NAME, level from LOG_LEVEL
processor = BatchProcessor(event_type=EventType.SQS)

_database: Database | None = None
_writer_credentials: CredentialProvider | None = None
# Set when a record of the current batch could not reach the database at all:
# the rest of the batch then fails fast instead of waiting out a connect timeout each.
_unreachable: BaseException | None = None

MAX_EVENT_ID = 200
MAX_SKU = 64
MAX_REASON = 500


class MalformedEventError(ValueError):
    """A record body that is not a valid stock event; the message names the field, not its value."""


class DatabaseUnavailableError(RuntimeError):
    """An earlier record of this batch could not reach the database."""


class ReportRequestError(ValueError):
    """A report invocation with an invalid parameter; the message names it."""


# -- the module-scope Database ----------------------------------------------------


def get_database() -> Database:
    """The process's Database, built from DB_* on first use (a bad variable fails here, clearly)."""
    global _database, _writer_credentials
    if _database is None:
        settings = Settings.from_env()
        credentials = provider_for(settings, settings.iam_host or settings.host)
        _database = Database.from_settings(settings, credentials=credentials)
        _writer_credentials = credentials
        logger.info(
            "database configured",
            extra={"auth": settings.auth, "reader": settings.reader_host is not None},
        )
    return _database


def set_database(database: Database | None) -> Database | None:
    """Replace the module's Database (tests, local runs); return the previous one, undisposed."""
    global _database, _writer_credentials
    previous, _database, _writer_credentials = _database, database, None
    return previous


def writer_credentials() -> CredentialProvider | None:
    """The writer's credential provider when get_database built it (its token cache)."""
    return _writer_credentials


# -- stock events (SQS) --------------------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
def stock_events_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Apply each SQS record's stock event once; report the records that failed."""
    global _unreachable
    _unreachable = None
    get_database()  # a configuration error fails the invocation, not each record
    return dict(
        process_partial_response(
            event=event, record_handler=apply_record, processor=processor, context=context
        )
    )


def apply_record(record: SQSRecord) -> bool:
    """Apply one record; True when applied, False for a duplicate. Raise to fail the record."""
    global _unreachable
    fields: dict[str, Any] = {"message_id": record.message_id}
    try:
        stock_event = parse_stock_event(record.body)
        fields["event_id"] = stock_event.event_id
        if _unreachable is not None:
            raise DatabaseUnavailableError("database unreachable earlier in this batch")
        with get_database().unit_of_work() as uow:
            applied = services.apply_stock_event(uow, stock_event)
    except (MalformedEventError, DomainError, DatabaseUnavailableError) as exc:
        logger.warning("stock event rejected", extra={**fields, "error": _describe(exc)})
        raise
    except DBAPIError as exc:
        if _is_connection_failure(exc):
            _unreachable = exc
        logger.exception("stock event failed", extra={**fields, "error": type(exc).__name__})
        raise
    except Exception as exc:
        logger.exception("stock event failed", extra={**fields, "error": type(exc).__name__})
        raise
    logger.info("stock event", extra={**fields, "outcome": "applied" if applied else "duplicate"})
    return applied


def parse_stock_event(body: str) -> StockEventIn:
    """Validate a record body into a StockEventIn; raise MalformedEventError naming the field."""
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedEventError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedEventError("body must be a JSON object")
    delta = data.get("delta")
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise MalformedEventError("delta must be an integer")
    return StockEventIn(
        event_id=_text(data, "event_id", MAX_EVENT_ID),
        sku=_text(data, "sku", MAX_SKU),
        delta=delta,
        reason=_text(data, "reason", MAX_REASON),
        occurred_at=_timestamp(data.get("occurred_at"), "occurred_at", MalformedEventError),
    )


def _text(data: dict[str, Any], name: str, max_len: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise MalformedEventError(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise MalformedEventError(f"{name} must be at most {max_len} characters")
    return value


def _timestamp(value: Any, name: str, error: type[ValueError]) -> dt.datetime:
    if not isinstance(value, str):
        raise error(f"{name} must be an ISO 8601 timestamp with a timezone")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise error(f"{name} must be an ISO 8601 timestamp with a timezone") from None
    if parsed.tzinfo is None:
        raise error(f"{name} must carry a timezone (e.g. Z or +00:00)")
    return parsed


def _is_connection_failure(exc: DBAPIError) -> bool:
    # The server answers every statement-level error with a SQLSTATE (a timeout,
    # a serialization failure...); an error without one never reached a session.
    return exc.connection_invalidated or getattr(exc.orig, "pgcode", None) is None


def _describe(exc: BaseException) -> str:
    # Our own messages name fields, skus and event ids, never credentials.
    return f"{type(exc).__name__}: {exc}"


# -- report (schedule or direct invoke) ---------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
def report_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Low-stock products and order totals for a window, read through the reader endpoint.

    A scheduled (EventBridge) event reports the `REPORT_WINDOW_HOURS` ending at its
    time; a direct invoke may pass `since`, `until`, `hours`, `threshold`, `limit`.
    """
    request = report_request(event)
    with get_database().unit_of_work(read_only=True) as uow:
        low = reports.low_stock(uow, threshold=request["threshold"], limit=request["limit"])
        totals = reports.order_totals(uow, since=request["since"], until=request["until"])
    logger.info("report built", extra={"low_stock": len(low), "placed": totals.placed.count})
    return {
        "window": {"since": totals.since.isoformat(), "until": totals.until.isoformat()},
        "orders": {
            "placed": {"count": totals.placed.count, "total_cents": totals.placed.total_cents},
            "cancelled": {
                "count": totals.cancelled.count,
                "total_cents": totals.cancelled.total_cents,
            },
        },
        "low_stock": {
            "threshold": request["threshold"],
            "items": [{"sku": i.sku, "name": i.name, "stock": i.stock} for i in low],
        },
    }


def report_request(event: dict[str, Any]) -> dict[str, Any]:
    """The report's window and limits from a schedule event or a direct invoke's payload."""
    params: dict[str, Any] = dict(event) if isinstance(event, dict) else {}
    if "detail-type" in params:
        # A schedule carries its time; a rule's constant input would be a plain payload.
        params = {"until": EventBridgeEvent(params).time}
    hours = _positive_int(params, "hours", _env_int("REPORT_WINDOW_HOURS", 24))
    until = (
        _timestamp(params["until"], "until", ReportRequestError)
        if params.get("until") is not None
        else dt.datetime.now(dt.UTC)
    )
    since = (
        _timestamp(params["since"], "since", ReportRequestError)
        if params.get("since") is not None
        else until - dt.timedelta(hours=hours)
    )
    if since >= until:
        raise ReportRequestError("since must be before until")
    return {
        "since": since,
        "until": until,
        "threshold": _positive_int(params, "threshold", _env_int("REPORT_LOW_STOCK_THRESHOLD", 10)),
        "limit": min(_positive_int(params, "limit", 100), reports.MAX_LOW_STOCK_LIMIT),
    }


def _positive_int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ReportRequestError(f"{name} must be a positive integer")
    return value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ReportRequestError(f"{name} must be a positive integer; got {raw!r}")
    return int(raw)
