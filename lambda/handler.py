"""Lambda entry points: `handler.stock_events_handler` (SQS) and `handler.report_handler`.

The logger lives at module scope; the Database (engines, pool, cached
credentials) is module-scope state built on the first invocation that needs it,
so a cold start that never reaches the database never connects and warm
invocations reuse one pooled, pre-pinged connection.

An unreachable database (a restart, a failover, a cluster resuming from 0 ACU)
is waited for within the invocation's remaining time, less TIME_RESERVE_SECONDS
kept back to report the batch's failures before Lambda's timeout strikes.

A batch of stock events is applied set-based, in one unit of work
(`dataaccess.ingest.ingest_stock_events`: a handful of statements and one commit
for the whole batch). When that fails for any reason but an unreachable
database (a record the validator let through, a deadlock, a statement timeout),
each record gets its own unit of work, so only the records that fail again fail.

X-Ray (Powertools Tracer), when tracing is on: a subsegment per unit of work, one
per statement (its SQL, never its parameters) and one per new connection.

Metrics (Powertools, CloudWatch embedded metric format): one document on stdout per
invocation with the batch's outcome or the report's duration, and the connection
figures `dataaccess.metrics` collected meanwhile (docs/lambda.md, "Metrics").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import time
import traceback
from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, SQSEvent, SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from dataaccess import Database, Settings, reports, services
from dataaccess.credentials import CredentialProvider, provider_for
from dataaccess.engine import is_auth_failure
from dataaccess.errors import DomainError
from dataaccess.ingest import IngestResult, ingest_stock_events
from dataaccess.metrics import DEFAULT_NAMESPACE, Collector, register
from dataaccess.resilience import connect_deadline, is_unavailable
from dataaccess.services import StockEventIn

# Service name from POWERTOOLS_SERVICE_NAME, level from LOG_LEVEL. ASCII-escaped JSON
# (Powertools writes raw UTF-8): a hostile event id with a lone surrogate ("\ud800")
# would otherwise fail to encode, and its failure line would be lost.
logger = Logger(json_serializer=functools.partial(json.dumps, separators=(",", ":"), default=str))
# None when tracing is off: POWERTOOLS_TRACE_DISABLED (the template sets it unless
# Tracing=Active: Lambda tells a function nothing of its tracing mode), or outside
# Lambda. Asked of Tracer's own rule without building one, because Tracer() imports
# the X-Ray SDK even when disabled (docs/infrastructure.md has the cold-start cost).
tracer: Tracer | None = None if Tracer._is_tracer_disabled() else Tracer(auto_patch=False)
# Namespace from POWERTOOLS_METRICS_NAMESPACE, the `service` dimension the logger's.
# EphemeralMetrics, not Metrics: its buffer is this module's own, not shared by every
# instance in the process. Powertools Metrics is imported with Logger anyway: no cost.
metrics = EphemeralMetrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE,
    service=logger.service,
)
# What the engines and credential providers did (connects, tokens, secret reads) since
# the last invocation's metrics were published.
connection_figures = register(Collector())

_database: Database | None = None
_writer_credentials: CredentialProvider | None = None

MAX_EVENT_ID = 200
MAX_SKU = 64
MAX_REASON = 500
MAX_REPORT_HOURS = 24 * 366
# Seconds of an invocation's time that connect retries never use: enough to
# answer with batchItemFailures (or an error) before the function times out.
TIME_RESERVE_SECONDS = 3.0


class MalformedEventError(ValueError):
    """A record body that is not a valid stock event; the message names the field, not its value."""


class DatabaseUnavailableError(RuntimeError):
    """The database could not be reached (or refused the login) while applying this batch."""


class StockEventFailedError(RuntimeError):
    """A record failed with a database or unexpected error (not a domain rule); the message
    names only the error class and SQLSTATE, never the statement's parameters."""


class ReportRequestError(ValueError):
    """A report invocation with an invalid parameter; the message names it."""


# -- the module-scope Database ----------------------------------------------------


def get_database() -> Database:
    """The process's Database, built from DB_* on first use (a bad variable fails here, clearly)."""
    global _database, _writer_credentials
    if _database is None:
        settings = Settings.from_env()
        credentials = provider_for(settings, settings.host)
        _database = Database.from_settings(settings, credentials=credentials)
        _writer_credentials = credentials
        if tracer is not None:
            for engine in {_database.writer, _database.reader or _database.writer}:
                _trace_engine(engine)
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


# -- X-Ray -----------------------------------------------------------------------------


@contextlib.contextmanager
def _traced(name: str, **annotations: int | str) -> Iterator[None]:
    """A subsegment around a unit of work when tracing is on. A failure is marked with
    `_describe(error)`, never the error's own text, which may quote values."""
    recorder = tracer.provider if tracer is not None else None
    subsegment = recorder.begin_subsegment(name) if recorder is not None else None
    if subsegment is None:  # tracing off, or no trace to join
        yield
        return
    for key, value in annotations.items():
        subsegment.put_annotation(key, value)
    try:
        yield
    except Exception as exc:
        _mark_failed(subsegment, exc)
        raise
    finally:
        recorder.end_subsegment()


def _mark_failed(subsegment: Any, exc: BaseException) -> None:
    if isinstance(exc, DomainError):
        subsegment.add_error_flag()  # a rejected event: the caller's error, not ours
    else:
        subsegment.add_fault_flag()
    subsegment.put_annotation("error", _describe(exc))


def _trace_engine(engine: Engine) -> None:
    """A remote subsegment for each statement on `engine` (the SQL as sent to the driver,
    with placeholders: psycopg2 binds the values later) and for each new connection
    (IAM token, TLS and login: most of a cold invocation's database time)."""
    assert tracer is not None
    recorder = tracer.provider
    url = engine.url
    name = f"{url.database}@{url.host}"
    sql = {
        "url": f"postgresql://{url.host}:{url.port}/{url.database}",
        "database_type": "PostgreSQL",
    }

    def connected(dbapi_connection: Any, record: Any) -> None:
        subsegment = recorder.begin_subsegment(f"connect {name}", "remote")
        if subsegment is not None:
            subsegment.start_time = record.last_connect_time  # before the token was minted
            recorder.end_subsegment()

    # The statement's subsegment rides on its execution context, from before the
    # cursor executes to after it returns or fails.
    def executing(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        subsegment = recorder.begin_subsegment(name, "remote")
        if subsegment is not None:
            subsegment.set_sql({**sql, "sanitized_query": statement})
            context.__dict__["xray_subsegment"] = subsegment

    def executed(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        if context.__dict__.pop("xray_subsegment", None) is not None:
            recorder.end_subsegment()

    def failed(error: sa_exc.ExceptionContext) -> None:
        context = error.execution_context
        subsegment = context.__dict__.pop("xray_subsegment", None) if context else None
        if subsegment is not None:
            _mark_failed(subsegment, error.sqlalchemy_exception or error.original_exception)
            recorder.end_subsegment()

    sa_event.listen(engine, "connect", connected)
    sa_event.listen(engine, "before_cursor_execute", executing)
    sa_event.listen(engine, "after_cursor_execute", executed)
    sa_event.listen(engine, "handle_error", failed)


# -- metrics -----------------------------------------------------------------------------


@contextlib.contextmanager
def _published(duration_metric: str) -> Iterator[None]:
    """Publish this invocation's metrics however it ends: its duration as `duration_metric`,
    what it added, and the connection figures. A decorator too (a ContextDecorator)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        try:
            metrics.add_metric(duration_metric, MetricUnit.Milliseconds, elapsed_ms)
            _add_connection_figures()
            metrics.flush_metrics()
        except Exception as exc:  # metrics never fail an invocation
            logger.warning("metrics not published", extra={"error": _describe(exc)})
        finally:
            # flush_metrics keeps the buffer when POWERTOOLS_METRICS_DISABLED is set.
            metrics.clear_metrics()


def _add_connection_figures() -> None:
    """What the engines and credential providers did since the last invocation's metrics."""
    for name, unit, values in connection_figures.take().as_metrics():
        for value in values:
            metrics.add_metric(name, unit, value)


def _add_batch_metrics(outcome: BatchOutcome) -> None:
    """Every record in exactly one of: applied, duplicate, rejected (malformed, or refused by
    a domain rule: redelivery cannot help), failed (the database, or a poison record)."""
    rejected = sum(
        isinstance(error, (MalformedEventError, DomainError)) for error in outcome.failures.values()
    )
    metrics.add_metric("EventsApplied", MetricUnit.Count, outcome.applied)
    metrics.add_metric("EventsDuplicate", MetricUnit.Count, outcome.duplicates)
    metrics.add_metric("EventsRejected", MetricUnit.Count, rejected)
    metrics.add_metric("EventsFailed", MetricUnit.Count, len(outcome.failures) - rejected)


# -- stock events (SQS) --------------------------------------------------------------


class BatchOutcome:
    """What happened to each record of one invocation, by SQS message id.

    (A plain class, not a dataclass: the module is also loaded from its file path
    without a sys.modules entry, by the benchmarks, which dataclasses do not support.)
    """

    def __init__(self) -> None:
        self.path = "none"  # "batch", "per-record" (fallback) or "unavailable" (outage)
        self.applied = 0  # records whose event this invocation committed
        self.duplicates = 0  # records acknowledged without effect (ledger, or earlier in batch)
        self.failures: dict[str, BaseException] = {}  # message id -> an error safe to log

    def fail(
        self, message_id: str, event_id: str | None, error: BaseException, **extra: Any
    ) -> None:
        self.failures[message_id] = error
        logger.warning(
            "stock event failed",
            extra={
                "message_id": message_id,
                "event_id": event_id,
                "error": _describe(error),
                **extra,
            },
        )


@logger.inject_lambda_context(clear_state=True)
@_published("BatchDuration")
def stock_events_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Apply the batch's stock events, each exactly once; report the records that failed.

    Returns ``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}``, and raises
    `BatchProcessingError` when every record failed (an outage, typically), so that the
    invocation counts as an error and SQS redelivers the whole batch.
    """
    database = get_database()  # a configuration error fails the invocation, not each record
    records = list(SQSEvent(event).records)
    outcome = BatchOutcome()
    parsed: list[tuple[SQSRecord, StockEventIn]] = []
    for record in records:
        try:
            parsed.append((record, parse_stock_event(record.body)))
        except MalformedEventError as exc:
            outcome.fail(record.message_id, None, exc)
    if parsed:
        with connect_deadline(_connect_time(context)):
            apply_batch(database, parsed, outcome)

    _add_batch_metrics(outcome)
    logger.info(
        "stock events batch",
        extra={
            "records": len(records),
            "path": outcome.path,
            "applied": outcome.applied,
            "duplicates": outcome.duplicates,
            "failed": len(outcome.failures),
        },
    )
    if records and all(r.message_id in outcome.failures for r in records):
        raise BatchProcessingError(
            msg=f"All {len(records)} records failed processing.",
            child_exceptions=[
                (type(error), error, error.__traceback__) for error in outcome.failures.values()
            ],
        )
    return {
        "batchItemFailures": [
            {"itemIdentifier": r.message_id} for r in records if r.message_id in outcome.failures
        ]
    }


def apply_batch(
    database: Database, parsed: list[tuple[SQSRecord, StockEventIn]], outcome: BatchOutcome
) -> None:
    """Apply the parsed records in one unit of work; on a poison record, one at a time.

    A pooled connection that turns out dead (dropped while the environment was
    frozen, a failover) is retried once on a fresh one; a database that cannot be
    reached fails every record; any other error means some record breaks the
    set-based statements, so each record gets its own unit of work.
    """
    events = [stock_event for _, stock_event in parsed]
    try:
        with _traced("## ingest_stock_events", records=len(events)):
            result = _ingest(database, events)
    except Exception as exc:
        if _cannot_reach_database(exc):
            outcome.path = "unavailable"
            # One line for the batch, not one per record: they all share this cause.
            logger.error(
                "database unreachable; failing the batch",
                extra={"records": len(parsed), "error": _describe(exc)},
            )
            cause = DatabaseUnavailableError(f"database unreachable: {_describe(exc)}")
            for record, _ in parsed:
                outcome.failures[record.message_id] = cause
            return
        logger.warning(
            "batch apply failed; applying one record at a time",
            extra={"records": len(parsed), "error": _describe(exc), "stack": _stack(exc)},
        )
        outcome.path = "per-record"
        _apply_each(database, parsed, outcome)
        return
    outcome.path = "batch"
    # A record is acknowledged only when its event id was applied (now or before) and no
    # record carrying that id was rejected: nothing is acknowledged that was not committed.
    rejected: dict[str, DomainError] = {}
    for rejection in result.rejected:
        rejected.setdefault(rejection.event_id, rejection.error)
    settled = {*result.applied, *result.duplicates}
    newly_applied = set(result.applied)
    for record, stock_event in parsed:
        event_id = stock_event.event_id
        error: BaseException | None = rejected.get(event_id)
        if error is None and event_id not in settled:
            error = StockEventFailedError(f"no outcome reported for event {event_id}")
        if error is not None:
            outcome.fail(record.message_id, event_id, error)
        elif event_id in newly_applied:
            newly_applied.discard(event_id)  # a later record with this id is a duplicate
            outcome.applied += 1
        else:
            outcome.duplicates += 1


def _ingest(database: Database, events: list[StockEventIn]) -> IngestResult:
    """One unit of work, one commit for the batch; once more if the pooled connection was dead."""
    try:
        with database.unit_of_work() as uow:
            return ingest_stock_events(uow, events, chunk_size=len(events))
    except sa_exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        # Dropped while the environment was frozen, or by a failover, after its last
        # use; SQLAlchemy has invalidated the pool. Whatever the dead transaction did
        # is undone or, if it committed, found in the ledger now as duplicates.
        logger.info("pooled connection was dead; retrying the batch on a fresh one")
    with database.unit_of_work() as uow:
        return ingest_stock_events(uow, events, chunk_size=len(events))


def _apply_each(
    database: Database, parsed: list[tuple[SQSRecord, StockEventIn]], outcome: BatchOutcome
) -> None:
    """The fallback: one unit of work per record, so only the poison record fails."""
    unreachable: DatabaseUnavailableError | None = None
    for record, stock_event in parsed:
        if unreachable is not None:
            # Fail fast instead of waiting out a connect timeout per record.
            outcome.fail(record.message_id, stock_event.event_id, unreachable)
            continue
        try:
            with _traced("## apply_stock_event"), database.unit_of_work() as uow:
                applied = services.apply_stock_event(uow, stock_event)
        except DomainError as exc:
            outcome.fail(record.message_id, stock_event.event_id, exc)
            continue
        except Exception as exc:
            if _cannot_reach_database(exc):
                unreachable = DatabaseUnavailableError(f"database unreachable: {_describe(exc)}")
                outcome.fail(record.message_id, stock_event.event_id, unreachable)
            else:
                error = StockEventFailedError(_describe(exc))
                outcome.fail(record.message_id, stock_event.event_id, error, stack=_stack(exc))
            continue
        if applied:
            outcome.applied += 1
        else:
            outcome.duplicates += 1


def parse_stock_event(body: str) -> StockEventIn:
    """Validate a record body into a StockEventIn; raise MalformedEventError naming the field."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        # Very deep nesting ("[" * 100000) makes json.loads give up with RecursionError.
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


def _connect_time(context: LambdaContext) -> float:
    """Seconds connects may keep retrying in this invocation (its time, less the reserve)."""
    return context.get_remaining_time_in_millis() / 1000 - TIME_RESERVE_SECONDS


def _cannot_reach_database(exc: BaseException) -> bool:
    """No usable session with the database: unreachable, lost, no longer a writer, or the
    login refused. A statement timeout is not: it is this batch's statements, so the
    per-record fallback finds the record that causes it."""
    if isinstance(exc, sa_exc.DBAPIError) and getattr(exc.orig, "pgcode", None) == "57014":
        return False
    return is_unavailable(exc) or (isinstance(exc, sa_exc.DBAPIError) and is_auth_failure(exc.orig))


def _describe(exc: BaseException) -> str:
    """An error for the logs: never a statement's parameters (event bodies) or a credential."""
    if isinstance(exc, (MalformedEventError, DomainError, DatabaseUnavailableError)):
        # Our own messages name fields, skus and event ids, never credentials or values.
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, StockEventFailedError):
        return str(exc)
    if isinstance(exc, sa_exc.DBAPIError):
        # str(exc) carries the SQL and its parameters. A server error's text may quote
        # a value; a connection error's text (host, port, user, reason) never does.
        pgcode = getattr(exc.orig, "pgcode", None)
        if pgcode is not None:
            return f"{type(exc.orig).__name__} (SQLSTATE {pgcode})"
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return f"{type(exc.orig).__name__}: {first_line}".rstrip(": ")
    return type(exc).__name__


def _stack(exc: BaseException) -> str:
    """Where an unexpected error was raised: frames only, not the message (it may hold values)."""
    return "".join(traceback.format_tb(exc.__traceback__)[-4:])


# -- report (schedule or direct invoke) ---------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
def report_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Low-stock products and order totals for a window, read through the reader endpoint.

    A scheduled (EventBridge) event reports the `REPORT_WINDOW_HOURS` ending at its
    time; a direct invoke may pass `since`, `until`, `hours`, `threshold`, `limit`.
    `{"doctor": true}` runs `python -m dataaccess doctor` here instead, with this
    function's settings and login, and returns its report (docs/infrastructure.md).
    """
    if isinstance(event, dict) and event.get("doctor") is True:
        from dataaccess.doctor import diagnose  # only for this rare invoke: no cold-start cost

        try:
            return diagnose().as_dict()
        finally:
            connection_figures.take()  # the diagnosis' own connects: not the report's figures
    request = report_request(event)
    with (
        _published("ReportDuration"),
        connect_deadline(_connect_time(context)),
        _traced("## report"),
        get_database().unit_of_work(read_only=True) as uow,
    ):
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
    if hours > MAX_REPORT_HOURS:
        raise ReportRequestError(f"hours must be at most {MAX_REPORT_HOURS} (a year)")
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
