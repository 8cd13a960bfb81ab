"""Apply one SQS batch of stock events and say what happened to each record.

The batch is applied set-based, in one unit of work
(`dataaccess.ingest.ingest_stock_events`: a handful of statements and one commit for
the whole batch). When that fails for any reason but an unreachable database (a
record the validator let through, a deadlock, a statement timeout), each record gets
its own unit of work, so only the records that fail again fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy import exc as sa_exc

from dataaccess import Database
from dataaccess.errors import DomainError
from dataaccess.ingest import IngestResult, ingest_stock_events
from dataaccess.records import StockEventIn
from failures import (
    DatabaseUnavailableError,
    StockEventFailedError,
    cannot_reach_database,
    describe,
    rejected,
    stack,
)
from stock_messages import SqsRecord

Path = Literal["none", "batch", "per-record", "unavailable"]


class Log(Protocol):
    """The part of a logger this module writes to (Powertools' Logger, or logging's)."""

    def info(self, msg: str, *args: Any, **kwargs: Any) -> object: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> object: ...
    def error(self, msg: str, *args: Any, **kwargs: Any) -> object: ...


# A subsegment around a unit of work: `span(name, **annotations)` (xray.traced, or nothing).
Span = Callable[..., AbstractContextManager[None]]


@contextlib.contextmanager
def untraced(name: str, **annotations: int | str) -> Iterator[None]:
    """No subsegment: tracing is off."""
    yield


@dataclass
class BatchOutcome:
    """What happened to each record of one invocation, by SQS message id. Each failure is
    logged as it is recorded (one WARNING with its message and event id)."""

    log: Log = field(repr=False)
    path: Path = "none"  # "batch", "per-record" (fallback) or "unavailable" (outage)
    applied: int = 0  # records whose event this invocation committed
    duplicates: int = 0  # records acknowledged without effect (ledger, or earlier in batch)
    failures: dict[str, BaseException] = field(default_factory=dict)  # message id -> error

    def fail(
        self, message_id: str, event_id: str | None, error: BaseException, **extra: Any
    ) -> None:
        self.failures[message_id] = error
        fields = {"message_id": message_id, "event_id": event_id, "error": describe(error)}
        self.log.warning("stock event failed", extra={**fields, **extra})

    @property
    def rejected(self) -> int:
        """Failed records that cannot succeed as sent: malformed, or refused by a domain rule."""
        return sum(rejected(error) for error in self.failures.values())


def apply_batch(
    database: Database,
    parsed: list[tuple[SqsRecord, StockEventIn]],
    outcome: BatchOutcome,
    *,
    span: Span = untraced,
) -> None:
    """Apply the parsed records in one unit of work; on a poison record, one at a time.

    A pooled connection that turns out dead (dropped while the environment was
    frozen, a failover) is retried once on a fresh one; a database that cannot be
    reached fails every record; any other error means some record breaks the
    set-based statements, so each record gets its own unit of work.
    """
    events = [stock_event for _, stock_event in parsed]
    try:
        with span("## ingest_stock_events", records=len(events)):
            result = _ingest(database, events, outcome.log)
    except Exception as exc:
        if cannot_reach_database(exc):
            outcome.path = "unavailable"
            # One line for the batch, not one per record: they all share this cause.
            outcome.log.error(
                "database unreachable; failing the batch",
                extra={"records": len(parsed), "error": describe(exc)},
            )
            cause = DatabaseUnavailableError(f"database unreachable: {describe(exc)}")
            for record, _ in parsed:
                outcome.failures[record.message_id] = cause
            return
        outcome.log.warning(
            "batch apply failed; applying one record at a time",
            extra={"records": len(parsed), "error": describe(exc), "stack": stack(exc)},
        )
        outcome.path = "per-record"
        _apply_each(database, parsed, outcome, span)
        return
    outcome.path = "batch"
    _settle(parsed, result, outcome)


def _settle(
    parsed: list[tuple[SqsRecord, StockEventIn]], result: IngestResult, outcome: BatchOutcome
) -> None:
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


def _apply_each(
    database: Database,
    parsed: list[tuple[SqsRecord, StockEventIn]],
    outcome: BatchOutcome,
    span: Span,
) -> None:
    """The fallback: one unit of work per record, so only the poison record fails."""
    from dataaccess import services  # the rare path: not a cold start's import

    unreachable: DatabaseUnavailableError | None = None
    for record, stock_event in parsed:
        if unreachable is not None:
            # Fail fast instead of waiting out a connect timeout per record.
            outcome.fail(record.message_id, stock_event.event_id, unreachable)
            continue
        try:
            with span("## apply_stock_event"), database.unit_of_work() as uow:
                applied = services.apply_stock_event(uow, stock_event)
        except DomainError as exc:
            outcome.fail(record.message_id, stock_event.event_id, exc)
            continue
        except Exception as exc:
            if cannot_reach_database(exc):
                unreachable = DatabaseUnavailableError(f"database unreachable: {describe(exc)}")
                outcome.fail(record.message_id, stock_event.event_id, unreachable)
            else:
                error = StockEventFailedError(describe(exc))
                outcome.fail(record.message_id, stock_event.event_id, error, stack=stack(exc))
            continue
        if applied:
            outcome.applied += 1
        else:
            outcome.duplicates += 1
