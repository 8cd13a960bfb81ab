"""Lambda entry points: `handler.stock_events_handler` (SQS) and `handler.report_handler`.

What only Lambda needs lives here: the module-scope logger, tracer and metrics, the
Database (engines, pool, cached credentials) built on the first invocation that needs
it, the SnapStart runtime hooks, and the translation of events and results. The rest
sits beside this file, at the zip's root too (docs/lambda.md lists the modules and
tells the behaviour).

A cold start that never reaches the database never connects, and warm invocations
reuse one pooled connection. Metrics: one CloudWatch embedded-metric document on
stdout per invocation (docs/lambda.md, "Metrics").
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

import xray
from dataaccess import Database, Settings, reports
from dataaccess.credentials import CredentialProvider, provider_for
from dataaccess.metrics import DEFAULT_NAMESPACE, Collector, register
from dataaccess.resilience import connect_deadline
from failures import describe
from report_io import ReportJson, ReportResult, report_request
from stock_batch import BatchOutcome, BatchResponse, apply_batch, parse_batch
from stock_messages import sqs_records

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from dataaccess.doctor import DoctorJson

__all__ = [
    "after_restore",
    "before_snapshot",
    "get_database",
    "report_handler",
    "set_database",
    "stock_events_handler",
    "writer_credentials",
]

# Service name from POWERTOOLS_SERVICE_NAME, level from LOG_LEVEL. ASCII-escaped JSON
# (Powertools writes raw UTF-8): a hostile event id with a lone surrogate ("\ud800")
# would otherwise fail to encode, and its failure line would be lost.
logger = Logger(json_serializer=functools.partial(json.dumps, separators=(",", ":"), default=str))
# None when tracing is off: POWERTOOLS_TRACE_DISABLED (the template sets it unless
# Tracing=Active: Lambda tells a function nothing of its tracing mode), or outside
# Lambda. Asked of Tracer's own rule without building one, because Tracer() imports
# the X-Ray SDK even when disabled (docs/infrastructure.md has the cold-start cost).
tracer: Tracer | None = None if Tracer._is_tracer_disabled() else Tracer(auto_patch=False)
span = functools.partial(xray.traced, tracer)
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

# Seconds of an invocation's time that connect retries never use: enough to
# answer with batchItemFailures (or an error) before the function times out.
TIME_RESERVE_SECONDS = 3.0


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
                xray.trace_engine(tracer, engine)
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


# -- SnapStart -------------------------------------------------------------------------


def before_snapshot() -> None:
    """Before Lambda snapshots this initialised environment: close the pooled connections
    and forget every credential (a snapshot is restored into many environments, maybe
    days later), and drop connection figures that belong to no invocation."""
    if _database is not None:
        _database.reset()
    connection_figures.take()


def after_restore() -> None:
    """In each environment restored from the snapshot: reseed `random` (the connect
    backoff's jitter: restored copies must not retry in lockstep), and reset the
    Database again, in case anything connected after `before_snapshot`."""
    random.seed()  # from os.urandom, which is unique per restored environment
    before_snapshot()


with contextlib.suppress(ImportError):  # the library is in Lambda's Python runtimes only
    from snapshot_restore_py import register_after_restore, register_before_snapshot

    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)


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
            for name, unit, values in connection_figures.take().as_metrics():
                for value in values:
                    metrics.add_metric(name, unit, value)
            metrics.flush_metrics()
        except Exception as exc:  # metrics never fail an invocation
            logger.warning("metrics not published", extra={"error": describe(exc)})
        finally:
            # flush_metrics keeps the buffer when POWERTOOLS_METRICS_DISABLED is set.
            metrics.clear_metrics()


def _add_batch_metrics(outcome: BatchOutcome) -> None:
    """Every record counts once: applied, duplicate, rejected or failed (may pass later)."""
    metrics.add_metric("EventsApplied", MetricUnit.Count, outcome.applied)
    metrics.add_metric("EventsDuplicate", MetricUnit.Count, outcome.duplicates)
    metrics.add_metric("EventsRejected", MetricUnit.Count, outcome.rejected)
    metrics.add_metric("EventsFailed", MetricUnit.Count, outcome.retryable)


def _connect_time(context: LambdaContext) -> float:
    """Seconds connects may keep retrying in this invocation (its time, less the reserve)."""
    return context.get_remaining_time_in_millis() / 1000 - TIME_RESERVE_SECONDS


# -- stock events (SQS) --------------------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
@_published("BatchDuration")
def stock_events_handler(event: dict[str, Any], context: LambdaContext) -> BatchResponse:
    """Apply the batch's stock events, each exactly once; report the records that failed.

    Returns ``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}``, and raises
    Powertools' `BatchProcessingError` when every record failed (an outage, typically),
    so that the invocation counts as an error and SQS redelivers the whole batch.
    """
    database = get_database()  # a configuration error fails the invocation, not each record
    records = sqs_records(event)
    outcome = BatchOutcome(logger)
    parsed = parse_batch(records, outcome)
    if parsed:
        with connect_deadline(_connect_time(context)):
            apply_batch(database, parsed, outcome, span=span)

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
    if outcome.all_failed(records):
        # The rare path: importing Powertools' batch package costs ~15 ms (docs/lambda.md).
        from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

        raise BatchProcessingError(
            msg=f"All {len(records)} records failed processing.",
            child_exceptions=[
                (type(error), error, error.__traceback__) for error in outcome.failures.values()
            ],
        )
    return outcome.response(records)


# -- report (schedule or direct invoke) ---------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
def report_handler(event: object, context: LambdaContext) -> ReportJson | DoctorJson:
    """Low-stock products and order totals for a window, read through the reader endpoint.

    The window and limits come from the event (`report_io.report_request`: a schedule
    or a direct invoke); the answer is `ReportResult.to_json()`. `{"doctor": true}`
    runs `python -m dataaccess doctor` here instead, with this function's settings and
    login, and returns its report (docs/infrastructure.md).
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
        span("## report"),
        get_database().unit_of_work(read_only=True) as uow,
    ):
        result = ReportResult(
            threshold=request.threshold,
            low_stock=reports.low_stock(uow, threshold=request.threshold, limit=request.limit),
            totals=reports.order_totals(uow, since=request.since, until=request.until),
        )
    built = {"low_stock": len(result.low_stock), "placed": result.totals.placed.count}
    logger.info("report built", extra=built)
    return result.to_json()
