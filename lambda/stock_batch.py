"""Apply one SQS batch of stock events and say what happened to each record.

The behaviour, record by record and error by error, is docs/lambda.md's "Stock
events" (its tables are the specification; this module implements them): the valid
records are applied set-based in one unit of work (`apply_batch`); a dead pooled
connection is retried once (`_ingest`); an unreachable database fails every record;
any other error falls back to one unit of work per record (`_apply_each`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from sqlalchemy import exc as sa_exc

from dataaccess import Database
from dataaccess.errors import DomainError
from dataaccess.ingest import IngestResult, ingest_stock_events
from dataaccess.records import StockEventIn
from failures import (
    DatabaseUnavailableError,
    MalformedEventError,
    StockEventFailedError,
    cannot_reach_database,
    describe,
    rejected,
    stack,
    unreachable,
)
from stock_messages import SqsRecord, parse_stock_event

# "none": no valid record to apply (an empty batch, or every record malformed).
Path = Literal["none", "batch", "per-record", "unavailable"]
Parsed = list[tuple[SqsRecord, StockEventIn]]


class Log(Protocol):
    """The part of a logger this module writes to (Powertools' Logger, or logging's)."""

    def info(self, msg: str, *args: Any, **kwargs: Any) -> object: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> object: ...
    def error(self, msg: str, *args: Any, **kwargs: Any) -> object: ...


# A subsegment around a unit of work: `span(name, **annotations)` (`xray.traced`).
Span = Callable[..., AbstractContextManager[None]]


class ItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    """The partial batch response SQS reads (`ReportBatchItemFailures`)."""

    batchItemFailures: list[ItemFailure]


@dataclass
class BatchOutcome:
    """What happened to each record of one invocation, by SQS message id."""

    log: Log = field(repr=False)
    path: Path = "none"
    applied: int = 0  # records whose event this invocation committed
    duplicates: int = 0  # records acknowledged without effect (ledger, or earlier in batch)
    failures: dict[str, BaseException] = field(default_factory=dict)  # message id -> error

    def fail(
        self, message_id: str, event_id: str | None, error: BaseException, **extra: Any
    ) -> None:
        """Record a failed record and log it: one WARNING with its ids and `describe(error)`."""
        self.failures[message_id] = error
        fields = {"message_id": message_id, "event_id": event_id, "error": describe(error)}
        self.log.warning("stock event failed", extra={**fields, **extra})

    def fail_unreachable(self, parsed: Parsed, exc: BaseException) -> None:
        """The database cannot be reached: every record fails with one cause, logged once
        for the batch (one ERROR), not once per record."""
        self.path = "unavailable"
        self.log.error(
            "database unreachable; failing the batch",
            extra={"records": len(parsed), "error": describe(exc)},
        )
        cause = unreachable(exc)
        for record, _ in parsed:
            self.failures[record.message_id] = cause

    @property
    def rejected(self) -> int:
        """Failed records that `failures.rejected` says redelivery cannot help."""
        return sum(rejected(error) for error in self.failures.values())

    @property
    def retryable(self) -> int:
        """Failed records that a redelivery may apply (the database, a poison record)."""
        return len(self.failures) - self.rejected

    def all_failed(self, records: list[SqsRecord]) -> bool:
        return bool(records) and all(r.message_id in self.failures for r in records)

    def response(self, records: list[SqsRecord]) -> BatchResponse:
        """The failed records' message ids, in delivery order."""
        return {
            "batchItemFailures": [
                {"itemIdentifier": r.message_id} for r in records if r.message_id in self.failures
            ]
        }


def parse_batch(records: list[SqsRecord], outcome: BatchOutcome) -> Parsed:
    """The records whose body is a valid stock event; each malformed one fails on its own."""
    parsed: Parsed = []
    for record in records:
        try:
            parsed.append((record, parse_stock_event(record.body)))
        except MalformedEventError as exc:
            outcome.fail(record.message_id, None, exc)
    return parsed


def apply_batch(database: Database, parsed: Parsed, outcome: BatchOutcome, *, span: Span) -> None:
    """Apply the parsed records in one unit of work; on a poison record, one at a time."""
    events = [stock_event for _, stock_event in parsed]
    try:
        with span("## ingest_stock_events", records=len(events)):
            result = _ingest(database, events, outcome.log)
    except Exception as exc:
        if cannot_reach_database(exc):
            outcome.fail_unreachable(parsed, exc)
            return
        outcome.log.warning(
            "batch apply failed; applying one record at a time",
            extra={"records": len(parsed), "error": describe(exc), "stack": stack(exc)},
        )
        outcome.path = "per-record"
        _apply_each(database, parsed, outcome, span)
        return
    outcome.path = "batch"
    settle(parsed, result, outcome)


def settle(parsed: Parsed, result: IngestResult, outcome: BatchOutcome) -> None:
    """Map the set-based result back to message ids.

    A record is acknowledged only when its event id was applied (now or before) and no
    record carrying that id was rejected: nothing is acknowledged that was not committed.
    """
    refused: dict[str, DomainError] = {}
    for rejection in result.rejected:
        refused.setdefault(rejection.event_id, rejection.error)
    settled = {*result.applied, *result.duplicates}
    newly_applied = set(result.applied)
    for record, stock_event in parsed:
        event_id = stock_event.event_id
        error: BaseException | None = refused.get(event_id)
        if error is None and event_id not in settled:
            error = StockEventFailedError(f"no outcome reported for event {event_id}")
        if error is not None:
            outcome.fail(record.message_id, event_id, error)
        elif event_id in newly_applied:
            newly_applied.discard(event_id)  # a later record with this id is a duplicate
            outcome.applied += 1
        else:
            outcome.duplicates += 1


def _ingest(database: Database, events: list[StockEventIn], log: Log) -> IngestResult:
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
        log.info("pooled connection was dead; retrying the batch on a fresh one")
    with database.unit_of_work() as uow:
        return ingest_stock_events(uow, events, chunk_size=len(events))


def _apply_each(database: Database, parsed: Parsed, outcome: BatchOutcome, span: Span) -> None:
    """One unit of work per record; once the database is unreachable, the rest fail fast."""
    from dataaccess import services  # the rare path: not a cold start's import

    cause: DatabaseUnavailableError | None = None
    for record, stock_event in parsed:
        if cause is not None:
            outcome.fail(record.message_id, stock_event.event_id, cause)
            continue
        try:
            with span("## apply_stock_event"), database.unit_of_work() as uow:
                applied = services.apply_stock_event(uow, stock_event)
        except DomainError as exc:
            outcome.fail(record.message_id, stock_event.event_id, exc)
            continue
        except Exception as exc:
            if cannot_reach_database(exc):
                cause = unreachable(exc)
                outcome.fail(record.message_id, stock_event.event_id, cause)
            else:
                error = StockEventFailedError(describe(exc))
                outcome.fail(record.message_id, stock_event.event_id, error, stack=stack(exc))
            continue
        if applied:
            outcome.applied += 1
        else:
            outcome.duplicates += 1
